"""`vqvae2 sample`: top-down ancestral sampling from the priors, then the VQ-VAE decoder.

Samples are drawn in batches; batch b uses a generator seeded by (seed, b) and batches are shared
round-robin between processes, so the samples depend on neither the number of processes nor on
whether the job was killed and resumed. The stage streams batches into a chunked store on disk
(`samples/chunks/`), then exports `samples.npz` (`arr_0`: uint8 N x H x W x 3) or PNG files, so
`--n 50000` runs in the memory of one batch.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from vqvae2.pipeline import Pipeline, SampleSettings, batch_generator, class_labels
from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, hash_config, save_png, write_json
from .config import PipelineConfig, SampleConfig
from .images import grid_image
from .sample_store import SampleStore
from .stage2 import load_priors, stage_hash as prior_hash

ExtraFn = Callable[[torch.Tensor, torch.Tensor | None], dict[str, np.ndarray]]


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
    return class_labels(n, num_classes, class_label)


def sampling_controls(s: SampleConfig, **changes) -> SampleSettings:
    """The run's [sample] values as one set of sampling controls (seed, temperature, top_k, top_p, guidance,
    sampler, batch_size), with `changes`: evaluation draws with its own seed and temperature."""
    return dataclasses.replace(SampleSettings.from_mapping(dataclasses.asdict(s)), **changes)


@torch.no_grad()
def sample_batch(vqvae: VQVAE2, priors, b: int, lo: int, hi: int, labels: torch.Tensor | None,
                 controls: SampleSettings) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Samples [lo, hi) of a run of batches: uint8 images (B, C, H, W) on CPU and codes per level: batch b of
    `pipe(n, seed=controls.seed, batch_size=hi - lo)` (vqvae2.Pipeline, the same code)."""
    pipe = Pipeline(vqvae, priors, dataclasses.replace(controls, batch_size=hi - lo))
    out = pipe(hi - lo, labels=None if labels is None else labels[lo:hi],
               generator=batch_generator(controls.seed, b), output="uint8")
    return out.images, out.codes


@torch.no_grad()
def generate(vqvae: VQVAE2, priors, n: int, labels: torch.Tensor | None, controls: SampleSettings,
             progress: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """n images (uint8, N C H W) and their codes per level, in memory (small n; the stages use a store),
    in batches of controls.batch_size."""
    state = PartialState()
    size = controls.batch_size
    n_batches = (n + size - 1) // size
    mine = list(range(state.process_index, n_batches, state.num_processes))
    results = []
    for b in tqdm(mine, desc="sample", disable=not (progress and state.is_local_main_process), dynamic_ncols=True):
        lo, hi = b * size, min(n, (b + 1) * size)
        images, codes = sample_batch(vqvae, priors, b, lo, hi, labels, controls)
        results.append((b, images, codes))
    if state.num_processes > 1:
        results = gather_object(results)
    results.sort(key=lambda r: r[0])
    images = torch.cat([r[1] for r in results])
    codes = [torch.cat([r[2][i] for r in results]) for i in range(len(priors))]
    return images, codes


@torch.no_grad()
def generate_to_store(vqvae: VQVAE2, priors, store: SampleStore, labels: torch.Tensor | None,
                      controls: SampleSettings, extra: ExtraFn | None = None, desc: str = "sample") -> None:
    """Fills the store's missing chunks (chunk b = sampling batch b, the store's batch size), sharing them
    between processes. `extra(images, labels)` adds per-sample arrays to each chunk (e.g. classifier
    probabilities)."""
    state = PartialState()
    if state.is_main_process:
        store.open()
    state.wait_for_everyone()
    mine = [b for b in store.missing() if b % state.num_processes == state.process_index]
    levels = vqvae.levels
    bar = tqdm(mine, desc=desc, disable=not state.is_local_main_process, dynamic_ncols=True,
               unit="batch", postfix={"done": store.n_chunks - len(store.missing())})
    for b in bar:
        lo, hi = store.bounds(b)
        images, codes = sample_batch(vqvae, priors, b, lo, hi, labels, controls)
        lab = None if labels is None else labels[lo:hi]
        arrays = {"images": images.numpy(),
                  "labels": (lab if lab is not None else torch.full((hi - lo,), -1)).numpy()}
        for level, c in zip(levels, codes):
            arrays[f"codes_{level}"] = c.numpy().astype(np.uint16)
        if extra is not None:
            arrays.update(extra(images, lab))
        store.write(b, **arrays)
    state.wait_for_everyone()


def stage_hash(cfg: PipelineConfig, run: RunDir) -> str:
    s = {k: v for k, v in cfg.hash_dict("sample")["sample"].items() if k != "format"}  # same samples either way
    return hash_config({"priors": [prior_hash(cfg, run, lv) for lv in cfg.vqvae.levels], "sample": s})


def sample_stage(cfg: PipelineConfig, run: RunDir, png_dir: Path | None = None) -> dict:
    s = cfg.sample
    state = PartialState()
    vqvae = VQVAE2.from_pretrained(run.vqvae, map_location=state.device).eval()
    priors = load_priors(run, vqvae.levels, device=state.device)
    n_classes = priors[0].config.n_classes
    labels = sample_labels(s.n, n_classes, s.class_label, conditional=n_classes > 0)
    scorer, scorer_hash = _classifier_scorer(run)
    store = SampleStore(run.samples / "chunks", s.n, s.batch_size,
                        {"config_hash": stage_hash(cfg, run), "classifier": scorer_hash})
    generate_to_store(vqvae, priors, store, labels, sampling_controls(s), extra=scorer)
    if not state.is_main_process:
        return {}
    first = store.images(np.arange(min(64, s.n)))
    nrow = max(1, min(n_classes, 10)) if n_classes and s.class_label < 0 else 8
    save_png(run.samples / "grid.png", grid_image(first[:max(1, len(first) // nrow) * nrow], nrow=nrow))
    outputs = []
    if s.format == "npz":
        store.export_npz(run.samples / "samples.npz",
                         ("labels", *(f"codes_{lv}" for lv in vqvae.levels), "classifier_probs"),
                         scalars={"seed": s.seed})
        outputs.append(str(run.samples / "samples.npz"))
    if s.format == "png" or png_dir is not None:
        target = png_dir or run.samples / "png"
        store.export_png(target)
        outputs.append(f"{target}/*.png")
    info = {"config_hash": stage_hash(cfg, run), "n": s.n, "seed": s.seed, "temperature": s.temperature,
            "top_k": s.top_k, "top_p": s.top_p, "guidance": s.guidance, "sampler": s.sampler, "class_label": s.class_label, "levels": vqvae.levels,
            "format": s.format, "outputs": outputs}
    write_json(run.samples / "metrics.json", info)
    store.remove()  # everything is in the exports now
    return info


def _classifier_scorer(run: RunDir) -> tuple[ExtraFn | None, str | None]:
    """Classifier probabilities of the samples when the run has a classifier, and its weights hash."""
    if not (run.classifier / "model.safetensors").is_file():
        return None, None
    from eval.classifier import Classifier, predict_proba, weights_hash
    model = Classifier.from_pretrained(run.classifier, map_location=device_of()).eval()
    scorer = lambda images, labels: {"classifier_probs": predict_proba(model, images, batch_size=256).numpy()}
    return scorer, weights_hash(model)
