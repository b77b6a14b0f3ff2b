"""Atomic file writes: a reader, or a run killed mid-write, never sees half a file."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _umask():
    """The process's umask, read without changing it (os.umask sets it, which would race with
    other threads creating files): /proc on Linux, else the set-and-restore fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a record in a group folder must be readable as the umask says
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder, names=("*",), older_than=0.0):
    """Delete the ``.<name>.*.tmp`` files a write killed mid-way left in ``folder`` (only those
    not touched for ``older_than`` seconds: another process may be writing one now)."""
    import time
    now = time.time()
    for pattern in names:
        for stale in Path(folder).glob(f".{pattern}.*.tmp"):
            try:
                if now - stale.stat().st_mtime >= older_than:
                    stale.unlink(missing_ok=True)
            except FileNotFoundError:  # its writer finished (or swept) it meanwhile
                pass


def atomic_savez(path, compress=False, **arrays):
    _atomic(path, lambda f: (np.savez_compressed if compress else np.savez)(f, **arrays))


def atomic_write_json(path, obj):
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()))


def atomic_write_text(path, text):
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_csv(path, frame, float_format="%.6g"):
    """A DataFrame as CSV, gzip-compressed when ``path`` ends in .gz; the gzip header carries no
    time, so the same table gives the same bytes (a re-executed book changes no committed file
    whose numbers did not change)."""
    import gzip
    data = frame.to_csv(index=False, float_format=float_format).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    _atomic(path, lambda f: f.write(data))


def atomic_torch_save(path, obj):
    import io
    import torch
    # serialised in memory first: torch's zip writer reports a full disk as "unexpected pos",
    # a plain write raises OSError(ENOSPC) that says what happened
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic(path, lambda f: f.write(buf.getbuffer()))


class FolderLock:
    """An exclusive lock on a run folder (``<folder>/.lock``, flock): a second process gets
    one clear message naming the one that holds it.  Released when the process exits, even
    if it is killed."""

    def __init__(self, folder, what="training"):
        self.path = Path(folder) / ".lock"
        self.what = what
        self.fd = None

    def __enter__(self):
        import fcntl
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # a filesystem without flock (some NFS, Lustre, CIFS mounts): run unlocked, say so
                import sys
                print(f"agreebook: warning: {self.path.parent} cannot be locked ({exc.strerror}); do not start "
                      "a second training into it while this one runs", file=sys.stderr)
                self.fd = fd
                return self
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(f"{self.path.parent} is in use by another {self.what} (pid {holder}); wait for it "
                              "to finish, or use another output folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the flock; the file stays, harmless and reused


class LockedError(RuntimeError):
    """The run folder is locked by another process."""


class WorkerError(RuntimeError):
    """A training worker process failed; the message is its error in one line."""
