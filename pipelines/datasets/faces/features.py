"""Eyes, brows, nose, mouth and freckles, drawn over the lit skin (they carry their own shading)."""
from __future__ import annotations

import math

import numpy as np

from .attributes import Layout
from .canvas import Canvas, bezier, ellipse, mix, rgba, scale

SCLERA = (246, 244, 239)
LID = (44, 30, 28)
MOUTH_INSIDE = (74, 18, 28)
TEETH = (244, 240, 230)
TONGUE = (206, 96, 108)


# ----------------------------------------------------------------------------- eyes


def eye_opening(lay: Layout, a: dict, side: int, n: int = 17):
    """The almond between the lids: (upper lid curve, lower lid curve), inner corner to outer."""
    ex, ey, ew, eh = lay.eyes[(side + 1) // 2]
    t = np.linspace(-1, 1, n) * side  # -side .. side: inner corner first
    lift = a["eye_slant"] * eh * 0.35 * t * side  # outer corner up for a positive slant
    x = ex + t * ew
    upper = np.stack([x, ey - eh * (1 - t * t) ** 0.7 - lift], 1)
    lower = np.stack([x, ey + eh * 0.7 * (1 - t * t) ** 0.9 - lift], 1)
    return upper, lower


def draw_eye(cv: Canvas, a: dict, lay: Layout, side: int) -> None:
    ex, ey, ew, eh = lay.eyes[(side + 1) // 2]
    upper, lower = eye_opening(lay, a, side)
    ri = min(ew * 0.56, eh * 1.25)
    ix, iy = ex + a["look_x"] * ew * 0.3, ey + a["look_y"] * eh * 0.2

    def inside(sub: Canvas):
        sub.shape(np.concatenate([upper, lower[::-1]]), SCLERA)
        sub.shape(np.concatenate([upper, upper[::-1] + [0, eh * 0.55]]), rgba((150, 120, 120), 70))  # lid shadow
        _iris(sub, a, ix, iy, ri)

    cv.clipped(np.concatenate([upper, lower[::-1]]), inside)
    skin = a["skin"]
    cv.line(upper + [0, -eh * 0.42], rgba(scale(skin, 0.72), 150), 0.004, curve=True)  # crease
    cv.line(lower[2:-2], rgba(scale(skin, 0.7), 140), 0.004, curve=True)
    cv.line(upper, LID, 0.008, curve=True)
    cv.line(upper[len(upper) // 2:], LID, 0.012, curve=True)  # thicker towards the outer corner
    for k in range(a["lashes"]):
        i = len(upper) - 2 - 2 * k
        x, y = upper[i]
        cv.line([(x, y), (x + side * ew * 0.16, y - eh * 0.45)], LID, 0.005)


def _iris(cv: Canvas, a: dict, x, y, r) -> None:
    """Limbal ring, iris with radial streaks and a lighter inner ring, pupil, two highlights."""
    iris = a["eye_color"]
    cv.circle(x, y, r, scale(iris, 0.45))
    cv.circle(x, y, r * 0.86, iris)
    cv.circle(x, y, r * 0.55, mix(iris, (230, 200, 120), 0.25))
    n = 18
    th = np.linspace(0, 2 * math.pi, n, endpoint=False) + a["look_x"]
    for k, t in enumerate(th):
        u = np.array([math.cos(t), math.sin(t)])
        colour = scale(iris, 0.62) if k % 2 else mix(iris, (255, 255, 255), 0.3)
        cv.line([(x, y) + u * r * 0.45, (x, y) + u * r * 0.84], colour, r * 0.12)
    cv.circle(x, y, r * 0.42, (12, 10, 10))
    lx = a["light_x"]
    cv.circle(x + lx * r * 0.35, y - r * 0.38, r * 0.22, (255, 255, 255))
    cv.circle(x - lx * r * 0.3, y + r * 0.35, r * 0.09, rgba((255, 255, 255), 200))


def draw_brow(cv: Canvas, a: dict, lay: Layout, side: int) -> None:
    ex, _, ew, _ = lay.eyes[(side + 1) // 2]
    y, fh = lay.brow_y, lay.fh
    inner = (ex - side * ew * 0.95, y + a["brow_inner"] * fh * 0.06)
    peak = (ex + side * ew * 0.15, y - (0.03 + 0.05 * a["brow_arch"]) * fh)
    outer = (ex + side * ew * 1.2, y + fh * 0.02)
    centre = bezier(inner, peak, outer, 12)
    t = np.linspace(0, 1, 12)[:, None]
    half = a["brow_w"] * (1 - 0.65 * t) / 2
    shape = np.concatenate([centre - [0, 1] * half, (centre + [0, 1] * half)[::-1]])
    hair = a["hair"]
    colour = scale(hair, 0.55) if sum(hair) > 300 else scale(hair, 0.75)
    cv.shape(shape, colour)
    for k in range(1, 10, 2):  # a few hairs along the brow
        p = centre[k]
        cv.line([p + [-side * 0.004, half[k, 0]], p + [side * 0.01, -half[k, 0]]], scale(colour, 0.7), 0.0025)


# ----------------------------------------------------------------------------- nose


def draw_nose(cv: Canvas, a: dict, lay: Layout) -> None:
    x, y = lay.nose
    w = a["nose_w"] * lay.fw
    skin = a["skin"]
    shadow = rgba(scale(skin, 0.55), 170)
    kind = a["nose"]
    if kind == 1:  # a bridge line on the shade side
        s = -math.copysign(1.0, a["light_x"])
        bridge = bezier((x + s * w * 0.35, lay.eyes[0][1] + lay.fh * 0.08), (x + s * w * 0.6, y - lay.fh * 0.12),
                        (x + s * w * 0.2, y))
        cv.line(bridge, rgba(scale(skin, 0.7), 150), 0.005, curve=True)
    wing = 1.0 if kind == 2 else 0.75
    cv.line(ellipse(x, y - w * 0.15, w * wing, w * 0.55, 0.15 * math.pi, 0.85 * math.pi, n=12),
            rgba(scale(skin, 0.62), 150), 0.006, curve=True)
    for side in (-1, 1):
        cv.shape(ellipse(x + side * w * 0.36, y + w * 0.08, w * 0.2, w * 0.11, n=12), shadow)
    cv.shape(ellipse(x + a["light_x"] * w * 0.15, y - w * 0.45, w * 0.22, w * 0.16, n=12), rgba((255, 255, 255), 55))


# ----------------------------------------------------------------------------- mouth


def mouth_curves(a: dict, lay: Layout, n: int = 21):
    """Lip outlines left to right: upper outer, upper inner, lower inner, lower outer."""
    mx, my, mw = lay.mouth
    fh = lay.fh
    t = np.linspace(-1, 1, n)
    x = mx + t * mw
    centre = my - a["smile"] * fh * t * t + a["asym"] * fh * t
    edge = np.sqrt(1 - t * t)
    opening = a["mouth_open"] * fh
    bow = 1 - 0.35 * np.exp(-((t / 0.18) ** 2))  # the dip of the upper lip in the middle
    up_in = centre - opening * 0.3 * edge
    lo_in = centre + opening * 0.7 * edge ** 0.8
    up_out = up_in - a["lip_u"] * fh * edge ** 0.6 * bow
    lo_out = lo_in + a["lip_l"] * fh * edge ** 0.7
    return tuple(np.stack([x, y], 1) for y in (up_out, up_in, lo_in, lo_out))


def draw_mouth(cv: Canvas, a: dict, lay: Layout) -> None:
    up_out, up_in, lo_in, lo_out = mouth_curves(a, lay)
    lip, mw = a["lip"], lay.mouth[2]
    if a["mouth_open"] > 0:
        gap = np.concatenate([up_in, lo_in[::-1]])
        cv.clipped(gap, lambda sub: _inside_mouth(sub, a, lay, up_in, lo_in))
    cv.shape(np.concatenate([up_out, up_in[::-1]]), scale(lip, 0.82))
    cv.shape(np.concatenate([lo_in, lo_out[::-1]]), lip)
    mid = len(lo_in) // 2
    lx = a["light_x"]
    hx, hy = (lo_in[mid] + lo_out[mid]) / 2 + [lx * mw * 0.15, 0]
    cv.shape(ellipse(hx, hy, mw * 0.28, a["lip_l"] * lay.fh * 0.22, n=16), rgba((255, 255, 255), 70))
    if a["mouth_open"] > 0:
        cv.line(up_in, rgba(scale(lip, 0.35), 230), 0.006, curve=True)
    else:  # the line between closed lips carries the mouth's shape at small sizes
        cv.line((up_in + lo_in) / 2, rgba(scale(lip, 0.3), 235), 0.015, curve=True)
    if a["mouth"] == "smile":  # dimples at the corners
        for end, side in ((up_in[0], -1), (up_in[-1], 1)):
            cv.line(bezier(end + [side * 0.012, -0.015], end + [side * 0.02, 0.0], end + [side * 0.01, 0.015]),
                    rgba(scale(a["skin"], 0.6), 140), 0.004)


def _inside_mouth(cv: Canvas, a: dict, lay: Layout, up_in, lo_in) -> None:
    cv.shape(np.concatenate([up_in, lo_in[::-1]]), MOUTH_INSIDE)
    teeth = a["mouth_open"] * lay.fh * (0.45 if a["mouth"] == "smile" else 0.16)
    cv.shape(np.concatenate([up_in, up_in[::-1] + [0, teeth]]), TEETH)
    mx, my, mw = lay.mouth
    for t in (-0.5, -0.17, 0.17, 0.5):
        i = int(round((t + 1) / 2 * (len(up_in) - 1)))
        x, y = up_in[i]
        cv.line([(x, y), (x, y + teeth)], (200, 196, 190), 0.002)
    if a["mouth"] == "open":
        bottom = lo_in[len(lo_in) // 2][1]
        cv.shape(ellipse(mx, bottom, mw * 0.6, a["mouth_open"] * lay.fh * 0.28), TONGUE)


def draw_freckles(cv: Canvas, a: dict, lay: Layout, rng: np.random.Generator) -> None:
    if not a["freckles"]:
        return
    colour = rgba(scale(a["skin"], 0.72), 150)
    x, y = lay.nose
    for side in (-1, 1):
        n = 14
        px = x + side * lay.fw * rng.uniform(0.15, 0.6, n)
        py = y - lay.fh * rng.uniform(0.02, 0.18, n)
        for fx, fy, r in zip(px, py, rng.uniform(0.002, 0.004, n)):
            cv.circle(fx, fy, r, colour)
