"""How far can bf16 speed up a training step here? The convolutions' own fp32/bf16 ratio.

    python benchmarks/conv_ceiling.py --out bench-out/conv_ceiling.json [--models vqvae,prior-top,prior-bottom]

For each model of the `fashion32` preset (random weights and data of the right shapes, as
benchmarks/profile_step.py builds them): records every convolution one training forward makes
(input, weight and arguments), then times each one alone, forward + backward, channels-last, in fp32
and in bf16 (median of --repeats), and sums them as often as the step calls them. Beside that it
times the whole step (forward, backward, AdamW; median of --steps) in both precisions, so that

    step = convolutions + the rest

for each precision. When convolutions take most of a step, the step's bf16 speed-up cannot go far
beyond the convolutions' own (`conv_bf16_speedup`), whatever is done to the rest: the rest would
have to run more than that much faster in bf16 than in fp32.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import write_json
from machine import calibrate, describe, median_seconds
from profile_step import build, channels_last, training_step




def record_convolutions(model, batch, loss_fn) -> dict:
    """{(kind, input shape, input needs grad, weight shape, has bias, other args): calls} of one training forward."""
    calls: dict = {}
    originals = {"conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d}

    def spy(kind):
        def wrapped(x, weight, bias=None, *args, **kwargs):
            if kwargs:
                raise RuntimeError(f"{kind} called with keyword arguments {sorted(kwargs)}; extend the benchmark")
            key = (kind, tuple(x.shape), x.requires_grad, tuple(weight.shape), bias is not None, args)
            calls[key] = calls.get(key, 0) + 1
            return originals[kind](x, weight, bias, *args)
        return wrapped

    try:
        F.conv2d, F.conv_transpose2d = spy("conv2d"), spy("conv_transpose2d")
        loss_fn(model, batch)
    finally:
        F.conv2d, F.conv_transpose2d = originals["conv2d"], originals["conv_transpose2d"]
    return calls


def time_convolution(key, dtype: torch.dtype, repeats: int) -> float:
    kind, x_shape, x_grad, w_shape, has_bias, args = key
    fn = getattr(F, kind)
    cl = torch.channels_last
    x = torch.randn(x_shape, dtype=dtype).contiguous(memory_format=cl).requires_grad_(x_grad)
    w = (torch.randn(w_shape, dtype=dtype) * 0.05).contiguous(memory_format=cl).requires_grad_()
    b = torch.zeros(w_shape[1] if kind == "conv_transpose2d" else w_shape[0], dtype=dtype,
                    requires_grad=True) if has_bias else None
    grad = torch.randn_like(fn(x, w, b, *args))
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    return median_seconds(lambda: torch.autograd.grad(fn(x, w, b, *args), inputs, grad), repeats)


def step_seconds(model_name: str, precision: str, steps: int) -> float:
    step, _ = training_step(model_name, "fashion32", precision)
    return median_seconds(step, steps, warmup=5)


def measure(model_name: str, steps: int, repeats: int) -> dict:
    model, tcfg, batch, loss_fn = build(model_name, "fashion32", [])
    model, batch = model.to(memory_format=torch.channels_last).train(), channels_last(batch)
    calls = record_convolutions(model, batch, loss_fn)
    conv = {"fp32": 0.0, "bf16": 0.0}
    rows = []
    for key, n in calls.items():
        t32, t16 = time_convolution(key, torch.float32, repeats), time_convolution(key, torch.bfloat16, repeats)
        conv["fp32"] += n * t32
        conv["bf16"] += n * t16
        kind, x_shape, _, w_shape, _, args = key
        rows.append({"op": kind, "input": list(x_shape), "weight": list(w_shape), "args": repr(args), "calls": n,
                     "ms_fp32": t32 * 1e3, "ms_bf16": t16 * 1e3, "bf16_speedup": t32 / t16})
    step = {p: step_seconds(model_name, p, steps) for p in ("no", "bf16")}
    step = {"fp32": step["no"], "bf16": step["bf16"]}
    rest = {p: step[p] - conv[p] for p in step}
    return {
        "batch_size": tcfg.batch_size,
        "step_ms": {p: v * 1e3 for p, v in step.items()},
        "conv_ms": {p: v * 1e3 for p, v in conv.items()},
        "rest_ms": {p: v * 1e3 for p, v in rest.items()},
        "conv_share_bf16": conv["bf16"] / step["bf16"],
        "step_bf16_speedup": step["fp32"] / step["bf16"],
        "conv_bf16_speedup": conv["fp32"] / conv["bf16"],
        "rest_bf16_speedup": rest["fp32"] / rest["bf16"] if rest["bf16"] > 0 else None,
        "convolutions": sorted(rows, key=lambda r: -r["calls"] * r["ms_fp32"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--models", default="vqvae,prior-top,prior-bottom")
    ap.add_argument("--steps", type=int, default=15, help="timed training steps per precision (median)")
    ap.add_argument("--repeats", type=int, default=15, help="timed runs of each convolution (median)")
    args = ap.parse_args()
    keep_freed_memory()  # as the training loop does (before the first model is built)
    machine = describe()  # before anything is timed; calibrated again at the end
    result = {"preset": "fashion32", "models": {}}
    for name in args.models.split(","):
        result["models"][name] = m = measure(name, args.steps, args.repeats)
        print(json.dumps({name: {k: v for k, v in m.items() if k != "convolutions"}}), flush=True)
    result.update(torch=torch.__version__, threads=torch.get_num_threads(), machine=machine,
                  calibration_after=calibrate())
    write_json(args.out, result)


if __name__ == "__main__":
    main()
