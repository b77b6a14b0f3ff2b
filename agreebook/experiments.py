"""The analyses a chapter runs on records, as functions returning arrays or tables.

Tables are pandas DataFrames (they render as HTML in the book); everything else is NumPy.
"""
from __future__ import annotations

import numpy as np

from . import metrics as M
from .report import summarize


def epoch_table(record, split):
    """Per recorded epoch: accuracy (mean, sd over models), mean TP-agreement, bimodality of
    TP-agreement against its null with the p-value, mean Agreement against its null."""
    import pandas as pd
    s = summarize(record, splits=(split,))[split]
    return pd.DataFrame({
        "epoch": s["epochs"], "accuracy": s["accuracy_mean"], "accuracy sd": s["accuracy_sd"],
        "mean TPa": s["tp_agreement_mean"], "bimodality": s["bimodality"],
        "null bimodality": s["null_bimodality"], "p": s["p_value"],
        "Agreement": s["agreement"], "null Agreement": s["null_agreement"],
    }).set_index("epoch")


def bimodality_verdict(record, split, alpha=0.01):
    """One sentence, from the data, on whether TP-agreement is more bimodal than the null."""
    s = summarize(record, splits=(split,))[split]
    ep = s["epochs"]
    sig = [e for e, p, b, q in zip(ep, s["p_value"], s["bimodality"], s["null_bimodality"])
           if p is not None and p < alpha and b < q]
    rest = [e for e in ep if e not in sig]
    head = (f"{split}: the observed TP-agreement is more bimodal than the null (p < {alpha}) at "
            f"{len(sig)} of {len(ep)} recorded epochs")
    if not rest:
        return head + ": every epoch."
    acc = dict(zip(ep, s["accuracy_mean"]))
    return head + "; not at epoch(s) " + ", ".join(
        f"{e} (mean accuracy {acc[e]:.3f}, bimodality {b if b is None else round(b, 3)} vs null "
        f"{q if q is None else round(q, 3)})"
        for e, b, q in zip(ep, s["bimodality"], s["null_bimodality"]) if e in rest) + "."


def learning_epoch_by_accessibility(record, split, width=0.05):
    """Fig 6: how late examples are learned, in accessibility bins of ``width``.

    Returns a dict of arrays over bins: ``lo``, ``hi`` (bin edges), ``n`` (examples in the
    bin), ``mean`` and ``sd`` of the learning epoch over the (model, example) pairs whose model
    is right at the last recorded epoch, and ``never`` (fraction of pairs not learned).
    """
    preds, labels = record.predictions[split], record.labels[split]
    acc = M.accessibility(M.tp_agreement(preds, labels))
    le = M.learning_epoch(preds, labels, record.epochs)  # (n_models, n_examples)
    edges = np.round(np.arange(0, 1 + width / 2, width), 10)
    which = np.clip(np.searchsorted(edges, acc, side="right") - 1, 0, len(edges) - 2)
    k = len(edges) - 1
    out = {"lo": edges[:-1], "hi": edges[1:], "n": np.zeros(k, int), "mean": np.full(k, np.nan),
           "sd": np.full(k, np.nan), "never": np.full(k, np.nan)}
    for b in range(k):
        cols = which == b
        out["n"][b] = cols.sum()
        if not cols.any():
            continue
        v = le[:, cols].ravel()
        learned = v[~np.isnan(v)]
        out["never"][b] = 1 - len(learned) / len(v)
        if len(learned):
            out["mean"][b], out["sd"][b] = learned.mean(), learned.std()
    return out


def robustness_settings(cfg):
    """§3.2: one-at-a-time changes to a collection's hyperparameters, as (label, overrides).

    cfg: the resolved base TrainConfig.  Learning rate x0.5 and x2, batch size /2 and x2, the
    other optimizers, no and lighter dropout, and other activations (where the architecture
    takes them).
    """
    from .models import get_arch
    s = [("base", {}),
         (f"lr {cfg.lr * 0.5:g}", {"lr": cfg.lr * 0.5}),
         (f"lr {cfg.lr * 2:g}", {"lr": cfg.lr * 2}),
         (f"batch {max(1, cfg.batch_size // 2)}", {"batch_size": max(1, cfg.batch_size // 2)}),
         (f"batch {cfg.batch_size * 2}", {"batch_size": cfg.batch_size * 2})]
    if cfg.optimizer != "adam":
        s.append(("adam lr 0.001", {"optimizer": "adam", "lr": 0.001, "momentum": 0.0}))
    if cfg.optimizer != "sgd":
        s.append(("sgd lr 0.05", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0}))
    arch = get_arch(cfg.arch)
    if arch.configurable:
        s += [("dropout 0", {"dropout": 0.0}), ("dropout 0.1/0.2", {"dropout": 0.1})]
        s += [(a, {"activation": a}) for a in ("relu", "tanh", "elu") if a != arch.activation][:2]
    return s


def robustness_table(results, split="test"):
    """One row per setting: final accuracy, and bimodality against its null over the epochs.

    results: [(label, record)].  Columns: N; mean accuracy at the last epoch; the median over
    recorded epochs of the observed bimodality and of the null's; the number of epochs at which
    the observed bimodality is significantly below the null's (p < 0.01); the largest p-value.
    """
    import pandas as pd
    rows = []
    for label, rec in results:
        s = summarize(rec, splits=(split,))[split]
        b, q, p = (np.array([np.nan if v is None else v for v in s[k]], float)
                   for k in ("bimodality", "null_bimodality", "p_value"))
        rows.append({"setting": label, "N": rec.n_models, "accuracy": s["accuracy_mean"][-1],
                     "bimodality (median)": np.nanmedian(b), "null (median)": np.nanmedian(q),
                     "epochs with p<0.01": f"{int(np.sum((p < 0.01) & (b < q)))}/{len(p)}",
                     "largest p": np.nanmax(p)})
    return pd.DataFrame(rows).set_index("setting")


def partition_correlations(records, split="test"):
    """§3.3: accessibility correlations between collections trained on disjoint partitions.

    records: collections evaluated on one common split.  Returns (accessibility (k, n),
    r (k, k), p (k, k)).
    """
    acc = np.stack([M.accessibility(r.tp_agreement(split)) for r in records])
    k = len(records)
    r, p = np.eye(k), np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            r[i, j], p[i, j] = M.accessibility_correlation(acc[i], acc[j])
            r[j, i], p[j, i] = r[i, j], p[i, j]
    return acc, r, p


def tp_agreement_correlations(a, b, split="test"):
    """Pearson r between two collections' TP-agreement on the same examples, per recorded
    epoch index: (n_epochs,).  Shows when, in training, the collections start to agree."""
    ta, tb = a.tp_agreement(split), b.tp_agreement(split)
    return np.array([M.accessibility_correlation(x, y)[0] if x.std() > 0 and y.std() > 0 else np.nan
                     for x, y in zip(ta, tb)])


def out_of_sample_agreement(record, epoch_index=-1, n_null=20000, seed=0):
    """§3.4: Agreement on every split at one recorded epoch, with its null.

    The test split's null is the matched-accuracy one (metrics.null_agreement); the
    unlabelled out-of-sample splits' null keeps each model's label frequencies on those
    inputs (metrics.null_agreement_unlabelled).  Returns {split: (observed (n,), null (n_null,))}.
    """
    e = epoch_index % record.n_epochs
    out = {}
    for split in record.splits:
        if split == "train":
            continue
        preds = record.predictions[split][:, e:e + 1]
        obs = M.agreement(preds)[0]
        if split in record.labelled_splits:
            null = M.null_agreement(M.accuracies(preds, record.labels[split]), record.n_classes, n_null, seed)[0]
        else:
            null = M.null_agreement_unlabelled(preds, n_null, seed)[0]
        out[split] = (obs, null)
    return out


def score_examples(record, split, epoch_index=-1, n_examples=6, n_shown_models=6):
    """Chapter 2 (as Fig 2): a few examples, from the least to the most accessible, with each
    shown model's predicted label at one epoch and every score of the example."""
    import pandas as pd
    preds, labels = record.predictions[split], record.labels[split]
    e = epoch_index % record.n_epochs
    tpa = M.tp_agreement(preds, labels)
    acc = M.accessibility(tpa)
    agr = M.agreement(preds[:, e:e + 1])[0]
    le = M.learning_epoch(preds, labels, record.epochs)
    order = np.argsort(acc, kind="stable")
    pick = order[np.linspace(0, len(order) - 1, n_examples).round().astype(int)]
    rows = []
    for i in pick:
        row = {"example": int(i), "label": int(labels[i])}
        row.update({f"model {m}": int(preds[m, e, i]) for m in range(min(n_shown_models, record.n_models))})
        row.update({"TP-agreement": tpa[e, i], "Agreement": agr[i], "accessibility": acc[i],
                    "median learning epoch": float(np.nanmedian(le[:, i])) if np.isfinite(le[:, i]).any()
                    else np.nan})
        rows.append(row)
    return pd.DataFrame(rows).set_index("example")


def null_record(record, seed=0):
    """A record of the null itself: independent classifiers with each real model's accuracy at
    each epoch, on the same labelled examples (metrics.independent_collection)."""
    from .record import Record
    preds, labels = {}, {}
    for i, split in enumerate(record.labelled_splits):
        y = record.labels[split]
        preds[split] = M.independent_collection(record.accuracies(split), y, record.n_classes, seed + i)
        labels[split] = y
    meta = {**record.meta, "arch": f"independent null of {record.meta.get('arch', '?')}"}
    return Record(preds, labels, record.epochs, meta=meta)
