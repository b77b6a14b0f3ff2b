"""The field's per-example difficulty scores, side by side, from one collection's record.

Pure NumPy functions on arrays shaped ``(n_models, n_epochs, n_examples)`` as everywhere in the
package, each returning ``(n_examples,)``: one value per example for the whole collection (the
mean over its models of each model's score, unless the docstring says otherwise).  The record
holds every member's predicted label at every recorded epoch; the probability-based scores also
need what ``TrainConfig.save_probabilities`` (or ``Record.from_arrays(..., logits=...)``) keeps
per entry: the true-class probability, the largest other-class probability, the error norm and
the logit margin (``outputs_from_logits``).

* accessibility (Hacohen et al., ICML 2020): the mean TP-agreement over the recorded epochs
  (``metrics.accessibility``); the learning epoch (``metrics.learning_epoch``).
* forgetting events (Toneva et al., ICLR 2019): right-to-wrong transitions between consecutive
  recorded points; a model that never gets an example right has forgotten it infinitely often
  (their convention), and the collection's value is the median over its models.
* dataset cartography (Swayamdipta et al., EMNLP 2020): confidence, the mean over epochs of the
  true-class probability; variability, its standard deviation over epochs; correctness, the
  share of epochs the model is right.
* the margin: true-class probability minus the largest other-class probability, at one epoch.
* EL2N (Paul, Ganguli and Dziugaite, NeurIPS 2021): the L2 norm of the softmax output minus the
  one-hot label, at an early epoch, averaged over models.
* the area under the margin (Pleiss et al., NeurIPS 2020): the mean over epochs of the logit of
  the assigned label minus the largest other logit.

The recorded epochs are a sample of training: where a paper averages over every epoch (or
every step), these average over the recorded ones.
"""
from __future__ import annotations

import os

import numpy as np

from .metrics import _check_predictions
from .outputs import OUTPUT_KEYS, outputs_from_logits, outputs_from_probabilities  # noqa: F401 (the API's)

OUTPUTS = tuple(OUTPUT_KEYS)  # what the probability-based scores need from a record


def _check_values(values, name, like=None):
    """One validator for the per-entry float arrays: (n_models, n_epochs, n_examples), and the
    predictions' shape where both are given."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"{name} must be (n_models, n_epochs, n_examples); got shape {v.shape}")
    if like is not None and v.shape != np.shape(like):
        raise ValueError(f"{name} must have the predictions' shape {np.shape(like)}; got {v.shape}")
    return v


def forgetting(predictions, labels):
    """Forgetting events (Toneva et al., ICLR 2019): (events, never_learned), each (n_examples,).

    events: the median over the models of each model's right-to-wrong transitions between
    consecutive recorded epochs, a model never right on the example at any recorded epoch
    counting as infinitely many, as Toneva et al. count unlearned examples (inf where most
    models never are; the median, not the mean, so one such model does not make the example
    infinite); never_learned: the share of models never right on it.  Recorded epochs sample
    the training steps (Toneva et al. count per presentation), so with E recorded epochs a
    model counts at most E // 2 events.

    Example:
        >>> p = np.array([[[0, 1, 1], [1, 1, 1], [0, 1, 1]]])  # 1 model, 3 epochs; labels 0, 0, 1
        >>> events, never = forgetting(p, np.array([0, 0, 1]))
        >>> events.tolist(), never.tolist()
        ([1.0, inf, 0.0], [0.0, 1.0, 0.0])
    """
    preds, labels = _check_predictions(predictions, labels)
    counts = _forgetting_per_model(preds, labels)
    return _median_of_levels(counts, range(preds.shape[1])), np.isinf(counts).mean(0)


def _forgetting_per_model(preds, labels, right=None, hits=None):
    """Each model's forgetting events per example, (n_models, n_examples) float64: inf where the
    model is never right on it (Toneva et al.'s count for an unlearned example).  right: preds
    == labels, and hits: right's count over the epochs, where the caller has them."""
    from . import metrics as M
    right = preds == labels if right is None else right
    ever = right.any(1) if hits is None else hits > 0
    return np.where(ever, M._forgetting_events(right), np.inf)


def cartography(probabilities, predictions, labels):
    """Dataset cartography (Swayamdipta et al., EMNLP 2020): (confidence, variability,
    correctness), each (n_examples,), the mean over models of each model's value.

    probabilities: the true-class probability per entry (n_models, n_epochs, n_examples).
    confidence: its mean over the recorded epochs; variability: its standard deviation over
    them (population, as the authors compute it); correctness: the share of recorded epochs
    the model is right, which averaged over models is accessibility (Hacohen et al.) exactly.

    Example:
        >>> q = np.array([[[0.2], [0.8]]]); p = np.array([[[1], [0]]])
        >>> [round(float(v[0]), 2) for v in cartography(q, p, np.array([0]))]
        [0.5, 0.3, 0.5]
    """
    preds, labels = _check_predictions(predictions, labels)
    q = _check_values(probabilities, "probabilities", preds)
    return q.mean(1).mean(0), q.std(1).mean(0), (preds == labels).mean(1).mean(0)


def margin(probabilities, other_probabilities, epoch_index=-1):
    """The margin at one recorded epoch: true-class minus largest other-class probability, mean
    over models: (n_examples,), in [-1, 1]; below 0 where the models lean to another class.

    Example:
        >>> margin(np.array([[[0.7, 0.2]]]), np.array([[[0.2, 0.5]]])).round(2).tolist()
        [0.5, -0.3]
    """
    q = _check_values(probabilities, "probabilities")
    o = _check_values(other_probabilities, "other_probabilities", q)
    return (q[:, epoch_index] - o[:, epoch_index]).mean(0)


def el2n(error_norms, epoch_index=0):
    """EL2N (Paul et al., NeurIPS 2021): the L2 norm of softmax minus one-hot at an early recorded
    epoch, mean over the models (their paper averages 10 runs at epoch 20 of 200 for CIFAR-10):
    (n_examples,), in [0, sqrt(2)]; higher is harder.

    Example:
        >>> el2n(np.array([[[0.1, 1.2]], [[0.3, 1.0]]])).round(2).tolist()
        [0.2, 1.1]
    """
    return _check_values(error_norms, "error_norms")[:, epoch_index].mean(0)


def area_under_margin(logit_margins):
    """The area under the margin (Pleiss et al., NeurIPS 2020): the mean over the recorded epochs
    of the assigned label's logit minus the largest other logit, mean over models:
    (n_examples,); low or negative for mislabelled and hard examples.

    Example:
        >>> area_under_margin(np.array([[[1.0], [3.0]]])).tolist()
        [2.0]
    """
    return _check_values(logit_margins, "logit_margins").mean(1).mean(0)


def early_epoch_index(epochs, share=0.1):
    """The recorded epoch EL2N is read at: the first at or past ``share`` of the last recorded
    epoch (Paul et al. read CIFAR-10 at epoch 20 of 200)."""
    ep = np.asarray(epochs)
    return int(np.flatnonzero(ep >= share * ep[-1])[0])


# which outputs each probability-based score reads
NEEDS = {"confidence": ("probability",), "variability": ("probability",),
         "margin": ("probability", "other_probability"), "EL2N": ("error_norm",),
         "area under the margin": ("logit_margin",)}


CHUNK = 1 << 16  # examples per block in scores_table: (100 models, 7 epochs, 65536) float32 is 180 MB


def _block(values, j, epochs=slice(None)):
    """values[:, epochs, j] in memory, for values (n_models, n_epochs, n).  A large record's
    outputs are mapped from its file (``Record.load``); their blocks are read with plain reads
    of the file it was loaded from (``.source``) instead of through the mapping, whose pages would stay in this process (a kernel
    that caches files in large folios maps whole rows around each block: the ImageNet-sized
    record's 7 GiB of outputs then all counted in its memory)."""
    f = getattr(values, "source", None)  # the file a mapped array came from (io.npz_stored_arrays)
    if not (isinstance(values, np.memmap) and f is not None and values.base is getattr(values, "_mmap", None)
            and values.flags.c_contiguous):
        return np.array(values[:, epochs, j])
    n_models, n_epochs, n = values.shape
    start, stop, _ = j.indices(n)
    rows = range(n_epochs)[epochs]
    out = np.empty((n_models, len(rows), max(stop - start, 0)), values.dtype)
    size = out.shape[2] * values.itemsize
    for m in range(n_models):
        for k, e in enumerate(rows):
            at = values.offset + ((m * n_epochs + e) * n + start) * values.itemsize
            buf = memoryview(out[m, k]).cast("B")
            if hasattr(os, "preadv"):  # at an offset: the descriptor's position is shared by its copies
                got = os.preadv(f.fileno(), [buf], at)
            else:
                f.seek(at)
                got = f.readinto(buf)
            if got != size:
                raise OSError(f"{values.filename} ended early: the record was cut short; train it again")
    return out


def column_names(record):
    """{score: its column in ``scores_table`` and its key in ``per_model``}: the scores read at
    one epoch name it ("margin (epoch 16)", "EL2N (epoch 2)")."""
    e = early_epoch_index(record.epochs)
    return {"confidence": "confidence", "variability": "variability",
            "margin": f"margin (epoch {record.epochs[-1]})", "EL2N": f"EL2N (epoch {record.epochs[e]})",
            "area under the margin": "area under the margin"}


def median_learning_epoch(learning_epochs, epochs):
    """The median over the models of ``metrics.learning_epoch`` (n_models, n_examples), a model
    that has not learned the example by the last recorded epoch (NaN there, or inf as
    ``per_model`` keeps it) counting as later than every recorded epoch: inf where most models
    have not, so the examples the collection does not learn rank last instead of dropping out.

    Example:
        >>> le = np.array([[1.0, np.nan, 4.0], [2.0, np.nan, np.nan], [4.0, np.nan, np.nan]])
        >>> median_learning_epoch(le, [1, 2, 4]).tolist()
        [2.0, inf, inf]
    """
    return _median_of_levels(learning_epochs, epochs)


def _median_of_levels(values, levels):
    """np.median over axis 0 of values (n_models, n) that take only the given finite levels, or
    inf or NaN (both counted as above every level): from per-level counts instead of a sort
    (100 models x 1.3M examples: a sort per example was most of scores_table's time)."""
    lv = np.append(np.asarray(levels, dtype=np.float64), np.inf)
    v = np.asarray(values)
    counts = np.stack([(v == x).sum(0) for x in lv[:-1]] + [(~np.isfinite(v)).sum(0)])  # (n_levels + 1, n)
    k = v.shape[0]
    cum = counts.cumsum(0)
    lo = (cum <= (k - 1) // 2).sum(0)
    hi = (cum <= k // 2).sum(0)
    return (lv[lo] + lv[hi]) / 2


def _mean_std(values, std=True):
    """The mean and population standard deviation (as np.std) over axis 1 of values (n_models,
    n_epochs, n) float16, in float32 (std None unless asked), one epoch at a time: np.std over
    the middle axis of 100 models x 7 epochs x 65536 took 0.34 s, these loops 0.1 s."""
    n_epochs = values.shape[1]
    # each epoch converted into one reused buffer: a fresh array per epoch page-faults its
    # memory in anew (2x slower here), a float16 operand inside a float32 ufunc is cast in
    # small buffers (3x)
    buf = np.empty((values.shape[0], values.shape[2]), np.float32)
    total = np.zeros_like(buf)
    for e in range(n_epochs):
        np.copyto(buf, values[:, e])
        total += buf
    total /= n_epochs
    mean = total
    if not std:
        return mean, None
    total = np.zeros_like(buf)
    for e in range(n_epochs):
        np.copyto(buf, values[:, e])
        buf -= mean
        buf *= buf
        total += buf
    total /= n_epochs
    return mean, np.sqrt(total, out=total)


def _per_model_block(preds, labels, epochs, have, early, names):
    """``per_model`` on arrays: predictions (n_models, n_epochs, n) and the outputs of the same n
    examples as stored (float16), each score computed in float32; early: EL2N's epoch's index
    in have["error_norm"], and the margin reads the last of have["other_probability"].  A probability-based score
    that reads an unrecorded entry (NaN: a run resumed from a checkpoint of an earlier version,
    which did not keep that output) is left out."""
    from . import metrics as M
    right = preds == labels.astype(preds.dtype, copy=False)
    hits = np.zeros((right.shape[0], right.shape[2]), np.int32)
    for e in range(right.shape[1]):  # a sum over the middle axis in one call is 2x slower
        hits += right[:, e]
    out = {"accessibility": hits / right.shape[1],
           "forgetting events (median)": _forgetting_per_model(preds, labels, right, hits),
           "learning epoch (median)": M._learning_epoch(right, epochs, never=np.inf)}
    del right

    make = {"margin": lambda: have["probability"][:, -1].astype(np.float32) - have["other_probability"][:, -1],
            "EL2N": lambda: have["error_norm"][:, early].astype(np.float32),
            "area under the margin": lambda: _mean_std(have["logit_margin"], std=False)[0]}
    if "probability" in have:
        out["confidence"], out["variability"] = _mean_std(have["probability"])
    for name, needs in NEEDS.items():
        if name in make and all(k in have for k in needs):
            out[name] = make[name]()
    for name in NEEDS:
        if name in out:
            value = out.pop(name)
            if not np.isnan(value).any():
                out[names[name]] = value
    return out


def per_model(record, split):
    """Each model's own value of every score, {column: (n_models, n_examples)}, keyed by the
    score's column in ``scores_table``: what the collection's score aggregates (the mean over
    the models; the median for forgetting events and the learning epoch, which are inf for a
    model that never gets the example right or has not learned it by the last recorded epoch:
    ``AGGREGATE``), and what ``stats.score_reliability`` reads to tell how many models each
    score needs.  A probability-based score is there where the record keeps what it needs
    (``NEEDS``), in float32 (the record keeps float16)."""
    return _per_model_block(record.predictions[split], record.labels[split], record.epochs,
                            record.outputs.get(split, {}), early_epoch_index(record.epochs), column_names(record))


# how the collection's value of a score comes from its models' (per_model): the mean, except
# for the scores that are infinite for a model that never learns the example
AGGREGATE = {"forgetting events (median)": "median", "learning epoch (median)": "median"}


def dataset_index(record, split):
    """Each of a split's examples' index in the record's dataset, in the record's order (a
    train_size subset keeps its indices; without a subset, 0..n-1): the index of
    ``scores_table``, to align anything else given in the record's order with its rows."""
    sub = (record.meta.get("subset") or {}).get(f"{split}_indices")
    return np.asarray(sub, dtype=np.int64) if sub is not None else np.arange(len(record.labels[split]))


def scores_table(record, split):
    """Every score of ``split``'s examples, one row each, in the dataset's original order: a
    DataFrame indexed by the example's index in the record's dataset (``meta["dataset"]``; a
    train_size subset keeps its indices; a class subset such as cifar10_animals indexes its own
    examples), with its label and class, then accessibility, the median learning epoch over the
    models (inf where most have not learned it by the last recorded epoch:
    ``median_learning_epoch``), the share of models that have not, the median forgetting events
    (``forgetting``) and the share of models never right, and, where the record keeps what
    they need, cartography's confidence, variability and correctness, the margin at the last
    recorded epoch, EL2N at ``early_epoch_index`` and the area under the margin.
    ``attrs["missing"]``: the scores left out, and why.  A record still training (or killed
    before its end) is refused: its unrecorded entries would read as wrong.

    Example:
        >>> from agreebook.record import Record
        >>> z = np.random.default_rng(0).normal(size=(3, 4, 6, 2))
        >>> t = scores_table(Record.from_arrays(labels={"test": np.arange(6) % 2}, epochs=[1, 2, 3, 4],
        ...                                     logits={"test": z}), "test")
        >>> t.shape, t.attrs["missing"]
        ((6, 13), '')
    """
    import pandas as pd
    from .record import RecordError
    if split not in record.labelled_splits:
        raise RecordError(f"scores need labels; {split!r} is not a labelled split of this record "
                          f"({', '.join(record.labelled_splits)})")
    if not record.is_complete:
        raise RecordError("this record is incomplete (a run still training, or killed before its end): run the "
                          "same train command again to finish it, then compute the scores")
    preds, labels = record.predictions[split], record.labels[split]
    index = dataset_index(record, split)
    names = record.meta.get("classes") or [str(c) for c in range(record.n_classes)]
    have, early, cols_of = record.outputs.get(split, {}), early_epoch_index(record.epochs), column_names(record)
    # in blocks of examples: the per-model arrays of a large record (100 models x 1.3M examples,
    # float32: 530 MB a score) are reduced to their means block by block
    n_epochs = len(record.epochs)
    reads = {"other_probability": slice(n_epochs - 1, n_epochs), "error_norm": slice(early, early + 1)}
    blocks = []
    for i in range(0, len(labels), CHUNK):
        j = slice(i, i + CHUNK)
        p, y = preds[..., j], labels[j]
        # of the outputs the margin and EL2N read one epoch each: only that epoch is read
        each = _per_model_block(p, y, record.epochs, {k: _block(v, j, reads.get(k, slice(None))) for k, v in have.items()},
                                0, cols_of)
        le = each.pop("learning epoch (median)")
        forgot = each.pop("forgetting events (median)")
        block = {k: v.mean(0, dtype=np.float64) for k, v in each.items()}
        block["learning epoch (median)"] = median_learning_epoch(le, record.epochs)
        block["not learned by the end (share of models)"] = np.isinf(le).mean(0)
        block["forgetting events (median)"] = _median_of_levels(forgot, range(len(record.epochs)))
        block["never right (share of models)"] = np.isinf(forgot).mean(0)
        blocks.append(block)
    # a probability-based score left out of one block (an unrecorded entry there) is left out
    blocks = [{k: b[k] for k in blocks[0] if all(k in c for c in blocks)} for b in blocks]
    pm = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    cols = {"label": labels, "class": np.asarray(names, dtype=object)[labels], "accessibility": pm["accessibility"],
            "learning epoch (median)": pm["learning epoch (median)"],
            "not learned by the end (share of models)": pm["not learned by the end (share of models)"],
            "forgetting events (median)": pm["forgetting events (median)"],
            "never right (share of models)": pm["never right (share of models)"]}
    for col in column_names(record).values():
        if col in pm:
            cols[col] = pm[col]
            if col == "variability":  # cartography's third coordinate beside its first two
                cols["correctness"] = pm["accessibility"]
    t = pd.DataFrame(cols, index=pd.Index(index, name=f"{record.meta.get('dataset', '')} {split} index".strip()))
    lacking = [n for n, col in column_names(record).items() if col not in pm]
    if not lacking:
        t.attrs["missing"] = ""
    elif record.outputs.get(split):
        t.attrs["missing"] = (f"{', '.join(lacking)}: this record keeps only some of the per-entry outputs (it was "
                              f"trained before the record kept them all, or resumed across that change); train it "
                              f"again into a new folder with --save-probabilities")
    else:
        t.attrs["missing"] = (f"{', '.join(lacking)} (and correctness) need the per-entry probabilities: train with "
                              f"--save-probabilities, or build the record with Record.from_arrays(..., logits=...)")
    return t.sort_index()


def record_scores(record):
    """``scores_table`` of every labelled split of a record, in one DataFrame: columns ``split``
    and ``index`` (the example's index in the record's dataset) first, the splits in the
    record's order.  ``attrs["missing"]`` as ``scores_table``'s.  What ``python -m agreebook
    scores`` writes and the book offers for download."""
    import pandas as pd
    from .record import RecordError
    splits = record.labelled_splits
    if not splits:
        raise RecordError("this record holds no labelled split (train, test or heldout); scores need labels")
    tables = [scores_table(record, s) for s in splits]
    t = pd.concat([x.reset_index().rename(columns={x.index.name: "index"}).assign(split=s)
                   for s, x in zip(splits, tables)], ignore_index=True)
    t = t[["split", "index"] + [c for c in t.columns if c not in ("split", "index")]]
    t.attrs["missing"] = tables[0].attrs["missing"]
    return t
