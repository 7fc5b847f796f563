"""FID / KID / IS / precision-recall through torch-fidelity (nothing here re-implements a metric).

Features are extracted once per image set by a torch-fidelity extractor (built by name from its
registry, see `eval.features`) and the metrics come from torch-fidelity's own functions on those
features: `fid_features_to_statistics` / `fid_statistics_to_metric`, `kid_features_to_metric`,
`isc_features_to_metric`, `prc_features_to_metric`. So one set of real features serves every
acceptance rate, and a reference-statistics file (`mu`, `sigma`) can stand in for the real images.

Convention: generated images are torch-fidelity's input1, real images input2, so precision is
"generated inside the real manifold" and recall "real inside the generated manifold" (k = 3).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from .features import ExtractorSpec

PRC_NEIGHBORHOOD = 3
FID_PROTOCOL_N = 50_000  # the sample count behind published FIDs; fewer biases FD upward


class UInt8Images(Dataset):
    """(N, C, H, W) uint8 images as torch-fidelity wants them: (3, H, W) uint8, grey repeated to 3 channels."""

    def __init__(self, images: torch.Tensor, what: str = "images"):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"{what} must be uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError(f"{what} is empty")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.images[i]
        return img.repeat(3, 1, 1) if img.shape[0] == 1 else img.clone()


def _check_uint8(images: torch.Tensor, what: str) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{what} must be uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    return images


# features

@dataclass
class Features:
    """What one extractor saw of one image set: `features` (N, D) for FD/KID/precision-recall and
    `logits` (N, K) for the Inception Score; `shape` is the (C, H, W) of the images."""

    features: torch.Tensor
    logits: torch.Tensor
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, idx: torch.Tensor) -> "Features":
        return Features(self.features[idx], self.logits[idx], self.shape)


class FeatureExtractor:
    """A torch-fidelity extractor built once (by registered name) and applied to batches of uint8 images."""

    def __init__(self, spec: ExtractorSpec, device: str | torch.device = "cpu"):
        if spec.name not in FEATURE_EXTRACTORS_REGISTRY:
            raise ValueError(f"feature extractor {spec.name!r} is not registered with torch-fidelity")
        cls = FEATURE_EXTRACTORS_REGISTRY[spec.name]
        if cls.__module__.startswith("torch_fidelity."):
            raise ValueError(f"{spec.name!r} is one of torch-fidelity's own extractors, which read weights from a path "
                             f"with pickle or download them; use eval.features.inception_extractor or domain_extractor")
        self.spec = spec
        self.fid_layer = cls.get_default_feature_layer_for_metric("fid")
        self.isc_layer = cls.get_default_feature_layer_for_metric("isc")
        self.cuda = torch.device(device).type == "cuda"
        layers = list(dict.fromkeys([self.fid_layer, self.isc_layer]))  # one layer may serve both
        self.net = create_feature_extractor(spec.name, layers, cuda=self.cuda, verbose=False, **spec.fidelity_kwargs)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 1 or 3, H, W) -> (features (B, D), logits (B, K)), float32 on CPU."""
        x = _check_uint8(images, "images")
        x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
        if self.cuda:
            x = x.cuda(non_blocking=True)
        out = self.net.convert_features_tuple_to_dict(self.net(x))
        return out[self.fid_layer].float().cpu(), out[self.isc_layer].float().cpu()

    def extract(self, batches: Iterable[torch.Tensor], batch_size: int = 64) -> Features:
        """Features of a stream of uint8 image batches (any batch sizes; re-batched to `batch_size`)."""
        feats, logits, shape = [], [], None
        for batch in batches:
            batch = _check_uint8(batch, "images")
            if shape is None:
                shape = tuple(batch.shape[1:])
            elif tuple(batch.shape[1:]) != shape:
                raise ValueError(f"images of one set must share (C, H, W): {shape} then {tuple(batch.shape[1:])}")
            for chunk in batch.split(batch_size):
                f, lg = self(chunk)
                feats.append(f)
                logits.append(lg)
        if not feats:
            raise ValueError("no images to extract features from")
        return Features(torch.cat(feats), torch.cat(logits), shape)


# reference statistics

@dataclass
class ReferenceStats:
    """`mu` (D,) and `sigma` (D, D) in float64 of the real images' features, and where they came from.
    `features` (N, D) may be kept too; KID and precision/recall need them, FD does not."""

    mu: np.ndarray
    sigma: np.ndarray
    extractor: str  # the registered extractor name
    weights_sha256: str
    n: int
    features: torch.Tensor | None = None
    source: str = ""

    @classmethod
    def from_features(cls, feats: Features, spec: ExtractorSpec, source: str = "",
                      keep_features: bool = True) -> "ReferenceStats":
        stats = fid_features_to_statistics(feats.features.double())
        return cls(np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64), spec.name,
                   spec.weights_hash, len(feats), feats.features if keep_features else None, source)

    def check_extractor(self, spec: ExtractorSpec, path: str | Path = "reference statistics") -> None:
        if self.extractor != spec.name or self.weights_sha256 != spec.weights_hash:
            raise ValueError(f"{path} was made with extractor {self.extractor!r} (weights sha256 "
                             f"{self.weights_sha256[:16]}), but this evaluation uses {spec.name!r} (weights sha256 "
                             f"{spec.weights_hash[:16]}); make the statistics again with `vqvae2 fid-stats` and the "
                             f"same extractor and weights")

    def save(self, path: str | Path) -> Path:
        """The common FID-statistics layout (float64 `mu`, `sigma`) plus provenance keys beside them."""
        from vqvae2.pretrained import atomic_write

        arrays = {"mu": self.mu, "sigma": self.sigma, "extractor": np.array(self.extractor),
                  "weights_sha256": np.array(self.weights_sha256), "n": np.array(self.n, np.int64),
                  "source": np.array(self.source), "torch_fidelity_version": np.array(torch_fidelity.__version__)}
        if self.features is not None:
            arrays["features"] = self.features.float().numpy()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceStats":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference statistics {path} do not exist: make them with `vqvae2 fid-stats`")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path} is not a readable .npz of statistics ({e})") from e
        for key in ("mu", "sigma", "extractor", "weights_sha256"):
            if key not in data:
                raise ValueError(f"{path} has no {key!r} array: statistics files need mu, sigma, extractor and "
                                 f"weights_sha256 (written by `vqvae2 fid-stats`)")
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise ValueError(f"{path}: mu must be (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
        feats = torch.from_numpy(data["features"]) if "features" in data else None
        return cls(mu, sigma, str(data["extractor"]), str(data["weights_sha256"]),
                   int(data["n"]) if "n" in data else 0, feats, str(data.get("source", "")))


# metrics

def fd_from_stats(a: ReferenceStats | Features, b: ReferenceStats | Features) -> float:
    """Frechet distance between two Gaussians (float64), by torch-fidelity's formula."""
    sa, sb = (_stats(x) for x in (a, b))
    return float(fid_statistics_to_metric(sa, sb, verbose=False)["frechet_inception_distance"])


def _stats(x: ReferenceStats | Features) -> dict[str, np.ndarray]:
    if isinstance(x, ReferenceStats):
        return {"mu": x.mu, "sigma": x.sigma}
    s = fid_features_to_statistics(x.features.double())
    return {"mu": np.asarray(s["mu"], np.float64), "sigma": np.asarray(s["sigma"], np.float64)}


def metrics_from_features(gen: Features, real: Features | ReferenceStats, spec: ExtractorSpec, *,
                          kid_subset_size: int | None = None, kid_subsets: int = 100, isc_splits: int | None = None,
                          seed: int = 0) -> dict[str, Any]:
    """FD, KID, IS, precision and recall of generated vs real features, with provenance. When `real` is
    a ReferenceStats without features, KID and precision/recall are None (mu and sigma do not give them)."""
    n_gen = len(gen)
    real_feats = real.features if isinstance(real, ReferenceStats) else real.features
    n_real = real.n if isinstance(real, ReferenceStats) else len(real)
    if isinstance(real, Features) and gen.shape != real.shape:
        raise ValueError(f"generated images {gen.shape} and real images {real.shape} must have the same (C, H, W)")
    if isc_splits is None:
        isc_splits = min(10, n_gen)
    if not 1 <= isc_splits <= n_gen:
        raise ValueError(f"isc_splits must be in [1, n_generated = {n_gen}], got {isc_splits}")
    out: dict[str, Any] = {"fd": fd_from_stats(gen, real)}
    isc = isc_features_to_metric(gen.logits, splits=isc_splits, shuffle=True, rng_seed=seed)
    out.update(is_mean=float(isc["inception_score_mean"]), is_std=float(isc["inception_score_std"]))
    if real_feats is not None:
        n_pair = min(n_gen, len(real_feats))
        if kid_subset_size is None:
            kid_subset_size = min(1000, n_pair)
        if not 2 <= kid_subset_size <= n_pair:
            raise ValueError(f"kid_subset_size must be in [2, min(n_generated, n_real) = {n_pair}], "
                             f"got {kid_subset_size}")
        if n_pair < PRC_NEIGHBORHOOD + 1:
            raise ValueError(f"precision/recall with k={PRC_NEIGHBORHOOD} needs at least {PRC_NEIGHBORHOOD + 1} "
                             f"images per side, got {n_gen} and {len(real_feats)}")
        kid = kid_features_to_metric(gen.features, real_feats, kid_subsets=kid_subsets,
                                     kid_subset_size=kid_subset_size, rng_seed=seed, verbose=False)
        prc = prc_features_to_metric(gen.features, real_feats, prc_neighborhood=PRC_NEIGHBORHOOD,
                                     save_cpu_ram=True, verbose=False)
        out.update(kid_mean=float(kid["kernel_inception_distance_mean"]),
                   kid_std=float(kid["kernel_inception_distance_std"]),
                   precision=float(prc["precision"]), recall=float(prc["recall"]))
    else:
        kid_subset_size = None
        out.update(kid_mean=None, kid_std=None, precision=None, recall=None)
    out.update({
        "fd_label": spec.fd_label,
        # provenance
        "extractor": spec.kind, "feature_extractor_name": spec.name, "weights_hash": spec.weights_hash,
        "weights_standard": spec.standard if spec.kind == "inception" else None,
        "torch_fidelity_version": torch_fidelity.__version__,
        "n_generated": n_gen, "n_real": n_real, "seed": seed, "kid_subset_size": kid_subset_size,
        "prc_neighborhood": PRC_NEIGHBORHOOD, "isc_splits": isc_splits,
    })
    return out


def compute_metrics(
    generated_uint8: torch.Tensor,
    real_uint8: torch.Tensor,
    extractor: ExtractorSpec,
    *,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    isc_splits: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Metrics of generated vs real images (uint8 NCHW, in memory) in `extractor`'s feature space.

    `kid_subset_size` defaults to min(1000, n_generated, n_real), `isc_splits` to min(10, n_generated).
    Nothing is cached on disk. `device` "cuda" runs the extractor on the GPU, anything else on CPU."""
    gen = UInt8Images(generated_uint8, "generated images").images
    real = UInt8Images(real_uint8, "real images").images
    if gen.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated images {tuple(gen.shape[1:])} and real images "
                         f"{tuple(real.shape[1:])} must have the same (C, H, W)")
    net = FeatureExtractor(extractor, device)
    return metrics_from_features(net.extract([gen], batch_size), net.extract([real], batch_size), extractor,
                                 kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, isc_splits=isc_splits,
                                 seed=seed)
