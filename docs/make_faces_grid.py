"""Write docs/synthetic_faces.png: an 8x8 grid of the embedded synthetic faces at 64 px.

    python docs/make_faces_grid.py [--size 64] [--seed 0] [--out docs/synthetic_faces.png]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.data import FACE_CLASS_NAMES, face_attributes, render_face  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "synthetic_faces.png"))
    args = ap.parse_args()
    n, s, pad = args.rows, args.size, 2
    grid = np.full((n * (s + pad) + pad, n * (s + pad) + pad, 3), 255, np.uint8)
    for k in range(n * n):
        r, c = divmod(k, n)
        y, x = pad + r * (s + pad), pad + c * (s + pad)
        grid[y:y + s, x:x + s] = render_face(args.seed, k, s)
    Image.fromarray(grid).save(args.out)
    labels = [FACE_CLASS_NAMES[face_attributes(args.seed, k)["label"]] for k in range(n * n)]
    print(f"wrote {args.out}; classes row-major: {labels}")


if __name__ == "__main__":
    main()
