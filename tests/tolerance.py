"""Float tolerances as multiples of the dtype's machine epsilon (issue 11: no test may depend on
one CPU's or one library build's rounding).  A comparison of two float64 computations of the
same quantity by different summation orders (chunked against whole, a vectorised formula
against a loop, scipy against ours) differs by a few ulps per term summed; ULPS64 allows
2**12 of them, 9e-13 relative, far below any statistical difference a test looks for.
Statistical tolerances (a simulated share against its expectation) are not rounding: the tests
state those with the sampling error they allow."""
import numpy as np

EPS64 = float(np.finfo(np.float64).eps)
ULPS64 = 2 ** 12 * EPS64  # ~9.1e-13
