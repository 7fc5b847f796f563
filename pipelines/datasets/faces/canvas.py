"""The supersampled drawing surface of the face renderer, in canvas units (the picture is 1 x 1).

Shapes drawn with ``head=True`` go through the head's tilt: a rotation about the top of the
neck. Besides the picture, a canvas keeps a region map (which material each pixel shows: the
shading pass lights each material its own way) and a texture layer (128 = neutral; hair strands
and cloth folds are drawn darker or lighter there and become shading later).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND, CLOTH, SKIN, FACE, HAIR = range(5)  # region ids; SKIN is neck and ears, FACE the face itself
REGIONS = 5
NEUTRAL = 128  # texture value that changes nothing


# colours: RGB tuples of ints


def scale(c, f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(x * f)))) for x in c)


def mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def rgba(c, alpha: int) -> tuple[int, int, int, int]:
    return (*c[:3], int(alpha))


# point lists: (N, 2) float arrays in canvas units


def ellipse(cx, cy, rx, ry, a0=0.0, a1=2 * math.pi, n: int | None = None) -> np.ndarray:
    """Points on an ellipse from angle a0 to a1 (radians, y down), enough of them for its size."""
    if n is None:
        n = int(np.clip(400 * max(rx, ry) * (a1 - a0) / (2 * math.pi), 8, 96))
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier curve from p0 to p2 pulled towards p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class Canvas:
    """A picture of ``S`` x ``S`` pixels drawn in canvas units, with a tilted head frame."""

    def __init__(self, image: Image.Image, tilt_deg: float = 0.0, pivot=(0.5, 0.5),
                 layers: bool = True, offset=(0, 0), S: int | None = None):
        self.image = image
        self.S = S or image.size[0]
        self.tilt_deg = float(tilt_deg)
        th = math.radians(tilt_deg)
        self.rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        self.pivot = np.asarray(pivot, float)
        self.offset = np.asarray(offset, float)
        self.draw = ImageDraw.Draw(image, "RGBA")  # fills with alpha blend over what is there
        if layers:
            self.regions = Image.new("L", image.size, BACKGROUND)
            self.texture = Image.new("L", image.size, NEUTRAL)
            self._rdraw, self._tdraw = ImageDraw.Draw(self.regions), ImageDraw.Draw(self.texture)

    def set_image(self, image: Image.Image) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image, "RGBA")

    # coordinates

    def to_world(self, pts, head: bool = True) -> np.ndarray:
        """Canvas units of the head frame -> canvas units of the picture."""
        p = np.asarray(pts, float).reshape(-1, 2)
        return (p - self.pivot) @ self.rot.T + self.pivot if head else p

    def px(self, pts, head: bool = True) -> np.ndarray:
        return self.to_world(pts, head) * self.S - self.offset

    def width(self, w: float) -> int:
        """A line width given in canvas units, in pixels (at least one)."""
        return max(1, int(round(w * self.S)))

    # drawing

    def shape(self, pts, fill, region: int | None = None, head: bool = True) -> None:
        xy = self.px(pts, head).ravel().tolist()
        self.draw.polygon(xy, fill=fill)
        if region is not None:
            self._rdraw.polygon(xy, fill=region)

    def line(self, pts, fill, width: float, head: bool = True, curve: bool = False) -> None:
        self.draw.line(self.px(pts, head).ravel().tolist(), fill=fill, width=self.width(width),
                       joint="curve" if curve else None)

    def circle(self, x, y, r, fill, head: bool = True, outline=None, width: float = 0.0) -> None:
        (px, py), rp = self.px([x, y], head)[0], r * self.S
        self.draw.ellipse([px - rp, py - rp, px + rp, py + rp], fill=fill, outline=outline,
                          width=self.width(width) if outline is not None else 0)

    def texture_lines(self, paths, values, widths, head: bool = True) -> None:
        """Polylines (n, k, 2) on the texture layer, each with its value (128 = neutral) and width."""
        paths = np.asarray(paths, float)
        xy = self.px(paths.reshape(-1, 2), head).reshape(paths.shape)
        pixels = np.maximum(1, np.rint(np.asarray(widths, float) * self.S)).astype(int)
        for path, value, w in zip(xy, np.broadcast_to(values, len(xy)), np.broadcast_to(pixels, len(xy))):
            self._tdraw.line(path.ravel().tolist(), fill=int(value), width=int(w))

    def texture_line(self, pts, value: int, width: float, head: bool = True) -> None:
        self.texture_lines([pts], [value], [width], head)

    def texture_arcs(self, centres, radii, start_deg, end_deg, values, widths, head: bool = True) -> None:
        """Circle arcs on the texture layer; angles in degrees, clockwise from 3 o'clock, turned with the head."""
        xy = self.px(centres, head)
        r = np.asarray(radii, float) * self.S
        boxes = np.concatenate([xy - r[:, None], xy + r[:, None]], 1).tolist()
        turn = self.tilt_deg if head else 0.0
        pixels = np.maximum(1, np.rint(np.asarray(widths, float) * self.S)).astype(int)
        for box, a0, a1, value, w in zip(boxes, np.broadcast_to(start_deg, len(r)), np.broadcast_to(end_deg, len(r)),
                                         np.broadcast_to(values, len(r)), pixels):
            self._tdraw.arc(box, a0 + turn, a1 + turn, fill=int(value), width=int(w))

    def clipped(self, clip_pts, draw, head: bool = True) -> None:
        """Run ``draw(sub)`` on a sub-canvas whose strokes show only inside the polygon ``clip_pts``."""
        xy = self.px(clip_pts, head)
        x0, y0 = np.floor(xy.min(0)).astype(int) - 1
        x1, y1 = np.ceil(xy.max(0)).astype(int) + 2
        box = (int(x0), int(y0), int(x1), int(y1))
        patch = self.image.crop(box)
        mask = Image.new("L", patch.size, 0)
        ImageDraw.Draw(mask).polygon((xy - [x0, y0]).ravel().tolist(), fill=255)
        sub = Canvas(patch, self.tilt_deg, self.pivot, layers=False, offset=self.offset + [x0, y0], S=self.S)
        draw(sub)
        self.image.paste(patch, box[:2], mask)
