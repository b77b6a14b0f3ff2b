"""The prediction record: everything a collection predicted, in one file.

``<dir>/record.npz`` holds, per split ("train", "test", and any out-of-sample split
"ood_<name>", whose labels are -1: unknown): predicted labels int16
(n_models, n_epochs, n_examples), the labels, optionally per-entry outputs in float16 (the
true-class probability, the largest other-class probability, the error norm and the logit
margin: what ``agreebook.scores`` needs; ``OUTPUT_KEYS``), plus the recorded epochs, a completeness mask (n_models, n_epochs) and the metadata
as JSON (``meta``).  ``<dir>/record.json`` is a readable copy of the metadata.  Both are
written atomically.  Build one from your own arrays with ``Record.from_arrays``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import metrics
from .io import atomic_savez, atomic_write_json, npz_stored_arrays
from .outputs import OUTPUT_KEYS, outputs_from_logits, outputs_from_probabilities

SPLITS = ("train", "test", "heldout")  # labelled; "heldout": training-set examples never trained on
# arrays at least this large are stored uncompressed by Record.save and mapped by Record.load,
# not read: a mapping holds the file open, which small records need not
MAP_BYTES = 256 << 20
OOD_PREFIX = "ood_"  # out-of-sample inputs (paper §3.4): no labels, only what the models predict


def _split_order(names):
    return tuple([s for s in SPLITS if s in names] + sorted(s for s in names if s.startswith(OOD_PREFIX)))


def _smallest_int(a):
    """int8 where every value fits (labels of up to 127 classes, -1 for not recorded), else int16
    for predictions and the array's own type for labels; loading widens them again."""
    if a.size and a.min() >= -128 and a.max() <= 127:
        return a.astype(np.int8)
    return a


def _numpy(a):
    """A NumPy array from NumPy, a torch tensor (any device, with or without grad) or a list."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu() if a.is_floating_point() else a.detach().cpu()
    return np.asarray(a)


class RecordError(ValueError):
    """A record that is missing, malformed, or from another configuration."""


class Record:
    def __init__(self, predictions, labels, epochs, meta=None, probabilities=None, complete=None, outputs=None):
        """predictions, labels: {split: array}; probabilities: {split: true-class probability
        (n_models, n_epochs, n_examples)}; outputs: {split: {name: array of that shape}} with
        names from OUTPUT_KEYS (``probabilities`` is outputs' "probability")."""
        self.epochs = np.asarray(epochs, dtype=np.int64)
        self.predictions = {}
        self.labels = {}
        self.outputs = {}
        merged = {s: dict(o) for s, o in (outputs or {}).items()}
        for s, q in (probabilities or {}).items():
            if q is not None:
                merged.setdefault(s, {})["probability"] = q
        for split, p in predictions.items():
            p = np.asanyarray(p)  # a mapped array (Record.load) stays mapped
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
            for name, q in merged.get(split, {}).items():
                if name not in OUTPUT_KEYS:
                    raise RecordError(f"unknown output {name!r}; outputs are: {', '.join(OUTPUT_KEYS)}")
                q = np.asanyarray(q)  # a mapped output (Record.load) stays mapped
                if q.shape != p.shape:
                    raise RecordError(f"{split} {name} must have the predictions' shape {p.shape}; got {q.shape}")
                self.outputs.setdefault(split, {})[name] = q.astype(np.float16, copy=False)
        shapes = {p.shape[:2] for p in self.predictions.values()}
        if len(shapes) != 1:
            raise RecordError(f"every split needs the same (n_models, n_epochs); got {shapes}")
        self.n_models, self.n_epochs = shapes.pop()
        self.complete = (np.ones((self.n_models, self.n_epochs), bool) if complete is None
                         else np.asarray(complete, bool))
        self.meta = dict(meta or {})

    @property
    def probabilities(self):
        """{split: true-class probability (n_models, n_epochs, n_examples)} where recorded."""
        return {s: o["probability"] for s, o in self.outputs.items() if "probability" in o}

    def output(self, split, name):
        """One per-entry output (OUTPUT_KEYS) of a split, or a RecordError that says how to get it."""
        if name not in self.outputs.get(split, {}):
            raise RecordError(f"this record keeps no {name.replace('_', ' ')} for {split}: train it with "
                              f"--save-probabilities (TrainConfig.save_probabilities=True), or build it with "
                              f"Record.from_arrays(..., logits=...) or probabilities=(full softmax)")
        return self.outputs[split][name]

    @classmethod
    def from_arrays(cls, predictions=None, labels=None, epochs=None, meta=None, probabilities=None, logits=None):
        """A record from your own models' outputs (any framework: NumPy arrays or torch tensors,
        on any device).

        predictions: {"train": (n_models, n_epochs, n_examples) int, "test": ...} (either split
        may be left out); labels: {split: (n_examples,)}; epochs: (n_epochs,) recorded epochs;
        meta: free-form, e.g. {"dataset": ..., "arch": ...}.  logits: {split: (n_models,
        n_epochs, n_examples, n_classes)}, or probabilities of that shape (softmax outputs), from
        which the per-entry outputs ``agreebook.scores`` needs are derived, and the predictions
        (argmax) where they are not given; probabilities of the predictions' shape are taken as
        true-class probabilities.

        Example:
            >>> z = np.random.default_rng(0).normal(size=(3, 2, 5, 4))   # 3 models, 2 epochs, 5 examples
            >>> rec = Record.from_arrays(labels={"test": np.arange(5) % 4}, epochs=[1, 2], logits={"test": z})
            >>> rec.predictions["test"].shape, sorted(rec.outputs["test"])
            ((3, 2, 5), ['error_norm', 'logit_margin', 'other_probability', 'probability'])
        """
        predictions = {s: _numpy(p) for s, p in (predictions or {}).items()}
        labels = {s: _numpy(y) for s, y in (labels or {}).items()}
        outputs, true_prob = {}, {}
        full = {s: ("logits", _numpy(z)) for s, z in (logits or {}).items()}
        for s, q in (probabilities or {}).items():
            q = _numpy(q)
            if q.ndim == 4:
                full[s] = ("probabilities", q)
            else:
                true_prob[s] = q
        for s, (kind, a) in full.items():
            if a.ndim != 4:
                raise RecordError(f"{s} {kind} must be (n_models, n_epochs, n_examples, n_classes); got {a.shape}")
            if s not in labels:
                raise RecordError(f"give labels for {s} (out-of-sample inputs: -1 for every example)")
            try:
                outputs[s] = (outputs_from_logits if kind == "logits" else outputs_from_probabilities)(a, labels[s])
            except ValueError as exc:
                raise RecordError(f"{s} {kind}: {exc}") from None
            top = a.argmax(-1)
            if s in predictions:  # given both: they must describe the same models
                p = predictions[s]
                if p.shape != top.shape:
                    raise RecordError(f"{s} predictions {p.shape} and {kind} {a.shape[:3]} describe different entries")
                at = np.take_along_axis(a, np.clip(p, 0, a.shape[-1] - 1)[..., None].astype(np.int64), -1)[..., 0]
                off = (p != top) & (at < a.max(-1))  # not the argmax, and not a tie with it
                if off.any():
                    raise RecordError(f"{s} predictions differ from the {kind}' argmax at {int(off.sum())} of "
                                      f"{off.size} entries: give the predictions of those {kind}, or leave them out")
            predictions.setdefault(s, top)
        if not predictions:
            raise RecordError("give predictions (or logits, or probabilities) for at least one split")
        unknown = {s for s in predictions if s not in SPLITS and not s.startswith(OOD_PREFIX)}
        if unknown:
            raise RecordError(f"unknown splits {sorted(unknown)}; use {SPLITS} or '{OOD_PREFIX}<name>'")
        if epochs is None:
            raise RecordError("give the recorded epochs, e.g. epochs=[1, 2, 4]")
        return cls(predictions, labels, epochs, meta=meta, probabilities=true_prob, outputs=outputs)

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
                      outputs={s: {k: q[:, i] for k, q in o.items()} for s, o in self.outputs.items()},
                      complete=self.complete[:, i])

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
            for name, q in self.outputs.get(s, {}).items():
                arrays[f"{s}_{OUTPUT_KEYS[name]}"] = q
        # compressed, labels in int8 where the classes allow: the book commits its records
        # (the cpu book's main record: 1.5 MB as int16, uncompressed).  The float16 outputs are
        # stored as they are (they compress only to 80-92%: chapter 8's record), and so is any
        # array of MAP_BYTES or more, which ``load`` maps instead of inflating it into memory
        # (the ImageNet-sized record's 1.7 GiB of predictions took 22 s to inflate)
        outputs = {f"{s}_{key}" for s in self.outputs for key in OUTPUT_KEYS.values()}
        atomic_savez(d / "record.npz", compress=True,
                     stored=[k for k, a in arrays.items() if k in outputs or a.nbytes >= MAP_BYTES], **arrays)
        atomic_write_json(d / "record.json", {**self.meta, "epochs": self.epochs.tolist(),
                                              "complete": self.is_complete})

    @classmethod
    def load(cls, directory):
        """The record in ``directory``.  Predictions and per-entry outputs of at least
        ``MAP_BYTES`` an array (stored uncompressed by ``save``) are mapped from the file
        (read-only np.memmap), not read: the ImageNet-sized record's outputs are 7 GiB, which
        ``scores.scores_table`` reads block by block."""
        path = Path(directory) / "record.npz"
        if not path.exists():
            raise RecordError(f"no record at {path}; train one with `python -m agreebook train --out {directory}`")
        try:
            with np.load(path, allow_pickle=False) as f:
                splits = _split_order([k[:-len("_predictions")] for k in f.files if k.endswith("_predictions")])
                if not splits:
                    raise ValueError("it holds no predictions")
                mapped = npz_stored_arrays(path, [f"{s}_{key}" for s in splits
                                                  for key in ("predictions", *OUTPUT_KEYS.values())], min_bytes=MAP_BYTES)
                read = lambda name: mapped[name] if name in mapped else f[name]
                return cls({s: read(f"{s}_predictions") for s in splits}, {s: f[f"{s}_labels"] for s in splits},
                           f["epochs"], meta=json.loads(str(f["meta"])),
                           outputs={s: {n: read(f"{s}_{key}") for n, key in OUTPUT_KEYS.items() if f"{s}_{key}" in f.files}
                                    for s in splits},
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
