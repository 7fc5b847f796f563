"""Image folders prepared once: every image decoded, converted and resized into one uint8 array.

Decoding a large PNG takes tens of milliseconds, so a training loop reading a folder waits for the
CPU. `prepare_folder` decodes every file once (worker processes), into a `PreparedArrays` cache
keyed by the absolute root, the file list with each file's size and mtime, `data.size` and the
resize method: a changed, added or removed file, or another size, is another key, so a stale array
is never read. The datasets of both splits then index that memory-mapped array. A file that cannot
be read is an error naming it, or with `data.skip_bad_files` is marked (label BAD) and left out.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .arrays import batch_items, label_tensor, to_tensor
from .cache import PreparedArrays
from .config import DataError, available_cores
from .decode import IMAGE_READ_ERRORS, decode

BAD = -2  # label of a file that could not be read (skipped with data.skip_bad_files)
RESIZE = "rgb-resize-short-side-center-crop-v1"  # what pipelines.datasets.folder does to a file; bump on change
CHUNK = 64


def folder_key(root: Path, files: list[Path], size: int, skip_bad_files: bool) -> dict:
    """Everything that changes the prepared pixels: where, which files (name, size, mtime), how resized."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"dataset": "folder", "root": str(root.resolve()), "files": len(files), "file_list_sha256": h.hexdigest(),
            "size": size, "resize": RESIZE, "skip_bad_files": skip_bad_files}


def _decode_chunk(job) -> tuple[int, list[tuple[int, str]]]:
    """Worker: decode files [start, stop) into the cache file; returns the unreadable ones."""
    array_path, files, size, start = job
    images = np.load(array_path, mmap_mode="r+", allow_pickle=False)
    bad = []
    for i, f in enumerate(files):
        try:
            images[start + i] = decode(f, size)
        except IMAGE_READ_ERRORS as e:
            bad.append((start + i, f"{type(e).__name__}: {e}"))
    images.flush()
    return start, bad


def prepare_folder(cache_root: Path, root: Path, files: list[Path], labels: list[int], size: int,
                   skip_bad_files: bool, workers: int) -> tuple[np.ndarray, np.ndarray, PreparedArrays]:
    """The prepared (images (N, size, size, 3) memory-mapped, labels with BAD for unreadable files)."""
    cache = PreparedArrays(cache_root, f"folder-{root.resolve().name}", folder_key(root, files, size, skip_bad_files))

    def fill(images: np.ndarray, path: Path) -> np.ndarray:
        out = np.asarray(labels, dtype=np.int64).copy()
        jobs = [(str(path), [str(f) for f in files[s:s + CHUNK]], size, s) for s in range(0, len(files), CHUNK)]
        bar = tqdm(total=len(files), desc=f"prepare-data {root}", unit="img", dynamic_ncols=True)
        bad: list[tuple[int, str]] = []
        if workers > 1 and len(jobs) > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for start, b in pool.imap_unordered(_decode_chunk, jobs):
                    bad += b
                    bar.update(min(CHUNK, len(files) - start))
        else:
            for job in jobs:
                bad += _decode_chunk(job)[1]
                bar.update(len(job[1]))
        bar.close()
        if bad and not skip_bad_files:
            listing = "; ".join(f"{files[i]} ({err})" for i, err in sorted(bad)[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(f"cannot read image file(s): {listing}{more}. Remove or fix them, or set "
                            f"data.skip_bad_files=true to skip unreadable files")
        for i, err in sorted(bad):
            warnings.warn(f"skipping unreadable image file {files[i]}: {err}", stacklevel=2)
            out[i] = BAD
        # the file list beside the arrays (written into the build directory, renamed with it)
        (path.parent / "files.json").write_text(json.dumps([f.relative_to(root).as_posix() for f in files]))
        return out

    images, prepared_labels = cache.get((len(files), size, size, 3), fill)
    return images, prepared_labels, cache


class PreparedImages(Dataset):
    """The rows `rows` of a prepared folder array: (float image in [-1, 1], label) like ImageFolderDataset."""

    channels = 3

    def __init__(self, cache: PreparedArrays, images: np.ndarray, labels: np.ndarray, rows: list[int],
                 class_names: list[str], size: int, files: list[Path], root: str):
        keep = [r for r in rows if labels[r] != BAD]
        self.cache, self.images, self.all_labels = cache, images, labels
        self.rows = np.asarray(keep, dtype=np.int64)
        self.labels = [int(labels[r]) for r in keep]
        self.files = [files[r] for r in keep]
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.size, self.root = int(size), root
        if not len(self.rows):
            raise DataError(f"no readable image files in {root} for this split")

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[int(i)]
        return to_tensor(self.images[r], self.size), label_tensor(self.all_labels[r])

    def __getitems__(self, indices: list[int]):
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        return batch_items(self.images[rows], self.all_labels[rows], self.size)

    def __getstate__(self):  # worker processes reopen the memory map; they never receive a copy of it
        state = self.__dict__.copy()
        state["images"] = state["all_labels"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.images, self.all_labels = self.cache.load()

    def __repr__(self):
        return f"PreparedImages(root={self.root!r}, n={len(self)}, size={self.size}, classes={self.num_classes})"


def loader_workers(dataset: Dataset, requested: int) -> int:
    """DataLoader worker processes: `requested` when > 0, none when -1; 0 chooses per dataset: image files
    decoded per step gain from min(8, cores) workers; arrays in memory or memory-mapped do not."""
    if requested > 0:
        return requested
    if requested < 0:
        return 0
    return min(8, available_cores()) if getattr(dataset, "decodes_per_item", False) else 0
