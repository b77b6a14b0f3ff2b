"""Data preparation for training: what a configuration trains on, as tensors.

``prepare_dataset`` applies a config's data settings to a loaded dataset (``data.load_dataset``):
the stratified train / test / held-out subsets, the disjoint partitions of §3.3, the
out-of-sample inputs of §3.4 and the random labels of §5.2, each drawn from ``cfg.data_seed``
plus its offset in ``config.DATA_SEEDS``.  ``TrainingData`` holds the splits as tensors on the
device (images standardised by the training subset's channel statistics, NHWC so that a row
gather and a permute give channels_last batches; text as token ids), and ``curriculum_scores``
the per-example scores a curriculum orders by.  Everything here is the same for every member
and every engine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import DATA_SEEDS, ConfigError
from .data import load_dataset, out_of_sample, partitions, random_labels, stratified_subset, take
from .imagefolder import ImageFiles, StreamedImages, channel_stats
from .models import TEXT_EMBEDDING_DIM, input_size
from .record import Record, RecordError


def prepare_dataset(cfg, data_root=None, download=True):
    """The dataset a config trains on: subsets and random labels applied."""
    ds = load_dataset(cfg.dataset, root=data_root, download=download, seed=cfg.data_seed, resize=cfg.resize,
                      crop=cfg.crop)
    tr = te = None
    if cfg.train_size is not None:
        if cfg.train_size > len(ds.y_train):
            raise ConfigError(f"train_size {cfg.train_size} exceeds {cfg.dataset}'s {len(ds.y_train)} training examples")
        tr = stratified_subset(ds.y_train, cfg.train_size, cfg.data_seed)
    if cfg.test_size is not None:
        if cfg.test_size > len(ds.y_test):
            raise ConfigError(f"test_size {cfg.test_size} exceeds {cfg.dataset}'s {len(ds.y_test)} test examples")
        te = stratified_subset(ds.y_test, cfg.test_size, cfg.data_seed + DATA_SEEDS["test_subset"])
    held = None
    if cfg.heldout_size is not None:
        rest = np.setdiff1d(np.arange(len(ds.y_train)), tr)
        if cfg.heldout_size > len(rest):
            raise ConfigError(f"heldout_size {cfg.heldout_size} exceeds the {len(rest)} training examples outside "
                              f"the train_size subset of {cfg.dataset}")
        held = rest[stratified_subset(ds.y_train[rest], cfg.heldout_size, cfg.data_seed + DATA_SEEDS["heldout"])]
        held_xy = (ds.x_train[held], ds.y_train[held])
    ds = take(ds, tr, te)
    if held is not None:
        ds.heldout = held_xy
        ds.subset["heldout_indices"] = held.tolist()
    if cfg.n_partitions > 1:
        part = partitions(len(ds.y_train), cfg.n_partitions, cfg.data_seed + DATA_SEEDS["partitions"])[cfg.partition]
        rows = np.asarray(ds.subset.get("train_indices", np.arange(len(ds.y_train))))[part]
        ds = take(ds, part)
        ds.subset["train_indices"] = rows.tolist()
    ds.ood = {f"ood_{name}": out_of_sample(name, ds.x_train, len(ds.y_test), data_root, download,
                                           cfg.data_seed + DATA_SEEDS["ood"]) for name in cfg.ood}
    if cfg.random_labels:
        ds.y_train = random_labels(ds.y_train, ds.n_classes, cfg.data_seed + DATA_SEEDS["random_labels"])
        ds.subset = {**ds.subset, "random_labels_seed": cfg.data_seed + DATA_SEEDS["random_labels"]}
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


class TrainingData:
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
            self.in_shape = in_shape(ds, embeddings)
            self.n_classes = ds.n_classes
            return
        if isinstance(ds.x_train, ImageFiles):  # an image folder: decoded batch by batch as training reads it
            self._streamed(ds, arch, device)
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

    def _streamed(self, ds, arch, device):
        crop = ds.x_train.shape[1]
        if input_size(arch, (3, crop, crop)) != crop:
            raise ConfigError(f"{arch} takes images of at least {input_size(arch, (3, crop, crop))} pixels; set crop "
                              f"(and resize) to that at least")
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in channel_stats(ds.x_train))
        splits = {"train": (ds.x_train, ds.y_train), "test": (ds.x_test, ds.y_test),
                  **({"heldout": ds.heldout} if ds.heldout is not None else {})}
        self.x = {s: StreamedImages(f, mean, std, device) for s, (f, _) in splits.items()}
        self.y = {s: torch.from_numpy(y).to(device) for s, (_, y) in splits.items()}
        self.in_shape = (3, crop, crop)
        self.n_classes = ds.n_classes

    def plan(self, split, order, batch):
        """The batches of ``split`` an epoch will ask for next, in order: a streamed split starts
        decoding them ahead; a split in memory needs nothing."""
        if hasattr(self.x[split], "plan"):
            self.x[split].plan(order, batch)

    @staticmethod
    def nchw(xb):
        return xb.permute(0, 3, 1, 2) if xb.dim() == 4 else xb


def in_shape(ds, embeddings=None):
    """What build_model takes for this data: (C, H, W), or (vocab, max_len, emb_dim) for text."""
    if not ds.is_text:
        return (ds.x_train.shape[3], *ds.x_train.shape[1:3])
    dim = vectors_width(embeddings) if embeddings else TEXT_EMBEDDING_DIM
    return (len(ds.vocabulary) + 2, ds.x_train.shape[1], dim)


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


