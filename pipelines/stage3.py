"""Stage 3: the domain classifiers (`vqvae2 train-classifier`); the evaluation is in `pipelines.evaluate`.

Two classifiers are trained from different seeds: `classifier/` is the domain feature network
(FD-domain, KID, precision/recall) and `classifier/rejection/` scores candidates for rejection
sampling, so the samples are not filtered by the network that then scores them. Setting
`eval.rejection_classifier = "same"` uses one network for both, and the report says so.
The rejection network is trained with mixup (`train_classifier.rejection_mixup`), which keeps its
probabilities from saturating on atypical images; the feature network with plain cross-entropy.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from accelerate import PartialState
from torch.utils.data import DataLoader, Subset

from eval.classifier import Classifier, evaluate_accuracy, weights_hash

from .artifacts import RunDir, hash_config, write_json
from .config import PipelineConfig, classifier_model_config
from .datasets import build_datasets
from .train import machine_settings, make_accelerator, train
from .watch import Watcher


def classifier_dirs(cfg: PipelineConfig, run: RunDir) -> dict[str, "object"]:
    dirs = {"features": run.classifier}
    if cfg.eval.rejection_classifier == "separate":
        dirs["rejection"] = run.classifier / "rejection"
    return dirs


def classifier_hash(cfg: PipelineConfig) -> str:
    return hash_config(cfg.hash_dict("data", "classifier", "train_classifier") |
                       {"rejection": cfg.eval.rejection_classifier})


def classifier_loss(mixup: float = 0.0):
    """The classifiers' loss: cross-entropy on randomly flipped images (the only augmentation); with
    mixup > 0, each image is blended with another of the batch, weight lam ~ Beta(mixup, mixup) drawn
    from the global CPU generator (restored on resume), and the loss mixes both labels by lam."""

    def loss_fn(model, batch):
        x, y = batch
        flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
        x = torch.where(flip, x.flip(-1), x)
        if mixup <= 0:
            logits = model(x)
            return F.cross_entropy(logits.float(), y), {"accuracy": (logits.argmax(1) == y).float().mean()}
        lam = torch.distributions.Beta(mixup, mixup).sample((len(x),)).to(x.device)  # (B,)
        perm = torch.randperm(len(x)).to(x.device)
        w = lam.view(-1, 1, 1, 1)
        logits = model(w * x + (1 - w) * x[perm]).float()
        loss = (lam * F.cross_entropy(logits, y, reduction="none")
                + (1 - lam) * F.cross_entropy(logits, y[perm], reduction="none")).mean()
        major = torch.where(lam >= 0.5, y, y[perm])  # the label with the larger share
        return loss, {"accuracy": (logits.argmax(1) == major).float().mean()}

    return loss_fn


def val_accuracy(model: Classifier, val_set, val_batches: int = 0, batch_size: int = 512) -> float:
    """Top-1 accuracy on the validation split (its first val_batches batches when > 0)."""
    if val_batches:
        val_set = Subset(val_set, range(min(len(val_set), val_batches * batch_size)))
    return evaluate_accuracy(model, DataLoader(val_set, batch_size=batch_size))


def train_classifier(cfg: PipelineConfig, run: RunDir) -> dict | None:
    train_set, val_set = build_datasets(cfg.data)
    if train_set.num_classes < 2:
        raise ValueError(f"dataset {cfg.data.name!r} has no class labels: the classifier (rejection sampling, "
                         f"FD-domain) needs labelled data; use --feature-extractor inception")
    ccfg = classifier_model_config(cfg.classifier, train_set.channels, cfg.data.size, train_set.num_classes)
    h = classifier_hash(cfg)
    metrics = {}
    for offset, (role, out_dir) in enumerate(classifier_dirs(cfg, run).items()):
        tcfg = dataclasses.replace(cfg.train_classifier, seed=cfg.train_classifier.seed + offset)
        tcfg, settings = machine_settings(tcfg, out_dir, "train_classifier")
        mixup = tcfg.rejection_mixup if role == "rejection" else 0.0
        acc = make_accelerator(tcfg, out_dir)
        torch.manual_seed(tcfg.seed)
        watch = Watcher(out_dir, tcfg, lambda model, batches=tcfg.val_batches: {"accuracy": val_accuracy(model, val_set, batches)})
        result = train(Classifier(ccfg), train_set, tcfg, out_dir, classifier_loss(mixup),
                       {"config_hash": h, "role": role, "settings": settings.to_dict()},
                       accelerator=acc, desc=f"train-classifier {role}", watch=watch)
        if acc.is_main_process:
            model = result.model.eval()
            accuracy = val_accuracy(model, val_set)
            watch.finish(result.steps, {"accuracy": accuracy})
            metrics[role] = {"accuracy": accuracy, "steps": result.steps, "images_per_second": result.items_per_second,
                             "weights_hash": weights_hash(model), "seed": tcfg.seed, "mixup": mixup,
                             "settings": settings.to_dict()}
            model.save_pretrained(out_dir, extra={"config_hash": h})
    if not PartialState().is_main_process:
        return None
    summary = {"config_hash": h, "accuracy": metrics["features"]["accuracy"], "classifiers": metrics,
               "num_classes": train_set.num_classes, "class_names": list(getattr(train_set, "class_names", []))}
    write_json(run.classifier / "metrics.json", summary)
    return summary
