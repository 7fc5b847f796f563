"""Stage-1 benchmark: the fashion32 VQ-VAE, 1,500 steps at batch 128, seed 0.

    python benchmarks/stage1.py --out bench-out/stage1.json [--run-dir bench-out/fashion32]

Trains the `fashion32` preset's VQ-VAE with bf16 autocast into RUN/vqvae (reused by the stage-2
and stage-3 benchmarks), evaluates it on the 10,000 test images, then times the same training
for `--speed-steps` steps in fp32 and in bf16 (fresh run directories, same seed), `--speed-repeats`
times each, interleaved, to give the bf16 speed-up measured in this one run (the medians' ratio).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import calibrate, describe
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import RunDir, write_json
from pipelines.config import resolve_config
from pipelines.stage1 import train_vqvae

TARGETS = {"mse_max": 0.005, "codes_used_min": 480, "bf16_speedup_min": 2.0}


def timed_throughput(overrides: list[str], steps: int, precision: str, root: Path) -> float:
    cfg = resolve_config("fashion32", overrides + [f"train_vqvae.steps={steps}", f"train_vqvae.mixed_precision='{precision}'",
                                                   f"train_vqvae.save_every={steps}", "train_vqvae.val_batches=1"])
    run = RunDir(root / f"speed-{precision}")
    shutil.rmtree(run.root, ignore_errors=True)
    metrics = train_vqvae(cfg, run)
    shutil.rmtree(run.root, ignore_errors=True)
    return metrics["images_per_second"]


def main() -> None:
    keep_freed_memory()  # as the `vqvae2` command does (pipelines/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--run-dir", type=Path, default=Path("bench-out/fashion32"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--speed-steps", type=int, default=100)
    ap.add_argument("--speed-repeats", type=int, default=3,
                    help="timings per precision, fp32 and bf16 interleaved; the median counts")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--reuse", action="store_true", help="reuse RUN/vqvae when it was trained with this config")
    args = ap.parse_args()

    machine = describe()  # before anything is timed; calibrated again at the end
    overrides = [f"train_vqvae.batch_size={args.batch_size}", "train_vqvae.seed=0", *args.overrides]
    cfg = resolve_config("fashion32", overrides + [f"train_vqvae.steps={args.steps}"])
    run = RunDir(args.run_dir)
    from pipelines.cli import load_run_config
    from pipelines.stage1 import stage_hash
    load_run_config(run, "fashion32", overrides + [f"train_vqvae.steps={args.steps}"])  # RUN/config.json
    if args.reuse and run.recorded_hash(run.vqvae / "metrics.json") == stage_hash(cfg):
        m = json.loads((run.vqvae / "metrics.json").read_text())  # trained by an earlier run of this script
        train_seconds = m.get("train_seconds")
    else:
        shutil.rmtree(run.vqvae, ignore_errors=True)
        t0 = time.perf_counter()
        m = train_vqvae(cfg, run)
        train_seconds = time.perf_counter() - t0
        m["train_seconds"] = train_seconds
        write_json(run.vqvae / "metrics.json", m)

    scratch = args.out.parent / "stage1-speed"
    each: dict[str, list[float]] = {"no": [], "bf16": []}
    for _ in range(args.speed_repeats):  # interleaved, so a slow spell of the machine hits both
        for precision in each:
            each[precision].append(timed_throughput(overrides, args.speed_steps, precision, scratch))
    shutil.rmtree(scratch, ignore_errors=True)
    ips_fp32, ips_bf16 = statistics.median(each["no"]), statistics.median(each["bf16"])

    result = {
        "preset": "fashion32", "steps": m["steps"], "batch_size": args.batch_size, "seed": 0,
        "mse": m["mse"], "psnr": m["psnr"], "codes_used": m["codes_used"], "perplexity": m["perplexity"],
        "dead_codes": m["dead_codes"], "levels": list(m["levels"]), "codebook_size": cfg.vqvae.codebook_size,
        "n_val": m["n_val"], "train_seconds": train_seconds, "images_per_second_train_run": m["images_per_second"],
        "speed_steps": args.speed_steps, "speed_repeats": args.speed_repeats,
        "images_per_second_each": {"fp32": each["no"], "bf16": each["bf16"]},
        "images_per_second_fp32": ips_fp32, "images_per_second_bf16": ips_bf16,
        "bf16_speedup": ips_bf16 / ips_fp32, "targets": TARGETS,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": machine,
        "calibration_after": calibrate(),
    }
    result["passed"] = {
        "mse": result["mse"] <= TARGETS["mse_max"],
        "codes_used": min(result["codes_used"]) >= TARGETS["codes_used_min"],
        "bf16_speedup": result["bf16_speedup"] >= TARGETS["bf16_speedup_min"],
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
