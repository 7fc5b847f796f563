"""`vqvae2 vary`: what does each level hold? Keep an image's codes at one level and above, resample
the levels below from their priors, decode (the paper's figures of the hierarchy).

The grid's first row is the image and its reconstruction; then the variations. With a three-level
faces model, `--keep top` keeps identity and pose and redraws the detail; `--keep middle` changes
only the finest texture.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vqvae2.config import SAMPLE_SEED_MAX
from vqvae2.pipeline import Pipeline
from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, save_npz, save_png
from .config import PipelineConfig, check_guidance, check_seed, check_temperature
from .images import grid_image, to_uint8
from .stage2 import load_priors


def load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image file as (1, C, size, size) in [-1, 1]: any mode, resized and center-cropped like a folder's."""
    from .datasets.decode import IMAGE_READ_ERRORS, load_image_rgb, resize_center_crop
    if not Path(path).is_file():
        raise FileNotFoundError(f"--image {path} does not exist")
    try:
        im = resize_center_crop(load_image_rgb(path), size)
    except IMAGE_READ_ERRORS as e:
        raise ValueError(f"cannot read image file {path}: {e}") from e
    arr = np.asarray(im.convert("L") if channels == 1 else im, dtype=np.float32)
    x = torch.from_numpy(arr).reshape(size, size, -1).permute(2, 0, 1)
    return (x / 127.5 - 1)[None]


def _label(run: RunDir, image: torch.Tensor, class_label: int | None, n_classes: int) -> tuple[int | None, str]:
    """The class the priors are conditioned on: --class, else the run's classifier's prediction."""
    if n_classes == 0:
        if class_label is not None:
            raise ValueError(f"--class {class_label}: the priors of this run are not class-conditional")
        return None, "unconditional priors"
    if class_label is not None:
        if not 0 <= class_label < n_classes:
            raise ValueError(f"--class {class_label} is outside the model's classes [0, {n_classes - 1}]")
        return class_label, f"class {class_label} (--class)"
    if not (run.classifier / "model.safetensors").is_file():
        raise ValueError(f"the priors are class-conditional ({n_classes} classes): give --class, or train the "
                         f"classifier (`vqvae2 train-classifier --run-dir {run.root}`) to predict it")
    from eval.classifier import Classifier, predict_proba
    probs = predict_proba(Classifier.from_pretrained(run.classifier).eval(), image)
    c = int(probs.argmax())
    return c, f"class {c} (predicted by the classifier, p = {float(probs[0, c]):.2f})"


@torch.no_grad()
def vary(cfg: PipelineConfig, run: RunDir, image_path: Path, keep: str, n: int = 8, seed: int = 0,
         temperature: float | list[float] = 1.0, class_label: int | None = None, out: Path | None = None,
         guidance: float | list[float] = 1.0) -> dict:
    vqvae = VQVAE2.from_pretrained(run.vqvae).eval()
    levels = vqvae.levels
    if keep not in levels[:-1]:
        raise ValueError(f"--keep {keep!r}: choose a level with a level below it to resample, one of {levels[:-1]}")
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    check_seed(seed, "--seed", SAMPLE_SEED_MAX)
    check_temperature(temperature, "--temperature")
    check_guidance(guidance, "--guidance")
    if class_label is not None and class_label < 0:
        raise ValueError(f"--class must be a class index >= 0, got {class_label}")
    pipe = Pipeline(vqvae, load_priors(run, levels))
    image = load_image(image_path, vqvae.config.image_size, vqvae.config.in_channels)
    label, how = _label(run, image, class_label, pipe.n_classes)
    codes = pipe.encode(image)
    kept = levels.index(keep) + 1
    variations = pipe.vary(image, keep, n, labels=label, temperature=temperature, top_k=0, guidance=guidance,
                           sampler="cached", generator=torch.Generator().manual_seed(seed), output="tensor")
    pictures = to_uint8(torch.cat([image, pipe.decode(codes, output="tensor").images, variations.images]))
    out = out or run.root / "vary" / f"{Path(image_path).stem}-keep-{keep}.png"
    # row 1: the image and its reconstruction; then the variations, as many per row as fit
    ncol = max(2, min(n, 8))
    blank = torch.full_like(pictures[:1], 255).expand(ncol - 2, -1, -1, -1)
    save_png(out, grid_image(torch.cat([pictures[:2], blank, pictures[2:]]), nrow=ncol))
    arrays = {f"codes_{lv}": c.numpy().astype(np.uint16) for lv, c in zip(levels, variations.codes)}
    arrays.update({f"image_codes_{lv}": c.numpy().astype(np.uint16) for lv, c in zip(levels, codes)})
    save_npz(Path(out).with_suffix(".npz"), **arrays)
    return {"grid": str(out), "codes": str(Path(out).with_suffix(".npz")), "kept": levels[:kept],
            "resampled": levels[kept:], "label": how}
