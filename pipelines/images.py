"""Image conversions and picture grids."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from vqvae2.pipeline import to_uint8 as to_uint8  # one conversion for the pipeline and the stages


def grid_image(images_uint8: torch.Tensor, nrow: int = 8, min_side: int = 64) -> Image.Image:
    """A PIL grid of uint8 (N, C, H, W) images, upscaled (nearest) so each cell is at least `min_side` px."""
    x = images_uint8
    if x.shape[-1] < min_side:
        x = torch.nn.functional.interpolate(x.float(), scale_factor=min_side // x.shape[-1], mode="nearest").to(torch.uint8)
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=255)
    arr = grid.permute(1, 2, 0).numpy()
    if images_uint8.shape[1] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[..., 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
