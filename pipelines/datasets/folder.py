"""Image folders: any image mode read as RGB, resized and centre-cropped; labels from subfolders."""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .arrays import label_tensor, to_tensor
from .config import DataError
from .decode import IMAGE_READ_ERRORS, bad_file_error, load_image_rgb, resize_center_crop

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")




class ImageFolderDataset(Dataset):
    """Images from files; labels from immediate subfolders (ImageFolder semantics) or -1."""

    channels = 3
    decodes_per_item = True  # DataLoader workers pay off (prepared.loader_workers)

    def __init__(self, files: list[Path], labels: list[int], class_names: list[str], size: int,
                 skip_bad_files: bool = False, root: str | None = None):
        self.files = list(files)
        self.labels = list(labels)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.size = int(size)
        self.skip_bad_files = skip_bad_files
        self.root = root
        self._bad: set[int] = set()

    def __len__(self):
        return len(self.files)

    def _load(self, i):
        im = resize_center_crop(load_image_rgb(self.files[i]), self.size)
        return to_tensor(np.array(im, dtype=np.uint8), self.size), label_tensor(self.labels[i])

    def __getitem__(self, i):
        n = len(self.files)
        i = int(i) % n if n else int(i)
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                return self._load(j)
            except IMAGE_READ_ERRORS as e:
                if not self.skip_bad_files:
                    raise bad_file_error(self.files[j], e) from e
                self._bad.add(j)
                warnings.warn(f"skipping unreadable image file {self.files[j]}: {e}", stacklevel=2)
        raise DataError(f"no readable image files in {self.root} ({n} files, all unreadable)")

    def validate(self) -> list[tuple[str, str]]:
        """Decode every file. Returns ``[(path, error)]`` of unreadable files.

        Raises ``DataError`` naming them unless ``skip_bad_files``; with it they are dropped
        from this dataset with a warning.
        """
        bad = []
        for j, f in enumerate(self.files):
            try:
                load_image_rgb(f)
            except IMAGE_READ_ERRORS as e:
                bad.append((j, str(f), f"{type(e).__name__}: {e}"))
        if bad and not self.skip_bad_files:
            listing = "; ".join(f"{p} ({err})" for _, p, err in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(f"{len(bad)} unreadable image file(s): {listing}{more}. "
                            f"Set data.skip_bad_files=true to skip them")
        if bad:
            for _, p, err in bad:
                warnings.warn(f"skipping unreadable image file {p}: {err}", stacklevel=2)
            drop = {j for j, _, _ in bad}
            keep = [j for j in range(len(self.files)) if j not in drop]
            self.files = [self.files[j] for j in keep]
            self.labels = [self.labels[j] for j in keep]
            self._bad = set()
        return [(p, err) for _, p, err in bad]

    def __repr__(self):
        return f"ImageFolderDataset(root={self.root!r}, n={len(self)}, size={self.size}, classes={self.num_classes})"


def list_image_files(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, hidden entries skipped), sorted by relative path."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data.root directory not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"data.root is not a directory: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / fn)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    if not found:
        raise FileNotFoundError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in data.root directory {root}"
        )
    return found


def _split_value(seed: int, rel: str) -> float:
    h = hashlib.sha256(f"{seed}:{rel}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def folder_class_names(root: Path, files: list[Path]) -> list[str]:
    """Class names of an image folder: its immediate subfolders when every image is in one, else none."""
    rels = [f.relative_to(root).as_posix() for f in files]
    return sorted({r.split("/", 1)[0] for r in rels}) if all("/" in r for r in rels) else []


def folder_split(cfg, rels: list[str]) -> list[bool]:
    """Which files (relative paths) are validation images: a hash of (seed, path), so the split is
    reproducible and stable when files are added or removed; both sides get one image at least."""
    u = [_split_value(cfg.seed, r) for r in rels]
    is_val = [x < cfg.val_fraction for x in u]
    if len(rels) >= 2:
        if not any(is_val):
            is_val[min(range(len(u)), key=u.__getitem__)] = True
        if all(is_val):
            is_val[max(range(len(u)), key=u.__getitem__)] = False
    return is_val


def build_folder(cfg):
    root = Path(cfg.root)
    files = list_image_files(root)
    rels = [f.relative_to(root).as_posix() for f in files]
    class_names = folder_class_names(root, files)
    cls = {c: k for k, c in enumerate(class_names)}
    labels = [cls[r.split("/", 1)[0]] for r in rels] if class_names else [-1] * len(files)
    is_val = folder_split(cfg, rels)

    if cfg.prepare:  # every file decoded once into a memory-mapped array (pipelines/datasets/prepared.py)
        from .prepared import PreparedImages, prepare_folder
        cache_root = cfg.cache_root()
        if cache_root is None:
            raise ValueError("data.prepare=true needs the prepared-data cache: set data.cache=true (and "
                             "data.cache_dir to a directory with room for it)")
        images, prepared, cache = prepare_folder(cache_root, root, files, labels, cfg.size, cfg.skip_bad_files,
                                                 cfg.worker_count())
        return tuple(PreparedImages(cache, images, prepared, [k for k in range(len(files)) if is_val[k] == flag],
                                    class_names, cfg.size, files, str(root)) for flag in (False, True))

    def make(flag):
        idx = [k for k in range(len(files)) if is_val[k] == flag]
        ds = ImageFolderDataset([files[k] for k in idx], [labels[k] for k in idx], class_names,
                                cfg.size, cfg.skip_bad_files, str(root))
        # every file decoded before the first step: a bad one is named here, not mid-training in a worker
        skipped = ds.validate()
        if skipped:
            print(f"[data] {root}: skipped {len(skipped)} unreadable image file(s) of the "
                  f"{'val' if flag else 'train'} split (data.skip_bad_files)", flush=True)
        return ds

    return make(False), make(True)
