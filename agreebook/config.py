"""Every hyperparameter of a collection, in one place, and how to run it.

A ``TrainConfig`` is what identifies a record: two runs with equal resolved configs produce
the same record.  ``None`` means "the architecture's paper default" (``ARCH_DEFAULTS``).
Overrides are plain keyword values, type-checked; unknown keys are errors.  A ``Runtime`` says
where and how to run (device, engine, executor, workers), none of which changes a CPU record.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from dataclasses import dataclass, fields
from typing import Optional, Tuple

from .data import DATASETS, TEXT_DATASETS, check_dataset_name
from .models import ACTIVATIONS, ARCHS, get_arch

OPTIMIZERS = ("sgd", "adam", "adadelta", "rmsprop")
PROTOCOLS = ("trajectory", "retrain")
CURRICULA = ("easy", "hard", "random")
CURRICULUM_START, CURRICULUM_RAMP = 0.2, 4  # defaults: a fifth of the set, all of it by epoch 4

# Each architecture's optimiser and schedule (what TrainConfig's None fields resolve to):
# the paper's SGD recipe (Suppl B) unless noted; lr is divided by lr_decay every lr_step epochs
SGD_STEP = {"optimizer": "sgd", "lr": 0.05, "lr_decay": 1.8, "lr_step": 20, "batch_size": 100,
            "momentum": 0.0, "weight_decay": 0.0}
TORCHVISION_SGD = {"optimizer": "sgd", "lr": 0.01, "lr_decay": 1.8, "lr_step": 20, "batch_size": 100,
                   "momentum": 0.9, "weight_decay": 5e-4}
ARCH_DEFAULTS = {
    "st_vgg": SGD_STEP, "small_st_vgg": SGD_STEP, "linear_st_vgg": SGD_STEP, "linear_small_st_vgg": SGD_STEP,
    "mnist_net": {**SGD_STEP, "optimizer": "adadelta", "lr": 1.0, "lr_decay": 1.0},  # the paper's AdaDelta
    "fc": {**SGD_STEP, "lr": 0.04, "lr_decay": 1.0},
    "linear": {**SGD_STEP, "lr_decay": 1.0},
    "bilstm_attention": {**SGD_STEP, "optimizer": "adam", "lr": 0.001, "lr_decay": 1.0},
    **{n: TORCHVISION_SGD for n in ("vgg19", "resnet18", "resnet50", "alexnet", "densenet121")},
}

# §3.2's robustness sweep: one change at a time to a collection's resolved config
SWEEP = {"lr_factors": (0.5, 2.0), "batch_factors": (0.5, 2.0),
         "optimizers": {"adam": {"optimizer": "adam", "lr": 0.001, "momentum": 0.0},
                        "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0}},
         "dropouts": (0.0, 0.1),  # 0.1: the small st-VGG's 0.25 / 0.5 become 0.1 / 0.2
         "activations": ("relu", "tanh", "elu"),  # the first two the architecture does not use
         "n_activations": 2}

# Every random stream a record depends on, from the config's two seeds.  Changing any of these
# changes every record trained after it: the committed book's records were trained with them.
# data_seed + offset: the draws of prepare.prepare_dataset (train_size uses data_seed itself)
DATA_SEEDS = {"test_subset": 1, "random_labels": 2, "partitions": 3, "ood": 4, "heldout": 5}
# a member's seed is SeedSequence([seed, member(, extent + 1)]) (member.member_seed): init and
# dropout draw from it; its data order and its curriculum's tie-breaks from it XOR these
ORDER_SALT, CURRICULUM_SALT = 0x5EED, 0xC0DE


class ConfigError(ValueError):
    """A configuration value that cannot be run."""


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
    # where jobs run: "local" (in this process, or worker processes on a CPU) or "ray" (Ray tasks
    # on a local instance, or on the cluster at ray_address; pip install -e '.[cluster]')
    executor: str = "local"
    ray_address: str | None = None
    ray_gpus_per_group: float = 1.0  # the GPU share a stacked group asks of Ray: 0.5 puts two on a GPU


def fits(arch, dataset):
    """Whether architecture ``arch`` takes ``dataset``'s kind of input (text or images)."""
    return (get_arch(arch).modality == "text") == (dataset in TEXT_DATASETS)


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "digits"
    arch: str = "small_st_vgg"
    n_models: int = 10
    epochs: Tuple[int, ...] = (1, 2, 4, 8, 16)  # the recorded epochs, increasing
    seed: int = 0
    protocol: str = "trajectory"  # or "retrain": fresh members for every recorded epoch (Suppl D)
    random_labels: bool = False  # replace the train labels by seeded uniform ones (paper §5)
    train_size: Optional[int] = None  # stratified subset of the training set
    test_size: Optional[int] = None
    # training-set examples the collection never trains on, predicted with their labels as the
    # split "heldout" (stratified, from outside the train_size subset).  Their TP-agreement at
    # the last epoch is a one-subset, one-size analogue of the C-score (Jiang et al. 2021: held-out
    # accuracy at convergence, averaged over many random training subsets of several sizes)
    heldout_size: Optional[int] = None
    data_seed: int = 0  # synthetic data, subsets and random labels
    optimizer: Optional[str] = None
    lr: Optional[float] = None
    lr_decay: Optional[float] = None  # lr is divided by this every lr_step epochs
    lr_step: Optional[int] = None
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None
    batch_size: Optional[int] = None
    activation: Optional[str] = None
    dropout: Optional[float] = None
    # also keep four float16 outputs per entry (true-class and largest other probability, error
    # norm, logit margin): what agreebook.scores' probability-based scores need
    save_probabilities: bool = False
    n_partitions: int = 1  # split the (subset) training set into this many disjoint parts (§3.3)
    partition: int = 0  # ... and train on this one
    ood: Tuple[str, ...] = ()  # out-of-sample inputs also predicted (§3.4): "noise" or dataset names
    embeddings: Optional[str] = None  # text: a GloVe-format vectors file for the first layer
    # curriculum (Hacohen & Weinshall 2019, the paper's §7): each epoch draws its minibatches from
    # the easiest share of the training set, growing from curriculum_start to all of it over
    # curriculum_ramp epochs; "easy" orders by the accessibility of another collection's record
    # (curriculum_from: its run folder beside this one), "hard" the reverse, "random" a fixed
    # random order per member (the pacing alone).  None: plain shuffling
    curriculum: Optional[str] = None
    curriculum_from: Optional[str] = None
    curriculum_start: Optional[float] = None
    curriculum_ramp: Optional[int] = None
    # imagefolder:<path> datasets: the shorter side resized to this, then the centre crop x crop
    # (None: 256 and 224, torchvision's ImageNet evaluation transform; agreebook.imagefolder)
    resize: Optional[int] = None
    crop: Optional[int] = None

    def replace(self, **overrides):
        return dataclasses.replace(self, **check_overrides(overrides))

    def resolved(self):
        """The config with every architecture default filled in (and an image folder's path
        absolute, its resize and crop explicit: one identity however they were written)."""
        get_arch(self.arch)  # an unknown name: one message listing the known ones
        if self.arch not in ARCH_DEFAULTS:
            raise ConfigError(f"{self.arch} has no optimiser defaults in config.ARCH_DEFAULTS; add them there")
        filled = {k: v for k, v in ARCH_DEFAULTS[self.arch].items() if getattr(self, k) is None}
        if self.dataset.startswith("imagefolder:"):
            from .imagefolder import CROP, PREFIX, RESIZE
            filled.update(dataset=PREFIX + str(Path(self.dataset[len(PREFIX):]).expanduser().resolve()),
                          resize=self.resize or RESIZE, crop=self.crop or CROP)
        return dataclasses.replace(self, **filled)

    def validate(self):
        """Raise ConfigError on the first value that cannot run; returns self."""
        try:
            check_dataset_name(self.dataset)
            arch = get_arch(self.arch)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        folder = self.dataset.startswith("imagefolder:")
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if v is not None and (not folder or v < 1):
                raise ConfigError(f"{name} applies to imagefolder:<path> datasets and must be positive; got {v} "
                                  f"for {self.dataset}")
        if folder and self.ood:
            raise ConfigError("out-of-sample inputs (ood) are not drawn for image folders yet; leave ood empty")
        if folder and (self.crop or 224) < arch.min_size:
            raise ConfigError(f"{self.arch} takes images of at least {arch.min_size} pixels; set crop (and resize) "
                              f"to that at least")
        if self.n_models < 2:
            raise ConfigError(f"n_models must be at least 2 to measure agreement; got {self.n_models}")
        for name in ("seed", "data_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a non-negative integer; got {getattr(self, name)}")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{f.name} must be a finite number; got {v}")
        if not self.epochs or any(e < 1 for e in self.epochs) or \
                any(b <= a for a, b in zip(self.epochs, self.epochs[1:])):
            raise ConfigError(f"epochs must be positive and strictly increasing; got {list(self.epochs)}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        r = self.resolved()
        if r.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {r.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        for name in ("lr", "lr_decay", "batch_size", "lr_step"):
            if getattr(r, name) <= 0:
                raise ConfigError(f"{name} must be positive; got {getattr(r, name)}")
        for name in ("momentum", "weight_decay"):
            if getattr(r, name) is not None and getattr(r, name) < 0:
                raise ConfigError(f"{name} must be zero or positive; got {getattr(r, name)}")
        if not 0 <= r.partition < r.n_partitions:
            raise ConfigError(f"partition must be in [0, n_partitions={r.n_partitions}); got {r.partition}")
        for name in r.ood:
            if name != "noise" and name not in DATASETS:
                raise ConfigError(f"unknown out-of-sample set {name!r}; use 'noise' or a dataset: "
                                  f"{', '.join(DATASETS)}")
        for name in ("train_size", "test_size", "heldout_size"):
            if getattr(r, name) is not None and getattr(r, name) < 1:
                raise ConfigError(f"{name} must be positive; got {getattr(r, name)}")
        if r.heldout_size is not None and (r.train_size is None or r.n_partitions > 1):
            raise ConfigError("heldout_size takes its examples from outside the training subset: set train_size "
                              "(and keep n_partitions 1)")
        if r.activation is not None and r.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {r.activation!r}; known: {', '.join(ACTIVATIONS)}")
        if r.dropout is not None and not 0 <= r.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1); got {r.dropout}")
        if not arch.configurable and (r.activation is not None or r.dropout is not None):
            raise ConfigError(f"{r.arch} takes no activation / dropout overrides")
        text = self.dataset in TEXT_DATASETS
        if not fits(r.arch, self.dataset):
            fitting = [a for a in ARCHS if fits(a, self.dataset)]
            raise ConfigError(f"{r.arch} takes {'text' if arch.modality == 'text' else 'images'}, and {self.dataset} is "
                              f"{'text' if text else 'images'}; use one of: {', '.join(fitting)}")
        if r.curriculum is not None:
            if r.curriculum not in CURRICULA:
                raise ConfigError(f"unknown curriculum {r.curriculum!r}; known: {', '.join(CURRICULA)}")
            if r.curriculum != "random" and not r.curriculum_from:
                raise ConfigError(f"curriculum {r.curriculum!r} orders by a record's accessibility: set "
                                  "curriculum_from to that collection's run folder")
            if r.curriculum_start is not None and not 0 < r.curriculum_start <= 1:
                raise ConfigError(f"curriculum_start must be in (0, 1]; got {r.curriculum_start}")
            if r.curriculum_ramp is not None and r.curriculum_ramp < 1:
                raise ConfigError(f"curriculum_ramp must be at least 1 epoch; got {r.curriculum_ramp}")
        elif any(getattr(r, k) is not None for k in ("curriculum_from", "curriculum_start", "curriculum_ramp")):
            raise ConfigError("curriculum_from, curriculum_start and curriculum_ramp need a curriculum")
        if r.embeddings is not None:
            if not text:
                raise ConfigError("embeddings (a word-vectors file) apply to text datasets only")
            if not Path(r.embeddings).is_file():
                raise ConfigError(f"embeddings file {r.embeddings!r} does not exist; give a GloVe-format "
                                  "text file (a word, then its numbers, per line) or leave it unset")
        return self

    def to_dict(self):
        d = dataclasses.asdict(self)
        # settings added after records existed are left out at their defaults, so those
        # records keep their identity (run folders and the resume check compare these dicts)
        for key in _LATER_FIELDS:
            if d[key] is None:
                del d[key]
        d["epochs"] = list(self.epochs)
        d["ood"] = list(self.ood)
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(**check_overrides(d))


_TYPES = {f.name: f.type for f in fields(TrainConfig)}
_LATER_FIELDS = ("embeddings", "curriculum", "curriculum_from", "curriculum_start", "curriculum_ramp", "heldout_size",
                 "resize", "crop")


def check_overrides(overrides, cls=None, what="setting"):
    """Type-check plain overrides against the fields of a dataclass (TrainConfig by default; the
    book's ``Preset``), from their annotations: str, int, float, bool, Optional[...] and
    Tuple[int | Optional[int] | str, ...]; unknown keys are errors.  Integers may come as digit
    strings and tuples as "1,2,4" (the command line's form)."""
    types = _TYPES if cls is None else {f.name: f.type for f in fields(cls)}
    out = {}
    for key, value in overrides.items():
        if key not in types:
            raise ConfigError(f"unknown {what} {key!r}; {what}s are: {', '.join(types)}")
        t = types[key]
        optional = str(t).startswith("Optional")
        none_items = "Tuple[Optional" in str(t)  # e.g. sizes, None for "all of it"
        if value is None and optional:
            out[key] = None
            continue
        base = str(t).replace("Optional[", "").rstrip("]")
        if "Tuple" in base:
            if _is_int(value) and not isinstance(value, str):
                value = [value]  # --set epochs=3: one recorded epoch
            if isinstance(value, str):
                text, value = value, value.replace(" ", "").split(",") if value.strip() else []
                if "" in value:
                    raise ConfigError(f"{key} must be a comma-separated list without empty items; got {text!r}")
            if "int" in base:
                if not isinstance(value, (list, tuple)) or not all(_is_int(v) or (none_items and v in (None, "None"))
                                                                   for v in value):
                    raise ConfigError(f"{key} must be a list of integers{' (or None)' if none_items else ''}; "
                                      f"got {value!r}")
                out[key] = tuple(None if v in (None, "None") else int(v) for v in value)
            else:
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{key} must be a list of names; got {value!r}")
                out[key] = tuple(value)
        elif base == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be True or False; got {value!r}")
            out[key] = value
        elif base == "int":
            if not _is_int(value):
                raise ConfigError(f"{key} must be an integer; got {value!r}")
            out[key] = int(value)
        elif base == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number; got {value!r}")
            out[key] = float(value)
        else:
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a string; got {value!r}")
            out[key] = value
    return out


def _is_int(v):
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v.lstrip("-").isdigit())


def config_diff(a, b):
    """Human-readable differences between two config dicts."""
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} (record) vs {b.get(k)!r} (now)" for k in keys if a.get(k) != b.get(k)]
