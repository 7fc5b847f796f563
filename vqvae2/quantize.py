"""Vector quantizers: the EMA codebook (VQ-VAE-2's choice, van den Oord et al. 2017 app. A.1) and the
gradient-trained codebook with the codebook loss (the 2017 paper's main method)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn


# distributed helpers

def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast_from_rank0(t: torch.Tensor) -> torch.Tensor:
    if _world_size() > 1:
        dist.broadcast(t, src=0)
    return t


@torch.no_grad()
def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk_size: int = 16384) -> torch.Tensor:
    """Index of the nearest codebook row for each row of x: argmin ||e||^2 - 2 x.e (the ||x||^2
    term does not change the argmin). One matmul per chunk of rows keeps memory at chunk x K."""
    e = codebook.float()
    e_sq = (e * e).sum(1)  # (K,)
    e_t = (-2.0 * e).t()  # (D, K): -2 x.e as one plain matmul (addmm would first copy e_sq into every row)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        rows = x[start:start + chunk_size].float()
        out[start:start + chunk_size] = (rows @ e_t).add_(e_sq).argmin(1)
    return out


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain Lloyd k-means on rows of x (fp32), started from k rows sampled with replacement."""
    idx = torch.randint(0, x.shape[0], (k,), generator=generator, device="cpu").to(x.device)
    centers = x[idx].clone()
    for _ in range(iters):
        assign = nearest_code(x, centers)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        used = counts > 0
        centers[used] = sums[used] / counts[used, None]
    return centers


@dataclass
class QuantizerStats:
    """What one call of the quantizer saw (all plain tensors, detached)."""

    perplexity: torch.Tensor
    codes_used: torch.Tensor
    dead_codes: torch.Tensor
    quant_error: torch.Tensor
    commitment: torch.Tensor  # beta * ||z - sg(e)||^2
    codebook_loss: torch.Tensor  # ||sg(z) - e||^2 (0 for the EMA codebook, which has no gradient)


class _Quantizer(nn.Module):
    """What both codebooks share: data-dependent init, nearest-code search in fp32 with autocast off,
    an EMA of code usage (identical on every rank) that finds dead codes, restarts from the batch,
    the straight-through estimator and the statistics. Subclasses say how the codebook learns."""

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, eps: float = 1e-5,
                 beta: float = 0.25, dead_code_threshold: float = 1.0, init: str = "kmeans",
                 kmeans_iters: int = 10, chunk_size: int = 16384):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.eps, self.beta = decay, eps, beta
        self.dead_code_threshold, self.init, self.kmeans_iters = dead_code_threshold, init, kmeans_iters
        self.chunk_size = chunk_size
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("initialized", torch.tensor(init == "none"))

    @staticmethod
    def _initial_codebook(codebook_size: int, dim: int) -> torch.Tensor:
        return torch.randn(codebook_size, dim) * (1.0 / dim ** 0.5)

    # codebook maintenance (training only, fp32, identical on every rank)

    @torch.no_grad()
    def _data_init(self, flat: torch.Tensor) -> None:
        g = torch.Generator().manual_seed(0)
        if self.init == "kmeans":
            sample = flat[torch.randperm(flat.shape[0], generator=g)[:20000].to(flat.device)]
            embed = kmeans(sample, self.codebook_size, self.kmeans_iters, generator=g)
        else:  # "sample"
            embed = flat[torch.randint(0, flat.shape[0], (self.codebook_size,), generator=g).to(flat.device)]
        embed = _broadcast_from_rank0(embed.contiguous())
        self._set_codes(torch.ones(self.codebook_size, dtype=torch.bool, device=embed.device), embed, 1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _count_usage(self, idx: torch.Tensor) -> torch.Tensor:
        counts = _all_reduce_sum(torch.bincount(idx, minlength=self.codebook_size).float())
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        return counts

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> torch.Tensor:
        dead = self.ema_count < self.dead_code_threshold  # identical on every rank: counts were all-reduced
        n_dead = int(dead.sum())
        if n_dead == 0 or self.dead_code_threshold <= 0:
            return dead
        # Rank 0 picks the replacement vectors from its batch; every rank receives the same ones.
        pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        replacement = _broadcast_from_rank0(flat[pick].contiguous())
        self._set_codes(dead, replacement[dead], 2.0 * self.dead_code_threshold)  # time to be chosen
        return dead

    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor, count: float) -> None:
        raise NotImplementedError

    def _learn(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Training-time codebook update; returns the (all-reduced) code counts of the batch."""
        raise NotImplementedError

    def _codebook_loss(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(())

    # the quantizer

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int codes -> (B, D, H, W) code vectors, by embedding gather."""
        return rearrange(F.embedding(codes, self.embed), "b h w d -> b d h w")

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, QuantizerStats]:
        """z: (B, D, H, W). Returns (straight-through quantised z, codes (B, H, W), the latent loss to add
        to the reconstruction loss, stats)."""
        b, _, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = rearrange(z, "b d h w -> (b h w) d")
            if self.training and not bool(self.initialized):
                self._data_init(flat.detach())
            idx = nearest_code(flat.detach(), self.embed, self.chunk_size)
            if self.training:
                counts = self._learn(flat.detach(), idx)
                dead = self._restart_dead(flat.detach())
            else:
                counts = torch.bincount(idx, minlength=self.codebook_size).float()
                dead = self.ema_count < self.dead_code_threshold
            codes = idx.view(b, h, w)
            q = self.lookup(codes)
            commitment = self.beta * F.mse_loss(z, q.detach())  # moves the encoder towards its code
            codebook = self._codebook_loss(z, q)  # moves the code towards the encoder (gradient codebook only)
            q_st = z + (q - z).detach()  # straight-through: gradients pass to the encoder unchanged
            with torch.no_grad():
                p = counts / counts.sum().clamp_min(1)
                stats = QuantizerStats(
                    perplexity=torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()),
                    codes_used=(counts > 0).sum(),
                    dead_codes=dead.sum(),
                    quant_error=(z - q).pow(2).sum(1).mean(),
                    commitment=commitment.detach(),
                    codebook_loss=codebook.detach(),
                )
        return q_st, codes, commitment + codebook, stats


class VectorQuantizerEMA(_Quantizer):
    """Quantises (B, D, H, W) features to the nearest of `codebook_size` D-dim codes.

    The codebook is not trained by gradients: in training mode it follows an EMA of the mean of
    the encoder vectors assigned to each code (VQ-VAE, appendix A.1; the VQ-VAE-2 choice). EMA counts
    start at 1 and EMA sums at the codebook itself, so sum / count is the codebook from the first
    step and an unused code stays put while both decay together (initialising counts at 0 with sums
    at the codebook would divide the codebook by the tiny Laplace epsilon and throw unused codes far away).
    """

    def __init__(self, codebook_size: int, dim: int, **kwargs):
        super().__init__(codebook_size, dim, **kwargs)
        embed = self._initial_codebook(codebook_size, dim)
        self.register_buffer("embed", embed)
        self.register_buffer("ema_sum", embed.clone())

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor, count: float) -> None:
        self.embed[which] = vectors
        self.ema_sum[which] = vectors * count
        self.ema_count[which] = count

    @torch.no_grad()
    def _learn(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        counts = self._count_usage(idx)
        sums = _all_reduce_sum(torch.zeros_like(self.ema_sum).index_add_(0, idx, flat))
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n  # Laplace
        self.embed.copy_(self.ema_sum / smoothed[:, None])
        return counts


class VectorQuantizer(_Quantizer):
    """The gradient-trained codebook of VQ-VAE (van den Oord et al. 2017, eq. 3): the loss adds
    ||sg[z_e(x)] - e||^2, whose gradient reaches only the codebook, to the commitment loss
    beta * ||z_e(x) - sg[e]||^2, whose gradient reaches only the encoder; the decoder's gradient
    reaches the encoder through the straight-through estimator. The EMA of code usage is kept only
    to find dead codes (and is reported like the EMA codebook's)."""

    def __init__(self, codebook_size: int, dim: int, **kwargs):
        super().__init__(codebook_size, dim, **kwargs)
        self.embed = nn.Parameter(self._initial_codebook(codebook_size, dim))

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor, count: float) -> None:
        self.embed[which] = vectors
        self.ema_count[which] = count

    @torch.no_grad()
    def _learn(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self._count_usage(idx)  # the codebook itself learns from the optimizer step

    def _codebook_loss(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(q, z.detach())


QUANTIZERS = {"ema": VectorQuantizerEMA, "codebook_loss": VectorQuantizer}


def build_quantizer(kind: str, codebook_size: int, dim: int, **kwargs) -> _Quantizer:
    if kind not in QUANTIZERS:
        raise ValueError(f"vqvae.quantizer must be one of {sorted(QUANTIZERS)}, got {kind!r}")
    return QUANTIZERS[kind](codebook_size, dim, **kwargs)
