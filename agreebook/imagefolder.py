"""Datasets that do not fit in memory: ``imagefolder:<path>``, read image by image as training asks.

The folder holds ``train/<class>/*`` and ``val/<class>/*`` (torchvision's ``ImageFolder``
layout, ImageNet's too); ``val`` is the record's test split, and the classes are the train
folder's, sorted.  Nothing is decoded at load: ``ImageFiles`` is the list of files (a subset of
it stays a list of files), and each image is decoded when a batch needs it, its shorter side
resized to ``resize`` and the centre ``crop`` x ``crop`` kept (torchvision's ImageNet evaluation
transform, 256 and 224 by default; ``TrainConfig.resize`` / ``crop``).  ``StreamedImages`` serves
the engines' batches through a ``DataLoader`` whose workers decode the next batches while the
current one trains: the engine announces the epoch's order (``plan``), and predictions read the
split front to back.  Memory holds the file names and a few batches, whatever the number of
images.  The data fingerprint hashes the relative paths and sizes, so it reads no image.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

PREFIX = "imagefolder:"
RESIZE, CROP = 256, 224  # torchvision's ImageNet evaluation transform
SPLITS = {"train": "train", "test": "val"}  # record split -> the folder's
LOADER_WORKERS = min(4, os.cpu_count() or 1)  # decoding processes a DataLoader keeps busy
STATS_SAMPLE = 500  # training images the channel mean and sd are estimated from (seeded)
MAX_PASS_BATCH = 4096  # the largest slice that starts a prefetched front-to-back pass


def is_imagefolder(name):
    return isinstance(name, str) and name.startswith(PREFIX)


class ImageFiles:
    """A split's images as files: (n, crop, crop, 3) uint8 once decoded.  Indexing with an array
    or a slice gives the subset, still as files; ``decode(i)`` and ``load(idx)`` read images."""

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, root, paths, resize=RESIZE, crop=CROP):
        self.root, self.paths, self.resize, self.crop = Path(root), np.asarray(paths, dtype=object), resize, crop

    @property
    def shape(self):
        return (len(self.paths), self.crop, self.crop, 3)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        """An integer: that image, decoded (as an array's row); an array or a slice: the subset,
        still files."""
        if isinstance(idx, (int, np.integer)):
            return self.decode(int(idx))
        return ImageFiles(self.root, self.paths[idx], self.resize, self.crop)

    def decode(self, i):
        """Image i: RGB, torchvision's Resize(resize) (the shorter side, bilinear, antialiased)
        then CenterCrop(crop), as uint8 (crop, crop, 3)."""
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF
        with Image.open(self.root / self.paths[i]) as im:
            im = TF.resize(im.convert("RGB"), self.resize, interpolation=InterpolationMode.BILINEAR, antialias=True)
            return np.array(TF.center_crop(im, self.crop), dtype=np.uint8)  # writable, for torch

    def load(self, idx):
        return np.stack([self.decode(i) for i in np.asarray(idx).ravel()]) if len(np.asarray(idx).ravel()) else \
            np.zeros((0, self.crop, self.crop, 3), np.uint8)

    def fingerprint_bytes(self):
        """What identifies these files without reading them: relative paths and sizes."""
        h = hashlib.sha256(f"{self.resize}/{self.crop}".encode())
        for p in self.paths:
            h.update(f"{p}\0{(self.root / p).stat().st_size}\n".encode())
        return h.digest()


class FolderError(ValueError):
    """An image folder that cannot be read as a dataset (``data.load_dataset`` says DatasetError)."""


def load_imagefolder(name, resize=None, crop=None):
    """``imagefolder:<path>`` as (train files, train labels, test files, test labels, classes,
    source): its splits as ``ImageFiles``, its labels as arrays (``data.load_dataset`` makes
    the Dataset)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
    DatasetError = FolderError
    root = Path(name[len(PREFIX):]).expanduser()
    resize, crop = resize or RESIZE, crop or CROP
    if crop > resize:
        raise DatasetError(f"crop {crop} is larger than resize {resize}: the centre crop is taken from the resized image")
    files, labels, classes = {}, {}, None
    for split, folder in SPLITS.items():
        where = root / folder
        if not where.is_dir():
            raise DatasetError(f"{name}: no folder {where}; an image folder holds train/<class>/* and val/<class>/*")
        try:
            found, _ = find_classes(str(where))
        except FileNotFoundError as exc:  # no class folder, or one without images
            raise DatasetError(f"{name}: {exc}") from None
        if classes is None:
            classes = found
        elif found != classes:
            raise DatasetError(f"{name}: val/ has the classes {found}, train/ {classes}; they must be the same folders")
        try:
            samples = make_dataset(str(where), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as exc:
            raise DatasetError(f"{name}: {exc}") from None
        files[split] = ImageFiles(root, [str(Path(p).relative_to(root)) for p, _ in samples], resize, crop)
        labels[split] = np.array([y for _, y in samples], dtype=np.int64)
    return (files["train"], labels["train"], files["test"], labels["test"], classes,
            f"image folder {root} (resize {resize}, centre crop {crop})")


class _Decode:
    """A torch Dataset of one split's decoded images, uint8 (a quarter of float32's shared
    memory between a DataLoader's workers and the trainer; standardised on the device)."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch
        return torch.from_numpy(self.files.decode(i))


class StreamedImages:
    """One split of ``TrainingData`` for an image folder: what the engines index like a tensor
    (NHWC float, standardised), decoded in a DataLoader's workers.  ``plan(order, batch)``
    announces the batches an epoch will ask for, in order; a request for the next planned
    batch, or for the next slice of a front-to-back pass (prediction), is served from the
    loader's prefetch; any other request is decoded here."""

    def __init__(self, files, mean, std, device, workers=LOADER_WORKERS):
        self.files, self.device, self.workers = files, device, workers
        self.mean, self.std = mean.to(device), std.to(device)
        self._queue = self._iter = None
        self.fallbacks = 0  # requests served by decoding here, not from the loader (tests read it)

    def __len__(self):
        return len(self.files)

    def dim(self):
        return 4

    @property
    def shape(self):
        return self.files.shape

    def _loader(self, batches):
        import torch
        from torch.utils.data import DataLoader
        # its own generator: a loader draws a base seed at every pass, which from torch's global
        # generator would move the dropout masks of the member training on the CPU
        loader = DataLoader(_Decode(self.files), batch_sampler=batches, num_workers=self.workers,
                            persistent_workers=False, pin_memory=torch.device(self.device).type == "cuda",
                            generator=torch.Generator().manual_seed(0))
        return iter(loader)

    def plan(self, order, batch):
        """The next epoch's batches: ``order`` (a permutation of the split) in ``batch``-sized
        consecutive pieces."""
        order = order.tolist() if hasattr(order, "tolist") else [int(i) for i in order]  # one copy off a GPU
        batches = [order[a:a + batch] for a in range(0, len(order), batch)]
        self._queue, self._iter = list(batches), self._loader(batches)

    def __getitem__(self, idx):
        import torch
        if isinstance(idx, slice):
            a, b, step = idx.indices(len(self))
            want = list(range(a, b, step))
            if a == 0 and step == 1 and 0 < b - a <= MAX_PASS_BATCH:  # a new front-to-back pass in slices
                size = b - a
                batches = [list(range(s, min(s + size, len(self)))) for s in range(0, len(self), size)]
                self._queue, self._iter = batches, self._loader(batches)
            shape = (len(want),)
        else:
            idx = torch.as_tensor(idx)
            if idx.dtype == torch.bool:
                raise TypeError("index a streamed split with example indices, not a mask")
            want, shape = idx.reshape(-1).tolist(), tuple(idx.shape)
        if self._queue and self._queue[0] == want:
            self._queue.pop(0)
            try:
                x = next(self._iter)
            except BaseException:  # interrupted mid-batch: the queue no longer matches the loader
                self._queue = self._iter = None
                raise
            if not self._queue:
                self._iter = None  # done: its workers exit now, not at the next pass
        else:  # not the planned batch: decode it here
            self.fallbacks += bool(want)
            x = torch.stack([_Decode(self.files)[i] for i in want]) if want else \
                torch.zeros((0, *self.files.shape[1:]), dtype=torch.uint8)
        x = (x.to(self.device, non_blocking=True).float().div_(255) - self.mean) / self.std
        return x.reshape(*shape, *self.files.shape[1:])


def channel_stats(files, seed=0):
    """Per-channel mean and sd (0..1 scale) of up to STATS_SAMPLE training images, seeded,
    accumulated image by image (500 images at 224 px as one float64 array were 1.8 GB)."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(files), min(STATS_SAMPLE, len(files)), replace=False))
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for i in pick:
        x = files.decode(int(i)).reshape(-1, 3).astype(np.float64) / 255
        total += x.sum(0)
        squares += (x * x).sum(0)
        count += len(x)
    mean = total / count
    var = (squares / count - mean ** 2) * count / max(count - 1, 1)  # unbiased, as torch.std for arrays
    return mean, np.sqrt(np.maximum(var, 1e-12))
