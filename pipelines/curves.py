"""curves.png: the training curves of one stage, plotted from its metrics.jsonl.

metrics.jsonl holds one record per `log_every` steps ({"step", "loss", "lr", ...}) and, with
`val_every`, validation records marked {"split": "val"}. The final evaluation of a stage is
not a line of the file (it is metrics.json); `plot_curves` takes it as `final`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from vqvae2.pretrained import atomic_write

# title, keys shown; a key ending in "_" stands for one curve per level (perplexity_top, ...)
PANELS = (
    ("loss", ("loss", "commitment", "codebook_loss")),
    ("reconstruction MSE (images in [0, 1])", ("mse",)),
    ("NLL (bits / code)", ("nll_bits",)),
    ("accuracy", ("accuracy",)),
    ("perplexity", ("perplexity_",)),
    ("codes used", ("codes_used_",)),
    ("learning rate", ("lr",)),
)
LOG_SCALE = ("loss",)
# the training loss's MSE is over images in [-1, 1]; validation reports it over [0, 1], a quarter of it
TRAIN_SCALE = {"mse": 0.25}


def read_records(path: str | Path) -> list[dict]:
    """The complete records of a metrics.jsonl; a line cut by a kill, or still being written, is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _matches(key: str, wanted: tuple[str, ...]) -> bool:
    return any(key == w or (w.endswith("_") and key.startswith(w)) for w in wanted)


def _series(records: list[dict], wanted: tuple[str, ...], scale: dict[str, float]) -> dict[str, tuple[list, list]]:
    """key -> (steps, values) of every numeric key of `records` that the panel shows."""
    out: dict[str, tuple[list, list]] = {}
    for r in records:
        for key, value in r.items():
            if _matches(key, wanted) and isinstance(value, (int, float)) and math.isfinite(value):
                steps, values = out.setdefault(key, ([], []))
                steps.append(r["step"])
                values.append(value * scale.get(key, 1.0))
    return out


def plot_curves(jsonl: str | Path, out: str | Path, final: dict | None = None) -> Path | None:
    """Writes `out` (a PNG, atomically): one panel per kind of metric found, training records as lines
    and validation points as markers. Returns None when there is nothing to plot yet."""
    records = read_records(jsonl)
    train = [r for r in records if r.get("split", "train") == "train"]
    val = [r for r in records if r.get("split") == "val"] + ([final] if final else [])
    panels = []
    for title, wanted in PANELS:
        lines, points = _series(train, wanted, TRAIN_SCALE), _series(val, wanted, {})
        if lines or points:
            panels.append((title, lines, points))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.2 * rows), squeeze=False, constrained_layout=True)
    for ax, (title, lines, points) in zip(axes.flat, panels):
        colours = {key: f"C{i}" for i, key in enumerate(dict.fromkeys([*lines, *points]))}  # a key's two series alike
        for key, (steps, values) in lines.items():
            ax.plot(steps, values, "-", lw=1.2, color=colours[key], label=f"train {key}")
        for key, (steps, values) in points.items():
            ax.plot(steps, values, "o--", ms=4, lw=0.8, color=colours[key], label=f"val {key}")
        if title in LOG_SCALE and all(v > 0 for _, vs in [*lines.values(), *points.values()] for v in vs):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    try:
        return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    finally:
        plt.close(fig)
