"""Chapter 8's comparisons (agreebook.compare) on hand-made cases."""
import doctest

import numpy as np
import pandas as pd

from agreebook import compare as C


def test_docstring_examples_run():
    assert doctest.testmod(C).failed == 0


def test_rank_correlations_use_complete_pairs():
    rng = np.random.default_rng(0)
    x = rng.random(200)
    t = pd.DataFrame({"x": x, "noisy": x + 0.1 * rng.normal(size=200), "holes": np.where(np.arange(200) < 50, np.nan, -x)})
    rho, ci, n = C.rank_correlations(t, n_boot=200)
    assert rho.loc["x", "holes"] == -1 and n.loc["x", "holes"] == 150 and n.loc["x", "noisy"] == 200
    lo, hi = (float(v) for v in ci.loc["x", "noisy"].strip("[]").split(","))
    assert lo <= rho.loc["x", "noisy"] <= hi and 0.8 < lo


def test_shared_wrong_labels_against_the_networks_own_confusions():
    # class 0: networks confuse it with 1 on half the examples and with 2 on the other half;
    # people always prefer 1.  Observed: the half where the networks say 1; expected: 0.5
    n = 400
    y = np.zeros(n, int)
    wrong = np.where(np.arange(n) % 2 == 0, 1, 2)
    preds = np.broadcast_to(wrong, (5, 1, n)).copy()
    counts = np.tile([40, 9, 1], (n, 1))
    out = C.shared_wrong_labels(preds, y, counts, n_boot=200)
    assert out["n"] == n and out["observed"] == 0.5 and abs(out["expected"] - 0.5) < 1e-12
    # people following the networks example by example: observed 1, still expected 0.5
    counts2 = np.where(wrong[:, None] == np.arange(3), 9, 1)
    counts2[:, 0] = 40
    out2 = C.shared_wrong_labels(preds, y, counts2, n_boot=200)
    assert out2["observed"] == 1.0 and out2["ci"][0] == 1.0 and abs(out2["expected"] - 0.5) < 1e-12


def test_a_tie_among_peoples_wrong_labels_is_shared():
    y = np.zeros(10, int)
    preds = np.ones((3, 1, 10), int)                 # the networks say 1
    counts = np.tile([40, 5, 5], (10, 1))            # people: 1 and 2 tied
    out = C.shared_wrong_labels(preds, y, counts, n_boot=100)
    assert out["observed"] == 0.5 and out["expected"] == 0.5
