"""vqvae2: models of VQ-VAE-2 (hierarchical VQ-VAE, PixelSNAIL priors, samplers) and the `Pipeline` over them."""
from .config import VQVAEConfig, level_names

__all__ = ["Pipeline", "PipelineOutput", "VQVAEConfig", "level_names"]


def __getattr__(name: str):
    # imported on first use, so that `import vqvae2.config` does not import torch
    if name in ("Pipeline", "PipelineOutput"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'vqvae2' has no attribute {name!r}")
