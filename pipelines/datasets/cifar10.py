"""CIFAR-10, binary version only (fixed-size records); the python version is pickles and is refused."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .arrays import ArrayImageDataset
from .config import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # from the dataset authors' page
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "val": ["test_batch.bin"]}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the red, green and blue planes of a 32x32 image


def read_cifar10_bin(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One file of the CIFAR-10 binary version: (N, 32, 32, 3) uint8 images and (N,) labels.
    The binary version is plain fixed-size records; the python version is pickles, which this
    project never loads."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % _CIFAR_RECORD:
        raise DataError(f"{path}: {data.size} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records "
                        f"(truncated or not a CIFAR-10 binary batch)")
    records = data.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DataError(f"{path}: label {int(labels.max())} out of range 0..9 (not a CIFAR-10 binary batch)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def download_cifar10(root: Path) -> None:
    """Fetches the binary archive, checks its MD5 and writes only the expected member files."""
    import tarfile
    import tempfile
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "cifar-10-binary.tar.gz"
        urllib.request.urlretrieve(CIFAR10_URL, archive)
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        if md5 != CIFAR10_MD5:
            raise DataError(f"{CIFAR10_URL} downloaded with MD5 {md5}, expected {CIFAR10_MD5}; try again")
        out = root / CIFAR10_DIR
        out.mkdir(exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for name in CIFAR10_FILES["train"] + CIFAR10_FILES["val"] + ["batches.meta.txt"]:
                member = tar.extractfile(f"{CIFAR10_DIR}/{name}")  # reads bytes: no path from the archive is used
                (out / name).write_bytes(member.read())


def build_cifar10(cfg):
    root = Path(cfg.root)
    folder = root / CIFAR10_DIR
    if not (folder / CIFAR10_FILES["val"][0]).is_file():
        if cfg.download:
            download_cifar10(root)
        elif (root / "cifar-10-batches-py").is_dir():
            raise DataError(
                f"{root / 'cifar-10-batches-py'} is the python (pickle) version of CIFAR-10, which this project never "
                f"loads: a pickle can run code. Put the binary version ({CIFAR10_URL}, folder {CIFAR10_DIR}) in "
                f"{root}, or set data.download=true")
        else:
            raise FileNotFoundError(
                f"CIFAR-10 not found: {folder / CIFAR10_FILES['val'][0]} does not exist. Set data.download=true to "
                f"download the binary version, or extract {CIFAR10_URL} into {root}")
    out = []
    for split in ("train", "val"):
        parts = []
        for name in CIFAR10_FILES[split]:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR-10 file missing: {path} (extract {CIFAR10_URL} into {root} again)")
            parts.append(read_cifar10_bin(path))
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        out.append(ArrayImageDataset(images, labels, CIFAR10_CLASSES, cfg.size, f"cifar10/{split}"))
    return out[0], out[1]
