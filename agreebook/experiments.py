"""The analyses a chapter runs on records, as functions returning arrays or tables.

Tables are pandas DataFrames (they render as HTML in the book); everything else is NumPy.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import metrics as M
from . import stats as S
from .analysis import ALPHA, analyze


def _p_text(p, n_draws=None):
    """p-values for a table: a Monte Carlo p at its floor (no null draw as low) as "≤0.0005"."""
    from .analysis import N_NULL_DRAWS
    n = n_draws or N_NULL_DRAWS
    floor = S.p_floor(n)
    return [("n/a" if not np.isfinite(v) else f"≤{floor:.2g}" if v <= 1 / (n + 1) + 1e-12 else f"{v:.4f}")
            for v in np.atleast_1d(p)]


def _ci_text(ci, digits=2):
    return [f"[{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite([lo, hi]).all() else "" for lo, hi in ci]


def epoch_table(record, split, by_class=False):
    """Per recorded epoch: accuracy (mean, sd over models), mean TP-agreement, Pearson's
    bimodality of TP-agreement with its 95% bootstrap interval against its null with the
    p-value, mean Agreement against its null, and error consistency (kappa) with its interval;
    with ``by_class`` also the bimodality and p-value under the null that keeps each model's
    accuracy on every class (metrics.null_tp_agreement_by_class).  p-values are Monte Carlo
    (analysis.N_NULL_DRAWS draws): the smallest is 1/(draws + 1), which means no draw as low."""
    import pandas as pd
    a = analyze(record, split)
    p = f"p ({a.n_null_draws} null draws)"  # the column says how its p-values were obtained
    extra = {"class-null bimodality": a.class_null_bimodality,
             f"class-null {p}": _p_text(a.class_p_value, a.n_null_draws)} if by_class else {}
    return pd.DataFrame({
        "epoch": a.epochs, "accuracy": a.accuracy_mean, "accuracy sd": a.accuracy_sd,
        "mean TPa": a.tp_agreement_mean, "bimodality": a.bimodality, "bimodality 95% CI": _ci_text(a.bimodality_ci),
        "null bimodality": a.null_bimodality, p: _p_text(a.p_value, a.n_null_draws), **extra,
        "Agreement": a.agreement, "Agreement 95% CI": _ci_text(a.agreement_ci, 3), "null Agreement": a.null_agreement,
        "error consistency": a.error_consistency, "error consistency 95% CI": _kappa_ci_text(a),
    }).set_index("epoch")


def _kappa_ci_text(a):
    """The error consistency intervals as text; where a pair of models shares fewer than
    stats.MIN_SHARED_ERRORS errors on average the bootstrap interval is degenerate and left
    out (stats.error_consistency), which the cell says instead of staying blank."""
    return [t if t or not np.isfinite(k) else f"none: < {S.MIN_SHARED_ERRORS} shared errors"
            for t, k in zip(_ci_text(a.error_consistency_ci), a.error_consistency)]


def bimodality_verdict(record, split, alpha=ALPHA, null="accuracy"):
    """One sentence, from the data, on whether TP-agreement is more bimodal than the null, and
    at the epochs where it is not, whether the models still agree more than independent ones
    (error consistency above 0 with its whole interval): near the ceiling almost every example
    sits at TP-agreement 1, and Pearson's score then reads one mode, not the lack of a second.

    null: "accuracy" (independent classifiers at each model's accuracy, the paper's) or
    "class" (at each model's accuracy on every class)."""
    if null not in ("accuracy", "class"):
        raise ValueError(f"null must be 'accuracy' or 'class'; got {null!r}")
    a = analyze(record, split)
    q = a.null_bimodality if null == "accuracy" else a.class_null_bimodality
    sig = a.significant(alpha, null)
    name = "the null" if null == "accuracy" else "the class-matched null"
    head = (f"{split}: the observed TP-agreement is more bimodal than {name} (p < {alpha}) at "
            f"{int(sig.sum())} of {len(sig)} recorded epochs")
    if sig.all():
        return head + ": every epoch."
    parts = []
    for i in np.flatnonzero(~sig):
        lo, hi = a.error_consistency_ci[i]
        if not np.isfinite(lo):
            kappa = (f"; error consistency {_r(a.error_consistency[i])}, too few errors on {a.n_examples} examples "
                     "to tell it from independent models")
        else:
            kappa = (f"; error consistency {a.error_consistency[i]:.2f} [{lo:.2f}, {hi:.2f}], "
                     + ("above independent models" if lo > 0 else "not above independent models"))
        # TP-agreement on one or two values (every model right on every example, near the
        # ceiling): Pearson's score is undefined or 0 by construction, and so is its interval
        values = int(np.count_nonzero(a.tp_agreement_hist[i]))
        score = ("undefined (every example at one TP-agreement)" if values == 1 else
                 "0 by construction (two TP-agreement values only)" if values == 2 else
                 f"{_r(a.bimodality[i])} [{_r(a.bimodality_ci[i][0])}, {_r(a.bimodality_ci[i][1])}]")
        parts.append(f"{a.epochs[i]} (mean accuracy {a.accuracy_mean[i]:.3f}, bimodality {score} vs null "
                     f"{_r(q[i])}{kappa})")
    return head + "; not at epoch(s) " + ", ".join(parts) + "."


def _r(v):
    # rounded as the pages' tables are (DataFrame.round: numpy's, half to even on the scaled
    # value): 0.9485 printed 0.949 in a verdict beside 0.948 in its table
    return "nan" if not np.isfinite(v) else f"{np.round(v, 3) + 0.0:.3f}"  # + 0.0: no "-0.000"


# Epochs where the bimodality test has power: above chance by this margin (below, a shared class
# bias dominates, chapter 5) and below this accuracy (above, nearly every example sits at
# TP-agreement 1 and Pearson's score reads one mode: the README's digits job measured the band).
INFORMATIVE_MARGIN, INFORMATIVE_CEILING = 0.05, 0.95


def informative_epochs(analysis, n_classes, margin=INFORMATIVE_MARGIN, ceiling=INFORMATIVE_CEILING):
    """(E,) bool: recorded epochs whose mean accuracy lies in (1/K + margin, ceiling)."""
    acc = analysis.accuracy_mean
    return (acc > 1 / n_classes + margin) & (acc < ceiling)


MIN_INFORMATIVE = 3  # informative epochs a verdict needs; fewer: "untestable"
# Pearson's score of the uniform distribution on [0, 1].  Any distribution wider than the null's
# binomial scores below the null (a one-humped Beta(2, 2): 1.14), so beating the null says the
# models agree; two modes need a score below the uniform's as well (review of chapter 5).
UNIFORM_BIMODALITY = 0.8
# No unimodal density scores below this (Klaassen, Mokveld and van Es 2000: squared skewness
# minus excess kurtosis is at most 186/125), so a score under it rules one mode out; between it
# and 0.8 a strongly skewed single mode is still possible.  claim_table counts it as a check.
UNIMODAL_BOUND = 3 - 186 / 125 - 1


def claim_verdict(record, split, paper_bimodal, alpha=ALPHA):
    """("reproduced" | "partly" | "not reproduced" | "untestable", one sentence), from the data.

    The claim is the paper's: TP-agreement is bimodal (``paper_bimodal``, natural data, §3) or
    is not (§5: synthetic data, random labels), read at the informative epochs only (see
    ``informative_epochs``; fewer than MIN_INFORMATIVE of them: untestable).  An epoch counts as
    bimodal when its score is below both nulls at level ``alpha`` (the paper's, each model's
    accuracy, and the class-matched one, each model's accuracy on every class, which a shared
    class bias alone cannot beat) and the whole 95% interval of its score lies below
    UNIFORM_BIMODALITY, the uniform distribution's: beating the nulls alone also admits one
    broad hump.  It counts as not bimodal when it does not beat both nulls or its interval lies
    wholly at or above that score, and as undecided otherwise (as ``order_verdict`` grades r).
    The sentence gives each count.  A claim is reproduced when every informative epoch is on
    its side, not reproduced when more than half are firmly on the other, else partly.  One-sided: a not-bimodal claim that holds says the collection is no
    more bimodal than independent models, not that it resembles them (read the error
    consistency for that).  With E epochs each tested at ``alpha`` the chance of one false
    "more bimodal" under the null is at most E * alpha (0.1 for 10 epochs at 0.01).
    """
    c = claim_counts(record, split, paper_bimodal, alpha)
    word, n, lo, hi = c["verdict"], c["informative"], c["band"][0], c["band"][1]
    if word == "untestable":
        return word, (f"{split}: {n} recorded epoch(s) have a mean accuracy between {lo:.2f} and {hi:.2f} "
                      f"(the accuracy runs {c['accuracy_range'][0]:.3f} to {c['accuracy_range'][1]:.3f}); a "
                      f"verdict needs {MIN_INFORMATIVE}.")
    where = ""
    if c["best_epoch"] is not None:
        where = (f"; most bimodal at epoch {c['best_epoch']}: {_r(c['best'])} [{_r(c['best_ci'][0])}, "
                 f"{_r(c['best_ci'][1])}] against {_r(c['best_null'])} (null) and "
                 f"{_r(c['best_class_null'])} (class-matched)")
    undecided = (f", undecided at {c['undecided']} (below both nulls, its interval spanning "
                 f"{UNIFORM_BIMODALITY:g})" if c["undecided"] else "")
    return word, (f"{split}: bimodal (below both nulls, p < {alpha:g}, and the 95% interval below the uniform's "
                  f"{UNIFORM_BIMODALITY:g}) at {c['bimodal']} of the {n} informative epochs{undecided} "
                  f"(mean accuracy {lo:.2f}-{hi:.2f}: epochs {c['epochs'][0]}-{c['epochs'][1]}; "
                  f"below the paper's null at {c['below_null']}, the class-matched one at "
                  f"{c['below_class_null']}, {UNIFORM_BIMODALITY:g} at {c['below_uniform']}; firmly below "
                  f"{UNIMODAL_BOUND:g}, the bound no unimodal density passes, at {c['below_unimodal_bound']}){where}. "
                  f"The paper's claim, "
                  f"{'bimodal' if paper_bimodal else 'not bimodal'}: {word}.")


def claim_counts(record, split, paper_bimodal, alpha=ALPHA):
    """The numbers behind ``claim_verdict``, for tables: a dict with ``verdict``; ``informative``
    (the number of informative epochs), ``band`` (their accuracy band), ``epochs`` (first and
    last informative epoch, or None), ``accuracy_range``; the counts of informative epochs
    ``bimodal``, ``undecided``, ``below_null``, ``below_class_null``, ``below_uniform`` and
    ``below_unimodal_bound`` (bimodal epochs whose whole interval is below UNIMODAL_BOUND); and the most
    bimodal informative epoch: ``best_epoch``, ``best`` with ``best_ci``, ``best_null``,
    ``best_class_null``; and the least bimodal one (§4.2 quotes this "maximum Pearson
    bi-modality"): ``worst_epoch``, ``worst`` with ``worst_ci`` (None / NaN when there is none)."""
    a = analyze(record, split)
    keep = informative_epochs(a, record.n_classes)
    paper, by_class = a.significant(alpha), a.significant(alpha, "class")
    with np.errstate(invalid="ignore"):
        two_modes = a.bimodality < UNIFORM_BIMODALITY
        # graded by the score's interval, as order_verdict grades r: an epoch is bimodal when it
        # beats both nulls and its whole interval lies below the uniform's score, one mode when it
        # does not beat them or its whole interval lies at or above it, undecided otherwise
        firm_two = a.bimodality_ci[:, 1] < UNIFORM_BIMODALITY
        firm_one = a.bimodality_ci[:, 0] >= UNIFORM_BIMODALITY
    beats = paper & by_class
    sig = beats & firm_two
    not_bimodal = ~beats | firm_one
    ep = a.epochs
    n, k, k_not = int(keep.sum()), int(sig[keep].sum()), int(not_bimodal[keep].sum())
    if n < MIN_INFORMATIVE:
        word = "untestable"
    elif paper_bimodal:
        word = "reproduced" if k == n else "not reproduced" if 2 * k_not > n else "partly"
    else:
        word = "reproduced" if k_not == n else "not reproduced" if 2 * k > n else "partly"
    out = {"verdict": word, "informative": n, "band": (1 / record.n_classes + INFORMATIVE_MARGIN, INFORMATIVE_CEILING),
           "epochs": (int(ep[keep].min()), int(ep[keep].max())) if n else None,
           "accuracy_range": (float(a.accuracy_mean.min()), float(a.accuracy_mean.max())),
           "bimodal": k, "undecided": n - k - k_not, "below_null": int(paper[keep].sum()), "below_class_null": int(by_class[keep].sum()),
           "below_uniform": int(two_modes[keep].sum()),
           "below_unimodal_bound": int((sig & (a.bimodality_ci[:, 1] < UNIMODAL_BOUND))[keep].sum()), "best_epoch": None, "best": np.nan,
           "best_ci": (np.nan, np.nan), "best_null": np.nan, "best_class_null": np.nan,
           "worst_epoch": None, "worst": np.nan, "worst_ci": (np.nan, np.nan)}
    finite = keep & np.isfinite(a.bimodality)
    if finite.any():
        i = int(np.flatnonzero(finite)[np.argmin(a.bimodality[finite])])
        out.update(best_epoch=int(ep[i]), best=float(a.bimodality[i]), best_ci=tuple(map(float, a.bimodality_ci[i])),
                   best_null=float(a.null_bimodality[i]), best_class_null=float(a.class_null_bimodality[i]))
        j = int(np.flatnonzero(finite)[np.argmax(a.bimodality[finite])])  # the paper's §4.2 "maximum"
        out.update(worst_epoch=int(ep[j]), worst=float(a.bimodality[j]), worst_ci=tuple(map(float, a.bimodality_ci[j])))
    return out


def claim_table(results, paper_bimodal, splits=("train", "test"), alpha=ALPHA):
    """``claim_counts`` of several collections as one table, a row per (collection, split):
    the verdict, the informative epochs bimodal out of all, the most bimodal one's score
    with its 95% interval against both nulls, and the least bimodal one's score (the paper's
    "maximum").  results: [(label, record)]."""
    import pandas as pd
    rows = []
    for label, rec in results:
        for split in splits:
            c = claim_counts(rec, split, paper_bimodal, alpha)
            rows.append({"collection": label, "read on": split, "verdict": c["verdict"],
                         "bimodal at": f"{c['bimodal']} of {c['informative']}"
                                       + (f" ({c['undecided']} undecided)" if c["undecided"] else ""),
                         f"below {UNIMODAL_BOUND:.3f} (no unimodal density)": f"{c['below_unimodal_bound']} of {c['informative']}",
                         "most bimodal epoch": c["best_epoch"], "bimodality": c["best"],
                         "95% CI": _ci_text([c["best_ci"]])[0], "null": c["best_null"],
                         "class-matched null": c["best_class_null"], "least bimodal epoch": c["worst_epoch"],
                         "its bimodality": c["worst"], "its 95% CI": _ci_text([c["worst_ci"]])[0]})
    return pd.DataFrame(rows).set_index(["collection", "read on"])


def _span(values):
    """"a-b" of the smallest and largest value, or "a" when they print alike."""
    lo, hi = _r(np.min(values)), _r(np.max(values))
    return lo if lo == hi else f"{lo} to {hi}"


# A pair of collections shares one order "up to noise" when its accessibility r reaches this share
# of the pair's noise ceiling: each collection's split-half reliability caps the r any second
# collection can show, so a raw r mixes the orders' difference with N and the number of epochs.
CEILING_SHARE = 0.9


def order_verdict(matrix, claim, share=CEILING_SHARE, paper_low=None, pairs=None, whose="The paper's claim"):
    """("reproduced" | "partly" | "not reproduced", one sentence) for a claim that collections
    learn the examples in one order (§3.3: disjoint training sets; §4: architectures).

    matrix: ``correlation_matrix`` of the collections.  Without ``paper_low`` (the paper gives
    no r, as for Fig 24) a pair agrees when its Pearson r (the paper's statistic) is at least
    ``share`` of its noise ceiling.  With it (the lowest r the paper reports for the claim, e.g.
    0.78 across architectures, Fig 27b) a pair agrees when its r is at least that, and the
    ceiling reading is given beside it.  A pair agrees when the whole 95% interval of its r lies
    at or above the threshold, disagrees when it lies wholly below.  Reproduced when every pair
    agrees, not reproduced when more than half disagree, else partly.  The sentence gives the
    range of r, its ceilings and r over the ceiling.  pairs: the (label, label) pairs the claim
    is about (default: all).  whose: how the sentence names the claim (a claim of the book's,
    not the paper's, says so).
    """
    labels = matrix["labels"]
    if pairs is not None:
        unknown = sorted({x for pair in pairs for x in pair} - set(labels))
        if unknown:
            raise ValueError(f"unknown collection(s) {unknown}; the matrix holds {labels}")
        wanted = {frozenset((labels.index(a), labels.index(b))) for a, b in pairs if a != b}
    pairs = sorted(p for p in matrix["correlations"] if pairs is None or frozenset(p) in wanted)
    if not pairs:
        raise ValueError("an order verdict needs at least one pair of two different collections")
    # a pair whose ceiling is not positive (a collection without split-half reliability) has
    # no reference: it is left out and named
    usable = [p for p in pairs if np.isfinite(matrix["ceiling"][p]) and matrix["ceiling"][p] > 0]
    dropped = len(pairs) - len(usable)
    if not usable:
        return "untestable", (f"no pair has a positive noise ceiling (a collection's split-half reliability is "
                              f"not above 0), so r cannot be read against one. {whose}, {claim}: untestable.")
    pairs = usable
    r = np.array([matrix["pearson"][i, j] for i, j in pairs])
    ceiling = np.array([matrix["ceiling"][i, j] for i, j in pairs])
    ratio = r / ceiling
    n, near = len(pairs), int((ratio >= share).sum())
    k = near if paper_low is None else int((r >= paper_low).sum())
    # a pair agrees when its whole 95% interval of r clears the threshold, disagrees when the
    # whole interval misses it, and is undecided otherwise
    ci = np.array([matrix["ci"][p] for p in pairs])
    bar = share * ceiling if paper_low is None else np.full(n, paper_low)
    above, below = int((ci[:, 0] >= bar).sum()), int((ci[:, 1] < bar).sum())
    firm = f"; the 95% interval of r lies wholly above the threshold in {above}, wholly below in {below}"
    word = "reproduced" if above == n else "not reproduced" if 2 * below > n else "partly"
    lo = int(np.argmin(ratio))
    paper = "" if paper_low is None else f"; r at least the paper's {paper_low:g} in {k} of {n}"
    if n == 1:
        paper = f" [{ci[0, 0]:.2f}, {ci[0, 1]:.2f}]" + paper
    if dropped:
        paper += f" ({dropped} pair(s) without a positive ceiling left out)"
    spread = (f"accessibility r {_r(r[0])}" if n == 1 else
              f"accessibility r {_r(r.min())}-{_r(r.max())} over the {n} pairs (median {_r(np.median(r))})")
    lowest = "" if n == 1 else f", lowest for {labels[pairs[lo][0]]} vs {labels[pairs[lo][1]]}"
    return word, (f"{spread}{paper}; "
                  f"against noise ceilings of {_span(ceiling)}, r reaches {share:.0%} of its "
                  f"ceiling in {near} of {n} (r / ceiling {_span(ratio)}{lowest}){firm}. {whose}, {claim}: {word}.")


def half_collections(record):
    """The even- and the odd-numbered members of a collection as two records (same examples,
    epochs and meta): one architecture against itself, the reference for two."""
    if record.n_models < 2:
        raise ValueError(f"halves need at least 2 models; the record has {record.n_models}")
    from .record import Record
    return tuple(Record({k: v[h::2] for k, v in record.predictions.items()}, record.labels, record.epochs,
                        meta={**record.meta, "n_models": len(range(h, record.n_models, 2))}) for h in (0, 1))


def _disagreement_ratio(table, n):
    """At the matched rows of a matched_accuracy_table: examples exactly one ensemble gets right
    over the number independent ensembles at those accuracies would give."""
    strong, weak = table.attrs["labels"]
    a, b = table[f"accuracy {strong}"].to_numpy(float), table[f"accuracy {weak}"].to_numpy(float)
    only = (table[f"only {strong}"] + table[f"only {weak}"]).to_numpy(float)
    indep = n * (a * (1 - b) + b * (1 - a))
    matched = ~table["past weaker's end"].to_numpy(bool) & (indep > 0)
    return only[matched] / indep[matched]


def superset_verdict(record_strong, record_weak, table, split="test", reference=None, n_boot=S.N_BOOT, seed=0):
    """("reproduced" | "not reproduced" | "untestable", one sentence) for §4.1's Fig 8a:
    "ResNet first learns those examples classified correctly only by AlexNet, and then carries
    on to learn additional examples".  table: ``matched_accuracy_table(record_strong,
    record_weak, split, ...)``.

    Past the weaker's end (its last epoch held fixed), take the examples only the weaker
    ensemble gets right at the first such row and those neither gets right; by the last row,
    the stronger ensemble has learned a share of each.  The paper's order holds when it learns
    the weaker's examples at a higher rate than the others: reproduced when the 95% bootstrap
    interval (resampling examples) of the difference of the two shares is above 0.  Independent
    learners give a difference near 0, whatever their accuracies.  The sentence also gives, at
    the matched accuracies, how many examples exactly one ensemble gets right against the
    number independent ensembles at those accuracies would (about 1 - kappa when the
    accuracies are equal; not part of the word), and the share of the weaker's examples the
    stronger still misses at its last row, and how many examples both knew at the first row
    the stronger has lost by the last (the weaker is held at its end, so "only weaker" can
    grow).  reference: a matched_accuracy_table of two halves of one collection
    (``half_collections``), whose disagreement ratio is what "low" means for one architecture.
    Untestable when the table ends at a matched row or has fewer than two rows past the
    weaker's end.  The word is about learning the weaker's examples preferentially, not about
    learning all of them (the paper's "first learns all"): the sentence gives what is missed.
    """
    strong, weak = table.attrs["labels"]
    if table.attrs["stronger"] != "a":
        raise ValueError(f"{weak} ends more accurate than {strong}: pass the stronger collection first")
    labels = record_strong.labels[split]
    n = len(labels)
    a, b = table[f"accuracy {strong}"].to_numpy(float), table[f"accuracy {weak}"].to_numpy(float)
    past = table["past weaker's end"].to_numpy(bool)
    ratio = _disagreement_ratio(table, n)
    head = "no matched accuracy"
    if len(ratio):
        head = (f"at {len(ratio)} matched accurac{'y' if len(ratio) == 1 else 'ies'} exactly one ensemble is "
                f"right on {_span(ratio)} times the examples independent ensembles would be")
        if reference is not None:
            ref = _disagreement_ratio(reference, n)
            if len(ref):
                head += f" (two halves of one collection: {_span(ref)})"
    rows = np.flatnonzero(past)
    if len(rows) < 2 or not past[-1]:
        return "untestable", head + f"; fewer than two rows past {weak}'s end, so the order past it is untested."
    i0, i1 = rows[0], rows[-1]

    votes = {strong: M.majority_vote(record_strong.predictions[split]), weak: M.majority_vote(record_weak.predictions[split])}
    epochs = {strong: record_strong.epochs, weak: record_weak.epochs}

    def right(label, i):  # the ensemble's correctness at row i of the table
        e = int(table[f"epoch {label}"].iloc[i])
        return votes[label][int(np.searchsorted(epochs[label], e))] == labels

    s0, s1, w = right(strong, i0), right(strong, i1), right(weak, i1)
    only_weak, neither = w & ~s0, ~w & ~s0
    if not only_weak.any() or not neither.any():
        return "untestable", head + f"; at {weak}'s end no example is right for {weak} alone, or none for neither."
    # the share of each group the stronger learns, resampled as every other interval is
    _, d = S.Bootstrap(n, n_boot, seed).sums(np.stack([s1 & only_weak, only_weak, s1 & neither, neither], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = d[:, 0] / d[:, 1] - d[:, 2] / d[:, 3]
    lo, hi = S.percentile_interval(diff[np.isfinite(diff)])
    p_o, p_n = s1[only_weak].mean(), s1[neither].mean()
    word = "reproduced" if lo > 0 else "not reproduced"
    missed = int((w & ~s1).sum())
    lost = int((w & s0 & ~s1).sum())
    return word, (f"{head}. Past {weak}'s end ({weak} at {_r(b[i1])}; {strong} from {_r(a[i0])} to {_r(a[i1])}), "
                  f"{strong} learns {p_o:.0%} of the {int(only_weak.sum())} examples only {weak} knew and "
                  f"{p_n:.0%} of the {int(neither.sum())} neither knew (difference {p_o - p_n:.2f} "
                  f"[{lo:.2f}, {hi:.2f}]); it still misses {missed} of the {int(w.sum())} {weak} knows "
                  f"({missed / w.sum():.0%}; {lost} of them it knew at the first row past the end). "
                  f"The paper's claim, the stronger learns the weaker's examples first: {word}; that it learns "
                  f"all of them: {'yes' if missed == 0 else 'no'}.")


def learning_epoch_by_accessibility(record, split, share=0.05, held_out=True, n_boot=S.N_BOOT,
                                    level=S.LEVEL, seed=0):
    """Fig 6: the epoch at which examples are learned, for the examples sorted by accessibility
    and cut into bins of ``share`` of them (5%: 20 bins of equal size, as the paper's boxes).

    The learning epoch of a (model, example) pair is the first recorded epoch from which the
    model stays right (``metrics.learning_epoch``); a pair still wrong at the last recorded
    epoch counts as learned after it, so the median stays defined while fewer than half of a
    bin's pairs are unlearned.  With ``held_out`` the accessibility that sorts the examples
    comes from the even-numbered models and the learning epochs from the odd-numbered ones,
    so a bin's low learning epoch is not the same models' high TP-agreement read twice.

    Returns a dict of arrays over bins: ``acc_lo``, ``acc_hi`` (accessibility range of the
    bin), ``n`` (examples), ``median`` (median learning epoch over the bin's pairs; inf where
    more than half are unlearned), ``ci`` (k, 2) its bootstrap interval resampling the bin's
    examples, ``q25``, ``q75`` (quartiles over pairs: the spread between models and
    examples), ``never`` (fraction of pairs unlearned), and ``models`` (how many models gave
    the learning epochs).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 400)
        >>> p = np.stack([np.stack([np.where(rng.random(400) < 0.5 + 0.2 * e, y, 1 - y) for e in range(3)])
        ...               for _ in range(4)])
        >>> from agreebook.record import Record
        >>> b = learning_epoch_by_accessibility(Record({"test": p}, {"test": y}, [1, 2, 3]), "test")
        >>> len(b["median"]), int(b["n"].sum())
        (20, 400)
    """
    preds, labels = record.predictions[split], record.labels[split]
    sort_by, timed = (preds[0::2], preds[1::2]) if held_out and record.n_models >= 2 else (preds, preds)
    acc = M.accessibility(M.tp_agreement(sort_by, labels))
    le = M.learning_epoch(timed, labels, record.epochs)  # (models, examples), NaN: not learned
    le = np.where(np.isnan(le), np.inf, le)
    order = np.argsort(acc, kind="stable")
    k = max(1, int(round(1 / share)))
    groups = np.array_split(order, k)
    rng = np.random.default_rng(seed)
    out = {key: np.full(k, np.nan) for key in ("acc_lo", "acc_hi", "median", "q25", "q75", "never")}
    out["n"], out["ci"], out["models"] = np.zeros(k, int), np.full((k, 2), np.nan), timed.shape[0]
    for b, cols in enumerate(groups):
        out["n"][b] = len(cols)
        if not len(cols):
            continue
        v = le[:, cols]
        out["acc_lo"][b], out["acc_hi"][b] = acc[cols].min(), acc[cols].max()
        out["median"][b], out["q25"][b], out["q75"][b] = np.quantile(v, [0.5, 0.25, 0.75], method="lower")
        out["never"][b] = np.isinf(v).mean()
        draws = rng.integers(0, len(cols), (n_boot, len(cols)))
        meds = np.quantile(v[:, draws].transpose(1, 0, 2).reshape(n_boot, -1), 0.5, axis=1, method="lower")
        # medians of recorded epochs (or inf): an order statistic, so the interval's ends are too
        out["ci"][b] = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2], method="lower")
    return out


def robustness_settings(cfg):
    """§3.2: one-at-a-time changes to a collection's hyperparameters, as (label, overrides).

    cfg: the resolved base TrainConfig.  Learning rate x0.5 and x2, batch size /2 and x2, the
    other optimizers, no and lighter dropout, and other activations (where the architecture
    takes them).
    """
    from .config import SWEEP
    from .models import get_arch
    lr = [(f"lr {cfg.lr * f:g}", {"lr": cfg.lr * f}) for f in SWEEP["lr_factors"]]
    batch = [max(1, int(cfg.batch_size * f)) for f in SWEEP["batch_factors"]]
    s = [("base", {}), *lr, *[(f"batch {b}", {"batch_size": b}) for b in batch]]
    s += [(f"{name} lr {o['lr']:g}", dict(o)) for name, o in SWEEP["optimizers"].items() if cfg.optimizer != name]
    arch = get_arch(cfg.arch)
    if arch.configurable:
        s += [("dropout 0" if d == 0 else f"dropout {d:g}/{2 * d:g}", {"dropout": d}) for d in SWEEP["dropouts"]]
        s += [(a, {"activation": a}) for a in SWEEP["activations"] if a != arch.activation][:SWEEP["n_activations"]]
    return s


def robustness_table(results, split="test"):
    """One row per setting: final accuracy, and bimodality against its null over the epochs.

    results: [(label, record)].  Columns: N; mean accuracy at the last epoch; the most bimodal
    recorded epoch with its bimodality, 95% bootstrap interval and the null's there; the number
    of epochs at which the observed bimodality is significantly below the null's (p < 0.01) and
    the largest p-value; error consistency at the last epoch with its interval.
    """
    import pandas as pd
    rows = []
    for label, rec in results:
        a = analyze(rec, split)
        i = a.most_bimodal
        rows.append({"setting": label, "N": rec.n_models, "accuracy": a.accuracy_mean[-1],
                     "most bimodal epoch": int(a.epochs[i]), "bimodality there": a.bimodality[i],
                     "95% CI": _ci_text(a.bimodality_ci[i:i + 1])[0], "null there": a.null_bimodality[i],
                     f"epochs with p<{ALPHA:g}": f"{int(a.significant().sum())}/{len(a.epochs)}",
                     f"largest p ({a.n_null_draws} null draws)": _p_text(np.nanmax(a.p_value), a.n_null_draws)[0],
                     "error consistency, last epoch": a.error_consistency[-1],
                     "its 95% CI": _kappa_ci_text(a)[-1]})
    return pd.DataFrame(rows).set_index("setting")


def correlation_table(results, split="test", matrix=None, within_class=False, final_out=False):
    """Accessibility correlations between collections, read against their noise ceilings.

    results: [(label, record)] evaluated on the same examples.  One row per pair "A vs B":
    Pearson's r and Spearman's rho with 95% bootstrap intervals (resampling examples,
    stats.correlation), each collection's split-half reliability of accessibility
    (Spearman-Brown corrected; columns "reliability A" and "reliability B", so the table stays
    as wide for 60 collections as for 2), the noise ceiling sqrt(rel_a * rel_b): the
    correlation two collections with these reliabilities would show if they ranked the
    examples identically, and r over it.  matrix: their
    ``correlation_matrix``, when a chapter has it already (its bootstraps are not redone).
    within_class: also the partial r with the example's class partialled out (class indicators),
    with its interval: how much of r is the ranking within the classes rather than which classes
    are easy (a bootstrap per pair, so off by default).  final_out: also the partial r with both
    collections' TP-agreement at their last recorded epoch partialled out: agreement on *when*
    the examples are learned beyond *which* are known at the end (as ``learner_comparison``).
    """
    import pandas as pd
    m = correlation_matrix(results, split) if matrix is None else matrix
    if within_class:
        y = results[0][1].labels[split]
        classes = (y[:, None] == np.unique(y)[None, 1:]).astype(float)
    labels, rel = m["labels"], m["reliability"]
    rows = []
    for (i, j), c in m["correlations"].items():
        la, lb = labels[i], labels[j]
        rows.append({"pair": f"{la} vs {lb}", "examples": c["n"], "Pearson r": c["pearson"],
                     "r 95% CI": _ci_text([c["pearson_ci"]])[0], "Spearman rho": c["spearman"],
                     "rho 95% CI": _ci_text([c["spearman_ci"]])[0], "reliability A": rel[i],
                     "reliability B": rel[j], "noise ceiling": m["ceiling"][i, j],
                     "r / ceiling": c["pearson"] / m["ceiling"][i, j] if m["ceiling"][i, j] > 0 else np.nan})
        if within_class:
            w = S.partial_correlation(m["accessibility"][i], m["accessibility"][j], classes)
            rows[-1].update({"within-class r": w["r"], "within-class 95% CI": _ci_text([w["ci"]])[0]})
        if final_out:
            finals = np.stack([results[i][1].tp_agreement(split)[-1], results[j][1].tp_agreement(split)[-1]], 1)
            f = S.partial_correlation(m["accessibility"][i], m["accessibility"][j], finals)
            rows[-1].update({"partial r (final correctness out)": f["r"], "partial r 95% CI": _ci_text([f["ci"]])[0]})
    columns = ["pair", "examples", "Pearson r", "r 95% CI", "Spearman rho", "rho 95% CI", "reliability A",
               "reliability B", "noise ceiling", "r / ceiling"] + (
        ["within-class r", "within-class 95% CI"] if within_class else []) + (
        ["partial r (final correctness out)", "partial r 95% CI"] if final_out else [])
    return pd.DataFrame(rows, columns=columns).set_index("pair")  # no pair (one collection): no rows


def correlation_matrix(results, split="test"):
    """§3.3: accessibility correlations among k collections tested on the same examples,
    against their noise ceilings.

    results: [(label, record)].  Returns a dict: ``labels``; ``pearson`` (k, k), Pearson's r of
    each pair's accessibility (the paper's statistic), with ``ci`` (k, k, 2) its 95% bootstrap
    interval; ``spearman`` (k, k) Spearman's rho; ``reliability`` (k,) each collection's
    split-half reliability of accessibility (Pearson, Spearman-Brown corrected to its N) and
    ``reliability_sd`` over random splits; ``ceiling`` (k, k) sqrt(rel_i rel_j), the Pearson r
    two collections of these reliabilities would show if they learned the examples in the same
    order up to the noise of their models (an estimate: a pair can exceed it by chance).
    Diagonals are NaN.  Also ``accessibility`` (k, n_examples) and ``correlations``
    {(i, j): stats.correlation} for i < j, for tables and scatters to reuse."""
    labels = [label for label, _ in results]
    acc = np.stack([M.accessibility(rec.tp_agreement(split)) for _, rec in results])
    rel = [S.split_half_reliability(rec.predictions[split], rec.labels[split]) for _, rec in results]
    k = len(results)
    r, rho, ci = np.full((k, k), np.nan), np.full((k, k), np.nan), np.full((k, k, 2), np.nan)
    pairs = {}
    for i in range(k):
        for j in range(i + 1, k):
            c = pairs[i, j] = S.correlation(acc[i], acc[j])
            r[i, j] = r[j, i] = c["pearson"]
            rho[i, j] = rho[j, i] = c["spearman"]
            ci[i, j] = ci[j, i] = c["pearson_ci"]
    reliability = np.array([x["reliability"] for x in rel])
    ceiling = np.sqrt(np.outer(np.clip(reliability, 0, None), np.clip(reliability, 0, None)))
    np.fill_diagonal(ceiling, np.nan)
    return {"labels": labels, "pearson": r, "ci": ci, "spearman": rho, "reliability": reliability,
            "reliability_sd": np.array([x["sd"] for x in rel]), "ceiling": ceiling, "accessibility": acc,
            "correlations": pairs}


def protocol_table(trajectory, retrain, split="test"):
    """The two protocols of recording a collection, side by side at their common epochs.

    trajectory: a record whose models go on training from one recorded epoch to the next (the
    book's); retrain: one of the same configuration with ``protocol="retrain"``, a fresh set of
    models trained from scratch for every recorded extent (the paper's, Suppl D).  One row per
    common epoch: each one's mean accuracy, bimodality with its 95% interval against its null,
    and the correlation of the two's TP-agreement on the same examples (Pearson, Spearman, with
    intervals).  Under the retrain protocol the epochs are independent collections, so a
    pattern that holds across them is not carried from one epoch to the next by the same
    models.  ``attrs["accessibility"]``: stats.correlation of the two accessibilities over the
    common epochs.
    """
    import pandas as pd
    if trajectory.meta.get("protocol", "trajectory") != "trajectory" or retrain.meta.get("protocol") != "retrain":
        raise ValueError("pass a trajectory record first and a retrain record second (their record.json 'protocol')")
    if not np.array_equal(trajectory.labels[split], retrain.labels[split]):
        raise ValueError(f"the two records' {split} labels differ: compare collections on the same examples")
    common = np.intersect1d(trajectory.epochs, retrain.epochs)
    if len(common) == 0:
        raise ValueError(f"no common recorded epoch: {list(trajectory.epochs)} and {list(retrain.epochs)}")
    it, ir = (np.searchsorted(r.epochs, common) for r in (trajectory, retrain))
    at, ar = analyze(trajectory, split), analyze(retrain, split)
    tt, tr = trajectory.tp_agreement(split)[it], retrain.tp_agreement(split)[ir]
    rows = []
    for k, e in enumerate(common):
        c = S.correlation(tt[k], tr[k])
        row = {"epoch": int(e)}
        for name, a, i in (("trajectory", at, it[k]), ("retrain", ar, ir[k])):
            row.update({f"{name} accuracy": a.accuracy_mean[i], f"{name} bimodality": a.bimodality[i],
                        f"{name} 95% CI": _ci_text([a.bimodality_ci[i]])[0], f"{name} null": a.null_bimodality[i]})
        row.update({"TPa Pearson r": c["pearson"], "r 95% CI": _ci_text([c["pearson_ci"]])[0],
                    "TPa Spearman rho": c["spearman"], "rho 95% CI": _ci_text([c["spearman_ci"]])[0]})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("epoch")
    table.attrs["accessibility"] = S.correlation(M.accessibility(tt), M.accessibility(tr))
    return table


def tp_agreement_correlations(a, b, split="test", epochs=None):
    """Two collections' TP-agreement on the same examples, correlated per recorded epoch index:
    a table of Pearson r and Spearman rho with 95% bootstrap intervals (stats.correlation),
    one row per epoch index.  Shows when, in training, the collections start to agree.
    epochs: the row labels (default a's recorded epochs)."""
    import pandas as pd
    ta, tb = a.tp_agreement(split), b.tp_agreement(split)
    rows = []
    for i, (x, y) in enumerate(zip(ta, tb)):
        c = S.correlation(x, y)
        rows.append({"epoch": (a.epochs if epochs is None else epochs)[i], "Pearson r": c["pearson"],
                     "r 95% CI": _ci_text([c["pearson_ci"]])[0], "Spearman rho": c["spearman"],
                     "rho 95% CI": _ci_text([c["spearman_ci"]])[0]})
    return pd.DataFrame(rows).set_index("epoch")


def out_of_sample_agreement(record, epoch_index=-1, n_null=20000, seed=0):
    """§3.4: Agreement on the test set and on every out-of-sample split at one recorded epoch,
    each with the same null: independent models that keep each model's label frequencies on
    those inputs (``metrics.null_agreement_unlabelled``; the test set's matched-accuracy null
    is §3.1's).  Returns {split: (observed (n,), null (n_null,))}, the splits from the most to
    the least natural (``naturalness_order``)."""
    e = epoch_index % record.n_epochs
    out = {}
    for split in naturalness_order(record):
        preds = record.predictions[split][:, e:e + 1]
        out[split] = (M.agreement(preds)[0], M.null_agreement_unlabelled(preds, n_null, seed)[0])
    return out


def naturalness_order(record):
    """The test split, then the other-domain natural inputs (ood_<dataset>), then Gaussian
    noise: the order in which §3.4 expects Agreement to fall."""
    rank = {"test": 0, "ood_noise": 2}
    # not "train" nor "heldout": labelled examples of the training distribution, not out of sample
    return sorted((s for s in record.splits if s == "test" or s.startswith("ood_")), key=lambda s: rank.get(s, 1))


def out_of_sample_table(record, results, n_boot=S.N_BOOT, level=S.LEVEL, seed=0):
    """§3.4 as a table, a row per split from the most to the least natural: mean Agreement with
    its bootstrap interval (resampling the split's inputs), the paper's reference (Fig 7a: N
    models assigning labels uniformly at random), the label-frequency null, and how far the
    observed Agreement goes from that null towards full agreement, (obs - null) / (1 - null),
    with its interval: a share that the inputs' one dominant label cannot produce by itself.
    results: ``out_of_sample_agreement``'s.  ``attrs["draws"]`` keeps the bootstrap means for
    ``out_of_sample_verdict``."""
    import pandas as pd
    k, n = record.n_classes, record.n_models
    uniform = M.null_agreement(np.full((n, 1), 1 / k), k, 20000, seed)[0].mean()
    rows, draws = [], {}
    for split, (obs, null) in results.items():
        bs = S.Bootstrap(len(obs), n_boot, seed)  # the blocked resampling of every other interval
        d = bs.sums(obs)[1] / bs.drawn
        share = (d - null.mean()) / (1 - null.mean()) if null.mean() < 1 else np.full_like(d, np.nan)
        draws[split] = (d, share)
        ci = S.percentile_interval(d[:, None], level)[0]
        sci = S.percentile_interval(share[:, None], level)[0]
        rows.append({"split": split, "inputs": len(obs), "mean Agreement": obs.mean(), "95% CI": _ci_text([ci], 3)[0],
                     "random labels (paper's reference)": uniform, "label-frequency null": null.mean(),
                     "share of the way from that null to 1": (obs.mean() - null.mean()) / (1 - null.mean())
                     if null.mean() < 1 else np.nan, "its 95% CI": _ci_text([sci], 3)[0]})
    t = pd.DataFrame(rows).set_index("split")
    t.attrs.update(draws=draws, uniform=uniform, level=level)
    return t


def out_of_sample_verdict(table):
    """§3.4's two claims, read from ``out_of_sample_table``: Agreement "is always higher than the
    Agreement that would be achieved by a random assignment of labels" (every split's interval
    above the uniform reference), and "the more natural the images are and the more similar the
    distributions of the train and test images are, the higher the Agreement is" (each split's
    mean above the next less natural one's: the interval of the difference of the two means
    above 0; below 0 contradicts it).  The ordering is also read on the share of the way from
    the label-frequency null, which discounts a split where every model gives one label.  The
    first claim counts the out-of-sample sets only (the test set is given for reference); with a
    single one (text: noise only) the ordering is read between its two ends and is at best
    "partly".  Returns ({"above random": word, "order": word}, [sentences])."""
    level = table.attrs["level"]
    draws, uniform = table.attrs["draws"], table.attrs["uniform"]
    splits = list(table.index)
    ood = [s for s in splits if s != "test"]
    lows = {s: S.percentile_interval(draws[s][0][:, None], level)[0][0] for s in splits}
    above = [s for s in ood if lows[s] > uniform]
    means = ", ".join(f"{s} {_r(table.loc[s, 'mean Agreement'])}" for s in ood)
    ref = f"; the test set {_r(table.loc['test', 'mean Agreement'])} for reference" if "test" in splits else ""
    above_word = "reproduced" if ood and len(above) == len(ood) else "not reproduced" if ood else "untestable"
    first = (f"Higher than random labels ({_r(uniform)}, the paper's reference): {len(above)} of the {len(ood)} "
             f"out-of-sample input set(s) ({means}{ref}); the paper's claim: {above_word}.")

    def steps(which):
        out = []
        for a, b in zip(splits, splits[1:]):
            lo, hi = S.percentile_interval((draws[a][which] - draws[b][which])[:, None], level)[0]
            rel = "above" if lo > 0 else "below" if hi < 0 else "indistinguishable from"
            out.append((rel, f"{a} {rel} {b} ({_r(lo)} to {_r(hi)})"))
        return out

    raw, shared = steps(0), steps(1)
    rels = [r for r, _ in raw]
    word = "reproduced" if all(r == "above" for r in rels) else "not reproduced" if "below" in rels else "partly"
    ends = ""
    if len(splits) < 3 and word == "reproduced":  # one step cannot show a graded order
        word, ends = "partly", " (only its two ends: one out-of-sample set)"
    second = (f"Falling from the most to the least natural inputs, the difference of mean Agreement (95% "
              f"interval): {'; '.join(t for _, t in raw)}; the paper's claim{ends}: {word}.")
    third = (f"On the share of the way from the label-frequency null to full agreement: "
             f"{'; '.join(t for _, t in shared)}.")
    return {"above random": above_word, "order": word}, [first, second, third]


def mistake_table(record, split, n_draws=20, seed=0):
    """Per recorded epoch: do the wrong models give the same wrong label?  Over the examples
    at least two models get wrong, the mean of ``metrics.mistake_agreement`` with its 95%
    bootstrap interval (resampling those examples), against independent models that keep who
    is wrong where and draw their wrong label from their own confusions of the example's class
    ("confusion-matched null") or uniformly among the other classes (the paper's null
    classifier).  Reads "the same mistakes" apart from Agreement, which mixes them with the
    shared correct answers."""
    import pandas as pd
    preds, labels = record.predictions[split], record.labels[split]
    obs = M.mistake_agreement(preds, labels, record.n_classes)
    conf = M.null_mistake_agreement(preds, labels, record.n_classes, n_draws, seed)
    unif = M.null_mistake_agreement(preds, labels, record.n_classes, n_draws, seed, confusion=False)
    rows = []
    for e, epoch in enumerate(record.epochs):
        ok = ~np.isnan(obs[e])
        if ok.sum() < 2:
            rows.append({"epoch": epoch, "examples with 2+ wrong": int(ok.sum())})
            continue
        ci = S.mean_ci(obs[e][ok][None], seed=seed)["ci"][0]
        rows.append({"epoch": epoch, "examples with 2+ wrong": int(ok.sum()), "same wrong label": obs[e][ok].mean(),
                     "95% CI": _ci_text([ci], 3)[0], "confusion-matched null": conf[e][ok].mean(),
                     "uniform null": unif[e][ok].mean()})
    return pd.DataFrame(rows).set_index("epoch")


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


def minimum_bimodality_table(results, splits=("train", "test"), alpha=ALPHA):
    """§5: each collection's most bimodal epoch against the nulls, one row per (collection, split).

    results: [(label, record)].  Columns: the accuracy at the last epoch; the minimum over
    recorded epochs of the observed bimodality with its 95% bootstrap interval; the null's
    bimodality at that epoch and the class-matched null's; the number of epochs at which the
    observed bimodality is significantly below each null; the error consistency there with its
    interval.  The paper (§5.2) puts the minimal bimodality of random labels at 1.07 (train) /
    1.35 (test); §4.2 gives the *maximal* bimodality of st-VGG on small mammals as 0.06
    (linear) and 0.22 (non-linear).
    """
    import pandas as pd
    rows = []
    for label, rec in results:
        for split in splits:
            a = analyze(rec, split)
            i = a.most_bimodal
            rows.append({
                "collection": label, "split": split, "accuracy there": a.accuracy_mean[i],
                "min bimodality": a.bimodality[i], "95% CI": _ci_text(a.bimodality_ci[i:i + 1])[0],
                "at epoch": int(a.epochs[i]), "null": a.null_bimodality[i], "class null": a.class_null_bimodality[i],
                f"epochs p<{alpha:g}": f"{int(a.significant(alpha).sum())}/{len(a.epochs)}",
                f"epochs p<{alpha:g}, class null": f"{int(a.significant(alpha, 'class').sum())}/{len(a.epochs)}",
                "kappa": a.error_consistency[i], "kappa 95% CI": _kappa_ci_text(a)[i]})
    return pd.DataFrame(rows).set_index(["collection", "split"])


def difficulty_null_table(record, split, strata, alpha=ALPHA):
    """Does a difficulty the data carry explain the bimodality?  Chapter 5's test for the
    synthetic sets, whose generator knows how hard each example is.

    strata: {name: (n_examples,) int}, examples grouped by that difficulty (and class).  Per
    recorded epoch: accuracy, the observed bimodality with its interval, the paper's null, the
    class-matched null, and for each strata the null of independent models that keep every
    model's accuracy on every stratum (metrics.null_tp_agreement_by_group) with its p-value.
    A collection whose models agree only through the difficulty matches that null; models that
    share an order beyond it still beat it.  Strata of a few examples each absorb order too
    (each model keeps one accuracy per stratum), so the test is conservative."""
    import pandas as pd
    from .analysis import N_NULL_DRAWS
    a = analyze(record, split)
    preds, labels = record.predictions[split], record.labels[split]
    tpa, acc = record.tp_agreement(split), record.accuracies(split)
    table = {"epoch": a.epochs, "accuracy": a.accuracy_mean, "bimodality": a.bimodality,
             "bimodality 95% CI": _ci_text(a.bimodality_ci), "null": a.null_bimodality,
             "class null": a.class_null_bimodality}
    for name, groups in strata.items():
        t = M.bimodality_test(tpa, acc, n_draws=N_NULL_DRAWS, seed=a.seed,
                              null_pmf=M.null_tp_agreement_by_group(preds, labels, groups))
        table[f"null: {name}"] = t["null"]
        table[f"p ({N_NULL_DRAWS} draws): {name}"] = _p_text(t["p_value"], N_NULL_DRAWS)
        table[f"below it (p<{alpha:g}): {name}"] = (t["p_value"] < alpha) & (t["observed"] < t["null"])
    return pd.DataFrame(table).set_index("epoch")


def difficulty_profile(record, split, score, edges, epochs=(-1,)):
    """Mean TP-agreement of the examples in each bin of a per-example difficulty ``score``,
    at the recorded epochs given by index: where the models put the boundary.  Rows: bins."""
    import pandas as pd
    score = np.asarray(score, float)
    tpa = record.tp_agreement(split)
    b = np.clip(np.digitize(score, edges[1:-1]), 0, len(edges) - 2)
    rows = {}
    for i in range(len(edges) - 1):
        keep = b == i
        rows[f"{edges[i]:g} to {edges[i + 1]:g}"] = {
            "examples": int(keep.sum()),
            **{f"mean TPa, epoch {record.epochs[e]}": (tpa[e, keep].mean() if keep.any() else np.nan) for e in epochs}}
    return pd.DataFrame(rows).T


def _record_rows(record, split, n_generated):
    rows = (record.meta.get("subset") or {}).get(f"{split}_indices")
    rows = np.arange(n_generated) if rows is None else np.asarray(rows)
    if len(rows) != len(record.labels[split]):
        raise ValueError(f"the record's {split} split has {len(record.labels[split])} examples, the generator "
                         f"{n_generated}: a record of other data")
    return rows


def gabor_parameters_of(record, split="test"):
    """data.gabor_parameters for the examples of a Gabor record's split, in its order."""
    from .data import gabor_parameters
    cfg = record.meta.get("config") or {}
    if record.meta.get("dataset") != "gabor" or "data_seed" not in cfg:
        raise ValueError("needs a record trained on the gabor dataset by agreebook")
    params = gabor_parameters(int(cfg["data_seed"]))[split]
    rows = _record_rows(record, split, len(params["offset"]))
    return {k: v[rows] for k, v in params.items()}


def gabor_strata(record, split="test", width=5.0, cycles=False):
    """Strata of a Gabor record's examples: class x |orientation offset| in bins of ``width``
    deg; with ``cycles`` also x above / below the median envelope-to-wavelength ratio (how many
    stripes the patch shows, so how visible its orientation is)."""
    p = gabor_parameters_of(record, split)
    n_bins = int(np.ceil(30 / width))
    out = record.labels[split] * n_bins + np.minimum((np.abs(p["offset"]) // width).astype(np.int64), n_bins - 1)
    if cycles:
        ratio = p["sigma"] / p["wavelength"]
        out = out * 2 + (ratio > np.median(ratio))
    return out


def gaussian_margins(record, split="test", data_root=None, direction="bayes"):
    """Each example's signed distance from a linear boundary of the two-Gaussian task, in
    standard deviations: positive where that boundary puts it on its class's side.

    direction "bayes": the best possible classifier's, along the true mean difference,
    (mean z - shift / 2) * sqrt(3072), from the stored images (128 + 32 z, data._gaussian), so
    rounding included.  "sample": the plug-in classifier of the record's own training set,
    along its two class means' difference and through their midpoint: what every member of the
    collection sees, with the training sample's noise in it."""
    from .data import GAUSSIAN_SHIFTS
    name = record.meta.get("dataset")
    if name not in GAUSSIAN_SHIFTS:
        raise ValueError(f"gaussian_margins needs a record of a Gaussian set ({', '.join(GAUSSIAN_SHIFTS)}); got {name}")
    if direction not in ("bayes", "sample"):
        raise ValueError(f"direction must be 'bayes' or 'sample'; got {direction!r}")
    ds = _rebuilt(record, data_root)  # one rebuild for both splits
    x = {"train": ds.x_train, "test": ds.x_test}
    z = (x[split].reshape(len(x[split]), -1).astype(np.float64) - 128) / 32
    if direction == "bayes":
        m = (z.mean(1) - GAUSSIAN_SHIFTS[name] / 2) * np.sqrt(z.shape[1])
    else:
        zt = (x["train"].reshape(len(x["train"]), -1).astype(np.float64) - 128) / 32
        yt = record.labels["train"]
        mu0, mu1 = zt[yt == 0].mean(0), zt[yt == 1].mean(0)
        w = (mu1 - mu0) / np.linalg.norm(mu1 - mu0)
        m = (z - (mu0 + mu1) / 2) @ w
    return np.where(record.labels[split] == 1, m, -m)


def gaussian_strata(margins, labels, n_bins=10):
    """Strata of a Gaussian record's examples: class x deciles (``n_bins``) of a margin."""
    edges = np.quantile(margins, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.asarray(labels) * n_bins + np.digitize(margins, edges)


def original_labels(record, split="train", data_root=None):
    """A random-label record's true labels of ``split``, in its order (the record holds the
    random ones it was trained on).  Rebuilt from its configuration as ``record_images``."""
    from .record import RecordError
    if not (record.meta.get("config") or {}).get("random_labels"):
        raise RecordError("original_labels needs a record trained with random labels by agreebook")
    ds = _rebuilt(record, data_root, random_labels=False)
    y = {"train": ds.y_train, "test": ds.y_test}[split]
    if len(y) != len(record.labels[split]):
        raise RecordError(f"the rebuilt {split} split has {len(y)} examples, the record {len(record.labels[split])}: "
                          "other data under this data root")
    return y


def neighbour_label_agreement(record, split="train", k=25, data_root=None):
    """For each example, the share of its ``k`` nearest neighbours in the same split (Euclidean
    distance between images, each centred on its own mean pixel) that carry its label: how
    consistent the labels are around it in input space.  Under random labels it asks whether
    the images the networks memorise first are those whose neighbours happen to share their
    label.  (n_examples,); O(n^2) memory, for splits of a few thousand images."""
    x = record_images(record, split, data_root)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    x -= x.mean(1, keepdims=True)
    sq = (x * x).sum(1)
    d = sq[:, None] + sq[None] - 2 * (x @ x.T)
    np.fill_diagonal(d, np.inf)
    nn = np.argpartition(d, k, axis=1)[:, :k]
    y = record.labels[split]
    return (y[nn] == y[:, None]).mean(1)


def _rebuilt(record, data_root=None, **changes):
    """The dataset a record was trained on, rebuilt from its configuration (with ``changes``);
    without changes it is checked against the record's data fingerprint."""
    from .config import TrainConfig
    from .record import RecordError
    from .prepare import prepare_dataset
    cfg = record.meta.get("config")
    if not cfg:
        raise RecordError("this record has no training configuration (built from arrays?): "
                          "its images cannot be rebuilt; index your own images with its example order")
    ds = prepare_dataset(TrainConfig.from_dict({**cfg, "ood": [], **changes}), data_root)
    if not changes and record.meta.get("data_fingerprint") not in (None, ds.fingerprint()):
        raise RecordError(f"the {cfg['dataset']} data under this data root differ from the data the record "
                          "was trained on (fingerprint); point data_root at the original data")
    return ds


def record_images(record, split, data_root=None):
    """The images a record's ``split`` predictions are about, (n_examples, H, W, C) uint8.

    Rebuilt from the record's configuration (subsets, partitions as trained) and checked
    against its data fingerprint, so the images cannot silently belong to other data.
    """
    from .record import RecordError
    if split.startswith("ood_"):
        raise RecordError("out-of-sample inputs are not stored; rebuild them with data.out_of_sample")
    ds = _rebuilt(record, data_root)
    x = {"train": ds.x_train, "test": ds.x_test}[split]
    return x.load(np.arange(len(x))) if hasattr(x, "load") else x  # an image folder's files, decoded


def forgetting_table(record, split, high=0.8, low=0.2, seed=0):
    """Suppl E: "once an example is learned by most networks, it is rarely forgotten".  Returns
    (table, summary): per recorded epoch from the second on, the share of (model, example)
    pairs that go from right to wrong since the previous recorded epoch, against the share
    independent draws at the same accuracies would give (p_prev (1 - p_now), averaged over the
    models), and the examples the collection forgets there (TP-agreement >= ``high`` at some
    earlier epoch, <= ``low`` now, for the first time).  summary: a dict with the mean
    forgetting events per pair (``metrics.forgetting_events``) with its 95% interval
    (resampling examples) against ``null`` (``metrics.null_forgetting_events``) and
    ``null_by_example`` (each model right with the example's TP-agreement at each epoch,
    independently across epochs: shared difficulty kept, persistence removed), the share of
    pairs never forgotten, and the examples learned by most (``learned``: TP-agreement >= high
    at some epoch) and later forgotten by most (``forgotten``, with ``forgotten_ci``; those that
    stay at or below ``low`` to the last epoch: ``forgotten_for_good`` with its interval; their
    classes ``forgotten_by_class`` and {epoch: how many first reached ``high`` there}
    ``forgotten_first_high``)."""
    import pandas as pd
    preds, labels = record.predictions[split], record.labels[split]
    right = preds == labels
    acc = right.mean(2)
    tpa = M.tp_agreement(preds, labels)
    high_yet = np.logical_or.accumulate(tpa >= high, axis=0)
    dropped = (tpa <= low) & np.vstack([np.zeros((1, tpa.shape[1]), bool), high_yet[:-1]])
    first_drop = np.where(dropped.any(0), dropped.argmax(0), -1)
    rows = []
    for e in range(1, record.n_epochs):
        rows.append({"epoch": int(record.epochs[e]), "since": int(record.epochs[e - 1]),
                     "pairs right -> wrong": (right[:, e - 1] & ~right[:, e]).mean(),
                     "independent draws": (acc[:, e - 1] * (1 - acc[:, e])).mean(),
                     f"examples forgotten by most (TPa >= {high:g}, then <= {low:g})": int((first_drop == e).sum())})
    events = M.forgetting_events(preds, labels)
    learned = high_yet[-1]
    forgot = first_drop >= 0
    # "their score drops to 0 and remains there" (Suppl E): from the drop to the last epoch
    after = np.arange(record.n_epochs)[:, None] >= np.where(forgot, first_drop, record.n_epochs)[None, :]
    kept_low = forgot & np.all((tpa <= low) | ~after, axis=0)

    def share_ci(flag):
        return (tuple(map(float, S.mean_ci(flag[learned][None].astype(float), seed=seed)["ci"][0]))
                if learned.sum() > 1 else (np.nan, np.nan))
    # a stricter null than independent draws: each model right on an example at an epoch with
    # that example's TP-agreement then, independently across epochs (keeps shared difficulty)
    by_example = float((tpa[:-1] * (1 - tpa[1:])).sum(0).mean())
    summary = {"events": float(events.mean()),
               "events_ci": tuple(map(float, S.mean_ci(events.mean(0, dtype=np.float64)[None], seed=seed)["ci"][0])),
               "null": float(M.null_forgetting_events(acc).mean()), "null_by_example": by_example,
               "never": float((events == 0).mean()),
               "learned": int(learned.sum()), "forgotten": int(forgot.sum()), "forgotten_ci": share_ci(forgot),
               "forgotten_for_good": int(kept_low.sum()), "forgotten_for_good_ci": share_ci(kept_low),
               "high": high, "low": low,
               # who they are: their classes, and the recorded epoch they first reached ``high``
               "forgotten_by_class": np.bincount(labels[forgot], minlength=record.n_classes),
               "forgotten_first_high": dict(zip(record.epochs.tolist(), np.bincount(
                   np.argmax(tpa[:, forgot] >= high, axis=0), minlength=record.n_epochs).tolist()))}
    return pd.DataFrame(rows).set_index("epoch"), summary


def class_emergence_table(record, split, n_boot=S.N_BOOT, level=S.LEVEL, seed=0):
    """Suppl E, Fig 29: "at the beginning of learning, only images from 2 classes reach a
    TP-agreement of 1. As learning proceeds, more class labels slowly emerge."  Per recorded
    epoch: the examples every model gets right, their share of each class, how many classes
    they span (``metrics.effective_classes``: exp of the entropy of the shares, 1 to K), and how
    many labels the models' predictions span over all examples.  ``attrs["change"]``: the
    classes spanned at TP-agreement 1, last recorded epoch minus first, with its bootstrap
    interval (resampling examples); ``attrs["first_vs_random"]``: (classes spanned at TPa 1 at
    the first epoch, their mean over random sets of as many examples, the p-value of so few).
    The first-to-last change is large by construction wherever the last epoch is near the
    ceiling; the first-epoch test is the one that reads the paper's claim."""
    import pandas as pd
    preds, labels = record.predictions[split], record.labels[split]
    k = record.n_classes
    names = record.meta.get("classes") or [str(c) for c in range(k)]
    tpa = M.tp_agreement(preds, labels)
    rows = []
    for e, epoch in enumerate(record.epochs):
        at1 = tpa[e] == 1
        share = np.bincount(labels[at1], minlength=k) / max(at1.sum(), 1)
        rows.append({"epoch": int(epoch), "examples at TPa 1": int(at1.sum()),
                     **{f"share {n}": share[i] for i, n in enumerate(names)},
                     "classes spanned at TPa 1": M.effective_classes(labels[at1], k),
                     "labels the models predict": M.effective_classes(preds[:, e].ravel(), k),
                     "labels each model predicts (median)": float(np.median(
                         [M.effective_classes(p, k) for p in preds[:, e]]))})
    t = pd.DataFrame(rows).set_index("epoch")
    rng = np.random.default_rng(seed)
    # the first epoch against random sets of as many examples: few classes by chance, or not?
    m = int((tpa[0] == 1).sum())
    if m:
        chance = np.array([M.effective_classes(labels[rng.choice(len(labels), m, replace=False)], k)
                           for _ in range(n_boot)])
        obs = t["classes spanned at TPa 1"].iloc[0]
        t.attrs["first_vs_random"] = (obs, float(chance.mean()), float((1 + (chance <= obs).sum()) / (n_boot + 1)))
    draws = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, len(labels), len(labels))
        draws[b] = (M.effective_classes(labels[i][tpa[-1, i] == 1], k)
                    - M.effective_classes(labels[i][tpa[0, i] == 1], k))
    t.attrs["change"] = (t["classes spanned at TPa 1"].iloc[-1] - t["classes spanned at TPa 1"].iloc[0],
                         tuple(map(float, S.percentile_interval(draws[:, None], level)[0])))
    return t


def _paired(a, b, level):
    """Mean of the member-wise differences a - b (member m of both collections shares its seed,
    so its initialisation) with its paired t interval."""
    from scipy import stats as sps
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2:
        raise ValueError("a paired interval needs at least 2 members")
    se = d.std(ddof=1) / np.sqrt(len(d))
    half = sps.t.ppf((1 + level) / 2, len(d) - 1) * se
    return d.mean(), (d.mean() - half, d.mean() + half)


def curriculum_table(results, split="test", reference="plain", level=S.LEVEL):
    """§7: test accuracy of collections trained in different orders, per recorded epoch: each
    order's mean accuracy over its networks, and its difference from ``reference`` with a 95%
    paired t interval: member m of every collection has the same seed (``Chapter.curricula``),
    so the same initialisation, and the differences are taken member by member.
    results: {order: record}, all on the same test examples, epochs and number of members.  ``attrs["last"]``:
    {order: (difference, (lo, hi))} at the last recorded epoch."""
    import pandas as pd
    acc = {order: rec.accuracies(split) for order, rec in results.items()}  # (models, epochs) each
    rows = []
    for e, epoch in enumerate(results[reference].epochs):
        row = {"epoch": int(epoch)}
        for order, a in acc.items():
            row[f"{order}"] = a[:, e].mean()
            if order != reference:
                d, (lo, hi) = _paired(a[:, e], acc[reference][:, e], level)
                row[f"{order} - {reference}"] = d
                row[f"{order} 95% CI"] = f"[{lo:+.3f}, {hi:+.3f}]"
        rows.append(row)
    t = pd.DataFrame(rows).set_index("epoch")
    t.attrs["last"] = {order: _paired(a[:, -1], acc[reference][:, -1], level) for order, a in acc.items()
                       if order != reference}
    t.attrs["n"] = {order: rec.n_models for order, rec in results.items()}
    return t


def curriculum_verdict(table, order="easy", reference="plain"):
    """("reproduced" | "not reproduced" | "partly", sentence) for §7: a curriculum by these
    scores "did not seem to benefit the learning".  At the last recorded epoch: reproduced when
    the interval of (order - reference) reaches 0 or lies below it (no benefit), not reproduced
    when it lies wholly above 0 (a benefit)."""
    d, (lo, hi) = table.attrs["last"][order]
    word = "not reproduced" if lo > 0 else "reproduced"
    # an interval that reaches 0 only says no benefit was detected: name what it rules out
    others = "; ".join(f"{o} {v[0]:+.3f} [{v[1][0]:+.3f}, {v[1][1]:+.3f}]" for o, v in table.attrs["last"].items()
                       if o != order)
    return word, (f"At epoch {table.index[-1]}, test accuracy with the {order} curriculum minus {reference} "
                  f"shuffling: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] ({table.attrs['n'][order]} and "
                  f"{table.attrs['n'][reference]} networks; others: {others}). The paper's claim, such a curriculum "
                  f"does not benefit the learning: {word} at this epoch (a gain above {hi:+.3f} is ruled out, "
                  f"one-sided 97.5%; one seed per network, no correction for the other epochs).")


def learning_order(record, split, seed=0):
    """Example indices from the first learned to the last: (n_examples,).

    By accessibility (descending), ties broken by the mean learning epoch over the models that
    end right on the example (ascending), then by how many models never learn it, then at
    random (seeded).  The last is no detail: every example at accessibility 1 (or 0) ties on all
    three, and ordering those by index would pick the first or last few of the dataset's file.
    """
    preds, labels = record.predictions[split], record.labels[split]
    acc = M.accessibility(M.tp_agreement(preds, labels))
    le = M.learning_epoch(preds, labels, record.epochs)
    never = np.isnan(le).sum(0)
    with warnings.catch_warnings():  # examples no model ends right on: mean of nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_le = np.nanmean(le, axis=0)
    mean_le = np.where(np.isnan(mean_le), np.inf, mean_le)
    return np.lexsort((np.random.default_rng(seed).permutation(len(acc)), never, mean_le, -acc))


def first_and_last(record, split, per_class=3, classes=None, seed=0):
    """Per class, the ``per_class`` examples learned first and last (paper Fig 1).

    Returns {class: (first indices, last indices)}, each ordered from the extreme inwards.
    Exact ties (see ``learning_order``) are drawn at random; ``end_pools`` counts them.
    """
    order = learning_order(record, split, seed)
    labels = record.labels[split][order]
    out = {}
    for c in range(record.n_classes) if classes is None else classes:
        idx = order[labels == c]
        out[c] = (idx[:per_class], idx[::-1][:per_class])
    return out


def end_pools(record, split):
    """Per class: its examples, and how many sit at accessibility 1 (every model right at every
    recorded epoch) and at 0 (no model ever right): the tied pools ``first_and_last`` draws the
    first and last learned from when a pool holds more than it shows.  A DataFrame."""
    import pandas as pd
    acc = M.accessibility(record.tp_agreement(split))
    labels = record.labels[split]
    classes = record.meta.get("classes") or [str(c) for c in range(record.n_classes)]
    return pd.DataFrame([{"class": classes[c], "examples": int((labels == c).sum()),
                          "at accessibility 1": int(((labels == c) & (acc == 1)).sum()),
                          "at accessibility 0": int(((labels == c) & (acc == 0)).sum())}
                         for c in range(record.n_classes)]).set_index("class")


def induced_confusion(record, split, epoch_index=-1, threshold=0.5):
    """§7 (Fig 29): where the collection sends the examples it has not learned.

    For each true class: how many examples have TP-agreement below ``threshold`` at the
    epoch, and the label the collection predicts most often for them (the mode over models
    and examples of the wrong predictions) with its share.  A DataFrame, one row per class.
    """
    import pandas as pd
    preds, labels = record.predictions[split][:, epoch_index], record.labels[split]
    tpa = (preds == labels).mean(0)
    classes = record.meta.get("classes") or [str(c) for c in range(record.n_classes)]
    rows = []
    for c in range(record.n_classes):
        hard = (labels == c) & (tpa < threshold)
        wrong = preds[:, hard][preds[:, hard] != c]
        counts = np.bincount(wrong, minlength=record.n_classes) if wrong.size else np.zeros(record.n_classes, int)
        top = int(np.argmax(counts))
        rows.append({"class": classes[c], "examples": int((labels == c).sum()),
                     f"TPa < {threshold:g}": int(hard.sum()),
                     "most predicted instead": classes[top] if wrong.size else "-",
                     "share of their wrong predictions": counts[top] / wrong.size if wrong.size else np.nan})
    return pd.DataFrame(rows).set_index("class")


def largest_rise_share(record, split, low=0.2, high=0.8):
    """§7 (Fig 30): how abruptly examples are learned.

    For the examples whose TP-agreement starts at most ``low`` (first recorded epoch) and ends
    at least ``high`` (last), the share of their total rise taken in their single largest step
    between consecutive recorded epochs: 1 means all models learned it between the same two
    epochs.  Returns the shares, (n_selected_examples,).
    """
    tpa = record.tp_agreement(split)
    rise = tpa[-1] - tpa[0]
    keep = (tpa[0] <= low) & (tpa[-1] >= high)
    if tpa.shape[0] < 2 or not keep.any():
        return np.zeros(0)
    return np.diff(tpa[:, keep], axis=0).max(0) / rise[keep]


def adaboost_stages(x_train, y_train, x_test, y_test, n_learners=100, seed=0, alpha=1.0, normalize="feature"):
    """§6: multi-class AdaBoost (SAMME) with linear weak learners, correctness after every stage.

    x_*: (n, ...) arrays of pixels or features (so a user's own feature extractor plugs in
    here), flattened and standardised: ``normalize="feature"`` standardises every input
    dimension on the training set; ``"image"`` first standardises each channel of each image
    (x_* (n, H, W, C)) to mean 0 and sd 1, as the paper's Suppl F describes, then every input
    dimension as well (the ridge penalty treats all dimensions alike, so their scales matter).  The weak learner is scikit-learn's
    least-squares linear classifier (RidgeClassifier, penalty ``alpha``), which takes sample
    weights.  Returns ``correct`` (n_learners, n_test) bool, ``accuracy`` (n_learners,) and
    ``n_fitted``: boosting stops early when a learner fits the weighted training set perfectly
    (few examples, many features); the ensemble then no longer changes, so its last stage is
    repeated up to n_learners.
    """
    from sklearn.ensemble import AdaBoostClassifier
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler
    if normalize not in ("feature", "image"):
        raise ValueError(f"normalize must be 'feature' or 'image'; got {normalize!r}")

    def flat(x):
        x = np.asarray(x, np.float64)
        if normalize == "image":
            if x.ndim != 4:
                raise ValueError(f"normalize='image' takes (n, H, W, C) images; got shape {x.shape}")
            x = x.reshape(len(x), -1, x.shape[-1])
            x = (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-8)
        return x.reshape(len(x), -1)
    a, b = flat(x_train), flat(x_test)
    scaler = StandardScaler().fit(a)
    boost = AdaBoostClassifier(estimator=RidgeClassifier(alpha=alpha), n_estimators=n_learners, random_state=seed)
    boost.fit(scaler.transform(a), y_train)
    correct = np.stack([p == y_test for p in boost.staged_predict(scaler.transform(b))])
    n_fitted = len(correct)
    correct = np.concatenate([correct, np.repeat(correct[-1:], n_learners - n_fitted, axis=0)])
    return {"correct": correct, "accuracy": correct.mean(1), "n_fitted": n_fitted}


def adaboost_accessibility(correct):
    """AdaBoost's accessibility: each test example's correctness averaged over the stages."""
    return np.asarray(correct, float).mean(0)


def stage_climb(correct, n_boot=S.N_BOOT, level=S.LEVEL, seed=0):
    """Fig 31: does a staged learner's test accuracy climb?  correct: (n_stages, n_examples)
    bool.  Returns ``first``, ``last``, ``best`` (accuracies) and ``gain`` = last - first with
    ``gain_ci``, its bootstrap interval (the same test examples resampled for both stages)."""
    c = np.asarray(correct, float)
    diff = c[-1] - c[0]
    ci = S.mean_ci(diff[None], n_boot=n_boot, level=level, seed=seed)["ci"][0]
    return {"first": c[0].mean(), "last": c[-1].mean(), "best": c.mean(1).max(), "gain": diff.mean(),
            "gain_ci": tuple(map(float, ci))}


def stage_dynamics(correct):
    """How a staged learner's correctness moves, as shares of the examples: right at every
    stage ("always right"), at none ("never right"), wrong then right from one stage on
    ("learned once and kept"), and the rest ("flipping"; right, then wrong again).  Only the
    middle two give an order of learning beyond the final answer.  correct: (stages, n) bool."""
    c = np.asarray(correct, bool)
    always, never = c.all(0), ~c.any(0)
    changes = (c[1:] != c[:-1]).sum(0)
    kept = ~always & ~never & (changes == 1) & c[-1]
    n = c.shape[1]
    return {"always right": always.sum() / n, "never right": never.sum() / n, "learned once and kept": kept.sum() / n,
            "flipping": 1 - (always.sum() + never.sum() + kept.sum()) / n}


def learner_comparison(record, learners, split="test", seed=0):
    """§6 (Fig 11): a network collection's accessibility against other learners' on the same
    examples.  learners: {label: (n_stages, n_examples) bool correctness after every stage}
    (``adaboost_stages``' "correct"); a learner's accessibility is its correctness averaged over
    the stages.  One row per learner: Pearson r and Spearman rho with 95% intervals; the partial
    r with both learners' final correctness taken out (the networks' TP-agreement at the last
    epoch, the learner's last stage), which asks whether they agree on *when* examples are
    learned beyond agreeing on *which* are learned at the end; the networks' noise ceiling
    (the square root of their split-half reliability: a deterministic learner adds no noise of
    its own) and r over it; and how the learner's stages move the examples
    (``stage_dynamics``).  ``attrs["correlations"]``: each learner's ``stats.correlation`` with
    the networks.  A first row "networks, two halves" gives the reference, its partial r
    with each half's final TP-agreement taken out."""
    import pandas as pd
    from .analysis import analyze
    net = M.accessibility(record.tp_agreement(split))
    final = record.tp_agreement(split)[-1]
    ceiling = float(np.sqrt(max(analyze(record, split).reliability, 0)))
    even, odd = half_collections(record)
    acc_h = [M.accessibility(h.tp_agreement(split)) for h in (even, odd)]
    halves = S.correlation(*acc_h, seed=seed)
    hp = S.partial_correlation(*acc_h, np.stack([h.tp_agreement(split)[-1] for h in (even, odd)], 1), seed=seed)
    rows = [{"learner": "networks, two halves", "Pearson r": halves["pearson"],
             "r 95% CI": _ci_text([halves["pearson_ci"]])[0], "Spearman rho": halves["spearman"],
             "rho 95% CI": _ci_text([halves["spearman_ci"]])[0], "partial r (final correctness out)": hp["r"],
             "partial r 95% CI": _ci_text([hp["ci"]])[0]}]
    correlations = {}
    for label, correct in learners.items():
        acc = adaboost_accessibility(correct)
        c = correlations[label] = S.correlation(net, acc, seed=seed)
        pr = S.partial_correlation(net, acc, np.stack([final, np.asarray(correct[-1], float)], 1), seed=seed)
        dyn = stage_dynamics(correct)
        rows.append({"learner": label, **{f"examples {k}": v for k, v in dyn.items()},
                     "Pearson r": c["pearson"], "r 95% CI": _ci_text([c["pearson_ci"]])[0],
                     "Spearman rho": c["spearman"], "rho 95% CI": _ci_text([c["spearman_ci"]])[0],
                     "partial r (final correctness out)": pr["r"], "partial r 95% CI": _ci_text([pr["ci"]])[0],
                     "noise ceiling": ceiling, "r / ceiling": c["pearson"] / ceiling if ceiling > 0 else np.nan,
                     "_ci": c["pearson_ci"]})
    t = pd.DataFrame(rows).set_index("learner")
    t.attrs["ci"] = t.pop("_ci").to_dict()
    t.attrs["ceiling"] = ceiling
    t.attrs["correlations"] = correlations  # the scatters reuse them: no second bootstrap
    return t


def different_order_verdict(table, learner, paper_r, same_r=0.78):
    """("reproduced" | "partly" | "not reproduced", sentence) for §6: another learner orders the
    examples differently from the networks (the paper: r = ``paper_r``).  Read with chapter 4's
    bar: ``same_r`` is the lowest accessibility r the paper reports between two network
    architectures that it calls the same order (Fig 27b).  Reproduced when the whole 95%
    interval of r lies below it, not reproduced when it lies at or above it, partly otherwise;
    the sentence adds r over the networks' noise ceiling, the paper's value and the partial r."""
    row = table.loc[learner]
    lo, hi = table.attrs["ci"][learner]
    word = "reproduced" if hi < same_r else "not reproduced" if lo >= same_r else "partly"
    vs_paper = ("above" if lo > paper_r else "below" if hi < paper_r else "consistent with")
    return word, (f"{learner}: accessibility r with the networks {_r(row['Pearson r'])} [{lo:.2f}, {hi:.2f}], "
                  f"{vs_paper} the paper's {paper_r:g}; {_r(row['r / ceiling'])} of the networks' noise ceiling "
                  f"{_r(table.attrs['ceiling'])}; with both learners' final correctness partialled out "
                  f"{_r(row['partial r (final correctness out)'])} {row['partial r 95% CI']} (two halves of the "
                  f"networks: {_r(table.loc[table.index[0], 'partial r (final correctness out)'])}). The paper's "
                  f"claim, a different order (r below {same_r:g}, the lowest r the paper reports between two "
                  f"network architectures): {word}.")


def half_split_correlation(record, split="test"):
    """Accessibility r (and p) between the even- and the odd-numbered members of one collection:
    the reference for how well two collections of the same learner agree."""
    even, odd = half_collections(record)
    return M.accessibility_correlation(*(M.accessibility(h.tp_agreement(split)) for h in (even, odd)))


def matched_accuracy_table(record_a, record_b, split="test", label_a="A", label_b="B", tolerance=0.01):
    """§4.1 (Fig 8a, 9b): metrics.matched_accuracy_comparison of two records as a table, one
    row per matched pair of epochs: each ensemble's epoch and accuracy, and the numbers of
    examples correct for both, only one, or neither, each with its 95% bootstrap interval
    (resampling examples).  A row whose weaker ensemble is at its last epoch while
    the stronger one is past its accuracy is marked ``past weaker's end``."""
    import pandas as pd
    labels = record_a.labels[split]
    if not np.array_equal(labels, record_b.labels[split]):
        raise ValueError(f"the two records' {split} labels differ: compare collections on the same examples")
    res = S.matched_accuracy_ci(record_a.predictions[split], record_b.predictions[split], labels, tolerance)
    ea, eb = record_a.epochs[res["epoch_index_a"]], record_b.epochs[res["epoch_index_b"]]
    past = np.abs(res["accuracy_a"] - res["accuracy_b"]) > tolerance
    table = pd.DataFrame({
        f"epoch {label_a}": ea, f"accuracy {label_a}": res["accuracy_a"],
        f"epoch {label_b}": eb, f"accuracy {label_b}": res["accuracy_b"],
        "both": res["both"], "both 95% CI": _ci_text(res["both_ci"], 0),
        f"only {label_a}": res["only_a"], f"only {label_a} 95% CI": _ci_text(res["only_a_ci"], 0),
        f"only {label_b}": res["only_b"], f"only {label_b} 95% CI": _ci_text(res["only_b_ci"], 0),
        "neither": res["neither"], "neither 95% CI": _ci_text(res["neither_ci"], 0), "past weaker's end": past,
    })
    # the intervals as numbers, for plots.matched_accuracy (the columns above are for reading)
    table.attrs["labels"] = (label_a, label_b)
    table.attrs["stronger"] = res["stronger"]  # "a" or "b", by the final vote accuracy
    table.attrs["ci"] = {"both": res["both_ci"], f"only {label_a}": res["only_a_ci"],
                         f"only {label_b}": res["only_b_ci"], "neither": res["neither_ci"]}
    return table


def bimodality_over_training(results, split="test"):
    """§4.2 (Fig 9a): observed and null bimodality per recorded epoch for several collections.

    results: [(label, record)].  A long table: collection, epoch, accuracy, bimodality with its
    95% interval (``lo``, ``hi``), null, p, error consistency.
    """
    import pandas as pd
    rows = []
    for label, rec in results:
        a = analyze(rec, split)
        for i, e in enumerate(a.epochs):
            rows.append({"collection": label, "epoch": int(e), "accuracy": a.accuracy_mean[i],
                         "bimodality": a.bimodality[i], "lo": a.bimodality_ci[i, 0], "hi": a.bimodality_ci[i, 1],
                         "null bimodality": a.null_bimodality[i], "p": _p_text(a.p_value[i], a.n_null_draws)[0],
                         "error consistency": a.error_consistency[i]})
    return pd.DataFrame(rows)
