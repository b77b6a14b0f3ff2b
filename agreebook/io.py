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


def atomic_savez(path, compress=False, stored=(), **arrays):
    """np.savez(_compressed) of ``arrays``, atomically, the names in ``stored`` left uncompressed
    whatever ``compress`` says (so that a reader can map them: ``npz_stored_arrays``).  Every
    member is dated 1980-01-01, so that the same arrays give the same bytes."""
    import zipfile

    def write(f):
        method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with zipfile.ZipFile(f, "w", allowZip64=True) as z:
            for name, a in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED if name in stored else method
                with z.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)
    _atomic(path, write)


def npz_stored_arrays(path, names, min_bytes=0):
    """{name: read-only np.memmap} of the members of an .npz that are stored uncompressed, among
    ``names`` and of at least ``min_bytes``: a mapping reads only the pages that are used.  Each
    keeps the file open as ``.source`` (its own inode: a record saved over this one meanwhile is
    not what a later read of it sees)."""
    import struct
    import zipfile
    out = {}
    with open(path, "rb") as f, zipfile.ZipFile(f) as z:
        for info in z.infolist():
            name = info.filename[:-len(".npy")]
            if name not in names or info.compress_type != zipfile.ZIP_STORED or info.file_size < min_bytes:
                continue
            f.seek(info.header_offset)
            head = f.read(30)  # the local header: its name and extra field lengths are its last 4 bytes
            if head[:4] != b"PK\x03\x04":
                raise ValueError(f"member {info.filename} has no local header")
            n, m = struct.unpack("<HH", head[26:30])
            f.seek(info.header_offset + 30 + n + m)
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                continue  # a version-3 header (non-Latin-1 field names): read it the usual way
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            # mapped from this open file, and reading through a copy of its descriptor: one inode
            out[name] = np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                                  order="F" if fortran else "C")
            out[name].source = os.fdopen(os.dup(f.fileno()), "rb", buffering=0)
    return out


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
