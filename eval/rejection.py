"""Classifier-based rejection sampling (VQ-VAE-2, section 3.3).

For an acceptance rate r, the first ceil(n / r) candidates are scored by the classifier and the
n best kept: the probability of the intended class when sampling class-conditionally, of the
predicted class (argmax) otherwise. r = 1 keeps the first n candidates unchanged.
"""
from __future__ import annotations

import math
from typing import Iterable, Sized

import torch


def _check_rate(rate: float) -> None:
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"acceptance rate must be in (0, 1], got {rate}")


def candidates_needed(n: int, rate: float) -> int:
    """ceil(n / rate), robust to float noise (3 / 0.3 is 10, not 11)."""
    if n < 1:
        raise ValueError(f"number of samples to keep must be >= 1, got {n}")
    _check_rate(rate)
    return math.ceil(round(n / rate, 9))


def rates_needed(n: int, rates: Iterable[float]) -> int:
    """Candidates to draw so that every acceptance rate in `rates` can keep n samples."""
    rates = list(rates)
    if not rates:
        raise ValueError("rates is empty")
    return max(candidates_needed(n, r) for r in rates)


def rejection_sample(
    candidate_images: Sized,
    probs: torch.Tensor,
    n: int,
    rate: float,
    target_classes: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Indices (n,), ascending, of the kept candidates among the first ceil(n / rate).

    probs: (N, num_classes) classifier probabilities of the N candidates.
    target_classes: the intended class of each candidate (N,), or one int for all; None = unconditional.
    With target classes the selection is made per class (class-balanced): each class keeps as many
    as it has among the first n candidates, the ones with the highest probability of that class.
    """
    probs = torch.as_tensor(probs)
    m = candidates_needed(n, rate)
    n_cand = len(candidate_images)
    if probs.dim() != 2 or len(probs) != n_cand:
        raise ValueError(f"probs must be (N, num_classes) with N = {n_cand} candidates, got {tuple(probs.shape)}")
    if n_cand < m:
        raise ValueError(f"keeping {n} samples at acceptance rate {rate} needs {m} candidates, got {n_cand}; "
                         f"draw rates_needed(n, rates) candidates")
    p = probs[:m].float()  # (m, K)
    if target_classes is None:
        scores = p.max(dim=1).values
    else:
        target = torch.as_tensor(target_classes, dtype=torch.long)
        target = target.expand(n_cand) if target.dim() == 0 else target
        if target.shape != (n_cand,):
            raise ValueError(f"target_classes must be one int or (N,) = ({n_cand},), got {tuple(target.shape)}")
        target = target[:m]
        if target.min() < 0 or target.max() >= p.shape[1]:
            raise ValueError(f"target_classes must be in [0, {p.shape[1]}), got values "
                             f"{int(target.min())}..{int(target.max())}")
        scores = p.gather(1, target[:, None]).squeeze(1)  # (m,)
        # class by class: each class keeps as many samples as it has among the first n candidates,
        # so rejection changes how typical the samples are, not which classes they show
        kept = []
        for c in target[:n].unique():
            members = (target == c).nonzero().squeeze(1)  # (m_c,) in candidate order
            k = int((target[:n] == c).sum())
            if len(members) < k:
                raise ValueError(f"class {int(c)} has {len(members)} of the first {m} candidates, fewer than the "
                                 f"{k} it needs; spread the intended classes evenly over the candidates")
            order = torch.sort(scores[members], descending=True, stable=True).indices
            kept.append(members[order[:k]])
        return torch.cat(kept).sort().values
    # stable: among equal scores the earlier candidate wins, so r = 1 keeps exactly the first n
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:n].sort().values


# realism rejection: unlabelled data, a real-vs-generated classifier

REALISM_CAP_QUANTILE = 0.95  # density ratios above this quantile of the candidates' count as that quantile


def density_ratio(p_real: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """D / (1 - D) for a discriminator's probability D that an image is real: the density ratio p_data / p_model
    it estimates (discriminator rejection sampling, Azadi et al. 2019)."""
    d = p_real.float().clamp(eps, 1 - eps)
    return d / (1 - d)


def realism_sample(p_real: torch.Tensor, n: int, rate: float, seed: int = 0,
                   cap_quantile: float = REALISM_CAP_QUANTILE) -> torch.Tensor:
    """Indices (n,), ascending, of the candidates kept among the first ceil(n / rate): drawn without replacement
    with probability proportional to the density ratio, capped at its `cap_quantile` quantile (so a few
    confident scores cannot take every place). Gumbel top-n keys with a generator seeded by `seed`; at rate 1
    every one of the first n is kept."""
    p_real = torch.as_tensor(p_real).flatten()
    m = candidates_needed(n, rate)
    if len(p_real) < m:
        raise ValueError(f"keeping {n} samples at acceptance rate {rate} needs {m} candidates, got {len(p_real)}")
    ratio = density_ratio(p_real[:m])
    weight = ratio.clamp(max=float(torch.quantile(ratio, cap_quantile, interpolation="lower")))
    u = torch.rand(m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).clamp(min=1e-300)
    keys = weight.double().log() - (-u.log()).log()  # log w + Gumbel noise
    return torch.sort(keys, descending=True, stable=True).indices[:n].sort().values
