"""What ``python -m agreebook report`` prints: each labelled split's analysis
(``analysis.analyze``) as a table, or as JSON."""
from __future__ import annotations

from .analysis import RELIABILITY_TARGET, analyze
from .stats import p_floor


def summarize(record, seed=0, splits=None):
    """{split: analysis.to_json()}: per split, per recorded epoch, the accuracies, TP-agreement,
    Pearson's bimodality with its bootstrap interval (``bimodality_ci``) against the
    matched-accuracy and class-matched nulls (p-values and how they were obtained), mean
    Agreement (``agreement_ci``) against its null, error consistency (``error_consistency``,
    ``error_consistency_ci``), the split-half reliability of accessibility (``reliability``) and
    how it grows with the number of models (``needed_*``).  splits: the labelled splits to
    summarise (default all); each split's numbers are the same whichever others are asked for."""
    return {split: analyze(record, split, seed=seed).to_json() for split in splits or record.labelled_splits}


def _p(p, n_draws):
    # JSON keeps 6 digits: 1/2001 comes back as 0.0005
    at_floor = p is not None and p <= round(1 / (n_draws + 1), 6)
    return f"{'≤' + format(p_floor(n_draws), '.2g'):>7}" if at_floor else _num(p, 7, 4)


def _num(v, w, d):
    return f"{'nan':>{w}}" if v is None else f"{v:>{w}.{d}f}"


def _ci(ci, d=2, w=13):
    return f"{'':>{w}}" if ci is None or None in ci else f"[{ci[0]:.{d}f}, {ci[1]:.{d}f}]".rjust(w)


def format_summary(record, summary):
    m = record.meta
    lines = [f"{m.get('dataset', '?')} / {m.get('arch', '?')}: {record.n_models} models, "
             f"protocol {m.get('protocol', '?')}, epochs {record.epochs.tolist()}"
             + ("" if record.is_complete else "  [INCOMPLETE: training still running or was killed]")]
    versions = m.get("versions")
    if versions:
        lines.append("ran with " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    for split, s in summary.items():
        draws = s["n_null_draws"]
        lines.append(f"\n{split} ({s['n_examples']} examples)")
        lines.append(f"{'epoch':>6} {'acc':>7} {'sd':>6} {'TPa':>6} {'bimod':>6} {'95% CI':>13} {'null':>6} "
                     f"{'p':>7} {'cnull':>6} {'p(c)':>7} {'agree':>6} {'95% CI':>15} {'null':>6} {'kappa':>6} {'95% CI':>13}")
        for i, e in enumerate(s["epochs"]):
            lines.append(
                f"{e:>6} {s['accuracy_mean'][i]:>7.4f} {s['accuracy_sd'][i]:>6.4f} {s['tp_agreement_mean'][i]:>6.3f} "
                f"{_num(s['bimodality'][i], 6, 3)} {_ci(s['bimodality_ci'][i])} {_num(s['null_bimodality'][i], 6, 3)} "
                f"{_p(s['p_value'][i], draws)} {_num(s['class_null_bimodality'][i], 6, 3)} "
                f"{_p(s['class_p_value'][i], draws)} {_num(s['agreement'][i], 6, 3)} {_ci(s['agreement_ci'][i], 3, 15)} "
                f"{_num(s['null_agreement'][i], 6, 3)} "
                f"{_num(s['error_consistency'][i], 6, 3)} {_ci(s['error_consistency_ci'][i])}")
        rel = s["reliability"]
        lines.append(f"accessibility reliability (split-half, Spearman-Brown corrected to N={record.n_models}): "
                     f"{_num(rel, 0, 3).strip()} (sd {_num(s['reliability_sd'], 0, 3).strip()} over random halves)")
        at = s["reliability_reached_at"]
        lines.append(f"accessibility reliability {RELIABILITY_TARGET} " + (
            f"reached at n = {at} models" if at is not None else
            f"not reached with these {record.n_models} models"))
    if summary:
        s = next(iter(summary.values()))
        lines.append(
            f"\nbimod: Pearson's bimodality of TP-agreement (lower = more bimodal; it reads high when almost every "
            f"example sits at one end, see error consistency); null: independent classifiers at the same "
            f"accuracies; p: P(null sample <= observed), {s['p_value_method']}; "
            f"cnull, p(c): the class-matched null (each model's accuracy on every class); agree: mean Agreement "
            f"with its interval; "
            f"kappa: error consistency (mean Cohen's kappa on correctness over pairs of models, 0 = independent, "
            f"1 = identical; no interval where the models make too few errors to share); 95% CI: {s['ci_method']}.")
    return "\n".join(lines)
