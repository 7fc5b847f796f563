"""What the faces128 preset's training would cost on this machine, without training it: each training stage's
step timed at the preset's batch size and precision as resolved here (median of --steps after a warm-up),
times the preset's number of steps.

    python benchmarks/faces128_cost.py --out F.json [--steps 3]

Random weights and inputs of the right shapes (only shapes matter for time). The projection counts the
optimizer steps of the VQ-VAE and the three priors, whose stages took 4,454 of the 5,324 seconds of the
measured AMX run (benchmarks/results/faces128.json); rendering the faces, code extraction, validation and
checkpoints inside the stages, the classifiers and evaluation are left out, so the whole run costs more
than `projected_training_minutes`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import presets_profile
from machine import describe
from pipelines.artifacts import write_json
from pipelines.config import resolve_config
from pipelines.datasets.faces import FACE_CLASS_NAMES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage (median)")
    args = ap.parse_args()
    machine, t0 = describe(), time.perf_counter()
    cfg = resolve_config("faces128")
    stages = [("train-vqvae", cfg.train_vqvae)] + [(f"train-prior-{lv}", cfg.prior_train(lv)) for lv in cfg.vqvae.levels]
    rows = []
    for stage, tcfg in stages:
        # the priors are class-conditional, over the synthetic faces' classes
        row = presets_profile.measure("faces128", stage, tcfg.batch_size, args.steps, False, len(FACE_CLASS_NAMES))
        row["steps"] = tcfg.steps
        row["projected_seconds"] = row["seconds_per_step"] * tcfg.steps
        print(json.dumps(row), flush=True)
        rows.append(row)
    total = sum(r["projected_seconds"] for r in rows)
    write_json(args.out, {"rows": rows, "projected_training_minutes": total / 60, "budget_minutes": 90,
                          "measured_seconds": time.perf_counter() - t0,
                          "command": "python benchmarks/faces128_cost.py " + " ".join(sys.argv[1:]),
                          "machine": machine})


if __name__ == "__main__":
    main()
