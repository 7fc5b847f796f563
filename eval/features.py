"""torch-fidelity feature extractors: `inception` (inception-v3-compat, standard weights) and `domain`.

An `ExtractorSpec` says which registered torch-fidelity extractor to use, the hash of its weights
and the extra keyword arguments `torch_fidelity.calculate_metrics` needs for it. Nothing here
downloads anything: missing Inception weights are an error saying where to put the file.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from .classifier import Classifier, weights_hash

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         + INCEPTION_WEIGHTS_FILE)
DOMAIN_PREFIX = "vqvae2-domain-"


@dataclass(frozen=True)
class ExtractorSpec:
    kind: str  # "inception", "domain", or anything registered by hand (tests)
    name: str  # the name registered with torch-fidelity
    weights_hash: str
    fidelity_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def fd_label(self) -> str:
        # only the real Inception network gives an FID; anything else is a Frechet distance in its own space
        return "FID" if self.kind == "inception" else f"FD-{self.kind}"


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


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def inception_extractor(weights_path: str | Path | None = None, internal_dtype: str | None = None) -> ExtractorSpec:
    """torch-fidelity's inception-v3-compat with weights read from `weights_path` or torch's hub cache."""
    given = weights_path is not None
    path = Path(weights_path) if given else default_inception_weights_path()
    if not path.is_file():
        raise FileNotFoundError(_missing_inception_message(path, given))
    if internal_dtype not in (None, "float32", "float64"):
        raise ValueError(f"internal_dtype must be None, 'float32' or 'float64', got {internal_dtype!r}")
    kwargs: dict[str, Any] = {"feature_extractor_weights_path": str(path)}
    if internal_dtype is not None:
        kwargs["feature_extractor_internal_dtype"] = internal_dtype
    return ExtractorSpec("inception", INCEPTION_NAME, _file_hash(path), kwargs)


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
    return ExtractorSpec("domain", name, digest)
