"""Which sampling controls make samples as good as reconstructions? One finished run's priors against
guidance, nucleus sampling and rejection, at acceptance 1 and at equal numbers of generated samples:

    python benchmarks/generation_quality.py --run-dir RUN --out F.json --grid-dir DIR [--n 1000]

RUN is a finished run of a labelled preset through its classifier stage (faces128 is the one the targets are
for). Its VQ-VAE, codes and classifiers are reused; a copy, RUN-guided, trains its priors again with
prior.<level>.label_dropout (the "no label" class guidance needs). Every row samples --n images and is scored
against the validation split with the run's domain classifier (FD-domain, k-NN precision and recall); each
row's first 64 images are saved as DIR/<row>.png. Rows:

- baseline, and each --top-p, on the run's own priors;
- the guided priors at guidance 1 (label dropout alone) and at each --guidance, and the best guidance with the
  best top-p;
- with --ema D, priors trained again with a Polyak average of their weights (RUN-ema, train_prior.ema_decay=D);
- class rejection (the run's rejection classifier) at 0.5, 0.25, 0.1: 2, 4 and 10 candidates per sample; a
  guided sample costs two (one batch of twice the samples), the same as acceptance 0.5.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import describe
from eval.classifier import Classifier, predict_proba
from eval.metrics import FeatureExtractor, metrics_from_features
from eval.rejection import candidates_needed, rejection_sample
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import RunDir, save_png
from pipelines.cli import init_processes, load_run_config
from pipelines.datasets import build_datasets
from pipelines.evaluate import extractor_spec, image_batches, reconstructions
from pipelines.images import grid_image
from pipelines.run import run_all
from vqvae2 import Pipeline

REJECTION_RATES = (0.5, 0.25, 0.1)


def retrained(run: RunDir, suffix: str, overrides: list[str]) -> RunDir:
    """RUN-<suffix>: the run's VQ-VAE, codes and classifiers, its priors trained again with `overrides`."""
    guided = RunDir(Path(f"{run.root}-{suffix}"))
    guided.root.mkdir(exist_ok=True)
    for part in ("vqvae", "codes", "classifier"):
        if not (guided.root / part).exists():
            shutil.copytree(run.root / part, guided.root / part)
    if not guided.config.is_file():
        shutil.copy(run.config, guided.config)
    cfg = load_run_config(guided, None, overrides)
    run_all(cfg, guided, until="priors")
    return guided


class Scorer:
    """FD-domain, precision and recall of uint8 images against the validation split, with the run's extractor."""

    def __init__(self, cfg, run: RunDir, pipe: Pipeline):
        self.spec = extractor_spec(cfg, run)
        self.net = FeatureExtractor(self.spec)
        _, self.val_set = build_datasets(cfg.data)
        self.real = self.net.extract(image_batches(self.val_set, 0, 256))
        recon = self.net.extract(reconstructions(pipe.vqvae, image_batches(self.val_set, 0, 256), "cpu"))
        self.reconstruction = self.score(recon)

    def features(self, images: torch.Tensor):
        return self.net.extract(images.split(256))

    def score(self, feats) -> dict:
        m = metrics_from_features(feats, self.real, self.spec, kid_subset_size=min(1000, len(feats), len(self.real)))
        return {"fd_domain": m["fd"], "precision": m["precision"], "recall": m["recall"]}


def row(name: str, scorer: Scorer, images: torch.Tensor, grid_dir: Path, **settings) -> dict:
    grid = grid_dir / f"{name}.png"
    save_png(grid, grid_image(images[:64], nrow=8))
    out = {"name": name, "acceptance_rate": 1.0, "rejection": "none", "guidance": 1.0, "top_p": 0.0, "ema": False,
           **settings, **scorer.score(scorer.features(images)), "grid": str(grid)}
    print(json.dumps({k: v for k, v in out.items() if k != "grid"}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--grid-dir", required=True, type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label-dropout", type=float, default=0.1)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    ap.add_argument("--top-p", type=float, nargs="+", default=[0.9, 0.95])
    ap.add_argument("--ema", type=float, default=0.0, help="also a row of priors trained with this ema_decay (RUN-ema)")
    args = ap.parse_args()
    keep_freed_memory()
    init_processes()
    machine, t0 = describe(), time.perf_counter()
    run = RunDir(args.run_dir)
    cfg = load_run_config(run, None, [], write=False)
    base = Pipeline.from_pretrained(run.root, device="cpu")
    scorer = Scorer(cfg, run, base)
    sample = lambda pipe, n, **kw: pipe(n, seed=args.seed, output="uint8", **kw).images
    grids, rows = args.grid_dir, []
    rows.append(row("baseline", scorer, sample(base, args.n), grids))
    for p in args.top_p:
        rows.append(row(f"top-p-{p:g}", scorer, sample(base, args.n, top_p=p), grids, top_p=p))
    guided_dir = retrained(run, "guided", [f"prior.{lv}.label_dropout={args.label_dropout}" for lv in cfg.vqvae.levels])
    guided = Pipeline.from_pretrained(guided_dir.root, device="cpu")
    rows.append(row("label-dropout", scorer, sample(guided, args.n), grids, label_dropout=args.label_dropout))
    for g in args.guidance:
        rows.append(row(f"guidance-{g:g}", scorer, sample(guided, args.n, guidance=g), grids, guidance=g,
                        label_dropout=args.label_dropout, equal_cost_acceptance=0.5))
    best_g = min((r for r in rows if r["guidance"] != 1.0), key=lambda r: r["fd_domain"])["guidance"]
    best_p = min((r for r in rows if r["top_p"]), key=lambda r: r["fd_domain"])["top_p"]
    rows.append(row(f"guidance-{best_g:g}-top-p-{best_p:g}", scorer, sample(guided, args.n, guidance=best_g, top_p=best_p),
                    grids, guidance=best_g, top_p=best_p, label_dropout=args.label_dropout, equal_cost_acceptance=0.5))
    if args.ema:  # averaged weights: the priors trained again with a Polyak average of their weights
        ema_dir = retrained(run, "ema", [f"train_prior.ema_decay={args.ema}"])
        rows.append(row("ema", scorer, sample(Pipeline.from_pretrained(ema_dir.root, device="cpu"), args.n), grids,
                        ema=args.ema))
    # class rejection: candidates from the run's own priors, the rejection network's probabilities
    m = candidates_needed(args.n, min(REJECTION_RATES))
    candidates = base(m, seed=args.seed, output="uint8")
    dirs = [run.classifier / "rejection", run.classifier]
    reject = Classifier.from_pretrained(next(d for d in dirs if (d / "model.safetensors").is_file())).eval()
    probs = predict_proba(reject, candidates.images, batch_size=256)
    for rate in REJECTION_RATES:
        idx = rejection_sample(candidates.images, probs, args.n, rate, target_classes=candidates.labels)
        rows.append(row(f"class-rejection-{rate:g}", scorer, candidates.images[idx], grids, acceptance_rate=rate,
                        rejection="class"))
    result = {"rows": rows, "reconstruction_fd_domain": scorer.reconstruction["fd_domain"],
              "reconstruction": scorer.reconstruction, "extractor": scorer.spec.name,
              "extractor_trained_on": f"the {cfg.data.name} training split's class labels ({run.classifier})",
              "realism": "not run here: realism rejection needs a copy of the run with the labels hidden",
              "n": args.n, "run_dir": str(run.root), "total_seconds": time.perf_counter() - t0,
              "command": "python benchmarks/generation_quality.py " + " ".join(sys.argv[1:]), "machine": machine}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
