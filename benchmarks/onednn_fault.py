"""oneDNN's AVX2 weight gradient of a strided 1x1 convolution on channels-last inputs writes out of bounds.

    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/onednn_fault.py --raw      # the reproducer: the bare op
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/onednn_fault.py            # the project's models: must pass
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/onednn_fault.py --sweep F.json

The faulty path (torch 2.14.1, oneDNN `jit_1x1:avx2`, backward_weights): a 1x1 convolution with an
even stride (2 or 4 in the sweep; 3 is unaffected), 2 to 7 input channels, channels-last input and
output gradient, weight gradient requested. oneDNN picks a blocked weight layout that pads the input
channels to 8 and writes the padded block into torch's unpadded gradient buffer: on one thread glibc
then aborts ("free(): invalid next size", "corrupted size vs. prev_size") or the process segfaults; on
two threads the gradient comes out wrong instead. 1 or >= 8 input channels, kernels 3 and 4 at any
stride, NCHW layout and AVX-512 kernels are unaffected (benchmarks/results/onednn_fault_sweep-avx2.json).
The project's models never build such a convolution (eval.classifier.StridedPointwise subsamples
first; tests/test_policy.py checks every preset's models), and channels_last "auto" is off on AVX2.

`--raw` runs the bare op and exits non-zero on a build that has the fault. The default run trains
every convolution shape of the project's models (a classifier with 4-channel first stage, the VQ-VAE,
the priors) in channels-last and checks each gradient against the contiguous layout; it is what the
test suite runs under the AVX2 restriction (tests/test_policy.py). `--sweep F.json` maps which
convolution shapes are affected (input channels, kernel, stride, threads): each shape runs in a child
process, and a shape whose child dies is run again alone to confirm it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def raw(steps: int = 300) -> None:
    """The smallest script that corrupts the heap under ONEDNN_MAX_CPU_ISA=AVX2."""
    torch.set_num_threads(1)
    cl = torch.channels_last
    x = torch.randn(4, 4, 16, 16).contiguous(memory_format=cl)  # 4 input channels, 16x16
    w = torch.randn(8, 4, 1, 1).contiguous(memory_format=cl)  # 1x1 kernel, 8 outputs
    grad_out = torch.randn(4, 8, 8, 8).contiguous(memory_format=cl)  # stride 2 -> 8x8
    for _ in range(steps):
        torch.ops.aten.convolution_backward(grad_out, x, w, None, [2, 2], [0, 0], [1, 1], False, [0, 0], 1,
                                            [False, True, False])
    print("raw: no fault seen")


def _models() -> list[tuple[str, torch.nn.Module, tuple]]:
    from eval.classifier import Classifier, ClassifierConfig
    from vqvae2.config import VQVAEConfig
    from vqvae2.pixelsnail import PixelSNAIL, PixelSNAILConfig
    from vqvae2.vqvae import VQVAE2

    torch.manual_seed(0)
    out = []
    for channels in ([4, 8], [3, 6, 12], [16, 32]):
        m = Classifier(ClassifierConfig(in_channels=3, image_size=16, num_classes=2, channels=channels, dropout=0.0))
        out.append((f"classifier{channels}", m.train(), (torch.randn(4, 3, 16, 16),)))
    vq = VQVAE2(VQVAEConfig(in_channels=3, image_size=16, channels=8, res_channels=4, n_res_blocks=1, embed_dim=4,
                            codebook_size=16, strides=[2, 2], init="none"))
    out.append(("vqvae", vq.eval(), (torch.randn(4, 3, 16, 16),)))  # eval: the codebooks stay as they are
    for upsample in ("nearest", "learned"):
        prior = PixelSNAIL(PixelSNAILConfig(codebook_size=16, height=8, width=8, channels=8, n_blocks=1,
                                            n_res_per_block=1, attention_blocks=[0], n_heads=2, dropout=0.0,
                                            cond_shapes=[[16, 4, 4]], cond_channels=4, n_cond_res=1,
                                            cond_upsample=upsample))
        codes = torch.randint(0, 16, (4, 8, 8))
        out.append((f"prior-{upsample}", prior.train(), (codes, [torch.randint(0, 16, (4, 4, 4))])))
    return out


def _grads(model: torch.nn.Module, inputs: tuple, layout: torch.memory_format) -> list[torch.Tensor]:
    model = model.to(memory_format=layout)
    model.zero_grad(set_to_none=True)
    args = [a.contiguous(memory_format=layout) if torch.is_tensor(a) and a.dim() == 4 else a for a in inputs]
    y = model(*args)
    y = y.recon + y.latent_loss if hasattr(y, "recon") else y
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def models(steps: int = 30) -> None:
    """Gradients of every model in channels-last equal the contiguous layout's, `steps` times over."""
    for name, model, inputs in _models():
        ref = _grads(model, inputs, torch.contiguous_format)
        for _ in range(steps):
            got = _grads(model, inputs, torch.channels_last)
            bad = [i for i, (a, b) in enumerate(zip(ref, got)) if not torch.allclose(a, b, rtol=1e-4, atol=1e-5)]
            if len(got) != len(ref) or bad:
                sys.exit(f"{name}: channels-last gradients differ from contiguous ones (parameters {bad})")
        print(f"{name}: ok")


# shape sweep

SWEEP_IN_CHANNELS = [*range(1, 18), 24, 31, 32, 33]
SWEEP_SHAPES = [(k, s) for k in (1, 3, 4) for s in (1, 2, 3, 4)]  # (kernel, stride)


def sweep_configs() -> list[dict]:
    return [{"in_ch": c, "out_ch": o, "kernel": k, "stride": s, "threads": t}
            for (k, s), c, o, t in itertools.product(SWEEP_SHAPES, SWEEP_IN_CHANNELS, (8, 16), (1, 2))]


def check_shape(cfg: dict, steps: int) -> str:
    """'ok', or 'wrong' when a channels-last output or gradient differs from the contiguous layout's."""
    torch.set_num_threads(cfg["threads"])
    g = torch.Generator().manual_seed(0)
    pad = (cfg["kernel"] - 1) // 2
    x = torch.randn(4, cfg["in_ch"], 16, 16, generator=g)
    w = torch.randn(cfg["out_ch"], cfg["in_ch"], cfg["kernel"], cfg["kernel"], generator=g)
    size = (16 + 2 * pad - cfg["kernel"]) // cfg["stride"] + 1
    grad_out = torch.randn(4, cfg["out_ch"], size, size, generator=g)

    def run(layout):
        args = [t.contiguous(memory_format=layout) for t in (grad_out, x, w)]
        return torch.ops.aten.convolution_backward(*args, None, [cfg["stride"]] * 2, [pad] * 2, [1, 1], False,
                                                   [0, 0], 1, [False, True, True])[1:]
    ref = run(torch.contiguous_format)
    for _ in range(steps):
        got = run(torch.channels_last)
        if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(ref, got)):
            return "wrong"
    return "ok"


def _child(first: int, count: int, steps: int) -> None:
    configs = sweep_configs()
    for i in range(first, min(first + count, len(configs))):
        print(f"start {i}", flush=True)
        print(f"result {i} {check_shape(configs[i], steps)}", flush=True)


def _spawn(first: int, count: int, steps: int) -> tuple[int, dict[int, str], int | None]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(first), str(count), "--steps", str(steps)],
                          capture_output=True, text=True, timeout=600)
    results, started = {}, None
    for line in proc.stdout.splitlines():
        word, i, *rest = line.split()
        if word == "start":
            started = int(i)
        else:
            results[int(i)] = rest[0]
            started = None
    return proc.returncode, results, started


def sweep(out: str, steps: int) -> None:
    """Every shape of sweep_configs() in channels-last against the contiguous layout; a child that dies
    marks the shape it was running, which is then run alone three times to confirm."""
    configs, status, i = sweep_configs(), {}, 0
    while i < len(configs):
        code, results, died_at = _spawn(i, len(configs) - i, steps)
        status |= results
        if died_at is None:
            break
        alone = [_spawn(died_at, 1, steps)[0] for _ in range(3)]
        status[died_at] = f"crash ({sum(c != 0 for c in alone)}/3 alone, exit {code})" if any(alone) else \
            "crash only after other shapes"
        i = died_at + 1
    rows = [{**c, "status": status.get(n, "not run")} for n, c in enumerate(configs)]
    bad = [r for r in rows if r["status"] != "ok"]
    result = {"isa_limits": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ},
              "torch": torch.__version__, "steps_per_shape": steps, "n_shapes": len(rows), "affected": bad,
              "affected_summary": sorted({(r["kernel"], r["stride"], r["in_ch"]) for r in bad})}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "affected"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", action="store_true", help="run the bare faulty op instead of the project's models")
    ap.add_argument("--sweep", metavar="OUT.json", help="map the affected convolution shapes into OUT.json")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if args.child:
        return _child(*args.child, args.steps)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.sweep:
        return sweep(args.sweep, args.steps)
    raw() if args.raw else models(args.steps)


if __name__ == "__main__":
    main()
