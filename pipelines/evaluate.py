"""`vqvae2 evaluate` (rejection sampling + FD / KID / IS / precision-recall) and `vqvae2 fid-stats`.

Evaluation streams: candidates are sampled into a chunked store (`eval/candidates/`, resumable) with
the rejection network's probabilities, when there is one; the feature extractor sees every candidate once, the real
images once (or never, when `eval.reference_stats` gives their statistics), and each acceptance rate
is a selection of rows of those features. Memory holds features, not images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
import torch_fidelity
from accelerate import PartialState
from torch.utils.data import DataLoader, Dataset, Subset

from eval.classifier import Classifier, predict_proba, weights_hash
from eval.features import ExtractorSpec, domain_extractor, inception_extractor
from eval.metrics import (FD_INFINITY_MIN_N, FID_PROTOCOL_N, PSNR, FeatureExtractor, Features, ReferenceStats,
                          metrics_from_features)
from eval.rejection import REALISM_CAP_QUANTILE, rates_needed, realism_sample, rejection_sample
from eval.report import build_report, plot_tradeoff, write_report
from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, hash_config, save_png, write_json
from .config import PipelineConfig
from .datasets import build_datasets
from .images import grid_image, to_uint8
from .sample import generate_to_store, sample_labels, sampling_controls
from .sample import stage_hash as samples_hash
from .sample_store import SampleStore
from .codes import read_codes_meta
from .stage2 import load_priors, stage_hash as prior_hash
from .stage3 import classifier_dirs, classifier_hash
from .stages import rejection_used


# the feature extractor

def extractor_spec(cfg: PipelineConfig, run: RunDir | None) -> ExtractorSpec:
    """The configured extractor: Inception (weights loaded safely, standard or not by SHA-256) or the
    run's domain classifier, with the configured resize (eval.resize)."""
    e = cfg.eval
    if e.feature_extractor == "inception":
        return inception_extractor(e.inception_weights or None).with_resize(e.resize)
    from .preflight import data_num_classes, unlabelled_domain_error
    if data_num_classes(cfg) < 2:  # `vqvae2 run` refuses this in pre-flight; `vqvae2 evaluate` here
        raise ValueError(unlabelled_domain_error(cfg))
    if run is None or not (run.classifier / "model.safetensors").is_file():
        where = "the run" if run is None else str(run.classifier)
        raise FileNotFoundError(f"the domain extractor needs the run's classifier ({where}/model.safetensors): run "
                                f"`vqvae2 train-classifier --run-dir RUN` first, or use --feature-extractor inception")
    return domain_extractor(Classifier.from_pretrained(run.classifier).eval()).with_resize(e.resize)


def image_batches(dataset: Dataset, n: int = 0, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """uint8 batches of the first n images of a dataset (all when n <= 0)."""
    n = len(dataset) if n <= 0 else min(n, len(dataset))
    for x, _ in DataLoader(Subset(dataset, range(n)), batch_size=batch_size):
        yield to_uint8(x)


@torch.no_grad()
def reconstructions(vqvae: VQVAE2, batches: Iterator[torch.Tensor], device,
                    psnr: PSNR | None = None) -> Iterator[torch.Tensor]:
    """uint8 reconstructions of uint8 batches through the VQ-VAE; `psnr`, when given, sees every pair."""
    for chunk in batches:
        x = chunk.to(device).float() / 127.5 - 1
        recon = to_uint8(vqvae.decode_codes(vqvae.encode(x)))
        if psnr is not None:
            psnr.update(chunk, recon)
        yield recon


# reference statistics: `vqvae2 fid-stats`

def fid_stats(cfg: PipelineConfig, run: RunDir | None, out: Path, split: str = "val", folder: Path | None = None,
              n: int = 0, keep_features: bool = True) -> ReferenceStats:
    """Writes the reference mu / sigma (float64) of a split of the configured data, or of every image
    in `folder`, in the configured extractor's space, with the extractor name and weights hash."""
    if split not in ("train", "val"):
        raise ValueError(f"--split must be 'train' or 'val', got {split!r}")
    spec = extractor_spec(cfg, run)
    device = PartialState().device
    if folder is not None:
        from .datasets import ImageFolderDataset, list_image_files
        dataset = ImageFolderDataset(list_image_files(folder), [], [], cfg.data.size, cfg.data.skip_bad_files,
                                     str(folder))
        dataset.labels = [-1] * len(dataset.files)
        source = f"folder {folder} at {cfg.data.size} px"
    else:
        dataset = dict(zip(("train", "val"), build_datasets(cfg.data)))[split]
        source = f"{cfg.data.name} {split} split at {cfg.data.size} px"
    net = FeatureExtractor(spec, device)
    feats = net.extract(_progress(image_batches(dataset, n, cfg.eval.batch_size), "fid-stats"), cfg.eval.batch_size)
    stats = ReferenceStats.from_features(feats, spec, source=f"{source}, {len(feats)} images",
                                         keep_features=keep_features)
    stats.save(out)
    return stats


def _progress(batches, desc: str):
    from tqdm.auto import tqdm
    return tqdm(batches, desc=desc, unit="batch", dynamic_ncols=True, disable=not PartialState().is_main_process)


# evaluation

def eval_hash(cfg: PipelineConfig, run: RunDir) -> str:
    return hash_config({"samples": samples_hash(cfg, run), "classifier": classifier_hash(cfg),
                        "eval": cfg.hash_dict("eval")["eval"]})


def _candidates(cfg: PipelineConfig, run: RunDir, vqvae: VQVAE2, priors, reject_net: Classifier | None,
                n_cand: int, labels: torch.Tensor | None) -> SampleStore:
    """The candidates of rejection sampling, with the rejection network's probabilities (when there is one), in
    a store."""
    e, s = cfg.eval, cfg.sample
    key = {"priors": [prior_hash(cfg, run, lv) for lv in vqvae.levels], "seed": e.seed,
           "temperature": e.temperature, "top_k": s.top_k, "sampler": s.sampler, **({"top_p": s.top_p} if s.top_p else {}),
           **({"guidance": s.guidance} if s.guidance != 1 else {}),
           "rejection_classifier": weights_hash(reject_net) if reject_net is not None else None}
    store = SampleStore(run.eval / "candidates", n_cand, s.batch_size, key)
    probs = None if reject_net is None else \
        lambda images, lab: {"probs": predict_proba(reject_net, images, batch_size=e.batch_size).numpy()}
    generate_to_store(vqvae, priors, store, labels, sampling_controls(s, seed=e.seed, temperature=e.temperature),
                      extra=probs, desc="eval candidates")
    return store


def _rejection_network(cfg: PipelineConfig, run: RunDir, device) -> tuple[Classifier | None, dict]:
    """The rejection classifier: the domain one of labelled data, the realism one (real against generated) of
    data without labels; none (and no folders) for data without labels evaluated at acceptance 1 alone."""
    dirs = classifier_dirs(cfg, run)
    if read_codes_meta(run).get("num_classes", 0) < 2:
        if not rejection_used(cfg):
            return None, {}
        dirs = {"realism": run.classifier}
    for d in dirs.values():
        if not (d / "model.safetensors").is_file():
            raise FileNotFoundError(f"{d}/model.safetensors does not exist: run "
                                    f"`vqvae2 train-classifier --run-dir {run.root}` first")
    chosen = dirs.get("realism") or dirs.get("rejection") or dirs["features"]
    return Classifier.from_pretrained(chosen, map_location=device).eval(), dirs


def evaluate(cfg: PipelineConfig, run: RunDir) -> dict | None:
    e = cfg.eval
    state = PartialState()
    device = state.device
    vqvae = VQVAE2.from_pretrained(run.vqvae, map_location=device).eval()
    priors = load_priors(run, vqvae.levels, device=device)
    n_classes = priors[0].config.n_classes
    reject_net, dirs = _rejection_network(cfg, run, device)
    rates = list(e.acceptance_rates)
    spec = extractor_spec(cfg, run)
    reference = None
    if e.reference_stats:
        reference = ReferenceStats.load(e.reference_stats)
        reference.check_extractor(spec, e.reference_stats)

    # 1. candidates: enough for the lowest acceptance rate; the first ceil(n / r) serve rate r
    n_cand = rates_needed(e.n_samples, rates)
    labels = sample_labels(n_cand, n_classes, -1, conditional=n_classes > 0)
    store = _candidates(cfg, run, vqvae, priors, reject_net, n_cand, labels)
    if not state.is_main_process:
        return None
    probs = torch.from_numpy(store.gather("probs")) if reject_net is not None else None

    # 2. features: every candidate once, the real validation images once (or their statistics)
    net = FeatureExtractor(spec, device)
    gen = net.extract(_progress(store.iter_images(), "features of candidates"), e.batch_size)
    _, val_set = build_datasets(cfg.data)
    real: Features | ReferenceStats = reference if reference is not None else \
        net.extract(_progress(image_batches(val_set, e.n_real, e.batch_size), "features of real images"), e.batch_size)
    n_real = real.n if isinstance(real, ReferenceStats) else len(real)
    if n_real < 2:
        raise ValueError(f"evaluation compares samples with the validation images, but the validation split of "
                         f"data {cfg.data.name!r} {cfg.data.root} holds {n_real}: add images or raise data.val_fraction "
                         f"({cfg.data.val_fraction}), or give eval.reference_stats")
    kid_subset = min(e.kid_subset_size, e.n_samples, n_real)
    common = dict(kid_subset_size=kid_subset, seed=e.seed, fd_resamples=e.fd_resamples)

    # 3. metrics per acceptance rate
    by_rate, accepted_probs = {}, {}
    nrow = min(n_classes, 10) if n_classes else 8
    for rate in rates:
        if reject_net is None:  # every rate is 1 (data without labels): the first n candidates
            idx = torch.arange(e.n_samples)
        elif "realism" in dirs:  # accepted with probability proportional to the density ratio D / (1 - D)
            idx = realism_sample(probs[:, 1], e.n_samples, rate, seed=e.seed)
        else:
            idx = rejection_sample(gen.features, probs, e.n_samples, rate, target_classes=labels)
        by_rate[rate] = metrics_from_features(gen.subset(idx), real, spec, **common)
        if probs is not None:
            kept = probs[idx]
            accepted_probs[rate] = float((kept.gather(1, labels[idx, None]) if labels is not None
                                          else kept[:, 1:] if "realism" in dirs else kept.max(1, keepdim=True).values).mean())
        save_png(run.eval / f"samples-rate-{rate:g}.png",
                 grid_image(store.images(_grid_indices(idx, labels, nrow)), nrow=nrow))

    # 4. the upper bound: real validation images through the VQ-VAE (rFID against the same reference, and PSNR)
    recon, n_recon = _reconstruction(vqvae, val_set, net, real, spec, e, device)
    rejection = _rejection_provenance(cfg, run, reject_net, dirs, accepted_probs)
    report = build_report(
        by_rate, recon, warnings=_warnings(e.n_samples, spec, reference),
        config_hash=eval_hash(cfg, run), seed=e.seed, n_candidates=n_cand, acceptance_rates=rates,
        reference=(f"statistics file {e.reference_stats} ({reference.source})" if reference is not None
                   else f"validation images ({n_real})"),
        reference_split=(reference.source or f"statistics file {e.reference_stats}") if reference is not None
        else f"{cfg.data.name} val split at {cfg.data.size} px, {n_real} images",
        n_samples=e.n_samples, n_reconstructed=n_recon,
        **rejection,
        feature_network=str(dirs["features"].relative_to(run.root)) if e.feature_extractor == "domain" else "inception",
        class_conditional=n_classes > 0, temperature=e.temperature, sampler=cfg.sample.sampler,
        top_k=cfg.sample.top_k, top_p=cfg.sample.top_p, guidance=cfg.sample.guidance,
        torch_fidelity_version=torch_fidelity.__version__,
    )
    write_report(run.eval, report)
    _plot(run, report)
    write_json(run.eval / "metrics.json", {"config_hash": eval_hash(cfg, run), "fd_label": report["fd_label"]})
    store.remove()  # the candidates can be drawn again from (seed, batch); the report is what stays
    return report


def _reconstruction(vqvae: VQVAE2, val_set, net: FeatureExtractor, real, spec: ExtractorSpec, e, device):
    """The metrics of the validation images' reconstructions against the same reference, with their PSNR."""
    psnr = PSNR()
    feats = net.extract(_progress(reconstructions(vqvae, image_batches(val_set, e.n_real, e.batch_size), device, psnr),
                                  "features of reconstructions"), e.batch_size)
    n_real = real.n if isinstance(real, ReferenceStats) else len(real)
    recon = metrics_from_features(feats, real, spec, kid_subset_size=min(e.kid_subset_size, len(feats), n_real),
                                  seed=e.seed, fd_resamples=e.fd_resamples)
    recon["psnr"] = psnr.value()
    return recon, len(feats)


def _rejection_provenance(cfg: PipelineConfig, run: RunDir, reject_net, dirs: dict, accepted_probs: dict) -> dict:
    if reject_net is None:
        return dict(rejection="none: the data has no class labels and every acceptance rate is 1, so no realism "
                              "classifier is used")
    if "realism" in dirs:
        real = ("training images reconstructed by the VQ-VAE" if cfg.train_classifier.realism_real == "reconstructions"
                else "training images")
        crop = reject_net.config.crop
        seen = f", on the centred {crop:g} of each side," if crop < 1 else ""
        return dict(rejection=f"realism: the data has no class labels; a classifier of real ({real}) against generated "
                              f"images{seen} (classifier/) gives D, and candidates are kept with probability proportional to "
                              f"D / (1 - D), capped at its {REALISM_CAP_QUANTILE:g} quantile",
                    mean_classifier_prob_of_kept={f"{r:g}": p for r, p in accepted_probs.items()},
                    rejection_classifier="classifier", rejection_classifier_hash=weights_hash(reject_net))
    return dict(mean_classifier_prob_of_kept={f"{r:g}": p for r, p in accepted_probs.items()},
                rejection_classifier=str(dirs.get("rejection", dirs["features"]).relative_to(run.root)),
                rejection_classifier_hash=weights_hash(reject_net),
                rejection_is_feature_network=cfg.eval.rejection_classifier == "same",
                rejection_classifier_mixup=cfg.train_classifier.rejection_mixup if "rejection" in dirs else 0.0)


def _plot(run: RunDir, report: dict) -> None:
    rows = report["rows"]
    plot_tradeoff(run.eval / "tradeoff.png", [r["acceptance_rate"] for r in rows], [r["fd"] for r in rows],
                  [r["precision"] for r in rows], [r["recall"] for r in rows], report["fd_label"],
                  fd_ci=[r["fd_ci"] for r in rows], kid_mean=[r["kid_mean"] for r in rows],
                  kid_std=[r["kid_std"] for r in rows], fd_infinity=[r["fd_infinity"] for r in rows])


def _warnings(n_samples: int, spec: ExtractorSpec, reference: ReferenceStats | None) -> list[str]:
    out = []
    if n_samples < FID_PROTOCOL_N:
        out.append(f"{n_samples:,} samples per acceptance rate, fewer than the {FID_PROTOCOL_N:,} of the standard "
                   f"protocol: Frechet distances are biased upward at small n (benchmarks/fid_bias.py measures by how "
                   f"much), so compare only numbers made with the same n (eval.n_samples), or FD at infinite "
                   f"samples (fd_infinity, reported from {FD_INFINITY_MIN_N:,} samples on)")
    if reference is not None and reference.features is None:
        out.append("the reference statistics file holds mu and sigma only: KID and precision/recall need the real "
                   "features and are not computed (make the file with `vqvae2 fid-stats` to keep them)")
    return out


def _grid_indices(idx: torch.Tensor, labels: torch.Tensor | None, nrow: int, rows: int = 6) -> torch.Tensor:
    """Up to `rows` kept samples per class, one class per column (or the first kept samples when unlabelled)."""
    if labels is None:
        return idx[: nrow * rows]
    lab = labels[idx]
    cols = [idx[lab == c][:rows] for c in range(nrow)]
    depth = min(len(c) for c in cols)
    if depth == 0:
        return idx[: nrow * rows]
    return torch.stack([c[:depth] for c in cols], 1).flatten()
