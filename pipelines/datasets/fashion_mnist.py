"""Fashion-MNIST from its IDX files (gzip or plain), padded from 28 to 32 px."""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np

from .arrays import ArrayImageDataset
from .config import DataError

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read a gzip (or plain) IDX file of unsigned bytes with ``ndim`` dimensions."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read IDX file (corrupt or truncated gzip: {e})") from e
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, header needs {4 + 4 * ndim})")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x{0x0800 + ndim:08x}: unsigned bytes, {ndim} dims)"
        )
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    start = 4 + 4 * ndim
    need = start + math.prod(dims)
    if len(data) != need:
        raise DataError(
            f"{path}: truncated or corrupt IDX file: dims {dims} need {need} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims)


def _find_idx(root: Path, name: str) -> Path:
    p = root / name
    if p.exists():
        return p
    plain = root / name[:-3]
    if plain.exists():
        return plain
    raise FileNotFoundError(
        f"Fashion-MNIST file not found: {p}. Install the Debian package with "
        f"`apt-get install -y dataset-fashion-mnist` (files in {FASHION_MNIST_DEFAULT_ROOT}) "
        f"or pass data.root=DIR holding {', '.join(_IDX_FILES['train'] + _IDX_FILES['val'])}"
    )


def build_fashion_mnist(cfg):
    root = Path(cfg.root or FASHION_MNIST_DEFAULT_ROOT)
    out = []
    for split in ("train", "val"):
        img_path, lab_path = (_find_idx(root, f) for f in _IDX_FILES[split])
        images = read_idx(img_path, 3)
        labels = read_idx(lab_path, 1)
        if len(images) != len(labels):
            raise DataError(f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{lab_path}: label {int(labels.max())} out of range 0..9")
        h, w = images.shape[1:]
        ph, pw = max(0, 32 - h), max(0, 32 - w)
        images = np.pad(images, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))  # background 0 -> -1
        out.append(ArrayImageDataset(images, labels, FASHION_MNIST_CLASSES, cfg.size, f"fashion-mnist/{split}"))
    return out[0], out[1]
