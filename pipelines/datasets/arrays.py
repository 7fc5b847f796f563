"""uint8 image arrays as a dataset, and the conversion every dataset shares: uint8 -> float in [-1, 1]."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .config import DataError


def to_tensor(arr: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float32 (C, size, size) in [-1, 1]."""
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        arr = arr.copy()
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    t = t.float().div_(127.5).sub_(1.0)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        t = t.clamp_(-1.0, 1.0)
    return t


def label_tensor(y: int) -> torch.Tensor:
    return torch.tensor(int(y), dtype=torch.int64)


def batch_items(images: np.ndarray, labels: np.ndarray, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The items of a batch from uint8 (B, H, W[, C]) images in one conversion (what DataLoader's
    `__getitems__` asks for): the same values as to_tensor item by item, without a Python loop per pixel op."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    t = t.float().div_(127.5).sub_(1.0)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(-1, 1)
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
