"""The evaluation report: report.json, report.md (table per acceptance rate), tradeoff.png, sample grids.

A report is a dict (see `build_report`):
    {"fd_label": "FD-domain" | "FID",
     "rows": [{"acceptance_rate", "fd", "fd_ci": [low, high] | None, "fd_infinity": float | None,
               "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "n_generated"}, ...],
     "reconstruction": {"fd", "fd_ci", ..., "psnr"} or None,
     "reconstruction_fd", "reconstruction_psnr": the VQ-VAE's rFID and PSNR on the evaluation images,
     "provenance": {"extractor", "feature_extractor_name", "weights_hash", "torch_fidelity_version", "resize",
                    "n_real", "seed", "fd_ci_method", ...},
     "comparison": {"may_stand_beside": [...], "may_not_stand_beside": [...], "requires": {...}}}
Every file is written to a temporary name in its directory and renamed into place.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from vqvae2.pretrained import atomic_write

PROVENANCE_KEYS = ("extractor", "feature_extractor_name", "weights_hash", "weights_standard",
                   "torch_fidelity_version", "n_real", "seed", "kid_subset_size", "prc_neighborhood", "resize",
                   "input_size", "fd_ci_method", "fd_ci_resamples", "fd_infinity_method")
ROW_KEYS = ("fd", "fd_ci", "fd_infinity", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
            "n_generated")
PROTOCOL_N = 50_000  # the sample count of the usual FID protocol (eval.metrics.FID_PROTOCOL_N)
RESIZE_TOOLS = {  # which published tools resize as each mode does
    "torch-fidelity": "torch-fidelity, or the original TensorFlow FID code whose bilinear resize it reproduces "
                      "(clean-fid calls this mode 'legacy_tensorflow')",
    "clean": "clean-fid in mode 'clean' (PIL bicubic; rounded to uint8 here before the network, so equal to "
             "clean-fid's input within rounding)",
}


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
    rows = [{"acceptance_rate": float(rate), **{k: m.get(k) for k in ROW_KEYS}}
            for rate, m in sorted(by_rate.items(), reverse=True)]
    recon = {k: reconstruction.get(k) for k in (*ROW_KEYS, "psnr")} if reconstruction else None
    provenance = {k: first[k] for k in PROVENANCE_KEYS if k in first}
    provenance.update(extra_provenance)
    report = {"fd_label": first["fd_label"], "rows": rows, "reconstruction": recon,
              "reconstruction_fd": recon["fd"] if recon else None,
              "reconstruction_psnr": recon["psnr"] if recon else None,
              "provenance": provenance, "warnings": list(warnings or [])}
    report["comparison"] = comparison_sheet(report)
    return report


def comparison_sheet(report: dict[str, Any]) -> dict[str, Any]:
    """Which published numbers this report's FDs may stand beside: only those made with the same extractor
    and weights, resize, number of samples and reference set; and which they may not."""
    p, label = report["provenance"], report["fd_label"]
    n = report["rows"][0].get("n_generated")
    resize = p.get("resize", "torch-fidelity")
    reference = p.get("reference_split") or p.get("reference") or f"{p.get('n_real')} real images"
    requires = {"extractor": p.get("feature_extractor_name"), "weights_sha256": p.get("weights_hash"),
                "resize": resize, "n_generated": n, "reference": reference}
    has_infinity = any(r.get("fd_infinity") is not None for r in report["rows"])
    may, may_not = [], []
    if label == "FID":
        may.append(f"FIDs of {n:,} generated images against {reference}, made with the standard Inception weights "
                   f"(sha256 {str(p.get('weights_hash'))[:16]}...) and the {resize!r} resize: "
                   f"{RESIZE_TOOLS.get(resize, resize)}")
        if has_infinity:
            may.append("fd_infinity beside other FID-infinity numbers (Chong & Forsyth 2020) with the same weights, "
                       "resize and reference, whatever number of samples they used")
        if n != PROTOCOL_N:
            may_not.append(f"FIDs at another number of samples, such as the usual {PROTOCOL_N:,}: FID falls as N "
                           f"grows (benchmarks/fid_bias.py), and this one is at N = {n:,}")
        other = next(m for m in RESIZE_TOOLS if m != resize)
        may_not += [f"FIDs made with the {other!r} resize ({RESIZE_TOOLS[other]}): the resize alone moves FID",
                    "FIDs against another reference set (training instead of validation images, another split, "
                    "resolution or statistics file)",
                    "FIDs from other Inception weights or ports (e.g. torchvision's ImageNet Inception-v3)"]
    else:
        may.append(f"{label} numbers made with the same extractor (weights sha256 {str(p.get('weights_hash'))[:16]}), "
                   f"the {resize!r} resize, {n:,} generated images and {reference}: other evaluations of this run's "
                   f"models with this run's feature network")
        space = ("Inception weights other than the standard ones" if label.startswith("FD-inception")
                 else "this run's own classifier")
        # no "FID" in a report that is not one (tests hold reports to that)
        may_not += [f"any published Frechet Inception Distance: {label} is a Frechet distance in the feature space "
                    f"of {space}", f"{label} of another feature network (another weights hash), even on the same data"]
    may_not.append(f"reconstruction_fd (the VQ-VAE's reconstruction {label}) beside {label} of other work's samples: "
                   f"it measures a tokenizer on real images (what this run's samples, decoded by it, are up "
                   f"against), not a generator")
    return {"may_stand_beside": may, "may_not_stand_beside": may_not, "requires": requires}


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


def _ci(row: dict[str, Any]) -> str:
    ci = row.get("fd_ci")
    return _fmt(row.get("fd")) + ("" if ci is None else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]")


def render_markdown(report: dict[str, Any]) -> str:
    label = _check_label(report)
    prov = report.get("provenance", {})
    lines = ["# Evaluation", "",
             f"| acceptance rate | {label} [95% interval] | {label} at infinite N | KID (mean ± std) | IS | "
             f"precision | recall | n generated |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(_fmt(r["acceptance_rate"]), r) for r in report["rows"]]
    if report.get("reconstruction"):
        rows.append(("reconstruction", report["reconstruction"]))
    for name, r in rows:
        lines.append(f"| {name} | {_ci(r)} | {_fmt(r.get('fd_infinity'))} | {_pm(r, 'kid')} | {_pm(r, 'is')} | "
                     f"{_fmt(r.get('precision'))} | {_fmt(r.get('recall'))} | {_fmt(r.get('n_generated'))} |")
    k = prov.get("prc_neighborhood", 3)
    lines += ["", f"Precision/recall: k = {k} nearest neighbours; "
              "precision = generated inside the real manifold, recall = real inside the generated manifold."]
    if report.get("reconstruction_fd") is not None:
        psnr = report.get("reconstruction_psnr")
        lines += ["", f"Reconstruction (the VQ-VAE on the real evaluation images, against the same reference): "
                      f"{'rFID' if label == 'FID' else label} {_ci(report['reconstruction'])}, PSNR {_fmt(psnr)} dB. "
                      f"The priors' samples decode through this VQ-VAE: this {label} is what they are up against."]
    lines += ["", f"Intervals: {prov.get('fd_ci_method') or 'none computed (eval.fd_resamples = 0)'}. "
                  f"{label} at infinite N: {prov.get('fd_infinity_method', '-')}. "
                  f"Images reach the extractor through the {prov.get('resize', 'torch-fidelity')!r} resize."]
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    if report.get("comparison"):
        c = report["comparison"]
        lines += ["", "## Comparing with published numbers", "", "May stand beside:", ""]
        lines += [f"- {w}" for w in c["may_stand_beside"]]
        lines += ["", "May not stand beside:", ""] + [f"- {w}" for w in c["may_not_stand_beside"]]
    lines += ["", "## Provenance", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in prov.items()]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write `report.json` and `report.md` in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    md = render_markdown(report)  # validates before anything is written
    json_path = _write_text(out_dir / "report.json", json.dumps(report, indent=2, sort_keys=False) + "\n")
    md_path = _write_text(out_dir / "report.md", md)
    return json_path, md_path


def plot_tradeoff(path: str | Path, rates: Sequence[float], fd: Sequence[float], precision: Sequence[float],
                  recall: Sequence[float], fd_label: str, fd_ci: Sequence[Sequence[float] | None] | None = None,
                  kid_mean: Sequence[float | None] | None = None, kid_std: Sequence[float | None] | None = None,
                  fd_infinity: Sequence[float | None] | None = None) -> Path:
    """PNG against the acceptance rate of rejection sampling: FD with its interval (and FD at infinite N),
    precision/recall, and KID ± its standard deviation when given."""
    if not (len(rates) == len(fd) == len(precision) == len(recall)) or len(rates) == 0:
        raise ValueError(f"rates, fd, precision, recall must be non-empty and of one length, got "
                         f"{len(rates)}, {len(fd)}, {len(precision)}, {len(recall)}")
    for name, seq in (("fd_ci", fd_ci), ("kid_mean", kid_mean), ("kid_std", kid_std), ("fd_infinity", fd_infinity)):
        if seq is not None and len(seq) != len(rates):
            raise ValueError(f"{name} must have one entry per rate ({len(rates)}), got {len(seq)}")

    def arr(seq):  # None (not computed) -> nan, in the rates' order
        return np.asarray([np.nan if v is None else v for v in seq], dtype=float)[order]

    order = np.argsort(rates)
    r = np.asarray(rates, dtype=float)[order]
    fd_arr = arr(fd)
    panels = 3 if kid_mean is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.6), constrained_layout=True)
    ax_fd, ax_pr = axes[0], axes[1]
    if fd_ci is not None and any(c is not None for c in fd_ci):
        ci = np.asarray([[np.nan, np.nan] if c is None else c for c in fd_ci], dtype=float)[order]
        err = np.stack([fd_arr - ci[:, 0], ci[:, 1] - fd_arr])
        ax_fd.errorbar(r, fd_arr, yerr=err, fmt="o-", color="tab:red", capsize=3, label=f"{fd_label}, 95% interval")
    else:
        ax_fd.plot(r, fd_arr, "o-", color="tab:red", label=fd_label)
    if fd_infinity is not None and any(v is not None for v in fd_infinity):
        ax_fd.plot(r, arr(fd_infinity), "x--", color="tab:purple", label="at infinite N")
    ax_fd.legend(fontsize=8)
    ax_fd.set_ylabel(f"{fd_label} (lower is better)")
    ax_fd.set_title(f"{fd_label} vs acceptance rate")
    ax_pr.plot(r, arr(precision), "o-", label="precision")
    ax_pr.plot(r, arr(recall), "s--", label="recall")
    ax_pr.set_ylim(-0.02, 1.02)
    ax_pr.set_title("precision / recall (k=3)")
    ax_pr.legend()
    if kid_mean is not None:
        ax_kid = axes[2]
        ax_kid.errorbar(r, arr(kid_mean), yerr=None if kid_std is None else arr(kid_std), fmt="o-",
                        color="tab:green", capsize=3)
        ax_kid.set_title("KID ± std over subsets")
        ax_kid.set_ylabel("KID (lower is better)")
    for ax in axes:
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
