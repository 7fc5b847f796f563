"""VQ-VAE (2017) against VQ-VAE-2 on fashion32: does a hierarchy of codes give better samples?

    python benchmarks/ablation.py --out bench-out/ablation.json [--root bench-out/ablation]

Three variants, each trained by the same stage functions as `vqvae2 run` with the same step budgets
(1,500 VQ-VAE steps, 2,000 steps per prior, batch 128, seed 0):
  (a) one level of 8x8 codes, codebook trained by gradient (codebook loss): preset `fashion32-vqvae1`;
  (b) one level of 8x8 codes, EMA codebook: `fashion32-vqvae1` with vqvae.quantizer='ema';
  (c) two levels (4x4 over 8x8), EMA codebooks: preset `fashion32` (the VQ-VAE-2 pipeline).
Each is scored by 10,000 class-conditional samples at acceptance rate 1.0 (no rejection) against the
10,000 test images, all in the feature space of one domain classifier (trained once, in the first
variant's run, and copied to the others; the JSON records its weights hash).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import RunDir, read_json, write_json
from pipelines.cli import init_processes, load_run_config
from pipelines.run import run_stage

VARIANTS = {
    "a_one_level_codebook_loss": ("fashion32-vqvae1", []),
    "b_one_level_ema": ("fashion32-vqvae1", ["vqvae.quantizer='ema'"]),
    "c_two_levels_ema": ("fashion32", []),
}


def unigram_bits(codes: np.ndarray, k: int) -> float:
    counts = np.bincount(codes.reshape(-1).astype(np.int64), minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def run_variant(name: str, preset: str, extra: list[str], root: Path, n_samples: int, classifier: Path | None) -> dict:
    run = RunDir(root / name)
    shutil.rmtree(run.root, ignore_errors=True)
    overrides = ["train_vqvae.seed=0", "train_prior.seed=0", f"eval.n_samples={n_samples}",
                 "eval.acceptance_rates=[1.0]", "eval.n_real=0", "eval.seed=0", "eval.feature_extractor='domain'",
                 "sample.batch_size=500", *extra]
    cfg = load_run_config(run, preset, overrides)
    seconds = {"vqvae": timed(run_stage, cfg, run, "vqvae")}
    run_stage(cfg, run, "codes")
    for level in cfg.vqvae.levels:
        seconds[f"prior_{level}"] = timed(run_stage, cfg, run, f"prior-{level}")
    if classifier is None:
        run_stage(cfg, run, "classifier")
    else:
        shutil.copytree(classifier, run.classifier)
    seconds["eval"] = timed(run_stage, cfg, run, "eval")

    vq = read_json(run.vqvae / "metrics.json")
    codes_meta = read_json(run.codes / "codes.json")
    report = read_json(run.eval / "report.json")
    row = report["rows"][0]
    result = {
        "preset": preset, "overrides": extra, "levels": cfg.vqvae.levels, "grid_sizes": cfg.vqvae.grid_sizes(),
        "quantizer": cfg.vqvae.quantizer, "codebook_size": cfg.vqvae.codebook_size,
        "recon_mse": vq["mse"], "recon_psnr": vq["psnr"], "codes_used": vq["codes_used"],
        "perplexity": vq["perplexity"], "nll_bits": {}, "unigram_bits": {},
        "fd_domain": row["fd"], "precision": row["precision"], "recall": row["recall"], "kid": row["kid_mean"],
        "n_samples": row["n_generated"], "n_real": report["provenance"]["n_real"],
        "feature_extractor": report["provenance"]["feature_extractor_name"],
        "reconstruction_fd_domain": report["reconstruction"]["fd"],
        "train_seconds": {k: v for k, v in seconds.items() if k != "eval"},
        "training_seconds": sum(v for k, v in seconds.items() if k != "eval"), "eval_seconds": seconds["eval"],
    }
    for level in cfg.vqvae.levels:
        result["nll_bits"][level] = read_json(run.prior(level) / "metrics.json")["nll_bits"]
        train_codes = np.load(run.codes / "train" / f"{level}.npy", mmap_mode="r")
        result["unigram_bits"][level] = unigram_bits(np.asarray(train_codes), codes_meta["codebook_size"])
    # bits per image under the prior(s): what the codes cost, summed over levels
    result["nll_bits_per_image"] = sum(result["nll_bits"][lv] * s * s
                                       for lv, s in zip(cfg.vqvae.levels, cfg.vqvae.grid_sizes()))
    return result


def main() -> None:
    keep_freed_memory()  # as the `vqvae2` command does (pipelines/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--root", type=Path, default=Path("bench-out/ablation"))
    ap.add_argument("--n-samples", type=int, default=10000)
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the variants already finished in --out (and their classifier) and run the rest")
    args = ap.parse_args()

    init_processes()
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    results, classifier = {}, None
    if args.resume and args.out.is_file():
        results = read_json(args.out).get("variants", {})
        for name in results:  # the classifier every variant is scored with: trained in the first one
            if (RunDir(args.root / name).classifier / "metrics.json").is_file():
                classifier = RunDir(args.root / name).classifier
                break
        if results and classifier is None:
            ap.error(f"--resume: the finished variants' classifier is missing under {args.root}")
    for name in names:
        if name in results:
            print(f"=== {name}: finished before the resume", flush=True)
            continue
        preset, extra = VARIANTS[name]
        print(f"=== {name}: --preset {preset} {' '.join('--set ' + e for e in extra)}", flush=True)
        results[name] = run_variant(name, preset, extra, args.root, args.n_samples, classifier)
        classifier = classifier or RunDir(args.root / name).classifier
        write_json(args.out, {"variants": results, "torch": torch.__version__})  # partial results survive a kill
    hashes = {r["feature_extractor"] for r in results.values()}
    out = {"variants": results, "same_feature_network": len(hashes) == 1, "n_samples": args.n_samples,
           "acceptance_rate": 1.0, "torch": torch.__version__}
    write_json(args.out, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
