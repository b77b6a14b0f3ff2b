"""python -m agreebook {train, report, scores, book}."""
from __future__ import annotations

import argparse
import errno
import json
import sys

from .config import ConfigError, TrainConfig, check_overrides
from .data import DATASETS, DatasetError
from .models import ARCHS, ArchError
from .io import LockedError, WorkerError
from .record import Record, RecordError

USER_ERRORS = (ConfigError, DatasetError, ArchError, RecordError, LockedError, WorkerError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other bad input, with where to look
        self.exit(2, f"agreebook: error: {message} (see: {self.prog} --help)\n")


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _pairs(items, flag, error):
    """["k=v", ...] -> {k: typed v}; anything without "=" is the user's error."""
    out = {}
    for item in items:
        if "=" not in item:
            raise error(f"{flag} takes NAME=VALUE; got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _parser():
    p = _Parser(prog="python -m agreebook",
                                description="Train collections of networks and measure whether they agree.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a collection and write its prediction record")
    d = TrainConfig()
    t.add_argument("--out", required=True, help="folder of the record (resumes if it holds this config)")
    t.add_argument("--dataset", default=d.dataset, help=f"one of: {', '.join(DATASETS)}; or imagefolder:PATH (train/<class>/*, val/<class>/*)")
    t.add_argument("--arch", default=d.arch, help=f"one of: {', '.join(ARCHS)}")
    t.add_argument("--models", type=int, default=d.n_models, help="collection size N")
    t.add_argument("--epochs", default=",".join(map(str, d.epochs)), help="recorded epochs, e.g. 1,2,4,8")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--protocol", default=d.protocol, choices=["trajectory", "retrain"])
    t.add_argument("--random-labels", action="store_true", help="train on seeded random labels")
    t.add_argument("--save-probabilities", action="store_true",
                   help="also keep per-entry probabilities and margins (float16), for `scores`' "
                        "cartography, margin, EL2N and area under the margin")
    t.add_argument("--train-size", type=int, help="stratified subset of the training set")
    t.add_argument("--test-size", type=int, help="stratified subset of the test set")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting of TrainConfig, e.g. --set lr=0.01 --set optimizer=adam")
    t.add_argument("--data-root", help="data folder (default $AGREEBOOK_DATA or ~/.cache/agreebook)")
    t.add_argument("--no-download", action="store_true", help="never let torchvision download")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    t.add_argument("--workers", type=int,
                   help="CPU worker processes (default: one per core for conv nets, else 1)")
    t.add_argument("--engine", default="auto", choices=["auto", "loop", "stacked"],
                   help="loop: members one after another; stacked: members together under vmap "
                        "(auto: stacked on CUDA, loop on a CPU)")
    t.add_argument("--stack", type=int, help="members per stacked group (default: what fits in GPU memory)")
    t.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="bf16: the forward pass in bf16 on fp32 weights, the loss in fp32 "
                        "(auto: bf16 on CUDA, fp32 on a CPU)")
    t.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: this process or worker processes; ray: Ray tasks (pip install -e '.[cluster]')")
    t.add_argument("--ray-address", help="a Ray cluster's address (default: start a local Ray instance)")
    t.add_argument("--ray-gpus-per-group", type=float, default=1.0,
                   help="the share of a GPU each stacked group of --stack members asks of Ray (0.5: two groups a "
                        "GPU; choose --stack so that a group fits its share)")
    t.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                   help="save a member's state after an epoch once this long has passed (0: every epoch)")
    r = sub.add_parser("report", help="summarise a record: accuracy, bimodality and Agreement vs the null")
    r.add_argument("dir", help="the folder given to train --out")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of a table and figures")
    s = sub.add_parser("scores", help="every per-example score of a record (accessibility, forgetting, "
                                      "cartography, margin, EL2N, AUM) as CSV, one row per example")
    s.add_argument("dir", help="the folder given to train --out")
    s.add_argument("--out", help="CSV file to write, gzip-compressed if it ends in .gz (default: DIR/scores.csv)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON to stdout instead")
    b = sub.add_parser("book", help="execute the book's chapters with papermill, then build the HTML")
    b.add_argument("--scale", default="cpu", help="smoke, cpu or paper (agreebook.book.SCALES)")
    b.add_argument("--chapters", type=int, nargs="+", default=None, help="chapter numbers (default: all)")
    b.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                   help="a chapter parameter for every chapter run, e.g. -p dataset=mnist")
    b.add_argument("--no-variants", action="store_true",
                   help="skip the executed copies of a chapter on other datasets (book.VARIANTS)")
    b.add_argument("--no-build", action="store_true", help="execute only; do not build the HTML")
    b.add_argument("--retrain", action="store_true",
                   help="train every record again from scratch into --runs (a new folder by default), not reusing "
                        "the committed book/records, which are left as they are")
    b.add_argument("--runs", default="", help="the records folder the chapters read and train into "
                                              "(default: $AGREEBOOK_RUNS, else the checkout's book/records)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    from .book import BookError
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "book":
            return _book(args)
        if args.command == "scores":
            return _scores(args)
        return _report(args)
    except USER_ERRORS + (BookError,) as exc:
        print(f"agreebook: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder that became read-only...
        where = f"{exc.filename}: " if exc.filename else ""
        advice = {errno.ENOSPC: "free some space", errno.EROFS: "the file system is read-only: use another folder",
                  errno.EACCES: "fix the folder's permissions or use another folder",
                  errno.ENOENT: "check the path"}.get(exc.errno, "fix the cause")
        again = "; then run the same command again (training resumes)" if args.command == "train" else ""
        print(f"agreebook: error: {where}{exc.strerror or exc}; {advice}{again}", file=sys.stderr)
        return 2


def _train(args):
    from .train import Runtime, train_collection
    overrides = _pairs(args.set, "--set", ConfigError)
    cfg = TrainConfig(**check_overrides({
        "dataset": args.dataset, "arch": args.arch, "n_models": args.models, "epochs": args.epochs,
        "seed": args.seed, "protocol": args.protocol, "random_labels": args.random_labels,
        "train_size": args.train_size, "test_size": args.test_size,
        **({"save_probabilities": True} if args.save_probabilities else {}), **overrides}))
    rt = Runtime(device=args.device, workers=args.workers, data_root=args.data_root,
                 download=not args.no_download, checkpoint_every_s=args.checkpoint_every,
                 engine=args.engine, stack=args.stack, precision=args.precision, executor=args.executor,
                 ray_address=args.ray_address, ray_gpus_per_group=args.ray_gpus_per_group)
    rec = train_collection(cfg, args.out, rt)
    print(f"wrote {args.out}/record.npz: {rec}")
    print(f"next: python -m agreebook report {args.out}")
    return 0


def _scores(args):
    """Every labelled split's scores in one table: columns split and its dataset index first."""
    from pathlib import Path
    from .io import atomic_write_csv
    from .scores import record_scores
    rec = Record.load(args.dir)
    t = record_scores(rec)
    if t.attrs["missing"]:
        print(f"agreebook: note: {t.attrs['missing']}", file=sys.stderr)
    if args.json:
        print(t.to_json(orient="records"))
        return 0
    out = Path(args.out or Path(args.dir) / "scores.csv")
    atomic_write_csv(out, t)
    sizes = t.groupby("split", sort=False).size()
    print(f"wrote {out}: {len(t)} rows ({', '.join(f'{s} {n}' for s, n in sizes.items())}), {len(t.columns) - 2} columns")
    return 0


def _report(args):
    import os
    from .report import format_summary, summarize
    rec = Record.load(args.dir)
    if not args.json and not os.access(args.dir, os.W_OK | os.X_OK):
        raise RecordError(f"cannot write the figures into {args.dir}: permission denied; use --json, or copy "
                          "the folder somewhere writable")
    summary = summarize(rec)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(format_summary(rec, summary))
    from .io import remove_stale_temporaries
    from .plots import REPORT_FIGURES, save_report_figures
    remove_stale_temporaries(args.dir, [f"{name}_*.png" for name in REPORT_FIGURES])  # a killed report's
    for path in save_report_figures(rec, args.dir):
        print(f"wrote {path}")
    return 0


def _book(args):
    from .book import CHAPTERS, BookError, run_book
    params = _pairs(args.parameter, "-p", BookError)
    run_book(scale=args.scale, chapters=args.chapters or CHAPTERS, parameters=params,
             build=not args.no_build, variants=not args.no_variants, retrain=args.retrain, runs=args.runs)
    return 0
