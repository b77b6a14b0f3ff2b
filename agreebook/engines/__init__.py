"""Engines: how a process trains the jobs it is given.

* ``loop`` (``engines.loop``): one member after another, a plain training loop; the default on
  a CPU and the only one for recurrent nets.
* ``stacked`` (``engines.stacked``): a group of members as one vmapped model, which a GPU needs
  to stay busy on small nets; the default on CUDA.  Its records are not bit-identical to the
  loop's (dropout masks, summation order).

Both build on ``agreebook.member`` (one member's lifecycle and its checkpoint) and share one
entry, ``run(jobs, cfg, data, ckpt_dir, device, precision, checkpoint_every_s, on_epoch,
on_done, stack)``.  An engine knows nothing of processes or clusters: where jobs run is the
executors' business (``agreebook.executors``).
"""
from __future__ import annotations

import torch

from ..config import ConfigError

ENGINES = ("loop", "stacked")


def pick_engine(name, device, recurrent, stack=None):
    """The engine to use: ``name`` checked, "auto" resolved (stacked on CUDA, loop on a CPU,
    where stacking measured 0.56x the loop: benchmarks/RESULTS.md)."""
    if name not in ("auto", *ENGINES):
        raise ConfigError(f"unknown engine {name!r}; use 'loop', 'stacked' or 'auto'")
    if stack is not None and (not isinstance(stack, int) or stack < 1):
        raise ConfigError(f"stack is the number of members trained together: a positive integer; got {stack!r}")
    if name == "stacked" and recurrent:
        raise ConfigError("recurrent nets (LSTM) do not run under torch.func.vmap; use --engine loop (engine='loop' from Python)")
    if name == "auto":
        return "stacked" if torch.device(device).type == "cuda" and not recurrent else "loop"
    return name


def pick_precision(name, device):
    if name not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"unknown precision {name!r}; use 'fp32', 'bf16' or 'auto'")
    if name == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return name


def run(engine, jobs, cfg, data, ckpt_dir, device, precision, checkpoint_every_s, on_epoch, on_done, stack=None):
    """Train ``jobs`` on ``engine``; returns the largest stack (stacked) or None (loop)."""
    if engine == "stacked":
        from . import stacked
        return stacked.run(jobs, cfg, data, ckpt_dir, device, precision, checkpoint_every_s, on_epoch, on_done, stack)
    from . import loop
    loop.run(jobs, cfg, data, ckpt_dir, device, precision, checkpoint_every_s, on_epoch, on_done)
    return None
