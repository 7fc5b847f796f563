"""The small kernel choices of the models and the training loop, each timed against what it replaced:

    python benchmarks/kernels.py --out benchmarks/results/kernels.json

- activation: SiLU against ELU (forward + backward), the priors' activation;
- dropout: vqvae2.pixelsnail.Dropout (one uniform mask) against nn.Dropout (forward + backward);
- gate: vqvae2.pixelsnail.gate (a * sigmoid(b)) against F.glu, forward + backward on channels-last tensors;
- attention: vqvae2.pixelsnail.causal_attention's bf16 path against torch's fused kernel, forward + backward;
- cross_entropy: over contiguous (B*H*W, K) rows (pipelines.stage2.flat_logits) against dim 1 of channels-last logits;
- allocator: one training step of the fashion32 bottom prior with and without keep_freed_memory (two processes).

Every figure is the median of --repeats timings (milliseconds), after a warm-up; the machine is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import describe, median_seconds
from vqvae2.pixelsnail import Dropout, causal_attention, gate


def _ms(fn, repeats: int) -> float:
    return 1e3 * median_seconds(fn, repeats, warmup=1)


def _fwd_bwd(fn, x: torch.Tensor):
    def run():
        x.grad = None
        fn(x).float().sum().backward()
    return run


def _pair(ours, theirs, repeats: int, **about) -> dict:
    """Timings of `ours` (what the code does) and `theirs` (what it replaced), and how many times faster ours is."""
    a, b = _ms(ours, repeats), _ms(theirs, repeats)
    return {"new_ms": a, "old_ms": b, "old_over_new": b / a, **about}


def activation(repeats: int) -> dict:
    x = torch.randn(32, 128, 16, 16, requires_grad=True)
    return _pair(_fwd_bwd(F.silu, x), _fwd_bwd(F.elu, x), repeats, shape=list(x.shape), new="silu", old="elu")


def dropout(repeats: int) -> dict:
    x = torch.randn(32, 128, 16, 16, requires_grad=True)
    ours, theirs = Dropout(0.1).train(), torch.nn.Dropout(0.1).train()
    return _pair(_fwd_bwd(ours, x), _fwd_bwd(theirs, x), repeats, shape=list(x.shape), p=0.1,
                 new="vqvae2.pixelsnail.Dropout", old="nn.Dropout")


def gating(repeats: int) -> dict:
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(128, 128, 8, 8, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        out[str(dtype).split(".")[1]] = _pair(_fwd_bwd(gate, x), _fwd_bwd(lambda t: F.glu(t, dim=1), x), repeats,
                                              shape=list(x.shape), new="gate", old="F.glu")
    return out


def _attention_step(fn, qkv: list[torch.Tensor]):
    def step():
        for t in qkv:
            t.grad = None
        fn(*qkv).float().sum().backward()
    return step


def attention(repeats: int) -> dict:
    out = {}
    for length in (16, 256):
        qkv = [torch.randn(32, 4, length, 32, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
        fused = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True)
        out[f"L{length}"] = _pair(_attention_step(causal_attention, qkv), _attention_step(fused, qkv), repeats,
                                  shape=list(qkv[0].shape), dtype="bfloat16",
                                  new="baddbmm with the mask as a bias", old="F.scaled_dot_product_attention")
    return out


def cross_entropy(repeats: int) -> dict:
    logits = torch.randn(128, 512, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 512, (128, 4, 4))
    rows = lambda: F.cross_entropy(logits.permute(0, 2, 3, 1).reshape(-1, 512).float(), target.reshape(-1))
    dim1 = lambda: F.cross_entropy(logits.float(), target)
    return _pair(rows, dim1, repeats, shape=list(logits.shape), new="contiguous rows", old="dim 1, channels-last")


def _step_ms(keep: bool, repeats: int) -> float:
    """One training step of the fashion32 bottom prior (bf16, channels-last), in a fresh process."""
    code = f"""
import json, statistics, sys, time, torch
sys.path.insert(0, {str(REPO)!r})
from pipelines.allocator import keep_freed_memory
from pipelines.config import resolve_config
from pipelines.stage2 import prior_config, prior_loss
from pipelines.train import make_optimizer
from vqvae2.pixelsnail import PixelSNAIL
keep_freed_memory()
cfg = resolve_config("fashion32")
meta = {{"levels": cfg.vqvae.levels, "grid_sizes": cfg.vqvae.grid_sizes(), "codebook_size": cfg.vqvae.codebook_size,
        "num_classes": 10}}
torch.manual_seed(0)
model = PixelSNAIL(prior_config(cfg, "bottom", meta)).to(memory_format=torch.channels_last).train()
opt = make_optimizer(model, cfg.train_prior)
g = torch.Generator().manual_seed(0)
b = cfg.train_prior.batch_size
batch = (torch.randint(0, 10, (b,), generator=g), torch.randint(0, 512, (b, 8, 8), generator=g),
         torch.randint(0, 512, (b, 4, 4), generator=g))  # labels, the level's codes, the level above
times = []
for i in range({repeats} + 3):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = prior_loss(model, batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if i >= 3:
        times.append(time.perf_counter() - t0)
print(json.dumps(1e3 * statistics.median(times)))
"""
    env = {**os.environ, "VQVAE2_KEEP_FREED_MEMORY": "1" if keep else "0"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def allocator(repeats: int) -> dict:
    kept, plain = _step_ms(True, repeats), _step_ms(False, repeats)
    return {"new_ms": kept, "old_ms": plain, "old_over_new": plain / kept, "new": "freed memory kept (keep_freed_memory)",
            "old": "glibc defaults", "what": "one bf16 training step of the fashion32 bottom prior, batch of "
            "train_prior.batch_size"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    machine = describe()
    torch.manual_seed(0)
    result = {"activation": activation(args.repeats), "dropout": dropout(args.repeats), "gate": gating(args.repeats),
              "attention": attention(args.repeats), "cross_entropy": cross_entropy(args.repeats),
              "allocator": allocator(15), "timing": f"median of {args.repeats} runs each (allocator: 15 steps)",
              "command": f"python benchmarks/kernels.py --out {args.out}", "machine": machine,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for key in ("activation", "dropout", "cross_entropy", "allocator"):
        print(f"{key}: {result[key]['old_over_new']:.2f}x")
    for key in ("gate", "attention"):
        print(key, {k: round(v["old_over_new"], 2) for k, v in result[key].items()})


if __name__ == "__main__":
    main()
