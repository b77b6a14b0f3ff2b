"""The outside references (C-scores, CIFAR-10H): offline copies read, checked against the
dataset, and a wrong file refused with one message."""
import numpy as np
import pytest

from agreebook.data import load_dataset
from agreebook.references import SOURCES, ReferenceError, load_reference


def test_references_load_offline_and_match_the_datasets(offline_root):
    ds = load_dataset("cifar10", root=offline_root, download=False)
    cs = load_reference("cifar10_cscores", root=offline_root, download=False, labels=ds.y_train)
    assert cs.values.shape == (50000,) and cs.split == "train" and 0 <= cs.values.min() < cs.values.max() <= 1
    h = load_reference("cifar10h", root=offline_root, download=False, labels=ds.y_test)
    assert h.values.shape == (10000, 10) and (h.values.sum(1) >= 47).all()  # about 50 people an image
    assert (h.values.argmax(1) == ds.y_test).mean() > 0.95
    c100 = load_reference("cifar100_cscores", root=offline_root, download=False)
    assert c100.labels.max() == 99
    np.testing.assert_array_equal(cs.at([0, 49999]), cs.values[[0, 49999]])
    with pytest.raises(ReferenceError, match="indices run"):
        cs.at([50000])


def test_a_wrong_reference_is_refused_with_one_message(offline_root, tmp_path):
    ds = load_dataset("cifar10", root=offline_root, download=False)
    with pytest.raises(ReferenceError, match="labels differ .* at [0-9]+ of 50000"):  # another order
        load_reference("cifar10_cscores", root=offline_root, download=False, labels=ds.y_train[::-1])
    with pytest.raises(ReferenceError, match="most chosen class matches"):
        load_reference("cifar10h", root=offline_root, download=False, labels=np.roll(ds.y_test, 1))
    with pytest.raises(ReferenceError, match="the labels given have shape"):
        load_reference("cifar10h", root=offline_root, download=False, labels=ds.y_test[:100])
    (tmp_path / "references").mkdir()
    np.save(tmp_path / "references" / SOURCES["cifar10h"].file, np.zeros((10000, 9), np.int64))  # another shape
    with pytest.raises(ReferenceError, match=r"holds shape \(10000, 9\), not \(10000, 10\)"):
        load_reference("cifar10h", root=tmp_path, download=False)
    (tmp_path / "references" / SOURCES["cifar10_cscores"].file).write_bytes(b"not an npz")  # corrupted
    with pytest.raises(ReferenceError, match="not a readable"):
        load_reference("cifar10_cscores", root=tmp_path, download=False)
    with pytest.raises(ReferenceError, match="is not at .* download https://github.com/pluskid"):
        load_reference("cifar100_cscores", root=tmp_path, download=False)
    with pytest.raises(ReferenceError, match="unknown reference 'cscores'; references are: cifar10_cscores"):
        load_reference("cscores")


def test_a_failed_download_leaves_no_partial_file(tmp_path, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ReferenceError, match="could not download .* put cifar10h-counts.npy at"):
        load_reference("cifar10h", root=tmp_path)
    assert list((tmp_path / "references").iterdir()) == []
