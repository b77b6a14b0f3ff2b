"""The ray executor on a real two-node Ray cluster started on this machine.

A head and a second node (``ray start``), one CPU each, form a cluster whose tasks run on both;
a small digits collection trained on it must give the record the local executor gives, also
when the second node's processes are killed mid-run (its task is retried on the head and
resumes from its checkpoint) and when the driver is killed and started again.  The cluster is
stopped whatever happens.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agreebook.config import ConfigError, TrainConfig
from agreebook.record import Record
from agreebook.train import Runtime, train_collection

if os.environ.get("CI"):
    import ray  # CI installs the cluster extra: a missing Ray is a failure there, not a skip
else:
    ray = pytest.importorskip("ray")

# conv members on one thread each: a job's numbers depend only on its seeds, wherever it runs
CFG = TrainConfig(dataset="digits", arch="small_st_vgg", n_models=3, epochs=(1, 2, 3, 4, 5, 6), train_size=600,
                  test_size=200)
# detect a dead node in about 2 s instead of Ray's default 30 s
FAST = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
        "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid):
    """pid and every process below it (from /proc: the second node's raylet and its workers)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _ray(*args, env):
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], env=env, check=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)


class Cluster:
    def __init__(self, env):
        self.env = env
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.second = None

    def start(self):
        _ray("start", "--head", f"--port={self.port}", "--num-cpus=1", "--include-dashboard=false",
             "--disable-usage-stats", env=self.env)
        self.start_second()

    def start_second(self):
        # --block keeps the node's processes below this one, so that killing them kills that node
        self.second = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start",
                                        f"--address={self.address}", "--num-cpus=1", "--block"],
                                       env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        self.wait_for_nodes(2)

    def alive_nodes(self):
        code = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))")
        r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return int(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else 0

    def wait_for_nodes(self, n, timeout=90):
        t0 = time.time()
        while self.alive_nodes() != n:
            if time.time() - t0 > timeout:
                raise RuntimeError(f"the Ray cluster did not reach {n} alive nodes in {timeout} s")
            time.sleep(1)

    def kill_second(self):
        for pid in reversed(_descendants(self.second.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.second.wait(timeout=30)

    def stop(self):
        if self.second is not None and self.second.poll() is None:
            self.kill_second()
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


@pytest.fixture(scope="module")
def cluster():
    env = {**os.environ, **FAST}
    c = Cluster(env)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def local_record(tmp_path_factory):
    return train_collection(CFG, tmp_path_factory.mktemp("local") / "run", Runtime(workers=1, progress=False))


def _same(a, b):
    for s in ("train", "test"):
        np.testing.assert_array_equal(a.predictions[s], b.predictions[s])


def _train_cli(out, address, **popen):
    cmd = [sys.executable, "-m", "agreebook", "train", "--out", str(out), "--dataset", "digits", "--arch",
           "small_st_vgg", "--models", "3", "--epochs", "1,2,3,4,5,6", "--train-size", "600", "--test-size", "200",
           "--executor", "ray", "--ray-address", address, "--checkpoint-every", "0"]
    return subprocess.Popen(cmd, **popen)


def _wait_for(predicate, timeout=180, what="it"):
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _checkpointed(out, at_least, jobs=1, running=False):
    """Whether ``jobs`` jobs' checkpoints have reached epoch ``at_least`` (read from their files),
    and where ``running``, are short of their last."""
    import torch
    reached = 0
    for p in (out / "checkpoints").glob("m*.pt"):
        try:
            epoch = torch.load(p, weights_only=False)["epoch"]
        except Exception:  # being replaced right now
            continue
        reached += epoch >= at_least and not (running and epoch == CFG.epochs[-1])
    return reached >= jobs


def test_a_collection_on_a_two_node_cluster_equals_the_local_executors(cluster, local_record, tmp_path):
    rec = train_collection(CFG, tmp_path / "ray", Runtime(progress=False, executor="ray",
                                                          ray_address=cluster.address))
    _same(rec, local_record)
    run = rec.meta["runs"][-1]
    assert run["executor"] == "ray" and rec.is_complete and not (tmp_path / "ray" / "checkpoints").exists()
    assert len({j["node"] for j in run["ray_jobs"].values()}) == 2  # both nodes trained members
    assert all(j["resumed_from"] == 0 for j in run["ray_jobs"].values())


def test_a_killed_node_s_task_is_retried_and_resumes(cluster, local_record, tmp_path):
    out = tmp_path / "node_killed"
    driver = _train_cli(out, cluster.address, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=cluster.env)
    try:
        # two tasks mid-run (one CPU a node, one a task): one of them is the second node's
        _wait_for(lambda: _checkpointed(out, 1, jobs=2, running=True), what="two jobs mid-run")
        assert driver.poll() is None
        cluster.kill_second()  # one of the two running tasks dies with its node
        cluster.wait_for_nodes(1)
        stdout, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 0, stderr
    finally:
        if driver.poll() is None:
            driver.kill()
        cluster.start_second()  # for the tests after this one
    rec = Record.load(out)
    _same(rec, local_record)
    jobs = rec.meta["runs"][-1]["ray_jobs"]
    assert len({j["node"] for j in jobs.values()}) == 1  # the head finished every job
    assert max(j["resumed_from"] for j in jobs.values()) >= 1  # the killed node's job went on from its checkpoint


def test_a_killed_driver_resumes_on_the_cluster(cluster, local_record, tmp_path):
    out = tmp_path / "driver_killed"
    driver = _train_cli(out, cluster.address, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster.env)
    try:
        _wait_for(lambda: _checkpointed(out, 2), what="a checkpoint at epoch 2")
    finally:
        driver.kill()
        driver.wait()
    runs_before = json.loads((out / "config.json").read_text())["runs"]
    again = _train_cli(out, cluster.address, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=cluster.env)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    rec = Record.load(out)
    _same(rec, local_record)
    assert len(rec.meta["runs"]) == len(runs_before) + 1 and rec.meta["runs"][-1]["epochs_left"] < 18


def test_the_ray_executor_checks_its_settings_before_writing(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown executor 'slurm'"):
        train_collection(CFG, tmp_path / "a", Runtime(progress=False, executor="slurm"))
    with pytest.raises(ConfigError, match="add --executor ray"):
        train_collection(CFG, tmp_path / "a", Runtime(progress=False, ray_address="127.0.0.1:6379"))
    with pytest.raises(ConfigError, match=r"share of one GPU in \(0, 1\]; got 2"):
        train_collection(CFG, tmp_path / "a", Runtime(progress=False, executor="ray", ray_gpus_per_group=2))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[cluster\]'"):
        train_collection(CFG, tmp_path / "a", Runtime(progress=False, executor="ray"))
    assert not (tmp_path / "a").exists()


def test_a_run_folder_a_node_cannot_read_is_refused(monkeypatch, tmp_path):
    from agreebook import executors
    calls = []

    class FakeRay:  # one node that sees the folder, one that does not
        @staticmethod
        def nodes():
            return [{"Alive": True, "NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1"},
                    {"Alive": True, "NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2"}]

        @staticmethod
        def remote(f):
            class Task:
                @staticmethod
                def options(**kw):
                    node = kw["scheduling_strategy"].node_id
                    return type("T", (), {"remote": staticmethod(lambda p, t: calls.append(node) or
                                                                 (node == "a" * 56 and f(p, t)))})
            return Task

        @staticmethod
        def get(refs, timeout=None):
            return refs

    with pytest.raises(ConfigError, match=r"not visible from Ray node\(s\) 10\.0\.0\.2: put it on storage"):
        executors.check_shared_folder(FakeRay, tmp_path)
    assert calls == ["a" * 56, "b" * 56] and not list(tmp_path.iterdir())  # the probe is removed


def test_a_failed_task_says_how_to_resume(monkeypatch, tmp_path):
    # a task whose worker crashed after Ray's last retry: one WorkerError that says what to do
    from agreebook import executors
    from agreebook.io import WorkerError
    from agreebook.member import make_jobs

    class Ref:
        pass

    class FakeRay:  # one alive node with one CPU, whose tasks all fail
        exceptions = ray.exceptions
        cancelled = []

        @staticmethod
        def is_initialized():
            return False

        init = shutdown = staticmethod(lambda *a, **k: None)

        @staticmethod
        def nodes():
            return [{"Alive": True, "NodeID": "c" * 56, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 1.0}}]

        @staticmethod
        def remote(f):
            return type("Task", (), {"options": staticmethod(lambda **kw: type("T", (), {
                "remote": staticmethod(lambda *a: f(*a) if f is executors._sees else Ref())}))})

        @staticmethod
        def wait(refs, num_returns=1):
            return refs[:1], refs[1:]

        @staticmethod
        def get(refs, timeout=None):
            if isinstance(refs, list):  # the folder probe
                return refs
            raise ray.exceptions.WorkerCrashedError()

        @staticmethod
        def cancel(ref, force=False):
            FakeRay.cancelled.append(ref)

    monkeypatch.setattr(executors, "_import_ray", lambda: FakeRay)
    jobs = make_jobs(CFG.validate().resolved())
    rt = Runtime(progress=False, executor="ray")
    with pytest.raises(WorkerError, match=r"a Ray task failed \(WorkerCrashedError: [^\[].+\); the checkpoints are kept: "
                                          r"run the same command again to resume"):
        executors.run_ray(jobs, tmp_path, "cpu", "loop", "fp32", 1, rt, {}, lambda *a: None, None)
    assert len(FakeRay.cancelled) == len(jobs) - 1  # the others are cancelled, not left running
