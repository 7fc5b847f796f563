"""Training-loop throughput of one or more checkouts, side by side: the demo preset's VQ-VAE for --steps steps
(bf16 "auto", no validation or pictures) in a fresh run directory, each checkout in its own process, the
checkouts interleaved --rounds times; the medians of images per second after the first step.

    git worktree add /tmp/before <commit>
    python benchmarks/train_speed.py --out F.json --repo /tmp/before --repo .
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import describe

ONE_RUN = """
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from pipelines.allocator import keep_freed_memory
keep_freed_memory()
from pipelines.artifacts import RunDir
from pipelines.config import resolve_config
from pipelines.stage1 import train_vqvae
steps = int(sys.argv[2])
cfg = resolve_config("demo", [f"train_vqvae.steps={steps}", "train_vqvae.val_every=0", "train_vqvae.image_every=0",
                              f"train_vqvae.save_every={steps}"])
with tempfile.TemporaryDirectory() as d:
    print(json.dumps(train_vqvae(cfg, RunDir(d))["images_per_second"]))
"""


def git_commit(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--repo", action="append", type=Path, required=True, help="a checkout (repeatable)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    machine = describe()
    repos = [r.resolve() for r in args.repo]
    each = {str(r): [] for r in repos}
    for _ in range(args.rounds):
        for r in repos:
            proc = subprocess.run([sys.executable, "-c", ONE_RUN, str(r), str(args.steps)], capture_output=True,
                                  text=True, check=True)
            each[str(r)].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = {"what": f"demo VQ-VAE, {args.steps} steps, images per second after the first step",
              "checkouts": [{"repo": str(r), "commit": git_commit(r), "images_per_second": statistics.median(each[str(r)]),
                             "each": each[str(r)]} for r in repos],
              "timing": f"median of {args.rounds} runs each, interleaved",
              "command": "python benchmarks/train_speed.py --out " + str(args.out) + "".join(f" --repo {r}" for r in args.repo),
              "machine": machine}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for c in result["checkouts"]:
        print(f"{c['commit']}: {c['images_per_second']:.1f} images/s")


if __name__ == "__main__":
    main()
