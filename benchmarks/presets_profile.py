"""What the full-size presets cost: seconds per training step and peak memory of each stage.

    python benchmarks/presets_profile.py --out bench-out/presets_profile.json [--presets ffhq256,ffhq1024,imagenet256]

For each preset at its full model size (random weights and random inputs of the right shapes: only
shapes matter for time and memory), measured on this machine's CPU with the preset's precision (bf16):
- train-vqvae, train-prior-<level>: seconds per optimizer step (forward, backward, AdamW; median of
  --steps after one warm-up) at batch 1 and 2, and the peak resident memory of the process;
- extract-codes: seconds per image of VQVAE2.encode at batch 4;
- sample: seconds per image to sample every level with the cached sampler and decode (one image;
  class-conditional for imagenet256).
Each measurement runs in a fresh process, so its peak RSS is its own; `base_rss_mb` is the process
after imports, before any model. Memory per sample = peak RSS at batch 2 - at batch 1. The rows with
"activation_checkpointing": true repeat the largest training stages with the memory saver on.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("ffhq256", "ffhq1024", "imagenet256")
N_CLASSES = {"ffhq256": 0, "ffhq1024": 0, "imagenet256": 1000}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(preset: str, stage: str, batch: int, steps: int, checkpointing: bool, n_classes: int | None = None) -> dict:
    """One measurement, in this (fresh) process; `n_classes` for a preset outside N_CLASSES."""
    sys.path.insert(0, str(REPO))
    import torch
    from pipelines.config import resolve_config
    from pipelines.stage2 import prior_config, prior_loss
    from pipelines.train import machine_settings, make_optimizer
    from vqvae2.pixelsnail import PixelSNAIL
    from vqvae2.sampling import sample_hierarchy
    from vqvae2.vqvae import VQVAE2

    base = rss_mb()
    cfg = resolve_config(preset)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    c = cfg.vqvae
    n_classes = N_CLASSES[preset] if n_classes is None else n_classes
    meta = {"levels": c.levels, "grid_sizes": c.grid_sizes(), "codebook_size": c.codebook_size,
            "num_classes": n_classes}
    images = lambda n: torch.rand(n, c.in_channels, c.image_size, c.image_size, generator=g) * 2 - 1
    out = {"preset": preset, "stage": stage, "batch_size": batch, "activation_checkpointing": checkpointing}

    def timed(fn, n):
        fn()  # warm-up (and the first allocation of everything)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    if stage.startswith("train-"):
        if stage == "train-vqvae":
            tcfg, model = cfg.train_vqvae, VQVAE2(c)
            x = images(batch)

            def loss_fn():
                o = model(x)
                return (o.recon.float() - x).pow(2).mean() + o.latent_loss
        else:
            level = stage.split("-", 2)[2]
            tcfg, pcfg = cfg.prior_train(level), prior_config(cfg, level, meta)
            model = PixelSNAIL(pcfg)
            batch_codes = (torch.randint(0, 10, (batch,), generator=g) % max(1, pcfg.n_classes),
                           torch.randint(0, pcfg.codebook_size, (batch, pcfg.height, pcfg.width), generator=g),
                           *[torch.randint(0, k, (batch, h, w), generator=g) for k, h, w in pcfg.cond_shapes])
            loss_fn = lambda: prior_loss(model, batch_codes)[0]
        model.checkpointing = checkpointing
        model.train()
        tcfg, _ = machine_settings(tcfg, None, stage)  # the precision the stage would resolve here
        opt = make_optimizer(model, tcfg)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tcfg.mixed_precision == "bf16"):
                loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        out["seconds_per_step"] = timed(step, steps)
        out["params"] = sum(p.numel() for p in model.parameters())
        out["mixed_precision"] = tcfg.mixed_precision
    elif stage == "extract-codes":
        model = VQVAE2(c).eval()
        x = images(batch)
        with torch.no_grad():
            out["seconds_per_image"] = timed(lambda: model.encode(x), steps) / batch
        out["params"] = sum(p.numel() for p in model.parameters())
    elif stage == "sample":
        vqvae = VQVAE2(c).eval()
        priors = [PixelSNAIL(prior_config(cfg, lv, meta)).eval() for lv in c.levels]
        labels = torch.zeros(batch, dtype=torch.long) if n_classes else None

        def draw():
            with torch.no_grad():
                codes = sample_hierarchy(priors, batch, labels=labels, generator=torch.Generator().manual_seed(0))
                vqvae.decode_codes(codes)
        t0 = time.perf_counter()
        draw()  # one image: no warm-up run (the first call is the measured one)
        out["seconds_per_image"] = (time.perf_counter() - t0) / batch
        out["params"] = sum(p.numel() for m in [vqvae, *priors] for p in m.parameters())
        out["positions_per_image"] = sum(s * s for s in c.grid_sizes())
    out["peak_rss_mb"] = rss_mb()
    out["base_rss_mb"] = base
    out["threads"] = torch.get_num_threads()
    return out


def plan(presets: list[str], steps: int) -> list[tuple]:
    sys.path.insert(0, str(REPO))
    from pipelines.config import resolve_config
    rows = []
    for preset in presets:
        levels = resolve_config(preset).vqvae.levels
        for stage in ["train-vqvae", *[f"train-prior-{lv}" for lv in levels]]:
            rows += [(preset, stage, 1, steps, False), (preset, stage, 2, steps, False)]
        rows += [(preset, "extract-codes", 4, steps, False), (preset, "sample", 1, 0, False)]
        # the memory saver on the two stages that take the most memory
        rows += [(preset, "train-vqvae", 2, steps, True), (preset, f"train-prior-{levels[-1]}", 2, steps, True)]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per training measurement (median)")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out and measure the rest")
    ap.add_argument("--only", help="comma-separated stages to measure (e.g. sample,extract-codes); default all")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement as JSON
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*json.loads(args.measure))))
        return
    if args.out is None:
        ap.error("--out is required")
    result: dict = {}
    rows = plan(args.presets.split(","), args.steps)
    if args.only:
        keep = set(args.only.split(","))
        rows = [r for r in rows if r[1] in keep or r[1].rsplit("-", 1)[0] in keep]
    if args.out.is_file() and args.resume:
        result = json.loads(args.out.read_text())
        result.pop("note", None)
    for row in rows:
        key = row[1] + ("+checkpointing" if row[4] else "")
        if f"batch_{row[2]}" in result.get(row[0], {}).get(key, {}):
            continue  # measured by an earlier, interrupted invocation (--resume)
        proc = subprocess.run([sys.executable, __file__, "--measure", json.dumps(row)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"measurement {row} failed:\n{proc.stderr[-3000:]}")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        key = m["stage"] + ("+checkpointing" if m["activation_checkpointing"] else "")
        result.setdefault(m["preset"], {}).setdefault(key, {})[f"batch_{m['batch_size']}"] = m
        print(json.dumps(m), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))  # partial results survive an interruption
    for stages in result.values():
        for by_batch in stages.values():
            if "batch_1" in by_batch and "batch_2" in by_batch:
                by_batch["memory_per_sample_mb"] = by_batch["batch_2"]["peak_rss_mb"] - by_batch["batch_1"]["peak_rss_mb"]
    result["note"] = ("CPU measurements (2 cores, bf16 autocast where the preset trains in bf16); memory is peak "
                      "resident memory of a fresh process, base_rss_mb of it before any model")
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
