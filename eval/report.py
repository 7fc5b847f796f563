"""The evaluation report: report.json, report.md (table per acceptance rate), tradeoff.png, sample grids.

A report is a dict (see `build_report`):
    {"fd_label": "FD-domain" | "FID",
     "rows": [{"acceptance_rate", "fd", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
               "n_generated", ...}, ...],
     "reconstruction": {"fd", ...} or None,
     "provenance": {"extractor", "feature_extractor_name", "weights_hash", "torch_fidelity_version",
                    "n_real", "seed", ...}}
Every file is written to a temporary name in its directory and renamed into place.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vqvae2.pretrained import atomic_write  # noqa: E402

PROVENANCE_KEYS = ("extractor", "feature_extractor_name", "weights_hash", "weights_standard",
                   "torch_fidelity_version", "n_real", "seed", "kid_subset_size", "prc_neighborhood")
ROW_KEYS = ("fd", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "n_generated")


def _write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# assembling

def build_report(by_rate: dict[float, dict[str, Any]], reconstruction: dict[str, Any] | None = None,
                 warnings: list[str] | None = None, **extra_provenance: Any) -> dict[str, Any]:
    """Report from `metrics_from_features` results keyed by acceptance rate (all from one extractor)."""
    if not by_rate:
        raise ValueError("build_report needs at least one acceptance rate")
    results = list(by_rate.values()) + ([reconstruction] if reconstruction else [])
    first = results[0]
    for r in results[1:]:
        if r["feature_extractor_name"] != first["feature_extractor_name"]:
            raise ValueError(f"metrics from different extractors in one report: {first['feature_extractor_name']} "
                             f"vs {r['feature_extractor_name']}")
    rows = [{"acceptance_rate": float(rate), **{k: m[k] for k in ROW_KEYS}}
            for rate, m in sorted(by_rate.items(), reverse=True)]
    recon = {k: reconstruction[k] for k in ROW_KEYS} if reconstruction else None
    provenance = {k: first[k] for k in PROVENANCE_KEYS if k in first}
    provenance.update(extra_provenance)
    return {"fd_label": first["fd_label"], "rows": rows, "reconstruction": recon, "provenance": provenance,
            "warnings": list(warnings or [])}


def _check_label(report: dict[str, Any]) -> str:
    label = report.get("fd_label")
    extractor = report.get("provenance", {}).get("extractor")
    if label is None:
        raise ValueError("report has no 'fd_label' ('FID' for inception, 'FD-domain' for domain)")
    if label == "FID" and extractor != "inception":
        raise ValueError(f"only the inception extractor gives an FID; extractor {extractor!r} must be labelled "
                         f"'FD-{extractor}'")
    if label == "FID" and report["provenance"].get("weights_standard") is not True:
        raise ValueError("only the standard Inception weights (checked by SHA-256) give an FID; other weights are "
                         "labelled 'FD-inception (non-standard weights, sha256 ...)'")
    return label


# writing

def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def _pm(row: dict[str, Any], key: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    return "-" if mean is None else f"{_fmt(mean)} ± {_fmt(std)}"


def render_markdown(report: dict[str, Any]) -> str:
    label = _check_label(report)
    lines = ["# Evaluation", "",
             f"| acceptance rate | {label} | KID | IS | precision | recall | n generated |",
             "|---|---|---|---|---|---|---|"]
    rows = [(_fmt(r["acceptance_rate"]), r) for r in report["rows"]]
    if report.get("reconstruction"):
        rows.append(("reconstruction", report["reconstruction"]))
    for name, r in rows:
        lines.append(f"| {name} | {_fmt(r.get('fd'))} | {_pm(r, 'kid')} | {_pm(r, 'is')} | "
                     f"{_fmt(r.get('precision'))} | {_fmt(r.get('recall'))} | {_fmt(r.get('n_generated'))} |")
    k = report.get("provenance", {}).get("prc_neighborhood", 3)
    lines += ["", f"Precision/recall: k = {k} nearest neighbours; "
              "precision = generated inside the real manifold, recall = real inside the generated manifold."]
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", "## Provenance", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in report.get("provenance", {}).items()]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write `report.json` and `report.md` in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    md = render_markdown(report)  # validates before anything is written
    json_path = _write_text(out_dir / "report.json", json.dumps(report, indent=2, sort_keys=False) + "\n")
    md_path = _write_text(out_dir / "report.md", md)
    return json_path, md_path


def plot_tradeoff(path: str | Path, rates: Sequence[float], fd: Sequence[float], precision: Sequence[float],
                  recall: Sequence[float], fd_label: str) -> Path:
    """PNG: FD (left) and precision/recall (right) against the acceptance rate of rejection sampling."""
    if not (len(rates) == len(fd) == len(precision) == len(recall)) or len(rates) == 0:
        raise ValueError(f"rates, fd, precision, recall must be non-empty and of one length, got "
                         f"{len(rates)}, {len(fd)}, {len(precision)}, {len(recall)}")
    order = np.argsort(rates)
    r = np.asarray(rates, dtype=float)[order]
    precision = [np.nan if p is None else p for p in precision]  # not computed from mu/sigma alone
    recall = [np.nan if p is None else p for p in recall]
    fig, (ax_fd, ax_pr) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    ax_fd.plot(r, np.asarray(fd, dtype=float)[order], "o-", color="tab:red")
    ax_fd.set_ylabel(f"{fd_label} (lower is better)")
    ax_fd.set_title(f"{fd_label} vs acceptance rate")
    ax_pr.plot(r, np.asarray(precision, dtype=float)[order], "o-", label="precision")
    ax_pr.plot(r, np.asarray(recall, dtype=float)[order], "s--", label="recall")
    ax_pr.set_ylim(-0.02, 1.02)
    ax_pr.set_title("precision / recall (k=3)")
    ax_pr.legend()
    for ax in (ax_fd, ax_pr):
        if r.min() > 0 and r.max() / r.min() >= 10:
            ax.set_xscale("log")
        ax.set_xticks(r, [f"{x:g}" for x in r])
        ax.minorticks_off()
        ax.set_xlabel("acceptance rate (1 = no rejection)")
        ax.grid(alpha=0.3)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def save_grid(path: str | Path, images_uint8: torch.Tensor, nrow: int = 8, padding: int = 2) -> Path:
    """PNG grid of uint8 (N, C, H, W) images, C in {1, 3}."""
    from PIL import Image
    from torchvision.utils import make_grid

    images = torch.as_tensor(images_uint8)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"save_grid expects non-empty uint8 (N, 1 or 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=255)  # (3, H', W') uint8
    array = grid.permute(1, 2, 0).contiguous().numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
