"""Light and shade: one pass over the flat-coloured picture, per material (region).

Shading is low-frequency, so its fields are computed on a coarse grid (``GRID`` cells across the
picture, in canvas units whatever the size) and enlarged; only the choice of field per pixel (from
the full-resolution region map) and the texture layer (strands, folds) are at full resolution.
Each material gets: a soft light from one side on an ellipsoid (round forms), darkening near its
own outline (ambient occlusion), cast shadows (hair on the forehead, chin on the neck, the person
on the background), and on the face soft shadows and highlights where the features are.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from .attributes import Layout
from .canvas import BACKGROUND, CLOTH, FACE, HAIR, NEUTRAL, REGIONS, SKIN, Canvas

GRID = 64
TEXTURE_GAIN = np.array([0.0, 0.45, 0.0, 0.0, 0.6], np.float32)  # per region: how much the texture layer shows
HAIR_LIFT = 0.12  # light strands and sheen are also added, so they show on black hair


def shade(cv: Canvas, a: dict, lay: Layout) -> None:
    """Replace the canvas picture by its lit version."""
    S, G = cv.S, min(GRID, cv.S)
    g = (np.arange(G, dtype=np.float32) + 0.5) / G
    wx, wy = np.meshgrid(g, g)
    hx, hy = _to_head(cv, wx, wy)
    light = np.array([a["light_x"], -0.55, 0.75])
    light /= np.linalg.norm(light)
    fields = _fields(np.asarray(cv.regions.resize((G, G), Image.NEAREST)), wx, wy, hx, hy, lay, a, light)

    regions = np.asarray(cv.regions)
    mult = np.array(_enlarge(fields[BACKGROUND], S))
    for r in (CLOTH, SKIN, FACE, HAIR):
        np.copyto(mult, _enlarge(fields[r], S), where=regions == r)
    texture = (np.asarray(cv.texture, np.float32) - NEUTRAL) / NEUTRAL
    mult *= 1 + TEXTURE_GAIN[regions] * texture
    lift = (255 * HAIR_LIFT) * (texture + _enlarge(_sheen(hx, hy, lay, light), S)) * (regions == HAIR) + 0.5
    img = np.asarray(cv.image) * mult[..., None] + lift[..., None]  # float32 (S, S, 3); + 0.5 rounds below
    if a["blush"] > 0:
        _add_blush(img, regions, _enlarge(_blush(hx, hy, lay), S), a)
    np.clip(img, 0, 255, out=img)
    cv.set_image(Image.fromarray(img.astype(np.uint8), "RGB"))


def _fields(coarse, wx, wy, hx, hy, lay: Layout, a: dict, light) -> np.ndarray:
    """(REGIONS, G, G) light multipliers on the coarse grid, one field per material."""
    G = coarse.shape[0]
    masks = [(coarse == r).astype(np.float32) for r in range(REGIONS)]
    fields = np.ones((REGIONS, G, G), np.float32)
    fields[FACE] = _face_field(masks, hx, hy, lay, a, light, G)
    fields[SKIN] = _lit(hx, hy, lay.cx, lay.cy + lay.fh * 0.6, lay.fw * 1.3, lay.fh * 1.4, light, a["light"])
    fields[SKIN] *= _occlusion(masks[SKIN], G) * (1 - 0.45 * _blur(masks[FACE] + masks[HAIR], G, 0.02, dy=0.035))
    fields[HAIR] = _lit(hx, hy, lay.cx, lay.cy, lay.fw * 1.3, lay.fh * 1.25, light, a["light"])
    fields[HAIR] *= _occlusion(masks[HAIR], G)
    fields[CLOTH] = _lit(wx, wy, lay.cx, 1.05, 0.5, 0.45, light, a["light"]) * _occlusion(masks[CLOTH], G, 0.15)
    person = 1 - masks[BACKGROUND]
    fields[BACKGROUND] = 1 - 0.22 * _blur(person, G, 0.035, dx=-a["light_x"] * 0.04, dy=0.02)  # cast on the wall
    return fields


def _add_blush(img, regions, weight, a) -> None:
    """Pink on the cheeks, only where the face is, within the box where the blush is not negligible."""
    rows, cols = np.nonzero(weight > 0.02)
    if len(rows) == 0:
        return
    box = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    pink = np.asarray((236, 120, 130), np.float32) - np.asarray(a["skin"], np.float32)
    w = weight[box] * (regions[box] == FACE) * a["blush"]
    img[box] += w[..., None] * pink


def _to_head(cv: Canvas, wx, wy):
    """Picture coordinates -> head-frame coordinates (undo the tilt)."""
    px, py = cv.pivot
    dx, dy = wx - px, wy - py
    (c, ms), (s, _) = cv.rot  # rot = [[cos, -sin], [sin, cos]]; its inverse is its transpose
    return px + c * dx + s * dy, py + ms * dx + c * dy


def _lit(x, y, cx, cy, rx, ry, light, strength):
    """Diffuse light on an ellipsoid centred at (cx, cy): 1 facing the viewer, brighter towards the light."""
    nx, ny = (x - cx) / rx, (y - cy) / ry
    r2 = np.minimum(nx * nx + ny * ny, 0.97)
    k = np.sqrt(0.97 / np.maximum(nx * nx + ny * ny, 0.97))
    nz = np.sqrt(1 - r2)
    lambert = np.clip(nx * k * light[0] + ny * k * light[1] + nz * light[2], 0, 1)
    ambient = 0.5
    lit = (ambient + (1 - ambient) * lambert) / (ambient + (1 - ambient) * light[2])
    return 1 + strength * (lit - 1)


def _occlusion(mask, G, depth: float = 0.22):
    """Darker near the region's own outline: 1 deep inside, 1 - depth on the edge."""
    inside = _blur(mask, G, 0.022)
    return 1 - depth * np.clip(2 * (1 - inside), 0, 1)


def _blob(x, y, cx, cy, rx, ry):
    return np.exp(-(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))


def _face_field(masks, hx, hy, lay: Layout, a, light, G):
    fw, fh = lay.fw, lay.fh
    f = _lit(hx, hy, lay.cx, lay.cy - 0.1 * fh, fw * 1.15, fh * 1.2, light, a["light"])
    f = f * _occlusion(masks[FACE], G) * (1 - 0.3 * _blur(masks[HAIR], G, 0.02, dx=-0.01 * a["light_x"], dy=0.03))
    dark = sum(_blob(hx, hy, ex, ey - eh * 0.2, ew * 1.5, eh * 2.2) for ex, ey, ew, eh in lay.eyes) * 0.07
    nx, ny = lay.nose
    shadow_side = -math.copysign(1.0, a["light_x"])
    dark = dark + 0.14 * _blob(hx, hy, nx + shadow_side * a["nose_w"] * fw * 0.8, ny - fh * 0.12, fw * 0.07, fh * 0.16)
    dark = dark + 0.12 * _blob(hx, hy, nx, ny + fh * 0.07, fw * 0.14, fh * 0.035)
    mx, my, mw = lay.mouth
    dark = dark + 0.1 * _blob(hx, hy, mx, my + fh * (0.13 + a["mouth_open"]), mw * 0.7, fh * 0.04)
    bright = 0.07 * _blob(hx, hy, lay.cx + a["light_x"] * 0.3 * fw, lay.cy - 0.55 * fh, fw * 0.4, fh * 0.17)
    bright = bright + 0.09 * _blob(hx, hy, nx, ny - fh * 0.03, fw * 0.05, fh * 0.04)
    bright = bright + 0.05 * _blob(hx, hy, lay.cx + a["light_x"] * 0.55 * fw, ny, fw * 0.18, fh * 0.1)
    return f * (1 - dark) + bright


def _sheen(hx, hy, lay: Layout, light):
    """A band of light on the hair around the crown, on the side of the light."""
    dx, dy = (hx - lay.cx) / (lay.fw * 1.15), (hy - lay.cy) / (lay.fh * 1.1)
    r = np.sqrt(dx * dx + dy * dy)
    facing = np.clip((dx * light[0] + dy * light[1]) / np.maximum(r, 1e-3), 0, 1)
    return 0.6 * np.exp(-(((r - 0.88) / 0.09) ** 2)) * facing


def _blush(hx, hy, lay: Layout):
    nx, ny = lay.nose
    return sum(_blob(hx, hy, ex, ny, lay.fw * 0.2, lay.fh * 0.1) for ex, _, _, _ in lay.eyes)


@functools.lru_cache(maxsize=64)
def _blur_matrix(G: int, sigma: float, shift: float) -> np.ndarray:
    """(G, G) rows of a Gaussian (in canvas units) centred ``shift`` before each cell, summing to 1."""
    i = np.arange(G, dtype=np.float64)
    k = np.exp(-0.5 * ((i[:, None] - i[None, :] - shift * G) / (sigma * G)) ** 2)
    return (k / k.sum(1, keepdims=True)).astype(np.float32)


def _blur(m, G, sigma, dx: float = 0.0, dy: float = 0.0):
    """Gaussian blur of a coarse field, moved by (dx, dy) canvas units (a cast shadow)."""
    return _blur_matrix(G, sigma, round(dy, 3)) @ m @ _blur_matrix(G, sigma, round(dx, 3)).T


def _enlarge(field, S):
    if field.shape[0] == S:
        return field
    return np.asarray(Image.fromarray(field.astype(np.float32), "F").resize((S, S), Image.BILINEAR))
