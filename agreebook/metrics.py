"""The paper's scores, as pure NumPy functions.

Every array of predictions is ordered ``(n_models, n_epochs, n_examples)``;
per-epoch scores come back as ``(n_epochs, n_examples)`` and accuracies as
``(n_models, n_epochs)``.  Nothing here touches torch, files or plots.
"""
from __future__ import annotations

import os

import numpy as np

# Examples per chunk in the mode computation: (4096, 100) int32 rows, 1.6 MB, measured fastest
# of 1024-65536 on a Zen 3 (1.0 s an ImageNet-sized epoch against 1.35 s at 16384).
_MODE_CHUNK = 4096


MAX_THREADS = 8  # threads of parallel_map: one per core the process may use, at most this many


def parallel_map(fn, items, max_threads=None):
    """``[fn(x) for x in items]``, on one thread per core the process may use (at most
    ``max_threads``, default MAX_THREADS: each thread holds its item's temporaries).

    numpy's sorts, ufuncs, bincount and matrix products release the GIL, so per-epoch work
    runs on every core; each call must be independent of the others (no shared random
    state), which makes the result the serial one.  Measured on 2 cores: 1.6x for weighted
    bincounts, 2.2x for row sorts.
    """
    items = list(items)
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    n = min(n, MAX_THREADS, max_threads or MAX_THREADS, len(items))
    if n <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


def _check_predictions(predictions, labels=None):
    predictions = np.asarray(predictions)
    if predictions.ndim != 3:
        raise ValueError(f"predictions must be (n_models, n_epochs, n_examples); got shape {predictions.shape}")
    if not np.issubdtype(predictions.dtype, np.integer):
        raise ValueError(f"predictions must hold integer labels; got dtype {predictions.dtype}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (predictions.shape[2],):
            raise ValueError(f"labels must be (n_examples,) = ({predictions.shape[2]},); got shape {labels.shape}")
    return predictions, labels


def correct_counts(predictions, labels):
    """Number of models correct on each example: ``(n_epochs, n_examples)`` int32."""
    predictions, labels = _check_predictions(predictions, labels)
    n_models, n_epochs, n_examples = predictions.shape
    labels = labels.astype(predictions.dtype, copy=False)

    def epoch(e):
        counts = np.zeros(n_examples, np.int32)
        hit = np.empty(n_examples, bool)
        # One model at a time keeps the temporaries at n_examples, not n_models x n_examples.
        for m in range(n_models):
            np.equal(predictions[m, e], labels, out=hit)
            counts += hit
        return counts

    return np.stack(parallel_map(epoch, range(n_epochs))).reshape(n_epochs, n_examples)


def tp_agreement(predictions, labels):
    """TP-agreement: the fraction of models whose prediction equals the label.

    predictions: (n_models, n_epochs, n_examples) int; labels: (n_examples,) int.
    Returns (n_epochs, n_examples) float64 in [0, 1].
    """
    predictions, _ = _check_predictions(predictions, labels)
    return correct_counts(predictions, labels) / predictions.shape[0]


def accuracies(predictions, labels):
    """Each model's accuracy at each epoch: (n_models, n_epochs) float64."""
    predictions, labels = _check_predictions(predictions, labels)
    labels = labels.astype(predictions.dtype, copy=False)
    n_models, n_epochs, n_examples = predictions.shape
    # Per (model, epoch) slice: a full-size boolean temporary would double the record's memory.
    right = parallel_map(lambda e: [np.count_nonzero(predictions[m, e] == labels) for m in range(n_models)],
                         range(n_epochs))
    return np.array(right, dtype=np.float64).reshape(n_epochs, n_models).T / n_examples


_SORT_PLAN = {}


def _sort_plan(dtype):
    """How ``mode`` sorts rows of labels of ``dtype`` fastest on this CPU, measured once: as
    they are with either of numpy's sorts, or widened to int32 and quicksorted.  numpy's
    vectorised quicksort covers 16-bit keys only with AVX-512 and 32-bit keys with AVX2 too:
    on a Zen 3 (AVX2) an ImageNet-sized epoch of int16 rows sorted in 1.7 s with the radix
    ("stable") sort, 3.1 s with quicksort, and in 0.3 s widened to int32."""
    dtype = np.dtype(dtype)
    if dtype not in _SORT_PLAN:
        import time
        rows = np.random.default_rng(0).integers(0, 1000, (4096, 64)).astype(dtype)
        plans = [(dtype, "quicksort"), (dtype, "stable")]
        if dtype.itemsize < 4 and np.iinfo(dtype).min >= np.iinfo(np.int32).min:
            plans.append((np.dtype(np.int32), "quicksort"))
        best = {}
        for work, kind in plans:
            times = []
            for _ in range(3):
                t = time.perf_counter()
                rows.astype(work).sort(axis=1, kind=kind)
                times.append(time.perf_counter() - t)
            best[work, kind] = min(times)
        _SORT_PLAN[dtype] = min(best, key=best.get)
    return _SORT_PLAN[dtype]


def mode(predictions_at_epoch, return_label=False, columns=None):
    """Most frequent label across models for each example, and how many models give it.

    predictions_at_epoch: (n_models, n_examples) int; columns: optional (k,) indices of the
    examples to compute it for.  Returns the count (n_examples,) or (k,) int16 and, with
    return_label, the modal label (ties go to the smallest label).

    Example:
        >>> mode(np.array([[1, 2], [1, 3], [0, 3]]), return_label=True)
        (array([2, 2], dtype=int16), array([1, 3]))
    """
    p = np.asarray(predictions_at_epoch)
    n_models, n_examples = p.shape
    if n_models > np.iinfo(np.int16).max:
        raise ValueError(f"at most {np.iinfo(np.int16).max} models; got {n_models}")
    n_out = n_examples if columns is None else len(columns)
    count = np.empty(n_out, np.int16)
    label = np.empty(n_out, p.dtype) if return_label else None
    work, kind = _sort_plan(p.dtype)
    for a in range(0, n_out, _MODE_CHUNK):
        block = p[:, a:a + _MODE_CHUNK] if columns is None else p[:, columns[a:a + _MODE_CHUNK]]
        # Sorting contiguous rows is ~15x faster than sorting along the strided model axis.
        rows = block.T.astype(work, order="C")
        rows.sort(axis=1, kind=kind)
        s = np.ascontiguousarray(rows.T)
        c = s.shape[1]
        same = np.empty((max(n_models - 1, 0), c), np.int16)
        np.equal(s[1:], s[:-1], out=same, casting="unsafe")
        run = np.zeros(c, np.int16)
        best = np.zeros(c, np.int16)
        best_label = s[0].copy() if return_label else None
        for m in range(n_models - 1):
            run += 1
            run *= same[m]
            if return_label:
                longer = run > best
                best_label[longer] = s[m + 1][longer]
            np.maximum(best, run, out=best)
        count[a:a + c] = best + 1
        if return_label:
            label[a:a + c] = best_label
    return (count, label) if return_label else count


def agreement(predictions, labels=None, counts=None):
    """Agreement: the largest fraction of models that predict one same label.

    predictions: (n_models, n_epochs, n_examples) int; labels: optional (n_examples,), which
    changes no value but the time: where at least half the models are right, the label is the
    mode and Agreement is TP-agreement, so only the other examples are counted by sorting.
    counts: ``correct_counts(predictions, labels)`` when the caller has it already.
    Returns (n_epochs, n_examples) float64 in [1/n_models, 1].

    Example:
        >>> p = np.array([[[0, 1, 2]], [[0, 1, 1]], [[0, 2, 1]], [[1, 2, 0]]])  # 4 models
        >>> agreement(p)
        array([[0.75, 0.5 , 0.5 ]])
    """
    predictions, labels = _check_predictions(predictions, labels)
    n_models, n_epochs, _ = predictions.shape
    _sort_plan(predictions.dtype)  # measured here, not while the threads below compete for the cores
    if labels is None:
        return np.stack(parallel_map(lambda e: mode(predictions[:, e]), range(n_epochs))) / n_models
    counts = correct_counts(predictions, labels) if counts is None else np.array(counts, np.int32)
    if counts.shape != (n_epochs, predictions.shape[2]):
        raise ValueError(f"counts must be (n_epochs, n_examples) = {(n_epochs, predictions.shape[2])}; got {counts.shape}")

    def epoch(e):
        rest = np.flatnonzero(2 * counts[e] < n_models)
        counts[e, rest] = mode(predictions[:, e], columns=rest)

    parallel_map(epoch, range(n_epochs))
    return counts / n_models


def majority_vote(predictions):
    """The collection's majority-vote prediction: (n_epochs, n_examples), ties to the smallest label."""
    predictions, _ = _check_predictions(predictions)
    _sort_plan(predictions.dtype)  # measured here, not while the threads below compete for the cores
    return np.stack(parallel_map(lambda e: mode(predictions[:, e], return_label=True)[1], range(predictions.shape[1])))


def _pearson(m2, m3, m4):
    with np.errstate(divide="ignore", invalid="ignore"):
        skew2 = m3 ** 2 / m2 ** 3
        kurt = m4 / m2 ** 2
        out = kurt - skew2 - 1.0
    # two exact spikes give 0 up to rounding; never print "-0.0"
    return np.where(m2 > 0, np.maximum(out, 0.0), np.nan)


def bimodality(values, axis=-1):
    """Pearson's bimodality score: kurtosis - skewness**2 - 1 (plain, not excess, kurtosis).

    0 for two equal spikes, 0.8 for a uniform, 2 for a Gaussian; lower = more bimodal.
    It is never negative. NaN where the values are constant. Reduces ``axis``.
    """
    x = np.asarray(values, dtype=np.float64)
    d = x - x.mean(axis=axis, keepdims=True)
    d2 = d * d
    m2 = d2.mean(axis=axis)
    m3 = (d2 * d).mean(axis=axis)
    m4 = (d2 * d2).mean(axis=axis)
    return _pearson(m2, m3, m4)


def bimodality_of_distribution(support, weights):
    """Pearson's bimodality of a discrete distribution.

    support: (k,) values; weights: (..., k) non-negative (a pmf or counts). Returns (...,).
    """
    support = np.asarray(support, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum(axis=-1, keepdims=True)
    mean = w @ support
    d = support - mean[..., None]
    m2 = (w * d ** 2).sum(-1)
    m3 = (w * d ** 3).sum(-1)
    m4 = (w * d ** 4).sum(-1)
    return _pearson(m2, m3, m4)


def accessibility(tpa):
    """Accessibility: mean TP-agreement over the recorded epochs.

    tpa: (n_epochs, n_examples). Returns (n_examples,).
    """
    tpa = np.asarray(tpa)
    if tpa.ndim != 2:
        raise ValueError(f"tpa must be (n_epochs, n_examples); got shape {tpa.shape}")
    return tpa.mean(axis=0)


def learning_epoch(predictions, labels, epochs):
    """The first recorded epoch from which a model stays correct through the last one.

    predictions: (n_models, n_epochs, n_examples); labels: (n_examples,); epochs: (n_epochs,)
    the recorded epoch numbers. Returns (n_models, n_examples) float64, NaN where the model
    is wrong at the last recorded epoch.
    """
    predictions, labels = _check_predictions(predictions, labels)
    epochs = np.asarray(epochs, dtype=np.float64)
    if epochs.shape != (predictions.shape[1],):
        raise ValueError(f"epochs must be ({predictions.shape[1]},); got shape {epochs.shape}")
    return _learning_epoch(predictions == labels.astype(predictions.dtype, copy=False), epochs)


def _learning_epoch(right, epochs, never=np.nan):
    """``learning_epoch`` from right = predictions == labels (n_models, n_epochs, n_examples),
    ``never`` where the model is wrong at the last recorded epoch."""
    n_epochs = right.shape[1]
    # one past the last wrong epoch (0: never wrong) as a running maximum in the smallest
    # integer, then one lookup: a boolean-mask assignment per epoch took 0.53 s a block of
    # 100 models x 65536 examples, this 0.05 s
    kind = np.uint8 if n_epochs < 255 else np.uint32
    after_wrong = np.zeros((right.shape[0], right.shape[2]), kind)
    for e in range(n_epochs):
        wrong = right[:, e].view(np.uint8) ^ 1
        np.maximum(after_wrong, wrong.astype(kind, copy=False) * kind(e + 1), out=after_wrong)
    return np.append(np.asarray(epochs, np.float64), never)[after_wrong]


def forgetting_events(predictions, labels):
    """Forgetting events (Toneva et al., ICLR 2019) between consecutive recorded epochs: how
    often each model goes from right to wrong on each example.  Recorded epochs are a sample of
    the training steps, so this counts at most the events a per-step count would.

    predictions: (n_models, n_epochs, n_examples); labels: (n_examples,).  Returns
    (n_models, n_examples) int32.

    Example:
        >>> p = np.array([[[0, 1], [1, 1], [0, 1]]])  # 1 model, 3 epochs, 2 examples of class 0
        >>> forgetting_events(p, np.array([0, 0]))
        array([[1, 0]], dtype=int32)
    """
    preds, labels = _check_predictions(predictions, labels)
    return _forgetting_events(preds == labels.astype(preds.dtype, copy=False))


def _forgetting_events(right):
    """``forgetting_events`` from right = predictions == labels (n_models, n_epochs, n_examples)."""
    out = np.zeros((right.shape[0], right.shape[2]), np.int32)
    for e in range(right.shape[1] - 1):
        out += right[:, e] > right[:, e + 1]  # right, then wrong
    return out


def null_forgetting_events(accuracy):
    """Expected ``forgetting_events`` per example of a model whose right examples are drawn
    anew at every recorded epoch at its accuracy: sum over e of p_e (1 - p_(e+1)).
    accuracy: (n_models, n_epochs).  Returns (n_models,)."""
    a = np.asarray(accuracy, dtype=np.float64)
    return (a[:, :-1] * (1 - a[:, 1:])).sum(1)


def effective_classes(labels, n_classes):
    """exp(entropy) of a set of labels' class shares: 1 when all share one class, K when the K
    classes are equally common (the "number of classes" a set of examples spans).
    labels: (n,) int.  NaN for an empty set."""
    c = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    if c.sum() == 0:
        return np.nan
    q = c[c > 0] / c.sum()
    return float(np.exp(-(q * np.log(q)).sum()))


# --- the null hypothesis: independent classifiers at the observed accuracies -----------------

def null_tp_agreement(accuracy):
    """Exact null distribution of TP-agreement: a Poisson-binomial over k/n_models.

    accuracy: (n_models, n_epochs) each model's accuracy. Returns (n_epochs, n_models + 1):
    the probability that exactly k of n_models independent classifiers, each correct with
    its own accuracy, are correct on an example.
    """
    p = np.asarray(accuracy, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"accuracy must be (n_models, n_epochs); got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("accuracies must lie in [0, 1]")
    n_models, n_epochs = p.shape
    pmf = np.zeros((n_epochs, n_models + 1))
    pmf[:, 0] = 1.0
    for m in range(n_models):
        q = p[m][:, None]
        # Convolve with Bernoulli(p_m): shift-and-mix keeps it exact and O(n_models^2).
        pmf[:, 1:m + 2] = pmf[:, 1:m + 2] * (1 - q) + pmf[:, :m + 1] * q
        pmf[:, 0] *= (1 - q[:, 0])
    return pmf


def group_accuracies(predictions, labels, groups, n_groups=None):
    """Each model's accuracy on each group of examples: (n_models, n_epochs, n_groups).

    groups: (n_examples,) int in [0, n_groups), e.g. the labels (then it is each class's
    recall) or strata of a known difficulty.  NaN for a group without examples.
    """
    preds, labels = _check_predictions(predictions, labels)
    groups = np.asarray(groups)
    if groups.shape != labels.shape or groups.dtype.kind not in "iu" or (groups.size and groups.min() < 0):
        raise ValueError(f"groups must be ({len(labels)},) non-negative integers; got {groups.shape} {groups.dtype}")
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    # one weighted bincount per (model, epoch) row: a pass per group was O(groups x examples)
    hits = np.stack(parallel_map(lambda row: np.bincount(groups, weights=row == labels, minlength=n_groups),
                                 preds.reshape(-1, preds.shape[2])))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = hits / counts
    out[:, counts == 0] = np.nan
    return out.reshape(*preds.shape[:2], n_groups)


def class_accuracies(predictions, labels, n_classes=None):
    """Each model's accuracy on each class (its recall): (n_models, n_epochs, n_classes).

    NaN for a class without examples.  predictions: (n_models, n_epochs, n_examples).
    """
    labels = np.asarray(labels)
    return group_accuracies(predictions, labels, labels, n_classes)


def null_tp_agreement_by_group(predictions, labels, groups):
    """Null distribution of TP-agreement for independent classifiers that keep each model's
    accuracy on every group of examples: (n_epochs, n_models + 1).

    An example of group g is right for model m independently with m's accuracy on g, and the
    distribution is the mixture over groups of those Poisson-binomials, weighted by the groups'
    shares of the examples.  With the classes as groups it is ``null_tp_agreement_by_class``;
    with strata of a difficulty the data carry (chapter 5: a Gabor patch's orientation offset,
    a Gaussian point's Bayes margin) it is the null of models that agree on nothing beyond it.
    Fine strata absorb order as well as difficulty: with g groups of n/g examples it keeps
    g accuracies per model.
    """
    preds, labels = _check_predictions(predictions, labels)
    groups = np.asarray(groups)
    acc = group_accuracies(preds, labels, groups)
    counts = np.bincount(groups, minlength=acc.shape[2])
    present = np.flatnonzero(counts)
    n_models, n_epochs = preds.shape[:2]
    # every (epoch, group) Poisson-binomial in one pass: (n_epochs * n_present, n_models + 1)
    per_group = null_tp_agreement(acc[:, :, present].reshape(n_models, -1))
    per_group = per_group.reshape(n_epochs, len(present), n_models + 1)
    return np.einsum("c,eck->ek", counts[present] / counts.sum(), per_group)


def null_tp_agreement_by_class(predictions, labels):
    """Null distribution of TP-agreement for independent classifiers that keep each model's
    accuracy on every class: (n_epochs, n_models + 1).

    A stricter null than ``null_tp_agreement``: near chance level a collection whose models
    all favour one class is right on that class's examples and wrong on the rest, so its
    TP-agreement sits at 0 and 1 without the models sharing any order of the examples.  Here
    an example of class c is right for model m independently with m's recall on c, and the
    distribution is the mixture over classes of those Poisson-binomials, weighted by the
    classes' shares of the examples (``null_tp_agreement_by_group`` with the labels as groups).
    """
    labels = np.asarray(labels)
    return null_tp_agreement_by_group(predictions, labels, labels)


def null_bimodality(accuracy):
    """Bimodality of the null TP-agreement distribution, exactly: (n_epochs,)."""
    pmf = null_tp_agreement(accuracy)
    n_models = pmf.shape[1] - 1
    return bimodality_of_distribution(np.arange(n_models + 1) / n_models, pmf)


def tp_agreement_histogram(tpa, n_models):
    """Counts of each TP-agreement value k/n_models: (n_epochs, n_models + 1) int64."""
    tpa = np.asarray(tpa)
    k = np.rint(tpa * n_models).astype(np.int64)
    return np.stack([np.bincount(row, minlength=n_models + 1) for row in k])


def bimodality_test(tpa, accuracy, n_draws=2000, seed=0, null_pmf=None):
    """Is TP-agreement more bimodal than under the null? One-sided, per epoch.

    tpa: (n_epochs, n_examples); accuracy: (n_models, n_epochs); null_pmf: another null's
    (n_epochs, n_models + 1) distribution (``null_tp_agreement_by_class``), default the
    matched-accuracy one.  Draws ``n_draws`` samples of n_examples from the null (seeded),
    and returns a dict of (n_epochs,) arrays: ``observed``, ``null`` (exact), ``p_value`` =
    P(sample bimodality under the null <= observed), with the +1 correction so it is never 0.
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    n_models = accuracy.shape[0]
    counts = tp_agreement_histogram(tpa, n_models)
    support = np.arange(n_models + 1) / n_models
    observed = bimodality_of_distribution(support, counts)
    pmf = null_tp_agreement(accuracy) if null_pmf is None else np.asarray(null_pmf, np.float64)
    n_examples = counts.sum(axis=1)
    rng = np.random.default_rng(seed)
    p_value = np.empty(len(pmf))
    for e, (row, n) in enumerate(zip(pmf, n_examples)):
        draws = rng.multinomial(n, row / row.sum(), size=n_draws)
        b = bimodality_of_distribution(support, draws)
        p_value[e] = (1 + np.sum(b <= observed[e])) / (n_draws + 1)
    return {"observed": observed, "null": bimodality_of_distribution(support, pmf), "p_value": p_value}


def null_agreement(accuracy, n_classes, n_samples=20000, seed=0):
    """Seeded simulation of Agreement under the null.

    Each of n_models independent classifiers is correct with its own accuracy and otherwise
    predicts one of the n_classes - 1 wrong labels uniformly. accuracy: (n_models, n_epochs).
    Returns (n_epochs, n_samples) Agreement values of simulated examples.
    """
    p = np.asarray(accuracy, dtype=np.float64)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2; got {n_classes}")
    n_models, n_epochs = p.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n_epochs, n_samples))
    for e in range(n_epochs):
        correct = rng.random((n_models, n_samples)) < p[:, e:e + 1]
        wrong = rng.integers(1, n_classes, size=(n_models, n_samples), dtype=np.int16)
        sim = np.where(correct, np.int16(0), wrong)
        out[e] = mode(sim) / n_models
    return out


def independent_collection(accuracy, labels, n_classes, seed=0):
    """Predictions of the null itself: independent classifiers at the given accuracies.

    Model m at epoch e is right on each example independently with probability
    accuracy[m, e], and otherwise predicts one of the other n_classes - 1 labels uniformly.
    accuracy: (n_models, n_epochs); labels: (n_examples,).  Returns int16 predictions
    (n_models, n_epochs, n_examples) that any score takes like a real collection's.
    """
    p = np.asarray(accuracy, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2:
        raise ValueError(f"accuracy must be (n_models, n_epochs); got shape {p.shape}")
    rng = np.random.default_rng(seed)
    right = rng.random((*p.shape, len(labels))) < p[:, :, None]
    wrong = (labels + rng.integers(1, n_classes, size=(*p.shape, len(labels)))) % n_classes
    return np.where(right, labels, wrong).astype(np.int16)


def null_agreement_unlabelled(predictions, n_samples=20000, seed=0):
    """Seeded simulation of Agreement for independent classifiers on inputs without labels.

    Out-of-sample inputs (paper §3.4) have no correct class, so the matched-accuracy null does
    not apply; here each model keeps its own label frequencies on these inputs but draws them
    independently per example. predictions: (n_models, n_epochs, n_examples).
    Returns (n_epochs, n_samples) Agreement values of simulated examples.
    """
    preds, _ = _check_predictions(predictions)
    n_models, n_epochs, _ = preds.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n_epochs, n_samples))
    for e in range(n_epochs):
        sim = np.empty((n_models, n_samples), np.int16)
        for m in range(n_models):
            sim[m] = preds[m, e, rng.integers(0, preds.shape[2], n_samples)]
        out[e] = mode(sim) / n_models
    return out


def _largest_wrong_share(wrong_labels, wrong, n_classes):
    """(n_examples,) the largest fraction of an example's wrong models giving one label; NaN
    where fewer than two models are wrong.  wrong_labels, wrong: (n_models, n_examples)."""
    n_models, n_examples = wrong.shape
    idx = (np.arange(n_examples)[None, :] * n_classes + wrong_labels)[wrong]
    counts = np.bincount(idx, minlength=n_examples * n_classes).reshape(n_examples, n_classes)
    w = wrong.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w >= 2, counts.max(1) / w, np.nan)


def mistake_agreement(predictions, labels, n_classes):
    """Do the models make the *same* mistakes?  Among the models wrong on an example, the
    largest fraction giving one (wrong) label: 1 when every wrong model gives the same one.

    predictions: (n_models, n_epochs, n_examples); labels: (n_examples,).  Returns
    (n_epochs, n_examples) float64, NaN where fewer than two models are wrong.

    Example:
        >>> p = np.array([[[1, 0]], [[1, 2]], [[2, 1]]])  # 3 models, 1 epoch, 2 examples of class 0
        >>> mistake_agreement(p, np.array([0, 0]), 3)
        array([[0.66666667, 0.5       ]])
    """
    preds, labels = _check_predictions(predictions, labels)
    out = np.empty(preds.shape[1:])
    for e in range(preds.shape[1]):
        out[e] = _largest_wrong_share(preds[:, e], preds[:, e] != labels, n_classes)
    return out


def null_mistake_agreement(predictions, labels, n_classes, n_draws=20, seed=0, confusion=True):
    """``mistake_agreement`` of independent models that keep the observed pattern of who is
    wrong on which example and draw their wrong label on their own: from each model's confusion
    row of the example's class at that epoch (``confusion``; the mistakes every model shares
    through similar classes are then in the null), or uniformly among the other classes (the
    paper's null classifier).  Returns (n_epochs, n_examples), the mean over ``n_draws`` draws
    (NaN where fewer than two models are wrong)."""
    preds, labels = _check_predictions(predictions, labels)
    n_models, n_epochs, n_examples = preds.shape
    rng = np.random.default_rng(seed)
    out = np.zeros((n_epochs, n_examples))
    for e in range(n_epochs):
        p = preds[:, e]
        wrong = p != labels
        if confusion:
            # cum[m, y]: model m's cumulative distribution of wrong labels on class y
            counts = np.zeros((n_models, n_classes, n_classes))
            for m in range(n_models):
                np.add.at(counts[m], (labels[wrong[m]], p[m, wrong[m]]), 1)
            rows = counts.sum(2, keepdims=True)
            uniform = (1 - np.eye(n_classes)) / (n_classes - 1)
            cum = np.cumsum(np.where(rows > 0, counts / np.maximum(rows, 1), uniform[None]), axis=2)
        for _ in range(n_draws):
            if confusion:
                u = rng.random((n_models, n_examples))[..., None]
                draw = (u > cum[np.arange(n_models)[:, None], labels[None, :]]).sum(2)
            else:
                draw = (labels + rng.integers(1, n_classes, (n_models, n_examples))) % n_classes
            out[e] += _largest_wrong_share(np.minimum(draw, n_classes - 1), wrong, n_classes)
    return out / n_draws


# --- comparing collections -------------------------------------------------------------------

def accessibility_correlation(a, b):
    """Pearson r and two-sided p-value between two collections' accessibility (paper §4.1).

    a, b: (n_examples,) accessibility of the same examples. Returns (r, p).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be (n_examples,) of one length; got {a.shape} and {b.shape}")
    from scipy import stats  # here, not at the top: it took 0.6 s of every worker's start-up
    res = stats.pearsonr(a, b)
    return float(res.statistic), float(res.pvalue)


def matched_accuracy_comparison(predictions_a, predictions_b, labels, tolerance=0.01):
    """Compare two collections at matched ensemble accuracy (paper §4.1, Fig 8a).

    Each collection votes by majority. Every recorded epoch of the stronger collection (higher
    final ensemble accuracy) is paired with the epoch of the weaker one whose ensemble accuracy
    is closest, if within ``tolerance``; once the stronger one is past the weaker's final
    accuracy, it is compared against the weaker's final epoch.

    predictions_a: (n_models_a, n_epochs_a, n_examples); predictions_b likewise.
    Returns a dict of equal-length arrays, one entry per pair: ``epoch_index_a``,
    ``epoch_index_b``, ``accuracy_a``, ``accuracy_b``, ``both``, ``only_a``, ``only_b``,
    ``neither`` (example counts), and ``stronger`` ("a" or "b").
    """
    _check_predictions(predictions_a, labels)
    _check_predictions(predictions_b, labels)
    labels = np.asarray(labels)
    correct_a = majority_vote(predictions_a) == labels
    correct_b = majority_vote(predictions_b) == labels
    acc_a, acc_b = correct_a.mean(1), correct_b.mean(1)
    a_stronger = acc_a[-1] >= acc_b[-1]
    strong, weak = (acc_a, acc_b) if a_stronger else (acc_b, acc_a)
    pairs = []
    for i, acc in enumerate(strong):
        gap = np.abs(weak - acc)
        j = int(np.argmin(gap))
        if gap[j] <= tolerance:
            pairs.append((i, j))
        elif acc > weak[-1]:
            pairs.append((i, len(weak) - 1))
    if a_stronger:
        ia, ib = (np.array([p[k] for p in pairs], np.int64) for k in (0, 1))
    else:
        ib, ia = (np.array([p[k] for p in pairs], np.int64) for k in (0, 1))
    ca, cb = correct_a[ia], correct_b[ib]
    return {
        "epoch_index_a": ia, "epoch_index_b": ib,
        "accuracy_a": acc_a[ia], "accuracy_b": acc_b[ib],
        "both": (ca & cb).sum(1), "only_a": (ca & ~cb).sum(1),
        "only_b": (~ca & cb).sum(1), "neither": (~ca & ~cb).sum(1),
        "stronger": "a" if a_stronger else "b",
    }
