"""Every bad input gets one line on stderr, exit status 2, no traceback, and leaves no file.

Each case is (name, setup, argv): setup(tmp) prepares the folder and returns the argv's
placeholders.  The CLI runs in-process (``cli.main``), so an uncaught exception fails the test.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agreebook import cli

SMALL = ["--models", "2", "--epochs", "1", "--train-size", "100", "--test-size", "50"]


def _record(tmp):
    """A small finished record in tmp/run (trained once per session, copied)."""
    src = _record.cache
    run = tmp / "run"
    if src is None:
        assert cli.main(["train", "--out", str(run), *SMALL]) == 0
        _record.cache = src = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    else:
        run.mkdir()
        for name, data in src.items():
            (run / name).write_bytes(data)
    return run


_record.cache = None


def _damage(how):
    def setup(tmp):
        run = _record(tmp)
        path = run / "record.npz"
        data = path.read_bytes()
        if how == "truncated":
            data = data[: len(data) // 2]
        elif how == "bit-flipped":
            b = bytearray(data)
            for i in range(100, len(b), 997):
                b[i] ^= 0x5A
            data = bytes(b)
        elif how == "random":
            data = np.random.default_rng(0).bytes(len(data))
        elif how == "empty":
            data = b""
        path.write_bytes(data)
        return {"run": run}
    return setup


def _bad_config_json(tmp):
    run = _record(tmp)
    (run / "record.npz").unlink()
    (run / "config.json").write_text('{"config": {"dataset": "dig')
    return {"run": run}


def _a_file(tmp):
    (tmp / "afile").write_text("not a folder")
    return {"file": tmp / "afile"}


def _nothing(tmp):
    return {}


CASES = [
    ("negative momentum", _nothing, ["train", "--out", "{tmp}/o", "--set", "momentum=-5", *SMALL]),
    ("negative seed", _nothing, ["train", "--out", "{tmp}/o", "--seed", "-1", *SMALL]),
    ("negative data seed", _nothing, ["train", "--out", "{tmp}/o", "--set", "data_seed=-1", "--random-labels", *SMALL]),
    ("lr nan", _nothing, ["train", "--out", "{tmp}/o", "--set", "lr=nan", *SMALL]),
    ("lr inf", _nothing, ["train", "--out", "{tmp}/o", "--set", "lr=inf", *SMALL]),
    ("empty out", _nothing, ["train", "--out", "", *SMALL]),
    ("out is a file", _a_file, ["train", "--out", "{file}", *SMALL]),
    ("empty epoch item", _nothing, ["train", "--out", "{tmp}/o", *SMALL[:2], "--epochs", "1,,2"]),
    ("negative workers", _nothing, ["train", "--out", "{tmp}/o", "--workers", "-2", *SMALL]),
    ("zero workers", _nothing, ["train", "--out", "{tmp}/o", "--workers", "0", *SMALL]),
    ("negative checkpoint interval", _nothing, ["train", "--out", "{tmp}/o", "--checkpoint-every", "-5", *SMALL]),
    ("unknown dataset", _nothing, ["train", "--out", "{tmp}/o", "--dataset", "imagenet21k"]),
    ("unknown arch", _nothing, ["train", "--out", "{tmp}/o", "--arch", "vit_huge"]),
    ("one model", _nothing, ["train", "--out", "{tmp}/o", "--models", "1"]),
    ("train size too large", _nothing, ["train", "--out", "{tmp}/o", "--train-size", "100000"]),
    ("train size zero", _nothing, ["train", "--out", "{tmp}/o", "--train-size", "0"]),
    ("epochs decreasing", _nothing, ["train", "--out", "{tmp}/o", "--epochs", "4,2"]),
    ("unknown setting", _nothing, ["train", "--out", "{tmp}/o", "--set", "lerning_rate=0.1"]),
    ("bad device", _nothing, ["train", "--out", "{tmp}/o", "--device", "tpu"]),
    ("cuda without a GPU", _nothing, ["train", "--out", "{tmp}/o", "--device", "cuda:3", *SMALL]),
    ("mnist offline, nothing there", _nothing, ["train", "--out", "{tmp}/o", "--dataset", "mnist",
                                                "--data-root", "{tmp}/data", "--no-download"]),
    ("report without a record", _nothing, ["report", "{tmp}/nowhere"]),
    *[(f"report on a {how} record", _damage(how), ["report", "{run}"])
      for how in ("truncated", "bit-flipped", "random", "empty")],
    *[(f"train into a folder with a {how} record", _damage(how), ["train", "--out", "{run}", *SMALL])
      for how in ("truncated", "bit-flipped", "random", "empty")],
    ("train into a folder with a corrupted config.json", _bad_config_json, ["train", "--out", "{run}", *SMALL]),
    ("another configuration in the folder", lambda tmp: {"run": _record(tmp)}, ["train", "--out", "{tmp}/run", *SMALL[:-2], "--test-size", "60"]),
    ("book with one model", _nothing, ["book", "--scale", "smoke", "--chapters", "3", "-p", "n_models=1", "--no-build"]),
    ("book with an unknown scale", _nothing, ["book", "--scale", "huge", "--no-build"]),
]


def _files(root):
    """Every path and its mtime (a folder's lock file is rewritten with the pid that takes it)."""
    return {p: None if p.name == ".lock" else p.stat().st_mtime_ns for p in Path(root).rglob("*")}


@pytest.mark.parametrize("name,setup,argv", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_left(name, setup, argv, tmp_path, capsys):
    places = {"tmp": tmp_path, **{k: v for k, v in (setup(tmp_path) or {}).items()}}
    before = _files(tmp_path)
    book = Path(__file__).resolve().parent.parent / "book"
    chapters = {p: p.read_bytes() for p in book.glob("*.ipynb")}
    capsys.readouterr()
    rc = cli.main([a.format(**places) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, f"{name}: exit {rc}, stderr {err!r}"
    lines = err.strip().splitlines()
    if name == "another configuration in the folder":  # the differences, one per line
        assert lines[0].startswith("agreebook: error:") and "another configuration" in lines[0]
    else:
        assert len(lines) == 1 and lines[0].startswith("agreebook: error:"), f"{name}: {err!r}"
    assert "Traceback" not in err
    assert _files(tmp_path) == before, f"{name}: files changed: {set(_files(tmp_path)) ^ set(before)}"
    assert {p: p.read_bytes() for p in book.glob("*.ipynb")} == chapters


def test_a_failed_run_does_not_block_the_corrected_command(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["train", "--out", str(out), "--set", "momentum=-5", *SMALL]) == 2
    assert not out.exists()
    assert cli.main(["train", "--out", str(out), "--set", "momentum=0.5", *SMALL]) == 0


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        assert cli.main(["train", "--out", str(tmp_path / "o"), *SMALL]) == 0
    finally:
        os.umask(old)
    for name in ("record.npz", "record.json", "config.json"):
        assert (tmp_path / "o" / name).stat().st_mode & 0o777 == 0o664, name


def test_a_second_training_into_a_running_folder_is_refused(tmp_path, capsys):
    from agreebook.io import FolderLock
    out = tmp_path / "o"
    out.mkdir()
    with FolderLock(out):  # as a running training holds it
        rc = cli.main(["train", "--out", str(out), *SMALL])
    err = capsys.readouterr().err
    assert rc == 2 and f"pid {os.getpid()}" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_report_removes_the_temporaries_a_killed_report_left(tmp_path, capsys):
    run = _record(tmp_path)
    stale = run / ".tp_agreement_hist_test.png.abc123.tmp"
    stale.write_bytes(b"half a png")
    assert cli.main(["report", str(run)]) == 0
    assert not stale.exists()


def _mount_tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")


def test_a_read_only_folder_gets_one_line(tmp_path, capsys):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "4m")
    try:
        run = _record(mnt)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        for argv in (["report", str(run)], ["train", "--out", str(mnt / "new"), *SMALL]):
            capsys.readouterr()
            assert cli.main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("agreebook: error:"), err
        assert cli.main(["report", str(run), "--json"]) == 0  # reading still works
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_full_disk_gets_one_line_and_resumes_after(tmp_path):
    """Workers write checkpoints until the disk is full: the driver says so in one line."""
    mnt = tmp_path / "full"
    _mount_tmpfs(mnt, "600k")
    try:
        cmd = [sys.executable, "-m", "agreebook", "train", "--out", str(mnt / "o"), "--models", "4",
               "--epochs", "1,2,3", "--train-size", "400", "--test-size", "100", "--workers", "2",
               "--checkpoint-every", "0"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        # besides tqdm's progress bar (its \r updates split into lines), one line
        lines = [s for s in r.stderr.strip().splitlines() if s.strip() and "epoch/s]" not in s]
        assert len(lines) == 1, r.stderr[-2000:]
        assert lines[0].startswith("agreebook: error:") and "No space left" in lines[0], lines[0]
        assert "Traceback" not in r.stderr
        assert not list((mnt / "o").rglob("*.tmp"))  # no half-written file
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # space freed
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        subprocess.run(["umount", str(mnt)])
