"""vqvae2: models of VQ-VAE-2 (hierarchical VQ-VAE, PixelSNAIL priors, samplers)."""
from .config import VQVAEConfig, level_names

__all__ = ["VQVAEConfig", "level_names"]
