"""Sampling controls shared by every sampler: the uniforms drawn up front, the choice of a code from
logits (temperature, top-k) and the checks of those settings."""
from __future__ import annotations

import torch


def uniforms(n: int, height: int, width: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n, H, W) uniforms in [0, 1), one per position, drawn before any code so every sampler consumes the
    generator identically."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, height, width, generator=generator, device=gen_device).to(device)


def pick(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """(B, K) logits, (B,) uniforms in [0, 1) -> (B,) int64 codes by inverse CDF; no host sync."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    # the first code whose cdf exceeds u * total; filtered codes have zero mass so are never chosen
    idx = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True)[:, 0]
    return idx.clamp_(max=logits.shape[-1] - 1)


def check_controls(codebook_size: int, n: int, temperature: float, top_k: int | None) -> None:
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= codebook_size:
        raise ValueError(f"top_k must be in [1, {codebook_size}] (the codebook size) or None, got {top_k}")


def per_level(value, n_levels: int, name: str) -> list:
    """One value for every level, or a list with one per level (top first)."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_levels:
            raise ValueError(f"{name} has {len(value)} values but there are {n_levels} priors")
        return list(value)
    return [value] * n_levels
