"""Procedural cartoon faces: ``render_face(seed, index, size)`` -> uint8 (size, size, 3).

A face depends only on ``(seed, index)``: its attributes (``face_attributes``) and the random
details of its texture are drawn from them, never from the size, so the 32-px face is the 128-px
face seen smaller. Drawing happens at ``supersample`` x the size and is resized down with LANCZOS.

Order of drawing: background; clothing and neck; hair behind the head; ears, face, beard, hair in
front; hair texture; one shading pass (light, occlusion, cast shadows, blush); then the features,
which carry their own shading (eyes, brows, nose, mouth, freckles), glasses and earrings.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .accessories import draw_earrings, draw_glasses
from .attributes import FACE_CLASS_NAMES, HAIR_STYLES, MOUTHS, Layout, face_attributes
from .background import background
from .body import draw_clothing, draw_neck
from .canvas import Canvas
from .features import draw_brow, draw_eye, draw_freckles, draw_mouth, draw_nose
from .hair import draw_beard, draw_hair_back, draw_hair_front, draw_hair_texture
from .head import draw_ears, draw_face_shape
from .shading import shade

__all__ = ["FACE_CLASS_NAMES", "HAIR_STYLES", "MOUTHS", "RENDERER_VERSION", "face_attributes", "render_face",
           "render_labelled", "supersample_for"]

# Bump whenever a change alters the pixels of any face: it is part of the data's identity in stage
# hashes and cache keys, so runs and caches made with another renderer are not taken as current.
RENDERER_VERSION = 2


def supersample_for(size: int) -> int:
    """Drawing scale per image size: 4x for small images, 2x from 128 px on (fine detail is big enough)."""
    return 4 if size < 128 else 2


def render_face(seed: int, index: int, size: int = 64, supersample: int | None = None) -> np.ndarray:
    """Draw face ``index`` under ``seed``: uint8 array (size, size, 3)."""
    return render_labelled(seed, index, size, supersample)[0]


def render_labelled(seed: int, index: int, size: int = 64, supersample: int | None = None) -> tuple[np.ndarray, int]:
    """``render_face`` and the face's class label."""
    a = face_attributes(seed, index)
    lay = Layout.of(a)
    rng = np.random.default_rng([int(seed), int(index), RENDERER_VERSION])  # texture details, not attributes
    S = int(size) * (supersample or supersample_for(size))
    cv = Canvas(background(a, rng, S), a["tilt"], lay.pivot)
    draw_clothing(cv, a, lay, rng)
    draw_hair_back(cv, a, lay)
    draw_neck(cv, a, lay)
    draw_ears(cv, a, lay)
    draw_face_shape(cv, a, lay)
    draw_beard(cv, a, lay)
    draw_hair_front(cv, a, lay)
    draw_hair_texture(cv, a, lay, rng)
    shade(cv, a, lay)
    draw_nose(cv, a, lay)
    draw_mouth(cv, a, lay)
    for side in (-1, 1):
        draw_eye(cv, a, lay, side)
        draw_brow(cv, a, lay, side)
    draw_freckles(cv, a, lay, rng)
    draw_glasses(cv, a, lay)
    draw_earrings(cv, a, lay)
    img = cv.image if cv.S == size else cv.image.resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8), a["label"]
