"""Stage-3 benchmark: rejection sampling and FD-domain / KID / precision / recall on fashion32.

    python benchmarks/stage1.py --out bench-out/stage1.json     # the VQ-VAE
    python benchmarks/stage2.py --out bench-out/stage2.json     # codes and priors
    python benchmarks/stage3.py --out bench-out/stage3.json [--run-dir bench-out/fashion32]

Trains the domain classifier and the (separate) rejection classifier, draws enough candidates for
10,000 samples at every acceptance rate (1.0, 0.5, 0.25, 0.1: 100,000 candidates), and scores
each acceptance rate's 10,000 samples against the 10,000 Fashion-MNIST test images in the domain
classifier's feature space, plus the reconstructions of the test images (the upper bound).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import RunDir, read_json, write_json
from pipelines.cli import init_processes, load_run_config
from pipelines.run import run_stage


def main() -> None:
    keep_freed_memory()  # as the `vqvae2` command does (pipelines/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--run-dir", type=Path, default=Path("bench-out/fashion32"))
    ap.add_argument("--n-samples", type=int, default=10000)
    ap.add_argument("--plot", type=Path, default=None, help="also copy tradeoff.png here (e.g. docs/...png)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    init_processes()
    run = RunDir(args.run_dir)
    for level in ("top", "bottom"):
        if not (run.prior(level) / "metrics.json").is_file():
            sys.exit(f"{run.prior(level)}/metrics.json not found: run benchmarks/stage1.py and stage2.py first")
    cfg = load_run_config(run, None, [f"eval.n_samples={args.n_samples}", "eval.n_real=0", "eval.seed=0",
                                      "eval.feature_extractor='domain'", *args.overrides])
    t0 = time.perf_counter()
    run_stage(cfg, run, "classifier")
    classifier_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_stage(cfg, run, "eval")
    eval_seconds = time.perf_counter() - t0
    report = read_json(run.eval / "report.json")
    clf = read_json(run.classifier / "metrics.json")
    rows = report["rows"]
    result = {
        "preset": "fashion32", "n_samples": args.n_samples, "n_real": report["provenance"]["n_real"],
        "acceptance_rates": [r["acceptance_rate"] for r in rows],
        "fd_domain": [r["fd"] for r in rows], "kid": [r["kid_mean"] for r in rows],
        "kid_std": [r["kid_std"] for r in rows], "precision": [r["precision"] for r in rows],
        "recall": [r["recall"] for r in rows], "inception_score_domain": [r["is_mean"] for r in rows],
        "reconstruction_fd_domain": report["reconstruction"]["fd"],
        "reconstruction_precision": report["reconstruction"]["precision"],
        "reconstruction_recall": report["reconstruction"]["recall"],
        "classifier_accuracy": clf["accuracy"],
        "rejection_classifier_accuracy": clf["classifiers"].get("rejection", clf["classifiers"]["features"])["accuracy"],
        "provenance": report["provenance"], "classifier_seconds": classifier_seconds, "eval_seconds": eval_seconds,
        "torch": torch.__version__,
    }
    # precision is a mean of n_samples 0/1 indicators: its binomial standard error, and that of the
    # difference between acceptance rates 0.1 and 1.0 (nearly independent sample sets)
    result["precision_stderr"] = [(p * (1 - p) / args.n_samples) ** 0.5 for p in result["precision"]]
    i1, i01 = result["acceptance_rates"].index(1.0), result["acceptance_rates"].index(0.1)
    result["precision_gain_at_0.1"] = result["precision"][i01] - result["precision"][i1]
    result["precision_gain_stderr"] = (result["precision_stderr"][i01] ** 2 + result["precision_stderr"][i1] ** 2) ** 0.5
    result["passed"] = {
        "fd_domain_lower_at_0.1": result["fd_domain"][i01] < result["fd_domain"][i1],
        "precision_higher_at_0.1": result["precision"][i01] > result["precision"][i1],
        "classifier_accuracy_at_least_0.91": result["classifier_accuracy"] >= 0.91,
    }
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.eval / "tradeoff.png", args.plot)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))


if __name__ == "__main__":
    main()
