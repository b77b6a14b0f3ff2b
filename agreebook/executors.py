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
               device="cpu", on_epoch=lambda: None, on_done=lambda job, res: None, stack=None):
    """Train the jobs of run folder ``out`` named in ``names``, on ``threads`` threads, from
    the data its ``config.json`` describes (checked against its fingerprint): what a worker
    process and a Ray task run.  stack: the stacked engine's group size (None: what fits)."""
    import json
    torch.set_num_threads(threads)
    ident = json.loads((Path(out) / "config.json").read_text())
    cfg = TrainConfig.from_dict(ident["config"])
    ds = prepare_dataset(cfg, data_root, download)
    if ds.fingerprint() != ident["data_fingerprint"]:  # another copy of the data on this node
        raise WorkerError(f"the data this process loaded from {data_root or 'its default data folder'} differs from "
                          f"the run's (data fingerprint): give every node the same copy of {cfg.dataset}")
    ds.curriculum = curriculum_scores(cfg, out, ds)
    data = TrainingData(ds, cfg.arch, device, cfg.embeddings)
    jobs = [j for j in make_jobs(cfg) if j.name in set(names)]
    engines.run(engine, jobs, cfg, data, Path(out) / "checkpoints", device, precision, checkpoint_every_s,
                on_epoch, on_done, stack=stack)


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
                        job = by_name[word[1]]
                        absorb(job, Checkpoint(out / "checkpoints" / f"{job.name}.pt").finished_outputs(job))
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


def _ray_task(out, names, threads, data_root, download, checkpoint_every_s, precision, engine, device, stack):
    """Train the named jobs; returns where they ran and the epoch each resumed from (0: fresh)."""
    import ray
    start = {name: Checkpoint(Path(out) / "checkpoints" / f"{name}.pt").epoch() for name in names}
    train_jobs(out, names, threads, data_root, download, checkpoint_every_s, precision, engine, device, stack=stack)
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
        try:
            seen = ray.get(refs, timeout=300)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError("the Ray cluster did not run a one-line task on every node within 300 s: check that "
                              "its nodes are up (ray status)") from None
    finally:
        probe.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise ConfigError(f"the run folder {out} is not visible from Ray node(s) {', '.join(blind)}: put it on storage "
                          "every node mounts (NFS, Lustre, a shared volume) and give that path as --out")


def run_ray(jobs, out, device, engine, precision, threads, rt, started, absorb, bar):
    """Train ``jobs`` as Ray tasks: one job a task on the loop engine (``threads`` CPUs each),
    groups of ``rt.stack`` members (default all) on the stacked engine, each asking
    ``rt.ray_gpus_per_group`` of a GPU on CUDA and stacking what fits (``stack_size``).
    Connects to ``rt.ray_address``, or starts a local instance that it stops at the end.
    Returns {job: {"node": the Ray node that finished it (its ID's first 12 hex digits),
    "resumed_from": the epoch its last attempt started from}} for the record's log."""
    ray = _import_ray()
    out = Path(out).resolve()
    from .data import default_root
    # the driver's data folder, absolute: a task's working directory and environment are its node's
    data_root = str(Path(rt.data_root or default_root()).resolve())
    ours = not ray.is_initialized()
    if ours:  # "local": a new instance, never a cluster that happens to run on this machine
        ray.init(address=rt.ray_address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False)
    elif rt.ray_address:
        raise ConfigError("Ray is already initialised in this process; call ray.shutdown() first, or leave "
                          "ray_address unset to use that instance")
    try:
        check_shared_folder(ray, out)
        gpu = device != "cpu"
        need = {"GPU": rt.ray_gpus_per_group} if gpu else {"CPU": threads}
        biggest = {k: max((n.get("Resources", {}).get(k, 0) for n in ray.nodes() if n.get("Alive")), default=0)
                   for k in need}
        if any(biggest[k] < v for k, v in need.items()):
            raise ConfigError(f"each Ray task needs {need}, and no node of the cluster has that much (the largest: "
                              f"{biggest}); a matmul net's member takes the cores the driver's machine has: "
                              "use nodes as large, or the loop engine on a conv net")
        task = ray.remote(_ray_task).options(num_cpus=1 if gpu else threads,
                                             num_gpus=rt.ray_gpus_per_group if gpu else 0,
                                             max_retries=RAY_RETRIES, retry_exceptions=False)
        # the stacked engine: one task a GPU's group, which measures its own stack (stack_size)
        size = 1 if engine == "loop" else (rt.stack or len(jobs))
        groups = [jobs[a:a + size] for a in range(0, len(jobs), size)]
        pending = {task.remote(str(out), [j.name for j in g], threads, data_root, rt.download, rt.checkpoint_every_s,
                               precision, engine, "cuda" if gpu else "cpu", rt.stack): g for g in groups}
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
                        absorb(job, Checkpoint(out / "checkpoints" / f"{job.name}.pt").finished_outputs(job))
                        bar.update(job.total - started.get(job.name, 0))
        except ray.exceptions.RayError as exc:  # a task's error, or its node's death after the last retry
            cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc
            last = (str(cause).strip().splitlines() or [""])[-1]  # Ray's messages carry the remote traceback
            raise WorkerError(f"a Ray task failed ({type(cause).__name__}: {last}); the checkpoints are kept: run the "
                              "same command again to resume") from None
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return where
    finally:
        if ours:
            ray.shutdown()
