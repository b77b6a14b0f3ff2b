"""One analysis per (record, split), computed once: the paper's scores, their nulls, tests and
intervals as arrays.  ``report`` serialises it, the book's tables and verdicts read it.

``analyze(record, split)`` caches its result on the record object (records are not changed
after they are built), so a chapter that asks three tables of one collection pays once.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, fields

import numpy as np

from . import metrics as M
from . import stats as S

N_NULL_DRAWS = 2000  # Monte Carlo draws of the bimodality test's null (p >= 1/2001)
N_NULL_AGREEMENT = 20000  # simulated examples of Agreement's null
ALPHA = 0.01  # the verdicts' significance level
RELIABILITY_TARGET = 0.95  # "accessibility reliability 0.95 reached at n = ..."


@dataclass(frozen=True)
class SplitAnalysis:
    """Everything ``report`` says about one split of a record; arrays over recorded epochs (E,)
    unless noted.  Intervals are (E, 2) [lo, hi] at ``level``, resampling ``resampled``."""
    split: str
    epochs: np.ndarray
    n_models: int
    n_examples: int
    accuracy: np.ndarray  # (n_models, E)
    tp_agreement_mean: np.ndarray
    tp_agreement_hist: np.ndarray  # (E, n_models + 1) examples at each TP-agreement k / n_models
    null_pmf: np.ndarray  # (E, n_models + 1) the exact matched-accuracy null
    bimodality: np.ndarray
    bimodality_ci: np.ndarray
    null_bimodality: np.ndarray
    p_value: np.ndarray  # P(null sample <= observed), Monte Carlo with n_null_draws draws
    class_null_bimodality: np.ndarray
    class_p_value: np.ndarray
    agreement: np.ndarray  # mean Agreement over examples
    agreement_ci: np.ndarray
    null_agreement: np.ndarray  # its mean under the null (simulated, N_NULL_AGREEMENT examples)
    agreement_hist: np.ndarray  # (E, n_models + 1) fraction of examples at Agreement k / n_models
    null_agreement_hist: np.ndarray  # (E, n_models + 1) the same under the null
    error_consistency: np.ndarray
    error_consistency_ci: np.ndarray  # NaN where too few shared errors are expected (stats)
    reliability: float  # split-half reliability of accessibility, Spearman-Brown corrected to N
    reliability_sd: float  # over the random splits
    needed_sizes: np.ndarray  # (k,) subset sizes n of models_needed
    needed_reliability: np.ndarray  # (k,)
    needed_reliability_range: np.ndarray  # (k, 2) smallest and largest over random subsets
    needed_bimodality: np.ndarray  # (k, E)
    needed_null_bimodality: np.ndarray  # (k, E) the matched-accuracy null of the same subsets
    needed_bimodality_ci: np.ndarray  # (k, E, 2) bootstrap interval of needed_bimodality (examples resampled)
    needed_bimodality_range: np.ndarray  # (k, E, 2) smallest and largest over random subsets
    reliability_reached_at: int | None  # smallest n whose reliability reaches RELIABILITY_TARGET
    level: float = S.LEVEL
    n_boot: int = S.N_BOOT
    n_null_draws: int = N_NULL_DRAWS
    resampled: str = "examples"
    seed: int = 0
    caption: str = ""  # what a figure's title says about the record (``caption``)

    @property
    def accuracy_mean(self):
        return self.accuracy.mean(0)

    @property
    def accuracy_sd(self):
        return self.accuracy.std(0)

    @property
    def p_value_method(self):
        return (f"Monte Carlo, {self.n_null_draws} draws of the exact null (the smallest p it gives, 1/{self.n_null_draws + 1}, "
                f"means no draw was as low: p <= {S.p_floor(self.n_null_draws):.2g})")

    @property
    def most_bimodal(self):
        """Index of the recorded epoch with the lowest bimodality (0 when none is defined)."""
        return int(np.nanargmin(self.bimodality)) if np.isfinite(self.bimodality).any() else 0

    def significant(self, alpha=ALPHA, null="accuracy"):
        """Epochs whose TP-agreement is more bimodal than the null at level alpha: (E,) bool."""
        b, p = ((self.null_bimodality, self.p_value) if null == "accuracy"
                else (self.class_null_bimodality, self.class_p_value))
        with np.errstate(invalid="ignore"):
            return (p < alpha) & (self.bimodality < b)

    def to_json(self):
        """Plain JSON types, rounded to 6 digits, None where a score is undefined."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("tp_agreement_hist", "null_pmf", "agreement_hist", "null_agreement_hist"):
                continue
            out[f.name] = _plain(v.T if f.name == "accuracy" else v)
        out.update(accuracy_mean=_plain(self.accuracy_mean), accuracy_sd=_plain(self.accuracy_sd),
                   p_value_method=self.p_value_method,
                   ci_method=f"percentile bootstrap, {self.n_boot} draws resampling {self.resampled} "
                             f"(models held fixed), level {self.level}")
        return out


def _epochs_text(epochs):
    e = [int(x) for x in epochs]
    if len(e) > 2 and e == list(range(e[0], e[-1] + 1)):
        return f"epochs {e[0]}-{e[-1]}"
    return "epochs " + ",".join(str(x) for x in e)


def _caption_parts(record, split=None, scale=None):
    """(dataset, [architecture, N, epochs], [split (examples), scale]) of a title."""
    m = record.meta
    dataset = m.get("dataset", "?") + (" (random labels)" if (m.get("config") or {}).get("random_labels") else "")
    where = []
    if split:
        where.append(f"{split} ({record.predictions[split].shape[2]} examples)")
    if scale or m.get("scale"):
        where.append(f"scale {scale or m.get('scale')}")
    return dataset, [f"{m.get('arch', '?')}", f"N={record.n_models}", _epochs_text(record.epochs)], where


def caption(record, split=None, scale=None):
    """dataset, architecture, N, recorded epochs, split (examples) and scale, for a title."""
    dataset, model, where = _caption_parts(record, split, scale)
    return ", ".join([dataset, *model, *where])


def pair_caption(a, b, split=None, scale=None):
    """``caption`` for two collections on the same data: each one's architecture, N and
    recorded epochs, once the dataset, split and scale."""
    dataset, ma, where = _caption_parts(a, split, scale)
    mb = _caption_parts(b)[1]
    return ", ".join([dataset, f"{ma[0]} ({', '.join(ma[1:])}) vs {mb[0]} ({', '.join(mb[1:])})", *where])


def _plain(v):
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "iub":
            return v.tolist()
        return [_plain(x) for x in v] if v.ndim > 0 else _plain(v.item())
    if isinstance(v, (float, np.floating)):
        return round(float(v), 6) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def analyze(record, split, seed=0, n_boot=S.N_BOOT, level=S.LEVEL, models_needed=True):
    """The analysis of ``record``'s labelled ``split``, computed once per record and arguments."""
    if split not in record.labelled_splits:
        raise ValueError(f"{split!r} is not a labelled split of this record; it has {list(record.labelled_splits)}")
    key = (split, seed, n_boot, level, models_needed)
    per_record = _CACHE.setdefault(record, {})
    if key not in per_record:
        per_record[key] = _analyze(record, split, seed, n_boot, level, models_needed)
    return per_record[key]


def shares(values, n_models):
    """(E, n) values k / n_models -> (E, n_models + 1) the fraction of examples at each k."""
    k = np.rint(np.asarray(values) * n_models).astype(np.int64)
    return np.stack([np.bincount(row, minlength=n_models + 1) / len(row) for row in k])


def _analyze(record, split, seed, n_boot, level, models_needed):
    preds, labels = record.predictions[split], record.labels[split]
    n_models, n_epochs, n = preds.shape
    acc = M.accuracies(preds, labels)
    counts = M.correct_counts(preds, labels)
    tpa = counts / n_models
    hist = M.tp_agreement_histogram(tpa, n_models)
    pmf = M.null_tp_agreement(acc)
    test = M.bimodality_test(tpa, acc, n_draws=N_NULL_DRAWS, seed=seed, null_pmf=pmf)
    by_class = M.bimodality_test(tpa, acc, n_draws=N_NULL_DRAWS, seed=seed,
                                 null_pmf=M.null_tp_agreement_by_class(preds, labels))
    bim = S.bimodality_ci(preds, labels, n_boot, level, seed, counts=counts)
    agreement = M.agreement(preds, labels, counts)
    agree = S.mean_ci(agreement, n_boot, level, seed)
    null_agree = M.null_agreement(acc, record.n_classes, N_NULL_AGREEMENT, seed)
    kappa = S.error_consistency(preds, labels, n_boot, level, seed)
    rel = S.split_half_reliability(preds, labels, seed=seed)
    if models_needed:
        need = S.models_needed(preds, labels, seed=seed, n_boot=n_boot, level=level)
    else:
        need = {"sizes": np.zeros(0, int), "reliability": np.zeros(0), "reliability_range": np.zeros((0, 2)),
                "bimodality": np.zeros((0, n_epochs)), "null_bimodality": np.zeros((0, n_epochs)),
                "bimodality_ci": np.zeros((0, n_epochs, 2)), "bimodality_range": np.zeros((0, n_epochs, 2))}
    return SplitAnalysis(
        split=split, epochs=record.epochs.copy(), n_models=n_models, n_examples=n, accuracy=acc,
        tp_agreement_mean=tpa.mean(1), tp_agreement_hist=hist, null_pmf=pmf,
        bimodality=test["observed"], bimodality_ci=bim["ci"], null_bimodality=test["null"],
        p_value=test["p_value"], class_null_bimodality=by_class["null"], class_p_value=by_class["p_value"],
        agreement=agree["estimate"], agreement_ci=agree["ci"],
        null_agreement=null_agree.mean(1), agreement_hist=shares(agreement, n_models),
        null_agreement_hist=shares(null_agree, n_models),
        error_consistency=kappa["estimate"], error_consistency_ci=kappa["ci"],
        reliability=rel["reliability"], reliability_sd=rel["sd"],
        needed_sizes=need["sizes"], needed_reliability=need["reliability"],
        needed_reliability_range=need["reliability_range"],
        needed_bimodality=need["bimodality"], needed_null_bimodality=need["null_bimodality"],
        needed_bimodality_ci=need["bimodality_ci"], needed_bimodality_range=need["bimodality_range"],
        reliability_reached_at=S.reliability_reached(need, RELIABILITY_TARGET) if models_needed else None,
        level=level, n_boot=n_boot, seed=seed, caption=caption(record, split))
