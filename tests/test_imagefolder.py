"""imagefolder:<path> datasets: real JPEGs in train/<class>/ and val/<class>/, decoded as training
reads them, recorded and resumed like the array datasets."""
import numpy as np
import pytest
import torch

from agreebook.config import ConfigError, TrainConfig
from agreebook.data import DatasetError, load_dataset
from agreebook.engines.loop import train_member
from agreebook.member import Checkpoint, make_jobs
from agreebook.prepare import TrainingData, prepare_dataset
from agreebook.train import Runtime, train_collection


@pytest.fixture(scope="module")
def folder(tmp_path_factory, offline_root):
    """12 training and 6 validation images a class of the CIFAR-10 copy, written as JPEGs, every
    third one stretched to 40x30 (ImageNet's images are not square)."""
    from PIL import Image
    ds = load_dataset("cifar10", root=offline_root, download=False)
    root = tmp_path_factory.mktemp("images")
    for split, x, y, per in (("train", ds.x_train, ds.y_train, 12), ("val", ds.x_test, ds.y_test, 6)):
        for c, name in enumerate(ds.classes):
            (root / split / name).mkdir(parents=True)
            for k, i in enumerate(np.flatnonzero(y == c)[:per]):
                im = Image.fromarray(x[i])
                (im.resize((40, 30)) if k % 3 == 0 else im).save(root / split / name / f"{k:03d}.jpg", quality=90)
    return root


def cfg_of(folder, **kw):
    return TrainConfig(**{"dataset": f"imagefolder:{folder}", "arch": "small_st_vgg", "n_models": 2,
                          "epochs": (1, 2, 3), "resize": 36, "crop": 32, "batch_size": 40, **kw})


def test_an_image_folder_loads_as_files_and_decodes_resized_and_cropped(folder):
    from PIL import Image
    ds = load_dataset(f"imagefolder:{folder}", resize=36, crop=32)
    assert ds.classes[:2] == ["airplane", "automobile"] and len(ds.y_train) == 120 and len(ds.y_test) == 60
    assert ds.x_train.shape == (120, 32, 32, 3) and not hasattr(ds.x_train, "__array__")  # files, not pixels
    sub = ds.x_train[np.array([5, 17])]
    assert len(sub) == 2 and sub.paths[1] == ds.x_train.paths[17]
    from torchvision import transforms as T
    tv = T.Compose([T.Resize(36, interpolation=T.InterpolationMode.BILINEAR, antialias=True), T.CenterCrop(32)])
    for i in (0, 1):  # a 40x30 image and a 32x32 one, as torchvision's ImageNet transform makes them
        with Image.open(folder / ds.x_train.paths[i]) as im:
            np.testing.assert_array_equal(ds.x_train.decode(i), np.asarray(tv(im.convert("RGB"))))
    np.testing.assert_array_equal(ds.x_train[3], ds.x_train.decode(3))  # an integer index decodes, as an array's row
    # the fingerprint reads no image: with PIL unable to open anything, it is the same
    before = ds.fingerprint()
    import PIL.Image
    real = PIL.Image.open
    try:
        PIL.Image.open = lambda *a, **k: (_ for _ in ()).throw(AssertionError("an image was read"))
        assert load_dataset(f"imagefolder:{folder}", resize=36, crop=32).fingerprint() == before
    finally:
        PIL.Image.open = real
    assert load_dataset(f"imagefolder:{folder}", resize=40, crop=32).fingerprint() != before


def test_an_image_folder_trains_records_and_resumes_like_arrays(folder, tmp_path, monkeypatch):
    cfg = cfg_of(folder)
    rt = Runtime(progress=False, workers=1)
    rec = train_collection(cfg, tmp_path / "a", rt)
    again = train_collection(cfg, tmp_path / "b", rt)
    np.testing.assert_array_equal(rec.predictions["test"], again.predictions["test"])  # reproducible
    assert rec.predictions["train"].shape == (2, 3, 120) and rec.meta["engine"] == "loop"
    np.testing.assert_array_equal(rec.labels["test"], load_dataset(f"imagefolder:{folder}").y_test)
    acc = rec.accuracies("train")
    assert acc[:, -1].mean() > 0.15  # it learns something from 120 images
    # killed after epoch 2, resumed: the same predictions as the uninterrupted run
    c = cfg.validate().resolved()
    assert c.dataset == f"imagefolder:{folder.resolve()}" and (c.resize, c.crop) == (36, 32)
    assert TrainConfig(dataset=f"imagefolder:{folder}").validate().resolved().crop == 224  # the defaults, explicit
    data = TrainingData(prepare_dataset(c), c.arch, "cpu")
    assert all(type(x).__name__ == "StreamedImages" for x in data.x.values())  # no decoded split is held
    job = make_jobs(c)[0]
    ticks = []

    def stop_after_two():
        ticks.append(1)
        if len(ticks) == 2:
            raise KeyboardInterrupt

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the record's members computed (one thread a conv member)
    try:
        ck = Checkpoint(tmp_path / "ck" / "m.pt")
        with pytest.raises(KeyboardInterrupt):
            train_member(job, c, data, ck, "cpu", on_epoch=stop_after_two)
        assert torch.load(ck.path, weights_only=False)["epoch"] == 2
        resumed = train_member(job, c, data, ck, "cpu")
        for split in ("train", "test"):
            np.testing.assert_array_equal(resumed[split]["pred"], rec.predictions[split][0])
        # every batch came from the DataLoader's planned or front-to-back passes, none decoded here
        assert sum(x.fallbacks for x in data.x.values()) == 0
        # killed mid-epoch (at epoch 3's first step, its planned batches unserved): the same again
        from agreebook import member as J
        real, steps = J.loss, []

        def loss_then_stop(*a, **k):
            steps.append(1)
            if len(steps) == 7:  # 3 steps an epoch: the first step of epoch 3
                raise KeyboardInterrupt
            return real(*a, **k)
        ck2 = Checkpoint(tmp_path / "ck2" / "m.pt")
        monkeypatch.setattr(J, "loss", loss_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train_member(job, c, data, ck2, "cpu")
        monkeypatch.setattr(J, "loss", real)
        again = train_member(job, c, data, ck2, "cpu")
        np.testing.assert_array_equal(again["test"]["pred"], rec.predictions["test"][0])
    finally:
        torch.set_num_threads(threads_before)


def test_image_folder_settings_are_checked(folder, tmp_path):
    with pytest.raises(ConfigError, match="resize applies to imagefolder"):
        TrainConfig(dataset="digits", resize=64).validate()
    with pytest.raises(DatasetError, match="crop 64 is larger than resize 36"):
        load_dataset(f"imagefolder:{folder}", resize=36, crop=64)
    with pytest.raises(DatasetError, match="no folder .*train; an image folder holds train/<class>"):
        train_collection(cfg_of(tmp_path / "empty"), tmp_path / "r", Runtime(progress=False))
    with pytest.raises(ConfigError, match="ood.* not drawn for image folders"):
        cfg_of(folder, ood=("noise",)).validate()
    with pytest.raises(ConfigError, match="alexnet takes images of at least 64 pixels"):
        cfg_of(folder, arch="alexnet").validate()
    (tmp_path / "one" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "one" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="Found no valid file"):  # an empty class folder
        load_dataset(f"imagefolder:{tmp_path / 'one'}")
    with pytest.raises(ConfigError, match="an image folder runs on the loop engine"):
        train_collection(cfg_of(folder), tmp_path / "s", Runtime(progress=False, engine="stacked"))
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
