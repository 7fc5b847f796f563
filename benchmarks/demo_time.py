"""The README's main job end to end: `vqvae2 run --preset demo`, timed stage by stage.

    python benchmarks/demo_time.py --out bench-out/demo_time.json [--mode auto --mode fp32 --mode fp32-cl]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/demo_time.py --out F.json   # AVX2 class

Each --mode runs the whole demo in a fresh run directory, one after the other:
  auto      the preset as shipped (precision and memory format chosen by pipelines/policy.py)
  fp32      mixed_precision 'no' and channels_last false for every training stage
  fp32-cl   mixed_precision 'no' and channels_last true
  bf16-cl   mixed_precision 'bf16' and channels_last true (the presets before the policy)
Stage times are read from when each stage's final file was written. The precision and memory format
each training stage resolved are read from its metrics.json. --step-probe also times the demo's
VQ-VAE training step alone in each precision and layout (medians), which is cheap where a whole
demo in emulated bf16 would take hours; --probe-only runs nothing else (e.g. for the AVX-512 class without
bf16: ONEDNN_MAX_CPU_ISA=AVX512_CORE on a newer CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import calibrate, describe

SECTIONS = ("train_vqvae", "train_prior", "train_classifier")
MODES = {
    "auto": [],
    "fp32": [f"{s}.{k}={v}" for s in SECTIONS for k, v in (("mixed_precision", "'no'"), ("channels_last", "false"))],
    "fp32-cl": [f"{s}.{k}={v}" for s in SECTIONS for k, v in (("mixed_precision", "'no'"), ("channels_last", "true"))],
    "bf16-cl": [f"{s}.{k}={v}" for s in SECTIONS for k, v in (("mixed_precision", "'bf16'"), ("channels_last", "true"))],
}
# each stage's last written file, in the order `vqvae2 run` makes them
STAGE_FILES = [("vqvae", "vqvae/metrics.json"), ("codes", "codes/codes.json"), ("prior-top", "prior-top/metrics.json"),
               ("prior-bottom", "prior-bottom/metrics.json"), ("samples", "samples/metrics.json"),
               ("classifier", "classifier/metrics.json"), ("eval", "eval/report.json")]
TRAINED = {"vqvae": "vqvae/metrics.json", "prior-top": "prior-top/metrics.json",
           "prior-bottom": "prior-bottom/metrics.json"}


def run_demo(mode: str, root: Path) -> dict:
    run = root / f"demo-{mode}"
    shutil.rmtree(run, ignore_errors=True)
    argv = [sys.executable, "-m", "pipelines.cli", "run", "--preset", "demo", "--run-dir", str(run)]
    for o in MODES[mode]:
        argv += ["--set", o]
    t0 = time.time()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    total = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"demo ({mode}) failed with exit code {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    stages, last = {}, t0
    for name, rel in STAGE_FILES:
        f = run / rel
        if f.is_file():
            stages[name] = round(f.stat().st_mtime - last, 1)
            last = f.stat().st_mtime
    settings = {name: json.loads((run / rel).read_text()).get("settings") for name, rel in TRAINED.items()}
    classifier = json.loads((run / "classifier/metrics.json").read_text())["classifiers"]
    settings["classifier"] = next(iter(classifier.values())).get("settings")
    report = json.loads((run / "eval/report.json").read_text())
    return {"mode": mode, "overrides": MODES[mode], "total_seconds": round(total, 1), "stage_seconds": stages,
            "settings": settings, "fd_at_1.0": report["rows"][0]["fd"],
            "vqvae_psnr": json.loads((run / "vqvae/metrics.json").read_text()).get("psnr")}


def step_probe(steps: int) -> list[dict]:
    """Seconds per training step of the demo's VQ-VAE (batch 64), medians of `steps` after 2 warm-ups."""
    from profile_step import training_step
    out = []
    for precision in ("no", "bf16"):
        for layout in ("false", "true"):
            step, tcfg = training_step("vqvae", "demo", precision, [f"train_vqvae.channels_last={layout}"])
            for _ in range(2):
                step()
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            out.append({"mixed_precision": precision, "channels_last": tcfg.channels_last,
                        "seconds_per_step": statistics.median(times), "min": min(times), "max": max(times)})
            print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", action="append", choices=list(MODES), help="default: auto, fp32, fp32-cl")
    ap.add_argument("--root", default="bench-out/demo_time", help="where the run directories go")
    ap.add_argument("--step-probe", type=int, default=0, metavar="N", help="also time N VQ-VAE steps per setting")
    ap.add_argument("--probe-only", action="store_true", help="only the step probe, no demo runs")
    args = ap.parse_args()
    modes = [] if args.probe_only else args.mode or ["auto", "fp32", "fp32-cl"]
    if args.probe_only and not args.step_probe:
        ap.error("--probe-only needs --step-probe N")
    out = {"machine": describe(), "command": " ".join(sys.argv),
           "isa_limits": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}}
    if args.step_probe:
        out["vqvae_step"] = step_probe(args.step_probe)
        fp32 = min(r["seconds_per_step"] for r in out["vqvae_step"] if r["mixed_precision"] == "no")
        bf16 = min(r["seconds_per_step"] for r in out["vqvae_step"] if r["mixed_precision"] == "bf16")
        out["bf16_over_fp32_step"] = bf16 / fp32
    runs = []
    for mode in modes:
        runs.append(run_demo(mode, Path(args.root)))
        print(json.dumps(runs[-1]), flush=True)
    out["runs"] = runs
    if runs:
        auto = [r for r in runs if r["mode"] == "auto"]
        explicit = [r for r in runs if r["mode"] != "auto"]
        if auto and explicit:
            best = min(explicit, key=lambda r: r["total_seconds"])
            out["auto_over_best_explicit"] = auto[0]["total_seconds"] / best["total_seconds"]
            out["best_explicit"] = best["mode"]
    out["calibration_after"] = calibrate()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine", "runs")}, indent=2))


if __name__ == "__main__":
    main()
