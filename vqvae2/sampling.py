"""Sampling from PixelSNAIL priors: a naive reference sampler, a cached incremental sampler that
gives exactly the same codes, and top-down sampling of a whole hierarchy.

Both samplers draw all their randomness up front, one uniform per position of shape (n, H, W),
and pick each code by inverse CDF of softmax(logits / temperature) (after optional top-k
filtering). They consume the generator identically, so the same seed gives the same codes.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from .pixelsnail import PixelSNAIL

RowCallback = Callable[[int], None]


# shared helpers

def _uniforms(n: int, height: int, width: int, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, height, width, generator=generator, device=gen_device).to(device)


def _pick(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """(B, K) logits, (B,) uniforms in [0, 1) -> (B,) int64 codes by inverse CDF; no host sync."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    # first code whose cdf exceeds u * total (the number of cdf entries <= it); codes filtered out have
    # zero mass so are never chosen
    idx = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True)[:, 0]
    return idx.clamp_(max=logits.shape[-1] - 1)


def _check_args(prior: PixelSNAIL, n: int, temperature: float, top_k: int | None) -> None:
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = prior.config.codebook_size
    if top_k is not None and not 1 <= top_k <= k:
        raise ValueError(f"top_k must be in [1, {k}] (the codebook size) or None, got {top_k}")


def _inputs(prior: PixelSNAIL, n: int, cond, labels):
    device = next(prior.parameters()).device
    cond = None if cond is None else [c.to(device).long() for c in cond]
    labels = None if labels is None else labels.to(device).long()
    cfg = prior.config
    prior.check_inputs(torch.zeros(n, cfg.height, cfg.width, dtype=torch.long, device=device), cond, labels)
    return device, cond, labels


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


# reference sampler: one full forward pass per position

def sample_reference(prior: PixelSNAIL, n: int, cond: list[torch.Tensor] | None = None,
                     labels: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                     generator: torch.Generator | None = None, max_positions: int | None = None,
                     on_row: RowCallback | None = None) -> torch.Tensor:
    """(n, H, W) int64 codes, sampled in raster order with one teacher-forced forward per position.
    `max_positions` stops early (for timing); the positions not reached stay 0."""
    _check_args(prior, n, temperature, top_k)
    device, cond, labels = _inputs(prior, n, cond, labels)
    height, width = prior.config.height, prior.config.width
    u = _uniforms(n, height, width, generator, device)
    codes = torch.zeros(n, height, width, dtype=torch.long, device=device)
    total = height * width if max_positions is None else min(max_positions, height * width)
    with _eval_mode(prior):
        for p in range(total):
            r, c = divmod(p, width)
            logits = prior(codes, cond, labels)[:, :, r, c]
            codes[:, r, c] = _pick(logits, u[:, r, c], temperature, top_k)
            if on_row is not None and c == width - 1:
                on_row(width)
    return codes


# cached sampler: every position of every layer computed once

# a row pass of at least this many values (batch x width x channels) is worth the thread pool
_THREADED_ROW_VALUES = 65536


@contextlib.contextmanager
def _cpu_threads_for(device: torch.device, row_values: int):
    """One CPU thread for small priors: their per-position ops are tiny (B vectors) and the per-row ones
    small, and waking a thread pool for each costs more than the op; with other processes on the cores
    it costs 10-50x (measured on 2 shared cores; switching the count per row is no better). Large row
    passes (batch x width x channels >= _THREADED_ROW_VALUES) keep torch's threads: the ffhq256 bottom
    prior at batch 16 (16 x 64 x 128) samples in 7.0 s on 2 threads against 11.2 s on one."""
    if device.type != "cpu" or row_values >= _THREADED_ROW_VALUES:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _CachedPixelSNAIL:
    """Incremental evaluation of a PixelSNAIL for one batch.

    Per row: the v stream of every unit (it sees only rows above) is computed for the whole row
    from a window of the last rows, plus everything the h stream gets per position but that does
    not depend on the current row (v -> h projection, conditioning, class embedding, biases).
    Per position: the h stream of every unit from a window of the last columns (one matmul on the
    gathered window), attention with a key/value cache (one query), the output head.
    Everything is a matmul on channel-last rows: a convolution call on a tiny row costs ~20x its
    arithmetic in overhead on CPU.
    """

    def __init__(self, prior: PixelSNAIL, n: int, cond_feat: torch.Tensor | None, labels: torch.Tensor | None):
        cfg = prior.config
        self.prior, self.n = prior, n
        self.c, self.p, self.k = cfg.channels, cfg.kernel_size // 2, cfg.kernel_size
        self.height, self.width = cfg.height, cfg.width
        c, p, w = self.c, self.p, cfg.width
        weight = prior.embed.weight
        dev, dt = weight.device, weight.dtype
        self.embed = weight

        def mat(conv):  # (Cout, Cin, kh, kw) conv weight -> (kh * kw * Cin, Cout) matrix over a (kh, kw, Cin) window
            return rearrange(conv.weight, "o i kh kw -> (kh kw i) o").contiguous()

        self.stem_v, self.stem_v_b = mat(prior.stem_v), prior.stem_v.bias
        self.stem_h, self.stem_h_b = mat(prior.stem_h), prior.stem_h.bias
        self.units = prior.units
        self.v_conv = [mat(u.v_conv) for u in self.units]
        self.v_out = [mat(u.v_out) for u in self.units]
        self.h_from_v = [mat(u.h_from_v) for u in self.units]
        self.cond_proj = [mat(u.cond_proj) if u.cond_proj is not None else None for u in self.units]
        self.h_conv = [mat(u.h_conv) for u in self.units]
        self.h_out = [mat(u.h_out) for u in self.units]
        # biases of every unit that are fixed for the whole batch: (B, 4C) class embedding, repeated per column
        self.fixed = [u.class_emb(labels).repeat(w, 1) if u.class_emb is not None else None for u in self.units]
        self.cond_rows = None if cond_feat is None else rearrange(cond_feat, "b c h w -> h (w b) c").contiguous()
        # windows, channel-last with p zero columns each side: embedded rows above (stem), silu(v) of the
        # last p+1 rows per unit
        # (rows are written in place: row r of the image is row r + p of a buffer; p zero rows on top)
        h_all = cfg.height + p
        self.x_rows = torch.zeros(h_all, w + 2 * p, n, c, device=dev, dtype=dt)
        self.v_rows = [torch.zeros(h_all, w + 2 * p, n, c, device=dev, dtype=dt) for _ in self.units]
        # current row, channel-last with p zero columns on the left: embedded codes, silu(h) per unit
        self.x_cur = torch.zeros(n, w + p, c, device=dev, dtype=dt)
        self.h_cur = [torch.zeros(n, w + p, c, device=dev, dtype=dt) for _ in self.units]
        # attention: background part of q/k/v precomputed per position, key/value caches
        self.attn = {}
        for i, block in enumerate(prior.blocks):
            if block.attn is None:
                continue
            a = block.attn
            nh, hw = a.n_heads, cfg.height * cfg.width
            self.attn[i] = dict(
                module=a, nh=nh, d=c // nh,
                w_h=a.qkv.weight[:, :c].t().contiguous(), w_x=a.qkv.weight[:, c:2 * c].t().contiguous(),
                bg=(prior.background[0] @ a.qkv.weight[:, 2 * c:].t() + a.qkv.bias).contiguous(),  # (HW, 3C)
                w_out=a.out.weight.t().contiguous(), b_out=a.out.bias,
                k=torch.zeros(n, nh, hw, c // nh, device=dev, dtype=dt),
                v=torch.zeros(n, nh, hw, c // nh, device=dev, dtype=dt))
        self.x_prev = torch.zeros(n, c, device=dev, dtype=dt)  # embedded code at the previous position
        self.head_w = prior.head.weight[:, :, 0, 0].t().contiguous()
        self.head_b = prior.head.bias

    def _windows(self, rows: torch.Tensor) -> torch.Tensor:
        """(R, W + 2p, B, C) rows -> (W * B, R * k * C): the k-column window of every column, for a matmul."""
        return rearrange(rows.unfold(1, self.k, 1), "r w b c k -> (w b) (r k c)")

    def start_row(self, r: int) -> None:
        """Compute the v stream of row r for every unit and the h-stream biases of row r."""
        n, c, p, w = self.n, self.c, self.p, self.width
        if r > 0:  # the finished row r-1
            self.x_rows[p + r - 1, p:p + w] = rearrange(self.x_cur[:, p:], "b w c -> w b c")
        v = torch.addmm(self.stem_v_b, self._windows(self.x_rows[r:r + p]), self.stem_v)  # rows r-p..r-1: (W * B, C)
        self.h_bias0 = (v + self.stem_h_b).view(w, n, c)
        self.h_bias1, self.h_bias2 = [], []
        for i, unit in enumerate(self.units):
            buf = self.v_rows[i]
            buf[p + r, p:p + w] = F.silu(v).view(w, n, c)
            a = F.silu(torch.addmm(unit.v_conv.bias, self._windows(buf[r:r + p + 1]), self.v_conv[i]))
            b = torch.addmm(unit.v_out.bias, a, self.v_out[i])  # (W * B, 2C)
            extra = None if self.cond_proj[i] is None else self.cond_rows[r] @ self.cond_proj[i]  # (W * B, 4C)
            if self.fixed[i] is not None:
                extra = self.fixed[i] if extra is None else extra + self.fixed[i]
            ev, eh = (None, None) if extra is None else extra.chunk(2, dim=1)
            v = v + F.glu(b if ev is None else b + ev, dim=1)
            b1 = torch.addmm(unit.h_conv.bias, F.silu(v), self.h_from_v[i])
            self.h_bias1.append(b1.view(w, n, c))
            b2 = unit.h_out.bias if eh is None else eh + unit.h_out.bias
            self.h_bias2.append(b2.expand(w * n, 2 * c).reshape(w, n, 2 * c))

    def step(self, r: int, col: int) -> torch.Tensor:
        """(B, K) logits at (r, col), given the codes at all earlier positions."""
        n, c, p = self.n, self.c, self.p
        h = torch.addmm(self.h_bias0[col], self.x_cur[:, col:col + p].reshape(n, p * c), self.stem_h)
        i = 0
        for b, block in enumerate(self.prior.blocks):
            for _ in block.units:
                buf = self.h_cur[i]
                buf[:, p + col] = F.silu(h)
                a = F.silu(torch.addmm(self.h_bias1[i][col], buf[:, col:col + p + 1].reshape(n, -1), self.h_conv[i]))
                h = h + F.glu(torch.addmm(self.h_bias2[i][col], a, self.h_out[i]), dim=-1)
                i += 1
            if b in self.attn:
                h = self._attend(self.attn[b], h, r * self.width + col)
        return torch.addmm(self.head_b, F.silu(h), self.head_w)

    def _attend(self, at: dict, h: torch.Tensor, pos: int) -> torch.Tensor:
        n, nh, d = self.n, at["nh"], at["d"]
        a = at["module"]
        x = F.layer_norm(h, (self.c,), a.norm.weight, a.norm.bias, a.norm.eps)
        qkv = torch.addmm(torch.addmm(at["bg"][pos], x, at["w_h"]), self.x_prev, at["w_x"]).view(n, 3, nh, d)
        at["k"][:, :, pos] = qkv[:, 1]
        at["v"][:, :, pos] = qkv[:, 2]
        # one query against the cached keys: plain matmuls (a fused-attention call costs more than its work)
        scores = (qkv[:, 0, :, None] @ at["k"][:, :, :pos + 1].transpose(-1, -2)) * d ** -0.5  # (B, nh, 1, pos+1)
        o = scores.softmax(-1) @ at["v"][:, :, :pos + 1]
        return h + torch.addmm(at["b_out"], o.reshape(n, self.c), at["w_out"])

    def push(self, col: int, codes: torch.Tensor) -> None:
        self.x_prev = self.embed[codes]
        self.x_cur[:, self.p + col] = self.x_prev


def sample_cached(prior: PixelSNAIL, n: int, cond: list[torch.Tensor] | None = None,
                  labels: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None, return_logits: bool = False,
                  on_row: RowCallback | None = None):
    """Same codes as `sample_reference` (same generator state), computing each position of each
    layer once. With return_logits=True returns (codes, (n, K, H, W) logits computed at each step)."""
    _check_args(prior, n, temperature, top_k)
    device, cond, labels = _inputs(prior, n, cond, labels)
    cfg = prior.config
    height, width = cfg.height, cfg.width
    u = _uniforms(n, height, width, generator, device)
    codes = torch.zeros(n, height, width, dtype=torch.long, device=device)
    all_logits = (torch.zeros(n, cfg.codebook_size, height, width, device=device)
                  if return_logits else None)
    with _eval_mode(prior), _cpu_threads_for(device, n * width * cfg.channels):
        state = _CachedPixelSNAIL(prior, n, prior.cond_features(cond), labels)
        for r in range(height):
            state.start_row(r)
            for col in range(width):
                logits = state.step(r, col)
                if all_logits is not None:
                    all_logits[:, :, r, col] = logits
                code = _pick(logits, u[:, r, col], temperature, top_k)
                codes[:, r, col] = code
                state.push(col, code)
            if on_row is not None:
                on_row(width)
    return (codes, all_logits) if return_logits else codes


# hierarchy: top prior first, each lower prior conditioned on every level above

def sample_hierarchy(priors: Sequence[PixelSNAIL], n: int, labels: torch.Tensor | None = None,
                     temperature: float | Sequence[float] = 1.0, top_k: int | None | Sequence[int | None] = None,
                     generator: torch.Generator | None = None, sampler: str = "cached",
                     batch_size: int | None = None, progress: bool = False,
                     given: Sequence[torch.Tensor] = ()) -> list[torch.Tensor]:
    """Codes of every level, top first, each (n, H_l, W_l) int64. `temperature` and `top_k` may be
    given per level. Batches of `batch_size` are sampled one after another (all levels each).
    `given` holds the codes of the first len(given) levels (each (n, H_l, W_l)): those are kept and
    only the levels below them are sampled, conditioned on them (how `vqvae2 vary` resamples detail)."""
    samplers = {"cached": sample_cached, "reference": sample_reference}
    if sampler not in samplers:
        raise ValueError(f"sampler must be one of {sorted(samplers)}, got {sampler!r}")
    fn = samplers[sampler]
    _check_hierarchy(priors)
    n_levels = len(priors)
    temps = _per_level(temperature, n_levels, "temperature")
    top_ks = _per_level(top_k, n_levels, "top_k")
    batch_size = n if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels is not None and tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if len(given) >= n_levels:
        raise ValueError(f"given has codes of {len(given)} levels: at least one of the {n_levels} must be left to sample")
    for i, (codes, prior) in enumerate(zip(given, priors)):
        want = (n, prior.config.height, prior.config.width)
        if tuple(codes.shape) != want:
            raise ValueError(f"given[{i}] must have shape {want}, got {tuple(codes.shape)}")

    bar = None
    if progress:
        from tqdm.auto import tqdm
        total = n * sum(p.config.height * p.config.width for p in priors[len(given):])
        bar = tqdm(total=total, desc="sampling", unit="pos", unit_scale=True)
    out: list[list[torch.Tensor]] = [[] for _ in priors]
    try:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            lab = None if labels is None else labels[start:start + m]
            on_row = None if bar is None else (lambda k, m=m: bar.update(k * m))
            levels: list[torch.Tensor] = [c[start:start + m].long() for c in given]
            for prior, t, k in list(zip(priors, temps, top_ks))[len(given):]:
                levels.append(fn(prior, m, cond=levels or None, labels=lab if prior.config.n_classes else None,
                                 temperature=t, top_k=k, generator=generator, on_row=on_row))
            for i, codes in enumerate(levels):
                out[i].append(codes)
    finally:
        if bar is not None:
            bar.close()
    return [torch.cat(chunks) for chunks in out]


def _per_level(value, n_levels: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n_levels:
            raise ValueError(f"{name} has {len(value)} values but there are {n_levels} priors")
        return list(value)
    return [value] * n_levels


def _check_hierarchy(priors: Sequence[PixelSNAIL]) -> None:
    if not priors:
        raise ValueError("sample_hierarchy needs at least one prior (top first)")
    for i, prior in enumerate(priors):
        want = [[p.config.codebook_size, p.config.height, p.config.width] for p in priors[:i]]
        if prior.config.cond_shapes != want:
            raise ValueError(f"prior {i} (top first) is conditioned on cond_shapes {prior.config.cond_shapes}, "
                             f"but the priors above it give {want}")
