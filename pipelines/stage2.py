"""Stage 2: train the PixelSNAIL prior of one level (`vqvae2 train-prior --level L`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vqvae2.config import PixelSNAILConfig
from vqvae2.pixelsnail import PixelSNAIL
from vqvae2.sampling import sample_cached
from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, hash_config, read_json, write_json
from .codes import CodesDataset, first_codes, read_codes_meta
from .config import PipelineConfig, prior_model_config, train_hash_options
from .images import grid_image, to_uint8
from .train import machine_settings, make_accelerator, train
from .watch import Watcher

def prior_config(cfg: PipelineConfig, level: str, codes_meta: dict) -> PixelSNAILConfig:
    """The level's PixelSNAIL config for the extracted codes (see pipelines.config.prior_model_config)."""
    if level not in codes_meta["levels"]:
        raise ValueError(f"unknown level {level!r}: the VQ-VAE's levels are {codes_meta['levels']}")
    return prior_model_config(cfg.prior.get(level, {}), level, codes_meta["levels"], codes_meta["grid_sizes"],
                              codes_meta["codebook_size"], codes_meta["num_classes"])


def stage_hash(cfg: PipelineConfig, run: RunDir, level: str) -> str:
    meta = read_codes_meta(run)
    prior = dict(cfg.prior.get(level, {}))
    if "train" in prior:  # as for [train_prior]: options that only watch a run or save memory are left out
        prior["train"] = train_hash_options(prior["train"])
        if not prior["train"]:
            del prior["train"]
    return hash_config({"codes": meta["config_hash"], "prior": prior,
                        "train": cfg.hash_dict("train_prior")["train_prior"], "level": level})


def _split(batch, n_classes: int):
    labels, target, *cond = batch
    return target, cond, (labels if n_classes > 0 else None)


def flat_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits as fp32 (B*H*W, K) rows. With the channels-last layout the priors train in,
    the rows are already contiguous, and cross-entropy over them is faster than over dim 1 of a
    channels-last tensor (benchmarks/results/kernels.json)."""
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).float()


def prior_loss(model, batch):
    inner = getattr(model, "module", model)
    target, cond, labels = _split(batch, inner.config.n_classes)
    logits = model(target, cond=cond, labels=labels)
    loss = F.cross_entropy(flat_logits(logits), target.reshape(-1))
    return loss, {"nll_bits": loss.detach() / math.log(2)}


@torch.no_grad()
def evaluate_prior(model: PixelSNAIL, dataset, batch_size: int = 256, max_batches: int = 0,
                   device: torch.device | str = "cpu") -> dict:
    model.eval()
    nll, correct, n = 0.0, 0, 0
    for b, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        if max_batches and b >= max_batches:
            break
        target, cond, labels = _split(tuple(t.to(device) for t in batch), model.config.n_classes)
        logits, target = flat_logits(model(target, cond=cond, labels=labels)), target.reshape(-1)
        nll += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
        n += target.numel()
    return {"nll_bits": nll / n / math.log(2), "accuracy": correct / n, "n_codes": n}


def val_record(metrics: dict) -> dict:
    return {"nll_bits": metrics["nll_bits"], "accuracy": metrics["accuracy"]}


@torch.no_grad()
def teacher_forced_grid(prior: PixelSNAIL, vqvae: VQVAE2, codes: list[torch.Tensor], labels: torch.Tensor,
                        level: int, seed: int = 0):
    """What the prior of `level` adds: the top row decodes the validation items' own codes; the bottom
    row replaces their codes of `level` by a sample of the prior given their codes of the levels above
    (and their labels), keeping their own codes of the levels below."""
    g = torch.Generator().manual_seed(seed)  # the same noise at every step: only the prior changes
    sampled = sample_cached(prior, len(labels), cond=codes[:level] or None,
                            labels=labels if prior.config.n_classes else None, temperature=1.0, generator=g)
    mixed = [*codes[:level], sampled.cpu(), *codes[level + 1:]]
    device = next(vqvae.parameters()).device
    images = vqvae.decode_codes([torch.cat([c, m]).to(device) for c, m in zip(codes, mixed)])
    return grid_image(to_uint8(images), nrow=len(labels))


def prior_watcher(cfg: PipelineConfig, run: RunDir, level: str, val_set, acc) -> Watcher:
    """Validation points (NLL bits, accuracy) and, with image_every, a teacher-forced picture of the
    prior's samples (the VQ-VAE is loaded for it, on the main process only)."""
    tcfg = cfg.prior_train(level)

    def validate(model):
        return val_record(evaluate_prior(model, val_set, max_batches=tcfg.val_batches, device=acc.device))

    draw = None
    if tcfg.image_every and acc.is_main_process:
        vqvae = VQVAE2.from_pretrained(run.vqvae, map_location=acc.device).eval()
        codes, labels = first_codes(run, "val", n=8)
        draw = lambda model: teacher_forced_grid(model, vqvae, codes, labels, vqvae.levels.index(level))
    return Watcher(run.prior(level), tcfg, validate, draw, picture="samples")


def train_prior(cfg: PipelineConfig, run: RunDir, level: str) -> dict | None:
    meta = read_codes_meta(run)
    pcfg = prior_config(cfg, level, meta)
    train_set, val_set = CodesDataset(run, "train", level), CodesDataset(run, "val", level)
    where = f"prior.{level}.train" if cfg.prior.get(level, {}).get("train") else "train_prior"
    tcfg, settings = machine_settings(cfg.prior_train(level), run.prior(level), where)
    acc = make_accelerator(tcfg, run.prior(level))
    h = stage_hash(cfg, run, level)
    torch.manual_seed(tcfg.seed)
    model = PixelSNAIL(pcfg)
    model.checkpointing = tcfg.activation_checkpointing
    per_item = pcfg.height * pcfg.width
    watch = prior_watcher(cfg, run, level, val_set, acc)
    result = train(model, train_set, tcfg, run.prior(level), prior_loss, {"config_hash": h, "settings": settings.to_dict()},
                   accelerator=acc, items_per_batch=lambda batch: len(batch[0]) * per_item,
                   desc=f"train-prior {level}", watch=watch)
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return None
    metrics = evaluate_prior(result.model, val_set, max_batches=tcfg.val_batches, device=acc.device)
    watch.finish(result.steps, val_record(metrics))
    metrics.update(config_hash=h, level=level, steps=result.steps, processes=len(result.rank_hashes or [0]),
                   rank_hashes=result.rank_hashes, codes_per_second=result.items_per_second,
                   n_params=sum(p.numel() for p in result.model.parameters()), ema_weights=tcfg.ema_decay > 0,
                   mixed_precision=tcfg.mixed_precision, settings=settings.to_dict())
    extra = {"config_hash": h, "vqvae_hash": meta["vqvae_hash"]}
    result.model.save_pretrained(run.prior(level), extra=extra)
    if result.raw is not None:  # the weights themselves beside their average, to compare the two
        result.raw.save_pretrained(run.prior(level) / "raw", extra=extra)
    write_json(run.prior(level) / "metrics.json", metrics)
    acc.wait_for_everyone()
    return metrics


def load_priors(run: RunDir, levels: list[str], device: str | torch.device = "cpu") -> list[PixelSNAIL]:
    """The trained priors, top first, refusing any trained on codes of other VQ-VAE weights."""
    meta = read_codes_meta(run)
    priors = []
    for level in levels:
        d = run.prior(level)
        if not (d / "model.safetensors").is_file():
            raise FileNotFoundError(f"{d}/model.safetensors does not exist: run "
                                    f"`vqvae2 train-prior --run-dir {run.root} --level {level}` first")
        trained_on = read_json(d / "model.json").get("vqvae_hash")
        if trained_on != meta["vqvae_hash"]:
            raise ValueError(f"{d} was trained on codes of VQ-VAE weights {trained_on}, but the run's VQ-VAE is "
                             f"{meta['vqvae_hash']}: re-run `vqvae2 train-prior --run-dir {run.root} --level {level}`")
        priors.append(PixelSNAIL.from_pretrained(d, map_location=device).eval())
    return priors
