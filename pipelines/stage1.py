"""Stage 1: train the hierarchical VQ-VAE (`vqvae2 train-vqvae`)."""
from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from vqvae2.vqvae import VQVAE2

from .artifacts import RunDir, hash_config, save_png, write_json
from .config import PipelineConfig
from .datasets import build_datasets
from .images import grid_image, to_uint8
from .train import machine_settings, make_accelerator, train
from .watch import Watcher


def stage_hash(cfg: PipelineConfig) -> str:
    return hash_config(cfg.hash_dict("data", "vqvae", "train_vqvae"))


def vqvae_loss(model, batch):
    x, _ = batch
    out = model(x)
    mse = (out.recon.float() - x).pow(2).mean()
    logs = {"mse": mse.detach(), "commitment": sum(s.commitment for s in out.stats)}
    if getattr(model, "module", model).config.quantizer == "codebook_loss":
        logs["codebook_loss"] = sum(s.codebook_loss for s in out.stats)
    for name, s in zip(model_levels(model), out.stats):
        logs[f"perplexity_{name}"] = s.perplexity
    return mse + out.latent_loss, logs


def model_levels(model) -> list[str]:
    return getattr(model, "module", model).levels


@torch.no_grad()
def evaluate_vqvae(model: VQVAE2, dataset, batch_size: int = 256, max_batches: int = 0,
                   device: torch.device | str = "cpu") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Validation metrics: MSE on the [0, 1] scale, PSNR, and per level perplexity / codes used /
    dead codes over the whole split. Also returns the first batch and its reconstruction."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    K = model.config.codebook_size
    counts = [torch.zeros(K, dtype=torch.long) for _ in model.levels]
    se, n_pix, first = 0.0, 0, None
    for b, (x, _) in enumerate(loader):
        if max_batches and b >= max_batches:
            break
        x = x.to(device)
        codes = model.encode(x)
        recon = model.decode_codes(codes).float().clamp(-1, 1)
        se += ((recon - x) / 2).pow(2).sum().item()  # /2: the [-1, 1] range mapped to [0, 1]
        n_pix += x.numel()
        for c, cnt in zip(codes, counts):
            cnt += torch.bincount(c.flatten().cpu(), minlength=K)
        if first is None:
            first = (x[:8].cpu(), recon[:8].cpu())
    mse = se / n_pix
    levels = {}
    for name, cnt, q in zip(model.levels, counts, model.quantizers):
        p = cnt.double() / cnt.sum()
        levels[name] = {
            "perplexity": float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum())),
            "codes_used": int((cnt > 0).sum()),
            "dead_codes": int((q.ema_count < q.dead_code_threshold).sum()),
        }
    metrics = {"mse": mse, "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "levels": levels,
               "perplexity": [levels[n]["perplexity"] for n in model.levels],
               "codes_used": [levels[n]["codes_used"] for n in model.levels],
               "dead_codes": [levels[n]["dead_codes"] for n in model.levels]}
    return metrics, first[0], first[1]


def flat_metrics(metrics: dict) -> dict:
    """evaluate_vqvae's metrics as one flat record: mse, psnr, and perplexity_<level>, codes_used_<level>..."""
    out = {"mse": metrics["mse"], "psnr": metrics["psnr"]}
    for level, values in metrics["levels"].items():
        out.update({f"{k}_{level}": v for k, v in values.items()})
    return out


@torch.no_grad()
def recon_grid(model: VQVAE2, images: torch.Tensor):
    """A picture of `images` (top row) above their reconstructions (bottom row)."""
    recons = model.decode_codes(model.encode(images))
    return grid_image(to_uint8(torch.cat([images, recons])), nrow=len(images))


def first_images(dataset, n: int = 8) -> torch.Tensor:
    """The first n images of a split (fixed, so that pictures of successive steps compare)."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


def vqvae_watcher(cfg: PipelineConfig, run: RunDir, val_set, device) -> Watcher:
    """Validation points (val MSE, PSNR, perplexity and codes used per level) and reconstructions of
    the first validation images while the VQ-VAE trains."""
    tcfg = cfg.train_vqvae
    fixed = first_images(val_set).to(device)

    def validate(model):
        return flat_metrics(evaluate_vqvae(model, val_set, max_batches=tcfg.val_batches, device=device)[0])

    return Watcher(run.vqvae, tcfg, validate, lambda model: recon_grid(model, fixed), picture="recon")


def train_vqvae(cfg: PipelineConfig, run: RunDir) -> dict | None:
    train_set, val_set = build_datasets(cfg.data)
    if train_set.channels != cfg.vqvae.in_channels:
        raise ValueError(f"vqvae.in_channels is {cfg.vqvae.in_channels} but dataset {cfg.data.name!r} has "
                         f"{train_set.channels} channel(s); set vqvae.in_channels={train_set.channels}")
    tcfg, settings = machine_settings(cfg.train_vqvae, run.vqvae, "train_vqvae")
    acc = make_accelerator(tcfg, run.vqvae)
    h = stage_hash(cfg)
    torch.manual_seed(cfg.train_vqvae.seed)  # the same seed gives the same initial weights
    model = VQVAE2(cfg.vqvae)
    model.checkpointing = tcfg.activation_checkpointing
    watch = vqvae_watcher(cfg, run, val_set, acc.device)
    result = train(model, train_set, tcfg, run.vqvae, vqvae_loss, {"config_hash": h, "settings": settings.to_dict()},
                   accelerator=acc, desc="train-vqvae", watch=watch)
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return None
    model = result.model
    metrics, _, _ = evaluate_vqvae(model, val_set, max_batches=cfg.train_vqvae.val_batches, device=acc.device)
    watch.finish(result.steps, flat_metrics(metrics))
    metrics.update(config_hash=h, steps=result.steps, processes=len(result.rank_hashes or [0]),
                   rank_hashes=result.rank_hashes, images_per_second=result.items_per_second,
                   mixed_precision=tcfg.mixed_precision, settings=settings.to_dict(), n_val=len(val_set))
    model.save_pretrained(run.vqvae, extra={"config_hash": h})
    save_png(run.vqvae / "recon.png", recon_grid(model, first_images(val_set).to(acc.device)))
    write_json(run.vqvae / "metrics.json", metrics)  # last: marks the stage as finished
    acc.wait_for_everyone()
    return metrics
