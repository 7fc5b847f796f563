"""save_pretrained / from_pretrained: a model is `model.json` (its config) + `model.safetensors`.

No pickle is involved: configs are JSON, tensors are safetensors. Files are written to a
temporary name in the target directory and renamed into place, so a reader never sees a
half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import from_dict, to_dict

CONFIG_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"


def atomic_write(path: str | Path, write) -> Path:
    """Calls write(tmp_path) for a temporary file beside `path`, fsyncs it and renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _not_safetensors(path: Path) -> str | None:
    """What a file that safetensors refused is, from its first bytes: a pickle or a zip (torch.save's format,
    which holds a pickle), or None. Nothing here unpickles."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head.startswith(b"PK"):
        return "a zip archive (torch.save's format, which holds a pickle)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle"
    return None


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a truncated/corrupted file, or a pickle under its name, into an error
    that names it (safetensors never unpickles; the pickle is only named)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        kind = _not_safetensors(path)
        if kind is not None:
            raise ValueError(f"{path} is {kind}, not safetensors: refused without loading it (vqvae2 never "
                             f"unpickles weights; save them with safetensors)") from e
        raise ValueError(
            f"weights file {path} is truncated or corrupted ({e}); delete it and re-run the stage that writes it"
        ) from e


class PretrainedMixin:
    """Adds save_pretrained/from_pretrained to an nn.Module whose `config` is a dataclass of `config_class`."""

    config_class: type
    model_type: str

    def save_pretrained(self, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
        directory = Path(directory)
        meta = {"model_type": self.model_type, "config": to_dict(self.config), **(extra or {})}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp))
        atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))

    @classmethod
    def read_config(cls, directory: str | Path):
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: is {directory} a saved {cls.model_type} model?")
        try:
            meta = json.loads(path.read_text())
        except ValueError as e:  # not JSON, or not text
            raise ValueError(f"{path} is not valid JSON ({e})") from e
        if meta.get("model_type") != cls.model_type:
            raise ValueError(f"{path} holds a {meta.get('model_type')!r} model, expected {cls.model_type!r}")
        return from_dict(cls.config_class, meta["config"], where=f"{path}: ")

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu"):
        model = cls(cls.read_config(directory))
        state = load_weights(Path(directory) / WEIGHTS_NAME)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{Path(directory) / WEIGHTS_NAME} does not match {CONFIG_NAME}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.to(map_location)
