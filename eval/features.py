"""torch-fidelity feature extractors: `inception` (inception-v3-compat, standard weights) and `domain`.

An `ExtractorSpec` says which registered torch-fidelity extractor to use, the hash of its weights
and the extra keyword arguments its constructor takes. Nothing here downloads anything: missing
Inception weights are an error saying where to put the file. No path ever reaches torch-fidelity:
it builds extractors by name from its registry, and the classes registered here carry weights that
were already loaded safely (`torch.load(weights_only=True)` for the Inception .pth, the run's
classifier for `domain`). The spec also says how images reach the network's input size (`resize`,
RESIZE_MODES): the network's own resize, or PIL bicubic first (`clean_resize`); docs/evaluation.md.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from .classifier import Classifier, weights_hash

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name ends with its SHA-256's first digits
INCEPTION_PREFIX = "vqvae2-inception-"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         + INCEPTION_WEIGHTS_FILE)
DOMAIN_PREFIX = "vqvae2-domain-"
# "torch-fidelity": images reach the network as they are and it resizes them itself (Inception: TF1-style
# bilinear, no antialiasing, as the original FID code); "clean": PIL bicubic to the network's input size
# first (clean-fid's convention, Parmar et al. 2022), so the network's own resize has nothing left to do
RESIZE_MODES = ("torch-fidelity", "clean")


@dataclass(frozen=True)
class ExtractorSpec:
    kind: str  # "inception", "domain", or anything registered by hand (tests)
    name: str  # the name registered with torch-fidelity
    weights_hash: str  # the weights file's full SHA-256 (inception) or a hash of the state dict (domain)
    fidelity_kwargs: dict[str, Any] = field(default_factory=dict)
    standard: bool = False  # inception only: the file is the standard FID weights (by SHA-256)
    input_size: int | None = None  # the square side the network works at (Inception 299); "clean" resizes to it
    resize: str = "torch-fidelity"  # one of RESIZE_MODES

    def with_resize(self, mode: str) -> "ExtractorSpec":
        """The same extractor with images resized by `mode` before it sees them."""
        if mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
        if mode == "clean" and not self.input_size:
            raise ValueError(f"extractor {self.name!r} has no fixed input size, so the 'clean' resize has no target "
                             f"size; use resize 'torch-fidelity'")
        return dataclasses.replace(self, resize=mode)

    @property
    def fd_label(self) -> str:
        # only the real Inception network with the standard weights gives an FID; anything else is a
        # Frechet distance in its own space
        if self.kind == "inception":
            return "FID" if self.standard else f"FD-inception (non-standard weights, sha256 {self.weights_hash[:16]})"
        return f"FD-{self.kind}"


def clean_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size) by PIL's bicubic filter, one image at a time (PIL
    widens the filter when shrinking, so nothing aliases). clean-fid keeps the result in float; the
    extractors here take uint8, so PIL's own uint8 output is used: within rounding of clean-fid's input."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = []
    for img in images.permute(0, 2, 3, 1).numpy():  # (H, W, C) uint8
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        out.append(np.asarray(pil.resize((size, size), Image.BICUBIC)).reshape(size, size, -1))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


# inception

def default_inception_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _missing_inception_message(path: Path, given: bool) -> str:
    where = f"the given path {path}" if given else f"torch's hub cache ({path})"
    return (f"Inception weights for FID not found at {where}. This project never downloads them and never "
            f"substitutes another network. Download {INCEPTION_WEIGHTS_URL} on a machine with network access and "
            f"put it at {default_inception_weights_path()} (torch.hub.get_dir()/checkpoints/, set TORCH_HOME to move "
            f"it) or pass its path explicitly; or use the domain extractor (--feature-extractor domain), "
            f"reported as FD-domain.")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_inception_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The Inception weights file as a plain state dict, read with `weights_only=True`.

    torch-fidelity 0.4.0 would unpickle the file with weights_only=False, which runs any
    code a crafted pickle carries. Here the unpickler only rebuilds tensors and containers; anything
    else is refused before it runs, and the error names the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...: all mean "not a plain state dict"
        raise ValueError(
            f"Inception weights file {path} is not a plain state dict of tensors ({_load_failure(e)}); it was "
            f"refused before anything in it could run. Use the standard file {INCEPTION_WEIGHTS_FILE} from "
            f"{INCEPTION_WEIGHTS_URL}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"Inception weights file {path} does not hold a state dict (name -> tensor), "
                         f"got {type(state).__name__}")
    return state


def _load_failure(e: Exception) -> str:
    """The informative line of a refused load (torch's own message goes on to suggest weights_only=False)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(boilerplate)]
    return f"{type(e).__name__}: {' '.join(lines)[:200]}" if lines else type(e).__name__


class SafeInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's `inception-v3-compat` network, built from a state dict that was already loaded
    safely. Subclasses made by `inception_extractor` carry the state dict as `state`; torch-fidelity
    builds them by name from its registry and never sees a path."""

    state: dict[str, torch.Tensor] | None = None

    def __init__(self, name, features_list, feature_extractor_weights_path=None,
                 feature_extractor_internal_dtype=None, **kwargs):
        if feature_extractor_weights_path is not None:
            raise ValueError("SafeInceptionV3 takes its weights from eval.features.inception_extractor, never a path")
        if self.state is None:
            raise TypeError("use eval.features.inception_extractor(path), not SafeInceptionV3 directly")
        # FeatureExtractorInceptionV3.__init__ builds the layers, then loads "from the URL" when no path is
        # given: that loader is swapped for one handing over the verified state dict (strict load_state_dict)
        import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
        original, state = tf_inception.load_state_dict_from_url, self.state
        tf_inception.load_state_dict_from_url = lambda *a, **k: state
        try:
            super().__init__(name, features_list,  # no weights path: the (swapped) URL loader is used
                             feature_extractor_internal_dtype=feature_extractor_internal_dtype, **kwargs)
        finally:
            tf_inception.load_state_dict_from_url = original


def inception_extractor(weights_path: str | Path | None = None, internal_dtype: str | None = None) -> ExtractorSpec:
    """torch-fidelity's inception-v3-compat network with weights read safely from `weights_path` or
    torch's hub cache. The file's SHA-256 decides the label: the standard weights (whose name carries
    the first hex digits of its SHA-256) give "FID", any other file "FD-inception (non-standard ...)"."""
    given = weights_path is not None
    path = Path(weights_path) if given else default_inception_weights_path()
    if not path.is_file():
        raise FileNotFoundError(_missing_inception_message(path, given))
    if internal_dtype not in (None, "float32", "float64"):
        raise ValueError(f"internal_dtype must be None, 'float32' or 'float64', got {internal_dtype!r}")
    sha = file_sha256(path)
    name = f"{INCEPTION_PREFIX}{sha[:16]}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        cls = type(f"SafeInceptionV3_{sha[:16]}", (SafeInceptionV3,), {"state": load_inception_state_dict(path)})
        try:  # built once here so that a state dict with other names or shapes is refused now, naming the file
            cls(name, ["2048"])
        except RuntimeError as e:
            raise ValueError(f"Inception weights file {path} does not match the inception-v3-compat network: "
                             f"{str(e)[:600]}") from None
        register_feature_extractor(name, cls)
    kwargs: dict[str, Any] = {}
    if internal_dtype is not None:
        kwargs["feature_extractor_internal_dtype"] = internal_dtype
    return ExtractorSpec("inception", name, sha, kwargs, standard=sha.startswith(INCEPTION_SHA256_PREFIX),
                         input_size=FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE)


# domain

class DomainFeatureExtractor(FeatureExtractorBase):
    """The run's Classifier seen by torch-fidelity: uint8 (B, 3, H, W) -> penultimate features and logits.

    Subclasses made by `domain_extractor` bind one frozen classifier as `template`.
    """

    template: Classifier | None = None

    def __init__(self, name: str, features_list, **kwargs):
        super().__init__(name, features_list)
        if self.template is None:
            raise TypeError("use eval.features.domain_extractor(classifier), not DomainFeatureExtractor directly")
        # a private copy: torch-fidelity moves the extractor to its device, the caller's model must not move
        self.classifier = copy.deepcopy(self.template)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"domain extractor expects uint8 (B, 3, H, W) images, got {x.dtype} {tuple(x.shape)}")
        cfg = self.classifier.config
        h = x.float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        if cfg.in_channels == 1:
            h = h.mean(dim=1, keepdim=True)  # grey images arrive repeated to 3 channels: the mean is the grey
        if h.shape[-2:] != (cfg.image_size, cfg.image_size):
            h = F.interpolate(h, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        feats = self.classifier.features(h)  # (B, D)
        logits = self.classifier.head(feats)  # (B, num_classes); dropout is off in eval mode
        out = {"features": feats.float(), "logits": logits.float()}
        return tuple(out[name] for name in self.features_list)


def domain_extractor(classifier: Classifier) -> ExtractorSpec:
    """Register `classifier` with torch-fidelity as `vqvae2-domain-<weights hash>` (idempotent)."""
    digest = weights_hash(classifier)
    name = DOMAIN_PREFIX + digest
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        frozen = copy.deepcopy(classifier).cpu().float().eval().requires_grad_(False)
        cls = type(f"DomainFeatureExtractor_{digest}", (DomainFeatureExtractor,), {"template": frozen})
        register_feature_extractor(name, cls)
    return ExtractorSpec("domain", name, digest, input_size=classifier.config.image_size)
