"""Prepared-array cache: uint8 images made once (rendered, decoded, resized) and read memory-mapped.

``PreparedArrays(root, name, key)`` names a directory ``root/<name>-<hash of key>/`` holding

    images.npy   uint8 (N, H, W, C), read with np.load(mmap_mode="r"), never unpickled
    labels.npy   int64 (N,)
    meta.json    the key, the shape of the images, and checksums of both files

The checksums (SHA-256 of every 16 MiB of images.npy, and of labels.npy) are checked on open: in full
when the arrays are small (CHECK_ALL_BYTES) or the file's size or modification time changed since the
build, else on a few chunks; bytes changed after the build are refused, never trained on.

The key must hold everything that changes the pixels (dataset, renderer version, seed, split,
n, size, resize settings, the source files' sizes and times...): another key is another
directory, so a stale cache is never read. A build goes to a temporary directory beside it,
renamed into place when complete; a build killed half-way leaves only a temporary directory,
which the next build of that key removes. Builders of one key take turns through a lock file,
so parallel processes (one per rank) build it once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import tokenize
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .config import DataError

try:
    import fcntl
except ImportError:  # not POSIX: no lock, parallel builders may both build (the first rename wins)
    fcntl = None

Fill = Callable[[np.ndarray, Path], np.ndarray]  # (images opened for writing, their path) -> labels


CHECK_CHUNK = 16 << 20  # bytes of images.npy per checksum
CHECK_ALL_BYTES = 1 << 30  # below this every chunk is checked on open; above, CHECK_SAMPLED of them
CHECK_SAMPLED = 8


def _digest(data) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def file_checksums(path: Path, chunks: list[int] | None = None) -> dict[int, str]:
    """{chunk index: SHA-256 prefix} of a file's CHECK_CHUNK-byte chunks (all, or those listed)."""
    out = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for i in range(-(-size // CHECK_CHUNK)) if chunks is None else chunks:
            f.seek(i * CHECK_CHUNK)
            out[i] = _digest(f.read(CHECK_CHUNK))
    return out


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class PreparedArrays:
    def __init__(self, root: str | os.PathLike, name: str, key: dict):
        self.root = Path(root)
        self.key = json.loads(json.dumps(key, sort_keys=True))  # what meta.json gives back
        self.path = self.root / f"{name}-{key_hash(key)}"

    def load(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached ``(images, labels)``, images memory-mapped read-only; None if not built yet."""
        if not self.path.is_dir():
            return None
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(self.path / "images.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(self.path / "labels.npy", allow_pickle=False)
        except (OSError, ValueError, SyntaxError, tokenize.TokenError) as e:
            raise DataError(f"prepared-data cache {self.path} is unreadable ({type(e).__name__}: {e}); "
                            f"delete that directory and it will be prepared again") from e
        if meta.get("key") != self.key or list(images.shape) != meta.get("shape") or len(labels) != len(images):
            raise DataError(f"prepared-data cache {self.path} does not hold what its name says "
                            f"(meta.json {meta_path} vs key {self.key}); delete that directory")
        if "checksums" in meta:  # caches built before checksums existed are read as they are
            self._verify(meta["checksums"])
        return images, labels

    def _checksums(self, directory: Path) -> dict:
        st = (directory / "images.npy").stat()
        return {"images": list(file_checksums(directory / "images.npy").values()),
                "labels": _digest((directory / "labels.npy").read_bytes()),
                "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _verify(self, expected: dict) -> None:
        """DataError when images.npy or labels.npy differ from what was built (see the module docstring)."""
        images = self.path / "images.npy"
        st = images.stat()
        sums = expected["images"]
        changed = st.st_size != expected["size"] or st.st_mtime_ns != expected["mtime_ns"]
        if changed or st.st_size <= CHECK_ALL_BYTES:
            chunks = None
        else:  # a different few chunks on every open, first and last always
            rng = np.random.default_rng()
            chunks = sorted({0, len(sums) - 1, *rng.choice(len(sums), min(CHECK_SAMPLED, len(sums)), replace=False)})
        got = file_checksums(images, chunks)
        bad = [i for i, h in got.items() if i >= len(sums) or sums[i] != h] + \
            (["labels"] if _digest((self.path / "labels.npy").read_bytes()) != expected["labels"] else [])
        if bad or (chunks is None and len(got) != len(sums)):
            where = ", ".join(f"bytes {i * CHECK_CHUNK:,}+" if i != "labels" else "labels.npy" for i in bad[:3])
            raise DataError(f"prepared-data cache {self.path} was changed after it was built ({where or 'its size'} "
                            f"differ from its checksums); delete that directory and it will be prepared again")

    def get(self, shape: tuple[int, ...], fill: Fill) -> tuple[np.ndarray, np.ndarray]:
        """Load the arrays, or build them with ``fill`` first (once, whoever else is building)."""
        found = self.load()
        if found is not None:
            return found
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot make the prepared-data cache directory {self.root} ({type(e).__name__}: {e}); "
                            f"set data.cache_dir to a writable directory, or data.cache=false") from e
        with self._lock():
            found = self.load()  # built by another process while this one waited
            if found is not None:
                return found
            self._remove_stale_builds()
            self._build(shape, fill)
        return self.load()

    def _build(self, shape, fill: Fill) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.root))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache is as readable as its root
            images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=tuple(shape))
            labels = np.asarray(fill(images, tmp / "images.npy"), dtype=np.int64)
            images.flush()
            del images
            if labels.shape != (shape[0],):
                raise ValueError(f"the fill function gave labels of shape {labels.shape}, expected ({shape[0]},)")
            with open(tmp / "labels.npy", "wb") as f:
                np.save(f, labels, allow_pickle=False)
            meta = {"key": self.key, "shape": list(shape), "checksums": self._checksums(tmp)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            for name in ("images.npy", "labels.npy", "meta.json"):
                with open(tmp / name, "rb+") as f:
                    os.fsync(f.fileno())
            try:
                os.rename(tmp, self.path)
            except OSError:
                if not self.path.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same build first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def _lock(self):
        if fcntl is None:
            yield
            return
        with open(self.root / f".{self.path.name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _remove_stale_builds(self) -> None:
        """Temporary directories of this key left by killed builds (safe: this process holds the key's lock)."""
        if fcntl is None:
            return
        for old in self.root.glob(f".{self.path.name}.tmp-*"):
            shutil.rmtree(old, ignore_errors=True)
