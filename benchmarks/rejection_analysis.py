"""Which rejection network raises precision? A cheap look inside stage 3.

    python benchmarks/rejection_analysis.py --out bench-out/rejection_analysis.json \\
        --classifier mixup0.4=bench-out/fashion32/classifier/rejection --classifier ce=OTHER_RUN/classifier/rejection

Draws N class-conditional candidates from a finished run (default 30,000), embeds them and the
test images with the run's feature network (`classifier/`), and marks each candidate "inside"
when it falls in some test image's k-NN ball (k = 3): the quantity k-NN precision averages, as
torch-fidelity computes it. Then for each rejection network given it reports:
- precision (the mean of "inside") of the n = N / 10 samples kept at each acceptance rate
  (class-balanced rejection, as `vqvae2 evaluate` does);
- per class, the "inside" rate by fifths of that network's probability of the intended class
  (least confident fifth first), which shows whether its confidence tracks typicality.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.classifier import Classifier, predict_features, predict_proba, weights_hash
from eval.rejection import rejection_sample
from pipelines.artifacts import RunDir, write_json
from pipelines.cli import init_processes, load_run_config
from pipelines.datasets import build_datasets
from pipelines.sample import generate, sample_labels
from pipelines.stage2 import load_priors
from pipelines.evaluate import image_batches
from vqvae2.pipeline import SampleSettings
from vqvae2.vqvae import VQVAE2

RATES = (1.0, 0.5, 0.25, 0.1)


def inside_real_balls(gen: torch.Tensor, real: torch.Tensor, k: int = 3) -> torch.Tensor:
    """(N,) bool: generated feature within the distance from some real feature to its k-th real neighbour."""
    radii = torch.cat([torch.cdist(c, real).kthvalue(k + 1, dim=1).values for c in real.split(1000)])  # +1: itself
    return torch.cat([(torch.cdist(c, real) <= radii[None]).any(1) for c in gen.split(1000)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--run-dir", type=Path, default=Path("bench-out/fashion32"))
    ap.add_argument("--n-candidates", type=int, default=30000)
    ap.add_argument("--classifier", action="append", default=[], metavar="NAME=DIR",
                    help="a rejection network to analyse (repeatable); default: the run's classifier/rejection")
    args = ap.parse_args()
    init_processes()
    run = RunDir(args.run_dir)
    cfg = load_run_config(run, None, [])
    bad = [c for c in args.classifier if "=" not in c]
    if bad:
        sys.exit(f"--classifier takes NAME=DIR, got {bad[0]!r}")
    specs = dict(c.split("=", 1) for c in args.classifier) or {"rejection": str(run.classifier / "rejection")}
    if args.n_candidates < 10 * len(RATES) or args.n_candidates % 10:
        sys.exit(f"--n-candidates must be a multiple of 10 and at least {10 * len(RATES)}, got {args.n_candidates}")

    t0 = time.perf_counter()
    vqvae = VQVAE2.from_pretrained(run.vqvae).eval()
    priors = load_priors(run, vqvae.levels, device="cpu")
    n_classes = priors[0].config.n_classes
    if n_classes < 2:
        sys.exit(f"{run.root}: the priors are not class-conditional; this analysis needs labels")
    labels = sample_labels(args.n_candidates, n_classes, -1, conditional=True)
    images, _ = generate(vqvae, priors, args.n_candidates, labels, SampleSettings(batch_size=cfg.sample.batch_size))
    sample_seconds = time.perf_counter() - t0

    feature_net = Classifier.from_pretrained(run.classifier).eval()
    _, val_set = build_datasets(cfg.data)
    inside = inside_real_balls(predict_features(feature_net, images),
                               predict_features(feature_net, torch.cat(list(image_batches(val_set))))).float()

    n = args.n_candidates // 10
    result = {"run_dir": str(run.root), "n_candidates": args.n_candidates, "n_kept": n, "acceptance_rates": list(RATES),
              "feature_network_hash": weights_hash(feature_net), "inside_all": float(inside.mean()),
              "inside_by_class": [float(inside[labels == c].mean()) for c in range(n_classes)],
              "sample_seconds": sample_seconds, "networks": {}}
    for name, path in specs.items():
        net = Classifier.from_pretrained(path).eval()
        probs = predict_proba(net, images, batch_size=500)  # (N, K)
        p = probs.gather(1, labels[:, None]).squeeze(1)  # (N,) probability of the intended class
        precision, kept_prob = [], []
        for rate in RATES:
            idx = rejection_sample(images, probs, n, rate, target_classes=labels)
            precision.append(float(inside[idx].mean()))
            kept_prob.append(float(p[idx].mean()))
        fifths = []
        for c in range(n_classes):
            members = (labels == c).nonzero().squeeze(1)
            order = members[p[members].argsort()]
            fifths.append([float(inside[chunk].mean()) for chunk in order.chunk(5)])
        result["networks"][name] = {"dir": path, "weights_hash": weights_hash(net), "precision": precision,
                                    "mean_prob_of_kept": kept_prob, "inside_by_confidence_fifth": fifths}
        print(f"{name:>12}: precision {['%.4f' % v for v in precision]} at rates {list(RATES)}", flush=True)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "networks"}, indent=2))


if __name__ == "__main__":
    main()
