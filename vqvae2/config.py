"""Dataclass configs of the models, with strict loading from plain dicts (JSON/TOML)."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Type, TypeVar

T = TypeVar("T")


def level_names(n_levels: int) -> list[str]:
    """Names of the levels, top (coarsest) first: top/bottom, top/middle/bottom, level0..levelN."""
    if n_levels < 1:
        raise ValueError(f"a VQ-VAE needs at least one level, got {n_levels}")
    if n_levels == 1:
        return ["bottom"]
    if n_levels == 2:
        return ["top", "bottom"]
    if n_levels == 3:
        return ["top", "middle", "bottom"]
    return [f"level{i}" for i in range(n_levels)]


def unknown_key_error(key: str, valid: list[str], where: str) -> ValueError:
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return ValueError(f"unknown key '{where}{key}'{hint} (valid keys: {', '.join(sorted(valid))})")


def _coerce(value: Any, type_name: str, key: str) -> Any:
    """Checks a JSON/TOML value against a field's annotation (as a string); ints are accepted as floats."""
    t = type_name.replace(" ", "")
    if t.endswith("|None"):
        if value is None:
            return None
        t = t[: -len("|None")]
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }
    if "|" in t:  # a union such as float|list[float]: the first alternative the value fits
        alts = t.split("|")
        for alt in alts:
            try:
                return _coerce(value, alt, key)
            except ValueError:
                pass
        raise ValueError(f"{key} must be {' or '.join(alts)}, got {value!r}")
    if t in ok:
        if not ok[t](value):
            raise ValueError(f"{key} must be {'an' if t == 'int' else 'a'} {t}, got {value!r}")
        return float(value) if t == "float" else value
    if t.startswith("list") and not isinstance(value, (list, tuple)):
        raise ValueError(f"{key} must be a list, got {value!r}")
    if t.startswith("dict") and not isinstance(value, dict):
        raise ValueError(f"{key} must be a table, got {value!r}")
    return list(value) if t.startswith("list") else value


def from_dict(cls: Type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from `data`: unknown keys are an error naming the nearest valid keys,
    and a value of the wrong type an error naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(key, list(fields), where)
        ftype = fields[key].type if isinstance(fields[key].type, str) else getattr(fields[key].type, "__name__", "")
        kwargs[key] = _coerce(value, ftype, f"{where}{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


# a sampling seed s draws batch b from torch.Generator().manual_seed(s * SEED_STRIDE + b), a signed 64-bit
# seed: the largest s leaves room for 2**32 batches and for the offsets stages add to a configured seed
SEED_STRIDE = 1_000_003
SAMPLE_SEED_MAX = (2 ** 63 - 1 - 2 ** 32) // SEED_STRIDE - 2 ** 20


@dataclass
class VQVAEConfig:
    """A hierarchical VQ-VAE. `strides` lists each level's downsampling factor, top first:
    the bottom level downsamples the image by strides[-1], each level above downsamples the
    level below it by its own stride. [4, 2] with 256-px images gives 32x32 top, 64x64 bottom codes."""

    in_channels: int = 3
    image_size: int = 32
    channels: int = 128  # hidden width of the encoders and decoders
    res_channels: int = 64  # bottleneck width inside residual blocks
    n_res_blocks: int = 2
    embed_dim: int = 64  # dimension of a code vector
    codebook_size: int = 512  # codes per level (stored as uint16 on disk)
    strides: list[int] = field(default_factory=lambda: [2, 4])
    beta: float = 0.25  # commitment cost
    decay: float = 0.99  # EMA decay of the codebooks
    eps: float = 1e-5  # Laplace smoothing of the EMA counts
    dead_code_threshold: float = 1.0  # EMA count below which a code is restarted
    init: str = "kmeans"  # data-dependent codebook init: "kmeans", "sample" or "none"
    quantizer: str = "ema"  # "ema" (VQ-VAE-2) or "codebook_loss" (VQ-VAE 2017: codebook trained by gradient)
    level_dropout: float = 0.0  # training: probability that a lower level's code vectors are hidden from the decoder

    def __post_init__(self) -> None:
        self.strides = [int(s) for s in self.strides]
        for name in ("in_channels", "image_size", "channels", "res_channels", "n_res_blocks", "embed_dim"):
            _check(getattr(self, name) >= 1, f"vqvae.{name} must be >= 1, got {getattr(self, name)}")
        _check(2 <= self.codebook_size <= 65535,
               f"vqvae.codebook_size must be in [2, 65535] (codes are stored as uint16), got {self.codebook_size}")
        _check(len(self.strides) >= 1, "vqvae.strides needs at least one level")
        for s in self.strides:
            _check(s >= 2 and (s & (s - 1)) == 0, f"vqvae.strides must be powers of two >= 2, got {self.strides}")
        total = 1
        for s in self.strides:
            total *= s
        _check(self.image_size % total == 0,
               f"vqvae.strides {self.strides} (total downsampling {total}) do not divide "
               f"vqvae.image_size {self.image_size}")
        _check(0.0 < self.decay < 1.0, f"vqvae.decay must be in (0, 1), got {self.decay}")
        _check(self.beta >= 0, f"vqvae.beta must be >= 0, got {self.beta}")
        _check(self.init in ("kmeans", "sample", "none"),
               f"vqvae.init must be 'kmeans', 'sample' or 'none', got {self.init!r}")
        _check(0.0 <= self.level_dropout < 1.0, f"vqvae.level_dropout must be in [0, 1), got {self.level_dropout}")
        _check(self.quantizer in ("ema", "codebook_loss"),
               f"vqvae.quantizer must be 'ema' or 'codebook_loss', got {self.quantizer!r}")

    @property
    def n_levels(self) -> int:
        return len(self.strides)

    @property
    def levels(self) -> list[str]:
        return level_names(self.n_levels)

    def grid_sizes(self) -> list[int]:
        """Side of each level's code grid, top first."""
        sizes, size = [], self.image_size
        for s in reversed(self.strides):
            size //= s
            sizes.append(size)
        return sizes[::-1]


@dataclass
class PixelSNAILConfig:
    """A PixelSNAIL prior over the (height, width) code grid of one level. `cond_shapes` lists
    [codebook_size, h, w] of every level above this one, top first (empty for the top prior);
    their grids must be smaller than this one by power-of-two factors. `attention_blocks` names
    the blocks (0-based) that end with causal self-attention."""

    codebook_size: int = 512
    height: int = 8
    width: int = 8
    channels: int = 128
    n_blocks: int = 2
    n_res_per_block: int = 2
    kernel_size: int = 3  # odd; causal convs see kernel_size // 2 rows above / columns left
    attention_blocks: list[int] = field(default_factory=lambda: [1])
    n_heads: int = 4
    dropout: float = 0.1
    n_classes: int = 0  # 0 = unconditional
    # classifier-free guidance: in training, this fraction of labels is replaced by a learned "no label" class
    # (index n_classes), so the prior also learns the unconditional distribution
    label_dropout: float = 0.0
    cond_shapes: list[list[int]] = field(default_factory=list)
    cond_channels: int = 64
    n_cond_res: int = 2
    # how a higher level's features reach this grid: "nearest" repeats each feature over the
    # f x f positions it covers; "learned" maps it to each of those positions with its own linear
    # map (a stride-f transposed conv), so the prior knows which part of the higher code it is at
    cond_upsample: str = "nearest"

    def __post_init__(self) -> None:
        self.attention_blocks = [int(b) for b in self.attention_blocks]
        self.cond_shapes = [[int(v) for v in s] for s in self.cond_shapes]
        for name in ("height", "width", "channels", "n_blocks", "n_res_per_block", "n_heads", "cond_channels"):
            _check(getattr(self, name) >= 1, f"prior.{name} must be >= 1, got {getattr(self, name)}")
        _check(2 <= self.codebook_size <= 65535,
               f"prior.codebook_size must be in [2, 65535], got {self.codebook_size}")
        _check(self.kernel_size >= 3 and self.kernel_size % 2 == 1,
               f"prior.kernel_size must be odd and >= 3, got {self.kernel_size}")
        _check(len(set(self.attention_blocks)) == len(self.attention_blocks),
               f"prior.attention_blocks has duplicates: {self.attention_blocks}")
        for b in self.attention_blocks:
            _check(0 <= b < self.n_blocks,
                   f"prior.attention_blocks must be block indices in [0, {self.n_blocks}), got {self.attention_blocks}")
        if self.attention_blocks:
            _check(self.channels % self.n_heads == 0,
                   f"prior.channels ({self.channels}) must be divisible by prior.n_heads ({self.n_heads})")
        _check(0.0 <= self.dropout < 1.0, f"prior.dropout must be in [0, 1), got {self.dropout}")
        _check(self.n_classes >= 0, f"prior.n_classes must be >= 0 (0 = unconditional), got {self.n_classes}")
        _check(0.0 <= self.label_dropout < 1.0, f"prior.label_dropout must be in [0, 1), got {self.label_dropout}")
        _check(self.label_dropout == 0 or self.n_classes > 0,
               f"prior.label_dropout ({self.label_dropout}) needs a class-conditional prior (n_classes > 0)")
        _check(self.n_cond_res >= 0, f"prior.n_cond_res must be >= 0, got {self.n_cond_res}")
        _check(self.cond_upsample in ("nearest", "learned"),
               f"prior.cond_upsample must be 'nearest' or 'learned', got {self.cond_upsample!r}")
        for s in self.cond_shapes:
            _check(len(s) == 3, f"prior.cond_shapes entries must be [codebook_size, h, w], got {s}")
            k, h, w = s
            _check(2 <= k <= 65535, f"prior.cond_shapes codebook_size must be in [2, 65535], got {s}")
            for side, full, name in ((h, self.height, "height"), (w, self.width, "width")):
                ratio = full // side if side >= 1 else 0
                _check(side >= 1 and full % side == 0 and ratio & (ratio - 1) == 0,
                       f"prior.cond_shapes {s}: {side} must divide prior.{name} {full} by a power of two")
