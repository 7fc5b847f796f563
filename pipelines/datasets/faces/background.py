"""Backgrounds behind the face: a gradient under one of several soft procedural textures.

Every pattern is sized in canvas units (a fraction of the picture), never in pixels, so a
background is the same picture at every resolution, only sharper. Contrasts stay moderate: the
pattern is detail for the lower levels of a VQ-VAE, not noise that drowns a 32-px face.
Each kind gives a weight in [0, 1] per pixel that blends the second colour over the gradient.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .canvas import smoothstep

COARSE = 32  # cells across the picture for smooth fields (gradient, bokeh)


def background(a: dict, rng: np.random.Generator, S: int) -> Image.Image:
    c1, c2 = (np.asarray(a[k], np.float32) for k in ("bg1", "bg2"))
    g = (np.arange(COARSE, dtype=np.float32) + 0.5) / COARSE
    base = _gradient(c1, (c1 + c2) / 2, g[None, :], g[:, None], a["bg_angle"])
    kind = a["background"]
    if kind == "bokeh":
        base = _bokeh(base, c2, rng, g)
    img = _enlarge_rgb(base, S)
    x = (np.arange(S, dtype=np.float32) + 0.5) / S
    xx, yy = x[None, :], x[:, None]
    if kind == "noise":
        weight = 0.75 * (_value_noise(rng, S, 4) * 0.75 + _value_noise(rng, S, 9) * 0.25)
    elif kind == "stripes":
        weight = 0.65 * _stripes(xx, yy, a["bg_scale"] * 0.8, a["bg_angle"])
    elif kind == "dots":
        weight = _dots(xx, yy, a["bg_scale"], 0.22 + 0.1 * rng.uniform(), S)
    elif kind in ("bricks", "tiles"):
        weight = _bricks(rng, xx, yy, a["bg_scale"] * 0.7, 2.2 if kind == "bricks" else 1.0, S)
    else:
        return img
    mask = Image.fromarray(np.clip(weight * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    return Image.composite(Image.new("RGB", (S, S), tuple(int(v) for v in c2)), img, mask)


def _enlarge_rgb(arr: np.ndarray, S: int) -> Image.Image:
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB").resize((S, S), Image.BICUBIC)


def _mix(img, colour, t):
    return img + (colour - img) * t[..., None]


def _gradient(c1, c2, xx, yy, angle):
    t = 0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
    return _mix(np.broadcast_to(c1, (yy.shape[0], xx.shape[1], 3)), c2, np.clip(t, 0, 1))


def _value_noise(rng, S, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a ``cells`` x ``cells`` grid of random values, bicubic-interpolated."""
    grid = Image.fromarray(rng.uniform(0, 1, (cells, cells)).astype(np.float32), "F")
    return np.asarray(grid.resize((S, S), Image.BICUBIC))


def _stripes(xx, yy, period, angle):
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
    return smoothstep(-0.35, 0.35, np.sin(2 * math.pi * phase))  # soft-edged bands


def _dots(xx, yy, spacing, radius_frac, S):
    row = np.floor(yy / spacing)
    fx = np.mod(xx + (row % 2) * spacing / 2, spacing) - spacing / 2  # staggered rows
    fy = np.mod(yy, spacing) - spacing / 2
    d = np.sqrt(fx * fx + fy * fy)
    r = radius_frac * spacing
    return 0.8 * (1 - smoothstep(r - 1.0 / S, r + 1.0 / S, d))


def _bokeh(base, colour, rng, g):
    """Out-of-focus lights: soft translucent discs with a brighter rim, on the coarse grid."""
    light = np.clip(colour * 0.4 + 255 * 0.6, 0, 255)
    for _ in range(int(rng.integers(8, 16))):
        x, y, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.04, 0.13)
        d = np.sqrt((g[None, :] - x) ** 2 + (g[:, None] - y) ** 2)
        disc = (1 - smoothstep(r * 0.8, r, d)) * (0.7 + 0.3 * smoothstep(r * 0.5, r, d))
        base = _mix(base, light, disc * rng.uniform(0.12, 0.3))
    return base


def _bricks(rng, xx, yy, height, ratio, S):
    """Bricks (``ratio`` > 1, rows offset by half a brick) or square tiles; each one its own shade."""
    width = height * ratio
    row = np.floor(yy / height) + 0 * xx
    shifted = xx + (row % 2) * width / 2 if ratio > 1 else xx + 0 * row
    col = np.floor(shifted / width)
    fx, fy = shifted / width - col, yy / height - row
    edge = np.minimum(np.minimum(fx, 1 - fx) * width, np.minimum(fy, 1 - fy) * height)
    inside = smoothstep(0.012 - 1.0 / S, 0.012 + 1.0 / S, edge)
    shades = rng.uniform(0.1, 0.35, (int(1 / height) + 3, int(1 / width) + 3))
    tone = shades[row.astype(int) % shades.shape[0], col.astype(int) % shades.shape[1]]
    return tone * inside + 0.75 * (1 - inside)  # mortar mostly the second colour
