"""The head's skin: face outline (a superellipse narrowed at the chin) and ears."""
from __future__ import annotations

import math

import numpy as np

from .attributes import Layout
from .canvas import FACE, SKIN, Canvas, ellipse, scale

EAR_STYLES = ("short", "bald", "spiky", "bun")  # hair styles that leave the ears visible


def face_outline(a: dict, lay: Layout, n: int = 96) -> np.ndarray:
    th = np.linspace(0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(th), np.sin(th)
    e = 2 / a["squareness"]
    x = np.sign(c) * np.abs(c) ** e * lay.fw
    y = np.sign(s) * np.abs(s) ** e * lay.fh
    x = x * (1 - a["chin"] * np.clip(y / lay.fh, 0, 1) ** 2)  # narrower towards the chin
    return np.stack([lay.cx + x, lay.cy + y], axis=1)


def ear_visible(a: dict) -> bool:
    return a["hair_style"] in EAR_STYLES


def ear_lobe(lay: Layout, side: int) -> tuple[float, float]:
    return lay.cx + side * lay.fw * 0.99, lay.cy + lay.fh * 0.17


def draw_ears(cv: Canvas, a: dict, lay: Layout) -> None:
    if not ear_visible(a):
        return
    ew, eh, ey = lay.fw * 0.2, lay.fh * 0.21, lay.cy
    for side in (-1, 1):
        ex = lay.cx + side * lay.fw * 0.97
        cv.shape(ellipse(ex, ey, ew, eh), a["skin"], SKIN)
        inner = ellipse(ex + side * ew * 0.1, ey, ew * 0.55, eh * 0.65, -0.5 * math.pi, 0.6 * math.pi)
        if side < 0:
            inner = inner * [-1, 1] + [2 * (ex + side * ew * 0.1), 0]
        cv.line(inner, scale(a["skin"], 0.8), 0.008)


def draw_face_shape(cv: Canvas, a: dict, lay: Layout) -> None:
    cv.shape(face_outline(a, lay), a["skin"], FACE)
