import numpy as np
import pytest

from agreebook import data as D
from tolerance import ULPS64


def _check(ds, n_classes, shape):
    assert ds.x_train.dtype == np.uint8 and ds.x_train.ndim == 4 and ds.x_train.shape[1:] == shape
    assert ds.y_train.dtype == np.int64 and ds.x_test.shape[1:] == shape
    assert ds.n_classes == n_classes
    assert set(np.unique(ds.y_train)) == set(range(n_classes))


def test_digits_fixed_split():
    a, b = D.load_dataset("digits"), D.load_dataset("digits")
    _check(a, 10, (8, 8, 1))
    assert (len(a.y_train), len(a.y_test)) == (1437, 360)
    assert a.fingerprint() == b.fingerprint()
    assert a.x_train.max() == 255


@pytest.mark.parametrize("name,n,shape,n_train,n_test", [
    ("mnist", 10, (28, 28, 1), 60000, 10000),
    ("fashion_mnist", 10, (28, 28, 1), 60000, 10000),
    ("cifar10", 10, (32, 32, 3), 50000, 10000),
    ("cats_vs_dogs", 2, (32, 32, 3), 10000, 2000),
    ("cifar10_animals", 5, (32, 32, 3), 25000, 5000),
])
def test_offline_real_datasets(offline_root, name, n, shape, n_train, n_test):
    ds = D.load_dataset(name, root=offline_root)
    _check(ds, n, shape)
    assert (len(ds.y_train), len(ds.y_test)) == (n_train, n_test)
    if name == "mnist":
        assert ds.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the official first labels
        # the first load wrote the prepared file; the second reads it and matches
        assert (offline_root / "mnist.npz").exists()
        again = D.load_dataset(name, root=offline_root)
        assert "prepared" in again.source and again.fingerprint() == ds.fingerprint()
    if name == "cats_vs_dogs":
        assert ds.classes == ["cat", "dog"]
    if name == "cifar10_animals":  # relabelled 0..4 in this order, from CIFAR-10's 2, 3, 4, 5, 7
        assert ds.classes == ["bird", "cat", "deer", "dog", "horse"]
        full = D.load_dataset("cifar10", root=offline_root)
        keep = np.isin(full.y_train, [2, 3, 4, 5, 7])
        np.testing.assert_array_equal(ds.x_train, full.x_train[keep])
        np.testing.assert_array_equal(ds.y_train, np.searchsorted([2, 3, 4, 5, 7], full.y_train[keep]))


def test_missing_dataset_says_what_to_do(tmp_path):
    root = tmp_path / "nothing"
    with pytest.raises(D.DatasetError, match=r"cifar-100-python.*cifar100\.npz"):
        D.load_dataset("cifar100", root=root, download=False)
    assert not root.exists()  # no partial folders left behind
    with pytest.raises(D.DatasetError, match="known datasets: .*digits"):
        D.load_dataset("imagenet")


def test_superclass_from_prepared_cifar100(tmp_path):
    # a prepared cifar100.npz (here tiny and fake-sized, but with CIFAR-100's class names)
    from agreebook.data import CIFAR100_SUPERCLASSES
    names = sorted(c for v in CIFAR100_SUPERCLASSES.values() for c in v)
    assert len(names) == 100 and len(CIFAR100_SUPERCLASSES) == 20
    y = np.arange(200) % 100
    x = np.zeros((200, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "cifar100.npz", x_train=x, y_train=y, x_test=x[:100], y_test=y[:100], classes=np.array(names))
    ds = D.load_dataset("small_mammals", root=tmp_path)
    assert ds.classes == CIFAR100_SUPERCLASSES["small_mammals"]
    assert len(ds.y_train) == 10 and set(ds.y_train) == set(range(5))
    assert [names[k] for k in ds.subset["classes"]] == ds.classes


def test_synthetic_sets_are_seeded():
    g = D.load_dataset("gaussian")
    _check(g, 2, (32, 32, 3))
    assert (len(g.y_train), len(g.y_test)) == (5000, 1000)
    z = (g.x_train.reshape(len(g.x_train), -1).astype(float) - 128) / 32
    diff = z[g.y_train == 1].mean() - z[g.y_train == 0].mean()
    assert diff == pytest.approx(0.1, abs=0.01)
    assert D.load_dataset("gaussian", seed=0).fingerprint() == g.fingerprint()
    assert D.load_dataset("gaussian", seed=1).fingerprint() != g.fingerprint()
    # the paper's task was generated before the shift became a name: its bytes are unchanged
    assert g.fingerprint() == "39002dfaa4efd1b4eddec9bae05965583a620fca5de768e72612ff73935cf31b"
    for name, shift in (("gaussian_0.05", 0.05), ("gaussian_0.03", 0.03)):
        h = D.load_dataset(name)
        z = (h.x_train.reshape(len(h.x_train), -1).astype(float) - 128) / 32
        assert z[h.y_train == 1].mean() - z[h.y_train == 0].mean() == pytest.approx(shift, abs=0.01)
    gab = D.load_dataset("gabor")
    _check(gab, 12, (32, 32, 3))
    # the patch lives in the class's channel: the other two stay at mid-grey
    for c in range(3):
        imgs = gab.x_train[gab.y_train // 4 == c].astype(int)
        others = [k for k in range(3) if k != c]
        assert np.all(imgs[..., others] == 128) and imgs[..., c].std() > 10


def test_transforms():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    idx = D.stratified_subset(y, 10, seed=0)
    assert len(idx) == 10 and np.bincount(y[idx]).tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(idx, D.stratified_subset(y, 10, seed=0))
    with pytest.raises(D.DatasetError, match="impossible"):
        D.stratified_subset(y, 101, seed=0)
    parts = D.partitions(100, 3, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    r = D.random_labels(y, 4, seed=0)
    assert r.shape == y.shape and (r != y).mean() > 0.5
    ds = D.load_dataset("digits")
    sub = D.class_subset(ds, ["3", "8"])
    assert sub.classes == ["3", "8"] and set(sub.y_train) == {0, 1}
    with pytest.raises(D.DatasetError, match="no classes"):
        D.class_subset(ds, ["cat"])


def test_channel_mean_sd_matches_numpy_across_chunks():
    x = np.random.default_rng(0).integers(0, 256, (97, 5, 4, 3), dtype=np.uint8)
    x[..., 2] //= 7  # channels with other spreads
    flat = x.reshape(-1, 3)
    for rows in (1, 50, 1 << 20):  # chunk edges must not matter
        mean, sd = D._channel_mean_sd(x, rows=rows)
        np.testing.assert_array_equal(mean, flat.mean(0))  # integer sums: exact
        np.testing.assert_allclose(sd, flat.std(0), rtol=ULPS64)


def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    """torchvision makes MNIST/raw before its download fails offline: nothing of it stays, and
    what the data root held before does."""
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, root, train, download):
            (tmp_path / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(tvd, "MNIST", Offline)
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(D.DatasetError) as err:
        D.load_dataset("mnist", root=tmp_path, download=True)
    assert "--data-root" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
