"""Accessibility beside the field's other difficulty scores and outside references (chapter 8).

Pure functions on a record's scores (``scores.scores_table``) and on the references
(``references.load_reference``): rank correlations with bootstrap intervals, what humans find
hard (CIFAR-10H), and whether the networks' shared mistakes are the humans' mistakes.
"""
from __future__ import annotations

import numpy as np

from . import metrics as M
from . import stats as S


def _rankable(x):
    """A score for rank statistics: +inf (an example a model never learns: forgetting events,
    the learning epoch) becomes one more than the largest finite value, which keeps every rank;
    NaN stays missing."""
    x = np.asarray(x, dtype=np.float64).copy()
    inf = np.isposinf(x)
    if inf.any():
        finite = x[np.isfinite(x)]
        x[inf] = (finite.max() if finite.size else 0.0) + 1.0
    return x


def rank_correlations(table, columns=None, n_boot=S.N_BOOT, level=S.LEVEL, seed=0):
    """Spearman's rho between every pair of score columns of ``table`` (a DataFrame, one row per
    example), each pair on the examples where both are defined (+inf, an example never learned,
    ranks last), with its bootstrap interval (``stats.correlation``: examples resampled, ranks
    recomputed in every draw).

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
        n.loc[a, a] = int((~np.isnan(table[a].to_numpy(float))).sum())
        for b in cols[i + 1:]:
            x, y = _rankable(table[a]), _rankable(table[b])
            ok = ~np.isnan(x) & ~np.isnan(y)
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
    label (a tie between several counts the networks' label's share of it), against the share
    expected if the networks' majority wrong labels were shuffled among the read examples of
    the same class: what the class's common confusions give without any example-level match.  predictions: (n_models, n_epochs, n_examples); labels: (n_examples,); counts:
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
    # the null: the networks' majority wrong labels shuffled among the read examples of each
    # class (its expectation: each example's chance of meeting its class's distribution of them).
    # Majority labels concentrate on a class's main confusion (cat -> dog) more than single
    # models' wrong labels do, and people's mistakes do too: a null from single models' confusions
    # would credit that shared concentration to the examples
    conf = np.zeros((k, k))
    np.add.at(conf, (labels[read], top[read]), 1)
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
    many of one half chose the true label), the halves' accuracies are rank-correlated over the
    examples (Spearman: on CIFAR-10H 44% of the images have accuracy 1, ties that Pearson's r
    would read as agreement), and rho is corrected to all annotators by Spearman-Brown; the
    mean over ``n_splits`` cuts.  With a score's own reliability it gives the noise ceiling
    sqrt(rel_a rel_b), what the two scores' rank correlation is expected to reach at most.

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
        ra, rb = S._ranks(a / half[ok]), S._ranks((right[ok] - a) / (n - half)[ok])
        rs.append(S.spearman_brown(np.corrcoef(ra, rb)[0, 1], 2.0))
    return float(np.mean(rs))


def _pair_kappa(t, e):
    """kappa from summed per-example statistics t (..., 3e + 1): the first rate's sum (e), the
    second's (e), the agreement probability's (e), then the example count."""
    m = t[..., -1:]
    p, q, obs = t[..., :e] / m, t[..., e:2 * e] / m, t[..., 2 * e:3 * e] / m
    exp = p * q + (1 - p) * (1 - q)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (obs - exp) / (1 - exp)


def human_error_consistency(predictions, labels, counts, n_boot=S.N_BOOT, level=S.LEVEL, seed=0,
                            n_blocks=S.N_BLOCKS):
    """Error consistency (Geirhos et al., NeurIPS 2020) between networks and people, per recorded
    epoch, beside the same statistic for two people and for two networks: Cohen's kappa on
    correctness between two observers drawn at random for every example.  With a the share of
    members right on an example (its TP-agreement), N members, h the share of its r of n
    annotators who are right: a network and a person agree (both right or both wrong) with
    probability a h + (1 - a)(1 - h); two different people with (r(r - 1) + (n - r)(n - r - 1))
    / (n(n - 1)); two different networks likewise from a N.  c_obs is the mean over the
    examples, c_exp = p q + (1 - p)(1 - q) with p, q the two observers' mean accuracies, and
    kappa = (c_obs - c_exp) / (1 - c_exp): 0 when mistakes fall on examples as independently as
    chance puts them.  Near an accuracy of 1 (people on CIFAR-10) kappa is small even between
    people, so a network-person kappa is read against the person-person one, not against 1.

    Returns ``estimate`` (n_epochs,) and ``ci`` (n_epochs, 2) for a network and a person, and
    ``estimate_max`` (n_epochs,), the largest kappa observers of those two accuracies can reach
    (they agree on at most 1 - |p - q| of the examples); ``people``, ``people_ci`` for two people
    (one value, no epochs; their maximum is 1, as for two networks); ``networks`` (n_epochs,)
    and ``networks_ci`` for two networks drawn the same way.  Intervals resample examples.

    Example:
        >>> y = np.zeros(100, int)
        >>> hard = np.arange(100) < 30                     # people miss the first 30 ...
        >>> h = np.stack([np.where(hard, 10, 50), np.where(hard, 40, 0)], 1)
        >>> p = np.where(hard, 1, 0)[None, None].repeat(4, 0)  # ... and so do all networks
        >>> out = human_error_consistency(p, y, h, n_boot=100)
        >>> bool(out["estimate"][0] > 0.5), float(round(out["networks"][0], 3))
        (True, 1.0)
    """
    preds, labels = M._check_predictions(predictions, labels)
    n_models, n_epochs, n_ex = preds.shape
    if n_models < 2:
        raise ValueError(f"two networks need N >= 2; got {n_models}")
    c = np.asarray(counts, dtype=np.float64)
    h, _ = human_difficulty(c, labels)
    n_people = c.sum(1)
    if (n_people < 2).any():
        raise ValueError("every example needs at least 2 annotators for the person-person reference")
    r = h * n_people
    people = (r * (r - 1) + (n_people - r) * (n_people - r - 1)) / (n_people * (n_people - 1))
    k = M.correct_counts(preds, labels).T.astype(np.float64)  # (n_examples, n_epochs) right members
    a = k / n_models
    nets = (k * (k - 1) + (n_models - k) * (n_models - k - 1)) / (n_models * (n_models - 1))
    H = np.repeat(h[:, None], n_epochs, 1)
    one = np.ones((n_ex, 1))
    bs = S.Bootstrap(n_ex, n_boot, seed, n_blocks)
    # per example: [a, h, agree(net, person)] per epoch; [h, h, agree(person, person)]; [a, a, agree(net, net)]
    v = np.concatenate([a, H, a * H + (1 - a) * (1 - H), h[:, None], h[:, None], people[:, None],
                        a, a, nets, one], 1)
    total, draws = bs.sums(v)
    e = n_epochs
    pieces = {"estimate": slice(0, 3 * e), "people": slice(3 * e, 3 * e + 3), "networks": slice(3 * e + 3, 6 * e + 3)}
    out = {}
    for name, sl in pieces.items():
        width = (sl.stop - sl.start) // 3
        t = np.concatenate([total[sl], total[-1:]])
        d = np.concatenate([draws[:, sl], draws[:, -1:]], 1)
        out[name] = _pair_kappa(t, width)
        out[f"{name}_ci" if name != "estimate" else "ci"] = S.percentile_interval(_pair_kappa(d, width), level)
    out["people"], out["people_ci"] = float(out["people"][0]), out["people_ci"][0]
    # the largest kappa two observers of these accuracies can reach: they agree at most on
    # 1 - |p - q| of the examples (networks at 51% and people at 95% cannot exceed ~0.1)
    p_net, q_people = total[:e] / total[-1], total[e:2 * e] / total[-1]
    exp = p_net * q_people + (1 - p_net) * (1 - q_people)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["estimate_max"] = (1 - np.abs(p_net - q_people) - exp) / (1 - exp)
    return out


def binned_means(x, y, edges=np.linspace(0, 1, 11), n_boot=S.N_BOOT, level=S.LEVEL, seed=0, min_count=10):
    """The mean of ``y`` in bins of ``x`` (e.g. human accuracy or the C-score in bins of
    accessibility), with bootstrap intervals resampling the examples of each bin.  Bins are
    [edges[i], edges[i+1]), the last one closed; examples with x outside the edges or either
    value missing are left out.  Returns a DataFrame, one row per bin with at least
    ``min_count`` examples: its range, n, the mean of y and its interval.

    Example:
        >>> t = binned_means(np.linspace(0, 1, 200), np.linspace(0, 1, 200), edges=[0, 0.5, 1], n_boot=100)
        >>> t["n"].tolist(), t["mean"].round(2).tolist()
        ([100, 100], [0.25, 0.75])
    """
    import pandas as pd
    x, y = np.asarray(x, float), np.asarray(y, float)
    edges = np.asarray(edges, float)
    inside = np.isfinite(x) & np.isfinite(y) & (x >= edges[0]) & (x <= edges[-1])
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        v = y[(which == b) & inside]
        if len(v) < min_count:
            continue
        ci = S.mean_ci(v[None], n_boot=n_boot, level=level, seed=seed + b)["ci"][0]
        rows.append({"bin": f"[{edges[b]:.2g}, {edges[b + 1]:.2g}{']' if b == len(edges) - 2 else ')'}",
                     "from": edges[b], "to": edges[b + 1], "n": len(v), "mean": v.mean(), "low": ci[0], "high": ci[1]})
    return pd.DataFrame(rows)


def reliability_curves(per_model, sizes=None, n_splits=S.N_SPLITS, seed=0, target=0.9):
    """``stats.score_reliability`` for every score of ``scores.per_model`` (each aggregated as the
    collection aggregates it, ``scores.AGGREGATE``; by default at the even sizes 2, 4, ..., N):
    (curves, table).
    curves: {score: its result}; table: one row per score with its reliability at all N
    models, the range over the splits, and the fewest models that reach ``target`` (NaN where
    none of the collection's sizes does)."""
    import pandas as pd
    from .scores import AGGREGATE
    if sizes is None:  # even n only: an odd n leaves a model out of its two halves, and the
        # median of an odd half takes one model's value where an even half averages two
        n_models = len(next(iter(per_model.values())))
        sizes = list(range(2, n_models + 1, 2))
    curves = {name: S.score_reliability(v, sizes=sizes, n_splits=n_splits, seed=seed,
                                        aggregate=AGGREGATE.get(name, "mean")) for name, v in per_model.items()}
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
    where the score is defined (+inf, never learned, ranks last), with its bootstrap interval.
    reliability: {score: its split-half rank reliability at the collection's N}
    (``reliability_curves``); with it, the noise ceiling sqrt(rel_score * reference_reliability),
    what the two scores' rank correlation is expected to reach at most given their noise (an
    expectation, not a bound on every sample), and |rho| over it.  Returns a DataFrame, one row
    per score.

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
        x = _rankable(table[col])
        ok = ~np.isnan(x) & np.isfinite(ref)
        if ok.sum() < 3 or np.ptp(x[ok]) == 0:
            continue
        out = S.correlation(x[ok], ref[ok], n_boot=n_boot, level=level, seed=seed)
        row = {"rho": out["spearman"], "low": out["spearman_ci"][0], "high": out["spearman_ci"][1], "n": int(ok.sum())}
        if reliability is not None and col in reliability:
            ceiling = float(np.sqrt(max(reliability[col], 0) * reference_reliability))
            row.update({"noise ceiling": ceiling, "|rho| / ceiling": abs(row["rho"]) / ceiling if ceiling else np.nan})
        rows[col] = row
    if not rows:
        return pd.DataFrame(columns=["rho", "low", "high", "n"]).rename_axis("score")
    return pd.DataFrame(rows).T.rename_axis("score").astype({"n": int})


def within_class(a, b, labels, n_boot=S.N_BOOT, level=S.LEVEL, seed=0):
    """The rank correlation of two per-example scores within classes: Spearman's rho with each
    class's mean rank taken out of both (``stats.partial_correlation`` on the ranks, the class
    indicators as covariates), so a score and a reference that both differ by class (CIFAR-10's
    cats are hard for networks, for people and by C-score) are not credited with that alone.
    +inf ranks last.  Returns ``r``, ``ci``, ``n``.

    Example:
        >>> y = np.repeat([0, 1], 100)
        >>> x = np.r_[np.arange(100.0), np.arange(100.0) + 1000]     # the class moves x ...
        >>> ref = np.r_[-np.arange(100.0), -np.arange(100.0) + 500]  # ... and ref, within-class opposite
        >>> out = within_class(x, ref, y, n_boot=100)
        >>> round(out["r"], 6)
        -1.0
    """
    x, r = _rankable(a), np.asarray(b, dtype=np.float64)
    y = np.asarray(labels)
    ok = ~np.isnan(x) & np.isfinite(r)
    classes = np.unique(y[ok])
    onehot = (y[ok][:, None] == classes[None, 1:]).astype(np.float64)  # one class as the baseline
    return S.partial_correlation(S._ranks(x[ok]), S._ranks(r[ok]), onehot, n_boot=n_boot, level=level, seed=seed)
