"""Atomic file writes: a reader, or a run killed mid-write, never sees half a file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_savez(path, **arrays):
    _atomic(path, lambda f: np.savez(f, **arrays))


def atomic_write_json(path, obj):
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()))


def atomic_torch_save(path, obj):
    import torch
    _atomic(path, lambda f: torch.save(obj, f))
