"""oneDNN's AVX2 weight gradient of a strided 1x1 convolution on channels-last inputs writes out of bounds.

    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/onednn_fault.py --raw      # the reproducer: the bare op
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/onednn_fault.py            # the project's models: must pass

The faulty path (torch 2.14.1, oneDNN `jit_1x1:avx2`, backward_weights): a 1x1 convolution with
stride 2, 2 to 7 input channels, channels-last input and output gradient, weight gradient requested.
oneDNN picks the blocked weight layout ABcd8b8a, pads the input channels to 8 and writes the padded
block straight into torch's unpadded gradient buffer: glibc then aborts ("free(): invalid next size",
"corrupted size vs. prev_size") or the process segfaults; on two threads the gradient comes out wrong
instead. Inputs of 1 or >= 8 channels, stride 1 or 3, NCHW layout, AVX-512 kernels: unaffected.

`--raw` runs the bare op and exits non-zero on a build that has the fault. The default run trains
every convolution shape of the project's models (a classifier with 4-channel first stage, the VQ-VAE,
the priors) in channels-last and checks each gradient against the contiguous layout; it is what the
test suite runs under the AVX2 restriction (tests/test_policy.py).
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", action="store_true", help="run the bare faulty op instead of the project's models")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    raw() if args.raw else models(args.steps)


if __name__ == "__main__":
    main()
