"""VQVAE2: a hierarchical VQ-VAE with any number of levels (Razavi et al. 2019).

Encoders run bottom-up (image -> bottom features -> ... -> top features). Quantisation runs
top-down: the top level quantises its encoder features; every lower level quantises its own
encoder features concatenated with features decoded from all the levels above it. The image
decoder reads the bottom codes together with those decoded features, so decoding needs only codes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import VQVAEConfig
from .pretrained import PretrainedMixin
from .quantize import QuantizerStats, build_quantizer


class ResBlock(nn.Module):
    def __init__(self, channels: int, res_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, res_channels, 3, padding=1),
            nn.ReLU(), nn.Conv2d(res_channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Encoder(nn.Module):
    """Downsamples by `stride` (a power of two) with 4x4 stride-2 convs, then residual blocks."""

    def __init__(self, in_ch: int, channels: int, res_channels: int, n_res: int, stride: int):
        super().__init__()
        n_down = int(math.log2(stride))
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(n_down):
            out = channels if i == n_down - 1 else channels // 2
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.ReLU()]
            ch = out
        layers.append(nn.Conv2d(ch, channels, 3, padding=1))
        layers += [ResBlock(channels, res_channels) for _ in range(n_res)]
        layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Residual blocks, then upsamples by `stride` with 4x4 stride-2 transposed convs."""

    def __init__(self, in_ch: int, out_ch: int, channels: int, res_channels: int, n_res: int, stride: int):
        super().__init__()
        n_up = int(math.log2(stride))
        layers: list[nn.Module] = [nn.Conv2d(in_ch, channels, 3, padding=1)]
        layers += [ResBlock(channels, res_channels) for _ in range(n_res)]
        layers.append(nn.ReLU())
        ch = channels
        for i in range(n_up):
            last = i == n_up - 1
            out = out_ch if last else channels // 2
            layers.append(nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            ch = out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class VQVAEOutput:
    recon: torch.Tensor  # (B, C, H, W)
    codes: list[torch.Tensor]  # per level, top first, (B, h, w) int64
    latent_loss: torch.Tensor  # sum over levels of beta * ||z - sg(e)||^2 (+ ||sg(z) - e||^2, codebook_loss)
    stats: list[QuantizerStats]  # per level, top first


class VQVAE2(nn.Module, PretrainedMixin):
    config_class = VQVAEConfig
    model_type = "vqvae2"

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = c = config
        n = c.n_levels
        # encoders[i] produces level i's features (level 0 = top); the bottom one reads the image
        self.encoders = nn.ModuleList(
            Encoder(c.in_channels if i == n - 1 else c.channels, c.channels, c.res_channels, c.n_res_blocks, c.strides[i])
            for i in range(n)
        )
        # updecoders[i] (i >= 1) decode everything known from the levels above to level i's grid
        self.updecoders = nn.ModuleList(
            Decoder(c.embed_dim if i == 1 else 2 * c.embed_dim, c.embed_dim, c.channels, c.res_channels,
                    c.n_res_blocks, c.strides[i - 1]) if i > 0 else nn.Identity()
            for i in range(n)
        )
        self.pre_quant = nn.ModuleList(
            nn.Conv2d(c.channels + (c.embed_dim if i > 0 else 0), c.embed_dim, 1) for i in range(n)
        )
        self.quantizers = nn.ModuleList(
            build_quantizer(c.quantizer, c.codebook_size, c.embed_dim, decay=c.decay, eps=c.eps, beta=c.beta,
                            dead_code_threshold=c.dead_code_threshold, init=c.init)
            for _ in range(n)
        )
        self.decoder = Decoder(c.embed_dim if n == 1 else 2 * c.embed_dim, c.in_channels, c.channels,
                               c.res_channels, c.n_res_blocks, c.strides[-1])

    # activation checkpointing (a memory saver): encoders and decoders recompute their activations in the
    # backward pass; the quantizers never run twice (their EMA update must happen once per step)
    checkpointing: bool = False

    @property
    def levels(self) -> list[str]:
        return self.config.levels

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def _encode_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [], x
        for enc in reversed(self.encoders):  # bottom-up
            h = self._run(enc, h)
            feats.append(h)
        return feats[::-1]  # top first

    def _top_down(self, feats: list[torch.Tensor] | None, codes: list[torch.Tensor] | None):
        """Runs the levels top-down, quantising `feats` or looking up `codes`. Returns the decoder
        input and, when quantising, the codes, latent loss and stats per level."""
        out_codes, stats, latent_loss = [], [], 0.0
        h = None  # everything known so far, at the current level's grid
        for i in range(self.config.n_levels):
            cond = self._run(self.updecoders[i], h) if i > 0 else None  # (B, D, h_i, w_i)
            if feats is not None:
                z = feats[i] if cond is None else torch.cat([feats[i], cond], 1)
                q, c, loss, s = self.quantizers[i](self.pre_quant[i](z))
                if cond is not None and self.training and self.config.level_dropout > 0:
                    # training only: this level's code vectors are hidden from the decoder for some samples,
                    # which must then be drawn from the levels above; a hierarchy whose lower levels see
                    # everything otherwise leaves the top unused (perplexity ~6 on 128-px faces). The
                    # quantizer itself always sees the real features, so no code serves dropped samples only.
                    keep = torch.rand(q.shape[0], 1, 1, 1, device=q.device) >= self.config.level_dropout
                    q = q * keep.to(q.dtype)
                out_codes.append(c)
                stats.append(s)
                latent_loss = latent_loss + loss
            else:
                q = self.quantizers[i].lookup(codes[i]).to(cond.dtype if cond is not None else torch.float32)
            h = q if cond is None else torch.cat([q, cond], 1)
        return h, out_codes, latent_loss, stats

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        self._check_images(x)
        h, codes, latent_loss, stats = self._top_down(self._encode_features(x), None)
        return VQVAEOutput(self._run(self.decoder, h), codes, latent_loss, stats)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> codes per level, top first, each (B, h, w) int64."""
        self._check_images(x)
        was_training = self.training
        self.eval()
        try:
            return self._top_down(self._encode_features(x), None)[1]
        finally:
            self.train(was_training)

    def decode_codes(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Codes per level (top first) -> images (B, C, H, W), roughly in [-1, 1]."""
        sizes = self.config.grid_sizes()
        if len(codes) != len(sizes):
            raise ValueError(f"decode_codes needs {len(sizes)} levels of codes ({self.levels}), got {len(codes)}")
        for name, c, s in zip(self.levels, codes, sizes):
            if c.dim() != 3 or tuple(c.shape[1:]) != (s, s):
                raise ValueError(f"codes of level {name!r} must have shape (B, {s}, {s}), got {tuple(c.shape)}")
        h, *_ = self._top_down(None, [c.long() for c in codes])
        return self.decoder(h)

    def _check_images(self, x: torch.Tensor) -> None:
        c = self.config
        if x.dim() != 4 or x.shape[1] != c.in_channels or x.shape[2] != c.image_size or x.shape[3] != c.image_size:
            raise ValueError(f"VQVAE2 expects images of shape (B, {c.in_channels}, {c.image_size}, {c.image_size}), "
                             f"got {tuple(x.shape)}")
