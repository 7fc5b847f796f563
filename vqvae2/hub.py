"""Where a pipeline's files are: a run directory, an exported folder (`model_index.json`), or a Hugging Face
Hub repository (downloaded with huggingface_hub, which honours HF_HUB_OFFLINE and HF_HUB_CACHE).

Only JSON and safetensors are read. A weights file that is a pickle or a zip (torch.save) is refused from
its first bytes, before anything could unpickle it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import level_names
from .pretrained import CONFIG_NAME, WEIGHTS_NAME, atomic_write

INDEX_NAME = "model_index.json"
INDEX_FORMAT = 1
# what a Hub download fetches: the index and each component's config and weights, nothing that could be a pickle
HUB_PATTERNS = [INDEX_NAME, f"*/{CONFIG_NAME}", f"*/{WEIGHTS_NAME}"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_COMPONENT_PATH = re.compile(r"[A-Za-z0-9][\w.-]*")


@dataclass
class PipelineFiles:
    """The component folders of a pipeline (each holds model.json + model.safetensors) and its sampling defaults."""

    root: Path
    levels: list[str]
    vqvae: Path
    priors: list[Path]  # top first
    sample: dict[str, Any] = field(default_factory=dict)  # the run's [sample] section
    extra: dict[str, Path] = field(default_factory=dict)  # components the Pipeline does not load (classifiers)


def resolve(source: str | Path, revision: str | None = None) -> Path:
    """A local folder as given, else `source` read as a Hub repository id and downloaded (or found in the cache)."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is a file: give a run directory, an exported folder or a Hub repository id")
        return path
    if not _REPO_ID.fullmatch(str(source)):
        raise FileNotFoundError(f"{source} does not exist (and is not a Hub repository id such as 'owner/name')")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(str(source), revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # offline, unknown repository, network: all one line for a person
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FileNotFoundError(f"{source} is not a local folder, and the Hub repository {source} could not be "
                                f"read ({type(e).__name__}: {first})") from e


def locate(root: Path) -> PipelineFiles:
    """The files of an exported folder (model_index.json) or of a run directory (vqvae/, prior-<level>/)."""
    if (root / INDEX_NAME).is_file():
        return _from_index(root)
    vqvae_config = root / "vqvae" / CONFIG_NAME
    if not vqvae_config.is_file():
        raise FileNotFoundError(f"{root} holds neither {INDEX_NAME} (an exported pipeline) nor vqvae/{CONFIG_NAME} "
                                f"(a run directory whose VQ-VAE is trained)")
    strides = _read_json(vqvae_config).get("config", {}).get("strides")
    if not isinstance(strides, list) or not strides:
        raise ValueError(f"{vqvae_config}: config.strides must be a non-empty list, got {strides!r}")
    levels = level_names(len(strides))
    sample = {}
    if (root / "config.json").is_file():
        sample = _read_json(root / "config.json").get("sample", {})
    extra = {name: d for name, d in (("classifier", root / "classifier"),
                                     ("classifier-rejection", root / "classifier" / "rejection"))
             if (d / WEIGHTS_NAME).is_file()}
    files = PipelineFiles(root, levels, root / "vqvae", [root / f"prior-{lv}" for lv in levels], sample, extra)
    for level, d in zip(levels, files.priors):
        if not (d / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{d / WEIGHTS_NAME} does not exist: the run has no {level} prior yet "
                                    f"(`vqvae2 train-prior --run-dir {root} --level {level}`)")
    return files


def _from_index(root: Path) -> PipelineFiles:
    path = root / INDEX_NAME
    index = _read_json(path)
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r} is not one this vqvae2 reads ({INDEX_FORMAT})")
    levels, comps = index.get("levels"), index.get("components")
    if not isinstance(levels, list) or not levels or not isinstance(comps, dict):
        raise ValueError(f"{path} needs 'levels' (a non-empty list) and 'components' (a table)")
    folders = {}
    for name, comp in comps.items():
        sub = comp.get("path") if isinstance(comp, dict) else None
        if not isinstance(sub, str) or not _COMPONENT_PATH.fullmatch(sub) or sub in (".", ".."):
            raise ValueError(f"{path}: components.{name}.path must be a folder name inside {root}, got {sub!r}")
        folders[name] = root / sub
    wanted = ["vqvae", *(f"prior-{lv}" for lv in levels)]
    missing = [name for name in wanted if name not in folders]
    if missing:
        raise ValueError(f"{path}: components {missing} are missing (it names {sorted(folders)})")
    extra = {name: d for name, d in folders.items() if name not in wanted}
    return PipelineFiles(root, list(levels), folders["vqvae"], [folders[f"prior-{lv}"] for lv in levels],
                         index.get("sample", {}), extra)


def write_index(directory: Path, levels: list[str], components: dict[str, str], sample: dict[str, Any]) -> Path:
    """Writes the model_index.json of an exported pipeline: its levels, each component's folder (named as the
    component) and model type, and the sampling defaults."""
    index = {"_class_name": "Pipeline", "library": "vqvae2", "format": INDEX_FORMAT, "levels": list(levels),
             "components": {name: {"path": name, "model_type": kind} for name, kind in components.items()},
             "sample": dict(sample)}
    text = json.dumps(index, indent=2) + "\n"
    return atomic_write(directory / INDEX_NAME, lambda tmp: Path(tmp).write_text(text))


def file_hash(path: Path) -> str:
    """sha256 of a file, first 16 hex digits (how a prior records the VQ-VAE weights it was trained on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def read_meta(folder: Path) -> dict[str, Any]:
    """A component's model.json as a dict."""
    return _read_json(folder / CONFIG_NAME)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:  # not JSON, or not text (a pickle under a JSON name is never unpickled)
        raise ValueError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data
