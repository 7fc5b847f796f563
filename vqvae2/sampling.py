"""Sampling from PixelSNAIL priors: a naive reference sampler, a cached incremental sampler that
gives exactly the same codes, and top-down sampling of a whole hierarchy.

Both samplers draw all their randomness up front, one uniform per position of shape (n, H, W),
and pick each code by inverse CDF of softmax(logits / temperature) (after optional top-k
filtering). They consume the generator identically, so the same seed gives the same codes.
"""
from __future__ import annotations

import contextlib
import weakref
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
    """Eval mode and no grad inside, the module's mode restored after. A module wholly in eval mode already
    is left alone: eval() and train() set every submodule's mode, 0.1 ms per prior and call (checking
    them takes a quarter of that), serial work in sharded sampling."""
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


def _mat(conv: torch.nn.Conv2d) -> torch.Tensor:
    """(Cout, Cin, kh, kw) conv weight -> (kh * kw * Cin, Cout) matrix over a (kh, kw, Cin) window."""
    return rearrange(conv.weight, "o i kh kw -> (kh kw i) o").contiguous()


_MATRICES: "weakref.WeakKeyDictionary[PixelSNAIL, tuple]" = weakref.WeakKeyDictionary()


def _matrices(prior: PixelSNAIL) -> dict:
    """`_weight_matrices(prior)`, cached while no parameter of `prior` changes: the key holds every
    parameter's storage, dtype and version counter (an optimizer step or a load_state_dict bumps it).
    The parameters are read through their modules' parameter tables, listed once per prior: walking the
    module tree on every call cost 0.37 ms, a serial part of each level's sampling; a parameter assigned
    anew still lands in its module's table, so it is seen."""
    hit = _MATRICES.get(prior)
    slots = hit[2] if hit is not None else [(mod._parameters, name) for mod in prior.modules()
                                            for name, q in mod._parameters.items() if q is not None]
    key = tuple((q.data_ptr(), q.dtype, q._version) for q in (table[name] for table, name in slots))
    if hit is None or hit[0] != key:
        hit = _MATRICES[prior] = (key, _weight_matrices(prior), slots)
    return hit[1]


def _weight_matrices(prior: PixelSNAIL) -> dict:
    """Every weight of `prior` the samplers use, as a right-hand matrix of a matmul over channel-last
    rows (biases: the modules' own), plus each attention layer's background part of q/k/v per position."""
    c = prior.config.channels
    units = [dict(v_conv=_mat(u.v_conv), v_conv_b=u.v_conv.bias, v_out=_mat(u.v_out), v_out_b=u.v_out.bias,
                  h_from_v=_mat(u.h_from_v), h_conv=_mat(u.h_conv), h_conv_b=u.h_conv.bias, h_out=_mat(u.h_out),
                  h_out_b=u.h_out.bias) for u in prior.units]
    # every unit's conditioning projection side by side: one matmul per row projects for all units
    cond_proj = torch.cat([_mat(u.cond_proj) for u in prior.units], 1) if prior.config.cond_shapes else None
    attn = {}
    for i, block in enumerate(prior.blocks):
        if block.attn is not None:
            a = block.attn
            attn[str(i)] = dict(ln_w=a.norm.weight, ln_b=a.norm.bias, eps=a.norm.eps,
                                w_h=a.qkv.weight[:, :c].t().contiguous(), w_x=a.qkv.weight[:, c:2 * c].t().contiguous(),
                                bg=(prior.background[0] @ a.qkv.weight[:, 2 * c:].t() + a.qkv.bias).contiguous(),  # (HW, 3C)
                                w_out=a.out.weight.t().contiguous(), b_out=a.out.bias)
    return dict(embed=prior.embed.weight, stem_v=_mat(prior.stem_v), stem_v_b=prior.stem_v.bias,
                stem_h=_mat(prior.stem_h), stem_h_b=prior.stem_h.bias, units=units, attn=attn, cond_proj=cond_proj,
                head_w=prior.head.weight[:, :, 0, 0].t().contiguous(), head_b=prior.head.bias)


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
        self.m = m = _matrices(prior)
        self.stem_h = m["stem_h"]
        self.units = prior.units
        self.h_conv = [u["h_conv"] for u in m["units"]]
        self.h_out = [u["h_out"] for u in m["units"]]
        # wide rows: the v stream's convolutions as convolutions (see _v_row)
        self.v_convs = [u.v_conv.weight.contiguous(memory_format=torch.channels_last) for u in prior.units] \
            if n * w * c >= _THREADED_ROW_VALUES else None
        self.cond_rows, self.fixed = _row_conditioning(prior, m, cond_feat, labels)
        # windows, channel-last with p zero columns each side: embedded codes of the p rows above (stem),
        # silu of each unit's v input on those rows
        self.x_rows = torch.zeros(p, w + 2 * p, n, c, device=dev, dtype=dt)
        self.v_wins = [torch.zeros(p, w + 2 * p, n, c, device=dev, dtype=dt) for _ in self.units]
        # current row, channel-last with p zero columns on the left: embedded codes, silu(h) per unit
        self.x_cur = torch.zeros(n, w + p, c, device=dev, dtype=dt)
        self.h_cur = [torch.zeros(n, w + p, c, device=dev, dtype=dt) for _ in self.units]
        # attention: background part of q/k/v precomputed per position, key/value caches
        self.attn = {}
        for i, block in enumerate(prior.blocks):
            if block.attn is None:
                continue
            a, ma = block.attn, m["attn"][str(i)]
            nh, hw = a.n_heads, cfg.height * cfg.width
            self.attn[i] = dict(
                module=a, nh=nh, d=c // nh, w_h=ma["w_h"], w_x=ma["w_x"], bg=ma["bg"], w_out=ma["w_out"], b_out=a.out.bias,
                k=torch.zeros(n, nh, hw, c // nh, device=dev, dtype=dt),
                v=torch.zeros(n, nh, hw, c // nh, device=dev, dtype=dt))
        self.x_prev = torch.zeros(n, c, device=dev, dtype=dt)  # embedded code at the previous position
        self.head_w, self.head_b = m["head_w"], prior.head.bias

    def start_row(self, r: int) -> None:
        """Compute the v stream of row r for every unit and the h-stream biases of row r."""
        p = self.p
        if r > 0:  # the finished row r-1
            row = F.pad(rearrange(self.x_cur[:, p:], "b w c -> 1 w b c"), (0, 0, 0, 0, p, p))
            self.x_rows = torch.cat([self.x_rows[1:], row])
        self.h_bias0, self.h_bias1, self.h_bias2, self.v_wins = _v_row(
            self.m, self.x_rows, self.v_wins, None if self.cond_rows is None else self.cond_rows[r], self.fixed, self.k,
            self.v_convs)

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


# compiled sampler: the cached sampler's arithmetic as pure functions of a row, compiled

# positions unrolled into one compiled call: a wider row is sampled in chunks of this many columns
# (compile time grows with the unrolled length; the fashion32 rows, 4 and 8 wide, are one call each)
COMPILE_CHUNK = 8
# ... and at most this many gated units unrolled into one call (positions x units): a deep prior takes
# fewer positions per call. The ffhq256 bottom prior (16 units, rows of 64) compiled in 198 s with 8
# positions per call and in 116 s with 4, and sampled as fast (8.6-9.3 s at batch 16 on 2 cores); with
# 2 per call it compiled in 102 s but sampled in 10.6-11.0 s (twice the calls, each with its overhead).
COMPILE_UNIT_STEPS = 64


def _compile_chunk(n_units: int) -> int:
    """Positions per compiled call for a prior of `n_units` gated residual units."""
    return max(1, min(COMPILE_CHUNK, COMPILE_UNIT_STEPS // max(n_units, 1)))


def _row_windows(rows: torch.Tensor, k: int) -> torch.Tensor:
    """(R, W + 2p, B, C) rows -> (W * B, R * k * C): the k-column window of every column."""
    return rearrange(rows.unfold(1, k, 1), "r w b c k -> (w b) (r k c)")


def _row_conditioning(prior: PixelSNAIL, m: dict, cond_feat: torch.Tensor | None, labels: torch.Tensor | None):
    """What the v stream adds per row that no code decides: the higher levels' features channel-last per
    row ((H, W * B, cond channels) or None; each row is projected for every unit at once by `_v_row`,
    not all rows up front, which would hold H x W x B x 4C x units values: 2 GB for the ffhq256 bottom
    prior at batch 16), and each unit's class embedding repeated per column ([(W * B, 4C)] or None)."""
    width = prior.config.width
    cond_rows = None if cond_feat is None else rearrange(cond_feat, "b c h w -> h (w b) c").contiguous()
    fixed = [u.class_emb(labels).repeat(width, 1) for u in prior.units] if prior.config.n_classes else None
    return cond_rows, fixed


def _v_row(m: dict, x_rows: torch.Tensor, v_wins: list[torch.Tensor], cond_row: torch.Tensor | None,
           fixed: list[torch.Tensor] | None, k: int, v_convs: list[torch.Tensor] | None = None):
    """The v stream of one row (both cached samplers), functionally: x_rows (p, W + 2p, B, C)
    holds the embedded codes of the p rows above, v_wins[i] silu of unit i's v input on those rows,
    cond_row (W * B, cond channels) the higher levels' features on this row. With `v_convs` (each
    unit's v_conv weight, channels-last) the units' down-shifted convolutions run as convolutions
    over the window instead of a window copy and one matmul: for a wide row oneDNN's convolution
    is twice as fast as that matmul in fp32 (16 x 64 x 128, kernel 5: 1.09 ms against 2.42 ms);
    for a narrow one its call costs more (16 x 8 x 64, kernel 3: 0.061 ms against 0.045 ms).
    Returns the h-stream biases (W, B, C), [(W, B, C)], [(W, B, 2C)] and the windows for the next row."""
    p = k // 2
    _, wp, n, c = x_rows.shape
    w = wp - 2 * p
    v = torch.addmm(m["stem_v_b"], _row_windows(x_rows, k), m["stem_v"])
    hb0 = (v + m["stem_h_b"]).view(w, n, c)
    hb1, hb2, new_wins = [], [], []
    proj = None if cond_row is None else cond_row @ m["cond_proj"]  # every unit's conditioning: (W * B, 4C * units)
    for i, u in enumerate(m["units"]):
        win = torch.cat([v_wins[i], F.pad(F.silu(v).view(1, w, n, c), (0, 0, 0, 0, p, p))])
        new_wins.append(win[1:])
        if v_convs is None:
            a = F.silu(torch.addmm(u["v_conv_b"], _row_windows(win, k), u["v_conv"]))
        else:  # (R, W + 2p, B, C) goes in as a (B, C, R, W + 2p) view: no k-fold window copy
            a = F.silu(rearrange(F.conv2d(win.permute(2, 3, 0, 1), v_convs[i], u["v_conv_b"]), "b c 1 w -> (w b) c"))
        b = torch.addmm(u["v_out_b"], a, u["v_out"])
        extra = None if proj is None else proj[:, 4 * c * i:4 * c * (i + 1)]
        if fixed is not None:
            extra = fixed[i] if extra is None else extra + fixed[i]
        ev, eh = (None, None) if extra is None else extra.chunk(2, dim=1)
        v = v + F.glu(b if ev is None else b + ev, dim=1)
        hb1.append(torch.addmm(u["h_conv_b"], F.silu(v), u["h_from_v"]).view(w, n, c))
        hb2.append((u["h_out_b"] if eh is None else eh + u["h_out_b"]).expand(w * n, 2 * c).reshape(w, n, 2 * c))
    return hb0, hb1, hb2, new_wins


def _positions(m: dict, hb0, hb1, hb2, h_wins: list[torch.Tensor], x_win: torch.Tensor, x_prev: torch.Tensor,
               caches: dict, pos0: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None,
               blocks: tuple[int, ...], n_heads: int, want_logits: bool):
    """Sample len(hb0) consecutive positions of one row (as `_CachedPixelSNAIL.step` and `push`), starting at
    raster position pos0 (a 0-d tensor). Attention reads the whole key/value cache with later positions masked,
    so no shape depends on the position. Returns codes (B, n_cols), logits (B, K, n_cols) or None, embedded codes
    (n_cols, B, C) and the carried windows."""
    n, c = x_prev.shape
    h_wins = list(h_wins)
    codes, logits, xs = [], [], []
    for j in range(hb0.shape[0]):
        h = torch.addmm(hb0[j], x_win.reshape(n, -1), m["stem_h"])
        i = 0
        for b, n_units in enumerate(blocks):
            for _ in range(n_units):
                u_ = m["units"][i]
                win = torch.cat([h_wins[i], F.silu(h)[:, None]], 1)  # silu(h) of the last p columns and this one
                h_wins[i] = win[:, 1:]
                a = F.silu(torch.addmm(hb1[i][j], win.reshape(n, -1), u_["h_conv"]))
                h = h + F.glu(torch.addmm(hb2[i][j], a, u_["h_out"]), dim=-1)
                i += 1
            if str(b) in caches:
                h = _attend_masked(m["attn"][str(b)], caches[str(b)], h, x_prev, pos0 + j, n_heads)
        logit = torch.addmm(m["head_b"], F.silu(h), m["head_w"])
        code = _pick(logit, u[:, j], temperature, top_k)
        x_prev = m["embed"][code]
        x_win = torch.cat([x_win[:, 1:], x_prev[:, None]], 1)
        codes.append(code)
        logits.append(logit)
        xs.append(x_prev)
    return (torch.stack(codes, 1), torch.stack(logits, 2) if want_logits else None, torch.stack(xs), h_wins, x_win,
            x_prev)


def _attend_masked(a: dict, cache: tuple[torch.Tensor, torch.Tensor], h: torch.Tensor, x_prev: torch.Tensor,
                   pos: torch.Tensor, n_heads: int) -> torch.Tensor:
    n, c = h.shape
    d = c // n_heads
    kc, vc = cache
    x = F.layer_norm(h, (c,), a["ln_w"], a["ln_b"], a["eps"])
    bg = a["bg"].index_select(0, pos.view(1))[0]
    qkv = torch.addmm(torch.addmm(bg, x, a["w_h"]), x_prev, a["w_x"]).view(n, 3, n_heads, d)
    kc.index_copy_(2, pos.view(1), qkv[:, 1, :, None])
    vc.index_copy_(2, pos.view(1), qkv[:, 2, :, None])
    scores = (qkv[:, 0, :, None] @ kc.transpose(-1, -2)) * d ** -0.5  # (B, nh, 1, HW)
    scores = scores.masked_fill(torch.arange(kc.shape[2], device=h.device) > pos, float("-inf"))
    o = scores.softmax(-1) @ vc
    return h + torch.addmm(a["b_out"], o.reshape(n, c), a["w_out"])


def _first_chunk(m, x_rows, last_row, v_wins, cond_row, fixed, caches, x_prev, pos0, u, temperature: float,
                 top_k: int | None, blocks: tuple[int, ...], n_heads: int, want_logits: bool, k: int):
    """Start a row and sample its first chunk: one compiled call does both (a whole row when it is no wider
    than its chunk, `_compile_chunk`). last_row (W, B, C): the embedded codes of the row just finished (zeros
    at row 0)."""
    p = k // 2
    x_rows = torch.cat([x_rows[1:], F.pad(last_row, (0, 0, 0, 0, p, p))[None]])
    hb0, hb1, hb2, v_wins = _v_row(m, x_rows, v_wins, cond_row, fixed, k)
    n, c = x_prev.shape
    zeros = x_prev.new_zeros(n, p, c)
    cols = u.shape[1]
    out = _positions(m, hb0[:cols], [b[:cols] for b in hb1], [b[:cols] for b in hb2], [zeros] * len(hb1), zeros,
                     x_prev, caches, pos0, u, temperature, top_k, blocks, n_heads, want_logits)
    return (x_rows, v_wins, hb0, hb1, hb2) + out


_compiled: dict = {}


def _compiled_fns():
    """torch.compile'd `_first_chunk` and `_positions`, made on first use (Inductor with its C++ wrapper:
    the wrapper's own per-kernel Python overhead is what the small kernels of one position pay most for).
    Every prior shape, batch size, temperature and top_k gets its own graph, so the recompile limit is
    raised to keep a hierarchy (3 levels, a last smaller batch) compiled rather than falling back to eager."""
    import torch._dynamo
    # per thread: a shard's thread (see `sample_compiled`) does not see the main thread's setting
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    if not _compiled:
        opts = dict(fullgraph=True, dynamic=False, options={"cpp_wrapper": True})
        _compiled["first"] = torch.compile(_first_chunk, **opts)
        _compiled["positions"] = torch.compile(_positions, **opts)
    return _compiled["first"], _compiled["positions"]


def sample_compiled(prior: PixelSNAIL, n: int, cond: list[torch.Tensor] | None = None,
                    labels: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                    generator: torch.Generator | None = None, return_logits: bool = False,
                    on_row: RowCallback | None = None):
    """`sample_cached` with each row's work compiled by torch.compile: the same arithmetic (the same codes
    as `sample_reference` up to float rounding, tested), a few times fewer operator calls per position.
    The first call for a prior shape, batch size, temperature and top_k compiles (tens of seconds per
    level on 2 CPU cores, about two minutes for the ffhq256 bottom prior); later calls reuse the graph. Needs a C++ compiler on CPU (Inductor).

    On a CPU with several threads the batch is sampled in shards (`_shards`): it is split into one slice
    per thread, each sampled by its own Python thread with one intra-op thread (a compiled call runs without
    the GIL). Each sample's codes depend only on its own uniforms, conditioning and label, all drawn or
    given before the split, so sharding changes no code beyond float rounding."""
    _check_args(prior, n, temperature, top_k)
    device, cond, labels = _inputs(prior, n, cond, labels)
    cfg = prior.config
    u = _uniforms(n, cfg.height, cfg.width, generator, device)
    with _eval_mode(prior):
        m = _matrices(prior)
        _compiled_fns()  # made here, not raced for by the shards' threads
        row_values = n * cfg.width * cfg.channels
        shards = _shards(device, n)
        run = lambda lo, hi, report: _sample_rows_compiled(  # noqa: E731
            prior, m, prior.cond_features(None if cond is None else [c[lo:hi] for c in cond]),
            None if labels is None else labels[lo:hi], u[lo:hi], temperature, top_k, return_logits, report)
        if len(shards) == 1:
            with _cpu_threads_for(device, row_values):
                return _result(*run(0, n, on_row), return_logits)
        # shard 0 reports the rows (the shards move through the rows together)
        parts = list(_shard_pool(len(shards)).map(lambda i: _in_one_thread(
            run, *shards[i], on_row if i == 0 else None), range(len(shards))))
    codes = torch.cat([p[0] for p in parts])
    logits = torch.cat([p[1] for p in parts]) if return_logits else None
    return _result(codes, logits, return_logits)


def _result(codes, logits, return_logits: bool):
    return (codes, logits) if return_logits else codes


def _shards(device: torch.device, n: int) -> list[tuple[int, int]]:
    """[lo, hi) batch slices: one per CPU thread when the batch has at least two samples per thread;
    otherwise the whole batch. Small priors gain most (their per-position ops are too small for a thread
    pool), but wide ones gain too: the ffhq256 bottom prior at batch 16 on 2 cores took 9.11 s in two shards
    of 8 against 10.86 s in one batch on torch's 2 threads (medians of 4, interleaved; 8.6-9.4 s against
    10.2-11.7 s), its row passes then running side by side on one thread each instead of splitting each
    matrix multiply across the two."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or n < 2 * threads:
        return [(0, n)]
    bounds = [round(i * n / threads) for i in range(threads + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


_POOLS: dict = {}


def _shard_pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="vqvae2-sampler")
    return _POOLS[workers]


def _in_one_thread(fn, *args):
    """fn(*args) in a pool thread with one intra-op thread (OpenMP keeps the count per OS thread), no grad."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return fn(*args)
    finally:
        torch.set_num_threads(threads)


def _sample_rows_compiled(prior: PixelSNAIL, m: dict, cond_feat: torch.Tensor | None, labels: torch.Tensor | None,
                          u: torch.Tensor, temperature: float, top_k: int | None, return_logits: bool,
                          on_row: RowCallback | None):
    """The compiled sampler's row loop over one batch (all of it, or one shard): codes (n, H, W) and the
    logits (n, K, H, W) or None."""
    cfg = prior.config
    n, height, width = u.shape
    c, k = cfg.channels, cfg.kernel_size
    p = k // 2
    device, dt = u.device, m["embed"].dtype
    first, later = _compiled_fns()
    codes = torch.zeros(n, height, width, dtype=torch.long, device=device)
    all_logits = torch.zeros(n, cfg.codebook_size, height, width, device=device) if return_logits else None
    blocks = tuple(len(b.units) for b in prior.blocks)
    chunk = _compile_chunk(sum(blocks))
    cond_rows, fixed = _row_conditioning(prior, m, cond_feat, labels)
    caches = {str(i): (torch.zeros(n, cfg.n_heads, height * width, c // cfg.n_heads, device=device, dtype=dt),
                       torch.zeros(n, cfg.n_heads, height * width, c // cfg.n_heads, device=device, dtype=dt))
              for i, b in enumerate(prior.blocks) if b.attn is not None}
    x_rows = torch.zeros(p, width + 2 * p, n, c, device=device, dtype=dt)
    v_wins = [torch.zeros(p, width + 2 * p, n, c, device=device, dtype=dt) for _ in prior.units]
    last_row = torch.zeros(width, n, c, device=device, dtype=dt)
    x_prev = torch.zeros(n, c, device=device, dtype=dt)
    for r in range(height):
        pos = torch.tensor(r * width, device=device)
        cols = min(chunk, width)
        x_rows, v_wins, hb0, hb1, hb2, row_codes, row_logits, xs, h_wins, x_win, x_prev = first(
            m, x_rows, last_row, v_wins, None if cond_rows is None else cond_rows[r], fixed, caches, x_prev,
            pos, u[:, r, :cols], temperature, top_k, blocks, cfg.n_heads, return_logits, k)
        chunks = [(row_codes, row_logits, xs)]
        for c0 in range(cols, width, chunk):
            c1 = min(c0 + chunk, width)
            out = later(m, hb0[c0:c1], [b[c0:c1] for b in hb1], [b[c0:c1] for b in hb2], h_wins, x_win,
                        x_prev, caches, pos + c0, u[:, r, c0:c1], temperature, top_k, blocks, cfg.n_heads,
                        return_logits)
            chunks.append(out[:3])
            h_wins, x_win, x_prev = out[3:]
        codes[:, r] = torch.cat([ch[0] for ch in chunks], 1)
        if all_logits is not None:
            all_logits[:, :, r] = torch.cat([ch[1] for ch in chunks], 2)
        last_row = torch.cat([ch[2] for ch in chunks])
        if on_row is not None:
            on_row(width)
    return codes, all_logits


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
    samplers = {"cached": sample_cached, "reference": sample_reference, "compiled": sample_compiled}
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
