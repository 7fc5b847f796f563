"""Samples on disk in chunks, so that 50,000 samples (or 500,000 rejection candidates) never sit in RAM.

A store is a directory: `store.json` (what the chunks are samples of) and `chunk-000123.npz`, which
holds samples [123 * chunk_size, 124 * chunk_size): uint8 images (B, C, H, W) and any per-sample
arrays (labels, codes of each level, classifier probabilities). Every chunk is written atomically and
is a pure function of (store key, chunk index), so a killed job resumes by making only the missing
chunks; chunks made under another key are discarded when the store is opened.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .artifacts import read_json, save_npz, save_png, write_json
from vqvae2.pretrained import atomic_write


class SampleStore:
    def __init__(self, directory: str | Path, n: int, chunk_size: int, key: dict[str, Any]):
        if n < 1 or chunk_size < 1:
            raise ValueError(f"a sample store needs n >= 1 and chunk_size >= 1, got {n} and {chunk_size}")
        self.dir = Path(directory)
        self.n, self.chunk_size = int(n), int(chunk_size)
        self.key = {**key, "n": self.n, "chunk_size": self.chunk_size}

    # layout

    @property
    def n_chunks(self) -> int:
        return (self.n + self.chunk_size - 1) // self.chunk_size

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.chunk_size, min(self.n, (i + 1) * self.chunk_size)

    def chunk_path(self, i: int) -> Path:
        return self.dir / f"chunk-{i:06d}.npz"

    def open(self) -> "SampleStore":
        """Creates the directory, discarding chunks made under another key (call on one process)."""
        meta = self.dir / "store.json"
        if meta.is_file():
            try:
                same = read_json(meta) == json.loads(json.dumps(self.key))
            except ValueError:
                same = False
            if not same:
                shutil.rmtree(self.dir)
        if not meta.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob("chunk-*.npz"):
                stale.unlink()
            write_json(meta, self.key)
        return self

    def missing(self) -> list[int]:
        return [i for i in range(self.n_chunks) if not self.chunk_path(i).is_file()]

    def complete(self) -> bool:
        return (self.dir / "store.json").is_file() and not self.missing()

    # reading and writing chunks

    def write(self, i: int, **arrays: np.ndarray) -> None:
        lo, hi = self.bounds(i)
        for name, a in arrays.items():
            if len(a) != hi - lo:
                raise ValueError(f"chunk {i} needs {hi - lo} rows, {name!r} has {len(a)}")
        save_npz(self.chunk_path(i), **arrays)

    def read(self, i: int, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        path = self.chunk_path(i)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in (keys or z.files)}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is unreadable ({e}); delete it and run the command again to remake it") from e

    def iter_arrays(self, key: str) -> Iterator[np.ndarray]:
        for i in range(self.n_chunks):
            yield self.read(i, (key,))[key]

    def iter_images(self) -> Iterator[torch.Tensor]:
        for a in self.iter_arrays("images"):
            yield torch.from_numpy(a)

    def gather(self, key: str) -> np.ndarray:
        """A small per-sample array (labels, probabilities) of every sample, in order."""
        return np.concatenate(list(self.iter_arrays(key)))

    def images(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 images of the given sample indices (in the order given), reading only their chunks."""
        idx = np.asarray(idx, dtype=np.int64)
        out: list[np.ndarray | None] = [None] * len(idx)
        by_chunk: dict[int, list[int]] = {}
        for pos, j in enumerate(idx):
            by_chunk.setdefault(int(j) // self.chunk_size, []).append(pos)
        for c, positions in by_chunk.items():
            imgs = self.read(c, ("images",))["images"]
            for pos in positions:
                out[pos] = imgs[int(idx[pos]) - c * self.chunk_size]
        return torch.from_numpy(np.stack(out)) if out else torch.empty(0, dtype=torch.uint8)

    # exports

    def export_npz(self, path: str | Path, extra_keys: tuple[str, ...] = (), scalars: dict | None = None) -> Path:
        """`arr_0`: every image as uint8 (N, H, W, 3) (grey repeated to RGB), the layout other FID tools read;
        then each of `extra_keys` (per-sample arrays) and `scalars`. Streamed chunk by chunk into an
        uncompressed zip (what np.savez writes), so memory stays at one chunk."""
        first = self.read(0)
        _, c, h, w = first["images"].shape
        keys = ("arr_0",) + tuple(k for k in extra_keys if k in first)

        def header(key: str) -> dict:
            if key == "arr_0":
                return {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": (self.n, h, w, 3)}
            a = first[key]
            return {"descr": a.dtype.str, "fortran_order": False, "shape": (self.n, *a.shape[1:])}

        def rows(key: str, a: dict[str, np.ndarray]) -> np.ndarray:
            if key != "arr_0":
                return np.ascontiguousarray(a[key])
            nhwc = a["images"].transpose(0, 2, 3, 1)
            return np.ascontiguousarray(np.repeat(nhwc, 3, axis=3) if c == 1 else nhwc)

        def write(tmp: str) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for key in keys:
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array_header_2_0(f, header(key))
                        for i in range(self.n_chunks):
                            f.write(rows(key, self.read(i, ("images",) if key == "arr_0" else (key,))).tobytes())
                for key, value in (scalars or {}).items():
                    with zf.open(f"{key}.npy", "w") as f:
                        np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
        return atomic_write(path, write)

    def export_png(self, directory: str | Path) -> int:
        """One PNG per sample (000000.png, ...); files already there are kept, so a killed export resumes."""
        from PIL import Image
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = 0
        for i in range(self.n_chunks):
            lo, _ = self.bounds(i)
            chunk = None
            for j in range(lo, self.bounds(i)[1]):
                path = directory / f"{j:06d}.png"
                if path.is_file():
                    continue
                if chunk is None:
                    chunk = self.read(i, ("images",))["images"]
                arr = chunk[j - lo].transpose(1, 2, 0)
                save_png(path, Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr)))
                written += 1
        return written

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
