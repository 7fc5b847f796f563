"""The ``synthetic-faces`` dataset: procedural faces, rendered by a pool of processes into a disk cache.

Image ``i`` of a split depends only on ``(seed, index)``: train images use indices ``0..n-1``,
val images ``2**32 + i`` (disjoint). Labels: mouth (smile / neutral / open) x glasses -> 6 classes.
"""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .arrays import batch_items, label_tensor, to_tensor
from .cache import PreparedArrays
from .faces import FACE_CLASS_NAMES, RENDERER_VERSION, render_labelled, supersample_for

VAL_INDEX_OFFSET = 2**32  # val images use indices 2**32 + i: disjoint from any train index
CHUNK = 64  # images per task of a worker process

__all__ = ["SyntheticFaces", "VAL_INDEX_OFFSET", "render_faces"]


class SyntheticFaces(Dataset):
    """Procedural RGB cartoon faces (``n`` of them, ``size`` px, ``split`` "train" or "val").

    With ``cache_dir`` every image is rendered up front (``workers`` processes) into a
    prepared-array cache there, or read from it when it exists; without, images are rendered
    lazily on first access and kept in memory by this instance.
    """

    channels = 3

    def __init__(self, n: int, size: int = 32, seed: int = 0, split: str = "train",
                 cache_dir: str | Path | None = None, workers: int = 1):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val'; got {split!r}")
        self.n, self.size, self.seed, self.split = int(n), int(size), int(seed), split
        self.offset = 0 if split == "train" else VAL_INDEX_OFFSET
        self.class_names = list(FACE_CLASS_NAMES)
        self.num_classes = len(self.class_names)
        self.cache = None
        if cache_dir is None:
            self._images = np.zeros((self.n, self.size, self.size, 3), np.uint8)  # lazily touched pages
            self._labels = np.full(self.n, -1, np.int64)
        else:
            self.cache = PreparedArrays(cache_dir, "synthetic-faces", self.cache_key())
            self._images, self._labels = self.cache.get(
                (self.n, self.size, self.size, 3),
                lambda images, path: render_faces(self.seed, self.offset, images, path, workers, desc=repr(self)))

    def cache_key(self) -> dict:
        """Everything that changes the pixels of this dataset."""
        return {"dataset": "synthetic-faces", "renderer": RENDERER_VERSION, "seed": self.seed, "split": self.split,
                "n": self.n, "size": self.size, "supersample": supersample_for(self.size)}

    def __len__(self):
        return self.n

    def _ensure(self, i: int):
        if self._labels[i] < 0:
            self._images[i], self._labels[i] = render_labelled(self.seed, self.offset + i, self.size)

    def image_uint8(self, i: int) -> np.ndarray:
        self._ensure(i)
        return self._images[i]

    def materialize(self) -> tuple[np.ndarray, np.ndarray]:
        """Generate every image; return ``(images uint8 (N,H,W,3), labels int64 (N,))``."""
        for i in range(self.n):
            self._ensure(i)
        return self._images, self._labels

    def __getitem__(self, i):
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        self._ensure(i)
        return to_tensor(self._images[i], self.size), label_tensor(self._labels[i])

    def __getitems__(self, indices: list[int]):
        if self.cache is None:
            return [self[i] for i in indices]
        idx = np.asarray(indices, dtype=np.int64)
        return batch_items(self._images[idx], self._labels[idx], self.size)

    def __getstate__(self):  # for DataLoader workers that are spawned: reopen the cache, never copy it
        state = self.__dict__.copy()
        if self.cache is not None:
            state["_images"] = state["_labels"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.cache is not None:
            self._images, self._labels = self.cache.load()

    def __repr__(self):
        return f"SyntheticFaces(n={self.n}, size={self.size}, seed={self.seed}, split={self.split!r})"


def render_faces(seed: int, offset: int, images: np.ndarray, path: Path | None = None, workers: int = 1,
                 desc: str = "render faces") -> np.ndarray:
    """Fill ``images`` (N, size, size, 3) with faces ``offset + i``; return their labels.

    With ``workers`` > 1 and ``path`` (the .npy file ``images`` is mapped from), worker processes
    render chunks straight into that file."""
    n, size = len(images), images.shape[1]
    labels = np.empty(n, np.int64)
    jobs = [(str(path), seed, offset, size, start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
    bar = tqdm(total=n, desc=desc, unit="img", dynamic_ncols=True, leave=False)
    if workers > 1 and path is not None and len(jobs) > 1:
        with _context().Pool(min(workers, len(jobs))) as pool:
            for start, chunk in pool.imap_unordered(_render_chunk, jobs):
                labels[start:start + len(chunk)] = chunk
                bar.update(len(chunk))
    else:
        for _, _, _, _, start, stop in jobs:
            for i in range(start, stop):
                images[i], labels[i] = render_labelled(seed, offset + i, size)
            bar.update(stop - start)
    bar.close()
    return labels


def _context():
    # fork starts workers at once and they only run numpy and PIL; spawn where fork does not exist
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _render_chunk(job) -> tuple[int, np.ndarray]:
    path, seed, offset, size, start, stop = job
    images = np.load(path, mmap_mode="r+", allow_pickle=False)
    labels = np.empty(stop - start, np.int64)
    for i in range(start, stop):
        images[i], labels[i - start] = render_labelled(seed, offset + i, size)
    images.flush()
    return start, labels
