"""PixelSNAIL prior over the codes of one VQ-VAE-2 level.

Two causal streams, as in gated PixelCNN, so there is no blind spot:
  v ("vertical") sees only the rows strictly above a position (all columns within reach);
  h ("horizontal") sees the positions strictly left of it in its row, plus v at the same position.
So h at (r, c) depends on the input codes at raster positions < (r, c) only, never on (r, c) itself.
Causal self-attention reads and writes h. Its input at p is h at p plus the embedded code at p - 1
(raster order), both strictly causal, so a query at p may attend to keys at positions <= p (a plain
lower-triangular mask, never an empty row) and reaches every earlier code.

Activations are SiLU rather than PixelCNN++'s ELU: faster on CPU (benchmarks/results/kernels.json) and, like
ELU, zero at zero, so zero padding commutes with the activation.

The v stream never depends on the current row, so a sampler can compute a whole row of it at
once; h needs one step per position. `vqvae2.sampling.sample_cached` relies on this layout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import PixelSNAILConfig
from .pretrained import PretrainedMixin


# causal convolutions

class DownShiftedConv(nn.Conv2d):
    """Conv whose output at row r sees input rows r-kh+1-shift .. r-shift, columns c-kw//2 .. c+kw//2."""

    def __init__(self, cin: int, cout: int, kh: int, kw: int, shift: int = 0, bias: bool = True):
        super().__init__(cin, cout, (kh, kw), bias=bias)
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        height = x.shape[-2]
        x = F.pad(x, (kw // 2, kw // 2, kh - 1 + self.shift, 0))[..., :height + kh - 1, :]
        return super().forward(x)


class RightShiftedConv(nn.Conv2d):
    """Conv (1 x kw) whose output at column c sees input columns c-kw+1-shift .. c-shift of the same row."""

    def __init__(self, cin: int, cout: int, kw: int, shift: int = 0, bias: bool = True):
        super().__init__(cin, cout, (1, kw), bias=bias)
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kw = self.kernel_size[1]
        width = x.shape[-1]
        x = F.pad(x, (kw - 1 + self.shift, 0))[..., :width + kw - 1]
        return super().forward(x)


def conv1x1(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


# dropout with one cheap mask

class _ScaleMask(torch.autograd.Function):
    """x * m where m is 0 or 1 / (1 - p) per element: the mask is one uniform fp32 draw kept in x's dtype,
    and the backward one product; faster than nn.Dropout on CPU (benchmarks/results/kernels.json). In bf16
    the kept scale is 1 / (1 - p) rounded to bf16, a train/eval mismatch far below dropout's own."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        scale = torch.rand_like(x, dtype=torch.float32).ge_(p).to(x.dtype).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scale,) = ctx.saved_tensors
        return grad * scale, None


class Dropout(nn.Module):
    """nn.Dropout's semantics (identity in eval mode or at p = 0) with a cheaper mask; the draws come
    from torch's global generator, so a resumed run or a checkpointed recompute sees the same masks."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return _ScaleMask.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# gated residual unit over both streams

def gate(x: torch.Tensor) -> torch.Tensor:
    """F.glu(x, dim=1), written out as a * sigmoid(b): the same values, and on the channels-last tensors the
    priors train in a cheaper backward (benchmarks/results/kernels.json). The samplers keep F.glu (no backward)."""
    a, b = x.chunk(2, dim=1)
    return a * torch.sigmoid(b)


class GatedResidual(nn.Module):
    """v += glu(1x1(drop(silu(down_conv(silu(v))))) + extra_v)
    h += glu(1x1(drop(silu(right_conv(silu(h)) + 1x1(silu(v))))) + extra_h)
    where extra holds the class embedding and the projected higher-level conditioning."""

    def __init__(self, channels: int, kernel_size: int, dropout: float, n_classes: int, cond_in: int):
        """n_classes counts the "no label" class of a prior trained with label dropout."""
        super().__init__()
        c, k = channels, kernel_size
        self.v_conv = DownShiftedConv(c, c, k // 2 + 1, k)
        self.v_out = conv1x1(c, 2 * c)
        self.h_conv = RightShiftedConv(c, c, k // 2 + 1)
        self.h_from_v = conv1x1(c, c, bias=False)
        self.h_out = conv1x1(c, 2 * c)
        self.drop = Dropout(dropout)
        self.class_emb = nn.Embedding(n_classes, 4 * c) if n_classes else None
        self.cond_proj = conv1x1(cond_in, 4 * c, bias=False) if cond_in else None

    def extra(self, cond_feat: torch.Tensor | None, labels: torch.Tensor | None):
        """(B, 4C, H, W) or (B, 4C, 1, 1) bias added before the gates (v half first), or None."""
        out = None
        if self.class_emb is not None:
            out = self.class_emb(labels)[:, :, None, None]
        if self.cond_proj is not None:
            proj = self.cond_proj(cond_feat)
            out = proj if out is None else proj + out
        return out

    def forward(self, v, h, cond_feat=None, labels=None):
        extra = self.extra(cond_feat, labels)
        # the stream's dtype (bf16 under autocast): embeddings come out fp32 and would promote the sums
        ev, eh = (None, None) if extra is None else extra.to(v.dtype).chunk(2, dim=1)
        a = self.drop(F.silu(self.v_conv(F.silu(v))))
        b = self.v_out(a)
        v = v + gate(b if ev is None else b + ev)
        a = self.drop(F.silu(self.h_conv(F.silu(h)) + self.h_from_v(F.silu(v))))
        b = self.h_out(a)
        h = h + gate(b if eh is None else b + eh)
        return v, h


# causal self-attention on the h stream

def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v over (B, heads, L, d). torch's fused CPU kernel serves fp32, but
    its bf16 backward is slower than plain batched matmuls on code grids (benchmarks/results/kernels.json): in bf16 on CPU
    the scale is folded into q and the mask added as a bias inside the first product (baddbmm)."""
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    *batch, L, d = q.shape
    bias = torch.full((L, L), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
    scores = torch.baddbmm(bias.expand(q[..., 0, 0].numel(), L, L), (q * d ** -0.5).reshape(-1, L, d),
                           k.reshape(-1, L, d).transpose(-1, -2))
    return (scores.softmax(-1) @ v.reshape(-1, L, d)).view(*batch, L, d)


class CausalAttention(nn.Module):
    """Multi-head attention over raster order; the input at p is LayerNorm(h), the embedded code at
    p - 1 and 2 background channels (row and column coordinates in [-1, 1])."""

    def __init__(self, channels: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(2 * channels + 2, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, h: torch.Tensor, x_prev: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        """h (B, C, H, W); x_prev (B, H*W, C) embedded codes shifted by one in raster order."""
        b, _, height, width = h.shape
        x = self.norm(rearrange(h, "b c h w -> b (h w) c"))
        x = torch.cat([x, x_prev.to(x.dtype), background.to(x.dtype).expand(b, -1, -1)], dim=-1)
        q, k, v = rearrange(self.qkv(x), "b n (three nh d) -> three b nh n d", three=3, nh=self.n_heads)
        # the input at p is strictly causal, so attending to keys <= p leaks nothing
        o = causal_attention(q, k, v)
        o = self.out(rearrange(o, "b nh n d -> b n (nh d)"))
        return h + rearrange(o, "b (h w) c -> b c h w", h=height, w=width)


# non-causal conditioning stack for one higher level

class CondResidual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = conv1x1(channels, channels)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class CondStack(nn.Module):
    """Embeds one higher level's codes, runs non-causal residual convs over them at their own grid
    size, and upsamples by `factor` (fh, fw) to the prior's grid: nearest, or `learned` (each of the
    fh x fw positions a code covers gets its own linear map of the feature: a stride-f transposed conv)."""

    def __init__(self, codebook_size: int, channels: int, n_res: int, factor: tuple[int, int] = (1, 1),
                 learned: bool = False):
        super().__init__()
        self.embed = nn.Embedding(codebook_size, channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.res = nn.Sequential(*[CondResidual(channels) for _ in range(n_res)])
        self.factor = factor
        self.up = nn.ConvTranspose2d(channels, channels, factor, stride=factor) if learned else None

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.res(self.conv(rearrange(self.embed(codes), "b h w c -> b c h w")))
        if self.up is not None:
            return self.up(F.silu(x))
        fh, fw = self.factor
        return x.repeat_interleave(fh, dim=2).repeat_interleave(fw, dim=3)  # nearest upsampling


class PixelSNAILBlock(nn.Module):
    def __init__(self, cfg: PixelSNAILConfig, attention: bool, cond_in: int):
        super().__init__()
        self.units = nn.ModuleList(
            GatedResidual(cfg.channels, cfg.kernel_size, cfg.dropout, cfg.n_classes + (cfg.label_dropout > 0), cond_in)
            for _ in range(cfg.n_res_per_block))
        self.attn = CausalAttention(cfg.channels, cfg.n_heads) if attention else None


class PixelSNAIL(nn.Module, PretrainedMixin):
    """forward(codes (B, H, W), cond=[codes of each level above, top first], labels (B,)) -> logits (B, K, H, W)."""

    config_class = PixelSNAILConfig
    model_type = "pixelsnail"
    # activation checkpointing (a memory saver): each gated unit and attention layer recomputes its
    # activations in the backward pass, with the same dropout masks (checkpoint restores the RNG state)
    checkpointing: bool = False

    def __init__(self, config: PixelSNAILConfig):
        super().__init__()
        self.config = cfg = config
        c, k = cfg.channels, cfg.kernel_size
        self.embed = nn.Embedding(cfg.codebook_size, c)
        self.stem_v = DownShiftedConv(c, c, k // 2, k, shift=1)  # rows r-k//2 .. r-1
        self.stem_h = RightShiftedConv(c, c, k // 2, shift=1)  # columns c-k//2 .. c-1
        self.cond_stacks = nn.ModuleList(
            CondStack(kc, cfg.cond_channels, cfg.n_cond_res, (cfg.height // h, cfg.width // w),
                      learned=cfg.cond_upsample == "learned")
            for kc, h, w in cfg.cond_shapes)
        cond_in = cfg.cond_channels * len(cfg.cond_shapes)
        self.blocks = nn.ModuleList(
            PixelSNAILBlock(cfg, i in cfg.attention_blocks, cond_in) for i in range(cfg.n_blocks))
        self.head = conv1x1(c, cfg.codebook_size)
        rows = (torch.arange(cfg.height) + 0.5) / cfg.height * 2 - 1
        cols = (torch.arange(cfg.width) + 0.5) / cfg.width * 2 - 1
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)  # (H, W, 2)
        self.register_buffer("background", rearrange(grid, "h w two -> 1 (h w) two"), persistent=False)

    @property
    def null_label(self) -> int | None:
        """The "no label" class (classifier-free guidance), or None when the prior was trained without one."""
        return self.config.n_classes if self.config.label_dropout > 0 else None

    @property
    def units(self) -> list[GatedResidual]:
        return [u for block in self.blocks for u in block.units]

    def check_inputs(self, codes, cond=None, labels=None) -> None:
        """Raise a ValueError saying what is wrong with the inputs of forward / the samplers."""
        cfg = self.config
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (cfg.height, cfg.width):
            raise ValueError(f"PixelSNAIL expects codes of shape (B, {cfg.height}, {cfg.width}), got {tuple(codes.shape)}")
        self._check_codes(codes, cfg.codebook_size, "codes")
        n = codes.shape[0]
        if cfg.cond_shapes:
            if cond is None or len(cond) != len(cfg.cond_shapes):
                got = "none" if cond is None else f"{len(cond)} levels"
                raise ValueError(f"this prior is conditioned on {len(cfg.cond_shapes)} higher level(s) "
                                 f"(cond_shapes {cfg.cond_shapes}), got {got}: pass cond=[codes of each level above, top first]")
            for i, ((kc, h, w), cc) in enumerate(zip(cfg.cond_shapes, cond)):
                if tuple(cc.shape) != (n, h, w):
                    raise ValueError(f"cond[{i}] must have shape ({n}, {h}, {w}), got {tuple(cc.shape)}")
                self._check_codes(cc, kc, f"cond[{i}]")
        elif cond:
            raise ValueError("this prior has no higher-level conditioning (cond_shapes is empty) but cond was given")
        if cfg.n_classes:
            if labels is None:
                raise ValueError(f"this prior is class-conditional (n_classes={cfg.n_classes}): pass labels of shape ({n},)")
            if tuple(labels.shape) != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
            self._check_codes(labels, cfg.n_classes + (self.null_label is not None), "labels (class indices)")
        elif labels is not None:
            raise ValueError("this prior is unconditional (n_classes=0) but labels were given")

    @staticmethod
    def _check_codes(x: torch.Tensor, upper: int, name: str) -> None:
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= upper):
            raise ValueError(f"{name} must lie in [0, {upper}), got values in [{int(x.min())}, {int(x.max())}]")

    def cond_features(self, cond: list[torch.Tensor] | None) -> torch.Tensor | None:
        """(B, cond_channels * n_levels_above, H, W): every higher level through its stack, upsampled."""
        if not self.cond_stacks:
            return None
        return torch.cat([stack(cc.long()) for stack, cc in zip(self.cond_stacks, cond)], dim=1)

    def forward(self, codes: torch.Tensor, cond: list[torch.Tensor] | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(codes, cond, labels)
        labels = None if labels is None else labels.long()
        if self.training and self.null_label is not None:  # classifier-free guidance: drop labels in training
            drop = torch.rand(labels.shape, device=labels.device) < self.config.label_dropout
            labels = labels.masked_fill(drop, self.null_label)
        cond_feat = self.cond_features(cond)
        x = rearrange(self.embed(codes.long()), "b h w c -> b c h w")
        v = self.stem_v(x)
        h = self.stem_h(x) + v
        x_prev = F.pad(rearrange(x, "b c h w -> b (h w) c"), (0, 0, 1, 0))[:, :-1]  # code at p - 1
        ckpt = self.checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            for unit in block.units:
                v, h = checkpoint(unit, v, h, cond_feat, labels, use_reentrant=False) if ckpt else \
                    unit(v, h, cond_feat, labels)
            if block.attn is not None:
                h = checkpoint(block.attn, h, x_prev, self.background, use_reentrant=False) if ckpt else \
                    block.attn(h, x_prev, self.background)
        return self.head(F.silu(h))  # (B, K, H, W) logits
