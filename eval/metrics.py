"""FID / KID / IS / precision-recall through torch-fidelity (nothing here re-implements a metric).

Convention: generated images are torch-fidelity's input1, real images input2, so precision is
"generated inside the real manifold" and recall "real inside the generated manifold" (k = 3).
"""
from __future__ import annotations

from typing import Any

import torch
import torch_fidelity
from torch.utils.data import Dataset

from .features import ExtractorSpec


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
    cache_root: str | None = None,
) -> dict[str, Any]:
    """Metrics of generated vs real images in `extractor`'s feature space, with provenance.

    `kid_subset_size` defaults to min(1000, n_generated, n_real), `isc_splits` to min(10, n_generated).
    torch-fidelity caches nothing here: caching is off unless `cache_root` is given, and even then
    in-memory datasets have no cache name. `device` "cuda" runs the extractor on the GPU, anything else on CPU.
    """
    gen, real = UInt8Images(generated_uint8, "generated images"), UInt8Images(real_uint8, "real images")
    if gen.images.shape[1:] != real.images.shape[1:]:
        raise ValueError(f"generated images {tuple(gen.images.shape[1:])} and real images "
                         f"{tuple(real.images.shape[1:])} must have the same (C, H, W)")
    n_gen, n_real = len(gen), len(real)
    if kid_subset_size is None:
        kid_subset_size = min(1000, n_gen, n_real)
    if not 2 <= kid_subset_size <= min(n_gen, n_real):
        raise ValueError(f"kid_subset_size must be in [2, min(n_generated, n_real) = {min(n_gen, n_real)}], "
                         f"got {kid_subset_size}")
    if isc_splits is None:
        isc_splits = min(10, n_gen)
    if not 1 <= isc_splits <= n_gen:
        raise ValueError(f"isc_splits must be in [1, n_generated = {n_gen}], got {isc_splits}")
    if min(n_gen, n_real) < 4:
        raise ValueError(f"precision/recall with k=3 needs at least 4 images per side, got {n_gen} and {n_real}")

    raw = torch_fidelity.calculate_metrics(
        input1=gen,
        input2=real,
        cuda=torch.device(device).type == "cuda",
        batch_size=batch_size,
        isc=True, fid=True, kid=True, prc=True,
        feature_extractor=extractor.name,
        kid_subset_size=kid_subset_size,
        kid_subsets=kid_subsets,
        isc_splits=isc_splits,
        prc_neighborhood=3,
        rng_seed=seed,
        cache=cache_root is not None,
        cache_root=cache_root,
        save_cpu_ram=True,  # no DataLoader worker processes
        verbose=False,
        **extractor.fidelity_kwargs,
    )
    return {
        "fd": float(raw["frechet_inception_distance"]),
        "fd_label": extractor.fd_label,
        "kid_mean": float(raw["kernel_inception_distance_mean"]),
        "kid_std": float(raw["kernel_inception_distance_std"]),
        "is_mean": float(raw["inception_score_mean"]),
        "is_std": float(raw["inception_score_std"]),
        "precision": float(raw["precision"]),
        "recall": float(raw["recall"]),
        # provenance
        "extractor": extractor.kind,
        "feature_extractor_name": extractor.name,
        "weights_hash": extractor.weights_hash,
        "torch_fidelity_version": torch_fidelity.__version__,
        "n_generated": n_gen,
        "n_real": n_real,
        "seed": seed,
        "kid_subset_size": kid_subset_size,
        "prc_neighborhood": 3,
        "isc_splits": isc_splits,
    }
