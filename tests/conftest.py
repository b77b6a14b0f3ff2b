import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AGREEBOOK_SHARED", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def offline_root(tmp_path_factory):
    """A data root built from ../shared/datasets exactly as a user would: torchvision's MNIST and
    Fashion-MNIST files copied in, CIFAR-10 decoded by the shared script into cifar10.npz."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the offline datasets at {SHARED}")
        pytest.skip(f"no offline datasets at {SHARED}")
    root = tmp_path_factory.mktemp("data")
    for name in ("MNIST", "FashionMNIST"):
        shutil.copytree(SHARED / name, root / name)
        for p in (root / name).rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.copy(SHARED / "stackoverflow_titles_20k.csv", root)
    subprocess.run([sys.executable, str(SHARED / "decode_cifar10.py"), str(root / "cifar10.npz")], check=True)
    shutil.copytree(SHARED / "references", root / "references")  # C-scores, CIFAR-10H
    for p in (root / "references").rglob("*"):
        p.chmod(0o644)
    (root / "references").chmod(0o755)
    return root
