"""The faces128 pipeline end to end: 128-px synthetic faces, three levels (8x8, 16x16, 32x32 codes),
three priors, classifier, rejection sampling, evaluation.

    python benchmarks/faces128.py --out bench-out/faces128.json [--run-dir bench-out/faces128]
        [--grid docs/faces128_samples.png] [--recon-grid docs/faces128_recon.png] [--vary-grid docs/faces128_vary.png]

Runs every stage of `vqvae2 run --preset faces128` in order with the same stage functions, timing
each; the faces are rendered into a fresh cache inside the run directory, so their time counts.
`--reuse` reads a finished run directory instead of training (stage_seconds then come from the
JSON of the run that made it, if there is one). `--resume` goes on with an interrupted run: each
finished stage's time is kept in `bench-seconds.json` in the run directory, finished stages are not
run again, and the interrupted stage resumes from its last checkpoint; its time is the resumed part
plus the part before the interruption (give it with `--seconds-before NAME=SECONDS`, e.g. from the
checkpoint's file time), and the JSON records that the run was resumed. `--paused NAME=SECONDS` takes out of a
stage's time the seconds it was stopped (SIGSTOP, e.g. while CI had the cores); the JSON lists them. Targets: every level uses >= 90% of
its codebook; recon_psnr >= 26 dB; each prior's validation NLL >= 1 bit below its level's
unigram entropy (validation codes); FD-domain and precision better at acceptance 0.1 than at 1.0;
total_seconds <= 5400.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import RunDir, read_json, write_json
from pipelines.cli import init_processes, load_run_config
from pipelines.datasets import build_datasets
from pipelines.run import run_stage

TARGETS = {"codes_used_fraction_min": 0.9, "recon_psnr_min": 26.0, "nll_gap_bits_min": 1.0, "total_seconds_max": 5400}


def unigram_bits(codes: np.ndarray, k: int) -> float:
    counts = np.bincount(codes.reshape(-1).astype(np.int64), minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def run_pipeline(cfg, run: RunDir, seconds: dict[str, float] | None = None,
                 before: dict[str, float] | None = None) -> dict[str, float]:
    """Run the stages not yet in `seconds` (stage name -> seconds), recording each in
    `bench-seconds.json` as it finishes; `before` adds time spent on a stage before an interruption."""
    seconds = dict(seconds or {})
    before = before or {}
    record = run.root / "bench-seconds.json"

    def timed(name, fn, *args):
        if name in seconds:
            print(f"=== {name}: {seconds[name]:.0f} s (finished before the resume)", flush=True)
            return
        t0 = time.perf_counter()
        fn(*args)
        seconds[name] = time.perf_counter() - t0 + before.get(name, 0.0)
        write_json(record, seconds)
        print(f"=== {name}: {seconds[name]:.0f} s", flush=True)

    timed("data", build_datasets, cfg.data)  # renders the faces into the (fresh) cache
    timed("vqvae", run_stage, cfg, run, "vqvae")
    timed("codes", run_stage, cfg, run, "codes")
    for level in cfg.vqvae.levels:
        timed(f"prior_{level}", run_stage, cfg, run, f"prior-{level}")
    timed("samples", run_stage, cfg, run, "samples")
    timed("classifier", run_stage, cfg, run, "classifier")
    timed("eval", run_stage, cfg, run, "eval")
    return seconds


def without_pauses(seconds: dict[str, float], paused: dict[str, float]) -> dict[str, float]:
    """Each stage's seconds less the seconds it was stopped; a paused stage must exist and have run longer."""
    for name, t in paused.items():
        if name not in seconds:
            raise ValueError(f"no stage named {name!r} (stages: {', '.join(seconds)})")
        if not 0 <= t < seconds[name]:
            raise ValueError(f"{name} ran {seconds[name]:.0f} s; it cannot have been stopped for {t:g} s of them")
    return {name: t - paused.get(name, 0.0) for name, t in seconds.items()}


def vary_grid(cfg, run: RunDir, out: Path) -> dict:
    """`vqvae2 vary` on a validation face (not seen in training), keeping the top level."""
    from PIL import Image
    from pipelines.vary import vary
    _, val = build_datasets(cfg.data)
    image = out.with_name(out.stem + "-input.png")
    x, _ = val[3]
    Image.fromarray(((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(image)
    return vary(cfg, run, image, "top", n=6, seed=0, temperature=cfg.sample.temperature, out=out)


def main() -> None:
    keep_freed_memory()  # as the `vqvae2` command does (pipelines/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--run-dir", type=Path, default=Path("bench-out/faces128"))
    ap.add_argument("--grid", type=Path, help="copy the class-conditional sample grid (128 px) here")
    ap.add_argument("--recon-grid", type=Path, help="copy the reconstruction grid here")
    ap.add_argument("--vary-grid", type=Path, help="write a `vary --keep top` grid here")
    ap.add_argument("--reuse", action="store_true", help="read a finished run instead of training")
    ap.add_argument("--resume", action="store_true", help="go on with an interrupted run (see above)")
    ap.add_argument("--seconds", dest="seconds", action="append", default=[], metavar="NAME=SECONDS",
                    help="with --resume: a stage finished before bench-seconds.json existed")
    ap.add_argument("--seconds-before", dest="before", action="append", default=[], metavar="NAME=SECONDS",
                    help="with --resume: time the interrupted stage ran before the interruption")
    ap.add_argument("--paused", dest="paused", action="append", default=[], metavar="NAME=SECONDS",
                    help="seconds a stage was stopped (SIGSTOP): taken out of its time")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    def pairs(items):
        out = {}
        for item in items:
            name, _, value = item.partition("=")
            try:
                out[name] = float(value)
            except ValueError:
                ap.error(f"expected NAME=SECONDS, got {item!r}")
        return out

    init_processes()
    run = RunDir(args.run_dir)
    resumed = None
    if args.reuse:
        cfg = load_run_config(run, None, args.overrides)
        seconds = (read_json(args.out).get("stage_seconds", {}) if args.out.is_file() else {})
    elif args.resume:
        if not (run.root / "config.json").is_file():
            ap.error(f"--resume: {run.root} holds no run to go on with (no config.json)")
        cfg = load_run_config(run, None, args.overrides)
        record = run.root / "bench-seconds.json"
        done = {**pairs(args.seconds), **(read_json(record) if record.is_file() else {})}
        before = pairs(args.before)
        resumed = {"finished_before": sorted(done), "seconds_before_interruption": before}
        seconds = run_pipeline(cfg, run, done, before)
    else:
        shutil.rmtree(run.root, ignore_errors=True)
        cfg = load_run_config(run, "faces128", [f"data.cache_dir='{run.root / 'data-cache'}'", *args.overrides])
        seconds = run_pipeline(cfg, run)

    paused = pairs(args.paused)
    try:
        seconds = without_pauses(seconds, paused)
    except ValueError as e:
        ap.error(f"--paused: {e}")
    vq = read_json(run.vqvae / "metrics.json")
    meta = read_json(run.codes / "codes.json")
    report = read_json(run.eval / "report.json")
    rows = report["rows"]
    k = meta["codebook_size"]
    result = {
        "preset": "faces128", "levels": meta["levels"], "grid_sizes": meta["grid_sizes"], "codebook_size": k,
        "codes_used": vq["codes_used"], "perplexity": vq["perplexity"], "recon_mse": vq["mse"], "recon_psnr": vq["psnr"],
        "nll_bits": {}, "unigram_bits": {}, "prior_accuracy": {},
        "acceptance_rates": [r["acceptance_rate"] for r in rows], "fd_domain": [r["fd"] for r in rows],
        "precision": [r["precision"] for r in rows], "recall": [r["recall"] for r in rows],
        "kid": [r["kid_mean"] for r in rows], "reconstruction_fd_domain": report["reconstruction"]["fd"],
        "n_samples": rows[0]["n_generated"], "n_real": report["provenance"]["n_real"],
        "classifier_accuracy": read_json(run.classifier / "metrics.json")["accuracy"],
        "stage_seconds": seconds, "total_seconds": sum(seconds.values()) if seconds else None, "resumed": resumed,
        "paused_seconds": paused,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": "python benchmarks/faces128.py " + " ".join(sys.argv[1:]), "machine": describe(),
    }
    for level in meta["levels"]:
        m = read_json(run.prior(level) / "metrics.json")
        result["nll_bits"][level] = m["nll_bits"]
        result["prior_accuracy"][level] = m["accuracy"]
        result["unigram_bits"][level] = unigram_bits(np.load(run.codes / "val" / f"{level}.npy"), k)
    i1, i01 = result["acceptance_rates"].index(1.0), result["acceptance_rates"].index(0.1)
    result["passed"] = {
        "codes_used": all(c >= TARGETS["codes_used_fraction_min"] * k for c in result["codes_used"]),
        "recon_psnr": result["recon_psnr"] >= TARGETS["recon_psnr_min"],
        **{f"nll_gap_{lv}": result["unigram_bits"][lv] - result["nll_bits"][lv] >= TARGETS["nll_gap_bits_min"]
           for lv in meta["levels"]},
        "fd_domain_lower_at_0.1": result["fd_domain"][i01] < result["fd_domain"][i1],
        "precision_higher_at_0.1": result["precision"][i01] > result["precision"][i1],
        "total_seconds": result["total_seconds"] is not None and result["total_seconds"] <= TARGETS["total_seconds_max"],
    }
    result["targets"] = TARGETS
    for src, dst in ((run.samples / "grid.png", args.grid), (run.vqvae / "recon.png", args.recon_grid)):
        if dst:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    if args.vary_grid:
        result["vary"] = vary_grid(cfg, run, args.vary_grid)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
