"""One training loop for every stage (VQ-VAE, priors, classifier), on accelerate.

The loop is a straight line: build -> resume -> for each step: batch, forward, backward, step,
log, maybe save -> final save. Data order is a pure function of (seed, step), and the state
holds the weights, optimiser and RNG, so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import Accelerator, PartialState
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from . import policy
from .artifacts import find_training_state, load_training_state, read_json, save_training_state, truncate_jsonl
from .config import TrainConfig
from .datasets.prepared import loader_workers
from .watch import Watcher, tracker_kwargs


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible state); the last good state is kept."""


class StepBatchSampler(Sampler[list[int]]):
    """Batches for steps [start, total): epoch e is a permutation seeded by (seed, e), batch b of
    the global order is split across ranks, so the order depends on nothing but (seed, step)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1):
        if n < batch_size * world:
            raise ValueError(f"the dataset has {n} items, fewer than one batch ({batch_size} x {world} processes)")
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.rank, self.world = rank, world
        self.per_epoch = n // (batch_size * world)

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm, epoch = None, -1
        for b in range(self.start, self.total):
            e, i = divmod(b, self.per_epoch)
            if e != epoch:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + e))
                epoch = e
            lo = (i * self.world + self.rank) * self.bs
            yield perm[lo:lo + self.bs].tolist()


def machine_settings(cfg: TrainConfig, out_dir: str | Path | None, where: str) -> tuple[TrainConfig, policy.Settings]:
    """`cfg` with its precision and memory format resolved for this machine (pipelines/policy.py), or as
    recorded by the state in out_dir that a resumed stage continues from; printed once."""
    found = find_training_state(Path(out_dir) / "state") if out_dir is not None else None
    recorded = None
    if found is not None:
        try:
            recorded = read_json(found / "progress.json").get("settings")
        except (OSError, ValueError, AttributeError):
            recorded = None  # the state's own loader reports a damaged file
    settings = policy.resolve(cfg.mixed_precision, cfg.channels_last, recorded, where=where)
    if PartialState().is_local_main_process:
        print(f"[{where}] {settings.describe()}", flush=True)
    return dataclasses.replace(cfg, mixed_precision=settings.mixed_precision,
                               channels_last=settings.channels_last), settings


def make_accelerator(cfg: TrainConfig, out_dir: str | Path | None = None) -> Accelerator:
    """The stage's Accelerator; with cfg.log_with, its trackers write under out_dir/logs. The precision
    must be resolved (machine_settings) first."""
    if cfg.mixed_precision == policy.AUTO or cfg.channels_last == policy.AUTO:
        raise ValueError("make_accelerator needs resolved settings: pass the config through machine_settings() first")
    cuda = torch.cuda.is_available()
    if cfg.mixed_precision == "fp16" and not cuda:
        raise ValueError("mixed_precision='fp16' needs a GPU; use 'auto', 'bf16' or 'no' on CPU")
    # accelerate keeps one global state per process; stages of one `vqvae2 run` may differ in precision
    from accelerate.state import AcceleratorState
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != cfg.mixed_precision:
        AcceleratorState._reset_state()  # keeps the process group (PartialState)
    return Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=not cuda,
                       **tracker_kwargs(cfg, out_dir))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and kernels only (not on biases, norms, embeddings' 1-d params)."""
    decay_params = [p for p in model.parameters() if p.ndim >= 2]
    other_params = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": cfg.weight_decay}, {"params": other_params, "weight_decay": 0.0}],
        lr=cfg.lr, fused=True,  # one kernel over all parameters instead of a loop of small ops
    )


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def ema_decay_at(decay: float, step: int) -> float:
    """The averaging decay after optimiser step `step` (1-based): (1 + step) / (10 + step) until that reaches
    `decay`, so the early, random weights leave the average quickly instead of holding decay**steps of it."""
    return min(decay, (1 + step) / (10 + step))


@dataclass
class TrainResult:
    model: torch.nn.Module  # unwrapped; the Polyak average when ema_decay > 0
    steps: int
    items_per_second: float  # after the first step of this run (which holds one-off set-up work)
    last_logs: dict
    rank_hashes: list[str] | None = None  # under several processes: a hash of every rank's weights and buffers
    raw: torch.nn.Module | None = None  # the trained weights themselves when `model` is their average


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so the state is saved before exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "_StopSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    loss_fn: Callable[[torch.nn.Module, tuple], tuple[torch.Tensor, dict]],
    progress: dict,
    accelerator: Accelerator | None = None,
    items_per_batch: Callable[[tuple], int] | None = None,
    desc: str = "train",
    watch: Watcher | None = None,
) -> TrainResult:
    """Trains `model` for cfg.steps optimiser steps, resuming from out_dir/state when present.

    `progress` is stored with the state (e.g. the stage's config hash); a state whose hash differs
    is an error, not silently reused. `watch` logs, validates and draws as the run goes (watch.py)."""
    out_dir = Path(out_dir)
    if policy.AUTO in (cfg.mixed_precision, cfg.channels_last):  # stages resolve before; direct callers here
        cfg, settings = machine_settings(cfg, out_dir, desc)
        progress = {**progress, "settings": settings.to_dict()}
    acc = accelerator or make_accelerator(cfg, out_dir)
    watch = watch or Watcher(out_dir, cfg)
    torch.manual_seed(cfg.seed)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None
    optimizer = make_optimizer(model, cfg)
    step = _resume(out_dir, model, optimizer, ema, progress, acc, desc)
    model, optimizer = acc.prepare(model, optimizer)
    loop = _Loop(acc, model, optimizer, ema, loss_fn, cfg, out_dir / "state", progress, desc)
    watch.start(acc, desc, progress)
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not acc.is_local_main_process, dynamic_ncols=True)
    try:
        with _StopSignal() as stop:
            rate, logs = loop.run(_loader(dataset, cfg, step, acc), step, items_per_batch, bar, watch, stop)
    except BaseException:
        watch.close()  # on success the stage's watch.finish closes it, after the final evaluation
        raise
    finally:
        bar.close()
    rank_hashes = None
    if acc.num_processes > 1:
        from accelerate.utils import gather_object
        rank_hashes = gather_object([state_hash(acc.unwrap_model(model))])
    if ema is None:
        return TrainResult(acc.unwrap_model(model), loop.step, rate, logs, rank_hashes)
    return TrainResult(ema, loop.step, rate, logs, rank_hashes, raw=acc.unwrap_model(model))


def _resume(out_dir: Path, model, optimizer, ema, progress: dict, acc: Accelerator, desc: str) -> int:
    """The step to start from: that of out_dir/state, whose weights, optimiser and RNG are loaded; else 0."""
    found = find_training_state(out_dir / "state")
    if found is None:
        if acc.is_main_process:
            truncate_jsonl(out_dir / "metrics.jsonl", 0)
        return 0
    saved = load_training_state(found, model, optimizer, ema)
    _match_state_layout(optimizer)
    if saved.get("config_hash") != progress.get("config_hash"):
        raise TrainingError(
            f"{found} was saved for a different configuration (hash {saved.get('config_hash')} != "
            f"{progress.get('config_hash')}); delete {out_dir / 'state'} or use --force to start again")
    step = int(saved["step"])
    truncate_jsonl(out_dir / "metrics.jsonl", step)
    acc.print(f"[{desc}] resuming from {found} at step {step}")
    return step


def _loader(dataset: Dataset, cfg: TrainConfig, step: int, acc: Accelerator) -> DataLoader:
    """Batches of steps [step, cfg.steps) of this rank, in the order fixed by (seed, step)."""
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, step * cfg.grad_accum,
                               cfg.steps * cfg.grad_accum, acc.process_index, acc.num_processes)
    # its own generator: creating the iterator must not draw from the global RNG the state restores
    workers = loader_workers(dataset, cfg.num_workers)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, generator=torch.Generator(),
                      persistent_workers=workers > 0, pin_memory=acc.device.type == "cuda")


class _Loop:
    """The optimisation steps of one training run, and the saves of its state."""

    def __init__(self, acc: Accelerator, model, optimizer, ema, loss_fn, cfg: TrainConfig, state_dir: Path,
                 progress: dict, desc: str):
        self.acc, self.model, self.optimizer, self.ema, self.cfg = acc, model, optimizer, ema, cfg
        self._loss = loss_fn
        self.state_dir, self.progress, self.desc, self.step = state_dir, progress, desc, 0

    def save(self) -> None:
        acc = self.acc
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_training_state(self.state_dir, acc.unwrap_model(self.model), self.optimizer,
                                {**self.progress, "step": self.step}, self.ema)
        acc.wait_for_everyone()

    def run(self, loader, step: int, items_per_batch, bar, watch: Watcher, stop: "_StopSignal") -> tuple[float, dict]:
        """Steps until cfg.steps, then the final save; returns (items per second after the first step, last logs).
        A signal saves the state and raises KeyboardInterrupt; a non-finite loss raises TrainingError."""
        acc, cfg, model = self.acc, self.cfg, self.model
        count = items_per_batch or (lambda batch: len(batch[0]))
        self.step, logs, seen, t0, micro = step, {}, 0, time.perf_counter(), 0
        timed = False
        model.train()
        for batch in loader:
            batch = tuple(_to_device(t, acc.device, cfg.channels_last) for t in batch)
            loss, logs = self._micro_step(batch)
            seen += count(batch) * acc.num_processes
            micro += 1
            if micro % cfg.grad_accum:
                continue
            self.step += 1
            if not timed:  # throughput counts from the end of the first step: it holds the codebook
                timed, seen, t0 = True, 0, time.perf_counter()  # init and kernel set-up
            self._average()
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                record = {"step": self.step, "loss": float(loss.detach()), "lr": lr_at(cfg, self.step - 1),
                          **{k: float(v) for k, v in logs.items()}}
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("step", "lr")})
                watch.log(record)
            watch.on_step(self.step, self.ema if self.ema is not None else acc.unwrap_model(model))
            if stop.received is not None:
                self.save()
                acc.print(f"[{self.desc}] signal {stop.received} received: state saved at step {self.step} in "
                          f"{self.state_dir}")
                raise KeyboardInterrupt(f"stopped by signal {stop.received} at step {self.step}; re-run to resume")
            if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save()
        elapsed = time.perf_counter() - t0
        self.save()
        return (seen / elapsed if elapsed > 0 and seen else 0.0), {k: float(v) for k, v in logs.items()}

    def _micro_step(self, batch: tuple) -> tuple[torch.Tensor, dict]:
        acc, cfg, model, optimizer = self.acc, self.cfg, self.model, self.optimizer
        with acc.accumulate(model):
            with acc.autocast():
                loss, logs = self._loss(model, batch)
            if not torch.isfinite(loss.detach()):
                raise TrainingError(
                    f"[{self.desc}] loss became {loss.item()} at step {self.step + 1}; training stopped. The last "
                    f"good state ({self.state_dir}) is kept: lower the learning rate or check the data, then re-run.")
            acc.backward(loss)
            if acc.sync_gradients and cfg.grad_clip > 0:
                acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, self.step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss, logs

    def _average(self) -> None:
        """The Polyak average of the weights (ema_decay > 0), buffers copied."""
        if self.ema is None:
            return
        model = self.acc.unwrap_model(self.model)
        decay = ema_decay_at(self.cfg.ema_decay, self.step)
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), model.parameters()):
                pe.lerp_(p.detach(), 1 - decay)
            for be, b in zip(self.ema.buffers(), model.buffers()):
                be.copy_(b)


def _match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Optimizer state is saved contiguous; give each state tensor its parameter's memory layout again
    (channels-last), which the fused AdamW kernel assumes: with another layout it pairs wrong elements."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _to_device(t: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    if channels_last and t.dim() == 4 and t.is_floating_point():
        return t.to(device, memory_format=torch.channels_last)
    return t.to(device)


def state_hash(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in key order (to compare ranks)."""
    import hashlib
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
