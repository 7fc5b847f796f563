"""Hair: the mass behind the head, the part over the forehead, beards, and their texture.

Shapes are flat hair colour in the HAIR region; texture goes to the canvas texture layer, where
the shading pass turns it into light and dark: strands that flow from the parting and fall with
gravity (straight styles), curls drawn as a shadowed arc under a lit one (curly styles), short
strokes (spikes, stubble, side patches).
"""
from __future__ import annotations

import math

import numpy as np

from .attributes import Layout
from .canvas import HAIR, NEUTRAL, Canvas, ellipse
from .head import face_outline


def draw_hair_back(cv: Canvas, a: dict, lay: Layout) -> None:
    cx, cy, fw, fh, c = lay.cx, lay.cy, lay.fw, lay.fh, a["hair"]
    style = a["hair_style"]
    top = cy - fh * 1.12
    if style in ("long", "bob"):
        bottom = cy + fh * (1.25 if style == "long" else 0.5)
        cv.shape(_rounded_rect(cx - fw * 1.22, top, cx + fw * 1.22, bottom, fw * 0.8), c, HAIR)
    elif style == "curly":
        cv.shape(_bumpy(cx, cy - fh * 0.15, fw * 1.3, fh * 1.05, 0.06, 14, a["part"]), c, HAIR)
    elif style == "afro":
        cv.shape(_bumpy(cx, cy - fh * 0.2, fw * 1.6, fh * 1.2, 0.04, 18, a["part"]), c, HAIR)
    elif style == "bun":
        x, y, r = _bun(lay)
        cv.shape(ellipse(x, y, r, r), c, HAIR)
    elif style == "bald":
        for side in (-1, 1):
            cv.shape(_fringe_of_head(a, lay, side), c, HAIR)


def draw_hair_front(cv: Canvas, a: dict, lay: Layout) -> None:
    cx, cy, fw, fh, c = lay.cx, lay.cy, lay.fw, lay.fh, a["hair"]
    style = a["hair_style"]
    if style == "short":
        cv.shape(_cap(a, lay, cy - fh * 0.5, 1.06, 0.1, 0.4), c, HAIR)
        for side in (-1, 1):  # sideburns
            x = cx + side * fw * 0.95
            cv.shape(_rounded_rect(x - fw * 0.09, cy - fh * 0.6, x + fw * 0.09, cy - fh * 0.08, fw * 0.04), c, HAIR)
    elif style in ("long", "bob"):
        cv.shape(_cap(a, lay, cy - fh * 0.42, 1.12, 0.12, 1.0), c, HAIR)
        for side in (-1, 1):
            cv.shape(_side_lock(lay, side, cy + fh * (0.95 if style == "long" else 0.4)), c, HAIR)
    elif style in ("curly", "afro"):
        hairline = cy - fh * 0.55
        cv.shape(_cap(a, lay, hairline, 1.04, 0.12, 0.0), c, HAIR)
        r = fw * 0.16
        for k in range(7):
            t = (k - 3) / 3
            cv.shape(ellipse(cx + t * fw * 0.8, hairline + fh * 0.02 - abs(t) * fh * 0.05, r, r * 0.9), c, HAIR)
    elif style == "spiky":
        cv.shape(_cap(a, lay, cy - fh * 0.55, 1.02, 0.05, 0.2), c, HAIR)
        cv.shape(_spikes(lay), c, HAIR)
    elif style == "bun":
        cv.shape(_cap(a, lay, cy - fh * 0.55, 1.05, 0.1, 0.0), c, HAIR)


def draw_beard(cv: Canvas, a: dict, lay: Layout) -> None:
    if not a["beard"]:
        return
    cv.shape(_beard(a, lay), a["hair"], HAIR)


def draw_hair_texture(cv: Canvas, a: dict, lay: Layout, rng: np.random.Generator) -> None:
    cx, cy, fw, fh = lay.cx, lay.cy, lay.fw, lay.fh
    style = a["hair_style"]
    if style in ("curly", "afro"):
        grow = 1.6 if style == "afro" else 1.3
        box = (cx - fw * grow, cy - fh * 1.4, cx + fw * grow, cy + fh * 0.9)
        _curls(cv, rng, box, 110 if style == "curly" else 170, fw * 0.07, fw * 0.13, a["light_x"])
    elif style == "spiky":
        _strokes(cv, rng, (cx, cy), 70, -math.pi + 0.25, -0.25, fw * 0.6, fw * 1.45)
    elif style == "bald":
        for side in (-1, 1):
            _stubble(cv, rng, (cx + side * fw * 1.02, cy - fh * 0.25, fw * 0.08, fh * 0.3), 25)
    elif style == "bun":
        x, y, r = _bun(lay)
        start = rng.uniform(0, 360, 9)
        cv.texture_arcs(np.tile([x, y], (9, 1)), r * rng.uniform(0.3, 0.95, 9), start, start + rng.uniform(120, 260, 9),
                        NEUTRAL - rng.integers(25, 60, 9), rng.uniform(0.003, 0.007, 9))
        _flow(cv, rng, np.array([x, y]), 70, (0.12 * math.pi, 0.88 * math.pi), (0.25, 0.4), 0.0)
    else:
        origin = np.array([cx + a["part"] * fw * 0.6, cy - fh * 1.05])
        length, gravity = {"short": ((0.12, 0.3), 0.12), "long": ((0.45, 0.95), 0.3), "bob": ((0.3, 0.6), 0.25)}[style]
        _flow(cv, rng, origin, 110, (-0.15 * math.pi, 1.15 * math.pi), length, gravity)
    if a["beard"]:
        mx, my, mw = lay.mouth
        _stubble(cv, rng, (lay.cx, (my + cy + fh) / 2 + fh * 0.05, fw * 0.9, fh * 0.35), 90)


# ----------------------------------------------------------------------------- shapes


def _rounded_rect(x0, y0, x1, y1, r) -> np.ndarray:
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    corners = [(x1 - r, y1 - r), (x0 + r, y1 - r), (x0 + r, y0 + r), (x1 - r, y0 + r)]  # quarter turns from 0
    return np.concatenate([ellipse(x, y, r, r, k * math.pi / 2, (k + 1) * math.pi / 2, n=8)
                           for k, (x, y) in enumerate(corners)])


def _bumpy(cx, cy, rx, ry, depth, bumps, phase) -> np.ndarray:
    """An ellipse whose outline bulges ``bumps`` times: a mass of curls."""
    th = np.linspace(0, 2 * math.pi, 120, endpoint=False)
    k = 1 + depth * np.abs(np.sin(bumps * th / 2 + phase * 3))
    return np.stack([cx + rx * k * np.cos(th), cy + ry * k * np.sin(th)], axis=1)


def _cap(a: dict, lay: Layout, hairline, widen, lift, fringe) -> np.ndarray:
    """Hair over the top of the head down to ``hairline``; ``fringe`` lets a lobe fall on one side."""
    cx, fw, fh = lay.cx, lay.fw, lay.fh
    rx, top = fw * widen, lay.cy - fh * (1 + lift)
    outer = ellipse(cx, hairline, rx, hairline - top, math.pi, 2 * math.pi, n=48)
    t = np.linspace(1, -1, 31)
    room = max(0.0, lay.brow_y - fh * 0.08 - hairline)  # a fringe stops above the brows
    lobe = fringe * a["fringe"] * min(room, fh * 0.3) * np.exp(-(((t + a["part"]) / 0.5) ** 2))
    edge = np.stack([cx + t * rx, hairline + fh * 0.25 * np.abs(t) ** 5 + lobe], axis=1)
    return np.concatenate([outer, edge])


def _side_lock(lay: Layout, side: int, bottom) -> np.ndarray:
    cx, cy, fw, fh = lay.cx, lay.cy, lay.fw, lay.fh
    v = np.linspace(0, 1, 12)
    y = cy - fh * 0.6 + v * (bottom - cy + fh * 0.6)
    inner = cx + side * fw * (0.9 - 0.08 * np.sin(math.pi * v))
    outer = np.full_like(v, cx + side * fw * 1.18)
    return np.concatenate([np.stack([outer, y], 1), np.stack([inner, y], 1)[::-1]])


def _spikes(lay: Layout) -> np.ndarray:
    cx, cy, fw, fh = lay.cx, lay.cy, lay.fw, lay.fh
    pts, m = [], 7
    for k in range(m + 1):
        x = cx - fw * 0.98 + fw * 1.96 * k / m
        pts.append((x, cy - fh * 0.45 - fh * 0.55 * math.sqrt(max(0.0, 1 - ((x - cx) / fw) ** 2))))
        if k < m:
            xt = x + fw * 0.98 / m
            tip = cy - fh * 0.62 - fh * 0.8 * math.sqrt(max(0.0, 1 - ((xt - cx) / (fw * 1.15)) ** 2))
            pts.append((xt, tip))
    return np.array(pts)


def _fringe_of_head(a: dict, lay: Layout, side: int) -> np.ndarray:
    """A crescent of hair along one side of the head, from the temple to the ear (drawn behind the face)."""
    outline = face_outline(a, lay) - [lay.cx, lay.cy]
    keep = (side * outline[:, 0] > 0) & (outline[:, 1] > -0.6 * lay.fh) & (outline[:, 1] < 0.1 * lay.fh)
    part = outline[keep]
    part = part[np.argsort(part[:, 1])]
    return np.concatenate([part * 1.1, part[::-1] * 0.97]) + [lay.cx, lay.cy]


def _bun(lay: Layout) -> tuple[float, float, float]:
    r = lay.fw * 0.42
    return lay.cx, lay.cy - lay.fh - r * 0.45, r


def _beard(a: dict, lay: Layout) -> np.ndarray:
    mx, my, mw = lay.mouth
    outline = face_outline(a, lay) * 1.02 - [lay.cx * 0.02, lay.cy * 0.02]
    lower = outline[outline[:, 1] >= my - lay.fh * 0.05]
    lower = lower[np.argsort(np.arctan2(lower[:, 1] - lay.cy, lower[:, 0] - lay.cx))]  # right -> chin -> left
    around_mouth = ellipse(mx, my - lay.fh * 0.02, mw * 1.3, lay.fh * 0.2, math.pi, 0.0, n=20)
    return np.concatenate([lower, around_mouth])


# ----------------------------------------------------------------------------- texture


def _flow(cv: Canvas, rng, origin, n, angles, length, gravity) -> None:
    """Strands from ``origin`` in directions within ``angles``, bending down by ``gravity`` per step."""
    th = rng.uniform(*angles, n)
    d = np.stack([np.cos(th), np.sin(th)], 1)
    step = rng.uniform(*length, n)[:, None] / 10
    p = origin + rng.normal(0, 0.012, (n, 2))
    pts = [p]
    for _ in range(10):
        d = d + [0.0, gravity]
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        p = p + d * step
        pts.append(p)
    light = rng.uniform(0, 1, n) < 0.35
    values = np.where(light, NEUTRAL + rng.integers(25, 60, n), NEUTRAL - rng.integers(30, 70, n))
    cv.texture_lines(np.stack(pts, 1), values, rng.uniform(0.002, 0.006, n))  # (n, 11, 2) paths


def _curls(cv: Canvas, rng, box, n, r0, r1, light_x) -> None:
    """Each curl: a dark arc on its shadowed underside, a short light one on top towards the light."""
    x0, y0, x1, y1 = box
    xs, ys, rs = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n), rng.uniform(r0, r1, n)
    spin = rng.uniform(-40, 40, n)
    widths = rng.uniform(0.003, 0.007, n)
    centres = np.stack([xs, ys], 1)
    cv.texture_arcs(centres, rs, spin - 10, spin + 190, NEUTRAL - 60, widths)
    towards_light = 275 + 30 * light_x + spin / 2
    cv.texture_arcs(centres, rs * 0.8, towards_light - 25, towards_light + 25, NEUTRAL + 55, widths * 0.8)


def _strokes(cv: Canvas, rng, centre, n, a0, a1, r0, r1) -> None:
    """Radial strokes from ``centre`` between angles a0 and a1, from radius ~r0 to ~r1."""
    th = rng.uniform(a0, a1, n)
    u = np.stack([np.cos(th), np.sin(th)], 1)
    start = np.asarray(centre) + u * (r0 * rng.uniform(0.8, 1.2, n))[:, None]
    end = np.asarray(centre) + u * (r1 * rng.uniform(0.8, 1.1, n))[:, None]
    cv.texture_lines(np.stack([start, end], 1), NEUTRAL - rng.integers(30, 70, n), 0.004)


def _stubble(cv: Canvas, rng, ellipse_box, n) -> None:
    """Short, mostly downward strokes scattered in an ellipse (x, y, rx, ry)."""
    x, y, rx, ry = ellipse_box
    r, th = np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * math.pi, n)
    px, py = x + rx * r * np.cos(th), y + ry * r * np.sin(th)
    tilt = rng.uniform(-0.5, 0.5, n)
    length = rng.uniform(0.012, 0.025, n)
    end = np.stack([px + length * np.sin(tilt), py + length * np.cos(tilt)], 1)
    values = np.where(np.arange(n) % 3 > 0, NEUTRAL - 60, NEUTRAL + 45)
    cv.texture_lines(np.stack([np.stack([px, py], 1), end], 1), values, 0.004)
