"""The run directory: paths, atomic writes, hashes, pickle-free training state, and the writer lock.

Every file goes to a temporary name in its own directory and is renamed into place, so an
interrupted stage never leaves a half-written artefact that a later stage would read. One process
at a time writes a run directory (`RunDir.lock`); readers never take the lock.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import tokenize
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from vqvae2.pretrained import atomic_write as atomic_write  # part of this module's API
from vqvae2.hub import file_hash
from vqvae2.pretrained import load_weights

from .runlock import RunDirBusy as RunDirBusy, RunLock as RunLock  # part of this module's API
from .runlock import describe_holder as describe_holder, lock_holder as lock_holder


# atomic writes

def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for a binary file under this name
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and re-run the stage that writes it") from e


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return atomic_write(path, write)


def load_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as e:  # a damaged header: the last two
        raise ValueError(f"{path} is truncated or not a .npy array ({e}); re-run the stage that writes it") from e


def damage(path: Path) -> str | None:
    """Why a finished artefact (safetensors, .npy, .npz) cannot be read in full, or None: its header is
    parsed and its length checked against what the header promises, without reading the data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if path.suffix == ".safetensors":
                n = int.from_bytes(f.read(8), "little")
                if not 2 <= n <= size - 8:
                    return "truncated or not a safetensors file"
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                return None if 8 + n + end == size else f"{size} bytes where its header describes {8 + n + end}"
            if path.suffix == ".npy":
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in read:
                    return f"an .npy format version {version} this reader does not check"
                shape, _, dtype = read[version](f)
                expected = f.tell() + int(np.prod(shape)) * dtype.itemsize
                return None if expected == size else f"{size} bytes where its header describes {expected}"
            if path.suffix == ".npz":
                with zipfile.ZipFile(f) as z:
                    z.infolist()
                return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, SyntaxError, tokenize.TokenError,
            zipfile.BadZipFile) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def damaged_output(stage_dir: Path) -> tuple[Path, str] | None:
    """The first weights or array file of a finished stage that is damaged (training states, which
    resume or are refused on their own, aside), with the reason."""
    for path in sorted(stage_dir.rglob("*")):
        if path.suffix in (".safetensors", ".npy", ".npz") and "state" not in path.relative_to(stage_dir).parts:
            reason = damage(path)
            if reason is not None:
                return path, reason
    return None


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return atomic_write(path, write)


def save_png(path: str | Path, image) -> Path:
    """image: a PIL image."""
    def write(tmp: str) -> None:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        Path(tmp).write_bytes(buf.getvalue())
    return atomic_write(path, write)


def append_jsonl(path: str | Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Drops logged lines past `max_step` (after resuming from an earlier state)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except (ValueError, AttributeError):
            break  # a line cut by a kill: everything after it is gone
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in keep)))


# hashes

def hash_config(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]


hash_file = file_hash  # sha256 of a file, first 16 hex digits (vqvae2.hub's)


# resumable training state, without pickle

def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        progress: dict, ema_model: torch.nn.Module | None = None) -> None:
    """Writes state/ as a whole: a new directory is filled and then swapped in, so a kill at any
    moment leaves either the previous complete state or the new one."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(f"{directory.name}.tmp*"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        if ema_model is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema_model.state_dict().items()},
                      str(tmp / "ema.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        (tmp / "progress.json").write_text(json.dumps(progress))  # written last: marks the state complete
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or a kill signal leaves no partial state behind
        raise
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def find_training_state(directory: str | Path) -> Path | None:
    """The newest complete state: state/ or, if a kill hit between the two renames, state.old/."""
    directory = Path(directory)
    for d in (directory, directory.with_name(directory.name + ".old")):
        if (d / "progress.json").is_file():
            return d
    return None


def load_training_state(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        ema_model: torch.nn.Module | None = None) -> dict:
    model.load_state_dict(load_weights(directory / "model.safetensors"))
    if ema_model is not None and (directory / "ema.safetensors").is_file():
        ema_model.load_state_dict(load_weights(directory / "ema.safetensors"))
    meta = read_json(directory / "optimizer.json")
    optimizer.load_state_dict(_unflatten_optimizer(load_weights(directory / "optimizer.safetensors"), meta))
    torch.set_rng_state(load_weights(directory / "rng.safetensors")["cpu"])
    return read_json(directory / "progress.json")


# the run directory

class RunDir:
    """Paths of a run directory (docs/design.md; the layout is in the README, "The run directory")."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def vqvae(self) -> Path:
        return self.root / "vqvae"

    @property
    def codes(self) -> Path:
        return self.root / "codes"

    def prior(self, level: str) -> Path:
        return self.root / f"prior-{level}"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def classifier(self) -> Path:
        return self.root / "classifier"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def lock(self, command: str) -> RunLock:
        """The writer lock: `with run.lock("vqvae2 sample ..."):` refuses at once (RunDirBusy) while
        another process writes this run."""
        return RunLock(self.root, command)

    def recorded_hash(self, summary: Path) -> str | None:
        """The config hash a finished stage recorded in its summary file, or None when it has not finished."""
        if not summary.is_file():
            return None
        try:
            return json.loads(summary.read_text()).get("config_hash")
        except (ValueError, AttributeError):  # not JSON, not text, or not an object: not finished
            return None
