"""``DataConfig``: which dataset, at what size, how it is split, and where prepared data is cached."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASET_NAMES = ("synthetic-faces", "fashion-mnist", "folder", "cifar10")
MIN_SIZE, MAX_SIZE = 8, 2048
CACHE_ENV = "VQVAE2_CACHE"


class DataError(ValueError):
    """A dataset file exists but cannot be used (corrupt, truncated, wrong format)."""


@dataclass
class DataConfig:
    name: str = "synthetic-faces"
    root: str | None = None
    size: int = 32
    n_train: int = 4096
    n_val: int = 512
    val_fraction: float = 0.1
    seed: int = 0
    skip_bad_files: bool = False
    download: bool = False
    cache: bool = True  # keep prepared images (rendered faces) on disk, memory-mapped, and reuse them
    cache_dir: str = ""  # "" = $VQVAE2_CACHE, else ~/.cache/vqvae2
    workers: int = 0  # processes that prepare images; 0 = one per available CPU core
    prepare: bool = False  # image folders: decode every file once into the cache and train from that

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in DATASET_NAMES:
            near = difflib.get_close_matches(str(self.name), DATASET_NAMES, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(
                f"data.name must be one of {', '.join(DATASET_NAMES)}; got {self.name!r}{hint}"
            )
        if isinstance(self.root, Path):
            self.root = str(self.root)
        if self.root == "":
            self.root = None
        if self.root is not None and not isinstance(self.root, str):
            raise ValueError(f"data.root must be a path string or null; got {self.root!r}")
        if self.name in ("folder", "cifar10") and self.root is None:
            raise ValueError(f"data.root is required for data.name={self.name!r} (the directory of the images)")
        check_int("data.size", self.size, MIN_SIZE, MAX_SIZE)
        if self.name == "synthetic-faces":
            check_int("data.size", self.size, MIN_SIZE, 512, " for synthetic-faces")
        check_int("data.n_train", self.n_train, 1, 2**31)
        check_int("data.n_val", self.n_val, 1, 2**31)
        check_int("data.seed", self.seed, 0, 2**63 - 1)
        check_int("data.workers", self.workers, 0, 1024)
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not (0.0 < float(vf) < 1.0):
            raise ValueError(f"data.val_fraction must be a number with 0 < data.val_fraction < 1; got {vf!r}")
        self.val_fraction = float(vf)
        for key in ("skip_bad_files", "download", "cache", "prepare"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"data.{key} must be true or false; got {getattr(self, key)!r}")
        if isinstance(self.cache_dir, Path):
            self.cache_dir = str(self.cache_dir)
        if not isinstance(self.cache_dir, str):
            raise ValueError(f"data.cache_dir must be a path string (\"\" = ${CACHE_ENV} or ~/.cache/vqvae2); "
                             f"got {self.cache_dir!r}")

    def cache_root(self) -> Path | None:
        """Where prepared data goes: data.cache_dir, else $VQVAE2_CACHE, else ~/.cache/vqvae2; None when off."""
        if not self.cache:
            return None
        return Path(self.cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vqvae2").expanduser()

    def worker_count(self) -> int:
        return self.workers or available_cores()

    def hash_extra(self) -> dict:
        """What identifies the data beyond the options: the face renderer's version for synthetic faces."""
        if self.name == "synthetic-faces":
            from .faces import RENDERER_VERSION
            return {"renderer": RENDERER_VERSION}
        return {}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_int(key, value, lo, hi, where=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{key} must be an integer{where}; got {value!r}")
    if not (lo <= value <= hi):
        raise ValueError(f"{key} must be between {lo} and {hi}{where}; got {value}")
