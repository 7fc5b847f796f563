"""Watching a stage while it trains: validation points, progress pictures, curves.png, trackers.

A stage gives `train` a Watcher holding what only the stage knows: how to validate its model and
how to draw it. Validation and pictures run on the main process, in eval mode, without gradients
and with the RNG states put back afterwards, so a watched run ends with exactly the weights of an
unwatched one. Trackers (TensorBoard, W&B, ...) go through accelerate's tracker API, and their
packages are imported only when `log_with` names them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .artifacts import append_jsonl, save_png
from .config import TrainConfig
from .curves import plot_curves

Validate = Callable[[torch.nn.Module], dict]  # model -> flat validation metrics
Draw = Callable[[torch.nn.Module], Image.Image]  # model -> a progress picture


# trackers

def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def tracker_kwargs(cfg: TrainConfig, out_dir: str | Path | None) -> dict:
    """Accelerator(...) arguments for cfg.log_with: none when it is empty; an error naming the
    package to install when a tracker's package is missing (accelerate would skip it silently)."""
    if not cfg.trackers:
        return {}
    from accelerate.utils import ProjectConfiguration
    for name in cfg.trackers:
        if not _installed(name):
            hint = "pip install -e .[tensorboard]" if name == "tensorboard" else f"pip install {name}"
            raise ValueError(f"log_with={cfg.log_with!r}: the {name} tracker needs the {name!r} package, which is "
                             f"not installed: {hint}")
    if out_dir is None:
        raise ValueError(f"log_with={cfg.log_with!r} needs the stage's directory to write the trackers' logs in")
    logs = Path(out_dir) / "logs"
    return {"log_with": cfg.trackers, "project_config": ProjectConfiguration(project_dir=str(out_dir),
                                                                             logging_dir=str(logs))}


def _log_image(acc, tag: str, image: Image.Image, step: int) -> None:
    array = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
    for tracker in acc.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({tag: array[None]}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):  # wandb, aim, clearml, swanlab: a list of images per tag
            tracker.log_images({tag: [array]}, step=step)


# the watcher

@contextlib.contextmanager
def quietly(model: torch.nn.Module, device: torch.device):
    """Eval mode (no EMA codebook update, no dead-code restart, no dropout), no gradients, and the
    CPU / CUDA RNG states restored on exit (a DataLoader draws its base seed from the global RNG)."""
    was_training = model.training
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


@dataclass
class Watcher:
    """What `train` calls to show a stage's progress: `log` at each logged step, `on_step` after
    every optimiser step (validation every val_every steps, a picture every image_every steps),
    and the stage calls `finish` with its final evaluation."""

    out_dir: Path
    cfg: TrainConfig
    validate: Validate | None = None
    draw: Draw | None = None
    picture: str = "progress"  # file name of the picture: progress/<picture>-<step>.png and <picture>.png
    acc: object = field(default=None, repr=False)

    def start(self, acc, desc: str, progress: dict) -> None:
        self.acc = acc
        if not self.cfg.trackers:
            return
        acc.init_trackers(desc.replace(" ", "-"))
        config = {**dataclasses.asdict(self.cfg), **progress}
        for tracker in acc.trackers:
            if tracker.name != "tensorboard":  # its hparams make a new timestamped directory at every (re)start
                tracker.store_init_configuration(config)

    @property
    def main(self) -> bool:
        return self.acc is None or self.acc.is_main_process

    def log(self, record: dict) -> None:
        if self.main:
            append_jsonl(self.out_dir / "metrics.jsonl", record)
            self._track(record, "train")

    def on_step(self, step: int, model: torch.nn.Module) -> None:
        if not self.main:
            return
        every_val, every_image = self.cfg.val_every, self.cfg.image_every
        if self.validate is not None and every_val and step % every_val == 0 and step < self.cfg.steps:
            with quietly(model, self.acc.device):
                record = {"step": step, "split": "val", **self.validate(model)}
            append_jsonl(self.out_dir / "metrics.jsonl", record)
            self._track(record, "val")
            plot_curves(self.out_dir / "metrics.jsonl", self.out_dir / "curves.png")
        if self.draw is not None and every_image and (step % every_image == 0 or step == self.cfg.steps):
            with quietly(model, self.acc.device):
                image = self.draw(model)
            save_png(self.out_dir / "progress" / f"{self.picture}-{step:06d}.png", image)
            save_png(self.out_dir / f"{self.picture}.png", image)
            if self.acc.trackers:
                _log_image(self.acc, self.picture, image, step)

    def finish(self, step: int, final: dict) -> None:
        """The final evaluation: into the trackers and curves.png (metrics.json is the stage's to write)."""
        record = {"step": step, "split": "val", **final}
        self._track(record, "val")
        plot_curves(self.out_dir / "metrics.jsonl", self.out_dir / "curves.png", final=record)
        self.close()

    def close(self) -> None:
        """Flushes and closes the trackers (not accelerator.end_training, which would also end the
        process group that the next stage of `vqvae2 run` needs)."""
        if self.acc is not None:
            for tracker in self.acc.trackers:
                tracker.finish()
            self.acc.trackers = []

    def _track(self, record: dict, split: str) -> None:
        if self.acc is not None and self.acc.trackers:
            values = {f"{split}/{k}": v for k, v in record.items() if k not in ("step", "split")}
            self.acc.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=record["step"])
