"""Two sample grids side by side, for the README: the first ROWS rows of each (grids written by
benchmarks/generation_quality.py --grid-dir, 8 images a row with 2 px of padding).

    python docs/compare_grids.py LEFT.png RIGHT.png OUT.png [--rows 4]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

GAP = 24  # white pixels between the two grids


def first_rows(grid: Image.Image, rows: int, per_row: int = 8, pad: int = 2) -> Image.Image:
    cell = (grid.width - pad) // per_row
    return grid.crop((0, 0, grid.width, min(grid.height, rows * cell + pad)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("left", type=Path)
    ap.add_argument("right", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=4)
    args = ap.parse_args()
    left, right = (first_rows(Image.open(p).convert("RGB"), args.rows) for p in (args.left, args.right))
    out = Image.new("RGB", (left.width + GAP + right.width, max(left.height, right.height)), "white")
    out.paste(left, (0, 0))
    out.paste(right, (left.width + GAP, 0))
    out.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
