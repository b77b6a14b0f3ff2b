"""The prediction record: everything a collection predicted, in one file.

``<dir>/record.npz`` holds, per split ("train", "test", and any out-of-sample split
"ood_<name>", whose labels are -1: unknown): predicted labels int16
(n_models, n_epochs, n_examples), the labels, optionally each entry's true-class probability
(float16), plus the recorded epochs, a completeness mask (n_models, n_epochs) and the metadata
as JSON (``meta``).  ``<dir>/record.json`` is a readable copy of the metadata.  Both are
written atomically.  Build one from your own arrays with ``Record.from_arrays``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import metrics
from .io import atomic_savez, atomic_write_json

SPLITS = ("train", "test")
OOD_PREFIX = "ood_"  # out-of-sample inputs (paper §3.4): no labels, only what the models predict


def _split_order(names):
    return tuple([s for s in SPLITS if s in names] + sorted(s for s in names if s.startswith(OOD_PREFIX)))


def _smallest_int(a):
    """int8 where every value fits (labels of up to 127 classes, -1 for not recorded), else int16
    for predictions and the array's own type for labels; loading widens them again."""
    if a.size and a.min() >= -128 and a.max() <= 127:
        return a.astype(np.int8)
    return a


class RecordError(ValueError):
    """A record that is missing, malformed, or from another configuration."""


class Record:
    def __init__(self, predictions, labels, epochs, meta=None, probabilities=None, complete=None):
        self.epochs = np.asarray(epochs, dtype=np.int64)
        self.predictions = {}
        self.labels = {}
        self.probabilities = {}
        for split, p in predictions.items():
            p = np.asarray(p)
            if p.ndim != 3 or p.shape[1] != len(self.epochs):
                raise RecordError(f"{split} predictions must be (n_models, {len(self.epochs)} epochs, "
                                  f"n_examples); got {p.shape}")
            y = np.asarray(labels[split])
            if y.shape != (p.shape[2],):
                raise RecordError(f"{split} labels must be ({p.shape[2]},); got {y.shape}")
            if p.min(initial=0) < -1 or p.max(initial=0) > np.iinfo(np.int16).max:
                raise RecordError(f"{split} predictions must be labels in [0, 32767] (-1: not yet recorded)")
            self.predictions[split] = p.astype(np.int16, copy=False)
            self.labels[split] = y.astype(np.int64, copy=False)
            if probabilities is not None and probabilities.get(split) is not None:
                q = np.asarray(probabilities[split])
                if q.shape != p.shape:
                    raise RecordError(f"{split} probabilities must have the predictions' shape {p.shape}")
                self.probabilities[split] = q.astype(np.float16, copy=False)
        shapes = {p.shape[:2] for p in self.predictions.values()}
        if len(shapes) != 1:
            raise RecordError(f"every split needs the same (n_models, n_epochs); got {shapes}")
        self.n_models, self.n_epochs = shapes.pop()
        self.complete = (np.ones((self.n_models, self.n_epochs), bool) if complete is None
                         else np.asarray(complete, bool))
        self.meta = dict(meta or {})

    @classmethod
    def from_arrays(cls, predictions, labels, epochs, meta=None, probabilities=None):
        """A record from your own models' predictions (any framework).

        predictions: {"train": (n_models, n_epochs, n_examples) int, "test": ...} (either split
        may be left out); labels: {split: (n_examples,)}; epochs: (n_epochs,) recorded epochs;
        meta: free-form, e.g. {"dataset": ..., "arch": ...}.
        """
        if not predictions:
            raise RecordError("give predictions for at least one split")
        unknown = {s for s in predictions if s not in SPLITS and not s.startswith(OOD_PREFIX)}
        if unknown:
            raise RecordError(f"unknown splits {sorted(unknown)}; use {SPLITS} or '{OOD_PREFIX}<name>'")
        return cls(predictions, labels, epochs, meta=meta, probabilities=probabilities)

    @property
    def splits(self):
        """Every split, labelled ones first."""
        return _split_order(self.predictions)

    @property
    def labelled_splits(self):
        return tuple(s for s in SPLITS if s in self.predictions)

    @property
    def is_complete(self):
        return bool(self.complete.all())

    @property
    def n_classes(self):
        n = self.meta.get("n_classes")
        if n:
            return int(n)
        return int(max(max(self.labels[s].max(), self.predictions[s].max()) for s in self.splits)) + 1

    def at_epochs(self, epochs):
        """The same collection read at some of its recorded epochs only (e.g. the epochs two
        records share, so that both are summarised over the same grid)."""
        epochs = np.asarray(epochs, dtype=np.int64)
        missing = np.setdiff1d(epochs, self.epochs)
        if missing.size:
            raise RecordError(f"epochs {missing.tolist()} are not recorded; the record has {self.epochs.tolist()}")
        i = np.searchsorted(self.epochs, epochs)
        return Record({s: p[:, i] for s, p in self.predictions.items()}, self.labels, epochs, meta=self.meta,
                      probabilities={s: q[:, i] for s, q in self.probabilities.items()}, complete=self.complete[:, i])

    def accuracies(self, split):
        return metrics.accuracies(self.predictions[split], self.labels[split])

    def tp_agreement(self, split):
        return metrics.tp_agreement(self.predictions[split], self.labels[split])

    def agreement(self, split):
        return metrics.agreement(self.predictions[split])

    def save(self, directory):
        d = Path(directory)
        arrays = {"epochs": self.epochs, "complete": self.complete,
                  "meta": np.array(json.dumps(self.meta, sort_keys=True))}
        for s in self.splits:
            arrays[f"{s}_predictions"] = _smallest_int(self.predictions[s])
            arrays[f"{s}_labels"] = _smallest_int(self.labels[s])
            if s in self.probabilities:
                arrays[f"{s}_probabilities"] = self.probabilities[s]
        # compressed, labels in int8 where the classes allow: the book commits its records
        # (the cpu book's main record: 1.5 MB as int16, uncompressed)
        atomic_savez(d / "record.npz", compress=True, **arrays)
        atomic_write_json(d / "record.json", {**self.meta, "epochs": self.epochs.tolist(),
                                              "complete": self.is_complete})

    @classmethod
    def load(cls, directory):
        path = Path(directory) / "record.npz"
        if not path.exists():
            raise RecordError(f"no record at {path}; train one with `python -m agreebook train --out {directory}`")
        try:
            with np.load(path, allow_pickle=False) as f:
                splits = _split_order([k[:-len("_predictions")] for k in f.files if k.endswith("_predictions")])
                if not splits:
                    raise ValueError("it holds no predictions")
                return cls({s: f[f"{s}_predictions"] for s in splits}, {s: f[f"{s}_labels"] for s in splits},
                           f["epochs"], meta=json.loads(str(f["meta"])),
                           probabilities={s: f[f"{s}_probabilities"] for s in splits
                                          if f"{s}_probabilities" in f.files},
                           complete=f["complete"])
        except (RecordError, MemoryError, PermissionError):
            raise  # not damage: the CLI says what it is
        except Exception as exc:  # zipfile, zlib, npy-format, JSON and key errors of a damaged file
            raise RecordError(f"{path} is not a readable record ({type(exc).__name__}: {exc}); it is damaged or "
                              "not written by agreebook: train it again into an empty folder") from None

    def __repr__(self):
        sizes = ", ".join(f"{s} {self.predictions[s].shape[2]}" for s in self.splits)
        return (f"Record({self.meta.get('dataset', '?')}/{self.meta.get('arch', '?')}, "
                f"{self.n_models} models, epochs {self.epochs.tolist()}, {sizes} examples"
                f"{'' if self.is_complete else ', INCOMPLETE'})")
