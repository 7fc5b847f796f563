"""`Pipeline`: sample, encode, decode and vary images from Python; `vqvae2 sample` and `vary` run the same code.

    pipe = Pipeline.from_pretrained("runs/demo")  # a run directory, an exported folder or a Hub repository id
    out = pipe(16, generator=torch.Generator().manual_seed(0))
    out.images[0].save("face.png")

`pipe(n, seed=s, batch_size=b)` samples batch i with `batch_generator(s, i)`, as `vqvae2 sample --seed s
--batch-size b` does, so both give the same images and codes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from . import hub
from .config import SAMPLE_SEED_MAX, SEED_STRIDE, from_dict
from .pixelsnail import PixelSNAIL
from .pretrained import WEIGHTS_NAME
from .sampling import PriorWeights, sample_hierarchy
from .vqvae import VQVAE2

OUTPUTS = ("pil", "uint8", "tensor")


@dataclass
class SampleSettings:
    """Sampling defaults of a pipeline: the run's [sample] section, the values `vqvae2 sample` uses."""

    temperature: float | list[float] = 1.0  # one, or one per level, top first
    top_k: int = 0  # 0 = no top-k filtering
    top_p: float = 0.0  # nucleus sampling (0 = off)
    guidance: float | list[float] = 1.0  # classifier-free guidance scale (1 = none), one or one per level
    batch_size: int = 64
    sampler: str = "cached"  # "cached", "compiled" or "reference": the same codes (compiled: up to rounding)
    class_label: int = -1  # -1 = spread the samples over the classes (class-conditional priors)
    seed: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "sample.") -> "SampleSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return from_dict(cls, {k: v for k, v in data.items() if k in names}, where=where)


@dataclass
class PipelineOutput:
    """Images as `output` asked (PIL images, uint8 (N, C, H, W), or float (N, C, H, W) in [-1, 1]; on CPU),
    their codes per level (top first, (N, h, w) int64 on CPU) and the class labels sampled with (or None)."""

    images: Any
    codes: list[torch.Tensor]
    labels: torch.Tensor | None = None


def batch_generator(seed: int, batch: int) -> torch.Generator:
    """The generator of batch `batch` of `vqvae2 sample --seed seed`: batches are independent of each other,
    so samples depend neither on the number of processes nor on a resume."""
    if not 0 <= seed <= SAMPLE_SEED_MAX:
        raise ValueError(f"sampling seed {seed} is outside [0, {SAMPLE_SEED_MAX}]")
    return torch.Generator().manual_seed(seed * SEED_STRIDE + batch)


def class_labels(n: int, n_classes: int, class_label: int = -1) -> torch.Tensor:
    """n labels: all `class_label`, or spread evenly over the classes (-1): 0, 1, ..., n_classes - 1, 0, ..."""
    if not -1 <= class_label < n_classes:
        raise ValueError(f"class label {class_label} is outside the model's classes [0, {n_classes - 1}] (or -1)")
    if class_label >= 0:
        return torch.full((n,), class_label, dtype=torch.long)
    return torch.arange(n, dtype=torch.long) % n_classes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (N, C, H, W) -> uint8 in [0, 255], on CPU."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


class Pipeline:
    """A VQ-VAE and its priors (top first): `pipe(n)` samples n images top-down; `encode`, `decode`, `vary`."""

    def __init__(self, vqvae: VQVAE2, priors: Sequence[PixelSNAIL], settings: SampleSettings | None = None):
        self.vqvae, self.priors = vqvae, list(priors)
        self.settings = settings or SampleSettings()
        sizes, k = vqvae.config.grid_sizes(), vqvae.config.codebook_size
        if len(self.priors) != len(sizes):
            raise ValueError(f"the VQ-VAE has {len(sizes)} levels {vqvae.levels}, but {len(self.priors)} priors were given")
        for level, size, prior in zip(vqvae.levels, sizes, self.priors):
            c = prior.config
            if (c.height, c.width, c.codebook_size) != (size, size, k):
                raise ValueError(f"the {level} prior models {c.height}x{c.width} codes of {c.codebook_size} entries, "
                                 f"but the VQ-VAE's {level} level has {size}x{size} codes of {k}")

    @property
    def levels(self) -> list[str]:
        return self.vqvae.levels

    @property
    def n_classes(self) -> int:
        return self.priors[0].config.n_classes

    @property
    def device(self) -> torch.device:
        return next(self.vqvae.parameters()).device

    def to(self, device: str | torch.device) -> "Pipeline":
        self.vqvae.to(device)
        for prior in self.priors:
            prior.to(device)
        return self

    # files

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str | torch.device | None = None,
                        revision: str | None = None) -> "Pipeline":
        """Loads a run directory, a folder written by `save_pretrained` / `vqvae2 export`, or a Hub repository id
        (`revision`: its branch, tag or commit). Reads JSON and safetensors only. Device: CUDA when available."""
        files = hub.locate(hub.resolve(source, revision))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        vqvae = VQVAE2.from_pretrained(files.vqvae, map_location=device).eval()
        vqvae_hash = hub.file_hash(files.vqvae / WEIGHTS_NAME)
        for level, folder in zip(files.levels, files.priors):
            trained_on = hub.read_meta(folder).get("vqvae_hash")
            if trained_on not in (None, vqvae_hash):
                raise ValueError(f"{folder} is the {level} prior of VQ-VAE weights {trained_on}, but {files.vqvae} "
                                 f"holds {vqvae_hash}: retrain the prior on this VQ-VAE's codes")
        priors = [PixelSNAIL.from_pretrained(folder, map_location=device).eval() for folder in files.priors]
        settings = SampleSettings.from_mapping(files.sample, where=f"{files.root}: sample.")
        return cls(vqvae, priors, settings)

    def save_pretrained(self, directory: str | Path, extra_components: Mapping[str, Any] | None = None) -> Path:
        """Writes model_index.json and one folder per component (model.json + model.safetensors): the VQ-VAE,
        each prior, and any `extra_components` (models with save_pretrained, e.g. the classifiers)."""
        directory = Path(directory)
        self.vqvae.save_pretrained(directory / "vqvae")
        vqvae_hash = hub.file_hash(directory / "vqvae" / WEIGHTS_NAME)
        components = {"vqvae": self.vqvae.model_type}
        for level, prior in zip(self.levels, self.priors):
            prior.save_pretrained(directory / f"prior-{level}", extra={"vqvae_hash": vqvae_hash})
            components[f"prior-{level}"] = prior.model_type
        for name, model in (extra_components or {}).items():
            if name in components:
                raise ValueError(f"extra component {name!r} would replace the pipeline's own")
            model.save_pretrained(directory / name)
            components[name] = model.model_type
        return hub.write_index(directory, self.levels, components, dataclasses.asdict(self.settings))

    # generation

    @torch.no_grad()
    def __call__(self, n: int, *, labels: int | Sequence[int] | torch.Tensor | None = None,
                 temperature: float | Sequence[float] | None = None, top_k: int | Sequence[int] | None = None,
                 generator: torch.Generator | None = None, seed: int | None = None, batch_size: int | None = None,
                 sampler: str | None = None, output: str = "pil", progress: bool = False,
                 top_p: float | Sequence[float] | None = None,
                 guidance: float | Sequence[float] | None = None) -> PipelineOutput:
        """n images sampled top-down. Unset controls take the pipeline's `settings` (the run's [sample] values).
        `labels`: a class for all, one per image, or None (the settings' class_label; -1 spreads over classes).
        `temperature`, `top_k` (0 = off), `top_p` (nucleus sampling, 0 = off), `guidance` (classifier-free guidance
        scale, 1 = none; priors trained with label dropout): one value, or one per level. Randomness: `generator` (drawn from batch
        after batch), or `seed` (batch i from `batch_generator(seed, i)`, as `vqvae2 sample --seed`)."""
        if generator is not None and seed is not None:
            raise ValueError("give generator or seed, not both")
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        _check_output(output)
        batch_size = self.settings.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        labels = self._labels(n, labels)
        controls = self._controls(temperature, top_k, sampler, top_p, guidance)
        # the priors' weights as the incremental samplers read them, laid out once for every batch
        weights = None if controls["sampler"] == "reference" else [PriorWeights(p) for p in self.priors]
        images, codes = [], []
        for b, lo in enumerate(range(0, n, batch_size)):
            hi = min(n, lo + batch_size)
            # 1. codes of every level, top first, one batch at a time
            lab = None if labels is None else labels[lo:hi].to(self.device)
            g = generator if seed is None else batch_generator(seed, b)
            batch = sample_hierarchy(self.priors, hi - lo, labels=lab, generator=g, progress=progress, weights=weights,
                                     **controls)
            # 2. the decoder turns them into images
            images.append(self.vqvae.decode_codes([c.to(self.device) for c in batch]).cpu())
            codes.append([c.cpu() for c in batch])
        return PipelineOutput(_convert(torch.cat(images), output), [torch.cat(c) for c in zip(*codes)], labels)

    @torch.no_grad()
    def encode(self, images: Any) -> list[torch.Tensor]:
        """Codes per level (top first, (N, h, w) int64 on CPU) of images: float (N, C, H, W) or (C, H, W) in
        [-1, 1], uint8 tensors, or PIL images of the model's size."""
        return [c.cpu() for c in self.vqvae.encode(self._images(images).to(self.device))]

    @torch.no_grad()
    def decode(self, codes: Sequence[torch.Tensor], output: str = "pil") -> PipelineOutput:
        """Images of codes given per level, top first, each (N, h, w)."""
        _check_output(output)
        codes = [torch.as_tensor(c).long() for c in codes]
        images = self.vqvae.decode_codes([c.to(self.device) for c in codes]).cpu()
        return PipelineOutput(_convert(images, output), [c.cpu() for c in codes])

    @torch.no_grad()
    def vary(self, image: Any, keep: str, n: int = 8, *, labels: int | Sequence[int] | torch.Tensor | None = None,
             temperature: float | Sequence[float] | None = None, top_k: int | Sequence[int] | None = None,
             generator: torch.Generator | None = None, sampler: str | None = None, output: str = "pil",
             top_p: float | Sequence[float] | None = None,
             guidance: float | Sequence[float] | None = None) -> PipelineOutput:
        """n variations of one image: its codes at level `keep` and above are kept, the levels below resampled
        from their priors (what each level holds). Class-conditional priors need `labels` (or a class_label
        setting). `vqvae2 vary --seed s` is `generator=torch.Generator().manual_seed(s)`, top_k=0, sampler "cached"."""
        if keep not in self.levels[:-1]:
            raise ValueError(f"keep={keep!r}: choose a level with a level below it to resample, one of {self.levels[:-1]}")
        if n < 1:
            raise ValueError(f"number of variations must be >= 1, got {n}")
        _check_output(output)
        if labels is None and self.n_classes and self.settings.class_label < 0:
            raise ValueError(f"the priors are class-conditional ({self.n_classes} classes): give labels=<class>")
        x = self._images(image)
        if len(x) != 1:
            raise ValueError(f"vary takes one image, got {len(x)}")
        codes = self.vqvae.encode(x.to(self.device))
        kept = self.levels.index(keep) + 1
        labels = self._labels(n, labels)
        varied = sample_hierarchy(self.priors, n, labels=None if labels is None else labels.to(self.device),
                                  generator=generator, given=[c.expand(n, -1, -1) for c in codes[:kept]],
                                  **self._controls(temperature, top_k, sampler, top_p, guidance))
        images = self.vqvae.decode_codes([c.to(self.device) for c in varied]).cpu()
        return PipelineOutput(_convert(images, output), [c.cpu() for c in varied], labels)

    # arguments

    def _labels(self, n: int, labels) -> torch.Tensor | None:
        if self.n_classes == 0:
            if labels is not None:
                raise ValueError(f"labels={labels!r}: the priors are not class-conditional")
            return None
        if labels is None:
            return class_labels(n, self.n_classes, self.settings.class_label)
        t = torch.as_tensor(labels).cpu()
        if t.dim() == 0:  # one class for every image
            t = t.expand(n)
        if t.shape != (n,) or t.is_floating_point() or t.is_complex():
            raise ValueError(f"labels must be one class, or {n} integer classes, got shape {tuple(t.shape)} {t.dtype}")
        if len(t) and not (0 <= int(t.min()) and int(t.max()) < self.n_classes):
            raise ValueError(f"labels must be classes in [0, {self.n_classes - 1}], got {t.tolist()}")
        return t.long()

    def _controls(self, temperature, top_k, sampler, top_p=None, guidance=None) -> dict[str, Any]:
        s = self.settings
        guidance = s.guidance if guidance is None else guidance
        return dict(temperature=s.temperature if temperature is None else temperature,
                    top_k=_off_as_none(s.top_k if top_k is None else top_k),
                    top_p=_off_as_none(s.top_p if top_p is None else top_p),
                    guidance=[None if g == 1 else g for g in guidance] if isinstance(guidance, (list, tuple))
                    else (None if guidance == 1 else guidance),
                    sampler=s.sampler if sampler is None else sampler)

    def _images(self, images: Any) -> torch.Tensor:
        """(N, C, H, W) float in [-1, 1] from float or uint8 tensors or PIL images."""
        c = self.vqvae.config
        if not isinstance(images, torch.Tensor):
            pictures = images if isinstance(images, (list, tuple)) else [images]
            arrays = []
            for im in pictures:
                if not hasattr(im, "convert") or not hasattr(im, "size"):
                    raise TypeError(f"images must be tensors or PIL images, got {type(im).__name__}")
                if tuple(im.size) != (c.image_size, c.image_size):
                    raise ValueError(f"a PIL image of {im.size[0]}x{im.size[1]} px: the model takes "
                                     f"{c.image_size}x{c.image_size}; resize and crop it first")
                pixels = np.asarray(im.convert("L" if c.in_channels == 1 else "RGB"), dtype=np.uint8)
                arrays.append(torch.from_numpy(pixels.reshape(c.image_size, c.image_size, -1).copy()).permute(2, 0, 1))
            images = torch.stack(arrays)
        x = images if images.dim() == 4 else images[None]
        return x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()


def _off_as_none(value):
    """A setting where 0 means off (top_k, top_p), one or one per level, as the samplers take it (None = off)."""
    return [v or None for v in value] if isinstance(value, (list, tuple)) else (value or None)


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")


def _convert(images: torch.Tensor, output: str):
    """Decoder output (N, C, H, W) -> PIL images, uint8 tensor or float tensor clamped to [-1, 1]."""
    if output == "tensor":
        return images.float().clamp(-1, 1)
    pixels = to_uint8(images)
    if output == "uint8":
        return pixels
    from PIL import Image
    hwc = pixels.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in hwc]  # mode L or RGB
