"""The loop engine: one member at a time, a plain PyTorch training loop.

The default on a CPU, where a small conv net trains fastest one member per process and core
(``executors``), and the only engine for recurrent nets, which ``torch.func.vmap`` does not
take.  A job's records depend only on its seeds, the config and its thread count, never on
which process or machine runs it: the executors rely on that.
"""
from __future__ import annotations

import time

import torch

from .. import member as J
from ..member import Checkpoint


def train_member(job, cfg, data, checkpoint, device, on_epoch=lambda: None, checkpoint_every_s=0.0, keep=None,
                 precision="fp32"):
    """Train one job to its end, checkpointing as it goes (``checkpoint``: its ``Checkpoint``);
    returns its predictions, {split: {"pred": (n_recorded, n) int16, outputs...}}, and puts
    the trained model in ``keep["model"]`` when a dict is given."""
    ck = checkpoint.load()
    if Checkpoint.finished(ck, job):  # its checkpoint holds no weights
        if keep is None:
            return J.upgrade_outputs(ck["out"], cfg.save_probabilities)
        ck = None  # the caller wants the trained net: train it again from its seeds
    model = J.fresh_model(job, cfg, data, device)
    if J.uses_conv(model):
        model = model.to(memory_format=torch.channels_last)
    opt = J.optimizer(cfg, model.parameters())
    order = J.data_order(job)
    n_rec = len(job.record_at)
    out = {s: J.empty_outputs(n_rec, len(data.y[s]), cfg.save_probabilities) for s in data.x}
    start = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        J.set_rng_state(ck, device)
        order.set_state(ck["order"])
        out, start = J.upgrade_outputs(ck["out"], cfg.save_probabilities), ck["epoch"]
    n = len(data.y["train"])
    rank = J.curriculum_rank(cfg, job.seed, n, data.curriculum)
    saved_at = time.perf_counter()
    for epoch in range(start + 1, job.total + 1):
        for g in opt.param_groups:
            g["lr"] = J.learning_rate(cfg, epoch)
        model.train()
        perm = J.epoch_order(n, order, epoch, cfg, rank).to(data.y["train"].device)
        data.plan("train", perm, cfg.batch_size)  # an image folder decodes these batches ahead
        for a in range(0, n, cfg.batch_size):
            loss = J.loss(model, data, perm[a:a + cfg.batch_size], device, precision)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for row, (e, _) in enumerate(job.record_at):
            if e == epoch:
                for s in data.x:
                    pred, outputs = J.predict(model, data.x[s], data.y[s], precision=precision,
                                              outputs=cfg.save_probabilities)
                    out[s]["pred"][row] = pred
                    for k, v in outputs.items():
                        out[s][k][row] = v
        if epoch == job.total:
            checkpoint.save(epoch, out)
        elif time.perf_counter() - saved_at >= checkpoint_every_s:
            checkpoint.save(epoch, out, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                         "order": order.get_state(), **J.rng_state(device)})
            saved_at = time.perf_counter()
        on_epoch()
    if keep is not None:
        keep["model"] = model
    return out


def run(jobs, cfg, data, ckpt_dir, device, precision, checkpoint_every_s, on_epoch, on_done, stack=None):
    """Train ``jobs`` one after another; ``on_done(job, predictions)`` as each ends."""
    for job in jobs:
        on_done(job, train_member(job, cfg, data, Checkpoint(ckpt_dir / f"{job.name}.pt"), device,
                                  on_epoch=on_epoch, checkpoint_every_s=checkpoint_every_s, precision=precision))
