"""The one implementation of PixelSNAIL's incremental work: a row's v stream (`v_row`) and a run of
positions of the h stream with attention over a key/value cache (`positions`). The cached sampler runs
these functions as they are; the compiled sampler runs them through torch.compile (`compiled_functions`).

Everything is a matmul on channel-last rows: on CPU a convolution call on a tiny row costs far more in
overhead than in arithmetic. Positions are Python ints when run eagerly (attention reads the filled part
of the cache) and 0-d tensors when compiled (attention reads the whole cache with later positions masked,
so no shape depends on the position and one graph serves every row).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange

from .controls import guided, pick
from .weights import PriorWeights

# positions unrolled into one compiled call (compile time grows with the unrolled length) ...
COMPILE_CHUNK = 8
# ... and at most this many gated units unrolled into one call (positions x units): a deep prior takes
# fewer positions per call (compile time grows with the unrolled graph; docs/sampling.md)
COMPILE_UNIT_STEPS = 64


def compile_chunk(n_units: int) -> int:
    """Positions per compiled call for a prior of `n_units` gated residual units."""
    return max(1, min(COMPILE_CHUNK, COMPILE_UNIT_STEPS // max(n_units, 1)))


def row_chunks(width: int, chunk: int) -> list[tuple[int, int]]:
    """[c0, c1) column ranges of one row, `chunk` columns each (the last may be shorter)."""
    return [(c0, min(c0 + chunk, width)) for c0 in range(0, width, chunk)]


def _row_windows(rows: torch.Tensor, k: int) -> torch.Tensor:
    """(R, W + 2p, B, C) rows -> (W * B, R * k * C): the k-column window of every column."""
    return rearrange(rows.unfold(1, k, 1), "r w b c k -> (w b) (r k c)")


def row_conditioning(w: PriorWeights, cond_feat: torch.Tensor | None, labels: torch.Tensor | None):
    """What the v stream adds per row that no code decides: the higher levels' features channel-last per
    row ((H, W * B, cond channels) or None; projected one row at a time by `v_row`, as all rows at once
    would hold H x W x B x 4C x units values) and each unit's class embedding per column ([(W * B, 4C)])."""
    width = w.config.width
    cond_rows = None if cond_feat is None else rearrange(cond_feat, "b c h w -> h (w b) c").contiguous()
    fixed = None if w.class_embeddings is None else [e[labels].repeat(width, 1) for e in w.class_embeddings]
    return cond_rows, fixed


def v_row(m: dict, x_rows: torch.Tensor, v_wins: list[torch.Tensor], cond_row: torch.Tensor | None,
          fixed: list[torch.Tensor] | None, k: int, *, v_convs: list[torch.Tensor] | None = None):
    """The v stream of one row. x_rows (p, W + 2p, B, C): embedded codes of the p rows above; v_wins[i]:
    silu of unit i's v input on those rows; cond_row (W * B, cond channels). With `v_convs` the units'
    down-shifted convolutions run as convolutions (faster than the window matmul on wide rows).
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


def attend(a: dict, cache: tuple[torch.Tensor, torch.Tensor], h: torch.Tensor, x_prev: torch.Tensor,
           pos: int | torch.Tensor, n_heads: int) -> torch.Tensor:
    """One query of causal attention at raster position `pos`: writes its key and value into the cache
    ((B, heads, HW, d) each) and attends over positions <= pos."""
    n, c = h.shape
    d = c // n_heads
    kc, vc = cache
    x = F.layer_norm(h, (c,), a["ln_w"], a["ln_b"], a["eps"])
    eager = isinstance(pos, int)
    bg = a["bg"][pos] if eager else a["bg"].index_select(0, pos.view(1))[0]
    qkv = torch.addmm(torch.addmm(bg, x, a["w_h"]), x_prev, a["w_x"]).view(n, 3, n_heads, d)
    if eager:
        kc[:, :, pos], vc[:, :, pos] = qkv[:, 1], qkv[:, 2]
        keys, values = kc[:, :, :pos + 1], vc[:, :, :pos + 1]
    else:
        kc.index_copy_(2, pos.view(1), qkv[:, 1, :, None])
        vc.index_copy_(2, pos.view(1), qkv[:, 2, :, None])
        keys, values = kc, vc
    scores = (qkv[:, 0, :, None] @ keys.transpose(-1, -2)) * d ** -0.5  # (B, heads, 1, keys)
    if not eager:
        scores = scores.masked_fill(torch.arange(kc.shape[2], device=h.device) > pos, float("-inf"))
    o = scores.softmax(-1) @ values
    return h + torch.addmm(a["b_out"], o.reshape(n, c), a["w_out"])


def positions(m: dict, hb0, hb1, hb2, h_wins: list[torch.Tensor], x_win: torch.Tensor, x_prev: torch.Tensor,
              caches: dict, pos0: int | torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None,
              top_p: float | None, guidance: float | None, blocks: tuple[int, ...], n_heads: int, want_logits: bool):
    """Sample len(hb0) consecutive positions of one row from raster position pos0. h_wins[i]: silu of unit
    i's h input at the p columns before, x_win the embedded codes there (both (B, p * C), oldest first);
    x_prev: the embedded code just before. With `guidance` the batch holds every sample twice, with its label
    and with "no label": the logits are combined (`guided`) and the code picked is fed to both copies.
    Returns codes (B, n_cols), logits (B, K, n_cols) or None, embedded codes (n_cols, B, C) and the carried
    h_wins, x_win, x_prev."""
    n, c = x_prev.shape
    h_wins = list(h_wins)
    codes, logits, xs = [], [], []
    for j in range(hb0.shape[0]):
        h = torch.addmm(hb0[j], x_win, m["stem_h"])
        i = 0
        for b, n_units in enumerate(blocks):
            for _ in range(n_units):
                u_ = m["units"][i]
                win = torch.cat([h_wins[i], F.silu(h)], 1)  # silu(h) of the last p columns and this one
                h_wins[i] = win[:, c:]
                a = F.silu(torch.addmm(hb1[i][j], win, u_["h_conv"]))
                h = h + F.glu(torch.addmm(hb2[i][j], a, u_["h_out"]), dim=-1)
                i += 1
            if str(b) in caches:
                h = attend(m["attn"][str(b)], caches[str(b)], h, x_prev, pos0 + j, n_heads)
        logit = torch.addmm(m["head_b"], F.silu(h), m["head_w"])
        if guidance is not None:
            logit = guided(logit, guidance)
        code = pick(logit, u[:, j], temperature, top_k, top_p)
        x_prev = m["embed"][code if guidance is None else torch.cat([code, code])]
        x_win = torch.cat([x_win[:, c:], x_prev], 1)
        codes.append(code)
        logits.append(logit)
        xs.append(x_prev)
    return (torch.stack(codes, 1), torch.stack(logits, 2) if want_logits else None, torch.stack(xs), h_wins, x_win,
            x_prev)


def first_chunk(m, x_rows, last_row, v_wins, cond_row, fixed, caches, x_prev, pos0, u, temperature: float,
                top_k: int | None, top_p: float | None, guidance: float | None, blocks: tuple[int, ...], n_heads: int,
                want_logits: bool, k: int, v_convs: list[torch.Tensor] | None = None):
    """Start a row (its v stream) and sample its first u.shape[1] positions: one call, so a compiled row no
    wider than its chunk is one compiled call. last_row (W, B, C): the embedded codes of the row just
    finished (zeros at row 0)."""
    p = k // 2
    x_rows = torch.cat([x_rows[1:], F.pad(last_row, (0, 0, 0, 0, p, p))[None]])
    hb0, hb1, hb2, v_wins = v_row(m, x_rows, v_wins, cond_row, fixed, k, v_convs=v_convs)
    n, c = x_prev.shape
    zeros = x_prev.new_zeros(n, p * c)
    cols = u.shape[1]
    out = positions(m, hb0[:cols], [b[:cols] for b in hb1], [b[:cols] for b in hb2], [zeros] * len(hb1), zeros,
                    x_prev, caches, pos0, u, temperature, top_k, top_p, guidance, blocks, n_heads, want_logits)
    return (x_rows, v_wins, hb0, hb1, hb2) + out


@functools.cache
def compiled_functions():
    """torch.compile'd `first_chunk` and `positions`, made on first use (Inductor with its C++ wrapper, whose
    per-kernel overhead is lower than the Python wrapper's for the small kernels of one position)."""
    opts = dict(fullgraph=True, dynamic=False, options={"cpp_wrapper": True})
    return torch.compile(first_chunk, **opts), torch.compile(positions, **opts)


def sample_rows(w: PriorWeights, cond_feat: torch.Tensor | None, labels: torch.Tensor | None, u: torch.Tensor,
                temperature: float, top_k: int | None, top_p: float | None, return_logits: bool, on_row, *,
                compiled: bool, v_convs: bool = False, guidance: float | None = None):
    """Codes (n, H, W) and logits (n, K, H, W) or None for the batch of uniforms `u`, row by row: eagerly
    (one call per row) or through the compiled functions (rows in chunks of `compile_chunk` positions).
    With `guidance`, each sample runs twice, with its label and with the "no label" class (index n_classes)."""
    cfg, m = w.config, w.tensors
    samples, height, width = u.shape
    if guidance is not None:  # one batch of twice the samples: the cost is one extra half, not a second pass
        cond_feat = None if cond_feat is None else torch.cat([cond_feat, cond_feat])
        labels = torch.cat([labels, torch.full_like(labels, cfg.n_classes)])
    n = samples if guidance is None else 2 * samples
    c, k, p, nh = cfg.channels, cfg.kernel_size, cfg.kernel_size // 2, cfg.n_heads
    device, dt = u.device, m["embed"].dtype
    first, later = compiled_functions() if compiled else (first_chunk, positions)
    chunks = row_chunks(width, compile_chunk(sum(w.blocks)) if compiled else width)
    extra = {} if compiled else {"v_convs": w.v_convs if v_convs else None}
    codes = torch.zeros(samples, height, width, dtype=torch.long, device=device)
    all_logits = torch.zeros(samples, cfg.codebook_size, height, width, device=device) if return_logits else None
    cond_rows, fixed = row_conditioning(w, cond_feat, labels)
    caches = {key: (torch.zeros(n, nh, height * width, c // nh, device=device, dtype=dt),
                    torch.zeros(n, nh, height * width, c // nh, device=device, dtype=dt)) for key in m["attn"]}
    x_rows = torch.zeros(p, width + 2 * p, n, c, device=device, dtype=dt)
    v_wins = [torch.zeros(p, width + 2 * p, n, c, device=device, dtype=dt) for _ in m["units"]]
    last_row = torch.zeros(width, n, c, device=device, dtype=dt)
    x_prev = torch.zeros(n, c, device=device, dtype=dt)
    for r in range(height):
        pos = torch.tensor(r * width, device=device) if compiled else r * width
        (c0, c1), rest = chunks[0], chunks[1:]
        x_rows, v_wins, hb0, hb1, hb2, *out, h_wins, x_win, x_prev = first(
            m, x_rows, last_row, v_wins, None if cond_rows is None else cond_rows[r], fixed, caches, x_prev,
            pos, u[:, r, c0:c1], temperature, top_k, top_p, guidance, w.blocks, nh, return_logits, k, **extra)
        parts = [out]
        for c0, c1 in rest:
            *out, h_wins, x_win, x_prev = later(m, hb0[c0:c1], [b[c0:c1] for b in hb1], [b[c0:c1] for b in hb2],
                                                h_wins, x_win, x_prev, caches, pos + c0, u[:, r, c0:c1],
                                                temperature, top_k, top_p, guidance, w.blocks, nh, return_logits)
            parts.append(out)
        codes[:, r] = torch.cat([part[0] for part in parts], 1)
        if all_logits is not None:
            all_logits[:, :, r] = torch.cat([part[1] for part in parts], 2)
        last_row = torch.cat([part[2] for part in parts])
        if on_row is not None:
            on_row(width)
    return codes, all_logits
