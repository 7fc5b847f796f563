"""How much does a Frechet distance depend on the number of samples? FD-domain of fashion32 samples
at n = 1k, 5k, 10k, 50k against the 10,000 test images.

    python benchmarks/fid_bias.py --out bench-out/fid_bias.json [--run-dir bench-out/fashion32]

The run needs trained priors and classifier (`vqvae2 run --preset fashion32 --run-dir RUN --until
classifier`). Draws 50,000 class-conditional samples (classes spread evenly, no rejection) into a
chunked store (resumable; `RUN/fid-bias-samples/`), embeds them once with the run's domain feature
network, and computes FD-domain of the first n samples for each n with its bootstrap interval (as
`vqvae2 evaluate` reports it), the mean and spread over disjoint subsets of size n (how much one
n-sample estimate varies), and FD at infinite samples (Chong & Forsyth 2020) of all the samples, checked
against the disjoint-subset means: it should lie within their spread, two subset standard deviations
of each (the 95% range of one n-sample estimate, the level of the intervals).
A reduced run (e.g. --n 1000,2500,5000,10000) is a quick check, and any run with a classifier works
(e.g. the demo's: `--run-dir runs/demo`, against its 512 validation faces); fd_infinity needs at least
5,000 samples.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.metrics import (FD_CI_LEVEL, FD_INFINITY_METHOD, FD_INFINITY_MIN_N, FeatureExtractor,
                          ReferenceStats, fd_at_infinity, fd_ci_method, fd_from_stats, fd_interval)
from pipelines.artifacts import RunDir, write_json
from pipelines.cli import init_processes, load_run_config
from pipelines.datasets import build_datasets
from pipelines.evaluate import extractor_spec, image_batches
from pipelines.sample import generate_to_store, sample_labels
from vqvae2.pipeline import SampleSettings
from pipelines.sample_store import SampleStore
from pipelines.stage2 import load_priors, stage_hash as prior_hash
from vqvae2.vqvae import VQVAE2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--run-dir", type=Path, default=Path("bench-out/fashion32"))
    ap.add_argument("--n", default="1000,5000,10000,50000", help="sample counts, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=100, help="bootstrap resamples behind each interval")
    ap.add_argument("--keep-samples", action="store_true", help="keep RUN/fid-bias-samples/ afterwards")
    args = ap.parse_args()
    ns = sorted(int(v) for v in args.n.split(","))

    init_processes()
    run = RunDir(args.run_dir)
    if not (run.classifier / "metrics.json").is_file():
        sys.exit(f"{run.classifier}/metrics.json not found: run `vqvae2 run --preset fashion32 --run-dir {run.root} "
                 f"--until classifier` (or another preset with labelled data) first")
    cfg = load_run_config(run, None, ["eval.feature_extractor='domain'"], write=False)
    vqvae = VQVAE2.from_pretrained(run.vqvae).eval()
    priors = load_priors(run, vqvae.levels)
    n_max = ns[-1]
    labels = sample_labels(n_max, priors[0].config.n_classes, -1, conditional=priors[0].config.n_classes > 0)
    store = SampleStore(run.root / "fid-bias-samples", n_max, cfg.sample.batch_size,
                        {"priors": [prior_hash(cfg, run, lv) for lv in vqvae.levels], "seed": args.seed})
    t0 = time.perf_counter()
    generate_to_store(vqvae, priors, store, labels, SampleSettings(seed=args.seed), desc="fid-bias samples")
    sample_seconds = time.perf_counter() - t0

    spec = extractor_spec(cfg, run)
    net = FeatureExtractor(spec)
    t0 = time.perf_counter()
    gen = net.extract(store.iter_images(), 1000)
    _, test_set = build_datasets(cfg.data)
    real = net.extract(image_batches(test_set, 0, 1000), 1000)
    feature_seconds = time.perf_counter() - t0

    ref = ReferenceStats.from_features(real, spec, keep_features=False)  # the reference's statistics, once
    t0 = time.perf_counter()
    first, intervals, mean, std, subsets = [], [], [], [], []
    for n in ns:
        first.append(fd_from_stats(gen.subset(torch.arange(n)), ref))
        intervals.append(fd_interval(gen.subset(torch.arange(n)), ref, args.resamples, args.seed, fd=first[-1]))
        k = n_max // n  # disjoint subsets of size n
        values = [fd_from_stats(gen.subset(torch.arange(i * n, (i + 1) * n)), ref) for i in range(k)]
        mean.append(float(np.mean(values)))
        std.append(float(np.std(values, ddof=1)) if k > 1 else None)
        subsets.append(k)
    fit = fd_at_infinity(gen, ref, args.seed) if n_max >= FD_INFINITY_MIN_N else None
    fd_inf = fit["fd_infinity"] if fit else None
    metric_seconds = time.perf_counter() - t0
    result = {
        "data": cfg.data.name, "data_size": cfg.data.size, "run_dir": str(run.root), "n": ns, "fd_domain": first,
        "fd_domain_ci": intervals, "fd_ci_method": fd_ci_method(args.resamples), "fd_ci_level": FD_CI_LEVEL,
        "fd_domain_ci_width_over_subset_std": [(hi - lo) / s if s else None for (lo, hi), s in zip(intervals, std)],
        "fd_domain_mean_over_subsets": mean, "fd_domain_std_over_subsets": std, "n_subsets": subsets,
        "fd_infinity": fd_inf, "fd_infinity_method": FD_INFINITY_METHOD if fit else
        f"not computed: fewer than {FD_INFINITY_MIN_N:,} samples", "fd_infinity_fit": fit,
        # FD at infinite samples against each disjoint-subset mean, in units of that n's subset spread
        "fd_infinity_minus_subset_mean_over_std": [(fd_inf - m) / s if fd_inf is not None and s else None
                                                   for m, s in zip(mean, std)],
        "fd_infinity_within_subset_spread": None if fd_inf is None or not any(std) else
        all(abs(fd_inf - m) <= 2 * s for m, s in zip(mean, std) if s),
        "n_real": len(real), "extractor": spec.name, "seed": args.seed, "class_conditional": labels is not None,
        "acceptance_rate": 1.0, "sample_seconds": sample_seconds, "feature_seconds": feature_seconds,
        "metric_seconds": metric_seconds, "resize": spec.resize,
        "bias_1k_over_50k": first[0] - first[-1] if len(ns) > 1 else None, "torch": torch.__version__,
    }
    if not args.keep_samples:
        store.remove()
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
