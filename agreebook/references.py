"""Per-example scores that other work computed, to set beside a collection's: C-scores and
CIFAR-10H human labels, in their datasets' original orders.

Each reference is a file under ``<data root>/references/`` (the root of ``data.load_dataset``:
``$AGREEBOOK_DATA`` or ``~/.cache/agreebook``), downloaded from its authors' repository when it
is missing and downloads are allowed.  ``load_reference(name)`` reads one and checks it: its
shape, and its labels against the dataset's where it carries them.

* ``cifar10_cscores``, ``cifar100_cscores``: C-scores (Jiang, Zhang, Talwar and Mozer, ICML
  2021), the expected accuracy on a training example of models trained on random subsets of
  the training set that leave it out, estimated from thousands of ResNets; one per training
  image, with the labels they were computed for.
* ``cifar10h``: CIFAR-10H (Peterson, Battleday, Griffiths and Russakovsky, ICCV 2019), how many
  of about 50 human annotators chose each class for each CIFAR-10 test image.

Example:
    >>> ref = load_reference("cifar10h")                           # doctest: +SKIP
    >>> ref.values.shape, ref.split                                # doctest: +SKIP
    ((10000, 10), 'test')
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .data import default_root


class ReferenceError(ValueError):
    """A reference that is missing, unreadable or does not match its dataset; one line that
    says what to do."""


@dataclass(frozen=True)
class Source:
    file: str
    url: str
    dataset: str  # the dataset whose original order the file follows
    split: str  # "train" or "test"
    n_examples: int
    n_classes: int
    what: str


SOURCES = {
    "cifar10_cscores": Source(
        "cifar10-cscores-orig-order.npz",
        "https://github.com/pluskid/structural-regularity/raw/master/docs/cscores/cifar10-cscores-orig-order.npz",
        "cifar10", "train", 50000, 10, "C-scores of the CIFAR-10 training set (Jiang et al., ICML 2021)"),
    "cifar100_cscores": Source(
        "cifar100-cscores-orig-order.npz",
        "https://github.com/pluskid/structural-regularity/raw/master/docs/cscores/cifar100-cscores-orig-order.npz",
        "cifar100", "train", 50000, 100, "C-scores of the CIFAR-100 training set (Jiang et al., ICML 2021)"),
    "cifar10h": Source(
        "cifar10h-counts.npy", "https://github.com/jcpeterson/cifar-10h/raw/master/data/cifar10h-counts.npy",
        "cifar10", "test", 10000, 10, "CIFAR-10H human label counts of the CIFAR-10 test set (Peterson et al., ICCV 2019)"),
}


@dataclass
class Reference:
    """One loaded reference: ``values`` (n_examples,) scores or (n_examples, n_classes) counts,
    ``labels`` (n_examples,) the labels the file carries (None where it carries none), in the
    original order of ``dataset``'s ``split``; ``path`` the file read."""
    name: str
    dataset: str
    split: str
    values: np.ndarray
    labels: Optional[np.ndarray]
    path: Path

    def at(self, indices):
        """The reference at indices into its dataset's split (0-based, original order)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.values)):
            raise ReferenceError(f"{self.name} covers examples 0-{len(self.values) - 1} of {self.dataset}'s "
                                 f"{self.split} set; indices run {idx.min()}-{idx.max()}")
        return self.values[idx]

    def for_record(self, record, split):
        """The reference for a record's split, example by example: the record must be of this
        reference's dataset (a class subset such as cifar10_animals indexes its own images, not
        CIFAR-10's), its split must draw from the reference's ("train" and "heldout" from the
        training set), and its labels must agree with the reference's at those indices."""
        if record.meta.get("dataset") != self.dataset:
            raise ReferenceError(f"{self.name} covers {self.dataset}; this record is of "
                                 f"{record.meta.get('dataset')!r}, whose indices are into its own examples: "
                                 f"train a collection on {self.dataset} (a train_size subset keeps the indices)")
        source = "train" if split in ("train", "heldout") else split
        if source != self.split:
            raise ReferenceError(f"{self.name} covers {self.dataset}'s {self.split} set; {split!r} is drawn from "
                                 f"its {source} set")
        sub = record.meta.get("subset") or {}
        idx = np.asarray(sub.get(f"{split}_indices", np.arange(len(record.labels[split]))), dtype=np.int64)
        vals = self.at(idx)
        y = record.labels[split]
        agree = (self.labels[idx] == y).mean() if self.labels is not None else (vals.argmax(1) == y).mean()
        if agree < (1.0 if self.labels is not None else 0.9):
            raise ReferenceError(f"{self.name} and this record's {split} labels agree on {agree:.0%} of its "
                                 f"examples: its indices are not {self.dataset}'s original order")
        return vals


def _fetch(src, path):
    """Download ``src.url`` to ``path`` through a temporary file: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    import http.client
    try:
        with urllib.request.urlopen(src.url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(tmp, path)
    except BaseException as exc:  # a cut connection, Ctrl-C: no partial file either way
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, http.client.HTTPException)):
            raise ReferenceError(f"could not download {src.what} from {src.url} ({exc}); put {src.file} at "
                                 f"{path} by hand") from None
        raise


def load_reference(name, root=None, download=True, labels=None) -> Reference:
    """Read reference ``name`` (a key of ``SOURCES``) from ``<root>/references/``, downloading it
    when missing and ``download`` is true, and check it.

    labels: the dataset's labels of that split in its original order (n_examples,), to check the
    file against (C-scores carry the labels they were computed for; CIFAR-10H's most chosen
    class is checked to agree with at least 90% of them, as people mislabel few CIFAR-10 test
    images).  A ReferenceError says what is wrong and what to do.
    """
    if name not in SOURCES:
        raise ReferenceError(f"unknown reference {name!r}; references are: {', '.join(SOURCES)}")
    src = SOURCES[name]
    path = Path(root or default_root()) / "references" / src.file
    if not path.exists():
        if not download:
            raise ReferenceError(f"{src.what} is not at {path}; download {src.url} there (or allow downloads)")
        _fetch(src, path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                values, ref_labels = z["scores"], z["labels"]
        else:
            values, ref_labels = np.load(path), None
    except Exception as exc:  # a truncated or foreign file: numpy raises several kinds
        raise ReferenceError(f"{path} is not a readable {src.what} file ({type(exc).__name__}: {exc}); delete it "
                             f"and download {src.url} again") from None
    want = (src.n_examples,) if ref_labels is not None else (src.n_examples, src.n_classes)
    if values.shape != want or (ref_labels is not None and ref_labels.shape != (src.n_examples,)):
        raise ReferenceError(f"{path} holds shape {values.shape}, not {want} ({src.what}); it is another file: "
                             f"download {src.url} again")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (src.n_examples,):
            raise ReferenceError(f"{name} covers the {src.n_examples} examples of {src.dataset}'s {src.split} set in "
                                 f"their original order; the labels given have shape {labels.shape}")
        if ref_labels is not None:
            bad = int((ref_labels != labels).sum())
            if bad:
                raise ReferenceError(f"{name}'s labels differ from {src.dataset}'s {src.split} labels at {bad} of "
                                     f"{len(labels)} examples: the dataset is in another order or is another dataset")
        else:
            agree = float((values.argmax(1) == labels).mean())
            if agree < 0.9:
                raise ReferenceError(f"{name}'s most chosen class matches {src.dataset}'s {src.split} labels on "
                                     f"{agree:.0%} of the examples: the dataset is in another order or is another "
                                     f"dataset")
    return Reference(name, src.dataset, src.split, values, ref_labels, path)
