"""Stage 3: the classifiers (`vqvae2 train-classifier`); the evaluation is in `pipelines.evaluate`.

Two classifiers are trained from different seeds: `classifier/` is the domain feature network
(FD-domain, KID, precision/recall) and `classifier/rejection/` scores candidates for rejection
sampling, so the samples are not filtered by the network that then scores them. Setting
`eval.rejection_classifier = "same"` uses one network for both, and the report says so.
The rejection network is trained with mixup (`train_classifier.rejection_mixup`), which keeps its
probabilities from saturating on atypical images; the feature network with plain cross-entropy.

Data without class labels gets one network instead, the realism classifier: training images, reconstructed by
the run's VQ-VAE (`train_classifier.realism_real`), against the model's own samples (drawn with another seed
than evaluation's), whose probability D that an image is real gives the density ratio D / (1 - D) that
realism rejection samples by (eval/rejection.py). Against the images themselves it learns the decoder's
texture, which every sample has, instead of what the priors got wrong (docs/sampling.md).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import PartialState
from torch.utils.data import DataLoader, Dataset, Subset

from eval.classifier import Classifier, evaluate_accuracy, weights_hash

from .artifacts import RunDir, hash_config, write_json
from .config import PipelineConfig, classifier_model_config, realism_classifier_config
from .datasets import build_datasets
from .train import machine_settings, make_accelerator, train
from .watch import Watcher


def classifier_dirs(cfg: PipelineConfig, run: RunDir) -> dict[str, "object"]:
    dirs = {"features": run.classifier}
    if cfg.eval.rejection_classifier == "separate":
        dirs["rejection"] = run.classifier / "rejection"
    return dirs


def classifier_hash(cfg: PipelineConfig) -> str:
    d = cfg.hash_dict("data", "classifier", "train_classifier")
    for key in ("realism_real", "realism_crop"):  # only the realism classifier's: in realism_hash
        d["train_classifier"].pop(key, None)
    return hash_config(d | {"rejection": cfg.eval.rejection_classifier})


# the seed of the samples the realism classifier learns from: eval.seed + this, so never evaluation's own
REALISM_SEED_OFFSET = 104_729


def realism_hash(cfg: PipelineConfig, run: RunDir) -> str:
    from .stage2 import stage_hash as prior_hash
    # "images" (the first rule) hashes as before it had a name, so runs trained with it stay finished under it
    real = {} if cfg.train_classifier.realism_real == "images" else {"real": cfg.train_classifier.realism_real}
    crop = cfg.train_classifier.realism_crop
    real |= {} if crop == 1 else {"crop": crop}
    return hash_config({"classifier": classifier_hash(cfg), "realism": cfg.train_classifier.realism_samples, **real,
                        "priors": [prior_hash(cfg, run, lv) for lv in cfg.vqvae.levels], "seed": cfg.eval.seed,
                        "temperature": cfg.eval.temperature, "top_k": cfg.sample.top_k, "top_p": cfg.sample.top_p})


class RealOrGenerated(Dataset):
    """Real images (label 1: a dataset's images at `real_indices`, or uint8 (N, C, H, W) with indices into it)
    followed by generated ones (uint8 (N, C, H, W), label 0)."""

    def __init__(self, real: Dataset | torch.Tensor, real_indices: list[int], generated: torch.Tensor):
        self.real, self.indices, self.generated = real, real_indices, generated

    def __len__(self) -> int:
        return len(self.indices) + len(self.generated)

    def __getitem__(self, i: int):
        if i < len(self.indices):
            if isinstance(self.real, torch.Tensor):
                return self.real[self.indices[i]].float() / 127.5 - 1, torch.tensor(1)
            return self.real[self.indices[i]][0], torch.tensor(1)
        return self.generated[i - len(self.indices)].float() / 127.5 - 1, torch.tensor(0)


def realism_sets(cfg: PipelineConfig, run: RunDir, generated: torch.Tensor | None = None) -> tuple[Dataset, Dataset]:
    """Train and validation sets of the realism classifier: as many real training images as generated ones
    (evenly spread over the split; reconstructed by the run's VQ-VAE unless train_classifier.realism_real is
    "images"), the last tenth of each held out for validation. `generated` (uint8) defaults to
    train_classifier.realism_samples images of the run's priors, unconditional."""
    from vqvae2.vqvae import VQVAE2
    device = PartialState().device
    reconstruct = cfg.train_classifier.realism_real == "reconstructions"
    # the VQ-VAE decodes the samples and reconstructs the real side: not loaded when neither is needed
    vqvae = VQVAE2.from_pretrained(run.vqvae, map_location=device).eval() if generated is None or reconstruct else None
    if generated is None:
        from .sample import generate, sampling_controls
        from .stage2 import load_priors
        priors = load_priors(run, vqvae.levels, device=device)
        controls = sampling_controls(cfg.sample, seed=cfg.eval.seed + REALISM_SEED_OFFSET,
                                     temperature=cfg.eval.temperature)
        generated, _ = generate(vqvae, priors, cfg.train_classifier.realism_samples, None, controls)
    n = len(generated)
    train_set, _ = build_datasets(cfg.data)
    real = [round(i * len(train_set) / n) for i in range(min(n, len(train_set)))]
    source: Dataset | torch.Tensor = train_set
    if reconstruct:
        from .evaluate import image_batches, reconstructions
        source = torch.cat([r.cpu() for r in reconstructions(vqvae, image_batches(Subset(train_set, real)), device)])
        real = list(range(len(real)))
    cut_real, cut_gen = len(real) - max(1, len(real) // 10), n - max(1, n // 10)
    return (RealOrGenerated(source, real[:cut_real], generated[:cut_gen]),
            RealOrGenerated(source, real[cut_real:], generated[cut_gen:]))


def realism_mixup(tcfg) -> float:
    """Mixup of the realism classifier: none against reconstructions, whose density ratios rejection samples by
    and mixup flattens; against images (which it tells apart from samples at once) the rejection network's."""
    return 0.0 if tcfg.realism_real == "reconstructions" else tcfg.rejection_mixup


def train_realism_classifier(cfg: PipelineConfig, run: RunDir, generated: torch.Tensor | None = None,
                             out_dir: Path | None = None) -> dict | None:
    """The realism classifier of data without class labels, in classifier/ (or `out_dir`, for a classifier of
    other `generated` images than the run's own, as benchmarks/generation_quality.py trains)."""
    train_set, val_set = realism_sets(cfg, run, generated)
    ccfg = realism_classifier_config(cfg)
    h, out_dir = realism_hash(cfg, run), out_dir or run.classifier
    tcfg, settings = machine_settings(cfg.train_classifier, out_dir, "train_classifier")
    acc = make_accelerator(tcfg, out_dir)
    torch.manual_seed(tcfg.seed)
    watch = Watcher(out_dir, tcfg, lambda model, batches=tcfg.val_batches: {"accuracy": val_accuracy(model, val_set, batches)})
    result = train(Classifier(ccfg), train_set, tcfg, out_dir, classifier_loss(realism_mixup(tcfg)),
                   {"config_hash": h, "role": "realism", "settings": settings.to_dict()},
                   accelerator=acc, desc="train-classifier realism", watch=watch)
    if not acc.is_main_process:
        return None
    model = result.model.eval()
    accuracy = val_accuracy(model, val_set)
    watch.finish(result.steps, {"accuracy": accuracy})
    model.save_pretrained(out_dir, extra={"config_hash": h})
    summary = {"config_hash": h, "accuracy": accuracy, "num_classes": 0, "realism": True,
               "classifiers": {"realism": {"accuracy": accuracy, "steps": result.steps, "seed": tcfg.seed,
                                           "weights_hash": weights_hash(model), "mixup": realism_mixup(tcfg),
                                           "real_images": len(train_set.indices) + len(val_set.indices),
                                           "real": cfg.train_classifier.realism_real,
                                           "generated_images": len(train_set.generated) + len(val_set.generated),
                                           "settings": settings.to_dict()}}}
    write_json(out_dir / "metrics.json", summary)
    return summary


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
