"""Named datasets as plain arrays: uint8 images (N, H, W, C), int64 labels, class names.

Lookup order for the torchvision datasets, under a data root (argument, else the
``AGREEBOOK_DATA`` environment variable, else ``~/.cache/agreebook``):

1. a prepared file ``<root>/<name>.npz`` with keys x_train, y_train, x_test, y_test, classes;
2. torchvision's own dataset class under ``<root>`` (downloading only if allowed), after
   which the prepared file is written so later loads skip torchvision.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .io import atomic_savez


class DatasetError(ValueError):
    """A dataset that cannot be loaded: unknown, or missing offline."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # (n_train, H, W, C) uint8
    y_train: np.ndarray  # (n_train,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list
    source: str = ""
    subset: dict = field(default_factory=dict)  # which examples of the named set these are
    ood: dict = field(default_factory=dict)  # {"ood_<name>": (n, H, W, C) uint8}: unlabelled inputs
    heldout: Optional[tuple] = None  # (x, y) training-set examples left out of training, labelled
    vocabulary: list = field(default_factory=list)  # text sets: word of token id i + 2 (0 pad, 1 unknown)

    @property
    def is_text(self):
        """Text sets hold int32 token ids (N, max_len), 0-padded, instead of images."""
        return self.x_train.ndim == 2

    @property
    def n_classes(self):
        return len(self.classes)

    def fingerprint(self):
        """sha256 over the arrays, so a record can prove which data it was computed on."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str(a.shape).encode())
            # an image folder's files: their paths and sizes, not their bytes (imagefolder.py)
            h.update(a.fingerprint_bytes() if hasattr(a, "fingerprint_bytes") else np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def default_root():
    return Path(os.environ.get("AGREEBOOK_DATA") or Path.home() / ".cache" / "agreebook")


# --- CIFAR-100 super-classes (the dataset's own coarse labels, by fine-class name) --------------
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man_made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non_insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}

_TORCHVISION = {  # name -> (torchvision class name, what a user puts under the root offline)
    "mnist": ("MNIST", "MNIST/raw/*-ubyte.gz (torchvision's MNIST files)"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw/*-ubyte.gz (torchvision's files)"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/ (torchvision's CIFAR10 folder)"),
    "cifar100": ("CIFAR100", "cifar-100-python/ (torchvision's CIFAR100 folder)"),
}


def _prepared_path(root, name):
    return Path(root) / f"{name}.npz"


def _load_prepared(path, name):
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test", "classes"} - set(f.files)
        if missing:
            raise DatasetError(f"{path} lacks keys {sorted(missing)}; it needs x_train, y_train, "
                               "x_test, y_test (uint8 NHWC images, int64 labels) and classes")
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        classes = [str(c) for c in f["classes"]]
    for k in ("x_train", "x_test"):
        if arrays[k].ndim == 3:  # grayscale stored as (N, H, W)
            arrays[k] = arrays[k][..., None]
        if arrays[k].dtype != np.uint8 or arrays[k].ndim != 4:
            raise DatasetError(f"{path}: {k} must be uint8 (N, H, W, C); got {arrays[k].dtype} {arrays[k].shape}")
    return Dataset(name, arrays["x_train"], arrays["y_train"].astype(np.int64),
                   arrays["x_test"], arrays["y_test"].astype(np.int64), classes, source=f"prepared file {path}")


def _folders(root):
    """Every folder at or under ``root`` (none if it does not exist)."""
    root = Path(root)
    return {root, *(p for p in root.rglob("*") if p.is_dir())} if root.exists() else set()


def _load_torchvision(name, root, download):
    cls_name, layout = _TORCHVISION[name]
    root = Path(root)
    path = _prepared_path(root, name)
    if path.exists():
        return _load_prepared(path, name)
    import torchvision.datasets as tvd
    cls = getattr(tvd, cls_name)
    before = _folders(root)
    try:
        splits = [cls(root=str(root), train=t, download=download) for t in (True, False)]
    except Exception as exc:  # torchvision raises RuntimeError / URLError / OSError offline
        # leave nothing behind: torchvision made its folders (e.g. MNIST/raw) before failing
        for folder in sorted(_folders(root) - before, key=lambda p: -len(p.parts)):
            shutil.rmtree(folder, ignore_errors=True)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DatasetError(
            f"dataset {name!r} is not available under {root} ({type(exc).__name__}: {why}). "
            f"Put {layout} there, or a prepared {path} with keys x_train, y_train, x_test, y_test, "
            f"classes (uint8 NHWC images, int64 labels); or let it download once on a machine with internet "
            f"(without --no-download). Set the root with --data-root (data_root= from Python) or "
            f"$AGREEBOOK_DATA.") from None
    arrays = {}
    for split, ds in zip(("train", "test"), splits):
        x = np.asarray(ds.data)
        arrays[f"x_{split}"] = x[..., None] if x.ndim == 3 else x
        arrays[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
    classes = [str(c) for c in splits[0].classes]
    try:
        atomic_savez(path, **arrays, classes=np.array(classes))
    except OSError:
        pass  # a read-only root still loads, just not faster next time
    return Dataset(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   classes, source=f"torchvision {cls_name} under {root}")


def _digits(**_):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    # 0..16 intensities -> 0..255 so every dataset shares one uint8 convention
    x = np.rint(d.images * (255 / 16)).astype(np.uint8)[..., None]
    idx = np.arange(len(x))
    # The fixed split: 360 test images (20%), stratified, random_state=0.
    tr, te = train_test_split(idx, test_size=360, stratify=d.target, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    return Dataset("digits", x[tr], d.target[tr].astype(np.int64), x[te], d.target[te].astype(np.int64),
                   [str(i) for i in range(10)], source="scikit-learn load_digits, fixed 1437/360 split")


def _synthetic_cifar_draw(seed):
    """A stand-in of CIFAR-10's shapes and sizes for machines without the data (the GPU check's
    throughput and paper-scale smoke): 50000 / 10000 32x32x3 uint8 images of 10 classes, each a
    class's smooth random colour pattern at a random contrast plus pixel noise.  It times the
    same as CIFAR-10; it is no stand-in for natural images in any claim about agreement."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(10, 4, 4, 3)).repeat(8, 1).repeat(8, 2)  # 10 patterns, 8x8-pixel blocks

    def draw(n):
        y = np.tile(np.arange(10), n // 10)
        rng.shuffle(y)
        x = np.empty((n, 32, 32, 3), np.uint8)
        for a in range(0, n, 5000):  # in parts: float64 of 50000 images would be 1.2 GB
            b = slice(a, a + 5000)
            v = 128 + 40 * rng.uniform(0.3, 1.0, (len(y[b]), 1, 1, 1)) * templates[y[b]]
            x[b] = np.clip(v + rng.normal(0, 30, v.shape), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    xtr, ytr = draw(50000)
    xte, yte = draw(10000)
    return xtr, ytr, xte, yte


@functools.lru_cache(maxsize=1)
def _synthetic_cifar_arrays(seed):
    """Generated once a process (12 s); each load gets its own copy (0.1 s)."""
    return _synthetic_cifar_draw(seed)


def _synthetic_cifar(seed=0, **_):
    xtr, ytr, xte, yte = (a.copy() for a in _synthetic_cifar_arrays(seed))
    return Dataset("synthetic_cifar", xtr, ytr, xte, yte, [f"pattern {i}" for i in range(10)],
                   source=f"synthetic CIFAR-shaped patterns, seed {seed} (a timing stand-in, not natural images)")


def _select_classes(ds, keep, name, class_names=None):
    """Keep the examples of classes ``keep`` (label values), relabelled 0..len(keep)-1 in that order."""
    keep = list(keep)
    lut = np.full(max(ds.n_classes, max(keep) + 1), -1, np.int64)
    lut[keep] = np.arange(len(keep))
    tr = np.flatnonzero(lut[ds.y_train] >= 0)
    te = np.flatnonzero(lut[ds.y_test] >= 0)
    return Dataset(name, ds.x_train[tr], lut[ds.y_train[tr]], ds.x_test[te], lut[ds.y_test[te]],
                   class_names or [ds.classes[k] for k in keep], source=f"{ds.source}, classes {keep}",
                   subset={"parent": ds.name, "classes": keep})


def _superclass(name, root, download):
    full = _load_torchvision("cifar100", root, download)
    fine = [full.classes.index(c) for c in CIFAR100_SUPERCLASSES[name]]
    return _select_classes(full, fine, name)


# CIFAR-10 class subsets.  cifar10_animals is the offline analogue of the paper's small mammals
# (a CIFAR-100 super-class: 5 similar animals, 2500 training images): CIFAR-10's four mammals
# and its birds, 5000 training images a class, of which the book's cpu scale takes 500.
CIFAR10_SUBSETS = {
    "cats_vs_dogs": ["cat", "dog"],
    "cifar10_animals": ["bird", "cat", "deer", "dog", "horse"],
}


def _cifar10_subset(name, root, download):
    full = _load_torchvision("cifar10", root, download)
    return _select_classes(full, [full.classes.index(c) for c in CIFAR10_SUBSETS[name]], name)


# The two-Gaussians task of §5.1 (Suppl C) by the shift of the second class's mean: the
# paper's 0.1 puts the classes 0.1 * sqrt(3072) = 5.5 sd apart, and the paper's fully connected
# net is at 0.94 test accuracy after one epoch, leaving nothing to order; the paper says other
# means give similar results, so the book also runs shifts whose Bayes accuracy,
# Phi(shift * sqrt(3072) / 2), leaves room between chance and the ceiling: 0.92 at 0.05, 0.80
# at 0.03.
GAUSSIAN_SHIFTS = {"gaussian": 0.1, "gaussian_0.05": 0.05, "gaussian_0.03": 0.03}


def _gaussian(name="gaussian", seed=0, **_):
    """Two classes, N(0, I) and N(shift * 1, I) in 3072 dimensions, as 32x32x3 images.

    Stored as uint8 128 + 32*z (clipped at +-4 sd), so 0.1 sd is 3.2 grey levels.
    2500 train / 500 test per class, as in the paper.
    """
    shift = GAUSSIAN_SHIFTS[name]
    rng = np.random.default_rng(seed)

    def draw(n):
        z = rng.standard_normal((2 * n, 3072), dtype=np.float32)
        y = np.repeat([0, 1], n)
        z[y == 1] += np.float32(shift)
        x = np.clip(np.rint(128 + 32 * z), 0, 255).astype(np.uint8).reshape(2 * n, 32, 32, 3)
        perm = rng.permutation(2 * n)
        return x[perm], y[perm].astype(np.int64)

    xtr, ytr = draw(2500)
    xte, yte = draw(500)
    return Dataset(name, xtr, ytr, xte, yte, ["N(0,I)", f"N({shift:g},I)"],
                   source=f"synthetic two Gaussians, mean shift {shift:g}, seed {seed}")


GABOR_ORIENTATIONS = (45, 90, 135, 180)


GABOR_JITTER = 30  # deg, uniform: the paper's "varies by +-30" (Suppl C)


def _gabor_arrays(seed, n_train_per_class, n_test_per_class):
    """(x_train, y_train, params_train, x_test, y_test, params_test); params: {"offset" (deg),
    "sigma" (envelope sd, px), "wavelength" (px)} per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)

    def draw(per_class):
        n = 12 * per_class
        y = np.repeat(np.arange(12), per_class)
        channel, base = y // 4, np.array(GABOR_ORIENTATIONS)[y % 4]
        offset = rng.uniform(-GABOR_JITTER, GABOR_JITTER, n)
        theta = np.deg2rad(base + offset)[:, None, None]
        sigma = rng.uniform(2.5, 6.0, n)[:, None, None]
        lam = rng.uniform(5.0, 10.0, n)[:, None, None]
        psi = rng.uniform(0, 2 * np.pi, n)[:, None, None]
        cx, cy = (rng.uniform(10, 22, n)[:, None, None] for _ in range(2))
        dx, dy = xx - cx, yy - cy
        xr = dx * np.cos(theta) + dy * np.sin(theta)
        yr = -dx * np.sin(theta) + dy * np.cos(theta)
        g = np.exp(-(xr ** 2 + yr ** 2) / (2 * sigma ** 2)) * np.cos(2 * np.pi * xr / lam + psi)
        x = np.full((n, 32, 32, 3), 128, np.uint8)
        x[np.arange(n), :, :, channel] = np.clip(np.rint(128 + 127 * g), 0, 255).astype(np.uint8)
        perm = rng.permutation(n)
        params = {"offset": offset[perm], "sigma": sigma[perm, 0, 0], "wavelength": lam[perm, 0, 0]}
        return x[perm], y[perm].astype(np.int64), params

    return (*draw(n_train_per_class), *draw(n_test_per_class))


def _gabor(seed=0, n_train_per_class=500, n_test_per_class=100, **_):
    """12 classes: colour channel (R, G, B) x base orientation (45/90/135/180 deg).

    Each image is a Gabor patch on mid-grey in one channel, its orientation the class's base
    plus a uniform jitter of +-30 deg; envelope width (sigma 2.5-6 px), wavelength (5-10 px),
    phase and centre vary within a class. 32x32x3 uint8.
    """
    xtr, ytr, _, xte, yte, _ = _gabor_arrays(seed, n_train_per_class, n_test_per_class)
    classes = [f"{c}-{o}" for c in "RGB" for o in GABOR_ORIENTATIONS]
    return Dataset("gabor", xtr, ytr, xte, yte, classes, source=f"synthetic Gabor patches, seed {seed}")


def gabor_parameters(seed=0, n_train_per_class=500, n_test_per_class=100):
    """{"train": {...}, "test": {...}}: each Gabor patch's generating parameters, in the order of
    ``load_dataset("gabor", seed=seed)``: "offset", its orientation minus its class's base
    (deg, uniform in +-30); "sigma", the envelope's sd (px); "wavelength" (px).  Neighbouring
    bases are 45 deg apart, so a patch with |offset| > 15 lies where two classes of one colour
    overlap with equal density: the best classifier is right on half of those, 75% in all."""
    _, _, ptr, _, _, pte = _gabor_arrays(seed, n_train_per_class, n_test_per_class)
    return {"train": ptr, "test": pte}


# --- text (paper §3, Fig 4a): Stack Overflow questions, one tag each -----------------------------
TEXT_FILES = {  # name -> (file under the data root, tokens kept per example, what it is)
    "stackoverflow": ("stack-overflow-data.csv", 256, "the paper's 40K Stack Overflow posts, 20 tags"),
    "stackoverflow_titles": ("stackoverflow_titles_20k.csv", 32, "20K Stack Overflow titles, 20 tags x 1000"),
}
TEXT_DATASETS = tuple(TEXT_FILES)
_WORD = re.compile(r"[a-z0-9#+]+")


def tokenize(text):
    """Lower-cased runs of letters, digits, '#' and '+' (so c#, c++ stay words)."""
    return _WORD.findall(str(text).lower())


def _text(name, root, min_count=2, max_words=20000, **_):
    """A CSV with columns ``post`` and ``tags`` (one tag per row) under the data root.

    Fixed split: 20% test, stratified by tag, random_state=0.  The vocabulary is the training
    split's words seen at least ``min_count`` times (at most ``max_words``, most frequent
    first, ties alphabetical); ids are 2.. in that order, 1 an unknown word, 0 padding.
    """
    from collections import Counter
    import pandas as pd
    from sklearn.model_selection import train_test_split
    file, max_len, what = TEXT_FILES[name]
    path = Path(root) / file
    if not path.exists():
        raise DatasetError(f"dataset {name!r} ({what}) is not under {root}: put {file} (columns post, tags) "
                           f"at {path}. Set the root with --data-root (data_root= from Python) or $AGREEBOOK_DATA.")
    df = pd.read_csv(path)
    if not {"post", "tags"} <= set(df.columns):
        raise DatasetError(f"{path} needs columns post and tags; it has {list(df.columns)}")
    classes = sorted(df["tags"].astype(str).unique())
    y = np.array([classes.index(t) for t in df["tags"].astype(str)], np.int64)
    words = [tokenize(t) for t in df["post"]]
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    counts = Counter(w for i in tr for w in words[i])
    vocab = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))[:max_words]
    ids = {w: i + 2 for i, w in enumerate(vocab)}
    x = np.zeros((len(y), max_len), np.int32)
    for i, ws in enumerate(words):
        row = [ids.get(w, 1) for w in ws[:max_len]]
        x[i, :len(row)] = row
    return Dataset(name, x[tr], y[tr], x[te], y[te], classes, source=f"{path} ({what}), fixed 80/20 split",
                   vocabulary=vocab)


def _registry():
    reg = {"digits": _digits, "gabor": _gabor, "synthetic_cifar": _synthetic_cifar}
    for name in GAUSSIAN_SHIFTS:
        reg[name] = lambda _n=name, **kw: _gaussian(_n, **kw)
    for name in CIFAR10_SUBSETS:
        reg[name] = lambda root, download, _n=name, **_: _cifar10_subset(_n, root, download)
    for name in _TORCHVISION:
        reg[name] = lambda root, download, _n=name, **_: _load_torchvision(_n, root, download)
    for name in CIFAR100_SUPERCLASSES:
        reg[name] = lambda root, download, _n=name, **_: _superclass(_n, root, download)
    for name in TEXT_FILES:
        reg[name] = lambda root, _n=name, **_: _text(_n, root)
    return reg


DATASETS = tuple(sorted(_registry()))


def check_dataset_name(name):
    from .imagefolder import is_imagefolder
    if name not in DATASETS and not is_imagefolder(name):
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}, or "
                           "imagefolder:<path> (a folder of train/<class>/* and val/<class>/* images)")


def load_dataset(name, root=None, download=True, seed=0, resize=None, crop=None):
    """Load a named dataset as arrays.

    name: one of ``DATASETS``, or ``imagefolder:<path>`` (its images as files, decoded when
    training reads them, resized and centre-cropped: ``imagefolder``); root: data root (default
    ``AGREEBOOK_DATA`` or ~/.cache/agreebook); download: let torchvision fetch missing files;
    seed: for the synthetic sets only. Raises DatasetError with what to do when it cannot.
    """
    check_dataset_name(name)
    from .imagefolder import FolderError, is_imagefolder, load_imagefolder
    if is_imagefolder(name):
        try:
            *arrays, classes, source = load_imagefolder(name, resize, crop)
        except FolderError as exc:
            raise DatasetError(str(exc)) from None
        return Dataset(name, *arrays, classes, source=source)
    root = Path(root) if root is not None else default_root()
    return _registry()[name](root=root, download=download, seed=seed)


# --- transforms ------------------------------------------------------------------------------

def random_labels(labels, n_classes, seed):
    """Labels replaced by uniform random ones (paper §5): same shape, int64."""
    return np.random.default_rng(seed).integers(0, n_classes, size=np.shape(labels)).astype(np.int64)


def stratified_subset(labels, n, seed):
    """Sorted indices of n examples keeping the class proportions (largest remainders)."""
    labels = np.asarray(labels)
    if not 0 < n <= len(labels):
        raise DatasetError(f"a subset of {n} examples is impossible from {len(labels)}")
    if n == len(labels):
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - take), kind="stable")[: n - take.sum()]
    take[extra] += 1
    idx = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(idx))


def partitions(n_examples, k, seed):
    """k disjoint random parts of range(n_examples), as sorted index arrays (paper §3.3)."""
    if not 1 <= k <= n_examples:
        raise DatasetError(f"cannot split {n_examples} examples into {k} non-empty parts")
    perm = np.random.default_rng(seed).permutation(n_examples)
    return [np.sort(p) for p in np.array_split(perm, k)]


def take(ds, train_idx=None, test_idx=None):
    """The dataset restricted to the given train / test indices; the indices go to ``subset``."""
    sub = dict(ds.subset)
    out = Dataset(ds.name, ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.classes, ds.source, sub,
                  vocabulary=ds.vocabulary)
    if train_idx is not None:
        out.x_train, out.y_train = ds.x_train[train_idx], ds.y_train[train_idx]
        sub["train_indices"] = np.asarray(train_idx).tolist()
    if test_idx is not None:
        out.x_test, out.y_test = ds.x_test[test_idx], ds.y_test[test_idx]
        sub["test_indices"] = np.asarray(test_idx).tolist()
    return out


def class_subset(ds, class_names):
    """Only the named classes, relabelled 0..k-1 in the order given."""
    unknown = [c for c in class_names if c not in ds.classes]
    if unknown:
        raise DatasetError(f"{ds.name} has no classes {unknown}; it has {ds.classes}")
    return _select_classes(ds, [ds.classes.index(c) for c in class_names], ds.name)


def _channel_mean_sd(x, rows=1 << 20):
    """Per-channel mean and sd of uint8 images (..., C), from exact per-channel histograms in
    chunks: numpy's mean/std over all of CIFAR-10's training pixels made float64 copies and
    took 5.4 s (in the driver and again in every worker)."""
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    hist = np.zeros((c, 256), np.int64)
    for a in range(0, len(flat), rows):
        chunk = flat[a:a + rows]
        for k in range(c):
            hist[k] += np.bincount(chunk[:, k], minlength=256)
    v = np.arange(256.0)
    n = hist.sum(1)
    mean = hist @ v / n  # integer sums below 2**53: exact, as numpy's mean is here
    sd = np.sqrt((hist * (v - mean[:, None]) ** 2).sum(1) / n)
    return mean, sd


def out_of_sample(name, like, n, root=None, download=True, seed=0):
    """n uint8 images shaped like ``like`` (N, H, W, C) that come from no class of it (§3.4).

    name: "noise" draws Gaussian pixels with ``like``'s per-channel mean and sd; a dataset
    name takes n of its test images (seeded) and converts them to ``like``'s size and
    channels (area-averaged down, bilinear up; grey repeated to RGB, RGB averaged to grey).
    """
    rng = np.random.default_rng(seed)
    if like.ndim == 2:  # text: token ids
        if name != "noise":
            raise DatasetError(f"out-of-sample inputs for text are 'noise' only; got {name!r}")
        # random known words, with the lengths of the training examples
        lengths = (like > 0).sum(1)
        x = np.zeros((n, like.shape[1]), like.dtype)
        vocab_max = max(int(like.max()), 2)
        for i, k in enumerate(rng.choice(lengths, n)):
            x[i, :k] = rng.integers(2, vocab_max + 1, k)
        return x
    h, w, c = like.shape[1:]
    if name == "noise":
        mean, sd = _channel_mean_sd(like)
        return np.clip(np.rint(rng.normal(mean, sd, size=(n, h, w, c))), 0, 255).astype(np.uint8)
    other = load_dataset(name, root=root, download=download, seed=seed)
    if n > len(other.x_test):
        raise DatasetError(f"{name} has {len(other.x_test)} test images; {n} out-of-sample ones asked for")
    x = other.x_test[np.sort(rng.choice(len(other.x_test), n, replace=False))]
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(x).float().permute(0, 3, 1, 2)
    if t.shape[1] != c:
        if c == 1:
            t = t.mean(1, keepdim=True)
        elif t.shape[1] == 1:
            t = t.expand(-1, c, -1, -1)
        else:
            raise DatasetError(f"cannot convert {name}'s {x.shape[3]} channels to {c}")
    if t.shape[2:] != (h, w):
        down = t.shape[2] >= h and t.shape[3] >= w
        t = F.adaptive_avg_pool2d(t, (h, w)) if down else F.interpolate(t, size=(h, w), mode="bilinear",
                                                                        align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
