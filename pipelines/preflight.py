"""Checks `vqvae2 run` makes before its first training step: can every stage it will run, run?

A full-size run trains for days; finding out at the classifier stage that the folder has no labels,
or at evaluation that the Inception weights are missing, wastes all of it. Each check is cheap: it
lists files, reads headers or small files, and never decodes the dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import PipelineConfig
from .stages import groups_until, pipeline_stages


class PreflightError(ValueError):
    """The configuration cannot run to its end; the message says what to change."""


def data_num_classes(cfg: PipelineConfig) -> int:
    """The number of classes of the configured data, from file names only (0 = unlabelled)."""
    d = cfg.data
    if d.name == "synthetic-faces":
        from .datasets import FACE_CLASS_NAMES
        return len(FACE_CLASS_NAMES)
    if d.name in ("fashion-mnist", "cifar10"):
        return 10
    from .datasets import folder_class_names, list_image_files
    root = Path(d.root)
    return len(folder_class_names(root, list_image_files(root)))


def unlabelled_domain_error(cfg: PipelineConfig) -> str:
    """Why data without labels cannot be evaluated with the domain extractor, and what to use."""
    return (f"evaluation uses the domain extractor (eval.feature_extractor='domain'), a classifier trained on the "
            f"data's class labels, but data {cfg.data.name!r} ({cfg.data.root}) has no class labels (no class "
            f"subfolders). Evaluate with Inception: --set eval.feature_extractor='inception' (weights at "
            f"eval.inception_weights or in torch's hub cache)")


def _check_data(cfg: PipelineConfig) -> None:
    d = cfg.data
    if d.name == "folder":
        root = Path(d.root)
        if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
            raise PreflightError(f"data.root {root} is not readable")
        return  # list_image_files (in data_num_classes) names a missing or empty folder
    if d.name == "fashion-mnist":
        from .datasets.fashion_mnist import FASHION_MNIST_DEFAULT_ROOT, _IDX_FILES, _find_idx
        root = Path(d.root or FASHION_MNIST_DEFAULT_ROOT)
        for name in _IDX_FILES["train"] + _IDX_FILES["val"]:
            _find_idx(root, name)  # FileNotFoundError saying how to install the files
    if d.name == "cifar10" and not d.download:
        from .datasets.cifar10 import CIFAR10_DIR, CIFAR10_FILES, CIFAR10_URL
        folder = Path(d.root) / CIFAR10_DIR
        missing = [n for n in CIFAR10_FILES["train"] + CIFAR10_FILES["val"] if not (folder / n).is_file()]
        if missing:
            raise PreflightError(f"CIFAR-10 files missing in {folder}: {missing}; extract {CIFAR10_URL} into "
                                 f"{d.root} or set data.download=true")


def _check_precision(cfg: PipelineConfig, stages: list[str]) -> None:
    # each prior is checked with the settings it trains with: [train_prior] or its own [prior.<level>.train]
    priors = [("priors", f"prior.{lv}.train" if "train" in cfg.prior.get(lv, {}) else "train_prior", cfg.prior_train(lv))
              for lv in cfg.vqvae.levels]
    sections = [("vqvae", "train_vqvae", cfg.train_vqvae), ("classifier", "train_classifier", cfg.train_classifier),
                *priors]
    for stage, section, tcfg in sections:
        if stage in stages and tcfg.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise PreflightError(f"{section}.mixed_precision='fp16' needs a GPU and none is visible; use 'auto', 'bf16' or 'no'")


def _check_evaluation(cfg: PipelineConfig, stages: list[str], n_classes: int) -> None:
    e = cfg.eval
    if not e.enabled or "eval" not in stages:
        return
    if e.feature_extractor == "domain" and n_classes < 2:
        raise PreflightError(unlabelled_domain_error(cfg) + ", or stop before evaluation with --until samples")
    from .datasets import list_image_files
    if e.feature_extractor == "inception":
        from eval.features import inception_extractor
        try:
            inception_extractor(e.inception_weights or None)
        except FileNotFoundError as err:
            raise PreflightError(f"{err} To run the other stages now and evaluate later, use --until samples.") \
                from None
    if cfg.data.name == "folder" and not e.reference_stats:
        from .datasets.folder import folder_split
        root = Path(cfg.data.root)
        n_val = sum(folder_split(cfg.data, [f.relative_to(root).as_posix() for f in list_image_files(root)]))
        if n_val < 2:
            raise PreflightError(f"evaluation compares samples with the validation images, but the validation split "
                                 f"of {root} holds {n_val}: add images or raise data.val_fraction "
                                 f"({cfg.data.val_fraction}), give eval.reference_stats, or stop with --until samples")
    if e.reference_stats and not Path(e.reference_stats).is_file():
        raise PreflightError(f"eval.reference_stats {e.reference_stats} does not exist: make it with "
                             f"`vqvae2 fid-stats` or leave eval.reference_stats empty")


def preflight(cfg: PipelineConfig, until: str | None = None) -> dict:
    """Raises PreflightError (or FileNotFoundError naming a missing path) when a stage of `vqvae2 run`
    would fail for its data or configuration; returns what it found (classes, the stage groups to run)."""
    stages = groups_until(until)
    _check_data(cfg)
    n_classes = data_num_classes(cfg)
    planned = {s.group for s in pipeline_stages(cfg, n_classes >= 2)}  # what run_all will make: no unused classifier
    _check_precision(cfg, [s for s in stages if s in planned])
    if "samples" in stages and cfg.sample.class_label >= 0 and n_classes == 0:
        raise PreflightError(f"sample.class_label={cfg.sample.class_label}, but data {cfg.data.name!r} has no "
                             f"class labels: the priors will be unconditional; leave sample.class_label at -1")
    _check_evaluation(cfg, stages, n_classes)
    return {"groups": stages, "num_classes": n_classes}
