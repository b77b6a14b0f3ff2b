"""The driver of a collection: N members, independent seeds, every recorded epoch written down.

``train_collection`` checks the configuration and the run folder (a folder of another
configuration is refused; a killed run resumes from its checkpoints; a finished one returns its
record at once), plans how members compute (device, engine, precision, threads per member,
worker processes), hands the jobs left to an executor, and assembles what they predict into
the record, written as it fills.  The pieces it calls each have one home:

* ``prepare``: the data a configuration trains on (subsets, partitions, random labels).
* ``member``: one member's lifecycle (jobs and seeds, optimiser, schedule, step, prediction,
  ``Checkpoint``).  ``retrain`` (Suppl D): one job per (member, recorded epoch).
* ``engines``: ``loop`` (one member at a time) and ``stacked`` (members under vmap), which
  train jobs and know nothing of processes.  ``auto`` picks stacked on CUDA, loop on a CPU,
  where stacking measured 0.56x the loop (benchmarks/RESULTS.md).  Recurrent nets always loop.
* ``executors``: where jobs run.  On a CPU, convolutional and recurrent jobs run in worker
  processes with one thread each (small conv nets scale across processes far better than
  across intra-op threads); other nets are matmuls that already use every core, so they train
  in-process, where no worker start-up is paid (benchmarks/).

A job checkpoints after an epoch once ``checkpoint_every_s`` has passed since its last one, and
its predictions alone at its end, so a killed run resumes near where it stopped and ends with
the record an uninterrupted run writes.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, executors
from .config import ConfigError, Runtime, TrainConfig, config_diff
from .engines import pick_engine, pick_precision
from .engines.loop import train_member
from .imagefolder import is_imagefolder
from .io import FolderLock, atomic_torch_save, atomic_write_json, remove_stale_temporaries
from .member import OUTPUT_NAMES, Checkpoint, make_jobs, optimizer, recurrent, upgrade_outputs, uses_conv
from .models import build_model, count_parameters, get_arch
from .prepare import TrainingData, curriculum_scores, in_shape, load_vectors, prepare_dataset
from .record import Record, RecordError

__all__ = ["Runtime", "train_collection", "member_model"]

SMALL_WORK = 20000  # example-epochs under which a collection trains in-process
EXECUTORS = ("local", "ray")


def _pick_device(name):
    """The device to train on, from "auto", "cpu", "cuda" or "cuda:N"."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu (device='cpu' from Python)")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                              "device(s), numbered from 0")
    return "cpu" if dev.type == "cpu" else str(dev)


def _versions():
    import torchvision
    return {"agreebook": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _identity(cfg, ds):
    ident = {"config": cfg.to_dict(), "data_fingerprint": ds.fingerprint()}
    revision = get_arch(cfg.arch).revision
    if revision:  # absent at 0, so folders from before revisions existed still match
        ident["arch_revision"] = revision
    return ident


def _check_runtime(rt):
    """Runtime values that cannot run, as one ConfigError, before anything is written."""
    if rt.workers is not None and (isinstance(rt.workers, bool) or not isinstance(rt.workers, int) or rt.workers < 1):
        raise ConfigError(f"workers (--workers) must be a positive integer; got {rt.workers!r}")
    c = rt.checkpoint_every_s
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (c >= 0):  # NaN fails too
        raise ConfigError(f"checkpoint_every_s (--checkpoint-every) must be 0 or a positive number of seconds; got {c!r}")
    pick_engine(rt.engine, "cpu", False, rt.stack)  # names and the stack size, before any download
    if rt.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {rt.executor!r}; use {' or '.join(map(repr, EXECUTORS))}")
    if rt.ray_address and rt.executor != "ray":
        raise ConfigError("ray_address (--ray-address) is for the ray executor: add --executor ray")
    g = rt.ray_gpus_per_group
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 1:  # NaN fails too
        raise ConfigError(f"ray_gpus_per_group (--ray-gpus-per-group) is a share of one GPU in (0, 1]; got {g!r}")
    if g != 1.0 and rt.executor != "ray":
        raise ConfigError("ray_gpus_per_group (--ray-gpus-per-group) is for the ray executor: add --executor ray")
    if rt.workers is not None and rt.executor == "ray":
        raise ConfigError("workers (--workers) are the local executor's processes; with --executor ray the cluster's "
                          "CPUs decide how many members train at once: leave it out")
    if rt.executor == "ray":
        executors._import_ray()  # installed? one line that says how, before anything is written
    pick_precision(rt.precision, "cpu")


def _check_out(out):
    if out is None or str(out).strip() == "":
        raise ConfigError("the output folder (--out) is empty; give a folder for the record, e.g. runs/digits")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output folder (--out) {out} is an existing file; give a folder")
    return out


def _read_identity(path):
    import json
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict) or "config" not in old:
            raise ValueError("no 'config' key")
        return old
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} is corrupted ({exc}); delete the folder {path.parent} to train again") from None


def _member_threads(serial, conv, device, workers=None, n_jobs=1):
    """Threads each member computes with.  A member's float arithmetic depends on its thread
    count, so it must not depend on how many members share the machine: conv and recurrent
    members always compute on one thread (in worker processes, one per core, or in-process
    for small work); other nets (matmuls that use every core) take the cores a worker gets at
    the run folder's first start, and every resume reuses that number (config.json)."""
    if device != "cpu":
        return torch.get_num_threads()
    if serial or conv:
        return 1
    cores = os.cpu_count() or 1
    return max(1, cores // min(workers or 1, n_jobs, cores))


def train_collection(cfg: TrainConfig, out, runtime: Runtime | None = None) -> Record:
    """Train cfg.n_models members and write their predictions to ``<out>/record.npz``.

    Re-running the same call on the same ``out`` resumes a killed run, or returns the finished
    record at once; a different configuration on an existing ``out`` is refused.  Every value
    is checked before anything is written; a second training into the same folder while one
    runs is refused (a lock on the folder).
    """
    rt = runtime or Runtime()
    _check_runtime(rt)
    cfg = cfg.validate().resolved()
    out = _check_out(out)
    device = _pick_device(rt.device)
    ds = prepare_dataset(cfg, rt.data_root, rt.download)
    if cfg.embeddings:  # its words must meet the vocabulary: checked now, not after writing
        load_vectors(cfg.embeddings, ds.vocabulary)
    with torch.device("meta"):  # its structure and size only: no init, no memory
        sample = build_model(cfg.arch, in_shape(ds, cfg.embeddings), ds.n_classes, cfg.activation, cfg.dropout)
        try:  # the optimiser checks its own values (e.g. Adam's betas): fail before writing
            optimizer(cfg, sample.parameters())
        except ValueError as exc:
            raise ConfigError(f"the optimiser refuses this configuration: {exc}") from None
    # a recurrent net is a chain of small matmuls: a second thread costs more in synchronisation
    # than it gains (an LSTM epoch measured 1.7 s on 1 thread, far slower on 2 under load)
    serial = recurrent(sample)
    engine = pick_engine(rt.engine, device, serial, rt.stack)
    if cfg.curriculum is not None or is_imagefolder(cfg.dataset):
        if engine == "stacked" and rt.engine == "stacked":
            raise ConfigError(f"{'a curriculum' if cfg.curriculum is not None else 'an image folder'} runs on the loop "
                              "engine; use engine 'loop' or 'auto'")
        engine = "loop"
    ds.curriculum = curriculum_scores(cfg, out, ds)  # checked before anything is written
    precision = pick_precision(rt.precision, device)
    ident = _identity(cfg, ds)
    ident_path = out / "config.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in the output folder {out}: permission denied; choose another --out")
    with FolderLock(out) as lock:
        return _train_locked(cfg, out, rt, device, ds, sample, serial, engine, precision, ident, ident_path, lock)


def _train_locked(cfg, out, rt, device, ds, sample, serial, engine, precision, ident, ident_path, lock):
    old = _read_identity(ident_path) if ident_path.exists() else None
    try:
        prev = Record.load(out) if (out / "record.npz").exists() else None  # read once: it can be large
    except RecordError as exc:
        raise RecordError(f"{exc}; delete the folder {out} to train again") from None
    if old is not None and prev is None and not any((out / "checkpoints").glob("*.pt")):
        old = None  # a start that failed before training anything: the corrected command starts afresh
    if old is None and prev is not None:  # a folder from before config.json kept these
        old = {"config": prev.meta.get("config"), "data_fingerprint": prev.meta.get("data_fingerprint"),
               "arch_revision": prev.meta.get("arch_revision"),
               "threads_per_member": prev.meta.get("threads_per_member") or prev.meta.get("threads_per_worker"),
               "runs": prev.meta.get("runs", [])}
    if old is not None:
        if {k: old.get(k) for k in ident} != ident:
            diff = config_diff(old["config"] if isinstance(old["config"], dict) else {}, ident["config"])
            if old.get("data_fingerprint") != ident["data_fingerprint"]:
                diff.append("data: the dataset's arrays differ (fingerprint)")
            if old.get("arch_revision") != ident.get("arch_revision"):
                diff.append(f"architecture: {cfg.arch} was trained here as revision {old.get('arch_revision') or 0} "
                            f"of its network; it is now revision {ident.get('arch_revision') or 0} (models.ARCHS)")
            raise RecordError(f"{out} holds a record of another configuration:\n  " + "\n  ".join(diff) +
                              "\nUse another output folder, or delete this one to start over.")
        if prev is not None and prev.is_complete:
            return prev
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    remove_stale_temporaries(out)  # writes a kill cut short (io._atomic)
    remove_stale_temporaries(ckpt_dir)

    jobs = make_jobs(cfg)
    n_ep = len(cfg.epochs)
    labels = {"train": ds.y_train, "test": ds.y_test,
              **({"heldout": ds.heldout[1]} if ds.heldout is not None else {}),
              **{s: np.full(len(x), -1, np.int64) for s, x in ds.ood.items()}}
    preds = {s: np.full((cfg.n_models, n_ep, len(y)), -1, np.int16) for s, y in labels.items()}
    # the outputs only where they are kept (save_probabilities): four more arrays of the
    # predictions' size, which a 100-model ImageNet collection would feel
    outputs = ({s: {k: np.full(p.shape, np.nan, np.float16) for k in OUTPUT_NAMES} for s, p in preds.items()}
               if cfg.save_probabilities else None)
    complete = np.zeros((cfg.n_models, n_ep), bool)
    finished, started = {}, {}  # a killed run's checkpoints: finished jobs' predictions, the rest's epoch
    for job in jobs:
        ck = Checkpoint(ckpt_dir / f"{job.name}.pt").load(map_location="cpu", mmap=True)  # weights not read here
        if Checkpoint.finished(ck, job):
            finished[job.name] = upgrade_outputs(ck["out"], cfg.save_probabilities)
        elif ck is not None:
            started[job.name] = ck["epoch"]
    todo = [j for j in jobs if j.name not in finished]
    cores = os.cpu_count() or 1
    epochs_left = sum(j.total - started.get(j.name, 0) for j in todo)
    # worker start-up (~2 s: torch import, data) only pays off on enough work; the thread count
    # of a member is fixed by the run's first start (its numbers depend on it)
    conv = uses_conv(sample)
    stored = (old or {}).get("threads_per_member")
    stored = stored if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0 else None
    threads = _member_threads(serial, conv, device, rt.workers, len(jobs))
    if device == "cpu" and not (serial or conv) and stored:
        threads = stored  # fixed at the folder's first start (_member_threads)
    if engine == "stacked":  # one process, every member at once: torch's threads (records not comparable to the loop's)
        threads = torch.get_num_threads()
    default_workers = cores if (conv or serial) and len(ds.y_train) * epochs_left >= SMALL_WORK else 1
    workers = (1 if device != "cpu" or engine == "stacked" or rt.executor == "ray"
               else max(1, min(rt.workers or default_workers, len(todo), cores)))
    invocation = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device, "engine": engine,
                  "precision": precision, "workers": workers, "epochs_left": epochs_left,
                  **({"executor": "ray"} if rt.executor == "ray" else {})}
    runs = [r for r in (old or {}).get("runs", []) if isinstance(r, dict)] + [invocation]
    atomic_write_json(ident_path, {**ident, "threads_per_member": threads, "runs": runs})
    engines = sorted({r["engine"] for r in runs})
    meta = {"dataset": cfg.dataset, "arch": cfg.arch, "arch_description": get_arch(cfg.arch).description,
            "n_models": cfg.n_models, "protocol": cfg.protocol, "classes": list(ds.classes),
            "n_classes": ds.n_classes, "data_source": ds.source, "data_fingerprint": ident["data_fingerprint"],
            "subset": ds.subset, "config": cfg.to_dict(), "member_seeds": [j.seed for j in jobs],
            "n_parameters": count_parameters(sample), "device": device,
            "engine": engines[0] if len(engines) == 1 else "+".join(engines),
            "precision": "+".join(sorted({r["precision"] for r in runs})),
            "threads_per_member": threads, "runs": runs, "versions": _versions(), "started": runs[0]["started"],
            **({"arch_revision": ident["arch_revision"]} if "arch_revision" in ident else {})}
    t0 = time.perf_counter()
    last_write = [t0]

    def absorb(job, res):
        res = upgrade_outputs(res, cfg.save_probabilities)  # a worker's checkpoint may predate this version
        for row, (_, i) in enumerate(job.record_at):
            for s in preds:
                preds[s][job.member, i] = res[s]["pred"][row]
                for k in OUTPUT_NAMES if outputs is not None else ():
                    outputs[s][k][job.member, i] = res[s][k][row]
            complete[job.member, i] = True
        if time.perf_counter() - last_write[0] > 30:
            write()
            last_write[0] = time.perf_counter()

    def write():
        meta["wall_time_s"] = round(wall_before + time.perf_counter() - t0, 2)
        Record(preds, labels, cfg.epochs, meta=meta,
               outputs=outputs, complete=complete).save(out)

    # a resumed run adds its time to the killed run's
    wall_before = prev.meta.get("wall_time_s", 0) if prev is not None else 0
    for job in jobs:
        if job.name in finished:
            absorb(job, finished.pop(job.name))
    all_epochs = sum(j.total for j in jobs)
    from tqdm import tqdm  # tqdm.auto warns in kernels without ipywidgets
    bar = tqdm(total=all_epochs, initial=all_epochs - epochs_left, unit="epoch", disable=not rt.progress,
               desc=f"{cfg.dataset}/{cfg.arch} x{cfg.n_models}")
    try:
        if rt.executor == "ray":
            if todo:  # which node finished each job, and from which epoch its last attempt started
                invocation["ray_jobs"] = executors.run_ray(todo, out, device, engine, precision, threads, rt,
                                                           started, absorb, bar)
                atomic_write_json(ident_path, {**ident, "threads_per_member": threads, "runs": runs})
        elif workers == 1:  # the stacked engine on torch's threads, as recorded
            stack = executors.in_process(todo, cfg, ds, out, device, engine, precision, threads, rt, absorb, bar)
            if stack is not None:
                meta["stack"] = stack
        else:
            executors.run_workers(todo, out, workers, threads, rt, absorb, bar, precision, lock.fd)
    finally:
        bar.close()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write()
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return Record.load(out)


def member_model(cfg: TrainConfig, out, member=0, runtime: Runtime | None = None):
    """A trained network of a collection's configuration: member ``member``'s seeds, trained
    in-process to the last recorded epoch (chapter 6 takes its features).

    The collection keeps only predictions, so the net is trained again with the same seeds,
    thread count and precision as the record says its members had, and its weights are kept in
    ``<out>/models/m<member>.pt`` for the next call.  Returns (model in eval mode, the
    TrainingData it was trained on).
    """
    rt = runtime or Runtime()
    cfg = cfg.validate().resolved()
    if cfg.protocol != "trajectory":
        raise ConfigError("member_model needs the trajectory protocol")
    if not 0 <= member < cfg.n_models:
        raise ConfigError(f"member must be in [0, {cfg.n_models}); got {member}")
    device = _pick_device(rt.device)
    recorded = _recorded_run(out)
    precision = recorded.get("precision") if recorded.get("precision") in ("fp32", "bf16") else \
        pick_precision(rt.precision, device)
    ds = prepare_dataset(cfg, rt.data_root, rt.download)
    ds.curriculum = curriculum_scores(cfg, out, ds)
    with torch.device("meta"):
        sample = build_model(cfg.arch, in_shape(ds, cfg.embeddings), ds.n_classes, cfg.activation, cfg.dropout)
    saved = torch.get_num_threads()
    threads = recorded.get("threads_per_member")
    if not (isinstance(threads, int) and threads > 0):  # an old record: the rule of _member_threads
        threads = 1 if device == "cpu" and (uses_conv(sample) or recurrent(sample)) else saved
    torch.set_num_threads(threads)
    try:
        data = TrainingData(ds, cfg.arch, device, cfg.embeddings)
        return _member_model(cfg, out, member, device, data, precision)
    finally:
        torch.set_num_threads(saved)


def _member_model(cfg, out, member, device, data, precision):
    job = make_jobs(cfg)[member]
    path = Path(out) / "models" / f"{job.name}.pt"
    model = None
    if path.exists():
        torch.manual_seed(job.seed)
        model = build_model(cfg.arch, data.in_shape, data.n_classes, cfg.activation, cfg.dropout).to(device)
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
        except (RuntimeError, EOFError, ValueError) as exc:  # damaged bytes: train it again
            import sys
            print(f"agreebook: {path} is damaged ({type(exc).__name__}); training member {member} again",
                  file=sys.stderr)
            model = None
    if model is None:
        import tempfile
        keep = {}
        with tempfile.TemporaryDirectory() as tmp:  # the collection's threads and precision (member_model)
            train_member(job, cfg, data, Checkpoint(Path(tmp) / "ck.pt"), device, checkpoint_every_s=float("inf"),
                         keep=keep, precision=precision)
        model = keep["model"]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(path, model.state_dict())
    return model.eval(), data


def _recorded_run(out):
    """What a collection's record.json says of how its members computed ({} if nothing)."""
    import json
    path = Path(out) / "record.json"
    try:
        meta = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


