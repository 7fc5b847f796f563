"""Sample grids one above the other, for the README: the first ROWS rows of each (grids written by
benchmarks/generation_quality.py --grid-dir, 8 images a row with 2 px of padding).

    python docs/compare_grids.py OUT.jpg GRID.png [GRID.png ...] [--rows 4]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

GAP = 24  # white pixels between two grids


def first_rows(grid: Image.Image, rows: int, per_row: int = 8, pad: int = 2) -> Image.Image:
    cell = (grid.width - pad) // per_row
    return grid.crop((0, 0, grid.width, min(grid.height, rows * cell + pad)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("grids", type=Path, nargs="+")
    ap.add_argument("--rows", type=int, default=4)
    args = ap.parse_args()
    parts = [first_rows(Image.open(p).convert("RGB"), args.rows) for p in args.grids]
    out = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts) + GAP * (len(parts) - 1)), "white")
    y = 0
    for part in parts:
        out.paste(part, (0, y))
        y += part.height + GAP
    out.save(args.out, **({"quality": 88} if args.out.suffix.lower() in (".jpg", ".jpeg") else {"optimize": True}))


if __name__ == "__main__":
    main()
