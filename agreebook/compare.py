"""Accessibility beside the field's other difficulty scores and outside references (chapter 8).

Pure functions on a record's scores (``scores.scores_table``) and on the references
(``references.load_reference``): rank correlations with bootstrap intervals, what humans find
hard (CIFAR-10H), and whether the networks' shared mistakes are the humans' mistakes.
"""
from __future__ import annotations

import numpy as np

from . import metrics as M
from . import stats as S


def rank_correlations(table, columns=None, n_boot=S.N_BOOT, level=S.LEVEL, seed=0):
    """Spearman's rho between every pair of score columns of ``table`` (a DataFrame, one row per
    example), each pair on the examples where both are defined, with its bootstrap interval
    (``stats.correlation``: examples resampled, ranks recomputed in every draw).

    Returns (rho, ci, n): DataFrames indexed by the columns both ways: rho, the interval as text,
    and the number of examples each pair used.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) ** 2, "c": -np.arange(50.0)})
        >>> rho, ci, n = rank_correlations(t, n_boot=100)
        >>> float(rho.loc["a", "b"]), float(rho.loc["a", "c"]), int(n.loc["a", "b"])
        (1.0, -1.0, 50)
    """
    import pandas as pd
    from pandas.api.types import is_numeric_dtype
    # every numeric score; not the label, a class index
    cols = list(columns or [c for c in table.columns if c != "label" and is_numeric_dtype(table[c].dtype)])
    rho = pd.DataFrame(np.eye(len(cols)), index=cols, columns=cols)
    ci = pd.DataFrame("", index=cols, columns=cols)
    n = pd.DataFrame(0, index=cols, columns=cols)
    for i, a in enumerate(cols):
        n.loc[a, a] = int(np.isfinite(table[a].to_numpy(float)).sum())
        for b in cols[i + 1:]:
            x, y = table[a].to_numpy(float), table[b].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            n.loc[a, b] = n.loc[b, a] = int(ok.sum())
            if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
                rho.loc[a, b] = rho.loc[b, a] = np.nan
                continue
            out = S.correlation(x[ok], y[ok], n_boot=n_boot, level=level, seed=seed)
            rho.loc[a, b] = rho.loc[b, a] = out["spearman"]
            lo, hi = out["spearman_ci"]
            ci.loc[a, b] = ci.loc[b, a] = f"[{lo:.2f}, {hi:.2f}]"
    return rho, ci, n


def human_difficulty(counts, labels):
    """Per example, from human label counts (n_examples, n_classes), e.g. CIFAR-10H: the share of
    people who chose the true label ("human accuracy") and the entropy of their choices in bits
    (0 when all agree).  Returns (accuracy, entropy), each (n_examples,).

    Example:
        >>> acc, ent = human_difficulty(np.array([[50, 0], [25, 25]]), np.array([0, 0]))
        >>> acc.tolist(), ent.round(3).tolist()
        ([1.0, 0.5], [0.0, 1.0])
    """
    c = np.asarray(counts, dtype=np.float64)
    y = np.asarray(labels)
    if c.ndim != 2 or c.shape[0] != len(y):
        raise ValueError(f"counts must be (n_examples, n_classes) with n_examples = {len(y)}; got {c.shape}")
    q = c / c.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(q > 0, q * np.log2(q), 0).sum(1)
    return q[np.arange(len(y)), y], ent + 0.0  # + 0.0: no -0.0 for a unanimous example


def shared_wrong_labels(predictions, labels, counts, epoch_index=-1, min_agreement=0.5, n_boot=S.N_BOOT,
                        level=S.LEVEL, seed=0):
    """Where the networks agree on a wrong label, do people choose the same one?

    Read at one recorded epoch, on the examples whose most predicted label (the mode over the
    models) is wrong and held by at least ``min_agreement`` of them, and on which some person
    chose a wrong label: the share whose people's most chosen wrong label is the networks'
    label (a tie between several counts the networks' label's share of it), against the share expected if the networks' wrong label were drawn from their own
    confusions of the example's class (over all examples of that class), independently of the
    example.  predictions: (n_models, n_epochs, n_examples); labels: (n_examples,); counts:
    (n_examples, n_classes) human label counts.  Returns a dict: ``n`` examples read,
    ``observed`` share with ``ci`` (examples resampled), ``expected`` share with ``expected_ci``.

    Example:
        >>> y = np.zeros(40, int); p = np.ones((3, 1, 40), int)      # every network says 1
        >>> h = np.tile([40, 8, 2], (40, 1))                          # people: 1 is the common mistake
        >>> out = shared_wrong_labels(p, y, h, n_boot=100)
        >>> out["n"], out["observed"], out["expected"]
        (40, 1.0, 1.0)
    """
    preds, labels = M._check_predictions(predictions, labels)
    c = np.asarray(counts, dtype=np.float64)
    k = c.shape[1]
    p = preds[:, epoch_index]
    count, top = M.mode(p, return_label=True)
    share = count / p.shape[0]
    wrong = c.copy()
    wrong[np.arange(len(labels)), labels] = 0
    # people's most chosen wrong label(s): a tie shares the example among its labels
    tied = (wrong == wrong.max(1, keepdims=True)) & (wrong > 0)
    read = (top != labels) & (share >= min_agreement) & (wrong.sum(1) > 0)
    # the networks' confusions of each class: the distribution of their wrong labels over its examples
    conf = np.zeros((k, k))
    for m in range(p.shape[0]):
        bad = p[m] != labels
        np.add.at(conf, (labels[bad], p[m][bad]), 1)
    with np.errstate(invalid="ignore"):
        conf /= conf.sum(1, keepdims=True)
    ties = tied[read].sum(1)
    hit = tied[read, top[read]] / ties
    exp = (np.nan_to_num(conf[labels[read]]) * tied[read]).sum(1) / ties
    n = int(read.sum())
    if n < 2:
        return {"n": n, "observed": np.nan, "ci": (np.nan, np.nan), "expected": np.nan, "expected_ci": (np.nan, np.nan)}
    bs = S.Bootstrap(n, n_boot, seed)
    _, d = bs.sums(np.stack([hit, exp], 1))
    d = d / bs.drawn[:, None]
    return {"n": n, "observed": float(hit.mean()), "ci": tuple(S.percentile_interval(d[:, 0], level)),
            "expected": float(exp.mean()), "expected_ci": tuple(S.percentile_interval(d[:, 1], level))}


# the columns of scores.scores_table that are no score of their own: the label, and
# cartography's correctness, which is accessibility itself (the share of recorded epochs a model
# is right, averaged over the models)
NOT_SCORES = ("label", "correctness", "not learned by the end (share of models)", "never right (share of models)")


def score_columns(table):
    """The numeric score columns of a ``scores.scores_table`` to set side by side (``NOT_SCORES``
    left out)."""
    from pandas.api.types import is_numeric_dtype
    return [c for c in table.columns if c not in NOT_SCORES and is_numeric_dtype(table[c].dtype)]


def human_reliability(counts, labels, n_splits=S.N_SPLITS, seed=0):
    """Split-half reliability of human accuracy per example from label counts such as CIFAR-10H's:
    each example's annotators are cut at random into two halves (a hypergeometric draw of how
    many of one half chose the true label), the halves' accuracies are correlated over the
    examples (Pearson), and r is corrected to all annotators by Spearman-Brown; the mean over
    ``n_splits`` cuts.  It bounds how well any score can correlate with human accuracy (the
    noise ceiling sqrt(rel_a rel_b)).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> p = rng.random(2000)                       # each image's true human accuracy
        >>> right = rng.binomial(50, p)
        >>> c = np.stack([right, 50 - right], 1)
        >>> bool(human_reliability(c, np.zeros(2000, int)) > 0.9)
        True
    """
    c = np.asarray(counts, dtype=np.int64)
    y = np.asarray(labels)
    if c.ndim != 2 or c.shape[0] != len(y):
        raise ValueError(f"counts must be (n_examples, n_classes) with n_examples = {len(y)}; got {c.shape}")
    n = c.sum(1)
    right = c[np.arange(len(y)), y]
    half = n // 2
    ok = half > 0
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(n_splits):
        a = rng.hypergeometric(right[ok], (n - right)[ok], half[ok])
        ra, rb = a / half[ok], (right[ok] - a) / (n - half)[ok]
        rs.append(S.spearman_brown(np.corrcoef(ra, rb)[0, 1], 2.0))
    return float(np.mean(rs))


def human_error_consistency(predictions, labels, counts, n_boot=S.N_BOOT, level=S.LEVEL, seed=0,
                            n_blocks=S.N_BLOCKS):
    """Error consistency (Geirhos et al., NeurIPS 2020) between networks and people, per recorded
    epoch: Cohen's kappa on correctness between a member of the collection and an annotator,
    each drawn at random for every example.  With a the share of members right on an example
    (its TP-agreement) and h the share of people, the two agree (both right or both wrong) with
    probability a h + (1 - a)(1 - h); c_obs is its mean over the examples, c_exp = p q +
    (1 - p)(1 - q) with p, q the mean of a and of h, and kappa = (c_obs - c_exp) / (1 - c_exp):
    0 when the networks' mistakes fall on the examples people get right as often as chance
    would put them there.  Returns ``estimate`` (n_epochs,) and ``ci`` (n_epochs, 2),
    resampling examples.

    Example:
        >>> y = np.zeros(100, int)
        >>> hard = np.arange(100) < 30                     # people miss the first 30 ...
        >>> h = np.stack([np.where(hard, 10, 50), np.where(hard, 40, 0)], 1)
        >>> p = np.where(hard, 1, 0)[None, None].repeat(4, 0)  # ... and so do all networks
        >>> out = human_error_consistency(p, y, h, n_boot=100)
        >>> bool(out["estimate"][0] > 0.5)
        True
    """
    preds, labels = M._check_predictions(predictions, labels)
    h, _ = human_difficulty(counts, labels)
    a = M.tp_agreement(preds, labels)  # (n_epochs, n_examples)
    agree = a * h + (1 - a) * (1 - h)
    bs = S.Bootstrap(len(labels), n_boot, seed, n_blocks)
    # per example: a (E), agree (E), h (1), and 1 for the draw's size
    v = np.concatenate([a.T, agree.T, h[:, None], np.ones((len(labels), 1))], 1)
    total, draws = bs.sums(v)

    def kappa(t):
        e = a.shape[0]
        m = t[..., -1:]
        p, obs, q = t[..., :e] / m, t[..., e:2 * e] / m, t[..., 2 * e:2 * e + 1] / m
        exp = p * q + (1 - p) * (1 - q)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (obs - exp) / (1 - exp)

    return {"estimate": kappa(total), "ci": S.percentile_interval(kappa(draws), level)}


def binned_means(x, y, edges=np.linspace(0, 1, 11), n_boot=S.N_BOOT, level=S.LEVEL, seed=0, min_count=10):
    """The mean of ``y`` in bins of ``x`` (e.g. human accuracy or the C-score in bins of
    accessibility), with bootstrap intervals resampling the examples of each bin.  Bins are
    [edges[i], edges[i+1]), the last one closed.  Returns a DataFrame, one row per bin with at
    least ``min_count`` examples: its range, n, the mean of y and its interval.

    Example:
        >>> t = binned_means(np.linspace(0, 1, 200), np.linspace(0, 1, 200), edges=[0, 0.5, 1], n_boot=100)
        >>> t["n"].tolist(), t["mean"].round(2).tolist()
        ([100, 100], [0.25, 0.75])
    """
    import pandas as pd
    x, y = np.asarray(x, float), np.asarray(y, float)
    edges = np.asarray(edges, float)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        v = y[(which == b) & np.isfinite(y)]
        if len(v) < min_count:
            continue
        ci = S.mean_ci(v[None], n_boot=n_boot, level=level, seed=seed + b)["ci"][0]
        rows.append({"bin": f"[{edges[b]:.2g}, {edges[b + 1]:.2g}{']' if b == len(edges) - 2 else ')'}",
                     "from": edges[b], "to": edges[b + 1], "n": len(v), "mean": v.mean(), "low": ci[0], "high": ci[1]})
    return pd.DataFrame(rows)


def reliability_curves(per_model, sizes=None, n_splits=S.N_SPLITS, seed=0, target=0.9):
    """``stats.score_reliability`` for every score of ``scores.per_model``: (curves, table).
    curves: {score: its result}; table: one row per score with its reliability at all N
    models, the range over the splits, and the fewest models that reach ``target`` (NaN where
    none of the collection's sizes does)."""
    import pandas as pd
    curves = {name: S.score_reliability(v, sizes=sizes, n_splits=n_splits, seed=seed) for name, v in per_model.items()}
    rows = {}
    for name, c in curves.items():
        hit = np.flatnonzero(c["reliability"] >= target)
        rows[name] = {f"reliability at N={int(c['sizes'][-1])}": c["reliability"][-1],
                      "lowest split": c["range"][-1, 0], "highest split": c["range"][-1, 1],
                      f"models to reach {target:g}": float(c["sizes"][hit[0]]) if len(hit) else np.nan}
    return curves, pd.DataFrame(rows).T.rename_axis("score")


def against_reference(table, reference, columns=None, reliability=None, reference_reliability=1.0,
                      n_boot=S.N_BOOT, level=S.LEVEL, seed=0):
    """Spearman's rho of every score column of ``table`` with one outside per-example reference
    (a C-score, human accuracy; (n_examples,) in the table's row order), each on the examples
    where the score is defined, with its bootstrap interval.  reliability: {score: its
    split-half reliability at the collection's N} (``reliability_curves``); with it, the noise
    ceiling sqrt(rel_score * reference_reliability), the largest correlation two scores this
    noisy could show, and rho over it.  Returns a DataFrame, one row per score.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"a": np.arange(40.0), "b": -np.arange(40.0)})
        >>> out = against_reference(t, np.arange(40.0) ** 2, n_boot=100)
        >>> out["rho"].tolist()
        [1.0, -1.0]
    """
    import pandas as pd
    ref = np.asarray(reference, float)
    if ref.shape != (len(table),):
        raise ValueError(f"reference must be (n_examples,) = ({len(table)},); got {ref.shape}")
    rows = {}
    for col in columns or score_columns(table):
        x = table[col].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(ref)
        if ok.sum() < 3 or np.ptp(x[ok]) == 0:
            continue
        out = S.correlation(x[ok], ref[ok], n_boot=n_boot, level=level, seed=seed)
        row = {"rho": out["spearman"], "low": out["spearman_ci"][0], "high": out["spearman_ci"][1], "n": int(ok.sum())}
        if reliability is not None and col in reliability:
            ceiling = float(np.sqrt(max(reliability[col], 0) * reference_reliability))
            row.update({"noise ceiling": ceiling, "|rho| / ceiling": abs(row["rho"]) / ceiling if ceiling else np.nan})
        rows[col] = row
    return pd.DataFrame(rows).T.rename_axis("score").astype({"n": int})
