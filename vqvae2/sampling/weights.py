"""A prior's weights laid out for the incremental samplers: right-hand matrices of matmuls over
channel-last rows. Built once per sampling call (or by the caller, after its last weight update)."""
from __future__ import annotations

import torch
from einops import rearrange

from ..pixelsnail import PixelSNAIL


def _mat(conv: torch.nn.Conv2d) -> torch.Tensor:
    """(Cout, Cin, kh, kw) conv weight -> (kh * kw * Cin, Cout) matrix over a (kh, kw, Cin) window."""
    return rearrange(conv.weight, "o i kh kw -> (kh kw i) o").contiguous()


def _attention(prior: PixelSNAIL) -> dict:
    """Each attention layer's weights (keyed by block index as text, for the compiler's guards), with the
    background part of q/k/v precomputed per position."""
    c = prior.config.channels
    out = {}
    for i, block in enumerate(prior.blocks):
        if block.attn is None:
            continue
        a = block.attn
        out[str(i)] = dict(ln_w=a.norm.weight, ln_b=a.norm.bias, eps=a.norm.eps,
                           w_h=a.qkv.weight[:, :c].t().contiguous(), w_x=a.qkv.weight[:, c:2 * c].t().contiguous(),
                           bg=(prior.background[0] @ a.qkv.weight[:, 2 * c:].t() + a.qkv.bias).contiguous(),  # (HW, 3C)
                           w_out=a.out.weight.t().contiguous(), b_out=a.out.bias)
    return out


class PriorWeights:
    """Every weight the incremental samplers read, taken from `prior` when built: build a new one after
    the prior's weights change. `tensors` is what the row functions take (a dict, so the compiled
    functions guard on plain tensors)."""

    def __init__(self, prior: PixelSNAIL):
        with torch.no_grad():
            units = [dict(v_conv=_mat(u.v_conv), v_conv_b=u.v_conv.bias, v_out=_mat(u.v_out), v_out_b=u.v_out.bias,
                          h_from_v=_mat(u.h_from_v), h_conv=_mat(u.h_conv), h_conv_b=u.h_conv.bias,
                          h_out=_mat(u.h_out), h_out_b=u.h_out.bias) for u in prior.units]
            # every unit's conditioning projection side by side: one matmul per row projects for all units
            cond_proj = torch.cat([_mat(u.cond_proj) for u in prior.units], 1) if prior.config.cond_shapes else None
            self.tensors = dict(
                embed=prior.embed.weight, stem_v=_mat(prior.stem_v), stem_v_b=prior.stem_v.bias,
                stem_h=_mat(prior.stem_h), stem_h_b=prior.stem_h.bias, units=units, attn=_attention(prior),
                cond_proj=cond_proj, head_w=prior.head.weight[:, :, 0, 0].t().contiguous(), head_b=prior.head.bias)
            self.class_embeddings = [u.class_emb.weight for u in prior.units] if prior.config.n_classes else None
        self.config = prior.config
        self._units = prior.units
        self._v_convs = None
        self.blocks = tuple(len(b.units) for b in prior.blocks)  # gated units per block

    @property
    def v_convs(self) -> list[torch.Tensor]:
        """The v stream's convolution weights, channels-last, for wide rows (`rows.v_row`); made on first use."""
        if self._v_convs is None:
            with torch.no_grad():
                self._v_convs = [u.v_conv.weight.contiguous(memory_format=torch.channels_last) for u in self._units]
        return self._v_convs

    def check(self, prior: PixelSNAIL) -> None:
        if prior.config != self.config:
            raise ValueError("these PriorWeights were built from a prior with another configuration")
