"""`vqvae2 run`: every stage in order, each skipped when its outputs exist and match the config."""
from __future__ import annotations

import shutil

from accelerate import PartialState

from .artifacts import RunDir
from .config import PipelineConfig

STAGES = ["vqvae", "codes", "priors", "samples", "classifier", "eval"]


def _log(msg: str) -> None:
    if PartialState().is_main_process:
        print(msg, flush=True)


def _done(run: RunDir, stage_dir, h: str) -> bool:
    return run.stage_hash(stage_dir) == h


def stage_vqvae(cfg: PipelineConfig, run: RunDir, force: bool = False) -> None:
    from . import stage1
    h = stage1.stage_hash(cfg)
    if not force and _done(run, run.vqvae, h):
        _log(f"[vqvae] up to date ({run.vqvae}/metrics.json); skipping")
        return
    if (run.vqvae / "metrics.json").exists():  # finished for another config: start again
        shutil.rmtree(run.vqvae)
    m = stage1.train_vqvae(cfg, run)
    if m is not None:
        _log(f"[vqvae] val mse {m['mse']:.5f}  psnr {m['psnr']:.2f} dB  codes used {m['codes_used']}  "
             f"-> {run.vqvae}/recon.png")


def run_all(cfg: PipelineConfig, run: RunDir, force: bool = False, until: str | None = None) -> None:
    if until is not None and until not in STAGES:
        raise ValueError(f"--until {until!r}: choose one of {STAGES}")
    for stage in STAGES:
        if stage == "vqvae":
            stage_vqvae(cfg, run, force)
        if stage == until:
            break
