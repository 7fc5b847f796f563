"""Write the pictures of the embedded synthetic faces in docs/.

    python docs/make_faces_grid.py [--seed 0]

- docs/synthetic_faces.png: the first 64 faces at 64 px, 8 x 8, row by row;
- docs/synthetic_faces_128.png: faces at their full 128 px, one class per column
  (smile, smile+glasses, neutral, neutral+glasses, open, open+glasses), 4 rows.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.datasets import FACE_CLASS_NAMES, face_attributes, render_face

DOCS = Path(__file__).resolve().parent


def grid(faces: list[np.ndarray], cols: int, pad: int) -> Image.Image:
    s = faces[0].shape[0]
    rows = (len(faces) + cols - 1) // cols
    out = np.full((rows * (s + pad) + pad, cols * (s + pad) + pad, 3), 255, np.uint8)
    for k, face in enumerate(faces):
        r, c = divmod(k, cols)
        out[pad + r * (s + pad):pad + r * (s + pad) + s, pad + c * (s + pad):pad + c * (s + pad) + s] = face
    return Image.fromarray(out)


def first_of_each_class(seed: int, rows: int) -> list[int]:
    """Indices of the first ``rows`` faces of every class, row-major with one class per column."""
    found = {c: [] for c in range(len(FACE_CLASS_NAMES))}
    index = 0
    while any(len(v) < rows for v in found.values()):
        label = face_attributes(seed, index)["label"]
        if len(found[label]) < rows:
            found[label].append(index)
        index += 1
    return [found[c][r] for r in range(rows) for c in range(len(FACE_CLASS_NAMES))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=str(DOCS))
    args = ap.parse_args()
    out = Path(args.out_dir)
    grid([render_face(args.seed, k, 64) for k in range(64)], 8, 2).save(out / "synthetic_faces.png", optimize=True)
    picked = first_of_each_class(args.seed, 4)
    faces = [render_face(args.seed, k, 128) for k in picked]
    grid(faces, len(FACE_CLASS_NAMES), 4).save(out / "synthetic_faces_128.png", optimize=True)
    print(f"wrote {out / 'synthetic_faces.png'} and {out / 'synthetic_faces_128.png'} (columns: {FACE_CLASS_NAMES})")


if __name__ == "__main__":
    main()
