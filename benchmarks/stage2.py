"""Stage-2 benchmark: the fashion32 PixelSNAIL priors, 2,000 steps each at batch 128.

    python benchmarks/stage1.py --out bench-out/stage1.json      # first: the VQ-VAE
    python benchmarks/stage2.py --out bench-out/stage2.json [--run-dir bench-out/fashion32]
    python benchmarks/stage2.py --out bench-out/stage2-speed.json --speed-only   # only fp32 against bf16

Extracts the codes with the stage-1 benchmark's VQ-VAE, trains the prior of every level and
reports validation `nll_bits` beside `unigram_bits`, the entropy of the level's code frequencies
on the training codes (the score of a prior that ignores all context). Then samples 64
class-conditional images to RUN/samples/grid.png.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import calibrate, describe
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import RunDir, read_json, write_json
from pipelines.cli import load_run_config
from pipelines.run import run_stage

MARGINS = {"top": 0.5, "bottom": 1.5}  # required gap below the unigram entropy, bits per code
TARGETS = {"bf16_speedup_min": 2.0}


def timed_prior(run: RunDir, level: str, steps: int, precision: str, overrides: list[str]) -> float:
    """Codes per second of `steps` training steps of the level's prior (a scratch copy of the run)."""
    from pipelines.stage2 import train_prior
    scratch = RunDir(run.root.parent / f"{run.root.name}-speed-{precision}")
    shutil.rmtree(scratch.root, ignore_errors=True)
    scratch.root.mkdir(parents=True)
    shutil.copytree(run.vqvae, scratch.vqvae)
    shutil.copytree(run.codes, scratch.codes)
    shutil.copyfile(run.config, scratch.config)
    cfg = load_run_config(scratch, None, [*overrides, f"train_prior.steps={steps}", f"train_prior.save_every={steps}",
                                          f"train_prior.mixed_precision='{precision}'", "train_prior.val_batches=1"])
    metrics = train_prior(cfg, scratch, level)
    shutil.rmtree(scratch.root, ignore_errors=True)
    return metrics["codes_per_second"]


def unigram_bits(codes: np.ndarray, k: int) -> float:
    counts = np.bincount(codes.reshape(-1).astype(np.int64), minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main() -> None:
    keep_freed_memory()  # as the `vqvae2` command does (pipelines/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--run-dir", type=Path, default=Path("bench-out/fashion32"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--speed-steps", type=int, default=100)
    ap.add_argument("--speed-repeats", type=int, default=3,
                    help="timings per precision, fp32 and bf16 interleaved; the median counts")
    ap.add_argument("--grid", type=Path, default=None, help="also copy the sample grid here (e.g. docs/...png)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--speed-only", action="store_true",
                    help="only the fp32/bf16 speed measurement (no 2,000-step training, no NLL, no samples)")
    args = ap.parse_args()

    machine = describe()  # before anything is timed; calibrated again at the end
    run = RunDir(args.run_dir)
    if not (run.vqvae / "metrics.json").is_file():
        sys.exit(f"{run.vqvae}/metrics.json not found: run benchmarks/stage1.py first")
    overrides = [f"train_prior.steps={args.steps}", f"train_prior.batch_size={args.batch_size}",
                 "train_prior.seed=0", "sample.n=64", "sample.batch_size=64", "sample.seed=0", *args.overrides]
    cfg = load_run_config(run, None, overrides)
    run_stage(cfg, run, "codes")
    meta = read_json(run.codes / "codes.json")
    result = {"preset": "fashion32", "steps": args.steps, "batch_size": args.batch_size,
              "nll_bits": {}, "unigram_bits": {}, "accuracy": {}, "codes_per_second": {}, "train_seconds": {},
              "gap_bits": {}, "n_params": {}, "required_gap_bits": MARGINS, "passed": {}}
    for level in ([] if args.speed_only else meta["levels"]):
        shutil.rmtree(run.prior(level), ignore_errors=True)
        t0 = time.perf_counter()
        run_stage(cfg, run, f"prior-{level}")
        seconds = time.perf_counter() - t0
        m = read_json(run.prior(level) / "metrics.json")
        train_codes = np.load(run.codes / "train" / f"{level}.npy", mmap_mode="r")
        uni = unigram_bits(np.asarray(train_codes), meta["codebook_size"])
        result["nll_bits"][level] = m["nll_bits"]
        result["unigram_bits"][level] = uni
        result["accuracy"][level] = m["accuracy"]
        result["codes_per_second"][level] = m["codes_per_second"]
        result["train_seconds"][level] = seconds
        result["n_params"][level] = m["n_params"]
        result["gap_bits"][level] = uni - m["nll_bits"]
        result["passed"][level] = uni - m["nll_bits"] >= MARGINS.get(level, 0.0)
        result["passed"][f"{level}_within_15_min"] = seconds <= 15 * 60
        print(json.dumps({level: {k: result[k][level] for k in ("nll_bits", "unigram_bits", "accuracy", "train_seconds")}}))
    # speed: 100 steps of each prior in fp32 and in bf16, fresh copies of the prior stage, same codes
    result["speed_steps"], result["speed_repeats"] = args.speed_steps, args.speed_repeats
    result["codes_per_second_fp32"], result["codes_per_second_bf16"], result["bf16_speedup"] = {}, {}, {}
    result["codes_per_second_each"] = {}
    for level in meta["levels"]:
        each = {"no": [], "bf16": []}
        for _ in range(args.speed_repeats):  # interleaved, so a slow spell of the machine hits both
            for precision in ("no", "bf16"):
                each[precision].append(timed_prior(run, level, args.speed_steps, precision, overrides))
        speed = {p: statistics.median(v) for p, v in each.items()}
        result["codes_per_second_each"][level] = {"fp32": each["no"], "bf16": each["bf16"]}
        result["codes_per_second_fp32"][level] = speed["no"]
        result["codes_per_second_bf16"][level] = speed["bf16"]
        result["bf16_speedup"][level] = speed["bf16"] / speed["no"]
        result["passed"][f"{level}_bf16_speedup"] = result["bf16_speedup"][level] >= TARGETS["bf16_speedup_min"]
    result.update(machine=machine, calibration_after=calibrate())
    if args.speed_only:
        result.update(speed_only=True, torch=torch.__version__, threads=torch.get_num_threads())
        write_json(args.out, result)
        print(json.dumps(result, indent=2))
        return
    run_stage(cfg, run, "samples")
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.samples / "grid.png", args.grid)
    result["samples_grid"] = str(run.samples / "grid.png")
    result["torch"] = torch.__version__
    result["threads"] = torch.get_num_threads()
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
