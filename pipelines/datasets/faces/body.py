"""Shoulders, clothing (collar, pattern, folds) and neck. The body does not tilt with the head."""
from __future__ import annotations

import numpy as np

from .attributes import Layout
from .canvas import CLOTH, NEUTRAL, SKIN, Canvas, bezier, ellipse, scale


def draw_clothing(cv: Canvas, a: dict, lay: Layout, rng: np.random.Generator) -> None:
    cx, top = lay.cx, lay.cy + lay.fh * 1.05
    sw = a["shoulder_w"]
    shoulders = ellipse(cx, top + 0.32, sw, 0.32, np.pi, 2 * np.pi)
    body = np.concatenate([[[cx - sw, 1.1]], shoulders, [[cx + sw, 1.1]]])
    cv.shape(body, a["shirt"], CLOTH, head=False)
    _pattern(cv, a, cx, top, sw)
    _folds(cv, cx, top, sw, rng)
    if a["collar"] == "collar":
        for side in (-1, 1):
            flap = [(cx + side * lay.fw * 0.05, top + 0.05), (cx + side * lay.fw * 0.62, top - 0.01),
                    (cx + side * lay.fw * 0.5, top + 0.1)]
            cv.shape(flap, scale(a["shirt"], 1.18), head=False)
            cv.texture_line(flap + flap[:1], NEUTRAL - 50, 0.006, head=False)


def draw_neck(cv: Canvas, a: dict, lay: Layout) -> None:
    cx, cy, fw, fh = lay.cx, lay.cy, lay.fw, lay.fh
    nw, base = fw * 0.4, cy + fh * 1.12
    skin = a["skin"]
    cv.shape([(cx - nw, cy + fh * 0.5), (cx + nw, cy + fh * 0.5), (cx + nw, base), (cx - nw, base)],
             skin, SKIN, head=False)
    if a["collar"] == "v":
        v_neck = [(cx - nw * 1.1, base - 0.01), (cx + nw * 1.1, base - 0.01), (cx, base + 0.12)]
        cv.shape(v_neck, skin, SKIN, head=False)
        for side in (-1, 1):
            cv.texture_line([(cx + side * nw * 1.1, base - 0.01), (cx, base + 0.12)], NEUTRAL - 45, 0.008, head=False)
    else:
        neckline = ellipse(cx, base, nw * 1.05, fh * 0.16, 0, np.pi)
        cv.shape(neckline, skin, SKIN, head=False)
        cv.texture_line(ellipse(cx, base, nw * 1.12, fh * 0.2, 0.05, np.pi - 0.05), NEUTRAL - 40, 0.012, head=False)


def _pattern(cv: Canvas, a: dict, cx, top, sw) -> None:
    """Stripes or checks woven into the cloth, as light and dark in the texture layer."""
    if a["pattern"] == "plain":
        return
    step = 0.045
    ys = np.arange(top - 0.02, 1.05, step)
    for y in ys:
        cv.texture_line([(cx - sw - 0.05, y), (cx + sw + 0.05, y)], NEUTRAL - 38, step * 0.4, head=False)
    if a["pattern"] == "checks":
        for x in np.arange(cx - sw, cx + sw + 0.01, step):
            cv.texture_line([(x, top - 0.05), (x, 1.05)], NEUTRAL - 30, step * 0.4, head=False)


def _folds(cv: Canvas, cx, top, sw, rng) -> None:
    """Creases from the armpits and the neck: a wide soft dark stroke with a narrow darker core."""
    for side in (-1, 1):
        for _ in range(int(rng.integers(1, 3))):
            x0 = cx + side * sw * rng.uniform(0.55, 0.85)
            y0 = top + rng.uniform(0.1, 0.2)
            x2, y2 = cx + side * sw * rng.uniform(0.1, 0.4), 1.03
            fold = bezier((x0, y0), (x0 - side * 0.03, (y0 + y2) / 2), (x2, y2))
            cv.texture_line(fold, NEUTRAL - 18, 0.03, head=False)
            cv.texture_line(fold, NEUTRAL - 45, 0.007, head=False)
            cv.texture_line(fold + [side * 0.012, 0], NEUTRAL + 20, 0.006, head=False)
