"""The samplers of one prior. All draw their randomness up front (`controls.uniforms`) and pick codes the
same way, so for the same generator state they give the same codes:

- `sample_reference`: one full teacher-forced forward per position (the definition; slow).
- `sample_cached`: each position of each layer computed once (`rows`, run eagerly).
- `sample_compiled`: the same row functions through torch.compile (equal up to float rounding).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..pixelsnail import PixelSNAIL
from .controls import check_controls, guided, pick, uniforms
from .rows import compiled_functions, sample_rows
from . import threads
from .weights import PriorWeights

RowCallback = Callable[[int], None]
# recompiles allowed per compiled function: every prior shape, batch size, temperature and top_k gets its
# own graph (a 3-level hierarchy and a smaller last batch stay compiled); set per thread, only while sampling
RECOMPILE_LIMIT = 64


def _inputs(prior: PixelSNAIL, n: int, cond, labels, temperature: float, top_k: int | None, top_p: float | None,
            guidance: float | None = None):
    check_controls(prior.config.codebook_size, n, temperature, top_k, top_p)
    if guidance is not None:
        if prior.null_label is None:
            raise ValueError("guidance needs a class-conditional prior trained with label dropout (prior.label_dropout "
                             "> 0), which learns a \"no label\" class; this prior has none")
        if not 0 <= guidance < float("inf"):
            raise ValueError(f"guidance must be a finite scale >= 0 (1 = the conditional prior as it is), got {guidance}")
    device = next(prior.parameters()).device
    cond = None if cond is None else [c.to(device).long() for c in cond]
    labels = None if labels is None else labels.to(device).long()
    cfg = prior.config
    prior.check_inputs(torch.zeros(n, cfg.height, cfg.width, dtype=torch.long, device=device), cond, labels)
    return device, cond, labels


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Eval mode and no grad inside, the module's mode restored after; a module wholly in eval mode is left
    alone (switching every submodule costs serial time per call)."""
    was_training = module.training
    switch = any(m.training for m in module.modules())
    if switch:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if switch:
            module.train(was_training)


def sample_reference(prior: PixelSNAIL, n: int, cond: list[torch.Tensor] | None = None,
                     labels: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                     generator: torch.Generator | None = None, max_positions: int | None = None,
                     on_row: RowCallback | None = None, top_p: float | None = None,
                     guidance: float | None = None) -> torch.Tensor:
    """(n, H, W) int64 codes, sampled in raster order with one teacher-forced forward per position (two with
    `guidance`: with the labels and with the "no label" class). `max_positions` stops early (for timing); the
    positions not reached stay 0."""
    device, cond, labels = _inputs(prior, n, cond, labels, temperature, top_k, top_p, guidance)
    height, width = prior.config.height, prior.config.width
    u = uniforms(n, height, width, generator, device)
    codes = torch.zeros(n, height, width, dtype=torch.long, device=device)
    total = height * width if max_positions is None else min(max_positions, height * width)
    with eval_mode(prior):
        for p in range(total):
            r, c = divmod(p, width)
            logits = prior(codes, cond, labels)[:, :, r, c]
            if guidance is not None:
                unconditional = prior(codes, cond, torch.full_like(labels, prior.null_label))[:, :, r, c]
                logits = guided(torch.cat([logits, unconditional]), guidance)
            codes[:, r, c] = pick(logits, u[:, r, c], temperature, top_k, top_p)
            if on_row is not None and c == width - 1:
                on_row(width)
    return codes


def _weights(prior: PixelSNAIL, weights: PriorWeights | None) -> PriorWeights:
    if weights is None:
        return PriorWeights(prior)
    weights.check(prior)
    return weights


def sample_cached(prior: PixelSNAIL, n: int, cond: list[torch.Tensor] | None = None,
                  labels: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None, return_logits: bool = False,
                  on_row: RowCallback | None = None, weights: PriorWeights | None = None, top_p: float | None = None,
                  guidance: float | None = None):
    """Same codes as `sample_reference` (same generator state), each position of each layer computed once.
    With return_logits=True returns (codes, (n, K, H, W) logits computed at each step, guided when guided)."""
    device, cond, labels = _inputs(prior, n, cond, labels, temperature, top_k, top_p, guidance)
    cfg = prior.config
    u = uniforms(n, cfg.height, cfg.width, generator, device)
    row_values = n * (1 if guidance is None else 2) * cfg.width * cfg.channels
    with eval_mode(prior), threads.threads_for(device, row_values):
        codes, logits = sample_rows(_weights(prior, weights), prior.cond_features(cond), labels, u, temperature,
                                    top_k, top_p, return_logits, on_row, compiled=False,
                                    v_convs=threads.wide(row_values), guidance=guidance)
    return (codes, logits) if return_logits else codes


@contextlib.contextmanager
def _recompile_limit():
    import torch._dynamo
    with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)):
        yield


def sample_compiled(prior: PixelSNAIL, n: int, cond: list[torch.Tensor] | None = None,
                    labels: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                    generator: torch.Generator | None = None, return_logits: bool = False,
                    on_row: RowCallback | None = None, weights: PriorWeights | None = None,
                    top_p: float | None = None, guidance: float | None = None):
    """`sample_cached` with each row's work compiled: a few times fewer operator calls per position. The
    first call for a prior shape, batch size, temperature and top_k compiles (tens of seconds per level on
    2 CPU cores); later calls reuse the graph. Needs a C++ compiler on CPU (Inductor). On a CPU with several
    threads the batch is sampled in `shards`; each sample depends only on its own uniforms, conditioning and
    label, all fixed before the split, so sharding changes no code beyond float rounding."""
    device, cond, labels = _inputs(prior, n, cond, labels, temperature, top_k, top_p, guidance)
    cfg = prior.config
    u = uniforms(n, cfg.height, cfg.width, generator, device)
    with eval_mode(prior):
        w = _weights(prior, weights)
        compiled_functions()  # made here, not raced for by the shards' threads

        def run(lo: int, hi: int, reports: bool):
            with _recompile_limit():
                return sample_rows(w, prior.cond_features(None if cond is None else [c[lo:hi] for c in cond]),
                                   None if labels is None else labels[lo:hi], u[lo:hi], temperature, top_k, top_p,
                                   return_logits, on_row if reports else None, compiled=True, guidance=guidance)

        parts = threads.shards(device, n)
        if len(parts) == 1:
            with threads.threads_for(device, n * cfg.width * cfg.channels):
                codes, logits = run(0, n, True)
        else:  # the first shard reports the rows (the shards move through the rows together)
            done = threads.run_sharded(run, parts)
            codes = torch.cat([d[0] for d in done])
            logits = torch.cat([d[1] for d in done]) if return_logits else None
    return (codes, logits) if return_logits else codes
