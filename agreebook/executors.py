"""Executors: where a run's jobs train.

* ``in_process`` (the ``local`` executor with one worker): here, on the run's device (a GPU, a stacked engine, small work, or matmul
  nets that use every core anyway), through ``engines.run``.
* ``run_workers`` (the ``local`` executor with more than one worker): CPU worker processes (``python -m agreebook.worker``), one thread each for
  conv and recurrent nets, which scale across processes far better than across intra-op
  threads.  Each rebuilds the run's data from ``config.json`` and trains its share of the jobs
  with the loop engine, printing a line per epoch and per finished job; the driver reads a
  finished job's predictions from its checkpoint.
* ``run_ray`` (``ray``): jobs as Ray tasks with their resource requests, on a local Ray
  instance or an existing cluster (``--ray-address``), the run folder on storage every node
  sees.

An executor decides nothing about what is trained or how a member computes (that is the
driver's plan and the engines'), so a job's record is the same whichever runs it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from . import engines
from .config import ConfigError, TrainConfig
from .io import WorkerError
from .member import Checkpoint, make_jobs
from .prepare import TrainingData, curriculum_scores, prepare_dataset


def in_process(jobs, cfg, ds, out, device, engine, precision, threads, rt, absorb, bar):
    """Train ``jobs`` in this process; returns the largest stack (stacked engine) or None.  The
    loop engine computes on ``threads`` threads (the member's recorded count), the stacked one
    on torch's."""
    saved = torch.get_num_threads()
    if engine != "stacked":
        torch.set_num_threads(threads)
    try:
        data = TrainingData(ds, cfg.arch, device, cfg.embeddings)
        return engines.run(engine, jobs, cfg, data, Path(out) / "checkpoints", device, precision,
                           rt.checkpoint_every_s, on_epoch=lambda: bar.update(1), on_done=absorb, stack=rt.stack)
    finally:
        torch.set_num_threads(saved)


# --- worker processes ----------------------------------------------------------------------------
# Plain subprocesses, not multiprocessing: spawn re-imports the caller's __main__, which breaks
# scripts without a main guard and some notebooks; a worker rebuilds its data from the config.

# glibc keeps freed memory for reuse instead of returning it to the OS and faulting it in
# again; a 1-thread small st-VGG step page-faulted 8-13k times without these, ~150 with them
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
                 "MALLOC_TOP_PAD_": str(256 << 20)}


def train_jobs(out, names, threads, data_root, download, checkpoint_every_s, precision="fp32", engine="loop",
               device="cpu", on_epoch=lambda: None, on_done=lambda job, res: None):
    """Train the jobs of run folder ``out`` named in ``names``, on ``threads`` threads, from
    the data its ``config.json`` describes: what a worker process and a Ray task run."""
    import json
    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(json.loads((Path(out) / "config.json").read_text())["config"])
    ds = prepare_dataset(cfg, data_root, download)
    ds.curriculum = curriculum_scores(cfg, out, ds)
    data = TrainingData(ds, cfg.arch, device, cfg.embeddings)
    jobs = [j for j in make_jobs(cfg) if j.name in set(names)]
    engines.run(engine, jobs, cfg, data, Path(out) / "checkpoints", device, precision, checkpoint_every_s,
                on_epoch, on_done, stack=len(jobs))


def worker_main(out, names, threads, data_root, download, checkpoint_every_s, precision="fp32"):
    """Entry point of ``python -m agreebook.worker``: train the jobs of <out> named in ``names``."""
    parent = os.getppid()

    def tick():
        if os.getppid() != parent:  # the driver was killed: stop, the checkpoints let a rerun resume
            raise SystemExit(3)
        print("epoch", flush=True)

    train_jobs(out, names, threads, data_root, download, checkpoint_every_s, precision, on_epoch=tick,
               on_done=lambda job, res: print("done", job.name, flush=True))


def run_workers(jobs, out, workers, threads, rt, absorb, bar, precision="fp32", lock_fd=None):
    """Train ``jobs`` in ``workers`` processes of ``threads`` threads each; the first failure
    (a worker's, or reading a finished job back) stops them all and is raised here."""
    import subprocess
    import sys
    import threading
    by_name = {j.name: j for j in jobs}
    env = {**WORKER_MALLOC, **os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    # the workers inherit the folder's lock: it holds until the last of them exits, even if the
    # driver is killed (a worker stops at its next epoch; io.FolderLock)
    fds = (lock_fd,) if lock_fd is not None else ()
    procs = [subprocess.Popen([sys.executable, "-m", "agreebook.worker", str(out),
                               ",".join(j.name for j in jobs[w::workers]), str(threads), str(rt.data_root or ""),
                               "1" if rt.download else "0", str(rt.checkpoint_every_s), precision],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, pass_fds=fds)
             for w in range(workers)]
    lock = threading.Lock()
    errors, failures, absorbed = {}, [], set()

    def stop_all():
        for p in procs:
            if p.poll() is None:
                p.kill()

    def pump(p):
        try:
            for line in p.stdout:
                word = line.split()
                with lock:
                    if word[:1] == ["epoch"]:
                        bar.update(1)
                    elif word[:1] == ["done"] and word[1] in by_name:
                        ck = Checkpoint(out / "checkpoints" / f"{word[1]}.pt").load()
                        if ck is None:
                            raise WorkerError(f"job {word[1]} ended, but its checkpoint is gone or damaged; run "
                                              "the same command again to train it anew")
                        absorb(by_name[word[1]], ck["out"])
                        absorbed.add(word[1])
        except BaseException as exc:  # a full disk in absorb's write, a damaged file: stop, report
            failures.append(exc)
            stop_all()

    def drain(p):  # stderr read as it comes: a worker's warnings must not fill the pipe and block it
        errors[p.pid] = p.stderr.read()

    threads_ = [threading.Thread(target=f, args=(p,), daemon=True) for p in procs for f in (pump, drain)]
    try:
        for t in threads_:
            t.start()
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                stop_all()  # one failed: the others' work is checkpointed, a rerun resumes
            time.sleep(0.2)
        for t in threads_:
            t.join()
    finally:
        stop_all()
    if failures:
        raise failures[0]
    failed = [p for p in procs if p.returncode not in (0, -9)] or [p for p in procs if p.returncode != 0]
    if failed:
        err = errors.get(failed[0].pid, "").strip().splitlines()
        if os.environ.get("AGREEBOOK_DEBUG"):
            err = ["\n".join(err)]
        raise WorkerError(f"a training worker failed (exit {failed[0].returncode}): "
                          f"{err[-1] if err else 'no message'}; its checkpoints are kept: run the same command "
                          "again to resume (AGREEBOOK_DEBUG=1 shows the worker's traceback)")
    missing = set(by_name) - absorbed
    if missing:
        raise WorkerError(f"the workers ended without finishing {sorted(missing)}; run the same command again to resume")


# --- Ray ---------------------------------------------------------------------------------------
# Jobs as Ray tasks, on a local instance or an existing cluster.  A task rebuilds the run's data
# from config.json and trains its jobs into the run folder, which every node must see; the
# driver reads each finished job's predictions from its checkpoint, as from a worker's.  A task
# whose node dies is retried elsewhere and resumes from the job's last checkpoint; a killed
# driver takes its tasks with it (Ray ties a task to its owner), and the same command resumes.
RAY_RETRIES = 3  # retries of a task whose node or process died (not of one that raised)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[cluster]' (or pip install 'ray[default]>=2.9')") from None
    return ray


def _ray_task(out, names, threads, data_root, download, checkpoint_every_s, precision, engine, device):
    """Train the named jobs; returns where they ran and the epoch each resumed from (0: fresh)."""
    import ray
    start = {}
    for name in names:
        ck = Checkpoint(Path(out) / "checkpoints" / f"{name}.pt").load()
        start[name] = ck["epoch"] if ck is not None else 0
    train_jobs(out, names, threads, data_root, download, checkpoint_every_s, precision, engine, device)
    return {"node": ray.get_runtime_context().get_node_id(), "resumed_from": start}


def _sees(path, token):
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_shared_folder(ray, out):
    """A ConfigError unless every alive node of the cluster reads the run folder: a probe file
    written here is read back by a task pinned to each node."""
    import uuid
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    token = uuid.uuid4().hex
    probe = Path(out) / f".ray-probe-{token}"
    probe.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        sees = ray.remote(_sees)
        refs = [sees.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe), token) for n in nodes]
        seen = ray.get(refs, timeout=300)
    finally:
        probe.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise ConfigError(f"the run folder {out} is not visible from Ray node(s) {', '.join(blind)}: put it on storage "
                          "every node mounts (NFS, Lustre, a shared volume) and give that path as --out")


def run_ray(jobs, out, device, engine, precision, threads, rt, started, absorb, bar):
    """Train ``jobs`` as Ray tasks: one job a task on the loop engine (``threads`` CPUs each),
    stacks of ``rt.stack`` members (default all) on the stacked engine (one GPU each on CUDA).
    Connects to ``rt.ray_address``, or starts a local instance that it stops at the end.
    Returns {job: {"node": the Ray node that finished it (its ID's first 12 hex digits),
    "resumed_from": the epoch its last attempt started from}} for the record's log."""
    ray = _import_ray()
    out = Path(out).resolve()
    ours = not ray.is_initialized()
    if ours:
        ray.init(address=rt.ray_address or None, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False)
    try:
        check_shared_folder(ray, out)
        gpu = device != "cpu"
        task = ray.remote(_ray_task).options(num_cpus=1 if gpu else threads, num_gpus=1 if gpu else 0,
                                             max_retries=RAY_RETRIES, retry_exceptions=False)
        size = 1 if engine == "loop" else (rt.stack or len(jobs))
        groups = [jobs[a:a + size] for a in range(0, len(jobs), size)]
        pending = {task.remote(str(out), [j.name for j in g], threads, rt.data_root, rt.download,
                               rt.checkpoint_every_s, precision, engine, "cuda" if gpu else "cpu"): g for g in groups}
        where = {}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    group = pending.pop(ref)
                    ran = ray.get(ref)  # a task's error is raised here
                    where.update({name: {"node": ran["node"][:12], "resumed_from": epoch}
                                  for name, epoch in ran["resumed_from"].items()})
                    for job in group:
                        ck = Checkpoint(out / "checkpoints" / f"{job.name}.pt").load()
                        if not Checkpoint.finished(ck, job):
                            raise WorkerError(f"Ray task of {job.name} ended, but its checkpoint is not its last; run "
                                              "the same command again to resume")
                        absorb(job, ck["out"])
                        bar.update(job.total - started.get(job.name, 0))
        except ray.exceptions.RayTaskError as exc:
            raise WorkerError(f"a Ray task failed: {exc.cause if exc.cause else exc}; the checkpoints are kept: run "
                              "the same command again to resume") from None
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return where
    finally:
        if ours:
            ray.shutdown()
