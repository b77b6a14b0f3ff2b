"""Per-split, per-epoch summary of a record: the numbers ``python -m agreebook report`` prints."""
from __future__ import annotations

import numpy as np

from . import metrics as M


def summarize(record, n_null=20000, seed=0, splits=None):
    """{split: {"epochs", "accuracy" (per epoch, per model), "accuracy_mean", "accuracy_sd",
    "tp_agreement_mean", "bimodality", "null_bimodality", "p_value", "agreement",
    "null_agreement", "class_null_bimodality", "class_p_value"}}; Agreement means are over
    examples, nulls at matched accuracy; the class_ ones test against the stricter null that
    keeps each model's accuracy on every class (metrics.null_tp_agreement_by_class).
    splits: the labelled splits to summarise (default all); each split's numbers are the same
    whichever others are asked for."""
    out = {}
    for split in splits or record.labelled_splits:
        preds, labels = record.predictions[split], record.labels[split]
        acc = M.accuracies(preds, labels)
        tpa = M.tp_agreement(preds, labels)
        test = M.bimodality_test(tpa, acc, seed=seed)
        null_agree = M.null_agreement(acc, record.n_classes, n_samples=n_null, seed=seed)
        by_class = M.bimodality_test(tpa, acc, seed=seed, null_pmf=M.null_tp_agreement_by_class(
            preds, labels, record.n_classes))
        out[split] = {
            "epochs": record.epochs.tolist(),
            "accuracy": acc.T.round(6).tolist(),
            "accuracy_mean": acc.mean(0).round(6).tolist(),
            "accuracy_sd": acc.std(0).round(6).tolist(),
            "tp_agreement_mean": tpa.mean(1).round(6).tolist(),
            "bimodality": _clean(test["observed"]),
            "null_bimodality": _clean(test["null"]),
            "p_value": _clean(test["p_value"]),
            "agreement": M.agreement(preds).mean(1).round(6).tolist(),
            "null_agreement": null_agree.mean(1).round(6).tolist(),
            "class_null_bimodality": _clean(by_class["null"]),
            "class_p_value": _clean(by_class["p_value"]),
        }
    return out


def _clean(a):
    return [None if not np.isfinite(v) else round(float(v), 6) for v in a]


def format_summary(record, summary):
    m = record.meta
    lines = [f"{m.get('dataset', '?')} / {m.get('arch', '?')}: {record.n_models} models, "
             f"protocol {m.get('protocol', '?')}, epochs {record.epochs.tolist()}"
             + ("" if record.is_complete else "  [INCOMPLETE: training still running or was killed]")]
    for split, s in summary.items():
        lines.append(f"\n{split} ({record.predictions[split].shape[2]} examples)")
        lines.append(f"{'epoch':>6} {'acc mean':>9} {'acc sd':>7} {'TPa mean':>9} {'bimod':>7} "
                     f"{'null':>7} {'p':>8} {'agree':>7} {'null':>7} {'cnull':>7} {'p(c)':>8}")
        for i, e in enumerate(s["epochs"]):
            def f(v, w, d):
                return f"{'nan':>{w}}" if v is None else f"{v:>{w}.{d}f}"
            lines.append(f"{e:>6} {s['accuracy_mean'][i]:>9.4f} {s['accuracy_sd'][i]:>7.4f} "
                         f"{s['tp_agreement_mean'][i]:>9.4f} {f(s['bimodality'][i], 7, 3)} "
                         f"{f(s['null_bimodality'][i], 7, 3)} {f(s['p_value'][i], 8, 4)} "
                         f"{s['agreement'][i]:>7.4f} {s['null_agreement'][i]:>7.4f} "
                         f"{f(s['class_null_bimodality'][i], 7, 3)} {f(s['class_p_value'][i], 8, 4)}")
    lines.append("\nbimod: Pearson bimodality of TP-agreement (lower = more bimodal); null: independent "
                 "classifiers at the same accuracies; p: P(null sample <= observed); cnull, p(c): the same for "
                 "the class-matched null (each model's accuracy on every class).")
    return "\n".join(lines)
