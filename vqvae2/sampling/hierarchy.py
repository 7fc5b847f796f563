"""Top-down sampling of a hierarchy: the top prior first, each lower prior conditioned on every level above."""
from __future__ import annotations

from typing import Sequence

import torch

from ..pixelsnail import PixelSNAIL
from .controls import per_level
from .samplers import sample_cached, sample_compiled, sample_reference
from .weights import PriorWeights

SAMPLERS = {"cached": sample_cached, "reference": sample_reference, "compiled": sample_compiled}


def sample_hierarchy(priors: Sequence[PixelSNAIL], n: int, labels: torch.Tensor | None = None,
                     temperature: float | Sequence[float] = 1.0, top_k: int | None | Sequence[int | None] = None,
                     generator: torch.Generator | None = None, sampler: str = "cached",
                     batch_size: int | None = None, progress: bool = False,
                     given: Sequence[torch.Tensor] = (),
                     weights: Sequence[PriorWeights] | None = None,
                     top_p: float | None | Sequence[float | None] = None,
                     guidance: float | None | Sequence[float | None] = None) -> list[torch.Tensor]:
    """Codes of every level, top first, each (n, H_l, W_l) int64. `temperature`, `top_k`, `top_p` (nucleus
    sampling) and `guidance` (classifier-free guidance scale, for class-conditional priors trained with label
    dropout; unconditional levels sample without it) may be given per level. Batches of `batch_size` are sampled one after another (all levels each). `given` holds the
    codes of the first len(given) levels: those are kept and only the levels below are sampled,
    conditioned on them (how `vqvae2 vary` resamples detail). `weights`: each prior's PriorWeights (top
    first), for a caller that samples the same priors many times; built here when not given."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    check_hierarchy(priors)
    levels = list(zip(priors, per_level(temperature, len(priors), "temperature"), per_level(top_k, len(priors), "top_k"),
                      per_level(top_p, len(priors), "top_p"), per_level(guidance, len(priors), "guidance")))[len(given):]
    batch_size = n if batch_size is None else batch_size
    _check_batch(priors, n, labels, batch_size, given)
    if weights is not None and len(weights) != len(priors):
        raise ValueError(f"weights has {len(weights)} entries but there are {len(priors)} priors")
    # the weights as the incremental samplers read them, built once for all batches
    built = list(weights)[len(given):] if weights is not None else [PriorWeights(p) for p, *_ in levels] \
        if sampler != "reference" else [None] * len(levels)
    weights = [{} if sampler == "reference" else {"weights": w} for w in built]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        total = n * sum(p.config.height * p.config.width for p, *_ in levels)
        bar = tqdm(total=total, desc="sampling", unit="pos", unit_scale=True)
    out: list[list[torch.Tensor]] = [[] for _ in priors]
    try:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            lab = None if labels is None else labels[start:start + m]
            on_row = None if bar is None else (lambda k, m=m: bar.update(k * m))
            codes: list[torch.Tensor] = [c[start:start + m].long() for c in given]
            for (prior, t, k, p, s), kw in zip(levels, weights):
                conditional = prior.config.n_classes > 0
                codes.append(SAMPLERS[sampler](prior, m, cond=codes or None, labels=lab if conditional else None,
                                               temperature=t, top_k=k, top_p=p, guidance=s if conditional else None,
                                               generator=generator, on_row=on_row, **kw))
            for i, c in enumerate(codes):
                out[i].append(c)
    finally:
        if bar is not None:
            bar.close()
    return [torch.cat(chunks) for chunks in out]


def _check_batch(priors, n: int, labels, batch_size: int, given) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels is not None and tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if len(given) >= len(priors):
        raise ValueError(f"given has codes of {len(given)} levels: at least one of the {len(priors)} must be left "
                         "to sample")
    for i, (codes, prior) in enumerate(zip(given, priors)):
        want = (n, prior.config.height, prior.config.width)
        if tuple(codes.shape) != want:
            raise ValueError(f"given[{i}] must have shape {want}, got {tuple(codes.shape)}")


def check_hierarchy(priors: Sequence[PixelSNAIL]) -> None:
    """Each prior (top first) must be conditioned on exactly the levels above it."""
    if not priors:
        raise ValueError("sample_hierarchy needs at least one prior (top first)")
    for i, prior in enumerate(priors):
        want = [[p.config.codebook_size, p.config.height, p.config.width] for p in priors[:i]]
        if prior.config.cond_shapes != want:
            raise ValueError(f"prior {i} (top first) is conditioned on cond_shapes {prior.config.cond_shapes}, "
                             f"but the priors above it give {want}")
