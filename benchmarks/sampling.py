"""Speed of the cached sampler against the reference sampler and one teacher-forced forward pass.

    python benchmarks/sampling.py --out sampling.json
    python benchmarks/sampling.py --out tiny.json --batch 2 --top-channels 16 --bottom-channels 16 --ffhq-channels 16 \
        --ffhq-size 16 --ffhq-units 4 --ref-positions 4     # a quick check that it runs

(a) fashion32: the top (4x4) and bottom (8x8, conditioned on the top) priors of the fashion32
    preset, 512 codes, 10 classes, sampled as a hierarchy; the reference runs in full.
(b) ffhq256: a prior of the ffhq256 bottom level (64x64 codes conditioned on 32x32 top codes,
    512 codes, no attention, random weights); the reference is timed on its first
    --ref-positions positions and extrapolated linearly.

(a) takes the median of 9 runs of each timing; (b) the median of 3, the cached sampler, the compiled one and
    the forward pass interleaved (its reference runs once).
Both also time the compiled sampler (`sample.sampler=compiled`, torch.compile of each row's work) after a
    first call that compiles it (minutes for (b) on 2 cores); --no-compiled skips it.
speedup = reference seconds / cached seconds; forward_ratio = cached seconds / seconds of one
teacher-forced forward over the same batch (all levels for (a)).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import calibrate, describe
from pipelines.allocator import keep_freed_memory
from pipelines.config import resolve_config
from pipelines.stage2 import prior_config
from vqvae2.config import PixelSNAILConfig
from vqvae2.pixelsnail import PixelSNAIL
from vqvae2.sampling import PriorWeights, sample_cached, sample_compiled, sample_hierarchy, sample_reference


# prior sizes: read from the presets, so the benchmark measures what the pipeline trains

def preset_priors(preset: str, n_classes: int, overrides: list[str] = ()) -> list[PixelSNAILConfig]:
    """The PixelSNAIL config of every level of `preset` (top first), as `vqvae2 train-prior` builds it."""
    cfg = resolve_config(preset, list(overrides))
    meta = {"levels": cfg.vqvae.levels, "grid_sizes": cfg.vqvae.grid_sizes(),
            "codebook_size": cfg.vqvae.codebook_size, "num_classes": n_classes}
    return [prior_config(cfg, level, meta) for level in cfg.vqvae.levels]


def fashion32_priors(top_channels: int = 96, bottom_channels: int = 64) -> list[PixelSNAILConfig]:
    """Top (4x4) and bottom (8x8, conditioned on the top) priors of the fashion32 preset, 10 classes."""
    return preset_priors("fashion32", 10, [f"prior.top.channels={top_channels}",
                                           f"prior.bottom.channels={bottom_channels}"])


def ffhq256_bottom_prior(channels: int = 128, size: int = 64, n_units: int = 16) -> PixelSNAILConfig:
    """Bottom prior of the ffhq256 preset: 64x64 codes conditioned on 32x32 top codes, no attention
    (as in the paper's bottom prior), unconditional; n_units gated residual units in blocks of 4."""
    if n_units % 4:
        raise ValueError(f"--ffhq-units must be a multiple of 4, got {n_units}")
    return preset_priors("ffhq256", 0, [f"prior.bottom.channels={channels}", f"prior.bottom.n_blocks={n_units // 4}",
                                        "prior.bottom.n_res_per_block=4", f"data.size={size * 4}",
                                        f"vqvae.image_size={size * 4}"])[-1]


# timing

def _timed(fn, repeats: int = 1) -> tuple[float, object]:
    """(median seconds of `repeats` calls, the last call's result): sub-second timings vary run to run."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


FASHION32_REPEATS = 9  # its timings are 10-400 ms: the median of 9 runs each


@torch.no_grad()
def bench_fashion32(batch: int, top_channels: int, bottom_channels: int, seed: int, compiled: bool = True) -> dict:
    torch.manual_seed(seed)
    priors = [PixelSNAIL(cfg).eval() for cfg in fashion32_priors(top_channels, bottom_channels)]
    labels = torch.arange(batch) % 10
    # the incremental samplers' weight layout, built once as a caller sampling many times would (timed apart)
    weights_s, weights = _timed(lambda: [PriorWeights(p) for p in priors], FASHION32_REPEATS)
    run = lambda sampler: sample_hierarchy(priors, batch, labels=labels, sampler=sampler,
                                           generator=torch.Generator().manual_seed(seed),
                                           weights=None if sampler == "reference" else weights)
    run("cached")  # warm-up
    cached_s, codes = _timed(lambda: run("cached"), FASHION32_REPEATS)
    reference_s, ref_codes = _timed(lambda: run("reference"), FASHION32_REPEATS)
    priors[0](codes[0], labels=labels)
    forward_s, _ = _timed(lambda: [priors[0](codes[0], labels=labels), priors[1](codes[1], [codes[0]], labels)],
                          FASHION32_REPEATS)
    out = dict(speedup=reference_s / cached_s, forward_ratio=cached_s / forward_s, cached_seconds=cached_s,
               reference_seconds=reference_s, forward_seconds=forward_s, extrapolated=False,
               timing="median of %d runs each" % FASHION32_REPEATS,
               positions_timed=sum(p.config.height * p.config.width for p in priors),
               same_codes=all(torch.equal(a, b) for a, b in zip(codes, ref_codes)), batch=batch,
               weights_seconds=weights_s,
               priors={name: dataclasses.asdict(p.config) for name, p in zip(("top", "bottom"), priors)})
    if compiled:  # sample.sampler=compiled: the first call compiles, the timed ones reuse the graphs
        compile_s, _ = _timed(lambda: run("compiled"))
        compiled_s, compiled_codes = _timed(lambda: run("compiled"), FASHION32_REPEATS)
        # the cached sampler again, interleaved in time with the compiled one: the machine's speed drifts
        cached_again_s, _ = _timed(lambda: run("cached"), FASHION32_REPEATS)
        out["compiled"] = dict(
            speedup=reference_s / compiled_s, forward_ratio=compiled_s / forward_s, seconds=compiled_s,
            first_call_seconds=compile_s, cached_seconds_again=cached_again_s,
            same_codes=all(torch.equal(a, b) for a, b in zip(compiled_codes, ref_codes)))
    return out


def _same_samples(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many samples of the batch have all their codes equal in a and b."""
    return int((a == b).flatten(1).all(1).sum())


# the compiled sampler runs the batch in shards (one per thread): float rounding of the smaller matrix
# products may tip one pick of a sample, and that sample's later codes then follow another path
SHARD_NOTE = "same codes as the cached sampler up to float rounding (the batch runs in shards)"

FFHQ256_REPEATS = 3  # its timings take seconds: the median of 3 runs each, interleaved


@torch.no_grad()
def bench_ffhq256(batch: int, channels: int, size: int, n_units: int, ref_positions: int, seed: int,
                  compiled: bool = True) -> dict:
    torch.manual_seed(seed)
    cfg = ffhq256_bottom_prior(channels, size, n_units)
    prior = PixelSNAIL(cfg).eval()
    kc, h, w = cfg.cond_shapes[0]
    cond = [torch.randint(0, kc, (batch, h, w), generator=torch.Generator().manual_seed(seed))]
    weights_s, weights = _timed(lambda: PriorWeights(prior))
    run = lambda fn, **kw: fn(prior, batch, cond=cond, generator=torch.Generator().manual_seed(seed), **kw)
    run(sample_cached)  # warm-up
    if compiled:  # the first call compiles (minutes on 2 cores): timed apart
        compile_s, _ = _timed(lambda: run(sample_compiled, weights=weights))
    # cached, compiled and the forward pass interleaved, so a slow spell of the machine hits all three
    times: dict[str, list[float]] = {"cached": [], "compiled": [], "forward": []}
    for _ in range(FFHQ256_REPEATS):
        t, codes = _timed(lambda: run(sample_cached, weights=weights))
        times["cached"].append(t)
        if compiled:
            t, compiled_codes = _timed(lambda: run(sample_compiled, weights=weights))
            times["compiled"].append(t)
        times["forward"].append(_timed(lambda codes=codes: prior(codes, cond))[0])
    cached_s, forward_s = statistics.median(times["cached"]), statistics.median(times["forward"])
    positions = cfg.height * cfg.width
    timed = min(ref_positions, positions)
    ref_s, _ = _timed(lambda: sample_reference(prior, batch, cond=cond, max_positions=timed,
                                               generator=torch.Generator().manual_seed(seed)))
    reference_s = ref_s * positions / timed
    out = dict(speedup=reference_s / cached_s, forward_ratio=cached_s / forward_s, cached_seconds=cached_s,
               reference_seconds=reference_s, forward_seconds=forward_s, extrapolated=timed < positions,
               positions_timed=timed, positions=positions, batch=batch, timing=f"median of {FFHQ256_REPEATS} runs each",
               seconds_each=times, weights_seconds=weights_s, n_parameters=sum(p.numel() for p in prior.parameters()),
               prior=dataclasses.asdict(cfg), note="bottom prior without attention, as in the VQ-VAE-2 paper")
    if compiled:
        compiled_s = statistics.median(times["compiled"])
        out["compiled"] = dict(speedup=reference_s / compiled_s, forward_ratio=compiled_s / forward_s, seconds=compiled_s,
                               first_call_seconds=compile_s, same_codes=torch.equal(compiled_codes, codes),
                               same_samples=_same_samples(compiled_codes, codes), note=SHARD_NOTE)
    return out


@torch.no_grad()
def bench_eval_path(n: int, seed: int) -> dict:
    """What evaluation pays per image: n class-conditional fashion32 samples at the preset's sample
    batch size, all levels with the cached sampler, decoded to uint8 (random weights: time only)."""
    from pipelines.sample import generate, sample_labels
    from vqvae2.pipeline import SampleSettings
    from vqvae2.vqvae import VQVAE2
    cfg = resolve_config("fashion32")
    torch.manual_seed(seed)
    vqvae = VQVAE2(cfg.vqvae).eval()
    priors = [PixelSNAIL(c).eval() for c in preset_priors("fashion32", 10)]
    labels = sample_labels(n, 10, -1, conditional=True)
    controls = SampleSettings(seed=seed, batch_size=cfg.sample.batch_size)
    seconds, (images, _) = _timed(lambda: generate(vqvae, priors, n, labels, controls, progress=False))
    return dict(eval_images_per_second=n / seconds, n=n, seconds=seconds, batch_size=cfg.sample.batch_size,
                dtype=str(images.dtype), shape=list(images.shape[1:]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="JSON file to write")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--top-channels", type=int, default=96, help="channels of the fashion32 top prior")
    ap.add_argument("--bottom-channels", type=int, default=64, help="channels of the fashion32 bottom prior")
    ap.add_argument("--ffhq-channels", type=int, default=128)
    ap.add_argument("--ffhq-size", type=int, default=64, help="side of the bottom code grid")
    ap.add_argument("--ffhq-units", type=int, default=16, help="gated residual units of the ffhq256 prior")
    ap.add_argument("--ref-positions", type=int, default=3,
                    help="positions the ffhq256 reference is timed on (each is one full forward)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for the reference and the forward (default: torch's choice); "
                         "the cached sampler uses one CPU thread for small priors, these threads for large ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=10000, help="samples of the evaluation-path throughput line")
    ap.add_argument("--no-compiled", action="store_true", help="skip the compiled sampler (sample.sampler=compiled)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # as the `vqvae2` command does (VQVAE2_KEEP_FREED_MEMORY=0 to compare without)
    machine = describe()  # before anything is timed; calibrated again at the end
    result = {
        "fashion32": bench_fashion32(args.batch, args.top_channels, args.bottom_channels, args.seed,
                                     compiled=not args.no_compiled),
        "ffhq256": bench_ffhq256(args.batch, args.ffhq_channels, args.ffhq_size, args.ffhq_units,
                                 args.ref_positions, args.seed, compiled=not args.no_compiled),
        "eval_path": bench_eval_path(args.eval_n, args.seed),
        "targets": {"fashion32_speedup_min": 20, "fashion32_forward_ratio_max": 2.0, "ffhq256_forward_ratio_max": 1.5},
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__, "keep_freed_memory": kept,
        "machine": machine, "calibration_after": calibrate(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"eval path: {result['eval_path']['eval_images_per_second']:.0f} images/s")
    for name in ("fashion32", "ffhq256"):
        r = result[name]
        print(f"{name}: speedup {r['speedup']:.1f}x, forward_ratio {r['forward_ratio']:.2f}, "
              f"cached {r['cached_seconds']:.2f}s, reference {r['reference_seconds']:.2f}s"
              f"{' (extrapolated)' if r['extrapolated'] else ''}")
    for name in ("fashion32", "ffhq256"):
        if "compiled" in result[name]:
            r = result[name]["compiled"]
            print(f"{name} compiled: speedup {r['speedup']:.1f}x, forward_ratio {r['forward_ratio']:.2f}, "
                  f"{r['seconds']:.3f}s (first call {r['first_call_seconds']:.1f}s), same codes {r['same_codes']}"
                  + (f" ({r['same_samples']} of {result[name]['batch']} samples)" if "same_samples" in r else ""))
    return result


if __name__ == "__main__":
    main()
