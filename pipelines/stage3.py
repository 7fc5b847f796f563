"""Stage 3: the domain classifier (`vqvae2 train-classifier`) and the evaluation (`vqvae2 evaluate`).

Two classifiers are trained from different seeds: `classifier/` is the domain feature network
(FD-domain, KID, precision/recall) and `classifier/rejection/` scores candidates for rejection
sampling, so the samples are not filtered by the network that then scores them. Setting
`eval.rejection_classifier = "same"` uses one network for both, and the report says so.
The rejection network is trained with mixup (`train_classifier.rejection_mixup`), which keeps its
probabilities from saturating on atypical images; the feature network with plain cross-entropy.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from accelerate import PartialState
from torch.utils.data import DataLoader

from eval.classifier import Classifier, ClassifierConfig, evaluate_accuracy, predict_proba, weights_hash
from eval.features import domain_extractor, inception_extractor
from eval.metrics import compute_metrics
from eval.rejection import rates_needed, rejection_sample
from eval.report import build_report, plot_tradeoff, write_report
from vqvae2.config import from_dict
from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, hash_config, save_png, write_json
from .config import PipelineConfig
from .data import build_datasets
from .images import grid_image, to_uint8
from .sample import generate, sample_labels
from .sample import stage_hash as samples_hash
from .train import make_accelerator, train

DERIVED = ("in_channels", "image_size", "num_classes")


def classifier_dirs(cfg: PipelineConfig, run: RunDir) -> dict[str, "object"]:
    dirs = {"features": run.classifier}
    if cfg.eval.rejection_classifier == "separate":
        dirs["rejection"] = run.classifier / "rejection"
    return dirs


def classifier_hash(cfg: PipelineConfig) -> str:
    d = cfg.to_dict()
    return hash_config({k: d[k] for k in ("data", "classifier", "train_classifier")} |
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


def train_classifier(cfg: PipelineConfig, run: RunDir) -> dict | None:
    train_set, val_set = build_datasets(cfg.data)
    if train_set.num_classes < 2:
        raise ValueError(f"dataset {cfg.data.name!r} has no class labels: the classifier (rejection sampling, "
                         f"FD-domain) needs labelled data; use --feature-extractor inception")
    for key in DERIVED:
        if key in cfg.classifier:
            raise ValueError(f"classifier.{key} is set from the data and cannot be configured")
    ccfg = from_dict(ClassifierConfig, {**cfg.classifier, "in_channels": train_set.channels,
                                        "image_size": cfg.data.size, "num_classes": train_set.num_classes},
                     where="classifier.")
    h = classifier_hash(cfg)
    metrics = {}
    for offset, (role, out_dir) in enumerate(classifier_dirs(cfg, run).items()):
        tcfg = dataclasses.replace(cfg.train_classifier, seed=cfg.train_classifier.seed + offset)
        mixup = tcfg.rejection_mixup if role == "rejection" else 0.0
        acc = make_accelerator(tcfg)
        torch.manual_seed(tcfg.seed)
        result = train(Classifier(ccfg), train_set, tcfg, out_dir, classifier_loss(mixup),
                       {"config_hash": h, "role": role},
                       accelerator=acc, desc=f"train-classifier {role}")
        if acc.is_main_process:
            model = result.model.eval()
            accuracy = evaluate_accuracy(model, DataLoader(val_set, batch_size=512))
            metrics[role] = {"accuracy": accuracy, "steps": result.steps, "images_per_second": result.items_per_second,
                             "weights_hash": weights_hash(model), "seed": tcfg.seed, "mixup": mixup}
            model.save_pretrained(out_dir, extra={"config_hash": h})
    if not PartialState().is_main_process:
        return None
    summary = {"config_hash": h, "accuracy": metrics["features"]["accuracy"], "classifiers": metrics,
               "num_classes": train_set.num_classes, "class_names": list(getattr(train_set, "class_names", []))}
    write_json(run.classifier / "metrics.json", summary)
    return summary


def _real_images(dataset, n: int) -> torch.Tensor:
    n = len(dataset) if n <= 0 else min(n, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=512)
    return torch.cat([to_uint8(x) for x, _ in loader])


@torch.no_grad()
def _reconstruct(vqvae: VQVAE2, images_uint8: torch.Tensor, device) -> torch.Tensor:
    out = []
    for chunk in images_uint8.split(256):
        x = chunk.to(device).float() / 127.5 - 1
        out.append(to_uint8(vqvae.decode_codes(vqvae.encode(x))))
    return torch.cat(out)


def eval_hash(cfg: PipelineConfig, run: RunDir) -> str:
    return hash_config({"samples": samples_hash(cfg, run), "classifier": classifier_hash(cfg),
                        "eval": cfg.to_dict()["eval"]})


def evaluate(cfg: PipelineConfig, run: RunDir) -> dict | None:
    e = cfg.eval
    state = PartialState()
    device = state.device
    vqvae = VQVAE2.from_pretrained(run.vqvae, map_location=device).eval()
    from .stage2 import load_priors
    priors = load_priors(run, vqvae.levels, device=device)
    n_classes = priors[0].config.n_classes
    dirs = classifier_dirs(cfg, run)
    for d in dirs.values():
        if not (d / "model.safetensors").is_file():
            raise FileNotFoundError(f"{d}/model.safetensors does not exist: run "
                                    f"`vqvae2 train-classifier --run-dir {run.root}` first")
    feature_net = Classifier.from_pretrained(dirs["features"]).eval()
    reject_net = Classifier.from_pretrained(dirs.get("rejection", dirs["features"])).eval()
    if e.feature_extractor == "inception":
        extractor = inception_extractor(e.inception_weights or None)
    else:
        extractor = domain_extractor(feature_net)

    # 1. candidates: enough for the lowest acceptance rate; the first ceil(n / r) serve rate r
    n_cand = rates_needed(e.n_samples, e.acceptance_rates)
    labels = sample_labels(n_cand, n_classes, -1, conditional=n_classes > 0)
    images, _ = generate(vqvae, priors, n_cand, labels, e.seed, cfg.sample.batch_size, e.temperature,
                         cfg.sample.top_k, cfg.sample.sampler)
    if not state.is_main_process:
        return None
    probs = predict_proba(reject_net.to(device), images, batch_size=e.batch_size)

    # 2. metrics per acceptance rate, against the real validation images
    _, val_set = build_datasets(cfg.data)
    real = _real_images(val_set, e.n_real)
    kid_subset = min(e.kid_subset_size, e.n_samples, len(real))
    common = dict(kid_subset_size=kid_subset, seed=e.seed, batch_size=e.batch_size, device=device)
    by_rate, accepted_probs = {}, {}
    for rate in e.acceptance_rates:
        idx = rejection_sample(images, probs, e.n_samples, rate, target_classes=labels)
        by_rate[rate] = compute_metrics(images[idx], real, extractor, **common)
        kept = probs[idx]
        accepted_probs[rate] = float((kept.gather(1, labels[idx, None]) if labels is not None
                                      else kept.max(1, keepdim=True).values).mean())
        nrow = min(n_classes, 10) if n_classes else 8
        save_png(run.eval / f"samples-rate-{rate:g}.png", grid_image(_class_grid(images[idx], labels, idx, nrow), nrow=nrow))

    # 3. the upper bound: real validation images through the VQ-VAE
    recon = compute_metrics(_reconstruct(vqvae, real, device), real, extractor, **common)
    report = build_report(
        by_rate, recon,
        config_hash=eval_hash(cfg, run), seed=e.seed, n_candidates=n_cand, acceptance_rates=list(e.acceptance_rates),
        mean_classifier_prob_of_kept={f"{r:g}": p for r, p in accepted_probs.items()},
        rejection_classifier=str(dirs.get("rejection", dirs["features"]).relative_to(run.root)),
        rejection_classifier_hash=weights_hash(reject_net),
        rejection_is_feature_network=e.rejection_classifier == "same",
        rejection_classifier_mixup=cfg.train_classifier.rejection_mixup if "rejection" in dirs else 0.0,
        feature_network=str(dirs["features"].relative_to(run.root)) if e.feature_extractor == "domain" else "inception",
        class_conditional=n_classes > 0, temperature=e.temperature, sampler=cfg.sample.sampler,
        torch_fidelity_version=torch_fidelity.__version__,
    )
    write_report(run.eval, report)
    rows = report["rows"]
    plot_tradeoff(run.eval / "tradeoff.png", [r["acceptance_rate"] for r in rows], [r["fd"] for r in rows],
                  [r["precision"] for r in rows], [r["recall"] for r in rows], report["fd_label"])
    write_json(run.eval / "metrics.json", {"config_hash": eval_hash(cfg, run), "fd_label": report["fd_label"]})
    return report


def _class_grid(images: torch.Tensor, labels, idx: torch.Tensor, nrow: int, rows: int = 6) -> torch.Tensor:
    """Up to `rows` kept samples per class, one class per column (or the first images when unlabelled)."""
    if labels is None:
        return images[: nrow * rows]
    lab = labels[idx]
    cols = [images[lab == c][:rows] for c in range(nrow)]
    depth = min(len(c) for c in cols)
    if depth == 0:
        return images[: nrow * rows]
    return torch.stack([c[:depth] for c in cols], 1).flatten(0, 1)
