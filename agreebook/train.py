"""The collection trainer: N members, independent seeds, every recorded epoch written down.

One training loop (``_train_member``) does the work; around it:

* members are jobs.  ``trajectory``: one job per member, recorded along its run.
  ``retrain`` (Suppl D): one job per (member, recorded epoch), trained from scratch that long.
* a job checkpoints (model, optimiser, RNG and data-order state, its predictions so far)
  atomically after an epoch once ``checkpoint_every_s`` has passed since its last one, and
  its predictions alone at its end, so a killed run resumes near where it stopped and ends
  with the record an uninterrupted run writes.  Short epochs are not each saved: for a small
  net the save cost more than the epoch.
* engines: ``loop`` trains members one after another (one job at a time per process);
  ``stacked`` (``agreebook.stacked``) trains a group of members as one vmapped model, which
  a GPU needs to stay busy on small nets.  ``auto`` picks stacked on CUDA, loop on a CPU,
  where stacking measured 0.56x the loop (benchmarks/RESULTS.md).  Recurrent nets always
  loop (vmap takes no LSTM).
* on a CPU, convolutional jobs run in worker processes with one thread each (or all cores
  for a single job): small conv nets scale across processes far better than across intra-op
  threads, and run channels_last.  Recurrent nets (chains of small matmuls) run one thread
  per worker too.  Other nets without convolutions are matmuls that already use every core,
  so they train in-process, where no worker start-up is paid (benchmarks/).
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .config import ConfigError, TrainConfig, config_diff
from .data import load_dataset, out_of_sample, partitions, random_labels, stratified_subset, take
from .io import FolderLock, WorkerError, atomic_torch_save, atomic_write_json, remove_stale_temporaries
from .models import TEXT_EMBEDDING_DIM, build_model, count_parameters, get_arch, input_size
from .record import OUTPUT_KEYS, Record, RecordError

# eval batches: on a CPU, a conv net's activations of 1000 32x32 images exceed glibc's largest
# pooled allocation (32 MB), so every batch page-faulted fresh memory: 2.5 s against 1.6 s at
# 250.  Nets without convolutions stay far below it at 1000 and run their products faster
# there (FC on 2500 CIFAR images: 56 ms against 63 ms at 250).
EVAL_BATCH = {"cpu": 250}
EVAL_BATCH_OTHER = 1000
# glibc keeps freed memory for reuse instead of returning it to the OS and faulting it in
# again; a 1-thread small st-VGG step page-faulted 8-13k times without these, ~150 with them
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
                 "MALLOC_TOP_PAD_": str(256 << 20)}
SMALL_WORK = 20000  # example-epochs under which a collection trains in-process


def eval_batch(device, model=None):
    """Examples per eval batch on ``device`` (for ``model``, when given: nets without
    convolutions take the larger batch everywhere)."""
    if model is not None and not _uses_conv(model):
        return EVAL_BATCH_OTHER
    return EVAL_BATCH.get(torch.device(device).type, EVAL_BATCH_OTHER)


@dataclass
class Runtime:
    """How to run, not what: none of this changes a CPU record (thread counts are logged)."""
    device: str = "auto"  # "cpu", "cuda", "cuda:N", or "auto"
    workers: int | None = None  # CPU worker processes; default min(jobs, cores)
    data_root: str | None = None
    download: bool = True
    progress: bool = True
    checkpoint_every_s: float = 10.0  # 0 saves after every epoch
    engine: str = "auto"  # "loop", "stacked" (members together under vmap), or "auto"
    stack: int | None = None  # members per stacked group; default: what fits in GPU memory
    precision: str = "auto"  # "fp32", "bf16" (fp32 weights, bf16 forward), or "auto": bf16 on CUDA only


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


def prepare_dataset(cfg, data_root=None, download=True):
    """The dataset a config trains on: subsets and random labels applied."""
    ds = load_dataset(cfg.dataset, root=data_root, download=download, seed=cfg.data_seed)
    tr = te = None
    if cfg.train_size is not None:
        if cfg.train_size > len(ds.y_train):
            raise ConfigError(f"train_size {cfg.train_size} exceeds {cfg.dataset}'s {len(ds.y_train)} training examples")
        tr = stratified_subset(ds.y_train, cfg.train_size, cfg.data_seed)
    if cfg.test_size is not None:
        if cfg.test_size > len(ds.y_test):
            raise ConfigError(f"test_size {cfg.test_size} exceeds {cfg.dataset}'s {len(ds.y_test)} test examples")
        te = stratified_subset(ds.y_test, cfg.test_size, cfg.data_seed + 1)
    held = None
    if cfg.heldout_size is not None:
        rest = np.setdiff1d(np.arange(len(ds.y_train)), tr)
        if cfg.heldout_size > len(rest):
            raise ConfigError(f"heldout_size {cfg.heldout_size} exceeds the {len(rest)} training examples outside "
                              f"the train_size subset of {cfg.dataset}")
        held = rest[stratified_subset(ds.y_train[rest], cfg.heldout_size, cfg.data_seed + 5)]
        held_xy = (ds.x_train[held], ds.y_train[held])
    ds = take(ds, tr, te)
    if held is not None:
        ds.heldout = held_xy
        ds.subset["heldout_indices"] = held.tolist()
    if cfg.n_partitions > 1:
        part = partitions(len(ds.y_train), cfg.n_partitions, cfg.data_seed + 3)[cfg.partition]
        rows = np.asarray(ds.subset.get("train_indices", np.arange(len(ds.y_train))))[part]
        ds = take(ds, part)
        ds.subset["train_indices"] = rows.tolist()
    ds.ood = {f"ood_{name}": out_of_sample(name, ds.x_train, len(ds.y_test), data_root, download,
                                           cfg.data_seed + 4) for name in cfg.ood}
    if cfg.random_labels:
        ds.y_train = random_labels(ds.y_train, ds.n_classes, cfg.data_seed + 2)
        ds.subset = {**ds.subset, "random_labels_seed": cfg.data_seed + 2}
    return ds


def _tensors(x, mean, std, size):
    """uint8 NHWC -> float32 NHWC standardised per channel, resized up to ``size`` if smaller."""
    t = (torch.from_numpy(x).float().div_(255) - mean) / std
    if t.shape[1] != size or t.shape[2] != size:
        t = F.interpolate(t.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                          align_corners=False).permute(0, 2, 3, 1)
    return t.contiguous()


def vectors_width(path):
    """The vector width of a GloVe-format file: that of its first line with a word and at least
    two numbers (a word2vec header, ``count width``, is skipped)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.rstrip().split(" ")
            if len(fields) >= 3:
                return len(fields) - 1
    raise ConfigError(f"{path} holds no word vectors; is it a GloVe-format text file (word v1 v2 ...)?")


def load_vectors(path, vocabulary):
    """A GloVe-format file (``word v1 v2 ...`` per line) as an embedding matrix for token ids:
    (len(vocabulary) + 2, vectors_width(path)) float32; rows of words it lacks (and padding,
    unknown) stay 0.  Returns (matrix, number of vocabulary words found)."""
    index = {w: i + 2 for i, w in enumerate(vocabulary)}
    dim = vectors_width(path)
    rows = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            word, *vals = line.rstrip().split(" ")
            if word in index and len(vals) == dim:
                rows[index[word]] = np.asarray(vals, np.float32)
    if not rows:
        raise ConfigError(f"{path} holds no vector for any of the {len(vocabulary)} vocabulary words; "
                          "is it a GloVe-format text file?")
    matrix = np.zeros((len(vocabulary) + 2, dim), np.float32)
    for i, v in rows.items():
        matrix[i] = v
    return matrix, len(rows)


class _Data:
    """The split tensors in NHWC: a row gather then a permute gives channels_last batches.
    Text sets stay token ids (N, max_len)."""

    def __init__(self, ds, arch, device, embeddings=None):
        self.vectors = None
        self.curriculum = getattr(ds, "curriculum", None)  # (n_train,) scores, or None
        if ds.is_text:
            self.x = {"train": torch.from_numpy(ds.x_train).to(device), "test": torch.from_numpy(ds.x_test).to(device)}
            self.y = {"train": torch.from_numpy(ds.y_train).to(device), "test": torch.from_numpy(ds.y_test).to(device)}
            for split, x in ds.ood.items():
                self.x[split] = torch.from_numpy(x).to(device)
                self.y[split] = torch.full((len(x),), -1, dtype=torch.int64, device=device)
            if ds.heldout is not None:
                self.x["heldout"] = torch.from_numpy(ds.heldout[0]).to(device)
                self.y["heldout"] = torch.from_numpy(ds.heldout[1]).to(device)
            if embeddings:
                self.vectors = torch.from_numpy(load_vectors(embeddings, ds.vocabulary)[0])
            self.in_shape = _in_shape(ds, embeddings)
            self.n_classes = ds.n_classes
            return
        size = input_size(arch, (ds.x_train.shape[3], *ds.x_train.shape[1:3]))
        x = torch.from_numpy(ds.x_train).float().div_(255)
        mean, std = x.mean((0, 1, 2)), x.std((0, 1, 2)).clamp_min(1e-6)
        self.x = {"train": _tensors(ds.x_train, mean, std, size).to(device),
                  "test": _tensors(ds.x_test, mean, std, size).to(device)}
        self.y = {"train": torch.from_numpy(ds.y_train).to(device), "test": torch.from_numpy(ds.y_test).to(device)}
        for split, x in ds.ood.items():  # no labels: -1
            self.x[split] = _tensors(x, mean, std, size).to(device)
            self.y[split] = torch.full((len(x),), -1, dtype=torch.int64, device=device)
        if ds.heldout is not None:  # standardised by the training subset's statistics, as the test set
            self.x["heldout"] = _tensors(ds.heldout[0], mean, std, size).to(device)
            self.y["heldout"] = torch.from_numpy(ds.heldout[1]).to(device)
        self.in_shape = (ds.x_train.shape[3], size, size)
        self.n_classes = ds.n_classes

    @staticmethod
    def nchw(xb):
        return xb.permute(0, 3, 1, 2) if xb.dim() == 4 else xb


def _optimizer(cfg, params):
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


def _autocast(device, precision):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _loss(model, data, idx, device, precision):
    """The training loss of ``model`` on training examples ``idx`` (the logits in fp32)."""
    with _autocast(device, precision):
        return F.cross_entropy(model(_Data.nchw(data.x["train"][idx])).float(), data.y["train"][idx])


OUTPUT_NAMES = tuple(OUTPUT_KEYS)  # what a record keeps per entry with save_probabilities


def entry_outputs(logits, y):
    """The per-entry outputs a record keeps with save_probabilities, from logits (..., n, k) and
    labels (n,) (-1: out-of-sample, all four 0): the true-class probability, the largest
    other-class probability, ||softmax - onehot||_2 and the logit margin, each (..., n)
    float16 on the CPU.  ``scores.outputs_from_logits`` is the same in NumPy (tested equal)."""
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
        with _autocast(x.device, precision):
            logits = model(_Data.nchw(xb) if nchw else xb).float()
        preds.append(logits.argmax(1).to(torch.int16).cpu())
        if outputs:
            outs.append(entry_outputs(logits, y[a:a + batch]))
    return torch.cat(preds).numpy(), ({k: torch.cat([o[k] for o in outs]).numpy() for k in OUTPUT_NAMES}
                                      if outputs else {})


def _uses_conv(model):
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _recurrent(model):
    return any(isinstance(m, torch.nn.RNNBase) for m in model.modules())


def _fresh_model(job, cfg, data, device):
    """Job's freshly initialised net (its seed set here: init, then dropout)."""
    torch.manual_seed(job.seed)
    model = build_model(cfg.arch, data.in_shape, data.n_classes, cfg.activation, cfg.dropout).to(device)
    if data.vectors is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(data.vectors)
    return model


def _rng_state(device):
    state = {"rng": torch.get_rng_state()}
    if torch.device(device).type == "cuda":  # dropout on a GPU draws from its own generator
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(ck, device):
    torch.set_rng_state(ck["rng"])
    if "cuda_rng" in ck and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(ck["cuda_rng"], device)


def finished_checkpoint(epoch, out):
    """A finished job's checkpoint: a rerun only reads its predictions back, so its weights and
    optimiser state (200 MB for a ResNet-50 with momentum) are not written."""
    return {"epoch": epoch, "out": out}


def curriculum_scores(cfg, out, ds):
    """The per-training-example scores a curriculum orders by: the training-set accessibility
    of the record in ``cfg.curriculum_from`` (a run folder beside ``out``, or a path), checked
    to be about this configuration's training examples.  None without such a curriculum."""
    from .metrics import accessibility
    if cfg.curriculum is None or cfg.curriculum == "random":
        return None
    src = Path(cfg.curriculum_from)
    src = src if src.is_absolute() else Path(out).resolve().parent / src
    try:
        rec = Record.load(src)
    except (RecordError, OSError) as exc:
        raise ConfigError(f"curriculum_from {cfg.curriculum_from!r}: no finished record at {src} ({exc}); "
                          "train that collection first") from None
    if "train" not in rec.predictions or not np.array_equal(rec.labels["train"], ds.y_train):
        raise ConfigError(f"curriculum_from {cfg.curriculum_from!r} was trained on other training examples; a "
                          "curriculum needs scores of this configuration's own training set")
    return accessibility(rec.tp_agreement("train"))


def curriculum_pace(cfg, epoch):
    """The share of the training set epoch ``epoch`` draws from: curriculum_start at epoch 1,
    growing geometrically to all of it at epoch curriculum_ramp."""
    from .config import CURRICULUM_RAMP, CURRICULUM_START
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
    jitter = torch.rand(n, generator=torch.Generator().manual_seed(seed ^ 0xC0DE)).numpy()
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


def _train_member(job, cfg, data, ckpt_path, device, on_epoch=lambda: None, checkpoint_every_s=0.0, keep=None,
                  precision="fp32"):
    """Train one job to its end, checkpointing as it goes; returns its predictions (and puts
    the trained model in ``keep["model"]`` when a dict is given)."""
    ck = _load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ck is not None and ck["epoch"] == job.total:  # finished: its checkpoint holds no weights
        if keep is None:
            return upgrade_outputs(ck["out"], cfg.save_probabilities)
        ck = None  # the caller wants the trained net: train it again from its seeds
    model = _fresh_model(job, cfg, data, device)
    if _uses_conv(model):
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(cfg, model.parameters())
    order = torch.Generator().manual_seed(job.seed ^ 0x5EED)
    n_rec = len(job.record_at)
    out = {s: empty_outputs(n_rec, len(data.y[s]), cfg.save_probabilities) for s in data.x}
    start = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        _set_rng_state(ck, device)
        order.set_state(ck["order"])
        out, start = upgrade_outputs(ck["out"], cfg.save_probabilities), ck["epoch"]
    n = len(data.y["train"])
    rank = curriculum_rank(cfg, job.seed, n, data.curriculum)
    saved_at = time.perf_counter()
    for epoch in range(start + 1, job.total + 1):
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, epoch)
        model.train()
        perm = epoch_order(n, order, epoch, cfg, rank).to(data.y["train"].device)
        for a in range(0, n, cfg.batch_size):
            loss = _loss(model, data, perm[a:a + cfg.batch_size], device, precision)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for row, (e, _) in enumerate(job.record_at):
            if e == epoch:
                for s in data.x:
                    pred, outputs = predict(model, data.x[s], data.y[s], precision=precision,
                                            outputs=cfg.save_probabilities)
                    out[s]["pred"][row] = pred
                    for k, v in outputs.items():
                        out[s][k][row] = v
        if epoch == job.total:
            atomic_torch_save(ckpt_path, finished_checkpoint(epoch, out))
        elif time.perf_counter() - saved_at >= checkpoint_every_s:
            atomic_torch_save(ckpt_path, {"epoch": epoch, "model": model.state_dict(),
                                          "optimizer": opt.state_dict(), "order": order.get_state(),
                                          "out": out, **_rng_state(device)})
            saved_at = time.perf_counter()
        on_epoch()
    if keep is not None:
        keep["model"] = model
    return out


# --- worker processes ----------------------------------------------------------------------------
# Plain subprocesses, not multiprocessing: spawn re-imports the caller's __main__, which breaks
# scripts without a main guard and some notebooks; a worker rebuilds its data from the config.

def worker_main(out, names, threads, data_root, download, checkpoint_every_s, precision="fp32"):
    """Entry point of ``python -m agreebook.worker``: train the jobs of <out> named in ``names``."""
    import json
    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(json.loads((Path(out) / "config.json").read_text())["config"])
    ds = prepare_dataset(cfg, data_root, download)
    ds.curriculum = curriculum_scores(cfg, out, ds)
    data = _Data(ds, cfg.arch, "cpu", cfg.embeddings)
    parent = os.getppid()

    def tick():
        if os.getppid() != parent:  # the driver was killed: stop, the checkpoints let a rerun resume
            raise SystemExit(3)
        print("epoch", flush=True)

    for job in (j for j in make_jobs(cfg) if j.name in names):
        path = Path(out) / "checkpoints" / f"{job.name}.pt"
        _train_member(job, cfg, data, path, "cpu", on_epoch=tick, checkpoint_every_s=checkpoint_every_s,
                      precision=precision)
        print("done", job.name, flush=True)



def _pick_engine(name, device, recurrent, stack=None):
    if name not in ("auto", "loop", "stacked"):
        raise ConfigError(f"unknown engine {name!r}; use 'loop', 'stacked' or 'auto'")
    if stack is not None and (not isinstance(stack, int) or stack < 1):
        raise ConfigError(f"stack is the number of members trained together: a positive integer; got {stack!r}")
    if name == "stacked" and recurrent:
        raise ConfigError("recurrent nets (LSTM) do not run under torch.func.vmap; use --engine loop (engine='loop' from Python)")
    if name == "auto":
        return "stacked" if torch.device(device).type == "cuda" and not recurrent else "loop"
    return name


def _pick_precision(name, device):
    if name not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"unknown precision {name!r}; use 'fp32', 'bf16' or 'auto'")
    if name == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return name


def _stack_size(cfg, data, jobs, device, precision):
    """Members per stacked group: all of them on a CPU; on a GPU as many as half its free
    memory holds, from one member's measured training-step peak."""
    if torch.device(device).type != "cuda" or len(jobs) == 1:
        return len(jobs)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model = _fresh_model(jobs[0], cfg, data, device)
    opt = _optimizer(cfg, model.parameters())
    loss = _loss(model, data, torch.arange(min(cfg.batch_size, len(data.y["train"])), device=device), device,
                 precision)
    loss.backward()
    opt.step()
    per_member = torch.cuda.max_memory_allocated(device) - before
    del model, opt, loss
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(len(jobs), int(0.5 * free / max(per_member, 1))))


def _pick_device(name):
    """The device to train on, from "auto", "cpu", "cuda" or "cuda:N"."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu (device='cpu' from Python)")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                              "device(s), numbered from 0")
    return "cpu" if dev.type == "cpu" else str(dev)


def _versions():
    import torchvision
    return {"agreebook": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _identity(cfg, ds):
    ident = {"config": cfg.to_dict(), "data_fingerprint": ds.fingerprint()}
    revision = get_arch(cfg.arch).revision
    if revision:  # absent at 0, so folders from before revisions existed still match
        ident["arch_revision"] = revision
    return ident


def _in_shape(ds, embeddings=None):
    """What build_model takes for this data: (C, H, W), or (vocab, max_len, emb_dim) for text."""
    if not ds.is_text:
        return (ds.x_train.shape[3], *ds.x_train.shape[1:3])
    dim = vectors_width(embeddings) if embeddings else TEXT_EMBEDDING_DIM
    return (len(ds.vocabulary) + 2, ds.x_train.shape[1], dim)


def _check_runtime(rt):
    """Runtime values that cannot run, as one ConfigError, before anything is written."""
    if rt.workers is not None and (isinstance(rt.workers, bool) or not isinstance(rt.workers, int) or rt.workers < 1):
        raise ConfigError(f"workers (--workers) must be a positive integer; got {rt.workers!r}")
    c = rt.checkpoint_every_s
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (c >= 0):  # NaN fails too
        raise ConfigError(f"checkpoint_every_s (--checkpoint-every) must be 0 or a positive number of seconds; got {c!r}")
    _pick_engine(rt.engine, "cpu", False, rt.stack)  # names and the stack size, before any download
    _pick_precision(rt.precision, "cpu")


def _check_out(out):
    if out is None or str(out).strip() == "":
        raise ConfigError("the output folder (--out) is empty; give a folder for the record, e.g. runs/digits")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output folder (--out) {out} is an existing file; give a folder")
    return out


def _read_identity(path):
    import json
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict) or "config" not in old:
            raise ValueError("no 'config' key")
        return old
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} is corrupted ({exc}); delete the folder {path.parent} to train again") from None


def _load_checkpoint(path):
    """A checkpoint, or None when its bytes are damaged (a disk fault: it is written
    atomically): it is kept as ``<name>.corrupt`` and that job trains again from its seeds.
    An unreadable file (permissions, I/O) is an error, not a reason to retrain."""
    import pickle
    import sys
    import zipfile
    try:
        return torch.load(path, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        path.replace(path.with_suffix(".corrupt"))
        print(f"agreebook: checkpoint {path} is damaged ({type(exc).__name__}); kept as {path.with_suffix('.corrupt').name}, "
              "its member trains again from its seeds", file=sys.stderr)
        return None


def _member_threads(serial, conv, device, workers=None, n_jobs=1):
    """Threads each member computes with.  A member's float arithmetic depends on its thread
    count, so it must not depend on how many members share the machine: conv and recurrent
    members always compute on one thread (in worker processes, one per core, or in-process
    for small work); other nets (matmuls that use every core) take the cores a worker gets at
    the run folder's first start, and every resume reuses that number (config.json)."""
    if device != "cpu":
        return torch.get_num_threads()
    if serial or conv:
        return 1
    cores = os.cpu_count() or 1
    return max(1, cores // min(workers or 1, n_jobs, cores))


def train_collection(cfg: TrainConfig, out, runtime: Runtime | None = None) -> Record:
    """Train cfg.n_models members and write their predictions to ``<out>/record.npz``.

    Re-running the same call on the same ``out`` resumes a killed run, or returns the finished
    record at once; a different configuration on an existing ``out`` is refused.  Every value
    is checked before anything is written; a second training into the same folder while one
    runs is refused (a lock on the folder).
    """
    rt = runtime or Runtime()
    _check_runtime(rt)
    cfg = cfg.validate().resolved()
    out = _check_out(out)
    device = _pick_device(rt.device)
    ds = prepare_dataset(cfg, rt.data_root, rt.download)
    if cfg.embeddings:  # its words must meet the vocabulary: checked now, not after writing
        load_vectors(cfg.embeddings, ds.vocabulary)
    with torch.device("meta"):  # its structure and size only: no init, no memory
        sample = build_model(cfg.arch, _in_shape(ds, cfg.embeddings), ds.n_classes, cfg.activation, cfg.dropout)
        try:  # the optimiser checks its own values (e.g. Adam's betas): fail before writing
            _optimizer(cfg, sample.parameters())
        except ValueError as exc:
            raise ConfigError(f"the optimiser refuses this configuration: {exc}") from None
    # a recurrent net is a chain of small matmuls: a second thread costs more in synchronisation
    # than it gains (an LSTM epoch measured 1.7 s on 1 thread, far slower on 2 under load)
    serial = _recurrent(sample)
    engine = _pick_engine(rt.engine, device, serial, rt.stack)
    if cfg.curriculum is not None:
        if engine == "stacked" and rt.engine == "stacked":
            raise ConfigError("a curriculum runs on the loop engine; use engine 'loop' or 'auto'")
        engine = "loop"
    ds.curriculum = curriculum_scores(cfg, out, ds)  # checked before anything is written
    precision = _pick_precision(rt.precision, device)
    ident = _identity(cfg, ds)
    ident_path = out / "config.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in the output folder {out}: permission denied; choose another --out")
    with FolderLock(out) as lock:
        return _train_locked(cfg, out, rt, device, ds, sample, serial, engine, precision, ident, ident_path, lock)


def _train_locked(cfg, out, rt, device, ds, sample, serial, engine, precision, ident, ident_path, lock):
    old = _read_identity(ident_path) if ident_path.exists() else None
    try:
        prev = Record.load(out) if (out / "record.npz").exists() else None  # read once: it can be large
    except RecordError as exc:
        raise RecordError(f"{exc}; delete the folder {out} to train again") from None
    if old is not None and prev is None and not any((out / "checkpoints").glob("*.pt")):
        old = None  # a start that failed before training anything: the corrected command starts afresh
    if old is None and prev is not None:  # a folder from before config.json kept these
        old = {"config": prev.meta.get("config"), "data_fingerprint": prev.meta.get("data_fingerprint"),
               "arch_revision": prev.meta.get("arch_revision"),
               "threads_per_member": prev.meta.get("threads_per_member") or prev.meta.get("threads_per_worker"),
               "runs": prev.meta.get("runs", [])}
    if old is not None:
        if {k: old.get(k) for k in ident} != ident:
            diff = config_diff(old["config"] if isinstance(old["config"], dict) else {}, ident["config"])
            if old.get("data_fingerprint") != ident["data_fingerprint"]:
                diff.append("data: the dataset's arrays differ (fingerprint)")
            if old.get("arch_revision") != ident.get("arch_revision"):
                diff.append(f"architecture: {cfg.arch} was trained here as revision {old.get('arch_revision') or 0} "
                            f"of its network; it is now revision {ident.get('arch_revision') or 0} (models.ARCHS)")
            raise RecordError(f"{out} holds a record of another configuration:\n  " + "\n  ".join(diff) +
                              "\nUse another output folder, or delete this one to start over.")
        if prev is not None and prev.is_complete:
            return prev
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    remove_stale_temporaries(out)  # writes a kill cut short (io._atomic)
    remove_stale_temporaries(ckpt_dir)

    jobs = make_jobs(cfg)
    n_ep = len(cfg.epochs)
    labels = {"train": ds.y_train, "test": ds.y_test,
              **({"heldout": ds.heldout[1]} if ds.heldout is not None else {}),
              **{s: np.full(len(x), -1, np.int64) for s, x in ds.ood.items()}}
    preds = {s: np.full((cfg.n_models, n_ep, len(y)), -1, np.int16) for s, y in labels.items()}
    # the outputs only where they are kept (save_probabilities): four more arrays of the
    # predictions' size, which a 100-model ImageNet collection would feel
    outputs = ({s: {k: np.full(p.shape, np.nan, np.float16) for k in OUTPUT_NAMES} for s, p in preds.items()}
               if cfg.save_probabilities else None)
    complete = np.zeros((cfg.n_models, n_ep), bool)
    finished, started = {}, {}  # a killed run's checkpoints: finished jobs' predictions, the rest's epoch
    for job in jobs:
        path = ckpt_dir / f"{job.name}.pt"
        ck = _load_checkpoint(path) if path.exists() else None
        if ck is not None:
            if ck["epoch"] == job.total:
                finished[job.name] = upgrade_outputs(ck["out"], cfg.save_probabilities)
            else:
                started[job.name] = ck["epoch"]
    todo = [j for j in jobs if j.name not in finished]
    cores = os.cpu_count() or 1
    epochs_left = sum(j.total - started.get(j.name, 0) for j in todo)
    # worker start-up (~2 s: torch import, data) only pays off on enough work; the thread count
    # of a member is fixed by the run's first start (its numbers depend on it)
    conv = _uses_conv(sample)
    stored = (old or {}).get("threads_per_member")
    stored = stored if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0 else None
    threads = _member_threads(serial, conv, device, rt.workers, len(jobs))
    if device == "cpu" and not (serial or conv) and stored:
        threads = stored  # fixed at the folder's first start (_member_threads)
    if engine == "stacked":  # one process, every member at once: torch's threads (records not comparable to the loop's)
        threads = torch.get_num_threads()
    default_workers = cores if (conv or serial) and len(ds.y_train) * epochs_left >= SMALL_WORK else 1
    workers = (1 if device != "cpu" or engine == "stacked"
               else max(1, min(rt.workers or default_workers, len(todo), cores)))
    invocation = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device, "engine": engine,
                  "precision": precision, "workers": workers, "epochs_left": epochs_left}
    runs = [r for r in (old or {}).get("runs", []) if isinstance(r, dict)] + [invocation]
    atomic_write_json(ident_path, {**ident, "threads_per_member": threads, "runs": runs})
    engines = sorted({r["engine"] for r in runs})
    meta = {"dataset": cfg.dataset, "arch": cfg.arch, "arch_description": get_arch(cfg.arch).description,
            "n_models": cfg.n_models, "protocol": cfg.protocol, "classes": list(ds.classes),
            "n_classes": ds.n_classes, "data_source": ds.source, "data_fingerprint": ident["data_fingerprint"],
            "subset": ds.subset, "config": cfg.to_dict(), "member_seeds": [j.seed for j in jobs],
            "n_parameters": count_parameters(sample), "device": device,
            "engine": engines[0] if len(engines) == 1 else "+".join(engines),
            "precision": "+".join(sorted({r["precision"] for r in runs})),
            "threads_per_member": threads, "runs": runs, "versions": _versions(), "started": runs[0]["started"],
            **({"arch_revision": ident["arch_revision"]} if "arch_revision" in ident else {})}
    t0 = time.perf_counter()
    last_write = [t0]

    def absorb(job, res):
        res = upgrade_outputs(res, cfg.save_probabilities)  # a worker's checkpoint may predate this version
        for row, (_, i) in enumerate(job.record_at):
            for s in preds:
                preds[s][job.member, i] = res[s]["pred"][row]
                for k in OUTPUT_NAMES if outputs is not None else ():
                    outputs[s][k][job.member, i] = res[s][k][row]
            complete[job.member, i] = True
        if time.perf_counter() - last_write[0] > 30:
            write()
            last_write[0] = time.perf_counter()

    def write():
        meta["wall_time_s"] = round(wall_before + time.perf_counter() - t0, 2)
        Record(preds, labels, cfg.epochs, meta=meta,
               outputs=outputs, complete=complete).save(out)

    # a resumed run adds its time to the killed run's
    wall_before = prev.meta.get("wall_time_s", 0) if prev is not None else 0
    for job in jobs:
        if job.name in finished:
            absorb(job, finished.pop(job.name))
    all_epochs = sum(j.total for j in jobs)
    from tqdm import tqdm  # tqdm.auto warns in kernels without ipywidgets
    bar = tqdm(total=all_epochs, initial=all_epochs - epochs_left, unit="epoch", disable=not rt.progress,
               desc=f"{cfg.dataset}/{cfg.arch} x{cfg.n_models}")
    try:
        if engine == "stacked":  # on torch's threads, as recorded
            _run_stacked(todo, started, cfg, ds, ckpt_dir, device, precision, rt, absorb, bar, meta)
        elif workers == 1:
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                data = _Data(ds, cfg.arch, device, cfg.embeddings)
                for job in todo:
                    absorb(job, _train_member(job, cfg, data, ckpt_dir / f"{job.name}.pt", device,
                                              on_epoch=lambda: bar.update(1),
                                              checkpoint_every_s=rt.checkpoint_every_s, precision=precision))
            finally:
                torch.set_num_threads(saved)
        else:
            _run_workers(todo, out, workers, threads, rt, absorb, bar, precision, lock.fd)
    finally:
        bar.close()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write()
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return Record.load(out)


def _run_stacked(todo, started, cfg, ds, ckpt_dir, device, precision, rt, absorb, bar, meta):
    """Train the jobs in groups of one length, recorded epochs and resume point, each group in
    stacks of ``rt.stack`` members (default: ``_stack_size``)."""
    from .stacked import train_group
    data = _Data(ds, cfg.arch, device, cfg.embeddings)
    groups = {}
    for job in todo:
        groups.setdefault((job.total, job.record_at, started.get(job.name, 0)), []).append(job)
    sizes = []
    for group in groups.values():
        size = rt.stack or _stack_size(cfg, data, group, device, precision)
        sizes.append(size)
        for a in range(0, len(group), size):
            chunk = group[a:a + size]
            outs = train_group(chunk, cfg, data, [ckpt_dir / f"{j.name}.pt" for j in chunk], device,
                               checkpoint_every_s=rt.checkpoint_every_s, on_epoch=lambda: bar.update(1),
                               precision=precision)
            for job, res in zip(chunk, outs):
                absorb(job, res)
    meta["stack"] = max(sizes, default=0)


def member_model(cfg: TrainConfig, out, member=0, runtime: Runtime | None = None):
    """A trained network of a collection's configuration: member ``member``'s seeds, trained
    in-process to the last recorded epoch (chapter 6 takes its features).

    The collection keeps only predictions, so the net is trained again with the same seeds,
    thread count and precision as the record says its members had, and its weights are kept in
    ``<out>/models/m<member>.pt`` for the next call.  Returns (model in eval mode, the _Data
    it was trained on).
    """
    rt = runtime or Runtime()
    cfg = cfg.validate().resolved()
    if cfg.protocol != "trajectory":
        raise ConfigError("member_model needs the trajectory protocol")
    if not 0 <= member < cfg.n_models:
        raise ConfigError(f"member must be in [0, {cfg.n_models}); got {member}")
    device = _pick_device(rt.device)
    recorded = _recorded_run(out)
    precision = recorded.get("precision") if recorded.get("precision") in ("fp32", "bf16") else \
        _pick_precision(rt.precision, device)
    ds = prepare_dataset(cfg, rt.data_root, rt.download)
    ds.curriculum = curriculum_scores(cfg, out, ds)
    with torch.device("meta"):
        sample = build_model(cfg.arch, _in_shape(ds, cfg.embeddings), ds.n_classes, cfg.activation, cfg.dropout)
    saved = torch.get_num_threads()
    threads = recorded.get("threads_per_member")
    if not (isinstance(threads, int) and threads > 0):  # an old record: the rule of _member_threads
        threads = 1 if device == "cpu" and (_uses_conv(sample) or _recurrent(sample)) else saved
    torch.set_num_threads(threads)
    try:
        data = _Data(ds, cfg.arch, device, cfg.embeddings)
        return _member_model(cfg, out, member, device, data, precision)
    finally:
        torch.set_num_threads(saved)


def _member_model(cfg, out, member, device, data, precision):
    job = make_jobs(cfg)[member]
    path = Path(out) / "models" / f"{job.name}.pt"
    model = None
    if path.exists():
        torch.manual_seed(job.seed)
        model = build_model(cfg.arch, data.in_shape, data.n_classes, cfg.activation, cfg.dropout).to(device)
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
        except (RuntimeError, EOFError, ValueError) as exc:  # damaged bytes: train it again
            import sys
            print(f"agreebook: {path} is damaged ({type(exc).__name__}); training member {member} again",
                  file=sys.stderr)
            model = None
    if model is None:
        import tempfile
        keep = {}
        with tempfile.TemporaryDirectory() as tmp:  # the collection's threads and precision (member_model)
            _train_member(job, cfg, data, Path(tmp) / "ck.pt", device, checkpoint_every_s=float("inf"), keep=keep,
                          precision=precision)
        model = keep["model"]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(path, model.state_dict())
    return model.eval(), data


def _recorded_run(out):
    """What a collection's record.json says of how its members computed ({} if nothing)."""
    import json
    path = Path(out) / "record.json"
    try:
        meta = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


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
    return torch.cat([body(_Data.nchw(x[a:a + batch])).float().cpu() for a in range(0, len(x), batch)]).numpy()


def _run_workers(jobs, out, workers, threads, rt, absorb, bar, precision="fp32", lock_fd=None):
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
                        ck = torch.load(out / "checkpoints" / f"{word[1]}.pt", weights_only=False)
                        absorb(by_name[word[1]], ck["out"])
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
