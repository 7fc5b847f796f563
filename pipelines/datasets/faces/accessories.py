"""Glasses (the class attribute: always clearly visible) and earrings."""
from __future__ import annotations

import math

import numpy as np

from .attributes import Layout
from .canvas import Canvas, ellipse, mix, rgba, scale
from .head import ear_lobe, ear_visible


def lens_outline(a: dict, lay: Layout, side: int, n: int = 40) -> np.ndarray:
    ex, ey, ew, _ = lay.eyes[(side + 1) // 2]
    gw = max(ew * 1.45, lay.fw * 0.27)
    gh = gw * 0.78
    th = np.linspace(0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(th), np.sin(th)
    shape = a["glasses_shape"]
    e = 1.0 if shape == "round" else 0.45  # superellipse exponent 2/n: lower is squarer
    x, y = np.sign(c) * np.abs(c) ** e * gw, np.sign(s) * np.abs(s) ** e * gh
    if shape == "cat":  # outer top corner swept up
        y = y - gh * 0.35 * np.clip(side * x / gw, 0, 1) ** 2 * (y < 0)
    return np.stack([ex + x, ey + gh * 0.05 + y], 1)


def draw_glasses(cv: Canvas, a: dict, lay: Layout) -> None:
    if not a["glasses"]:
        return
    frame = a["glasses_color"]
    width = a["frame_w"]
    lenses = [lens_outline(a, lay, side) for side in (-1, 1)]
    for side, lens in zip((-1, 1), lenses):
        if a["sunglasses"]:
            cv.shape(lens, rgba((22, 22, 30), 240))
        else:
            cv.shape(lens, rgba((235, 245, 255), 30))
        cv.clipped(lens, lambda sub, lens=lens: _glare(sub, lens, a))
        closed = np.concatenate([lens, lens[:1]])
        cv.line(closed, frame, width, curve=True)
        top = lens[lens[:, 1] < lens[:, 1].mean() - 0.3 * np.ptp(lens[:, 1]) / 2]
        top = top[np.argsort(top[:, 0])]
        cv.line(top + [0, width * 0.15], rgba(mix(frame, (255, 255, 255), 0.5), 120), width * 0.3)
        outer = lens[np.argmax(side * lens[:, 0])]
        cv.line([outer, (lay.cx + side * lay.fw * 1.0, outer[1] - lay.fh * 0.05)], frame, width * 0.8)
    inner_l = lenses[0][np.argmax(lenses[0][:, 0])]
    inner_r = lenses[1][np.argmin(lenses[1][:, 0])]
    mid = (inner_l + inner_r) / 2 - [0, lay.fh * 0.06]
    cv.line([inner_l - [0, lay.fh * 0.03], mid, inner_r - [0, lay.fh * 0.03]], frame, width, curve=True)


def _glare(cv: Canvas, lens: np.ndarray, a: dict) -> None:
    """A diagonal band of reflected light across the lens."""
    (x0, y0), (x1, y1) = lens.min(0), lens.max(0)
    w, h = x1 - x0, y1 - y0
    s = a["light_x"]
    x = (x0 + x1) / 2 + s * w * 0.12
    top, bottom = y0 - h * 0.1, y1 + h * 0.1
    band = [(x - w * 0.12, top), (x + w * 0.08, top), (x - w * 0.22, bottom), (x - w * 0.42, bottom)]
    cv.shape(band, rgba((255, 255, 255), 70 if a["sunglasses"] else 45))


def draw_earrings(cv: Canvas, a: dict, lay: Layout) -> None:
    if a["earrings"] == "none" or not ear_visible(a):
        return
    metal = a["metal"]
    for side in (-1, 1):
        x, y = ear_lobe(lay, side)
        if a["earrings"] == "stud":
            r = lay.fw * 0.045
            cv.circle(x, y, r, scale(metal, 0.8))
            cv.circle(x - r * 0.3, y - r * 0.3, r * 0.4, mix(metal, (255, 255, 255), 0.6))
        else:
            r = lay.fw * 0.09
            cv.line(ellipse(x, y + r, r * 0.8, r, n=24)[list(range(24)) + [0]], metal, 0.006, curve=True)
