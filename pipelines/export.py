"""`vqvae2 export`: a finished run as one folder ready for the Hugging Face Hub.

The folder holds model_index.json, one folder per component (the VQ-VAE, every prior, the classifiers when
the run has them: model.json + model.safetensors each), samples.png (the run's sample grid) and a README.md
model card whose YAML header the Hub reads and whose numbers come from the run's own reports, with their
provenance. `vqvae2.Pipeline.from_pretrained` loads the folder, or the Hub repository it is uploaded to.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vqvae2.hub import INDEX_NAME
from vqvae2.pipeline import Pipeline

from .artifacts import RunDir, read_json
from .config import PipelineConfig, format_temperature
from .status import DONE, run_status

CARD_TAGS = ["vqvae2", "vq-vae-2", "pixelsnail", "image-generation"]


def export(cfg: PipelineConfig, run: RunDir, out: Path, license: str = "unknown", repo_id: str | None = None,
           force: bool = False) -> dict:
    """Writes the export folder `out` (built beside it, then renamed into place) and returns what it holds."""
    states = {s["stage"]: s for s in run_status(run)["stages"]}
    for stage in ("vqvae", *(f"prior-{lv}" for lv in cfg.vqvae.levels)):
        if states[stage]["state"] != DONE:
            raise ValueError(f"{run.root}: stage {stage} is {states[stage]['state']} ({states[stage]['detail']}); "
                             f"finish it first: {states[stage]['command']}")
    _check_target(out, force)
    pipe = Pipeline.from_pretrained(run.root, device="cpu")
    done = {name for name, s in states.items() if s["state"] == DONE}
    classifiers = _classifiers(run) if "classifier" in done else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, extra_components=classifiers)
        samples = "samples" in done and (run.samples / "grid.png").is_file()
        if samples:
            shutil.copyfile(run.samples / "grid.png", tmp / "samples.png")
        report = read_json(run.eval / "report.json") if "eval" in done else None
        card = model_card(cfg, run, pipe, classifiers, report, samples, license, repo_id or str(out))
        (tmp / "README.md").write_text(card)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "components": ["vqvae", *(f"prior-{lv}" for lv in pipe.levels), *classifiers],
            "evaluated": report is not None, "samples": samples}


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Uploads an export folder to the Hub model repository `repo_id` (created if missing); returns its URL."""
    import huggingface_hub
    try:
        huggingface_hub.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        huggingface_hub.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                      commit_message=f"vqvae2 export of {folder.name}")
    except Exception as e:  # no token, offline, no permission: one line for a person
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"uploading {folder} to the Hub repository {repo_id} failed ({type(e).__name__}: {first}); "
                         f"the export itself is complete: log in (`huggingface-cli login` or HF_TOKEN) and run "
                         f"again with --force") from e
    return f"https://huggingface.co/{repo_id}"


def _check_target(out: Path, force: bool) -> None:
    """`out` may be missing, empty, or (with force) an earlier export; nothing else is overwritten."""
    if not out.exists():
        return
    if not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file")
    if any(out.iterdir()) and not (force and (out / INDEX_NAME).is_file()):
        what = "an earlier export: add --force to replace it" if (out / INDEX_NAME).is_file() else \
            f"not an export (no {INDEX_NAME}): choose an empty or new folder"
        raise ValueError(f"--out {out} is not empty and is {what}")


def _replace(tmp: Path, out: Path) -> None:
    old = None
    if out.exists() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)  # onto a missing or empty folder
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _classifiers(run: RunDir) -> dict:
    from eval.classifier import Classifier
    dirs = {"classifier": run.classifier, "classifier-rejection": run.classifier / "rejection"}
    return {name: Classifier.from_pretrained(d).eval() for name, d in dirs.items() if (d / "model.safetensors").is_file()}


# the model card

def model_card(cfg: PipelineConfig, run: RunDir, pipe: Pipeline, classifiers: dict, report: dict | None,
               samples: bool, license: str, where: str) -> str:
    """README.md: YAML metadata for the Hub, what the model is, how to load it, the components, the numbers."""
    from huggingface_hub import ModelCardData
    dataset = Path(cfg.data.root).name if cfg.data.name == "folder" else cfg.data.name
    conditional = pipe.n_classes > 0
    meta = ModelCardData(library_name="vqvae2", license=license, datasets=[dataset],
                         tags=CARD_TAGS + (["class-conditional"] if conditional else []),
                         pipeline_tag="unconditional-image-generation")
    v = pipe.vqvae.config
    grids = " over ".join(f"{s}x{s} {lv}" for lv, s in zip(pipe.levels, v.grid_sizes()))
    lines = ["---", meta.to_yaml(), "---", "", f"# VQ-VAE-2 on {dataset}", "",
             f"A VQ-VAE-2 (Razavi et al. 2019) trained with vqvae2 on {dataset}"
             + (" (an image folder)" if cfg.data.name == "folder" else "") + f" at "
             f"{v.image_size} px: {grids} codes of {v.codebook_size} entries, one PixelSNAIL prior per level"
             + (f", conditioned on {pipe.n_classes} classes." if conditional else ", unconditional."), ""]
    if samples:
        lines += _samples_section(run)
    lines += ["## Use", "", "```python", "import torch", "from vqvae2 import Pipeline", "",
              f'pipe = Pipeline.from_pretrained("{where}")',
              "out = pipe(16, generator=torch.Generator().manual_seed(0))  # out.images: PIL images, out.codes: "
              "codes per level",
              '[im.save(f"sample{i}.png") for i, im in enumerate(out.images)]', "```", "",
              "The loader reads JSON and safetensors only, never a pickle.", ""]
    lines += _components_section(pipe, classifiers)
    lines += _measured_section(run, report)
    return "\n".join(lines) + "\n"


def _samples_section(run: RunDir) -> list[str]:
    info = read_json(run.samples / "metrics.json")
    return ["![samples](samples.png)", "",
            f"The run's `vqvae2 sample`: {info.get('n')} samples (the first {min(64, info.get('n', 64))} shown), "
            f"seed {info.get('seed')}, temperature {format_temperature(info.get('temperature', 1.0))}, "
            f"top-k {info.get('top_k') or 'off'}, sampler {info.get('sampler')}; no rejection sampling. "
            f"`pipe({info.get('n')}, seed={info.get('seed')})` gives the same images (its defaults are the run's "
            f"sampling settings, in model_index.json).", ""]


def _components_section(pipe: Pipeline, classifiers: dict) -> list[str]:
    rows = [("vqvae", "VQ-VAE-2", pipe.vqvae)] + [(f"prior-{lv}", f"PixelSNAIL prior, {lv} level", p)
                                                  for lv, p in zip(pipe.levels, pipe.priors)]
    rows += [(name, f"domain classifier ({'rejection sampling' if 'rejection' in name else 'FD-domain features'}); "
                    f"not loaded by `Pipeline`", m) for name, m in classifiers.items()]
    lines = ["## Components", "", "Each folder holds `model.json` (the config) and `model.safetensors`.", "",
             "| folder | what | parameters |", "|---|---|---|"]
    lines += [f"| `{name}/` | {what} | {sum(t.numel() for t in m.parameters()):,} |" for name, what, m in rows]
    return lines + [""]


def _measured_section(run: RunDir, report: dict | None) -> list[str]:
    if report is None:
        psnr = read_json(run.vqvae / "metrics.json").get("psnr")
        return ["## Measured", "", "This run has no current evaluation (`vqvae2 evaluate`); the VQ-VAE's validation "
                f"PSNR at the end of its training: {_num(psnr)} dB (vqvae/metrics.json).", ""]
    label, p = report["fd_label"], report["provenance"]
    lines = ["## Measured", "", f"From the run's `eval/report.json` (`vqvae2 evaluate`). {label} is "
             + ("the Frechet Inception Distance with the standard weights." if label == "FID" else
                "a Frechet distance in the features of the run's own classifier, not FID: compare it only with "
                "numbers made with the same extractor weights."), "",
             "Acceptance rate r: the samples are the fraction r of the candidates that the rejection classifier "
             "scores highest for their class (1 = no rejection).", "",
             f"| acceptance rate | {label} [95% interval] | KID | precision | recall | samples |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['acceptance_rate']:g} | {_num(r['fd'])} {_ci(r.get('fd_ci'))} | {_num(r.get('kid_mean'))} | "
                     f"{_num(r.get('precision'))} | {_num(r.get('recall'))} | {r.get('n_generated')} |")
    recon = report.get("reconstruction") or {}
    lines += ["", f"Reconstruction of {p.get('n_reconstructed')} validation images by the VQ-VAE: PSNR "
              f"{_num(report.get('reconstruction_psnr'))} dB, {label} {_num(recon.get('fd'))} {_ci(recon.get('fd_ci'))}.",
              "", "Provenance:", "",
              f"- feature extractor: {p.get('extractor')} ({p.get('feature_extractor_name')}), weights sha256 "
              f"{p.get('weights_hash')}, torch-fidelity {p.get('torch_fidelity_version')}, resize {p.get('resize')}",
              f"- {p.get('n_samples')} samples per acceptance rate from {p.get('n_candidates')} candidates; "
              f"acceptance rates {p.get('acceptance_rates')}; reference: {p.get('reference_split')}",
              f"- sampling: temperature {format_temperature(p.get('temperature', 1.0))}, sampler {p.get('sampler')}, "
              f"seed {p.get('seed')}"]
    if p.get("rejection_classifier_hash"):
        lines.append(f"- rejection sampling by the run's `{p.get('rejection_classifier')}` (weights sha256 "
                     f"{p['rejection_classifier_hash']}; exported as `classifier-rejection/` or `classifier/`)")
    lines += [f"- warning: {w}" for w in report.get("warnings", [])]
    return lines + [""]


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _ci(ci) -> str:
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
