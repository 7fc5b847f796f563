"""The domain classifier's configuration (no torch: the pipeline's configuration checks it before work)."""
from __future__ import annotations

from dataclasses import dataclass, field

from vqvae2.config import _check


@dataclass
class ClassifierConfig:
    """A ResNet with one stage per entry of `channels`; every stage after the first halves the resolution."""

    in_channels: int = 1
    image_size: int = 32
    num_classes: int = 10
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    blocks_per_stage: int = 1
    dropout: float = 0.1
    stem_stride: int = 1  # 2 or 4: the stem downsamples large images first (cheaper; 128-px faces use 2)
    # the centred fraction of each side it looks at (1: the whole image): aligned faces' realism classifier looks
    # at the face, where samples go wrong, not at the background (train_classifier.realism_crop)
    crop: float = 1.0

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]
        _check(self.in_channels in (1, 3), f"classifier.in_channels must be 1 or 3, got {self.in_channels}")
        _check(self.num_classes >= 2, f"classifier.num_classes must be >= 2, got {self.num_classes}")
        _check(len(self.channels) >= 1 and all(c >= 1 for c in self.channels),
               f"classifier.channels must be a non-empty list of positive widths, got {self.channels}")
        _check(self.blocks_per_stage >= 1, f"classifier.blocks_per_stage must be >= 1, got {self.blocks_per_stage}")
        _check(0.0 <= self.dropout < 1.0, f"classifier.dropout must be in [0, 1), got {self.dropout}")
        _check(self.stem_stride in (1, 2, 4), f"classifier.stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        downsample = 2 ** (len(self.channels) - 1) * self.stem_stride
        _check(self.image_size >= downsample and self.image_size % downsample == 0,
               f"classifier.image_size {self.image_size} must be a multiple of {downsample} "
               f"(the stem divides it by {self.stem_stride}, then {len(self.channels)} stages halve it "
               f"{len(self.channels) - 1} times)")
        _check(0.0 < self.crop <= 1.0, f"classifier.crop must be in (0, 1], got {self.crop}")
        _check(self.cropped_size >= downsample,
               f"classifier.crop {self.crop} leaves {self.cropped_size} px of {self.image_size}, fewer than the "
               f"{downsample} the network divides by")

    @property
    def cropped_size(self) -> int:
        """The side of the centred square the network sees."""
        return max(1, round(self.image_size * self.crop))
