"""uint8 image arrays as a dataset, and the conversion every dataset shares: uint8 -> float in [-1, 1]."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .config import DataError


def _to_float(t: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (B, C, size, size) in [-1, 1] (antialiased bilinear resize if needed)."""
    t = t.float().div_(127.5).sub_(1.0)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(-1, 1)
    return t


def _channels_first(t: torch.Tensor, image_dims: int) -> torch.Tensor:
    """uint8 images with `image_dims` = 2 (H, W) or 3 (H, W, C) trailing dims -> channels before H, W."""
    return t.unsqueeze(-3) if image_dims == 2 else t.movedim(-1, -3)


def to_tensor(arr: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float32 (C, size, size) in [-1, 1]."""
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        arr = arr.copy()
    return _to_float(_channels_first(torch.from_numpy(arr), arr.ndim)[None], size)[0]


def label_tensor(y: int) -> torch.Tensor:
    return torch.tensor(int(y), dtype=torch.int64)


def batch_items(images: np.ndarray, labels: np.ndarray, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The items of a batch from uint8 (B, H, W[, C]) images in one conversion (what DataLoader's
    `__getitems__` asks for): the same values as to_tensor item by item, without a Python loop per pixel op."""
    t = _to_float(_channels_first(torch.from_numpy(np.ascontiguousarray(images)), images.ndim - 1), size)
    return list(zip(t.unbind(0), torch.from_numpy(np.asarray(labels, dtype=np.int64)).unbind(0)))


class ArrayImageDataset(Dataset):
    """uint8 images in memory: (N, H, W) greyscale or (N, H, W, 3) RGB, with int labels."""

    def __init__(self, images: np.ndarray, labels, class_names: list[str], size: int, name: str = ""):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(images):
            raise DataError(f"{name}: {len(images)} images but {len(self.labels)} labels")
        self.channels = 1 if images.ndim == 3 else images.shape[-1]
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.size = int(size)
        self.name = name

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return to_tensor(self.images[i], self.size), label_tensor(self.labels[i])

    def __getitems__(self, indices: list[int]):
        idx = np.asarray(indices, dtype=np.int64)
        return batch_items(self.images[idx], self.labels[idx], self.size)

    def __repr__(self):
        return f"ArrayImageDataset({self.name!r}, n={len(self)}, size={self.size}, channels={self.channels})"
