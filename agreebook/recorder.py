"""Record a collection from your own training loop.

``Recorder(folder, labels, n_models, epochs)`` is created once per collection (by every process
that trains members of it); ``log(member, epoch, split, outputs)`` is called after each recorded
epoch with what the member predicts on the split: its labels (n_examples,), or its logits or
softmax probabilities (n_examples, n_classes), as NumPy arrays or torch tensors.  Each call
writes one small file, atomically (``<folder>/rows/``), so a killed loop loses at most the row
it was writing, a rerun skips what is logged (``logged``), and several processes (one per
member, or one per GPU) write to one folder without locks and without losing rows.
``finish()`` assembles the rows into the same ``Record`` the package's trainer writes
(``record.npz`` beside the rows), with the per-entry outputs ``agreebook.scores`` needs when
every row came with logits or probabilities.

Example:
    >>> rec = Recorder(folder, {"test": y_test}, n_models=4, epochs=[1, 2, 4])   # doctest: +SKIP
    >>> rec.log(member=0, epoch=1, split="test", outputs=net(x_test))             # doctest: +SKIP
    >>> record = rec.finish()                                                      # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .io import atomic_savez, atomic_write_json, remove_stale_temporaries
from .outputs import OUTPUT_KEYS
from .record import OOD_PREFIX, SPLITS, Record, RecordError, _numpy


class Recorder:
    def __init__(self, folder, labels, n_models, epochs, meta=None):
        """folder: the run folder (created); labels: {split: (n_examples,)} with "train" and/or
        "test" and any "ood_<name>" (labels -1); n_models: N; epochs: the recorded epochs,
        increasing; meta: free-form, kept in the record (e.g. {"dataset": ..., "arch": ...}).
        A folder that already holds another collection's rows is refused."""
        self.folder = Path(folder)
        self.labels = {s: _numpy(y).astype(np.int64) for s, y in labels.items()}
        bad = [s for s in self.labels if s not in SPLITS and not s.startswith(OOD_PREFIX)]
        if not self.labels or bad:
            raise RecordError(f"labels need splits {SPLITS} or '{OOD_PREFIX}<name>'; got {sorted(self.labels)}")
        if any(y.ndim != 1 for y in self.labels.values()):
            raise RecordError("labels must be one (n_examples,) array per split")
        self.epochs = [int(e) for e in epochs]
        if not self.epochs or any(b <= a for a, b in zip(self.epochs, self.epochs[1:])) or self.epochs[0] < 0:
            raise RecordError(f"epochs must be increasing and non-negative, e.g. [1, 2, 4]; got {list(epochs)}")
        if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 2:
            raise RecordError(f"n_models must be a whole number of at least 2 (agreement needs two); got {n_models!r}")
        self.n_models = n_models
        self.meta = dict(meta or {})
        digest = hashlib.sha256()
        for s in sorted(self.labels):
            digest.update(s.encode() + self.labels[s].tobytes())
        ident = {"n_models": n_models, "epochs": self.epochs, "labels_sha256": digest.hexdigest(),
                 "splits": sorted(self.labels)}
        path = self.folder / "recorder.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != ident:
                diff = ", ".join(k for k in ident if old.get(k) != ident[k])
                raise RecordError(f"{self.folder} holds rows of another collection (its {diff} differ); "
                                  f"use another folder, or delete {self.folder / 'rows'} to start over")
        else:
            atomic_write_json(path, ident)  # two processes starting at once write the same file
        # no sweep of stale temporaries here: another process may be writing its row right now
        (self.folder / "rows").mkdir(parents=True, exist_ok=True)

    def _row(self, member, epoch, split):
        return self.folder / "rows" / f"m{member:04d}_e{epoch}_{split}.npz"

    def logged(self, member, epoch, split):
        """True when this row is already written (a rerun after a kill can skip it)."""
        return self._row(member, epoch, split).exists()

    def log(self, member, epoch, split, outputs, kind="auto"):
        """Write what ``member`` predicts on ``split`` after ``epoch``: labels (n_examples,) int,
        or logits / softmax probabilities (n_examples, n_classes) float.  kind: "logits",
        "probabilities", or "auto": probabilities when every row is non-negative and sums to 1
        (within 1e-3), logits when clearly not, and an error in between (a low-precision softmax:
        say which).  Writing a row again replaces it."""
        if not (isinstance(member, (int, np.integer)) and 0 <= member < self.n_models):
            raise RecordError(f"member must be 0..{self.n_models - 1}; got {member!r}")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or int(epoch) not in self.epochs:
            raise RecordError(f"epoch {epoch!r} is not one of the recorded epochs {self.epochs}")
        epoch = int(epoch)
        if kind not in ("auto", "logits", "probabilities"):
            raise RecordError(f"kind must be 'auto', 'logits' or 'probabilities'; got {kind!r}")
        if split not in self.labels:
            raise RecordError(f"split {split!r} has no labels here; splits: {', '.join(self.labels)}")
        y = self.labels[split]
        a = _numpy(outputs)
        arrays = {}
        if a.ndim == 1 and np.issubdtype(a.dtype, np.integer):
            arrays["pred"] = a.astype(np.int16)
        elif a.ndim == 2 and np.issubdtype(a.dtype, np.floating):
            from .scores import outputs_from_logits, outputs_from_probabilities
            if kind == "auto":
                gap = np.abs(a.sum(1) - 1).max() if len(a) else 0.0
                if a.min(initial=0) >= 0 and 1e-3 < gap < 1e-2:
                    raise RecordError(f"{split} outputs look like probabilities that do not quite sum to 1 "
                                      f"(off by up to {gap:.1e}): pass kind='probabilities' or kind='logits'")
                kind = "probabilities" if a.min(initial=0) >= 0 and gap <= 1e-3 else "logits"
            if y.max(initial=-1) >= a.shape[1]:
                raise RecordError(f"{split} labels reach {y.max()}, but these outputs have {a.shape[1]} classes")
            try:
                out = (outputs_from_probabilities if kind == "probabilities" else outputs_from_logits)(a, y)
            except ValueError as exc:
                raise RecordError(f"{split} {kind}: {exc}") from None
            arrays["pred"] = a.argmax(1).astype(np.int16)
            arrays.update({k: v.astype(np.float16) for k, v in out.items()})
        else:
            raise RecordError(f"outputs must be labels (n_examples,) or logits / probabilities (n_examples, "
                              f"n_classes); got shape {a.shape} of {a.dtype}")
        if len(arrays["pred"]) != len(y):
            raise RecordError(f"{split} has {len(y)} examples; these outputs have {len(arrays['pred'])}")
        atomic_savez(self._row(member, epoch, split), **arrays)

    def missing(self):
        """The rows not yet logged, as (member, epoch, split) triples."""
        return [(m, e, s) for m in range(self.n_models) for e in self.epochs for s in self.labels
                if not self.logged(m, e, s)]

    def finish(self, allow_incomplete=False):
        """Assemble every logged row into a Record, save it in the folder and return it.  Rows
        not logged raise a RecordError naming them, unless ``allow_incomplete`` (the record then
        marks them incomplete, predictions -1)."""
        # rows a kill cut short, left an hour ago: a process may still be writing a fresh one
        remove_stale_temporaries(self.folder / "rows", older_than=3600)
        missing = self.missing()
        if missing and not allow_incomplete:
            shown = ", ".join(f"member {m} epoch {e} {s}" for m, e, s in missing[:5])
            raise RecordError(f"{len(missing)} row(s) not logged yet ({shown}{', ...' if len(missing) > 5 else ''}); "
                              "log them, or finish(allow_incomplete=True)")
        n_ep = len(self.epochs)
        preds = {s: np.full((self.n_models, n_ep, len(y)), -1, np.int16) for s, y in self.labels.items()}
        outs = {s: {k: np.full(p.shape, np.nan, np.float16) for k in OUTPUT_KEYS} for s, p in preds.items()}
        complete = np.zeros((self.n_models, n_ep), bool)
        with_outputs = True
        for m in range(self.n_models):
            for i, e in enumerate(self.epochs):
                have = True
                for s in self.labels:
                    if not self.logged(m, e, s):
                        have = False
                        continue
                    with np.load(self._row(m, e, s)) as f:
                        preds[s][m, i] = f["pred"]
                        if all(k in f.files for k in OUTPUT_KEYS):
                            for k in OUTPUT_KEYS:
                                outs[s][k][m, i] = f[k]
                        else:
                            with_outputs = False
                complete[m, i] = have
        rec = Record(preds, self.labels, self.epochs, meta={**self.meta, "n_models": self.n_models,
                                                             "protocol": self.meta.get("protocol", "trajectory"),
                                                             "recorded_by": "agreebook.recorder.Recorder"},
                     outputs=outs if with_outputs else None, complete=complete)
        rec.save(self.folder)
        return rec
