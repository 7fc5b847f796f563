"""FID / KID / IS / precision-recall through torch-fidelity (nothing here re-implements a metric).

Features are extracted once per image set by a torch-fidelity extractor (built by name from its
registry, see `eval.features`) and the metrics come from torch-fidelity's own functions on those
features: `fid_features_to_statistics` / `fid_statistics_to_metric`, `kid_features_to_metric`,
`isc_features_to_metric`, `prc_features_to_metric`. So one set of real features serves every
acceptance rate, and a reference-statistics file (`mu`, `sigma`) can stand in for the real images.

Convention: generated images are torch-fidelity's input1, real images input2, so precision is
"generated inside the real manifold" and recall "real inside the generated manifold" (k = 3).

Every FD comes with a bootstrap interval over the generated samples (`fd_interval`) and, from 5,000
samples on, the FD at infinite samples (`fd_at_infinity`, Chong & Forsyth 2020); both call the one FD
function (torch-fidelity's) on rows of the features already extracted. docs/evaluation.md explains them.
"""
from __future__ import annotations

import math
import zipfile
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

from .features import ExtractorSpec, clean_resize

PRC_NEIGHBORHOOD = 3
FID_PROTOCOL_N = 50_000  # the sample count behind published FIDs; fewer biases FD upward
FD_CI_LEVEL = 0.95
FD_INFINITY_MIN_N = 5_000  # Chong & Forsyth fit from 5,000 samples up: below, FD is not yet linear in 1/N
FD_INFINITY_POINTS = 15  # subset sizes of the fit, as in their code


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
        spec.with_resize(spec.resize)  # a mode the extractor can do
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
        if self.spec.resize == "clean":
            x = clean_resize(x, self.spec.input_size)  # (B, 3, S, S): the network's own resize is then a no-op
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
    resize: str = "torch-fidelity"  # how images were resized before the extractor (files without it predate "clean")

    @classmethod
    def from_features(cls, feats: Features, spec: ExtractorSpec, source: str = "",
                      keep_features: bool = True) -> "ReferenceStats":
        stats = _stats(feats)
        return cls(stats["mu"], stats["sigma"], spec.name, spec.weights_hash, len(feats),
                   feats.features if keep_features else None, source, spec.resize)

    def check_extractor(self, spec: ExtractorSpec, path: str | Path = "reference statistics") -> None:
        if self.extractor != spec.name or self.weights_sha256 != spec.weights_hash:
            raise ValueError(f"{path} was made with extractor {self.extractor!r} (weights sha256 "
                             f"{self.weights_sha256[:16]}), but this evaluation uses {spec.name!r} (weights sha256 "
                             f"{spec.weights_hash[:16]}); make the statistics again with `vqvae2 fid-stats` and the "
                             f"same extractor and weights")
        if self.resize != spec.resize:
            raise ValueError(f"{path} was made with resize {self.resize!r}, but this evaluation uses resize "
                             f"{spec.resize!r} (eval.resize); the resize alone moves FD, so make the statistics again "
                             f"with `vqvae2 fid-stats` and the same eval.resize")

    def save(self, path: str | Path) -> Path:
        """The common FID-statistics layout (float64 `mu`, `sigma`) plus provenance keys beside them."""
        from vqvae2.pretrained import atomic_write

        arrays = {"mu": self.mu, "sigma": self.sigma, "extractor": np.array(self.extractor),
                  "weights_sha256": np.array(self.weights_sha256), "n": np.array(self.n, np.int64),
                  "source": np.array(self.source), "resize": np.array(self.resize),
                  "torch_fidelity_version": np.array(torch_fidelity.__version__)}
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
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
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
                   int(data["n"]) if "n" in data else 0, feats, str(data.get("source", "")),
                   str(data.get("resize", "torch-fidelity")))


# metrics

Stats = dict[str, np.ndarray]  # {"mu": (D,), "sigma": (D, D)} float64, torch-fidelity's layout


def _stats(x: ReferenceStats | Features | Stats | torch.Tensor) -> Stats:
    if isinstance(x, dict):
        return x
    if isinstance(x, ReferenceStats):
        return {"mu": x.mu, "sigma": x.sigma}
    feats = x.features if isinstance(x, Features) else x  # (N, D)
    s = fid_features_to_statistics(feats.double())
    return {"mu": np.asarray(s["mu"], np.float64), "sigma": np.asarray(s["sigma"], np.float64)}


def fd_from_stats(a: ReferenceStats | Features | Stats, b: ReferenceStats | Features | Stats) -> float:
    """Frechet distance between two Gaussians (float64), by torch-fidelity's formula: the one FD here."""
    return float(fid_statistics_to_metric(_stats(a), _stats(b), verbose=False)["frechet_inception_distance"])


class FixedReferenceFD:
    """FD of many feature sets against one reference: tr sqrt(S R) = tr sqrt(R^1/2 S R^1/2) with R^1/2
    computed once, so each FD is one symmetric eigendecomposition instead of a general matrix square root
    (Inception's 2048 dimensions made the bootstrap minutes per row). Equal to fd_from_stats to
    rounding (tests/test_metrics.py); fd_from_stats stays the FD every reported number is."""

    def __init__(self, real: ReferenceStats | Features | Stats):
        ref = _stats(real)
        self.mu = ref["mu"]
        w, v = np.linalg.eigh(ref["sigma"])
        self.root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        self.trace = float(np.trace(ref["sigma"]))

    def __call__(self, features: torch.Tensor) -> float:
        x = features.double().numpy()  # (N, D)
        mu, sigma = x.mean(0), np.cov(x, rowvar=False)
        m = self.root @ sigma @ self.root
        tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
        return float(((mu - self.mu) ** 2).sum() + np.trace(sigma) + self.trace - 2 * tr_sqrt)


def fd_interval(gen: Features, real: ReferenceStats | Features | Stats, resamples: int = 100, seed: int = 0,
                level: float = FD_CI_LEVEL, fd: float | None = None) -> list[float]:
    """[low, high]: a `level` bootstrap interval of FD(gen, real), over the generated samples (their
    feature rows drawn with replacement `resamples` times from `seed`; the reference held fixed).

    The resampled FDs' percentile spread is centred on the observed FD (`fd`, computed when not given):
    a resample repeats rows, which raises FD about as much as fewer samples would, so the raw
    percentiles would sit above the number they describe. Clipped at 0, which no FD is below."""
    if resamples < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 resamples, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ref = _stats(real)
    fd = fd_from_stats(gen, ref) if fd is None else fd
    fd_of = FixedReferenceFD(ref)
    g = torch.Generator().manual_seed(seed)
    n = len(gen)
    values = [fd_of(gen.features[torch.randint(n, (n,), generator=g)]) for _ in range(resamples)]
    low, mid, high = np.quantile(values, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return [max(0.0, float(fd - (mid - low))), float(fd + (high - mid))]


def fd_at_infinity(gen: Features, real: ReferenceStats | Features | Stats, seed: int = 0,
                   points: int = FD_INFINITY_POINTS) -> dict[str, Any]:
    """FD at infinite samples (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and
    where to find them"): FD of random subsets of N generated samples, N evenly spaced from
    min(5,000, n/2) to n, fitted by least squares as a line in 1/N; FD_inf is its intercept (1/N = 0).
    FD's bias is close to c/N, so the intercept may be compared across sample counts; FD at N may not.
    Returns {"fd_infinity", "slope", "n": [N...], "fd": [FD_N...]}."""
    n = len(gen)
    if n < FD_INFINITY_MIN_N:
        raise ValueError(f"FD at infinite samples needs at least {FD_INFINITY_MIN_N:,} generated samples, got {n:,}")
    sizes = np.unique(np.linspace(min(FD_INFINITY_MIN_N, n // 2), n, points).astype(np.int64))
    fd_of = FixedReferenceFD(real)
    g = torch.Generator().manual_seed(seed)
    fds = [fd_of(gen.features[torch.randperm(n, generator=g)[:m]]) for m in sizes]
    slope, intercept = np.polyfit(1.0 / sizes, fds, 1)
    return {"fd_infinity": float(intercept), "slope": float(slope), "n": sizes.tolist(), "fd": [float(v) for v in fds]}


class PSNR:
    """Peak signal-to-noise ratio (dB) of uint8 images against their originals, from the mean squared
    error over every value of every image seen (`update` per batch, `value` at the end)."""

    def __init__(self):
        self.squared_error, self.count = 0.0, 0

    def update(self, original: torch.Tensor, reconstruction: torch.Tensor) -> None:
        if original.shape != reconstruction.shape or {original.dtype, reconstruction.dtype} != {torch.uint8}:
            raise ValueError(f"PSNR compares uint8 images of one shape, got {original.dtype} {tuple(original.shape)} "
                             f"and {reconstruction.dtype} {tuple(reconstruction.shape)}")
        self.squared_error += float((original.double() - reconstruction.double()).pow(2).sum())
        self.count += original.numel()

    def value(self) -> float:
        if self.count == 0:
            raise ValueError("PSNR of no images")
        mse = self.squared_error / self.count
        return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def fd_ci_method(resamples: int, level: float = FD_CI_LEVEL) -> str:
    return (f"{level:.0%} bootstrap interval: {resamples} resamples (with replacement) of the generated samples' "
            f"features, the reference held fixed; percentile spread centred on the reported FD")


FD_INFINITY_METHOD = (f"Chong & Forsyth 2020: least-squares line of FD against 1/N over {FD_INFINITY_POINTS} random "
                      f"subsets, N evenly spaced from min({FD_INFINITY_MIN_N:,}, n/2) to n; the intercept at 1/N = 0; "
                      f"only when n >= {FD_INFINITY_MIN_N:,}")


def metrics_from_features(gen: Features, real: Features | ReferenceStats, spec: ExtractorSpec, *,
                          kid_subset_size: int | None = None, kid_subsets: int = 100, isc_splits: int | None = None,
                          seed: int = 0, fd_resamples: int = 0) -> dict[str, Any]:
    """FD (with a bootstrap interval `fd_ci` when fd_resamples > 0, and `fd_infinity` from 5,000 samples),
    KID, IS, precision and recall of generated vs real features, with provenance. When `real` is a
    ReferenceStats without features, KID and precision/recall are None (mu and sigma do not give them)."""
    n_gen = len(gen)
    real_feats = real.features if isinstance(real, ReferenceStats) else real.features
    n_real = real.n if isinstance(real, ReferenceStats) else len(real)
    if isinstance(real, Features) and gen.shape != real.shape:
        raise ValueError(f"generated images {gen.shape} and real images {real.shape} must have the same (C, H, W)")
    if isc_splits is None:
        isc_splits = min(10, n_gen)
    if not 1 <= isc_splits <= n_gen:
        raise ValueError(f"isc_splits must be in [1, n_generated = {n_gen}], got {isc_splits}")
    if fd_resamples < 0 or fd_resamples == 1:
        raise ValueError(f"fd_resamples must be 0 (no interval) or >= 2, got {fd_resamples}")
    if n_gen < 2 or n_real < 2:  # a covariance needs two samples
        raise ValueError(f"a Frechet distance needs at least 2 generated and 2 real images, got {n_gen} and {n_real}")
    ref = _stats(real)  # once: every FD below is against it
    fd = fd_from_stats(gen, ref)
    out: dict[str, Any] = {
        "fd": fd,
        "fd_ci": fd_interval(gen, ref, fd_resamples, seed, fd=fd) if fd_resamples else None,
        "fd_infinity": fd_at_infinity(gen, ref, seed)["fd_infinity"] if n_gen >= FD_INFINITY_MIN_N else None,
    }
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
        "resize": spec.resize, "input_size": spec.input_size,
        "fd_ci_method": fd_ci_method(fd_resamples) if fd_resamples else None, "fd_ci_resamples": fd_resamples,
        "fd_infinity_method": FD_INFINITY_METHOD,
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
    fd_resamples: int = 0,
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
                                 seed=seed, fd_resamples=fd_resamples)
