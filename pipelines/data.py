"""Datasets of the pipeline: embedded synthetic faces, Fashion-MNIST, image folders, CIFAR-10.

Every dataset yields ``(image, label)``: ``image`` is a float32 tensor ``(C, size, size)`` in
[-1, 1] and ``label`` an int64 scalar tensor (-1 when the dataset has no labels). Every dataset
object has ``channels`` (1 or 3), ``num_classes`` (0 when unlabelled) and ``class_names``.

``build_datasets(DataConfig(...))`` returns ``(train, val)``; both splits are reproducible.
"""

from __future__ import annotations

import colorsys
import difflib
import gzip
import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps
from torch.utils.data import Dataset

__all__ = [
    "DATASET_NAMES",
    "DataConfig",
    "DataError",
    "build_datasets",
    "SyntheticFaces",
    "ArrayImageDataset",
    "ImageFolderDataset",
    "render_face",
    "face_attributes",
    "read_idx",
    "FACE_CLASS_NAMES",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
]

DATASET_NAMES = ("synthetic-faces", "fashion-mnist", "folder", "cifar10")
FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_SIZE, MAX_SIZE = 8, 2048


class DataError(ValueError):
    """A dataset file exists but cannot be used (corrupt, truncated, wrong format)."""


# ----------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    name: str = "synthetic-faces"
    root: str | None = None
    size: int = 32
    n_train: int = 4096
    n_val: int = 512
    val_fraction: float = 0.1
    seed: int = 0
    skip_bad_files: bool = False
    download: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in DATASET_NAMES:
            near = difflib.get_close_matches(str(self.name), DATASET_NAMES, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(
                f"data.name must be one of {', '.join(DATASET_NAMES)}; got {self.name!r}{hint}"
            )
        if isinstance(self.root, Path):
            self.root = str(self.root)
        if self.root == "":
            self.root = None
        if self.root is not None and not isinstance(self.root, str):
            raise ValueError(f"data.root must be a path string or null; got {self.root!r}")
        if self.name in ("folder", "cifar10") and self.root is None:
            raise ValueError(f"data.root is required for data.name={self.name!r} (the directory of the images)")
        _check_int("data.size", self.size, MIN_SIZE, MAX_SIZE)
        if self.name == "synthetic-faces":
            _check_int("data.size", self.size, MIN_SIZE, 512, " for synthetic-faces")
        _check_int("data.n_train", self.n_train, 1, 2**31)
        _check_int("data.n_val", self.n_val, 1, 2**31)
        _check_int("data.seed", self.seed, 0, 2**63 - 1)
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not (0.0 < float(vf) < 1.0):
            raise ValueError(f"data.val_fraction must be a number with 0 < data.val_fraction < 1; got {vf!r}")
        self.val_fraction = float(vf)
        for key in ("skip_bad_files", "download"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"data.{key} must be true or false; got {getattr(self, key)!r}")


def _check_int(key, value, lo, hi, where=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{key} must be an integer{where}; got {value!r}")
    if not (lo <= value <= hi):
        raise ValueError(f"{key} must be between {lo} and {hi}{where}; got {value}")


def build_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """Return the ``(train, val)`` datasets described by ``cfg``."""
    if cfg.name == "synthetic-faces":
        return (
            SyntheticFaces(cfg.n_train, cfg.size, cfg.seed, split="train"),
            SyntheticFaces(cfg.n_val, cfg.size, cfg.seed, split="val"),
        )
    if cfg.name == "fashion-mnist":
        return _build_fashion_mnist(cfg)
    if cfg.name == "folder":
        return _build_folder(cfg)
    if cfg.name == "cifar10":
        return _build_cifar10(cfg)
    raise AssertionError(cfg.name)  # unreachable: DataConfig validated the name


def _to_tensor(arr: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float32 (C, size, size) in [-1, 1]."""
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        arr = arr.copy()
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    t = t.float().div_(127.5).sub_(1.0)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        t = t.clamp_(-1.0, 1.0)
    return t


def _label(y: int) -> torch.Tensor:
    return torch.tensor(int(y), dtype=torch.int64)


# ----------------------------------------------------------------------------- synthetic faces

MOUTHS = ("smile", "neutral", "open")
FACE_CLASS_NAMES = [f"{m}{'+glasses' if g else ''}" for m in MOUTHS for g in (0, 1)]
HAIR_STYLES = ("short", "long", "bob", "curly", "bald", "spiky", "bun")
VAL_INDEX_OFFSET = 2**32  # val images use indices 2**32 + i: disjoint from any train index

_SKIN = [(255, 224, 196), (241, 194, 167), (234, 192, 134), (224, 172, 138), (198, 144, 105),
         (170, 120, 80), (141, 95, 60), (110, 72, 45), (85, 55, 38), (255, 213, 170)]
_HAIR = [(28, 24, 24), (60, 40, 28), (100, 66, 38), (150, 105, 62), (222, 190, 118),
         (140, 55, 32), (196, 98, 42), (150, 150, 152), (232, 230, 224)]
_HAIR_P = [0.22, 0.18, 0.15, 0.1, 0.12, 0.06, 0.06, 0.06, 0.05]
_HAIR_FUN = [(62, 95, 205), (222, 92, 160), (125, 62, 175), (40, 160, 140)]
_EYES = [(92, 56, 30), (40, 30, 25), (62, 112, 190), (66, 138, 80), (140, 110, 52), (118, 128, 140)]
_GLASSES = [(20, 20, 24), (60, 40, 30), (160, 30, 40), (30, 60, 150), (180, 150, 60)]


def _mix(a, b, t):
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def _scale(c, f):
    return tuple(int(max(0, min(255, round(x * f)))) for x in c)


def face_attributes(seed: int, index: int) -> dict:
    """The random attributes of face ``index`` under ``seed`` (independent of the image size)."""
    rng = np.random.default_rng([int(seed), int(index)])
    u = rng.uniform
    label = int(rng.integers(len(FACE_CLASS_NAMES)))
    mouth, glasses = MOUTHS[label // 2], bool(label % 2)
    skin = _mix(_SKIN[rng.integers(len(_SKIN))], tuple(rng.integers(0, 256, 3)), u(0, 0.06))
    if u() < 0.06:
        hair = _HAIR_FUN[rng.integers(len(_HAIR_FUN))]
    else:
        hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)]
    hair = _scale(hair, u(0.9, 1.1))
    h0 = u()
    bg1 = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(h0, u(0.15, 0.6), u(0.65, 1.0)))
    bg2 = tuple(int(255 * v) for v in colorsys.hsv_to_rgb((h0 + u(-0.15, 0.15)) % 1, u(0.15, 0.7), u(0.45, 0.95)))
    shirt = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(u(), u(0.3, 0.9), u(0.3, 0.95)))
    return dict(
        label=label, mouth=mouth, glasses=glasses,
        sunglasses=bool(glasses and u() < 0.2),
        glasses_shape=("round", "square")[rng.integers(2)],
        glasses_color=_GLASSES[rng.integers(len(_GLASSES))],
        skin=skin, hair=hair, hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        bg1=bg1, bg2=bg2, gradient=bool(u() < 0.6), shirt=shirt,
        cx=0.5 + u(-0.03, 0.03), cy=0.47 + u(-0.025, 0.025),
        fw=u(0.2, 0.25), fh=u(0.26, 0.31), squareness=u(2.0, 2.9),
        eye_color=_EYES[rng.integers(len(_EYES))], eye_dx=u(0.36, 0.48), eye_y=u(-0.1, 0.02),
        eye_w=u(0.14, 0.2), eye_h=u(0.65, 1.0), simple_eyes=bool(u() < 0.25),
        brow_up=u(0.16, 0.26), brow_tilt=u(-0.06, 0.08), brow_w=u(0.012, 0.022),
        nose=int(rng.integers(3)), nose_len=u(0.18, 0.26),
        mouth_y=u(0.5, 0.6), mouth_w=u(0.28, 0.44), grin=bool(u() < 0.5),
        lip=_mix(skin, (150, 30, 40), u(0.45, 0.75)),
        blush=bool(u() < 0.35),
    )


def render_face(seed: int, index: int, size: int = 64, supersample: int = 4) -> np.ndarray:
    """Draw the cartoon face ``index`` under ``seed``: uint8 array (size, size, 3).

    Drawn at ``supersample`` x the size with PIL and downsampled with LANCZOS (anti-aliased).
    """
    a = face_attributes(seed, index)
    S = size * supersample

    def p(v):
        return v * S

    def box(x0, y0, x1, y1):
        return [p(x0), p(y0), p(x1), p(y1)]

    def lw(v):  # line width in canvas pixels, at least one
        return max(1, int(round(v * S)))

    # background: flat or vertical gradient
    if a["gradient"]:
        t = np.linspace(0.0, 1.0, S, dtype=np.float32)[:, None, None]
        bg = (np.asarray(a["bg1"], np.float32) * (1 - t) + np.asarray(a["bg2"], np.float32) * t)
        img = Image.fromarray(np.broadcast_to(bg, (S, S, 3)).astype(np.uint8), "RGB")
    else:
        img = Image.new("RGB", (S, S), a["bg1"])
    d = ImageDraw.Draw(img)

    cx, cy, fw, fh = a["cx"], a["cy"], a["fw"], a["fh"]
    skin, hair, style = a["skin"], a["hair"], a["hair_style"]
    dark_skin = _scale(skin, 0.78)
    top = cy - fh

    # shoulders and shirt
    d.ellipse(box(cx - 0.4, cy + fh * 1.05, cx + 0.4, cy + fh * 1.05 + 0.55), fill=a["shirt"])
    # hair behind the head
    if style == "long":
        d.rounded_rectangle(box(cx - fw * 1.2, top - fh * 0.12, cx + fw * 1.2, cy + fh * 1.25),
                            radius=p(fw * 0.9), fill=hair)
    elif style == "bob":
        d.rounded_rectangle(box(cx - fw * 1.22, top - fh * 0.12, cx + fw * 1.22, cy + fh * 0.45),
                            radius=p(fw * 0.8), fill=hair)
    elif style == "curly":
        r = fw * 0.42
        for k in range(11):
            ang = math.pi * (0.95 + 1.1 * k / 10)
            x, y = cx + math.cos(ang) * fw * 1.05, cy - fh * 0.1 + math.sin(ang) * fh * 1.0
            d.ellipse(box(x - r, y - r, x + r, y + r), fill=hair)
    elif style == "bun":
        r = fw * 0.4
        d.ellipse(box(cx - r, top - r * 1.5, cx + r, top + r * 0.5), fill=hair)
    # neck
    d.rectangle(box(cx - fw * 0.38, cy + fh * 0.6, cx + fw * 0.38, cy + fh * 1.2), fill=dark_skin)
    d.ellipse(box(cx - fw * 0.38, cy + fh * 1.05, cx + fw * 0.38, cy + fh * 1.35), fill=dark_skin)
    # ears
    if style in ("short", "bald", "spiky", "bun"):
        ew, eh, ey = fw * 0.2, fh * 0.2, cy + fh * 0.0
        for s in (-1, 1):
            ex = cx + s * fw * 0.97
            d.ellipse(box(ex - ew, ey - eh, ex + ew, ey + eh), fill=skin, outline=dark_skin, width=lw(0.006))
    # face: superellipse
    n = a["squareness"]
    pts = []
    for k in range(96):
        th = 2 * math.pi * k / 96
        c, s = math.cos(th), math.sin(th)
        x = math.copysign(abs(c) ** (2 / n), c) * fw
        y = math.copysign(abs(s) ** (2 / n), s) * fh
        if y > 0:  # narrower chin
            x *= 1 - 0.18 * (y / fh) ** 2
        pts.append((p(cx + x), p(cy + y)))
    d.polygon(pts, fill=skin, outline=dark_skin, width=lw(0.006))

    # hair in front (over the forehead)
    def cap(hairline, widen=1.06, lift=0.1):
        hh = (hairline - (top - fh * lift))
        d.chord(box(cx - fw * widen, hairline - hh, cx + fw * widen, hairline + hh), 180, 360, fill=hair)

    if style == "short":
        cap(cy - fh * 0.5)
        for s in (-1, 1):  # sideburns
            d.rectangle(box(cx + s * fw * 0.98 - fw * 0.1, cy - fh * 0.55, cx + s * fw * 0.98 + fw * 0.1, cy - fh * 0.1), fill=hair)
    elif style in ("long", "bob"):
        cap(cy - fh * 0.42, widen=1.1)
        part = cx + fw * 0.3 * (1 if (a["label"] + int(fw * 1000)) % 2 else -1)
        d.pieslice(box(part - fw * 0.9, cy - fh * 0.9, part + fw * 0.9, cy - fh * 0.1), 180, 360, fill=hair)
        for s in (-1, 1):  # side locks framing the face
            d.rectangle(box(cx + s * fw * 1.0 - fw * 0.16, cy - fh * 0.5, cx + s * fw * 1.0 + fw * 0.16,
                            cy + fh * (0.9 if style == "long" else 0.35)), fill=hair)
    elif style == "curly":
        cap(cy - fh * 0.55, widen=1.02)
        r = fw * 0.22
        for k in range(7):
            x = cx - fw * 0.75 + fw * 1.5 * k / 6
            y = cy - fh * 0.55 + abs(k - 3) * fh * 0.03
            d.ellipse(box(x - r, y - r, x + r, y + r), fill=hair)
    elif style == "bald":
        for s in (-1, 1):
            x = cx + s * fw * 0.95
            d.ellipse(box(x - fw * 0.16, cy - fh * 0.55, x + fw * 0.16, cy - fh * 0.05), fill=hair)
    elif style == "spiky":
        cap(cy - fh * 0.55, widen=1.0)
        spikes = []
        m = 6
        for k in range(m + 1):
            x = cx - fw * 0.95 + fw * 1.9 * k / m
            yb = cy - fh * 0.5 - fh * 0.5 * math.sqrt(max(0.0, 1 - ((x - cx) / fw) ** 2))
            spikes.append((p(x), p(yb + fh * 0.1)))
            if k < m:
                xt = x + fw * 1.9 / m / 2
                yt = cy - fh * 0.5 - fh * 0.75 * math.sqrt(max(0.0, 1 - ((xt - cx) / (fw * 1.1)) ** 2)) - fh * 0.12
                spikes.append((p(xt), p(yt)))
        d.polygon(spikes, fill=hair)
    elif style == "bun":
        cap(cy - fh * 0.5)

    # brows
    eye_y = cy + a["eye_y"] * fh
    ew = a["eye_w"] * fw * 1.35
    eh = ew * a["eye_h"] * 0.8
    brow_c = _scale(hair, 0.7) if sum(hair) > 150 else hair
    if sum(brow_c) > 500:
        brow_c = _scale(brow_c, 0.6)
    for s in (-1, 1):
        ex = cx + s * a["eye_dx"] * fw
        by = eye_y - eh - a["brow_up"] * fh * 0.55
        t = a["brow_tilt"] * fh
        d.line([(p(ex - s * ew * 1.1), p(by + t * 0.5)), (p(ex), p(by - abs(t) * 0.3)), (p(ex + s * ew * 1.1), p(by - t * 0.5))],
               fill=brow_c, width=lw(a["brow_w"]), joint="curve")
    # eyes
    for s in (-1, 1):
        ex = cx + s * a["eye_dx"] * fw
        if a["simple_eyes"]:
            r = ew * 0.45
            d.ellipse(box(ex - r, eye_y - r * 1.25, ex + r, eye_y + r * 1.25), fill=(30, 24, 22))
            hr = r * 0.35
            d.ellipse(box(ex + r * 0.1, eye_y - r * 0.8, ex + r * 0.1 + hr * 2, eye_y - r * 0.8 + hr * 2), fill=(250, 250, 250))
            continue
        d.ellipse(box(ex - ew, eye_y - eh, ex + ew, eye_y + eh), fill=(250, 250, 248), outline=(40, 30, 30), width=lw(0.006))
        ri = min(eh * 0.95, ew * 0.62)
        d.ellipse(box(ex - ri, eye_y - ri, ex + ri, eye_y + ri), fill=a["eye_color"])
        rp = ri * 0.5
        d.ellipse(box(ex - rp, eye_y - rp, ex + rp, eye_y + rp), fill=(15, 12, 12))
        rh = ri * 0.28
        d.ellipse(box(ex + ri * 0.2, eye_y - ri * 0.6, ex + ri * 0.2 + 2 * rh, eye_y - ri * 0.6 + 2 * rh), fill=(255, 255, 255))
    # nose
    ny = eye_y + a["nose_len"] * fh * 1.6
    nose_c = _scale(skin, 0.68)
    nw = fw * 0.12
    if a["nose"] == 0:
        d.arc(box(cx - nw, ny - nw * 0.8, cx + nw, ny + nw * 0.8), 20, 160, fill=nose_c, width=lw(0.012))
    elif a["nose"] == 1:
        d.line([(p(cx + nw * 0.2), p(eye_y + fh * 0.05)), (p(cx - nw * 0.7), p(ny)), (p(cx + nw * 0.5), p(ny))],
               fill=nose_c, width=lw(0.01), joint="curve")
    else:
        d.ellipse(box(cx - nw * 0.8, ny - nw * 0.6, cx + nw * 0.8, ny + nw * 0.6), fill=_scale(skin, 0.88))
        for s in (-1, 1):
            r = nw * 0.18
            d.ellipse(box(cx + s * nw * 0.4 - r, ny + nw * 0.1 - r, cx + s * nw * 0.4 + r, ny + nw * 0.1 + r), fill=nose_c)
    # cheeks
    if a["blush"]:
        bc = _mix(skin, (240, 110, 120), 0.35)
        for s in (-1, 1):
            bx, byy = cx + s * fw * 0.6, ny + fh * 0.02
            d.ellipse(box(bx - fw * 0.16, byy - fh * 0.07, bx + fw * 0.16, byy + fh * 0.07), fill=bc)
    # mouth
    my = cy + a["mouth_y"] * fh
    mw = a["mouth_w"] * fw
    lip = a["lip"]
    if a["mouth"] == "smile":
        if a["grin"]:
            d.chord(box(cx - mw, my - mw * 0.75, cx + mw, my + mw * 0.75), 0, 180, fill=(90, 20, 30))
            d.chord(box(cx - mw, my - mw * 0.75, cx + mw, my + mw * 0.75), 0, 180, outline=lip, width=lw(0.008))
            d.rectangle(box(cx - mw * 0.75, my, cx + mw * 0.75, my + mw * 0.18), fill=(250, 250, 245))
        else:
            d.arc(box(cx - mw, my - mw * 0.8, cx + mw, my + mw * 0.5), 15, 165, fill=lip, width=lw(0.022))
    elif a["mouth"] == "neutral":
        d.line([(p(cx - mw * 0.8), p(my + fh * 0.05)), (p(cx + mw * 0.8), p(my + fh * 0.05))], fill=lip, width=lw(0.02))
        r = lw(0.02) / 2
        for s in (-1, 1):
            x = p(cx + s * mw * 0.8)
            d.ellipse([x - r, p(my + fh * 0.05) - r, x + r, p(my + fh * 0.05) + r], fill=lip)
    else:  # open mouth
        ow, oh = mw * 0.55, mw * 0.45
        oy = my + fh * 0.06
        d.ellipse(box(cx - ow, oy - oh, cx + ow, oy + oh), fill=(80, 16, 26), outline=lip, width=lw(0.012))
        d.chord(box(cx - ow * 0.7, oy, cx + ow * 0.7, oy + oh * 0.9), 180, 360, fill=(214, 96, 110))
    # glasses
    if a["glasses"]:
        gc = a["glasses_color"]
        gr = max(ew * 1.25, fw * 0.22)
        gw = lw(0.014)
        for s in (-1, 1):
            ex = cx + s * a["eye_dx"] * fw
            b = box(ex - gr, eye_y - gr * 0.85, ex + gr, eye_y + gr * 0.85)
            fill = (25, 25, 35) if a["sunglasses"] else None
            if a["glasses_shape"] == "round":
                d.ellipse(b, fill=fill, outline=gc, width=gw)
            else:
                d.rounded_rectangle(b, radius=p(gr * 0.3), fill=fill, outline=gc, width=gw)
            # temple arm to the side of the head
            d.line([(p(ex + s * gr), p(eye_y - gr * 0.2)), (p(cx + s * fw * 1.0), p(eye_y - gr * 0.4))], fill=gc, width=gw)
        x0 = cx - a["eye_dx"] * fw + gr
        d.arc(box(x0, eye_y - gr * 0.5, x0 + max(2 * (a["eye_dx"] * fw - gr), 1e-3), eye_y + gr * 0.3), 180, 360, fill=gc, width=gw)

    if supersample > 1:
        img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


class SyntheticFaces(Dataset):
    """Procedural RGB cartoon faces; image ``i`` depends only on ``(seed, index)``.

    Train images use indices ``0..n-1``, val images ``2**32 + i`` (disjoint).
    Labels: mouth (smile / neutral / open) x glasses -> 6 classes, see ``class_names``.
    Images are generated lazily and cached in memory (uint8) per instance.
    """

    channels = 3

    def __init__(self, n: int, size: int = 32, seed: int = 0, split: str = "train"):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val'; got {split!r}")
        self.n, self.size, self.seed, self.split = int(n), int(size), int(seed), split
        self.offset = 0 if split == "train" else VAL_INDEX_OFFSET
        self.class_names = list(FACE_CLASS_NAMES)
        self.num_classes = len(self.class_names)
        self._cache = np.zeros((self.n, self.size, self.size, 3), np.uint8)  # lazily touched pages
        self._labels = np.full(self.n, -1, np.int64)

    def __len__(self):
        return self.n

    def _ensure(self, i: int):
        if self._labels[i] < 0:
            idx = self.offset + i
            self._cache[i] = render_face(self.seed, idx, self.size)
            self._labels[i] = face_attributes(self.seed, idx)["label"]

    def image_uint8(self, i: int) -> np.ndarray:
        self._ensure(i)
        return self._cache[i]

    def materialize(self) -> tuple[np.ndarray, np.ndarray]:
        """Generate every image; return ``(images uint8 (N,H,W,3), labels int64 (N,))``."""
        for i in range(self.n):
            self._ensure(i)
        return self._cache, self._labels

    def __getitem__(self, i):
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        self._ensure(i)
        return _to_tensor(self._cache[i], self.size), _label(self._labels[i])

    def __repr__(self):
        return f"SyntheticFaces(n={self.n}, size={self.size}, seed={self.seed}, split={self.split!r})"


# ----------------------------------------------------------------------------- arrays (fashion-mnist, cifar10)


class ArrayImageDataset(Dataset):
    """uint8 images in memory: (N, H, W) greyscale or (N, H, W, 3) RGB, with int labels."""

    def __init__(self, images: np.ndarray, labels, class_names: list[str], size: int, name: str = ""):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(images):
            raise DataError(f"{name}: {len(images)} images but {len(self.labels)} labels")
        self.channels = 1 if images.ndim == 3 else images.shape[-1]
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.size = int(size)
        self.name = name

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return _to_tensor(self.images[i], self.size), _label(self.labels[i])

    def __repr__(self):
        return f"ArrayImageDataset({self.name!r}, n={len(self)}, size={self.size}, channels={self.channels})"


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read a gzip (or plain) IDX file of unsigned bytes with ``ndim`` dimensions."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read IDX file (corrupt or truncated gzip: {e})") from e
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, header needs {4 + 4 * ndim})")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x{0x0800 + ndim:08x}: unsigned bytes, {ndim} dims)"
        )
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    start = 4 + 4 * ndim
    need = start + math.prod(dims)
    if len(data) != need:
        raise DataError(
            f"{path}: truncated or corrupt IDX file: dims {dims} need {need} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims)


def _find_idx(root: Path, name: str) -> Path:
    p = root / name
    if p.exists():
        return p
    plain = root / name[:-3]
    if plain.exists():
        return plain
    raise FileNotFoundError(
        f"Fashion-MNIST file not found: {p}. Install the Debian package with "
        f"`apt-get install -y dataset-fashion-mnist` (files in {FASHION_MNIST_DEFAULT_ROOT}) "
        f"or pass data.root=DIR holding {', '.join(_IDX_FILES['train'] + _IDX_FILES['val'])}"
    )


def _build_fashion_mnist(cfg: DataConfig):
    root = Path(cfg.root or FASHION_MNIST_DEFAULT_ROOT)
    out = []
    for split in ("train", "val"):
        img_path, lab_path = (_find_idx(root, f) for f in _IDX_FILES[split])
        images = read_idx(img_path, 3)
        labels = read_idx(lab_path, 1)
        if len(images) != len(labels):
            raise DataError(f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{lab_path}: label {int(labels.max())} out of range 0..9")
        h, w = images.shape[1:]
        ph, pw = max(0, 32 - h), max(0, 32 - w)
        images = np.pad(images, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))  # background 0 -> -1
        out.append(ArrayImageDataset(images, labels, FASHION_MNIST_CLASSES, cfg.size, f"fashion-mnist/{split}"))
    return out[0], out[1]


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # from the dataset authors' page
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "val": ["test_batch.bin"]}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the red, green and blue planes of a 32x32 image


def read_cifar10_bin(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One file of the CIFAR-10 binary version: (N, 32, 32, 3) uint8 images and (N,) labels.
    The binary version is plain fixed-size records; the python version is pickles, which this
    project never loads."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % _CIFAR_RECORD:
        raise DataError(f"{path}: {data.size} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records "
                        f"(truncated or not a CIFAR-10 binary batch)")
    records = data.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DataError(f"{path}: label {int(labels.max())} out of range 0..9 (not a CIFAR-10 binary batch)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def download_cifar10(root: Path) -> None:
    """Fetches the binary archive, checks its MD5 and writes only the expected member files."""
    import tarfile
    import tempfile
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "cifar-10-binary.tar.gz"
        urllib.request.urlretrieve(CIFAR10_URL, archive)
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        if md5 != CIFAR10_MD5:
            raise DataError(f"{CIFAR10_URL} downloaded with MD5 {md5}, expected {CIFAR10_MD5}; try again")
        out = root / CIFAR10_DIR
        out.mkdir(exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for name in CIFAR10_FILES["train"] + CIFAR10_FILES["val"] + ["batches.meta.txt"]:
                member = tar.extractfile(f"{CIFAR10_DIR}/{name}")  # reads bytes: no path from the archive is used
                (out / name).write_bytes(member.read())


def _build_cifar10(cfg: DataConfig):
    root = Path(cfg.root)
    folder = root / CIFAR10_DIR
    if not (folder / CIFAR10_FILES["val"][0]).is_file():
        if cfg.download:
            download_cifar10(root)
        elif (root / "cifar-10-batches-py").is_dir():
            raise DataError(
                f"{root / 'cifar-10-batches-py'} is the python (pickle) version of CIFAR-10, which this project never "
                f"loads: a pickle can run code. Put the binary version ({CIFAR10_URL}, folder {CIFAR10_DIR}) in "
                f"{root}, or set data.download=true")
        else:
            raise FileNotFoundError(
                f"CIFAR-10 not found: {folder / CIFAR10_FILES['val'][0]} does not exist. Set data.download=true to "
                f"download the binary version, or extract {CIFAR10_URL} into {root}")
    out = []
    for split in ("train", "val"):
        parts = []
        for name in CIFAR10_FILES[split]:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR-10 file missing: {path} (extract {CIFAR10_URL} into {root} again)")
            parts.append(read_cifar10_bin(path))
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        out.append(ArrayImageDataset(images, labels, CIFAR10_CLASSES, cfg.size, f"cifar10/{split}"))
    return out[0], out[1]


# ----------------------------------------------------------------------------- image folders


def load_image_rgb(path: str | os.PathLike) -> Image.Image:
    """Open any image (L, LA, P, RGBA, CMYK, I;16, ...) as RGB; alpha is composited over white."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.size and a.max() > 255):
            a = a / 257.0
        elif mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (up or down), then center-crop to ``size`` x ``size``."""
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.LANCZOS if s < 1 else Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _bad_file_error(path, e):
    return DataError(
        f"cannot read image file {path}: {type(e).__name__}: {e}. Remove or fix it, "
        f"or set data.skip_bad_files=true to skip unreadable files"
    )


_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


class ImageFolderDataset(Dataset):
    """Images from files; labels from immediate subfolders (ImageFolder semantics) or -1."""

    channels = 3

    def __init__(self, files: list[Path], labels: list[int], class_names: list[str], size: int,
                 skip_bad_files: bool = False, root: str | None = None):
        self.files = list(files)
        self.labels = list(labels)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.size = int(size)
        self.skip_bad_files = skip_bad_files
        self.root = root
        self._bad: set[int] = set()

    def __len__(self):
        return len(self.files)

    def _load(self, i):
        im = resize_center_crop(load_image_rgb(self.files[i]), self.size)
        return _to_tensor(np.array(im, dtype=np.uint8), self.size), _label(self.labels[i])

    def __getitem__(self, i):
        n = len(self.files)
        i = int(i) % n if n else int(i)
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                return self._load(j)
            except _READ_ERRORS as e:
                if not self.skip_bad_files:
                    raise _bad_file_error(self.files[j], e) from e
                self._bad.add(j)
                warnings.warn(f"skipping unreadable image file {self.files[j]}: {e}", stacklevel=2)
        raise DataError(f"no readable image files in {self.root} ({n} files, all unreadable)")

    def validate(self) -> list[tuple[str, str]]:
        """Decode every file. Returns ``[(path, error)]`` of unreadable files.

        Raises ``DataError`` naming them unless ``skip_bad_files``; with it they are dropped
        from this dataset with a warning.
        """
        bad = []
        for j, f in enumerate(self.files):
            try:
                load_image_rgb(f)
            except _READ_ERRORS as e:
                bad.append((j, str(f), f"{type(e).__name__}: {e}"))
        if bad and not self.skip_bad_files:
            listing = "; ".join(f"{p} ({err})" for _, p, err in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(f"{len(bad)} unreadable image file(s): {listing}{more}. "
                            f"Set data.skip_bad_files=true to skip them")
        if bad:
            for _, p, err in bad:
                warnings.warn(f"skipping unreadable image file {p}: {err}", stacklevel=2)
            drop = {j for j, _, _ in bad}
            keep = [j for j in range(len(self.files)) if j not in drop]
            self.files = [self.files[j] for j in keep]
            self.labels = [self.labels[j] for j in keep]
            self._bad = set()
        return [(p, err) for _, p, err in bad]

    def __repr__(self):
        return f"ImageFolderDataset(root={self.root!r}, n={len(self)}, size={self.size}, classes={self.num_classes})"


def list_image_files(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, hidden entries skipped), sorted by relative path."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data.root directory not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"data.root is not a directory: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / fn)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    if not found:
        raise FileNotFoundError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in data.root directory {root}"
        )
    return found


def _split_value(seed: int, rel: str) -> float:
    h = hashlib.sha256(f"{seed}:{rel}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def folder_class_names(root: Path, files: list[Path]) -> list[str]:
    """Class names of an image folder: its immediate subfolders when every image is in one, else none."""
    rels = [f.relative_to(root).as_posix() for f in files]
    return sorted({r.split("/", 1)[0] for r in rels}) if all("/" in r for r in rels) else []


def _build_folder(cfg: DataConfig):
    root = Path(cfg.root)
    files = list_image_files(root)
    rels = [f.relative_to(root).as_posix() for f in files]
    class_names = folder_class_names(root, files)
    cls = {c: k for k, c in enumerate(class_names)}
    labels = [cls[r.split("/", 1)[0]] for r in rels] if class_names else [-1] * len(files)
    # reproducible split: hash of (seed, relative path); stable when files are added or removed
    u = [_split_value(cfg.seed, r) for r in rels]
    is_val = [x < cfg.val_fraction for x in u]
    if len(files) >= 2:
        if not any(is_val):
            is_val[min(range(len(u)), key=u.__getitem__)] = True
        if all(is_val):
            is_val[max(range(len(u)), key=u.__getitem__)] = False

    def make(flag):
        idx = [k for k in range(len(files)) if is_val[k] == flag]
        return ImageFolderDataset([files[k] for k in idx], [labels[k] for k in idx], class_names,
                                  cfg.size, cfg.skip_bad_files, str(root))

    return make(False), make(True)
