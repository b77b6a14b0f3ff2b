"""What the `cpu` book costs to train on this machine, re-timed with nothing else running.

usage: python benchmarks/book_budget.py --data-root DIR [--repeats 1] [--only SUBSTRING] [--check NAME ...]

The records' own `wall_time_s` is what each took when it was trained, often beside another
job on the same 2 cores. This script re-times every record the committed pages link
(`book.page_records`): for each distinct training setting (the record's config without its N,
recorded epochs, seed, curriculum and protocol, which do not change the cost of one member-epoch
beyond what the model below counts) it trains 2 members for epochs (1,), (K,) and (1, ..., K)
(K = 4) in a temporary folder and solves

    t(1,)        = S + 2 (train + eval)        S: start-up, data, record
    t(K,)        = S + 2 (K train + eval)      train: one epoch of one member
    t(1, ..., K) = S + 2 (K train + K eval)    eval: one recorded point of one member

then predicts each record as S + N (E train + R eval), with E its last epoch (the trajectory
protocol) or the sum of its epochs (retrain), R its number of recorded epochs. A curriculum
trains on a growing part of the set early on, so its prediction is an upper bound.
Prints one row per record (as trained, re-timed), then the minutes of each page, a record
counted on the first page that reads it, and the book's total.  ``--check NAME`` then trains
record NAME again in full, alone, and prints its time beside both, and whether its predictions
equal the committed record's: a test of the model above and of the record's reproducibility.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agreebook import book
from agreebook.config import TrainConfig
from agreebook.train import Runtime, train_collection

FREE = ("n_models", "epochs", "seed", "curriculum", "curriculum_from", "curriculum_start", "curriculum_ramp",
        "protocol")
K = 4  # the differences span K - 1 epochs: one epoch of a small set is within the start-up's noise


def timed(cfg, rt, repeats):
    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            train_collection(cfg, Path(d) / "run", rt)
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", default="", help="re-time only records whose name contains this")
    ap.add_argument("--check", nargs="*", default=[], help="records to train again in full, to test the model")
    args = ap.parse_args()
    rt = Runtime(device="cpu", data_root=args.data_root, progress=False)
    records = Path(book.BOOK) / "records"
    pages = book.page_records()
    order = [f"chapter{n}" for n in book.CHAPTERS]
    for n, variants in book.VARIANTS.items():
        order[order.index(f"chapter{n}") + 1:order.index(f"chapter{n}") + 1] = list(variants)
    first = {}
    for page in order:
        for path in sorted(pages.get(page, ())):
            first.setdefault(path.split("/")[0], page)
    costs = {}  # setting -> (S, train, eval) in seconds
    rows = []
    for name, page in first.items():
        if args.only not in name or not (records / name / "record.json").is_file():
            continue  # weights only (chapter 6's feature net): trained with its record's setting
        meta = json.loads((records / name / "record.json").read_text())
        cfg = dict(meta["config"])
        key = json.dumps({k: v for k, v in cfg.items() if k not in FREE}, sort_keys=True)
        if key not in costs:
            base = TrainConfig.from_dict({**cfg, "curriculum": None, "curriculum_from": None, "protocol": "trajectory",
                                          "n_models": 2})
            a, b, c = (timed(base.replace(epochs=ep), rt, args.repeats) for ep in ((1,), (K,), tuple(range(1, K + 1))))
            train, ev = max(b - a, 0) / (2 * (K - 1)), max(c - b, 0) / (2 * (K - 1))
            costs[key] = (max(a - 2 * (train + ev), 0), train, ev)
            print(f"  setting of {name}: start-up {costs[key][0]:.1f} s, member-epoch {train:.2f} s, "
                  f"recorded point {ev:.2f} s", file=sys.stderr, flush=True)
        s, train, ev = costs[key]
        ep = meta["epochs"]
        e = sum(ep) if meta.get("protocol") == "retrain" else max(ep)
        rows.append((page, name, meta["wall_time_s"] / 60, (s + meta["n_models"] * (e * train + len(ep) * ev)) / 60))
    print(f"{'page':30s} {'record':50s} {'as trained':>10s} {'re-timed':>9s}  (minutes)")
    for page, name, was, now in rows:
        print(f"{page:30s} {name:50s} {was:10.1f} {now:9.1f}")
    print()
    for page in order:
        sel = [r for r in rows if r[0] == page]
        if sel:
            print(f"{page:30s} {len(sel):3d} records  as trained {sum(r[2] for r in sel):6.1f}  "
                  f"re-timed {sum(r[3] for r in sel):6.1f} min")
    print(f"{'the book':30s} {len(rows):3d} records  as trained {sum(r[2] for r in rows) / 60:6.2f}  "
          f"re-timed {sum(r[3] for r in rows) / 60:6.2f} h")
    import numpy as np
    from agreebook.record import Record
    for name in args.check:
        row = next(r for r in rows if r[1] == name)
        meta = json.loads((records / name / "record.json").read_text())
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            rec = train_collection(TrainConfig.from_dict(meta["config"]), Path(d) / "run", rt)
            took = (time.perf_counter() - t0) / 60
        old = Record.load(records / name)
        equal = np.mean([np.mean(rec.predictions[s] == old.predictions[s]) for s in old.splits])
        acc = lambda r: np.asarray(r.tp_agreement("test")).mean(0)  # noqa: E731  accessibility
        print(f"check {name}: trained alone in {took:.1f} min; re-timed {row[3]:.1f}, as trained {row[2]:.1f}; "
              f"{equal:.2%} of the predictions equal the committed record's (threads per member "
              f"{rec.meta.get('threads_per_member')} vs {old.meta.get('threads_per_member')}, torch "
              f"{rec.meta['versions'].get('torch')} vs {old.meta['versions'].get('torch')}); test accessibility r "
              f"{np.corrcoef(acc(rec), acc(old))[0, 1]:.4f}")


if __name__ == "__main__":
    main()
