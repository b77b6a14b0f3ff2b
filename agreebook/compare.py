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
    # every numeric score; not the label, a class index
    cols = list(columns or [c for c in table.columns if c != "label" and np.issubdtype(table[c].dtype, np.number)])
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
