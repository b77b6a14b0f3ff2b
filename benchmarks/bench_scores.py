"""Scores + null on a synthetic record the size of ImageNet: N=100, 7 epochs, 1.33M examples.

usage: python benchmarks/bench_scores.py [--examples 1331167]
Prints the time of each score, then of each statistic of agreebook.stats (bootstrap intervals,
error consistency, reliability, models_needed), then everything ``report`` computes for one
split (analysis.analyze, end to end), and the process's peak memory.
Targets: scores < 10 s; everything report computes, intervals included, < 30 s; < 4 GB.
Then the field's scores (agreebook.scores.scores_table, chapter 8): on the same record
(accessibility, learning epoch, forgetting events), and with ``--outputs`` also on the four
float16 outputs per entry that the probability-based scores read (confidence, variability,
margin, EL2N, AUM).  Those are 4 x 2 bytes per entry, 6.9 GiB at this size, more than the 4 GB
target: the record is saved with them, and a fresh process loads it (its predictions and outputs
mapped from the file, not read: Record.load) and scores it block by block (the outputs read a
block at a time), printing its own peak memory.  The
file was just written, so it is read from the page cache (a cold disk adds its read time).
"""
import argparse
import resource
import time

import numpy as np

from agreebook import metrics as M
from agreebook import stats as S


def synthetic_record(n_models, n_epochs, n_examples, n_classes, seed=0):
    """Examples of graded difficulty; models improve per epoch; errors spread over labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_examples).astype(np.int16)
    ease = rng.random(n_examples, dtype=np.float32)
    preds = np.empty((n_models, n_epochs, n_examples), np.int16)
    for e in range(n_epochs):
        p_correct = np.clip(ease * 0.5 + 0.12 * e, 0, 1)
        for m in range(n_models):
            right = rng.random(n_examples, dtype=np.float32) < p_correct
            preds[m, e] = np.where(right, labels, rng.integers(0, n_classes, n_examples, dtype=np.int16))
    return preds, labels.astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--examples", type=int, default=1_331_167)  # ImageNet-1k's training set
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--outputs", action="store_true",
                    help="also the probability-based scores: writes the record with its outputs (9 GB) to --tmp")
    ap.add_argument("--tmp", default=None, help="folder for that record (default: the system's temporary folder)")
    ap.add_argument("--score-record", default=None, help=argparse.SUPPRESS)  # the fresh process of --outputs
    a = ap.parse_args()
    if a.score_record:
        return score_record(a.score_record)
    preds, labels = synthetic_record(a.models, a.epochs, a.examples, a.classes)
    print(f"record: {preds.shape} int16 = {preds.nbytes / 2**30:.2f} GiB, {a.classes} classes")
    t = {}
    t0 = time.perf_counter()
    acc = M.accuracies(preds, labels); t["accuracies"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tpa = M.tp_agreement(preds, labels); t["tp_agreement"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    agr = M.agreement(preds, labels); t["agreement (as report: labels)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    M.agreement(preds); without = time.perf_counter() - t0  # every example sorted; not in the total
    t0 = time.perf_counter()
    bim = M.bimodality(tpa, axis=1); acs = M.accessibility(tpa); t["bimodality+accessibility"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = M.bimodality_test(tpa, acc, n_draws=2000, seed=0); t["null: exact TPa + p-value"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    null_agr = M.null_agreement(acc, a.classes, n_samples=20000, seed=0); t["null: Agreement simulation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_class = M.bimodality_test(tpa, acc, n_draws=2000, seed=0,
                                 null_pmf=M.null_tp_agreement_by_class(preds, labels))
    t["class null: exact + p-value"] = time.perf_counter() - t0
    total = sum(t.values())
    for k, v in t.items():
        print(f"  {k:<30} {v:7.2f} s")
    peak = peak_gib()
    print(f"total {total:.2f} s (target < 10 s); peak memory {peak:.2f} GiB, record included (target < 4 GB)")
    print(f"  (agreement without labels, every example sorted: {without:.2f} s)")
    print(f"check: bimodality {np.round(bim, 3).tolist()} vs null {np.round(test['null'], 3).tolist()}; "
          f"class null {np.round(by_class['null'], 3).tolist()}; "
          f"mean agreement {agr.mean():.3f} vs null {null_agr.mean():.3f}; accessibility mean {acs.mean():.3f}")

    s = {}
    t0 = time.perf_counter()
    bci = S.bimodality_ci(preds, labels); s["bimodality CI (1000 draws)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    aci = S.mean_ci(agr); s["mean Agreement CI"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ec = S.error_consistency(preds, labels); s["error consistency + CI"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rel = S.split_half_reliability(preds, labels); s["split-half reliability (10)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    need = S.models_needed(preds, labels); s["models_needed"] = time.perf_counter() - t0
    for k, v in s.items():
        print(f"  {k:<30} {v:7.2f} s")
    print(f"statistics {sum(s.values()):.2f} s; check: bimodality CI {np.round(bci['ci'][-1], 3).tolist()}, "
          f"Agreement CI {np.round(aci['ci'][-1], 4).tolist()}, kappa {np.round(ec['estimate'], 3).tolist()}, "
          f"reliability {rel['reliability']:.4f}, 0.95 reached at n = {S.reliability_reached(need)}")
    del tpa, agr
    from agreebook.analysis import analyze
    from agreebook.record import Record
    rec = Record({"train": preds}, {"train": labels}, np.arange(1, a.epochs + 1), meta={"n_classes": a.classes})
    t0 = time.perf_counter()
    analyze(rec, "train")
    whole = time.perf_counter() - t0
    peak = peak_gib()
    print(f"everything report computes (analysis.analyze, one split): {whole:.2f} s (target < 30 s); "
          f"peak memory {peak:.2f} GiB, record included (target < 4 GB)")
    field_scores(rec, a)


def peak_gib():
    """This process's peak resident memory, GiB: VmHWM, which starts afresh in a new program;
    ru_maxrss does not on Linux (it keeps the parent's peak across fork and exec, so the
    scoring process reported the 9.4 GiB its parent held when it started it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed_table(rec):
    """scores_table of the record's train split: (table, seconds, peak GiB of the process)."""
    from agreebook.scores import scores_table
    t0 = time.perf_counter()
    t = scores_table(rec, "train")
    return t, time.perf_counter() - t0, peak_gib()


def field_scores(rec, a):
    """scores_table on the record as it is (prediction-based scores), then on the record with
    the outputs, saved and scored from its file in a fresh process."""
    t, took, peak = _timed_table(rec)
    forgetting = t["forgetting events (median)"]
    print(f"scores_table, prediction-based scores ({t.shape[1]} columns): {took:.2f} s (target < 30 s); peak memory "
          f"{peak:.2f} GiB, record included (target < 4 GB); check: accessibility mean {t['accessibility'].mean():.3f}, "
          f"median forgetting events mean {forgetting[np.isfinite(forgetting)].mean():.3f}")
    if not a.outputs:
        return
    del t
    import gc
    import subprocess
    import sys
    import tempfile
    rec.outputs["train"] = synthetic_outputs(rec)
    held = sum(v.nbytes for v in rec.outputs["train"].values()) / 2**30
    with tempfile.TemporaryDirectory(dir=a.tmp, prefix="bench_scores.") as d:
        t0 = time.perf_counter()
        rec.save(d)
        print(f"record with outputs ({held:.2f} GiB of float16) saved in {time.perf_counter() - t0:.0f} s")
        del rec
        gc.collect()
        subprocess.run([sys.executable, __file__, "--score-record", d], check=True)


def synthetic_outputs(rec):
    """The four float16 outputs per entry, consistent with the predictions: a right model gives
    its label the larger share of probability."""
    rng = np.random.default_rng(1)
    n_models, n_epochs, n = rec.predictions["train"].shape
    outs = {k: np.empty((n_models, n_epochs, n), np.float16) for k in
            ("probability", "other_probability", "error_norm", "logit_margin")}
    for m in range(n_models):
        right = rec.predictions["train"][m] == rec.labels["train"]
        p = np.where(right, 0.5, 0.05) + 0.45 * rng.random((n_epochs, n), dtype=np.float32)
        q = (1 - p) * rng.random((n_epochs, n), dtype=np.float32)
        outs["probability"][m], outs["other_probability"][m] = p, q
        outs["error_norm"][m] = np.sqrt((1 - p) ** 2 + q ** 2)
        outs["logit_margin"][m] = np.log(p) - np.log(q + 1e-6)
    return outs


def score_record(directory):
    """In a fresh process: load a saved record (its outputs mapped, not read) and score it."""
    from agreebook.record import Record
    t0 = time.perf_counter()
    rec = Record.load(directory)
    loaded = time.perf_counter() - t0
    mapped = [k for k, v in {"predictions": rec.predictions["train"], **rec.outputs["train"]}.items()
              if isinstance(v, np.memmap)]
    t, took, peak = _timed_table(rec)
    print(f"Record.load: {loaded:.2f} s (mapped from the file: {', '.join(mapped)})")
    print(f"scores_table, every score ({t.shape[1]} columns, outputs read from the file): {took:.2f} s; "
          f"with the load {loaded + took:.2f} s (target < 30 s); peak memory {peak:.2f} GiB, record included "
          f"(target < 4 GB); check: confidence mean {t['confidence'].mean():.3f}, "
          f"AUM mean {t['area under the margin'].mean():.3f}")


if __name__ == "__main__":
    main()
