"""Where does a training step's time go? torch.profiler by operator, for the fashion32 VQ-VAE or a prior.

    python benchmarks/profile_step.py --model vqvae --precision bf16 [--steps 20] [--set train_vqvae.batch_size=128]
    python benchmarks/profile_step.py --model prior-bottom --precision no

Builds the model of the `fashion32` preset (random weights, random data of the right shapes), runs
a few warm-up steps, then profiles --steps optimizer steps (forward, backward, optimizer) and prints
the operators by self CPU time, and the seconds per step with and without the profiler. Freed memory
is kept, as the training loop keeps it (pipelines/allocator.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.allocator import keep_freed_memory
from pipelines.config import resolve_config
from pipelines.stage1 import vqvae_loss
from pipelines.stage2 import prior_config, prior_loss
from pipelines.train import machine_settings, make_accelerator, make_optimizer
from vqvae2.pixelsnail import PixelSNAIL
from vqvae2.vqvae import VQVAE2


def build(model_name: str, preset: str, overrides: list[str]):
    cfg = resolve_config(preset, overrides)
    g = torch.Generator().manual_seed(0)
    if model_name == "vqvae":
        tcfg = cfg.train_vqvae
        model = VQVAE2(cfg.vqvae)
        x = torch.rand(tcfg.batch_size, cfg.vqvae.in_channels, cfg.vqvae.image_size, cfg.vqvae.image_size,
                       generator=g) * 2 - 1
        return model, tcfg, (x, torch.zeros(len(x), dtype=torch.long)), vqvae_loss
    level = model_name.split("-", 1)[1]
    tcfg = cfg.prior_train(level)
    meta = {"levels": cfg.vqvae.levels, "grid_sizes": cfg.vqvae.grid_sizes(), "codebook_size": cfg.vqvae.codebook_size,
            "num_classes": 10}
    pcfg = prior_config(cfg, level, meta)
    model = PixelSNAIL(pcfg)
    b = tcfg.batch_size
    batch = (torch.randint(0, 10, (b,), generator=g),
             torch.randint(0, pcfg.codebook_size, (b, pcfg.height, pcfg.width), generator=g),
             *[torch.randint(0, k, (b, h, w), generator=g) for k, h, w in pcfg.cond_shapes])
    return model, tcfg, batch, prior_loss


def channels_last(batch: tuple) -> tuple:
    """The batch with its images channels-last, as pipelines/train.py moves them."""
    return tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 and t.is_floating_point() else t
                 for t in batch)


def training_step(model_name: str, preset: str, precision: str, overrides: list[str] = ()):
    """(step, train config): `step()` runs one optimizer step (forward, backward, AdamW) of the model
    as pipelines/train.py does: kept freed memory, channels-last when the config says so, accelerate's autocast."""
    keep_freed_memory()
    section = "train_vqvae" if model_name == "vqvae" else "train_prior"
    model, tcfg, batch, loss_fn = build(model_name, preset, [*overrides, f"{section}.mixed_precision='{precision}'"])
    tcfg, _ = machine_settings(tcfg, None, section)
    acc = make_accelerator(tcfg)
    if tcfg.channels_last:
        model, batch = model.to(memory_format=torch.channels_last), channels_last(batch)
    optimizer = make_optimizer(model, tcfg)
    model, optimizer = acc.prepare(model, optimizer)
    model.train()

    def step():
        with acc.autocast():
            loss, _ = loss_fn(model, batch)
        acc.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, tcfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vqvae", help="vqvae, prior-top, prior-bottom, ...")
    ap.add_argument("--preset", default="fashion32")
    ap.add_argument("--precision", default="bf16", choices=["no", "bf16", "auto"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    step, tcfg = training_step(args.model, args.preset, args.precision, args.overrides)
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    plain = (time.perf_counter() - t0) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(f"{args.model} {args.precision}: {plain * 1000:.1f} ms per step without the profiler "
          f"(batch {tcfg.batch_size}, {torch.get_num_threads()} threads, channels_last={tcfg.channels_last})")


if __name__ == "__main__":
    main()
