"""Images per second delivered to the training loop: an image folder decoded per step against the
prepared-data cache.

    python benchmarks/data_throughput.py --out bench-out/data_throughput.json [--n 2000] [--keep DIR]

Renders --n synthetic faces at 1024 px and saves them as PNG files in a temporary folder (the
shape of an FFHQ-1024 folder), then at data.size 256, batch 64, through the training loop's own
sampler and DataLoader:
  (a) the folder as before the cache: every step decodes, converts and resizes its files in the
      main process (num_workers -1), plus, for comparison, the same with worker processes;
  (b) `vqvae2 prepare-data` once (timed: prepare_seconds), then the memory-mapped prepared array.
speedup = (b) / (a). Target: speedup >= 10.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.artifacts import write_json
from pipelines.datasets import DataConfig, build_datasets
from pipelines.datasets.config import available_cores
from pipelines.datasets.prepared import loader_workers
from pipelines.train import StepBatchSampler


def _render(job) -> int:
    from PIL import Image
    from pipelines.datasets import render_face
    folder, start, stop, size = job
    for i in range(start, stop):
        Image.fromarray(render_face(0, i, size)).save(Path(folder) / f"{i:05d}.png")
    return stop - start


def render_folder(folder: Path, n: int, size: int) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder), s, min(n, s + 25), size) for s in range(0, n, 25)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(available_cores()) as pool:
        done = 0
        for k in pool.imap_unordered(_render, jobs):
            done += k
            print(f"\rrendered {done}/{n}", end="", flush=True)
    print()
    return time.perf_counter() - t0


def images_per_second(dataset, batches: int, workers: int, batch_size: int = 64) -> float:
    sampler = StepBatchSampler(len(dataset), batch_size, seed=0, start=0, total=batches + 1)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    it = iter(loader)
    next(it)  # the first batch: worker start-up, page cache of the array
    t0, seen = time.perf_counter(), 0
    for x, _ in it:
        seen += len(x)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--png-size", type=int, default=1024)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--folder-batches", type=int, default=8, help="timed batches of the (slow) folder path")
    ap.add_argument("--cache-batches", type=int, default=60)
    ap.add_argument("--keep", type=Path, help="keep the rendered folder here (reused when it holds --n files)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="data-throughput-"))
    folder = args.keep or tmp / "faces1024"
    try:
        existing = len(list(folder.glob("*.png"))) if folder.is_dir() else 0
        render_seconds = render_folder(folder, args.n, args.png_size) if existing != args.n else None
        bytes_on_disk = sum(p.stat().st_size for p in folder.glob("*.png"))
        base = dict(name="folder", root=str(folder), size=args.size, val_fraction=0.01, cache_dir=str(tmp / "cache"))
        plain, _ = build_datasets(DataConfig(**base))
        folder_ips = images_per_second(plain, args.folder_batches, workers=0)
        auto = loader_workers(plain, 0)
        folder_workers_ips = images_per_second(plain, args.folder_batches, workers=auto)
        t0 = time.perf_counter()
        prepared, _ = build_datasets(DataConfig(**base, prepare=True))
        prepare_seconds = time.perf_counter() - t0
        cache_ips = images_per_second(prepared, args.cache_batches, workers=loader_workers(prepared, 0))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp / "cache", ignore_errors=True)
    result = {
        "n_files": args.n, "png_size": args.png_size, "data_size": args.size, "batch_size": 64,
        "png_megabytes": bytes_on_disk / 1e6, "render_seconds": render_seconds,
        "folder_images_per_second": folder_ips, "folder_workers": 0,
        "folder_images_per_second_with_workers": folder_workers_ips, "folder_auto_workers": auto,
        "prepare_seconds": prepare_seconds, "prepare_workers": available_cores(),
        "cache_images_per_second": cache_ips, "cache_workers": loader_workers(prepared, 0),
        "speedup": cache_ips / folder_ips, "speedup_over_folder_with_workers": cache_ips / folder_workers_ips,
        "target_speedup": 10, "cores": available_cores(), "torch": torch.__version__,
    }
    result["passed"] = result["speedup"] >= 10
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
