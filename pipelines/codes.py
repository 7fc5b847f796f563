"""`vqvae2 extract-codes`: the train and validation splits as codes, uint16 `.npy` files read with mmap."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, hash_config, hash_file, load_npy, read_json, save_npy, write_json
from .config import PipelineConfig
from .datasets import build_datasets

SPLITS = ("train", "val")


def vqvae_weights_hash(run: RunDir) -> str:
    path = run.vqvae / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `vqvae2 train-vqvae --run-dir {run.root}` first")
    return hash_file(path)


def stage_hash(run: RunDir) -> str:
    return hash_config({"vqvae": run.recorded_hash(run.vqvae / "metrics.json"), "weights": vqvae_weights_hash(run)})


def _open_memmap(path: Path, shape: tuple[int, ...]) -> tuple[np.memmap, str]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint16, shape=shape), tmp


@torch.no_grad()
def extract_codes(cfg: PipelineConfig, run: RunDir, batch_size: int = 256, device: str | None = None) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = VQVAE2.from_pretrained(run.vqvae, map_location=device).eval()
    weights_hash = vqvae_weights_hash(run)
    datasets = dict(zip(SPLITS, build_datasets(cfg.data)))
    for stale in run.root.glob("codes.tmp*"):  # left by a killed extraction
        shutil.rmtree(stale, ignore_errors=True)
    run.root.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="codes.tmp-", dir=run.root))
    counts = {}
    for split, ds in datasets.items():
        out = tmp_root / split
        out.mkdir(parents=True)
        n = len(ds)
        maps = [_open_memmap(out / f"{lv}.npy", (n, s, s)) for lv, s in zip(model.levels, model.config.grid_sizes())]
        labels = np.empty(n, dtype=np.int64)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
        lo = 0
        for x, y in tqdm(loader, desc=f"extract-codes {split}", dynamic_ncols=True):
            codes = model.encode(x.to(device))
            hi = lo + len(x)
            for (mm, _), c in zip(maps, codes):
                mm[lo:hi] = c.cpu().numpy().astype(np.uint16)
            labels[lo:hi] = y.numpy()
            lo = hi
        for (mm, tmp), lv in zip(maps, model.levels):
            mm.flush()
            del mm
            os.replace(tmp, out / f"{lv}.npy")
        save_npy(out / "labels.npy", labels)
        save_npy(out / "index.npy", np.arange(n, dtype=np.int64))
        counts[split] = n
    num_classes = getattr(datasets["train"], "num_classes", 0)
    meta = {
        "config_hash": stage_hash(run), "vqvae_hash": weights_hash, "levels": model.levels,
        "grid_sizes": model.config.grid_sizes(), "codebook_size": model.config.codebook_size,
        "num_classes": num_classes, "n": counts, "dtype": "uint16",
    }
    write_json(tmp_root / "codes.json", meta)
    shutil.rmtree(run.codes, ignore_errors=True)
    os.replace(tmp_root, run.codes)  # the whole codes/ appears at once
    return meta


def read_codes_meta(run: RunDir) -> dict:
    """codes.json, refusing codes extracted with other VQ-VAE weights than the run's."""
    meta = read_json(run.codes / "codes.json")
    current = vqvae_weights_hash(run)
    if meta.get("vqvae_hash") != current:
        raise ValueError(
            f"{run.codes} was extracted with VQ-VAE weights {meta.get('vqvae_hash')}, but {run.vqvae}/model.safetensors "
            f"is {current}: re-run `vqvae2 extract-codes --run-dir {run.root}`")
    return meta


def first_codes(run: RunDir, split: str, n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The codes of every level (top first, each (n, h, w) int64) and the labels of a split's first n items."""
    meta = read_codes_meta(run)
    d = run.codes / split
    codes = [torch.from_numpy(load_npy(d / f"{lv}.npy", mmap=True)[:n].astype(np.int64)) for lv in meta["levels"]]
    return codes, torch.from_numpy(load_npy(d / "labels.npy")[:n])


class CodesDataset(Dataset):
    """Items (label, codes of `level`, codes of every level above it...) as int64 tensors, read by mmap."""

    def __init__(self, run: RunDir, split: str, level: str):
        meta = read_codes_meta(run)
        if level not in meta["levels"]:
            raise ValueError(f"unknown level {level!r}: the codes in {run.codes} have levels {meta['levels']}")
        i = meta["levels"].index(level)
        d = run.codes / split
        self.target = load_npy(d / f"{level}.npy", mmap=True)
        self.above = [load_npy(d / f"{lv}.npy", mmap=True) for lv in meta["levels"][:i]]
        self.labels = load_npy(d / "labels.npy")
        self.meta = meta

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int):
        codes = [torch.from_numpy(a[i].astype(np.int64)) for a in (self.target, *self.above)]
        return (torch.tensor(int(self.labels[i])), *codes)
