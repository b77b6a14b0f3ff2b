"""One member's lifecycle: what every engine does the same for every member.

A collection is a list of jobs (``make_jobs``): one per member on the trajectory protocol, one
per (member, recorded epoch) on the retrain protocol (Suppl D), each with its own seed
(``member_seed``; its data order and curriculum tie-breaks from it, ``config.ORDER_SALT`` and
``CURRICULUM_SALT``).  Here are the pieces of a job's training that do not depend on how it is
run: its fresh network, optimiser and learning-rate schedule, the order of its examples each
epoch (plain shuffling, or a curriculum's pacing), the loss of a step, the prediction after a
recorded epoch with the per-entry outputs a record keeps, and its ``Checkpoint``.  The engines
(``agreebook.engines``) put them together into a training loop; they share this module so that
a run killed under one resumes under the other.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import CURRICULUM_RAMP, CURRICULUM_SALT, CURRICULUM_START, ORDER_SALT, ConfigError
from .io import atomic_torch_save
from .models import build_model
from .prepare import TrainingData
from .outputs import OUTPUT_KEYS


# eval batches: on a CPU, a conv net's activations of 1000 32x32 images exceed glibc's largest
# pooled allocation (32 MB), so every batch page-faulted fresh memory: 2.5 s against 1.6 s at
# 250.  Nets without convolutions stay far below it at 1000 and run their products faster
# there (FC on 2500 CIFAR images: 56 ms against 63 ms at 250).
EVAL_BATCH = {"cpu": 250}


EVAL_BATCH_OTHER = 1000


def eval_batch(device, model=None):
    """Examples per eval batch on ``device`` (for ``model``, when given: nets without
    convolutions take the larger batch everywhere)."""
    if model is not None and not uses_conv(model):
        return EVAL_BATCH_OTHER
    return EVAL_BATCH.get(torch.device(device).type, EVAL_BATCH_OTHER)


@dataclass(frozen=True)
class Job:
    member: int
    extent: int | None  # retrain protocol: index of the recorded epoch this job trains to
    seed: int
    total: int  # epochs to train
    record_at: tuple  # ((epoch, epoch_index), ...)

    @property
    def name(self):
        return f"m{self.member:04d}" + ("" if self.extent is None else f"_e{self.extent:03d}")


def member_seed(seed, member, extent=None):
    """Independent seed per member (and per extent in the retrain protocol)."""
    key = [seed, member] + ([] if extent is None else [extent + 1])
    return int(np.random.SeedSequence(key).generate_state(1, np.uint32)[0])


def make_jobs(cfg):
    epochs = list(cfg.epochs)
    if cfg.protocol == "trajectory":
        return [Job(m, None, member_seed(cfg.seed, m), epochs[-1], tuple((e, i) for i, e in enumerate(epochs)))
                for m in range(cfg.n_models)]
    return [Job(m, k, member_seed(cfg.seed, m, k), e, ((e, k),))
            for k, e in enumerate(epochs) for m in range(cfg.n_models)]


def optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}")


def learning_rate(cfg, epoch):
    """Step schedule: lr divided by lr_decay every lr_step epochs (epoch counts from 1)."""
    return cfg.lr / cfg.lr_decay ** ((epoch - 1) // cfg.lr_step)


def autocast(device, precision):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def loss(model, data, idx, device, precision):
    """The training loss of ``model`` on training examples ``idx`` (the logits in fp32)."""
    with autocast(device, precision):
        return F.cross_entropy(model(TrainingData.nchw(data.x["train"][idx])).float(), data.y["train"][idx])


OUTPUT_NAMES = tuple(OUTPUT_KEYS)  # what a record keeps per entry with save_probabilities


def entry_outputs(logits, y):
    """The per-entry outputs a record keeps with save_probabilities, from logits (..., n, k) and
    labels (n,) (-1: out-of-sample, all four 0): the true-class probability, the largest
    other-class probability, ||softmax - onehot||_2 and the logit margin, each (..., n)
    float16 on the CPU.  ``outputs.outputs_from_logits`` is the same in NumPy (tested equal)."""
    known = y >= 0
    idx = y.clamp_min(0)
    p = logits.softmax(-1)
    onehot = F.one_hot(idx, logits.shape[-1]).bool().expand_as(p)
    at = idx[:, None].expand(*p.shape[:-1], 1)
    true_z = logits.gather(-1, at)[..., 0]
    out = {"probability": p.gather(-1, at)[..., 0], "other_probability": p.masked_fill(onehot, -1.0).amax(-1),
           "error_norm": (p - onehot.float()).pow(2).sum(-1).sqrt(),
           "logit_margin": (true_z - logits.masked_fill(onehot, float("-inf")).amax(-1)).clamp(-1e4, 1e4)}
    return {k: v.masked_fill(~known, 0).to(torch.float16).cpu() for k, v in out.items()}


def empty_outputs(n_rec, n, keep):
    """A member's record of one split before it is filled: predictions -1, and where ``keep``
    (save_probabilities) the outputs NaN until they are written."""
    return {"pred": np.full((n_rec, n), -1, np.int16),
            **({k: np.full((n_rec, n), np.nan, np.float16) for k in OUTPUT_NAMES} if keep else {})}


def upgrade_outputs(out, keep):
    """A member's predictions as read from a checkpoint, in this version's form: where ``keep``
    (save_probabilities), a checkpoint written before the record kept every output (its
    true-class probability under "prob") gets the others as NaN, never a silent 0; otherwise
    the predictions alone."""
    for s, d in out.items():
        if "prob" in d:
            d["probability"] = d.pop("prob")
        for k in OUTPUT_NAMES:
            if keep:
                d.setdefault(k, np.full(d["pred"].shape, np.nan, np.float16))
            else:
                d.pop(k, None)
    return out


@torch.inference_mode()
def predict(model, x, y, nchw=True, batch=None, precision="fp32", outputs=True):
    """Predicted labels (int16) and the per-entry outputs (``entry_outputs``; {} unless
    ``outputs``) in eval mode."""
    model.eval()
    batch = batch or eval_batch(x.device, model)
    preds, outs = [], []
    for a in range(0, len(x), batch):
        xb = x[a:a + batch]
        with autocast(x.device, precision):
            logits = model(TrainingData.nchw(xb) if nchw else xb).float()
        preds.append(logits.argmax(1).to(torch.int16).cpu())
        if outputs:
            outs.append(entry_outputs(logits, y[a:a + batch]))
    return torch.cat(preds).numpy(), ({k: torch.cat([o[k] for o in outs]).numpy() for k in OUTPUT_NAMES}
                                      if outputs else {})


def uses_conv(model):
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def recurrent(model):
    return any(isinstance(m, torch.nn.RNNBase) for m in model.modules())


def fresh_model(job, cfg, data, device):
    """Job's freshly initialised net (its seed set here: init, then dropout)."""
    torch.manual_seed(job.seed)
    model = build_model(cfg.arch, data.in_shape, data.n_classes, cfg.activation, cfg.dropout).to(device)
    if data.vectors is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(data.vectors)
    return model


def rng_state(device):
    state = {"rng": torch.get_rng_state()}
    if torch.device(device).type == "cuda":  # dropout on a GPU draws from its own generator
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(ck, device):
    torch.set_rng_state(ck["rng"])
    if "cuda_rng" in ck and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(ck["cuda_rng"], device)


def curriculum_pace(cfg, epoch):
    """The share of the training set epoch ``epoch`` draws from: curriculum_start at epoch 1,
    growing geometrically to all of it at epoch curriculum_ramp."""
    start = cfg.curriculum_start if cfg.curriculum_start is not None else CURRICULUM_START
    ramp = cfg.curriculum_ramp if cfg.curriculum_ramp is not None else CURRICULUM_RAMP
    if ramp <= 1:
        return 1.0
    return float(start ** max(0.0, 1 - (epoch - 1) / (ramp - 1)))


def curriculum_rank(cfg, seed, n, scores):
    """The member's order of the training examples, first drawn first: by score ("easy": high
    accessibility first; "hard": low first), ties broken at random per member, or a random
    order ("random").  None without a curriculum."""
    if cfg.curriculum is None:
        return None
    jitter = torch.rand(n, generator=torch.Generator().manual_seed(seed ^ CURRICULUM_SALT)).numpy()
    if cfg.curriculum == "random":
        return torch.from_numpy(np.argsort(jitter))
    key = -scores if cfg.curriculum == "easy" else scores
    return torch.from_numpy(np.lexsort((jitter, key)))


def epoch_order(n, order, epoch, cfg, rank=None):
    """The training examples of one epoch, in minibatch order: a permutation of all n, or, with
    a curriculum, n draws from the first ``curriculum_pace`` share of ``rank`` (the pool
    shuffled, repeated as needed), so every epoch takes as many steps as a plain one."""
    if rank is None:
        return torch.randperm(n, generator=order)
    pool = min(n, max(cfg.batch_size, int(np.ceil(curriculum_pace(cfg, epoch) * n))))
    reps = -(-n // pool)
    return torch.cat([rank[:pool][torch.randperm(pool, generator=order)] for _ in range(reps)])[:n]


@torch.inference_mode()
def penultimate_features(model, data, split, batch=None):
    """The input to a Sequential net's last layer (its learned features) for every example of
    ``split``: (n_examples, n_features) float32."""
    if not isinstance(model, torch.nn.Sequential):
        raise ConfigError(f"penultimate_features takes the book's Sequential nets; got {type(model).__name__}: "
                          "pass your own extractor's features to experiments.adaboost_stages instead")
    body = model[:-1].eval()
    x = data.x[split]
    batch = batch or eval_batch(x.device, model)
    return torch.cat([body(TrainingData.nchw(x[a:a + batch])).float().cpu() for a in range(0, len(x), batch)]).numpy()


def data_order(job):
    """The generator of a job's minibatch order (its own stream, apart from init and dropout)."""
    return torch.Generator().manual_seed(job.seed ^ ORDER_SALT)


class Checkpoint:
    """One job's checkpoint file (``<run>/checkpoints/<job>.pt``), written atomically.  Mid-run
    it holds the member's whole state after an epoch: weights, optimiser, RNG and data-order
    state, and its predictions so far; at the job's end only its predictions (``finished``: a
    rerun only reads them back, and a ResNet-50's weights and momentum are 200 MB).  Both
    engines write and read this one format, so a run killed under one resumes under the other.
    """

    def __init__(self, path):
        self.path = Path(path)

    def load(self, map_location=None, mmap=False):
        """The checkpoint as a dict, or None when there is none or its bytes are damaged (a
        disk fault: it is written atomically): a damaged one is kept as ``<name>.corrupt`` and
        that job trains again from its seeds.  An unreadable file (permissions, I/O) is an
        error, not a reason to retrain.  mmap: tensors mapped from the file, read only if used."""
        import pickle
        import zipfile
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, weights_only=False, map_location=map_location, mmap=mmap)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as exc:
            kept = self.path.with_suffix(".corrupt")
            self.path.replace(kept)
            print(f"agreebook: checkpoint {self.path} is damaged ({type(exc).__name__}); kept as {kept.name}, "
                  "its member trains again from its seeds", file=sys.stderr)
            return None

    def save(self, epoch, out, state=None):
        """After ``epoch``: the predictions so far (``out``) and, unless the job is finished,
        ``state``: {"model", "optimizer", "order", **rng_state(device)}."""
        atomic_torch_save(self.path, {"epoch": epoch, "out": out, **(state or {})})

    @staticmethod
    def finished(ck, job):
        """Whether a loaded checkpoint is its job's last (its predictions are all there is)."""
        return ck is not None and ck["epoch"] == job.total

    def epoch(self):
        """The epoch the checkpoint was written after (0: none): its weights and optimiser state
        mapped, not read (a ResNet-50's with momentum are 200 MB, and the engine loads them next)."""
        ck = self.load(map_location="cpu", mmap=True)
        return ck["epoch"] if ck is not None else 0

    def finished_outputs(self, job):
        """A finished job's predictions, as its executor reads them back; a WorkerError when its
        checkpoint is missing, damaged or not its last."""
        from .io import WorkerError
        ck = self.load(map_location="cpu")
        if not Checkpoint.finished(ck, job):
            raise WorkerError(f"job {job.name} ended, but its checkpoint is {'not its last' if ck else 'gone or damaged'}; "
                              "run the same command again to resume")
        return ck["out"]
