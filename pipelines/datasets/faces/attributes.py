"""What a synthetic face looks like: its random attributes, drawn from ``(seed, index)`` alone.

``face_attributes`` draws every choice the renderer makes that a person would name (class,
colours, shapes, expression, pose, background kind); ``Layout`` turns them into positions in
canvas units. Neither depends on the image size, so a face is the same face at 32 and 256 px.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from .canvas import mix, scale

MOUTHS = ("smile", "neutral", "open")
FACE_CLASS_NAMES = [f"{m}{'+glasses' if g else ''}" for m in MOUTHS for g in (0, 1)]
HAIR_STYLES = ("short", "long", "bob", "curly", "bald", "spiky", "bun", "afro")
BACKGROUNDS = ("gradient", "noise", "stripes", "dots", "bokeh", "bricks", "tiles")
COLLARS = ("crew", "v", "collar")
PATTERNS = ("plain", "stripes", "plain", "checks")

SKIN = [(255, 224, 196), (241, 194, 167), (234, 192, 134), (224, 172, 138), (198, 144, 105),
        (170, 120, 80), (141, 95, 60), (110, 72, 45), (85, 55, 38), (255, 213, 170)]
HAIR = [(40, 33, 31), (66, 44, 30), (100, 66, 38), (150, 105, 62), (222, 190, 118),
        (140, 55, 32), (196, 98, 42), (150, 150, 152), (232, 230, 224)]
HAIR_P = [0.22, 0.18, 0.15, 0.1, 0.12, 0.06, 0.06, 0.06, 0.05]
HAIR_FUN = [(62, 95, 205), (222, 92, 160), (125, 62, 175), (40, 160, 140)]
EYES = [(92, 56, 30), (58, 40, 30), (62, 112, 190), (66, 138, 80), (140, 110, 52), (118, 128, 140)]
GLASSES = [(20, 20, 24), (60, 40, 30), (160, 30, 40), (30, 60, 150), (150, 118, 40)]
METALS = [(212, 175, 80), (200, 200, 210), (190, 120, 90)]


def _hsv(h, s, v) -> tuple[int, int, int]:
    return tuple(int(255 * x) for x in colorsys.hsv_to_rgb(h % 1.0, s, v))


def face_attributes(seed: int, index: int) -> dict:
    """The random attributes of face ``index`` under ``seed`` (independent of the image size)."""
    rng = np.random.default_rng([int(seed), int(index)])
    label = int(rng.integers(len(FACE_CLASS_NAMES)))  # drawn first: the same labels as renderer v1
    a = dict(label=label, mouth=MOUTHS[label // 2], glasses=bool(label % 2))
    for part in (_colours, _head, _hair, _eyes, _brows, _nose, _mouth, _glasses, _scene):
        a.update(part(rng, a))
    return a


def _colours(rng, a):
    u = rng.uniform
    skin = mix(SKIN[rng.integers(len(SKIN))], tuple(rng.integers(0, 256, 3)), u(0, 0.06))
    hair = HAIR_FUN[rng.integers(len(HAIR_FUN))] if u() < 0.06 else HAIR[rng.choice(len(HAIR), p=HAIR_P)]
    lip = mix(skin, (150, 28, 42), u(0.55, 0.8))
    return dict(skin=skin, hair=scale(hair, u(0.9, 1.1)), lip=lip,
                blush=float(u(0.1, 0.5) if u() < 0.45 else 0.0), freckles=bool(u() < 0.18))


def _head(rng, a):
    u = rng.uniform
    return dict(cx=0.5 + u(-0.03, 0.03), cy=0.46 + u(-0.025, 0.025), fw=u(0.2, 0.245), fh=u(0.26, 0.3),
                squareness=u(2.0, 2.9), chin=u(0.1, 0.28),
                tilt=float(np.clip(rng.normal(0.0, 6.0), -14.0, 14.0)), yaw=u(-1.0, 1.0),
                light_x=float(rng.choice([-1, 1]) * u(0.4, 1.0)), light=u(0.6, 1.0))


def _hair(rng, a):
    u = rng.uniform
    return dict(hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))], part=u(-0.6, 0.6),
                fringe=u(0.0, 1.0), beard=bool(u() < 0.1))


def _eyes(rng, a):
    u = rng.uniform
    return dict(eye_color=EYES[rng.integers(len(EYES))], eye_dx=u(0.38, 0.48), eye_y=u(-0.1, 0.0),
                eye_w=u(0.2, 0.26), eye_open=u(0.42, 0.78), eye_slant=u(-0.6, 0.8),
                look_x=u(-1, 1), look_y=u(-0.6, 0.6), lashes=int(rng.integers(2, 6)))


def _brows(rng, a):
    u = rng.uniform
    return dict(brow_up=u(0.12, 0.26), brow_inner=u(-1.0, 1.0), brow_arch=u(0.0, 1.0), brow_w=u(0.016, 0.026))


def _nose(rng, a):
    u = rng.uniform
    return dict(nose=int(rng.integers(3)), nose_len=u(0.18, 0.26), nose_w=u(0.1, 0.15))


def _mouth(rng, a):
    """Each class has its own shape, readable at 32 px: a wide U (smile), a flat line (neutral), a tall O (open)."""
    u = rng.uniform
    kind = a["mouth"]
    if kind == "smile":
        shape = dict(mouth_w=u(0.38, 0.48), smile=u(0.15, 0.22), mouth_open=u(0.1, 0.16) if u() < 0.5 else 0.0,
                     lip_u=u(0.03, 0.045), lip_l=u(0.04, 0.06))
    elif kind == "neutral":
        shape = dict(mouth_w=u(0.3, 0.38), smile=u(-0.01, 0.01), mouth_open=0.0, lip_u=u(0.022, 0.035),
                     lip_l=u(0.03, 0.045))
    else:
        shape = dict(mouth_w=u(0.2, 0.26), smile=u(0.0, 0.02), mouth_open=u(0.32, 0.42), lip_u=u(0.03, 0.045),
                     lip_l=u(0.035, 0.05))
    return dict(shape, mouth_y=u(0.52, 0.6), asym=u(-0.015, 0.015))


def _glasses(rng, a):
    u = rng.uniform
    return dict(sunglasses=bool(a["glasses"] and u() < 0.2), glasses_shape=("round", "square", "cat")[rng.integers(3)],
                glasses_color=GLASSES[rng.integers(len(GLASSES))], frame_w=u(0.018, 0.026),
                earrings=("none", "none", "stud", "hoop")[rng.integers(4)], metal=METALS[rng.integers(len(METALS))])


def _scene(rng, a):
    u = rng.uniform
    h0 = u()
    bg1 = _hsv(h0, u(0.15, 0.6), u(0.6, 0.95))
    bg2 = scale(_hsv(h0 + u(-0.12, 0.12), u(0.15, 0.7), u(0.6, 0.95)), u(0.72, 0.9))
    shirt = _hsv(u(), u(0.3, 0.9), u(0.3, 0.95))
    return dict(background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))], bg1=bg1, bg2=bg2,
                bg_scale=u(0.12, 0.2), bg_angle=u(0, math.pi), shirt=shirt, shoulder_w=u(0.36, 0.46),
                collar=COLLARS[rng.integers(len(COLLARS))], pattern=PATTERNS[rng.integers(len(PATTERNS))])


@dataclass
class Layout:
    """Positions of the face's parts in canvas units of the (untilted) head frame."""

    cx: float
    cy: float
    fw: float  # half width of the face
    fh: float  # half height of the face
    mid: float  # x of the features' centre line (moves with yaw)
    eyes: tuple  # ((x, y, half width, half height), ...) left then right in the picture
    nose: tuple  # (x, y of the nose tip)
    mouth: tuple  # (x, y, half width)
    brow_y: float  # the brows' base line
    pivot: tuple  # the tilt's centre: top of the neck

    @classmethod
    def of(cls, a: dict) -> "Layout":
        cx, cy, fw, fh = a["cx"], a["cy"], a["fw"], a["fh"]
        mid = cx + a["yaw"] * 0.1 * fw
        ey = cy + a["eye_y"] * fh
        eyes = []
        for side in (-1, 1):
            k = 1 + side * a["yaw"] * 0.08  # the eye on the side the face turns to looks bigger
            ew = a["eye_w"] * fw * k
            eyes.append((mid + side * a["eye_dx"] * fw * k, ey, ew, ew * a["eye_open"]))
        nose = (cx + a["yaw"] * 0.2 * fw, ey + a["nose_len"] * fh * 1.6)
        mouth = (cx + a["yaw"] * 0.13 * fw, cy + a["mouth_y"] * fh, a["mouth_w"] * fw)
        brow_y = ey - eyes[0][3] - a["brow_up"] * fh * 0.55
        return cls(cx, cy, fw, fh, mid, tuple(eyes), nose, mouth, brow_y, (cx, cy + fh * 0.95))
