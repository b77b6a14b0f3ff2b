"""Members trained together: one stacked model under ``torch.func.vmap``.

On a GPU a small net leaves the device idle when members train one after another, so the
``stacked`` engine trains a group of M members as one model whose parameters carry a leading
member axis.  Each step gathers every member's own minibatch (its own data order), runs the
forward under ``vmap`` (dropout ``randomness="different"``: each member its own masks) and
sums the members' mean losses, so each member's gradient is exactly its own; the optimisers
the trainer uses are elementwise, so one optimiser over the stacked parameters steps every
member as its own would.

What is the same as the one-at-a-time ``loop`` engine (``engines.loop.train_member``): the seeds of
init and of data order, the schedule, eval on the full splits after each recorded epoch, and
the checkpoint format: a group writes one checkpoint per member, so a run killed under one
engine resumes under either.  What differs: dropout masks (drawn for the stack, not per
member) and the float summation order of batched kernels, so records of the two engines are
not bit-identical.  Measured on a CPU, where the loop engine is the default: see
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .. import member as J
from ..member import OUTPUT_NAMES, Checkpoint, entry_outputs, eval_batch
from ..models import FastDropout, FastELU


def plain_copy(model):
    """A copy of ``model`` on the meta device with torch's own ELU and dropout: the package's
    CPU kernels are eager autograd Functions, which vmap does not take."""
    base = copy.deepcopy(model).to("meta")
    for parent in base.modules():
        for name, child in parent.named_children():
            if isinstance(child, FastELU):
                setattr(parent, name, nn.ELU())
            elif isinstance(child, FastDropout):
                setattr(parent, name, nn.Dropout(child.p))
    return base


def stack_optimizer_states(states):
    """One optimiser state_dict for stacked parameters from the members' (same param order)."""
    out = copy.deepcopy(states[0])
    for i, st in out["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                st[k] = torch.stack([s["state"][i][k] for s in states])
    return out


def member_optimizer_state(state, m):
    """Member ``m``'s optimiser state_dict from the stacked one (0-d entries such as Adam's
    ``step`` are shared: every member took the same number of steps)."""
    out = {"state": {}, "param_groups": copy.deepcopy(state["param_groups"])}
    for i, st in state["state"].items():
        out["state"][i] = {k: (v[m].clone() if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in st.items()}
    return out


def _fp32_norms(base):
    """For bf16: normalisation layers run in fp32 beside their fp32 running statistics, as under
    autocast (hooks cast their input up and their output back to bf16).  Returns the names of
    their parameters, which stay fp32."""
    names = set()
    for name, mod in base.named_modules():
        if isinstance(mod, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
            mod.register_forward_pre_hook(lambda m, args: (args[0].float(), *args[1:]))
            mod.register_forward_hook(lambda m, args, out: out.to(torch.bfloat16))
            names |= {f"{name}.{p}".lstrip(".") for p, _ in mod.named_parameters(recurse=False)}
    return names


def train_group(jobs, cfg, data, checkpoints, device, checkpoint_every_s=0.0, on_epoch=lambda: None,
                precision="fp32"):
    """Train ``jobs`` (same length and recorded epochs, and all at the same checkpointed epoch;
    ``checkpoints``: their ``Checkpoint``s) together; returns each job's predictions, as
    ``loop.train_member`` does.  ``precision``
    "bf16" runs the forward pass on bf16 copies of the fp32 weights (the loss in fp32)."""
    if hasattr(data.x["train"], "plan"):  # streamed from an image folder: members gather their own batches
        raise ValueError("the stacked engine takes data held in memory; an image folder trains on the loop engine")
    total, record_at = jobs[0].total, jobs[0].record_at
    if any(j.total != total or j.record_at != record_at for j in jobs):
        raise ValueError("a stacked group needs jobs of one length and one set of recorded epochs")
    models = [J.fresh_model(j, cfg, data, device) for j in jobs]
    orders = [J.data_order(j) for j in jobs]
    n_rec = len(record_at)
    outs = [{s: J.empty_outputs(n_rec, len(data.y[s]), cfg.save_probabilities) for s in data.x} for _ in jobs]
    loaded = [c.load() for c in checkpoints]
    start = loaded[0]["epoch"] if loaded[0] else 0
    if any((ck["epoch"] if ck else 0) != start for ck in loaded):
        raise ValueError("a stacked group needs its members at one checkpointed epoch")
    for model, order, ck, m in zip(models, orders, loaded, range(len(jobs))):
        if ck:
            model.load_state_dict(ck["model"])
            order.set_state(ck["order"])
            outs[m] = J.upgrade_outputs(ck["out"], cfg.save_probabilities)
    params, buffers = stack_module_state(models)
    opt = J.optimizer(cfg, list(params.values()))
    if start:
        opt.load_state_dict(stack_optimizer_states([ck["optimizer"] for ck in loaded]))
        J.set_rng_state(loaded[0], device)
    base = plain_copy(models[0])
    del models

    low = torch.bfloat16 if precision == "bf16" else None
    fp32 = _fp32_norms(base) if low is not None else set()

    def call(p, b, xb):
        if low is not None:  # autocast does not reach inside vmap: cast by hand, fp32 master weights
            p = {k: v if k in fp32 else v.to(low) for k, v in p.items()}
            xb = xb.to(low) if xb.is_floating_point() else xb
        return functional_call(base, (p, b), (xb,))

    train_fwd = vmap(call, in_dims=(0, 0, 0), randomness="different")
    eval_fwd = vmap(call, in_dims=(0, 0, None))
    nchw = data.x["train"].dim() == 4
    x, y = data.x["train"], data.y["train"]
    n, batch = len(y), cfg.batch_size
    saved_at = time.perf_counter()
    for epoch in range(start + 1, total + 1):
        for g in opt.param_groups:
            g["lr"] = J.learning_rate(cfg, epoch)
        base.train()
        perms = torch.stack([torch.randperm(n, generator=o) for o in orders]).to(x.device)
        for a in range(0, n, batch):
            idx = perms[:, a:a + batch]  # (M, B): every member its own minibatch
            xb = x[idx]
            if nchw:
                xb = xb.permute(0, 1, 4, 2, 3)
            logits = train_fwd(params, buffers, xb).float()
            # the sum of members' mean losses: each member's gradient is its own
            loss = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="sum") / idx.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for row, (e, _) in enumerate(record_at):
            if e == epoch:
                base.eval()
                for s in data.x:
                    # the group shares one eval batch: M members at a loop's batch each would
                    # hold M times its activations, more than stack_size measured
                    preds, outputs = _predict(eval_fwd, params, buffers, data.x[s], data.y[s], nchw,
                                              max(1, eval_batch(device, base) // len(jobs)), cfg.save_probabilities)
                    for m in range(len(jobs)):
                        outs[m][s]["pred"][row] = preds[m]
                        for k, v in outputs.items():
                            outs[m][s][k][row] = v[m]
        if epoch == total:
            for m, checkpoint in enumerate(checkpoints):
                checkpoint.save(epoch, outs[m])
        elif time.perf_counter() - saved_at >= checkpoint_every_s:
            state, rng = opt.state_dict(), J.rng_state(device)
            for m, checkpoint in enumerate(checkpoints):
                weights = {k: v[m].detach().clone() for k, v in {**params, **buffers}.items()}
                checkpoint.save(epoch, outs[m], {"model": weights, "optimizer": member_optimizer_state(state, m),
                                                 "order": orders[m].get_state(), **rng})
            saved_at = time.perf_counter()
        for _ in jobs:
            on_epoch()
    return outs


@torch.no_grad()
def _predict(eval_fwd, params, buffers, x, y, nchw, batch, outputs=True):
    """(M, n) int16 predictions and the per-entry outputs (member.entry_outputs; {} unless
    ``outputs``) of every member."""
    preds, outs = [], []
    for a in range(0, len(x), batch):
        xb = x[a:a + batch]
        logits = eval_fwd(params, buffers, xb.permute(0, 3, 1, 2) if nchw else xb).float()
        preds.append(logits.argmax(2).to(torch.int16).cpu())
        if outputs:
            outs.append(entry_outputs(logits, y[a:a + batch]))
    return torch.cat(preds, 1).numpy(), ({k: torch.cat([o[k] for o in outs], 1).numpy() for k in OUTPUT_NAMES}
                                         if outputs else {})

def stack_size(cfg, data, jobs, device, precision):
    """Members per stacked group: all of them on a CPU; on a GPU as many as half its free
    memory holds, from one member's measured training-step peak."""
    if torch.device(device).type != "cuda" or len(jobs) == 1:
        return len(jobs)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model = J.fresh_model(jobs[0], cfg, data, device)
    opt = J.optimizer(cfg, model.parameters())
    loss = J.loss(model, data, torch.arange(min(cfg.batch_size, len(data.y["train"])), device=device), device,
                  precision)
    loss.backward()
    opt.step()
    per_member = torch.cuda.max_memory_allocated(device) - before
    del model, opt, loss
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(len(jobs), int(0.5 * free / max(per_member, 1))))


def run(jobs, cfg, data, ckpt_dir, device, precision, checkpoint_every_s, on_epoch, on_done, stack=None):
    """Train ``jobs`` in groups of one length, recorded epochs and resume point, each group in
    stacks of ``stack`` members (default: ``stack_size``); ``on_done(job, predictions)`` as
    each stack ends.  Returns the largest stack."""
    checkpoints = {j.name: Checkpoint(ckpt_dir / f"{j.name}.pt") for j in jobs}
    groups = {}
    for job in jobs:
        epoch = checkpoints[job.name].epoch()
        if epoch == job.total:  # finished before (a retried task): its predictions are all there is
            on_done(job, J.upgrade_outputs(checkpoints[job.name].finished_outputs(job), cfg.save_probabilities))
            continue
        groups.setdefault((job.total, job.record_at, epoch), []).append(job)
    sizes = []
    for group in groups.values():
        size = stack or stack_size(cfg, data, group, device, precision)
        sizes.append(size)
        for a in range(0, len(group), size):
            chunk = group[a:a + size]
            outs = train_group(chunk, cfg, data, [checkpoints[j.name] for j in chunk], device,
                               checkpoint_every_s=checkpoint_every_s, on_epoch=on_epoch, precision=precision)
            for job, res in zip(chunk, outs):
                on_done(job, res)
    return max(sizes, default=0)
