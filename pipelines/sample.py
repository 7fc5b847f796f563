"""`vqvae2 sample`: top-down ancestral sampling from the priors, then the VQ-VAE decoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from vqvae2.sampling import sample_hierarchy
from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, hash_config, save_npz, save_png, write_json
from .config import PipelineConfig
from .images import grid_image, to_uint8
from .stage2 import load_priors, stage_hash as prior_hash


def device_of(state: PartialState | None = None) -> torch.device:
    return (state or PartialState()).device


def sample_labels(n: int, num_classes: int, class_label: int, conditional: bool) -> torch.Tensor | None:
    """Labels for n samples: all `class_label`, or spread evenly over the classes (-1)."""
    if not conditional:
        if class_label >= 0:
            raise ValueError(f"--class {class_label}: the priors of this run are not class-conditional")
        return None
    if class_label >= num_classes:
        raise ValueError(f"--class {class_label} is outside the model's classes [0, {num_classes - 1}]")
    if class_label >= 0:
        return torch.full((n,), class_label, dtype=torch.long)
    return torch.arange(n, dtype=torch.long) % num_classes


@torch.no_grad()
def generate(vqvae: VQVAE2, priors, n: int, labels: torch.Tensor | None, seed: int, batch_size: int,
             temperature: float = 1.0, top_k: int = 0, sampler: str = "cached", progress: bool = True,
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """n images (uint8, N C H W) and their codes per level. Batch b is drawn with a generator seeded
    by (seed, b) and batches are shared round-robin between processes, so the result does not
    depend on how many processes made it."""
    state = PartialState()
    device = state.device
    n_batches = (n + batch_size - 1) // batch_size
    mine = list(range(state.process_index, n_batches, state.num_processes))
    results = []
    bar = tqdm(mine, desc="sample", disable=not (progress and state.is_local_main_process), dynamic_ncols=True)
    for b in bar:
        lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        lab = None if labels is None else labels[lo:hi].to(device)
        codes = sample_hierarchy(priors, hi - lo, labels=lab, temperature=temperature, top_k=top_k or None,
                                 generator=g, sampler=sampler)
        images = to_uint8(vqvae.decode_codes([c.to(device) for c in codes]))
        results.append((b, images, [c.cpu() for c in codes]))
    if state.num_processes > 1:
        results = gather_object(results)
    results.sort(key=lambda r: r[0])
    images = torch.cat([r[1] for r in results])
    codes = [torch.cat([r[2][i] for r in results]) for i in range(len(priors))]
    return images, codes


def stage_hash(cfg: PipelineConfig, run: RunDir) -> str:
    return hash_config({"priors": [prior_hash(cfg, run, lv) for lv in cfg.vqvae.levels],
                        "sample": cfg.to_dict()["sample"]})


def sample_stage(cfg: PipelineConfig, run: RunDir, png_dir: Path | None = None) -> dict:
    s = cfg.sample
    state = PartialState()
    vqvae = VQVAE2.from_pretrained(run.vqvae, map_location=state.device).eval()
    priors = load_priors(run, vqvae.levels, device=state.device)
    n_classes = priors[0].config.n_classes
    labels = sample_labels(s.n, n_classes, s.class_label, conditional=n_classes > 0)
    images, codes = generate(vqvae, priors, s.n, labels, s.seed, s.batch_size, s.temperature, s.top_k, s.sampler)
    if not state.is_main_process:
        return {}
    arrays = {"images": images.numpy(), "seed": np.array(s.seed),
              "labels": (labels if labels is not None else torch.full((s.n,), -1)).numpy()}
    for level, c in zip(vqvae.levels, codes):
        arrays[f"codes_{level}"] = c.numpy().astype(np.uint16)
    scores = _classifier_scores(run, images, labels)
    if scores is not None:
        arrays["classifier_probs"] = scores
    save_npz(run.samples / "samples.npz", **arrays)
    nrow = max(1, min(n_classes, 10)) if n_classes and s.class_label < 0 else 8
    save_png(run.samples / "grid.png", grid_image(images[:64 // nrow * nrow], nrow=nrow))
    if png_dir is not None:
        from PIL import Image
        png_dir.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            arr = img.permute(1, 2, 0).numpy()
            save_png(png_dir / f"{i:06d}.png", Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
    info = {"config_hash": stage_hash(cfg, run), "n": s.n, "seed": s.seed, "temperature": s.temperature,
            "top_k": s.top_k, "sampler": s.sampler, "class_label": s.class_label, "levels": vqvae.levels}
    write_json(run.samples / "metrics.json", info)
    return info


def _classifier_scores(run: RunDir, images: torch.Tensor, labels: torch.Tensor | None):
    """Classifier probabilities of the samples when the run has a classifier (else None)."""
    if not (run.classifier / "model.safetensors").is_file():
        return None
    from eval.classifier import Classifier, predict_proba
    model = Classifier.from_pretrained(run.classifier).eval()
    return predict_proba(model, images.float() / 127.5 - 1, batch_size=256).numpy()
