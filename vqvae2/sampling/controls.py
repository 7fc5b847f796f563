"""Sampling controls shared by every sampler: the uniforms drawn up front, the choice of a code from
logits (temperature, top-k) and the checks of those settings."""
from __future__ import annotations

import torch


def uniforms(n: int, height: int, width: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n, H, W) uniforms in [0, 1), one per position, drawn before any code so every sampler consumes the
    generator identically."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, height, width, generator=generator, device=gen_device).to(device)


def pick(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None,
         top_p: float | None = None) -> torch.Tensor:
    """(B, K) logits, (B,) uniforms in [0, 1) -> (B,) int64 codes by inverse CDF of softmax(logits / temperature),
    after top-k and nucleus (top-p) filtering; no host sync."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        logits = nucleus(logits, top_p)
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    # the first code whose cdf exceeds u * total; filtered codes have zero mass so are never chosen
    idx = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True)[:, 0]
    return idx.clamp_(max=logits.shape[-1] - 1)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, K) logits with every code outside the nucleus at -inf: the most probable codes whose probabilities,
    taken in decreasing order, first reach `top_p` in sum (a code is kept when the mass before it is below
    top_p, so the most probable one always is; codes tied with the last one kept are kept too)."""
    ordered = logits.sort(dim=-1, descending=True).values
    p = ordered.softmax(dim=-1)
    kept = ((p.cumsum(dim=-1) - p) < top_p).sum(dim=-1, keepdim=True)  # (B, 1), at least 1
    last = ordered.gather(-1, kept - 1)
    return logits.masked_fill(logits < last, float("-inf"))


def guided(logits: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: (2B, K) logits, the class-conditional half first and the "no label" half
    second -> (B, K) l_u + s (l_c - l_u) at scale s = guidance (1: the conditional logits, 0: the unconditional)."""
    cond, uncond = logits.chunk(2)
    return uncond + guidance * (cond - uncond)


def check_controls(codebook_size: int, n: int, temperature: float, top_k: int | None,
                   top_p: float | None = None) -> None:
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= codebook_size:
        raise ValueError(f"top_k must be in [1, {codebook_size}] (the codebook size) or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")


def per_level(value, n_levels: int, name: str) -> list:
    """One value for every level, or a list with one per level (top first)."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_levels:
            raise ValueError(f"{name} has {len(value)} values but there are {n_levels} priors")
        return list(value)
    return [value] * n_levels
