"""Image decoding in one place: any image mode read as RGB, resized and centre-cropped, and the errors a
damaged file raises. Used by folders read per step, the prepared-data cache and `vqvae2 vary`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import DataError


def load_image_rgb(path: str | os.PathLike) -> Image.Image:
    """Open any image (L, LA, P, RGBA, CMYK, I;16, ...) as RGB; alpha is composited over white."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.size and a.max() > 255):
            a = a / 257.0
        elif mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (up or down), then center-crop to ``size`` x ``size``."""
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.LANCZOS if s < 1 else Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def bad_file_error(path, e) -> DataError:
    """The one-line error for an image file that cannot be read."""
    return DataError(
        f"cannot read image file {path}: {type(e).__name__}: {e}. Remove or fix it, "
        f"or set data.skip_bad_files=true to skip unreadable files"
    )


# what decoding a damaged or hostile image file raises
IMAGE_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def decode(path: str | os.PathLike, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the image at `path` as RGB, resized and centre-cropped."""
    return np.asarray(resize_center_crop(load_image_rgb(Path(path)), size), dtype=np.uint8)
