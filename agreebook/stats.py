"""The statistics a referee asks for, beside the paper's scores: bootstrap confidence
intervals, Pearson and Spearman correlations with a noise ceiling, split-half reliability of
accessibility, how many models a collection needs, and error consistency.

Pure, seeded NumPy.  Arrays are ``(n_models, n_epochs, n_examples)`` as in ``metrics``.

**What is resampled.**  Every interval here resamples *examples*, with the models held fixed:
it answers "how much would this number move on another draw of examples from the same data
distribution, for these trained models".  Models are not resampled with replacement, because a
bootstrap collection then holds duplicate members, and duplicates agree with themselves: on
simulated independent models (accuracy 0.7, 2000 examples, 200 repetitions of 400 draws) the
95% interval of the bimodality that resamples models and examples covered the true value 27% of
the time at N=10 and 100% at N=30, while resampling examples alone covered it 90% and 95%.  How
much the scores depend on *which* models were trained is measured instead by ``split_half_reliability``
(random disjoint halves of the models) and ``models_needed`` (random subsets of n models).

**How.**  Examples are dealt at random into ``n_blocks`` blocks (one example a block when there
are at most that many), each score's sufficient statistics are summed per block, and a
bootstrap draw is a multinomial reweighting of the blocks: one matrix product per score.  With
one example a block this is the ordinary bootstrap.  With more, blocks are random groups of
exchangeable examples, so a statistic that divides by the drawn number of examples (a mean, a
histogram's shape, a correlation, kappa) has the ordinary bootstrap's variance in expectation,
and an ImageNet-sized record costs what a 1000-example one does; a raw total is rescaled to
the sample size first (block sizes differ by one, so a draw's number of examples varies).
Intervals are percentile intervals.  Measured
coverage of the 95% interval of Pearson's bimodality on simulated independent models: 0.93
(N=10, accuracy 0.7, 2000 examples), 0.93 (N=5, 0.5, 300), 0.91 (N=30, 0.7, 500) and 0.88 near
the ceiling (N=10, 0.95, 2000): a kurtosis-type score, its interval is somewhat short on few
examples or skewed distributions.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from . import metrics as M

LEVEL = 0.95  # two-sided confidence level of every interval
N_BOOT = 1000  # bootstrap draws
N_BLOCKS = 1000  # example blocks a draw reweights (examples themselves when fewer)
N_SPLITS = 10  # random model halves averaged in split-half reliability
N_SUBSETS = 5  # random model subsets per size in models_needed
MIN_SHARED_ERRORS = 5  # error consistency's interval needs pairs to share this many errors on average
# Above this many examples, error consistency's interval and models_needed work on a seeded
# random subsample: the interval from the subsample's bootstrap deviations scaled by
# sqrt(m / n) (m-out-of-n bootstrap of a smooth statistic; the estimate itself uses every
# example), and models_needed's reliabilities and bimodalities as estimates whose sampling
# error at 200,000 examples is ~0.002.  The random gathers of a block bootstrap cost ~1.5 s an
# epoch at ImageNet size, this 0.2 s.
MAX_BOOT_EXAMPLES = 200_000
_CHUNK = 1 << 15  # examples per float32 correctness block: (n_models, 32768) is 13 MB at N=100


def _mean_of_defined(x):
    """Mean over the last axis of the finite entries, NaN where none is; nanmean without its
    warning filter, which edits one process-wide list and so cannot run in parallel_map."""
    ok = np.isfinite(x)
    n_ok = ok.sum(-1)
    return np.where(n_ok > 0, np.where(ok, x, 0).sum(-1) / np.maximum(n_ok, 1), np.nan)


def _level(level):
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    return level


def percentile_interval(draws, level=LEVEL, axis=0):
    """The central ``level`` interval of bootstrap draws along ``axis``: (..., 2) [lo, hi].

    NaN draws (a statistic undefined in some resample) are ignored; all-NaN gives NaN.
    """
    a = (1 - _level(level)) / 2
    draws = np.moveaxis(np.asarray(draws, dtype=np.float64), axis, 0)
    # no warnings.catch_warnings here: it edits one process-wide filter list and this runs in
    # parallel_map's threads; an all-NaN column is filled, quantiled quietly, and set to NaN
    empty = ~np.isfinite(draws).any(0)
    if empty.any():
        draws = np.where(empty, 0.0, draws)
    q = np.nanquantile(draws, [a, 1 - a], axis=0) if np.isnan(draws).any() else np.quantile(draws, [a, 1 - a], axis=0)
    q[:, empty] = np.nan
    return np.moveaxis(q, 0, -1)


class Bootstrap:
    """Seeded multinomial reweighting of examples, shared by every score of one sample.

    n_examples: the sample size; n_boot draws; n_blocks: see the module notes.  ``sums(v)``
    takes per-example statistics ``v`` (n_examples, ...) and returns the observed total
    (...) and the draws' totals (n_boot, ...).

    Example:
        >>> bs = Bootstrap(100, n_boot=200, seed=0)
        >>> total, draws = bs.sums(np.ones(100))
        >>> float(total), draws.shape
        (100.0, (200,))
    """

    def __init__(self, n_examples, n_boot=N_BOOT, seed=0, n_blocks=N_BLOCKS):
        if n_examples < 2:
            raise ValueError(f"a bootstrap needs at least 2 examples; got {n_examples}")
        if n_boot < 1 or n_blocks < 1:
            raise ValueError(f"n_boot and n_blocks must be positive; got {n_boot}, {n_blocks}")
        rng = np.random.default_rng(seed)
        self.n_examples, self.n_boot = int(n_examples), int(n_boot)
        self.n_blocks = k = int(min(n_examples, n_blocks))
        # blocks of consecutive positions in a random order: sizes differ by at most one
        self.block = np.empty(n_examples, np.int64)
        self.block[rng.permutation(n_examples)] = np.arange(n_examples) * k // n_examples
        self.weights = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(np.float64)
        self.order = np.argsort(self.block, kind="stable")  # examples grouped by block
        self.edges = np.searchsorted(self.block[self.order], np.arange(k + 1))
        self.sizes = np.diff(self.edges).astype(np.float64)
        self.drawn = self.weights @ self.sizes  # examples in each draw: n give or take a few blocks

    def block_sums(self, values):
        """(n_examples, ...) -> (n_blocks, ...) sums within each block."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape[0] != self.n_examples:
            raise ValueError(f"values must have {self.n_examples} rows (one per example); got {v.shape}")
        return np.add.reduceat(v[self.order], self.edges[:-1], axis=0)

    def resample(self, block_sums):
        """Block sums (n_blocks, ...) -> observed total (...) and draws' totals (n_boot, ...)."""
        s = np.asarray(block_sums, dtype=np.float64)
        flat = s.reshape(self.n_blocks, -1)
        return s.sum(0), (self.weights @ flat).reshape(self.n_boot, *s.shape[1:])

    def sums(self, values):
        """Observed totals and the draws' totals of per-example values; a draw's total is over
        ``self.drawn`` examples (see the module notes): divide by it, or rescale to n."""
        return self.resample(self.block_sums(values))


def _histogram_blocks(bs, k, n_bins):
    """Per-block histograms of integer values k (n_examples,) in [0, n_bins): (n_blocks, n_bins)."""
    return np.bincount(bs.block * n_bins + k, minlength=bs.n_blocks * n_bins).reshape(bs.n_blocks, n_bins)


def bimodality_ci(predictions, labels, n_boot=N_BOOT, level=LEVEL, seed=0, n_blocks=N_BLOCKS, counts=None):
    """Bootstrap interval of Pearson's bimodality of TP-agreement, per recorded epoch.

    predictions: (n_models, n_epochs, n_examples); labels: (n_examples,).  Returns a dict:
    ``estimate`` (n_epochs,) the observed bimodality, ``ci`` (n_epochs, 2), ``draws``
    (n_boot, n_epochs), and ``resampled`` ("examples").  counts: ``metrics.correct_counts``
    of the same arguments, when the caller has it.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> right = rng.random((10, 1, 500)) < 0.7   # independent models
        >>> out = bimodality_ci(right.astype(np.int16), np.ones(500, np.int16), n_boot=200)
        >>> bool(out["ci"][0, 0] < 1.8 < out["ci"][0, 1])   # the Binomial(10, 0.7) value
        True
    """
    preds, labels = M._check_predictions(predictions, labels)
    n_models, n_epochs, n = preds.shape
    bs = Bootstrap(n, n_boot, seed, n_blocks)
    support = np.arange(n_models + 1) / n_models
    counts = M.correct_counts(preds, labels) if counts is None else np.asarray(counts)
    if counts.shape != (n_epochs, n):
        raise ValueError(f"counts must be (n_epochs, n_examples) = {(n_epochs, n)}; got {counts.shape}")
    hist = np.stack([_histogram_blocks(bs, c, n_models + 1) for c in counts], axis=1)  # (blocks, E, N + 1)
    total, draws = bs.resample(hist)
    b = M.bimodality_of_distribution(support, draws)
    return {"estimate": M.bimodality_of_distribution(support, total), "ci": percentile_interval(b, level),
            "draws": b, "resampled": "examples"}


def mean_ci(values, n_boot=N_BOOT, level=LEVEL, seed=0, n_blocks=N_BLOCKS):
    """Bootstrap interval of the mean over examples of per-example scores.

    values: (n_epochs, n_examples), e.g. ``metrics.agreement``'s or ``tp_agreement``'s.
    Returns ``estimate`` (n_epochs,) and ``ci`` (n_epochs, 2).

    Example:
        >>> out = mean_ci(np.tile([0.0, 1.0], (1, 500)), n_boot=500)
        >>> float(out["estimate"][0]), bool(0.45 < out["ci"][0, 0] < 0.5 < out["ci"][0, 1] < 0.55)
        (0.5, True)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be (n_epochs, n_examples); got shape {v.shape}")
    bs = Bootstrap(v.shape[1], n_boot, seed, n_blocks)
    total, draws = bs.resample(np.concatenate([bs.block_sums(v.T), bs.sizes[:, None]], axis=1))
    return {"estimate": total[:-1] / total[-1], "ci": percentile_interval(draws[:, :-1] / draws[:, -1:], level)}


# --- correlations ----------------------------------------------------------------------------------

def _pearson_from_sums(s):
    """Pearson r from weighted sums (..., 6) = [Σw, Σwx, Σwy, Σwx², Σwy², Σwxy] of data centred
    near their means (so the differences below do not cancel); NaN where a variance is 0."""
    n, sx, sy, sxx, syy, sxy = np.moveaxis(s, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vx, vy = sxx - sx * sx / n, syy - sy * sy / n
        r = (sxy - sx * sy / n) / np.sqrt(vx * vy)
        tiny = (vx <= 1e-12 * sxx) | (vy <= 1e-12 * syy)
    return np.where(tiny, np.nan, np.clip(r, -1, 1))


def _pair_stats(x, y):
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def _midranks(codes, weights, n_values):
    """Mid-ranks (from 1) of examples whose sorted-unique value index is ``codes`` (n,), each
    example counted ``weights`` (n,) times: a bootstrap draw's ranks, ties averaged."""
    w = np.bincount(codes, weights=weights, minlength=n_values)
    below = np.cumsum(w) - w
    return (below + (w + 1) / 2)[codes]


def correlation(a, b, n_boot=N_BOOT, level=LEVEL, seed=0, n_blocks=N_BLOCKS):
    """Pearson and Spearman correlation of two per-example scores, with bootstrap intervals.

    a, b: (n_examples,), e.g. two collections' accessibility of the same examples (paper §4.1).
    Examples are resampled in pairs; every draw re-ranks its examples (mid-ranks for ties),
    so Spearman's interval includes the uncertainty of the ranks.  Returns ``pearson``,
    ``pearson_ci`` (2,), ``pearson_p`` (two-sided, scipy's exact test under normality),
    ``spearman``, ``spearman_ci``, ``n``.  NaN where a score is constant.

    Example:
        >>> x = np.arange(100.0)
        >>> out = correlation(x, x ** 3, n_boot=200)
        >>> round(out["spearman"], 6), bool(out["pearson"] < 1)
        (1.0, True)
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be (n_examples,) of one length; got {a.shape} and {b.shape}")
    bs = Bootstrap(len(a), n_boot, seed, n_blocks)
    total, draws = bs.sums(_pair_stats(a - a.mean(), b - b.mean()))
    r = float(_pearson_from_sums(total))
    r_draws = _pearson_from_sums(draws)
    ua, ca = np.unique(a, return_inverse=True)
    ub, cb = np.unique(b, return_inverse=True)
    ones = np.ones(len(a))
    ra, rb = _midranks(ca, ones, len(ua)), _midranks(cb, ones, len(ub))
    rho = float(_pearson_from_sums(_pair_stats(ra - ra.mean(), rb - rb.mean()).sum(0)))
    rho_draws = np.empty(n_boot)
    for d in range(n_boot):
        w = bs.weights[d, bs.block]  # each example's multiplicity; one draw at a time: (n_boot, n) is 10 GB at 1.3M
        xa, xb = _midranks(ca, w, len(ua)), _midranks(cb, w, len(ub))
        m = w.sum()
        xa -= (w @ xa) / m
        xb -= (w @ xb) / m
        rho_draws[d] = _pearson_from_sums(np.array([m, 0.0, 0.0, w @ (xa * xa), w @ (xb * xb), w @ (xa * xb)]))
    return {"pearson": r, "pearson_ci": percentile_interval(r_draws, level),
            "pearson_p": M.accessibility_correlation(a, b)[1] if np.isfinite(r) else np.nan,
            "spearman": rho, "spearman_ci": percentile_interval(rho_draws, level), "n": len(a)}


def _weighted_partial_r(x, y, z, w):
    """Pearson r of x and y after a weighted least-squares fit on [1, z] is taken out of each."""
    zw = z * w[:, None]
    coef = np.linalg.lstsq(zw.T @ z, zw.T @ np.stack([x, y], 1), rcond=None)[0]
    rx, ry = (np.stack([x, y], 1) - z @ coef).T
    m = w.sum()
    rx, ry = rx - (w @ rx) / m, ry - (w @ ry) / m
    den = np.sqrt((w @ (rx * rx)) * (w @ (ry * ry)))
    return float((w @ (rx * ry)) / den) if den > 0 else np.nan


def partial_correlation(a, b, covariates, n_boot=N_BOOT, level=LEVEL, seed=0, n_blocks=N_BLOCKS):
    """Pearson correlation of two per-example scores with the covariates partialled out (each
    score's linear fit on them removed), with a bootstrap interval that refits on every draw.

    a, b: (n_examples,); covariates: (n_examples,) or (n_examples, k), e.g. each learner's final
    correctness, which both accessibilities largely follow.  Returns ``r``, ``ci`` (2,), ``n``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=2000)
        >>> a, b = z + rng.normal(size=2000), z + rng.normal(size=2000)  # related only through z
        >>> out = partial_correlation(a, b, z, n_boot=200)
        >>> bool(abs(out["r"]) < 0.06 and out["ci"][0] < 0 < out["ci"][1])
        True
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    z = np.asarray(covariates, dtype=np.float64)
    z = z[:, None] if z.ndim == 1 else z
    if a.shape != b.shape or a.ndim != 1 or z.shape[0] != len(a):
        raise ValueError(f"a, b must be (n_examples,) and covariates (n_examples, k); got {a.shape}, {b.shape}, {z.shape}")
    z = np.concatenate([np.ones((len(a), 1)), z], axis=1)
    r = _weighted_partial_r(a, b, z, np.ones(len(a)))
    bs = Bootstrap(len(a), n_boot, seed, n_blocks)
    draws = np.array([_weighted_partial_r(a, b, z, bs.weights[d, bs.block].astype(np.float64)) for d in range(n_boot)])
    return {"r": r, "ci": percentile_interval(draws, level), "n": len(a)}


def spearman_brown(r, factor=2.0):
    """Reliability of a score averaged over ``factor`` times as many models: f r / (1 + (f-1) r).

    A negative correlation between halves (no shared ranking, plus noise) counts as reliability
    0: the formula is not defined for it once f > 2 (its denominator changes sign)."""
    r = np.clip(np.asarray(r, dtype=np.float64), 0, 1)
    factor = np.asarray(factor, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * r / (1 + (factor - 1) * r)


def _subsets(n_models, sizes, n_draws, rng):
    """``n_draws`` random subsets of each size, as 0/1 float32 model weights: the whole subset
    (g, n_models) and its two random disjoint halves of floor(n/2) models (g, 2, n_models);
    plus each row's size (g,)."""
    whole, halves, size_of = [], [], []
    for n in sizes:
        for _ in range(n_draws):
            pick = rng.permutation(n_models)[:n]
            w = np.zeros((3, n_models), np.float32)
            w[0, pick] = 1
            w[1, pick[: n // 2]] = 1
            w[2, pick[n // 2: 2 * (n // 2)]] = 1
            whole.append(w[0])
            halves.append(w[1:])
            size_of.append(n)
    return np.stack(whole), np.stack(halves), np.array(size_of)


def _subset_pass(preds, labels, whole, halves, size_of, bs=None):
    """One pass over the record, in chunks of examples, for model subsets.

    Returns the Pearson r of the two halves' accessibility per subset (g,), its Spearman-Brown
    correction to the whole subset (size_of models, halves of floor(size_of / 2)), and, given
    a Bootstrap ``bs`` whose blocks the examples are ordered by (``bs.order``), each whole
    subset's TP-agreement histogram per epoch and block, (n_epochs, n_blocks, g, N + 1) int16,
    never holding more than a (rows, chunk) block of the record in memory.
    """
    n_models, n_epochs, n = preds.shape
    g = len(whole)
    halves = halves.reshape(-1, n_models)
    labels = labels.astype(preds.dtype)
    pair = np.zeros((g, 6))
    if bs is None:
        cuts = list(range(0, n, _CHUNK)) + [n]
        hist = None
    else:  # chunks of whole blocks, so each chunk adds to its own range of blocks
        per = max(1, _CHUNK * bs.n_blocks // n)
        cuts = bs.edges[::per].tolist() + ([n] if (bs.n_blocks % per) else [])
        first = np.searchsorted(bs.edges, cuts, side="right") - 1  # the block each cut starts
        block_of = bs.block[bs.order]  # each (ordered) example's block
        # int16: a block holds at most ceil(n / n_blocks) examples (200 at 200,000 and 1000
        # blocks); 2 bytes x epochs x blocks x subsets x (N + 1): 113 MB at N=100 over 7 epochs
        if np.max(np.diff(bs.edges)) > np.iinfo(np.int16).max:
            raise ValueError(f"blocks of more than {np.iinfo(np.int16).max} examples; use more blocks")
        hist = np.zeros((n_epochs, bs.n_blocks, g, n_models + 1), np.int16)
    width = n_models + 1
    for j, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        acc = np.zeros((len(halves), b - a), np.float32)
        if hist is not None:
            b0, b1 = first[j], first[j + 1]
            key = ((block_of[a:b] - b0)[None, :] * g + np.arange(g)[:, None]) * width  # (g, chunk)
        for e in range(n_epochs):
            right = (preds[:, e, a:b] == labels[a:b]).astype(np.float32)
            acc += halves @ right
            if hist is not None:
                k = np.rint(whole @ right).astype(np.int64)
                hist[e, b0:b1] += np.bincount((key + k).ravel(), minlength=(b1 - b0) * g * width).reshape(
                    b1 - b0, g, width).astype(np.int16)
        # centred near the middle of its range, so the sums of squares do not cancel
        acc = acc.astype(np.float64).reshape(g, 2, -1) - (size_of // 2 * n_epochs / 2)[:, None, None]
        x, y = acc[:, 0], acc[:, 1]
        pair += np.stack([np.full(g, x.shape[1]), x.sum(1), y.sum(1), np.einsum("ij,ij->i", x, x),
                          np.einsum("ij,ij->i", y, y), np.einsum("ij,ij->i", x, y)], axis=1)
    r = _pearson_from_sums(pair)
    return r, spearman_brown(r, size_of / (size_of // 2)), hist


def split_half_reliability(predictions, labels, n_splits=N_SPLITS, seed=0):
    """Split-half reliability of accessibility, Spearman-Brown corrected to the whole collection.

    The models are split at random into two halves (of floor(N/2) each; an odd N leaves one
    model out of each split), accessibility is computed within each half, the halves' Pearson r
    is corrected to N models by Spearman-Brown with factor N / floor(N/2) (2r / (1 + r) for even
    N), and the corrected values are averaged over ``n_splits`` splits.  It is the
    noise ceiling of an accessibility correlation: two collections of this learner cannot be
    expected to correlate above it.  1 when all models are identical.

    predictions: (n_models, n_epochs, n_examples); labels: (n_examples,).  Returns
    ``reliability`` (mean over splits), ``half_r`` (n_splits,) uncorrected, ``sd`` over splits.

    Example:
        >>> p = np.zeros((4, 2, 50), np.int16); p[:, :, ::3] = 1   # identical models
        >>> split_half_reliability(p, np.zeros(50, np.int16))["reliability"]
        1.0
    """
    preds, labels = M._check_predictions(predictions, labels)
    n_models = preds.shape[0]
    if n_models < 2:
        raise ValueError(f"split-half reliability needs at least 2 models; got {n_models}")
    whole, halves, size_of = _subsets(n_models, [n_models], n_splits, np.random.default_rng(seed))
    r, rel, _ = _subset_pass(preds, labels, whole, halves, size_of)
    return {"reliability": float(np.mean(rel)), "half_r": r, "sd": float(np.std(rel))}


def _ranks(x):
    """Mid-ranks of a 1-D array (ties averaged; inf ranks above every finite value)."""
    u, codes = np.unique(x, return_inverse=True)
    return _midranks(codes.ravel(), np.ones(len(x)), len(u))


def score_reliability(per_model, sizes=None, n_splits=N_SPLITS, seed=0, aggregate="mean"):
    """Split-half reliability of any per-example score a collection aggregates over its models
    (``scores.per_model``'s arrays), on ranks: for each n in ``sizes`` (default 2..N),
    ``n_splits`` random subsets of n models are cut into two halves of floor(n/2), each half's
    score (the mean over its models, or the median where ``aggregate="median"``: forgetting
    events and the learning epoch, infinite for a model that never learns the example) is
    ranked over the examples, the halves' ranks are correlated (Spearman's rho, so the
    reliability is on the scale of the rank correlations it bounds), and rho is corrected to n
    models by Spearman-Brown.  The "how many models" curve of ``split_half_reliability`` for
    any score, so the field's scores can be set side by side.

    per_model: (n_models, n_examples), finite or +inf.  Returns {"sizes": (k,), "reliability":
    (k,) mean over splits, "range": (k, 2) smallest and largest split}.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> shared = rng.random(400)
        >>> out = score_reliability(shared + 0.1 * rng.normal(size=(8, 400)), sizes=[2, 8])
        >>> bool(out["reliability"][1] > out["reliability"][0] > 0.8)
        True
    """
    v = np.asarray(per_model, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"per_model must be (n_models >= 2, n_examples); got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError("per_model must hold no NaN (a model without a value counts as +inf, as scores.per_model's do)")
    if aggregate not in ("mean", "median"):
        raise ValueError(f"aggregate must be 'mean' or 'median'; got {aggregate!r}")
    agg = np.median if aggregate == "median" else np.mean
    n_models = v.shape[0]
    sizes = list(range(2, n_models + 1)) if sizes is None else [int(n) for n in sizes]
    if any(n < 2 or n > n_models for n in sizes):
        raise ValueError(f"sizes must lie in 2..{n_models}; got {sizes}")
    rng = np.random.default_rng(seed)
    rel, rng_out = [], []
    for n in sizes:
        vals = []
        for _ in range(n_splits):
            pick = rng.permutation(n_models)[:n]
            a, b = _ranks(agg(v[pick[: n // 2]], 0)), _ranks(agg(v[pick[n // 2: 2 * (n // 2)]], 0))
            r = np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else np.nan
            vals.append(float(spearman_brown(r, n / (n // 2))))
        rel.append(np.nanmean(vals) if np.isfinite(vals).any() else np.nan)
        rng_out.append((np.nanmin(vals), np.nanmax(vals)) if np.isfinite(vals).any() else (np.nan, np.nan))
    return {"sizes": np.asarray(sizes), "reliability": np.asarray(rel), "range": np.asarray(rng_out)}


def models_needed(predictions, labels, sizes=None, n_draws=N_SUBSETS, seed=0, n_boot=N_BOOT, level=LEVEL,
                  n_blocks=N_BLOCKS):
    """How many models a collection needs: reliability of accessibility and bimodality of
    TP-agreement for random subsets of n of its models.

    For each n in ``sizes`` (default: 2..N, at most ~16 values spread geometrically), ``n_draws``
    random subsets of n models: the split-half reliability of their accessibility
    (Spearman-Brown corrected to n) and the bimodality of their TP-agreement at every epoch,
    beside the bimodality of the matched-accuracy null of the same n models: the null's own
    score depends on n (2 - 2/n for independent models of one accuracy), so the observed curve
    is read against it.  Returns ``sizes`` (k,), ``reliability`` (k,) mean over draws,
    ``reliability_range`` (k, 2) the smallest and largest over the draws, ``bimodality`` and
    ``null_bimodality`` (k, n_epochs) means over draws, ``bimodality_ci`` (k, n_epochs, 2) the
    bootstrap interval of that mean (resampling examples, the subsets held fixed) and
    ``bimodality_range`` (k, n_epochs, 2) its smallest and largest single subset.
    Reliability at n=2 and n=3 rests on one model a half.  Above MAX_BOOT_EXAMPLES examples it
    works on a seeded random subsample of that many.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> easy = rng.random(300)   # a shared difficulty per example
        >>> p = (rng.random((12, 2, 300)) < easy).astype(np.int16)
        >>> out = models_needed(p, np.ones(300, np.int16), sizes=[2, 12], n_boot=100)
        >>> bool(out["reliability"][0] < out["reliability"][1]), out["bimodality_ci"].shape
        (True, (2, 2, 2))
    """
    preds, labels = M._check_predictions(predictions, labels)
    n_models, n_epochs, n = preds.shape
    if n_models < 2:
        raise ValueError(f"models_needed needs at least 2 models; got {n_models}")
    if sizes is None:
        sizes = np.unique(np.round(np.geomspace(2, n_models, min(16, n_models - 1))).astype(int))
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.min() < 2 or sizes.max() > n_models:
        raise ValueError(f"sizes must lie in [2, {n_models}]; got {sizes.tolist()}")
    rng = np.random.default_rng(seed)
    whole, halves, size_of = _subsets(n_models, sizes, n_draws, rng)
    # estimates from a seeded subsample above MAX_BOOT_EXAMPLES (see there), its examples
    # gathered once in the order of the bootstrap's blocks
    keep = np.sort(rng.choice(n, MAX_BOOT_EXAMPLES, replace=False)) if n > MAX_BOOT_EXAMPLES else np.arange(n)
    bs = Bootstrap(len(keep), n_boot, seed, n_blocks)
    take = keep[bs.order]
    preds, labels = preds[:, :, take], labels[take]
    _, rel, hist_blocks = _subset_pass(preds, labels, whole, halves, size_of, bs)
    rel = rel.reshape(len(sizes), n_draws)
    acc = M.accuracies(preds, labels)
    hist = hist_blocks.sum(1)  # (n_epochs, g, N + 1)
    bim, null = np.empty((2, len(whole), n_epochs))
    for i, m in enumerate(size_of):
        bim[i] = M.bimodality_of_distribution(np.arange(m + 1) / m, hist[:, i, :m + 1])
        null[i] = M.null_bimodality(acc[whole[i] > 0])
    ci = np.empty((len(sizes), n_epochs, 2))
    weights = bs.weights.astype(np.float32)

    def interval(e):  # writes ci[:, e]; no warning filters here (parallel_map's threads)
        # float32 products: block counts times multinomial weights stay far below 2**24
        draws = (weights @ hist_blocks[e].reshape(bs.n_blocks, -1).astype(np.float32)).reshape(
            n_boot, len(whole), n_models + 1)
        for s, m in enumerate(sizes):
            rows = np.flatnonzero(size_of == m)
            with np.errstate(invalid="ignore", divide="ignore"):
                b = M.bimodality_of_distribution(np.arange(m + 1) / m, draws[:, rows, :m + 1])  # (n_boot, n_draws)
            ci[s, e] = percentile_interval(_mean_of_defined(b), level)

    M.parallel_map(interval, range(n_epochs), max_threads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN size (constant scores)
        bim, null = bim.reshape(len(sizes), n_draws, n_epochs), null.reshape(len(sizes), n_draws, n_epochs)
        return {"sizes": sizes, "reliability": np.nanmean(rel, 1),
                "reliability_range": np.stack([np.nanmin(rel, 1), np.nanmax(rel, 1)], -1),
                "bimodality": np.nanmean(bim, 1), "null_bimodality": np.nanmean(null, 1), "bimodality_ci": ci,
                "bimodality_range": np.stack([np.nanmin(bim, 1), np.nanmax(bim, 1)], -1)}


def reliability_reached(needed, target=0.95):
    """The smallest subset size whose mean reliability reaches ``target`` (None if none does)."""
    ok = np.flatnonzero(np.asarray(needed["reliability"]) >= target)
    return int(needed["sizes"][ok[0]]) if len(ok) else None


# --- error consistency ------------------------------------------------------------------------------

def error_consistency(predictions, labels, n_boot=N_BOOT, level=LEVEL, seed=0, n_blocks=N_BLOCKS):
    """Error consistency (Geirhos, Meding and Wichmann, NeurIPS 2020), per recorded epoch.

    For a pair of models, Cohen's kappa on correctness: kappa = (c_obs - c_exp) / (1 - c_exp),
    c_obs the fraction of examples both get right or both get wrong, c_exp = p1 p2 +
    (1 - p1)(1 - p2) with p1, p2 their accuracies.  0 for independent models, 1 for identical
    ones; defined at any accuracy below 1 (a pair whose c_exp is 1 is left out).  The score is
    the mean over all pairs of models.  predictions: (n_models, n_epochs, n_examples).
    Returns ``estimate`` (n_epochs,), ``ci`` (n_epochs, 2) resampling examples, ``pairwise``
    (n_epochs, n_models, n_models) with NaN on the diagonal, and ``few_errors`` (n_epochs,):
    the estimate uses every example; above MAX_BOOT_EXAMPLES the interval comes from a seeded
    subsample (see MAX_BOOT_EXAMPLES).  ``few_errors``: where a pair of models shares fewer
    than MIN_SHARED_ERRORS errors on average, a resample cannot show fewer than none, and the
    percentile interval is degenerate (independent models near the ceiling, with no shared
    error, got an interval below 0): it is NaN there.

    Example:
        >>> p = np.zeros((3, 1, 40), np.int16); p[:, :, :10] = 1   # identical models
        >>> float(error_consistency(p, np.ones(40, np.int16), n_boot=50)["estimate"][0])
        1.0
    """
    preds, labels = M._check_predictions(predictions, labels)
    n_models, n_epochs, n = preds.shape
    if n_models < 2:
        raise ValueError(f"error consistency needs at least 2 models; got {n_models}")
    # the interval from a seeded subsample of at most MAX_BOOT_EXAMPLES examples (module notes)
    m = min(n, MAX_BOOT_EXAMPLES)
    sub = np.sort(np.random.default_rng(seed).choice(n, m, replace=False)) if m < n else None
    bs = Bootstrap(m, n_boot, seed, n_blocks)
    iu = np.triu_indices(n_models, 1)
    est, ci = np.empty(n_epochs), np.empty((n_epochs, 2))
    pairwise = np.empty((n_epochs, n_models, n_models))
    few = np.zeros(n_epochs, bool)
    labels_ = labels.astype(preds.dtype)
    take = bs.order if sub is None else sub[bs.order]  # the (sub)sample's examples in block order
    y = labels_[take]

    # the estimate: every example, one Gram matrix of correctness per epoch (both-right counts;
    # its diagonal is each model's right count).  Serial: the products use every core already.
    gram = np.zeros((n_epochs, n_models, n_models))
    for e in range(n_epochs):
        for a in range(0, n, _CHUNK):
            c = (preds[:, e, a:a + _CHUNK] == labels_[a:a + _CHUNK]).astype(np.float32)
            gram[e] += np.dot(c, c.T)  # np.dot takes the symmetric product (syrk): 1.2x matmul
    for e in range(n_epochs):
        total = np.concatenate([gram[e][iu], np.diag(gram[e]), [n]])
        mean, k_all = _mean_kappa(total[None], iu, n_models)
        est[e] = mean[0]
        pairwise[e] = np.nan
        pairwise[e][iu] = pairwise[e].T[iu] = k_all[0]
        right = np.diag(gram[e])
        both_wrong = n - right[iu[0]] - right[iu[1]] + gram[e][iu]  # examples each pair gets wrong together
        few[e] = np.mean(both_wrong) < MIN_SHARED_ERRORS
    ci[few] = np.nan

    def interval(e):
        # per block of the (sub)sample, the same counts; draws reweight blocks
        c = (preds[:, e, take] == y).astype(np.float32)  # (N, m) in block order
        grams = np.stack([c[:, a:b] @ c[:, a:b].T for a, b in zip(bs.edges[:-1], bs.edges[1:])])
        stats = np.concatenate([grams[:, iu[0], iu[1]], np.diagonal(grams, axis1=1, axis2=2), bs.sizes[:, None]],
                               axis=1)
        # the draws in float32: integer counts below 2**24 add exactly, and it halves the time
        draws = _mean_kappa(bs.weights.astype(np.float32) @ stats.astype(np.float32), iu, n_models)[0]
        if sub is None:
            ci[e] = percentile_interval(draws, level)
        else:  # the subsample's deviations, shrunk to the whole sample's size (a smooth statistic)
            centre = _mean_kappa(stats.sum(0, dtype=np.float64)[None], iu, n_models)[0][0]
            ci[e] = est[e] + percentile_interval(draws - centre, level) * np.sqrt(m / n)

    # 1.1x on 2 cores (the draws product is parallel already); each thread holds ~350 MB at
    # N=100 and 200,000 examples, so at most 2 threads whatever the cores
    M.parallel_map(interval, np.flatnonzero(~few), max_threads=2)
    return {"estimate": est, "ci": ci, "pairwise": pairwise, "few_errors": few, "resampled": "examples"}


def _mean_kappa(stats, iu, n_models):
    """stats (b, n_pairs + n_models + 1) = both-right counts, right counts, n -> (b,) mean kappa
    over pairs and (b, n_pairs) kappas.

    With p1, p2 the accuracies and q the fraction both right: c_obs = 1 - p1 - p2 + 2q and
    c_exp = 1 - p1 - p2 + 2 p1 p2, so kappa = 2 (q - p1 p2) / (p1 + p2 - 2 p1 p2): fewer
    passes over the (draws, pairs) arrays, in the stats' dtype.
    """
    n_pairs = len(iu[0])
    n = stats[:, -1:]
    q = stats[:, :n_pairs] / n
    p = stats[:, n_pairs:n_pairs + n_models] / n
    prod = p[:, iu[0]] * p[:, iu[1]]
    # in place on the (n_boot, n_pairs) arrays, fewer temporaries than the formula as written
    den = p[:, iu[0]]
    den += p[:, iu[1]]
    den -= 2 * prod  # 0 only when both are always right or both always wrong: c_exp = 1
    kappa = q
    kappa -= prod
    kappa *= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa /= den
    kappa[~(den > 0)] = np.nan
    return _mean_of_defined(kappa), kappa  # the mean over defined pairs


# --- counts ------------------------------------------------------------------------------------------

def matched_accuracy_ci(predictions_a, predictions_b, labels, tolerance=0.01, n_boot=N_BOOT, level=LEVEL,
                        seed=0, n_blocks=N_BLOCKS):
    """``metrics.matched_accuracy_comparison`` with bootstrap intervals on its counts.

    Returns the comparison's dict plus ``both_ci``, ``only_a_ci``, ``only_b_ci``,
    ``neither_ci``: (n_pairs, 2) intervals of the example counts, resampling examples (the
    matched epochs are kept as on the whole sample).
    """
    res = M.matched_accuracy_comparison(predictions_a, predictions_b, labels, tolerance)
    labels = np.asarray(labels)
    ca = M.majority_vote(predictions_a)[res["epoch_index_a"]] == labels
    cb = M.majority_vote(predictions_b)[res["epoch_index_b"]] == labels
    cells = np.stack([ca & cb, ca & ~cb, ~ca & cb, ~ca & ~cb], axis=-1).astype(np.float64)  # (pairs, n, 4)
    bs = Bootstrap(len(labels), n_boot, seed, n_blocks)
    _, draws = bs.sums(np.moveaxis(cells, 1, 0))  # (n_boot, pairs, 4)
    draws *= (len(labels) / bs.drawn)[:, None, None]  # counts out of n examples (module notes)
    ci = percentile_interval(draws, level)  # (pairs, 4, 2)
    for j, key in enumerate(("both", "only_a", "only_b", "neither")):
        res[f"{key}_ci"] = ci[:, j]
    return res


def p_floor(n_draws):
    """The smallest Monte Carlo p-value of ``n_draws`` null draws, 1/(n_draws+1), rounded up
    to two significant figures: what "no draw was as extreme" bounds p by."""
    x = 1.0 / (n_draws + 1)
    e = 10.0 ** (math.floor(math.log10(x)) - 1)
    return math.ceil(round(x / e, 9)) * e


def format_p(p, n_draws=None):
    """A p-value as text that says how it was obtained: a Monte Carlo p at its floor (no null
    draw as extreme) prints as "≤ 1/(n_draws+1)", rounded up, with the number of draws."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if n_draws is not None and p <= 1.0 / (n_draws + 1) + 1e-12:
        return f"≤ {p_floor(n_draws):.2g} (0 of {n_draws} null draws as low)"
    if n_draws is not None:
        return f"{p:.3g} ({n_draws} null draws)"
    return f"{p:.3g}"
