"""The whole pipeline's configuration: TOML presets, `--set key=value` overrides, validation."""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from eval.config import ClassifierConfig
from vqvae2.config import SAMPLE_SEED_MAX, PixelSNAILConfig, VQVAEConfig, _check, from_dict, level_names, to_dict, unknown_key_error

from .datasets.config import DataConfig

# the trackers accelerate 1.x supports (accelerate.utils.LoggerType, less "all"); each is also its package's name
TRACKERS = ("tensorboard", "wandb", "trackio", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab")


@dataclass
class TrainConfig:
    """Budget and optimiser of one training stage."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_accum: int = 1
    grad_clip: float = 1.0  # max grad norm; 0 disables
    # "auto" (bf16 where the device has fast bf16, else fp32: pipelines/policy.py), "no", "bf16" or "fp16" (GPU)
    mixed_precision: str = "auto"
    ema_decay: float = 0.0  # Polyak averaging of the weights (priors); 0 disables
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes: 0 = chosen per dataset (image folders: min(8, cores)), -1 = none
    val_batches: int = 0  # 0 = the whole validation split
    # watching a run (docs/configuration.md, "Watching a run"); none of these changes the trained weights
    val_every: int = 0  # a validation point in metrics.jsonl every N steps; 0 = only the final evaluation
    image_every: int = 0  # a progress picture every N steps (VQ-VAE and priors); 0 = none
    log_with: str = ""  # accelerate trackers, comma-separated ("tensorboard", "wandb", ...); "" = none
    # recompute activations in the backward pass instead of keeping them (less memory, ~1/3 more compute);
    # VQ-VAE and priors; the same gradients, so it never enters a stage hash and may change on resume
    activation_checkpointing: bool = False
    # convolution weights and image batches in channels-last layout: true, false or "auto" (on where it is
    # safe and pays: GPUs and CPUs with native bf16; pipelines/policy.py)
    channels_last: bool | str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "save_every"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.num_workers >= -1, f"num_workers must be >= -1 (-1 = none, 0 = chosen per dataset), got "
                                       f"{self.num_workers}")
        for name in ("lr", "warmup_steps", "weight_decay", "grad_clip", "val_batches", "val_every", "image_every"):
            _check(math.isfinite(getattr(self, name)) and getattr(self, name) >= 0,
                   f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        check_seed(self.seed, "seed")
        for name in self.trackers:
            _check(name in TRACKERS, f"log_with names an unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
        _check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(self.mixed_precision in ("auto", "no", "bf16", "fp16"),
               f"mixed_precision must be 'auto', 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        _check(isinstance(self.channels_last, bool) or self.channels_last == "auto",
               f"channels_last must be true, false or 'auto', got {self.channels_last!r}")

    @property
    def trackers(self) -> list[str]:
        return [name.strip() for name in self.log_with.split(",") if name.strip()]


REALISM_REAL = ("reconstructions", "images")


@dataclass
class ClassifierTrainConfig(TrainConfig):
    """Training of the stage-3 classifiers: a TrainConfig plus the rejection network's mixup."""

    # mixup (Zhang et al., 2018) for the rejection classifier only: each image is blended with another of
    # the batch, weight ~ Beta(a, a), and the labels in the same proportion. Its probabilities saturate
    # less, and on fashion32 rejection then raises k-NN precision (docs/results.md, "Stage 3"). 0 = cross-entropy.
    rejection_mixup: float = 0.4
    # data without labels: the realism classifier (real against generated) learns from this many of the model's
    # own samples (drawn with another seed than evaluation's) and as many real training images
    realism_samples: int = 1000
    # what stands for "real" there: "reconstructions" (training images through the VQ-VAE, so both sides carry
    # the decoder's texture and only what the priors got wrong tells them apart) or "images" as they are
    realism_real: str = "reconstructions"
    # the centred fraction of each side the realism classifier looks at (1: the whole image): aligned faces set
    # less, so that it ranks samples by their faces rather than by their backgrounds
    realism_crop: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.rejection_mixup >= 0, f"rejection_mixup must be >= 0, got {self.rejection_mixup}")
        _check(self.realism_samples >= 2, f"realism_samples must be >= 2, got {self.realism_samples}")
        _check(self.realism_real in REALISM_REAL,
               f"realism_real must be one of {', '.join(map(repr, REALISM_REAL))}, got {self.realism_real!r}")
        _check(0.0 < self.realism_crop <= 1.0, f"realism_crop must be in (0, 1], got {self.realism_crop}")


def check_guidance(value: float | list[float], key: str) -> None:
    values = value if isinstance(value, list) else [value]
    numbers = all(isinstance(g, (int, float)) and not isinstance(g, bool) for g in values)
    _check(len(values) >= 1 and numbers and all(0 <= g < math.inf for g in values),
           f"{key} must be finite and >= 0 (1 = no guidance; one number, or a list with one per level, top first), "
           f"got {value}")


def check_temperature(value: float | list[float], key: str) -> None:
    values = value if isinstance(value, list) else [value]
    numbers = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in values)
    _check(len(values) >= 1 and numbers and all(0 < t < math.inf for t in values),
           f"{key} must be finite and > 0 (one number, or a list with one per level, top first), got {value}")


SEED_MAX = 2 ** 63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def check_seed(value: int, key: str, largest: int = SEED_MAX) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= largest,
           f"{key} must be an integer in [0, {'2**63 - 1' if largest == SEED_MAX else largest}], got {value}")


def format_temperature(value: float | list[float]) -> str:
    return ", ".join(f"{t:g}" for t in value) if isinstance(value, list) else f"{value:g}"


@dataclass
class SampleConfig:
    n: int = 64
    batch_size: int = 64
    temperature: float | list[float] = 1.0  # one for every level, or a list: one per level, top first
    top_k: int = 0  # 0 = no top-k filtering
    top_p: float = 0.0  # nucleus sampling: the most probable codes whose mass reaches top_p; 0 = off
    # classifier-free guidance scale, one or one per level (1 = none; needs prior.<level>.label_dropout > 0)
    guidance: float | list[float] = 1.0
    seed: int = 0
    sampler: str = "cached"  # "cached", "compiled" (the cached sampler through torch.compile) or "reference"
    class_label: int = -1  # -1 = spread samples over all classes (labelled data) or unconditional
    format: str = "npz"  # "npz": samples.npz (arr_0 uint8 N x H x W x 3, labels, codes); "png": samples/png/*.png

    def __post_init__(self) -> None:
        _check(self.format in ("npz", "png"), f"sample.format must be 'npz' or 'png', got {self.format!r}")
        _check(self.n >= 1, f"sample.n must be >= 1, got {self.n}")
        _check(self.batch_size >= 1, f"sample.batch_size must be >= 1, got {self.batch_size}")
        check_temperature(self.temperature, "sample.temperature")
        _check(self.top_k >= 0, f"sample.top_k must be >= 0, got {self.top_k}")
        _check(isinstance(self.top_p, (int, float)) and 0 <= self.top_p <= 1,
               f"sample.top_p must be in [0, 1] (0 = off), got {self.top_p!r}")
        check_guidance(self.guidance, "sample.guidance")
        _check(self.class_label >= -1, f"sample.class_label must be -1 (all classes) or a class index >= 0, "
                                       f"got {self.class_label}")
        check_seed(self.seed, "sample.seed", SAMPLE_SEED_MAX)
        _check(self.sampler in ("cached", "compiled", "reference"),
               f"sample.sampler must be 'cached', 'compiled' or 'reference', got {self.sampler!r}")


@dataclass
class EvalConfig:
    n_samples: int = 1000
    n_real: int = 0  # 0 = the whole validation split
    acceptance_rates: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.1])
    feature_extractor: str = "domain"  # "domain" or "inception"
    inception_weights: str = ""
    kid_subset_size: int = 1000
    batch_size: int = 256
    seed: int = 0
    temperature: float | list[float] = 1.0  # as sample.temperature
    rejection_classifier: str = "separate"  # "separate": a second classifier (another seed); "same": the feature one
    reference_stats: str = ""  # an .npz from `vqvae2 fid-stats`: used instead of the real images' features
    # "torch-fidelity": the extractor resizes images itself (the original FID's bilinear); "clean": PIL bicubic to
    # its input size first (clean-fid's convention). Recorded in the report; docs/evaluation.md
    resize: str = "torch-fidelity"
    fd_resamples: int = 100  # bootstrap resamples behind each FD's 95% interval; 0 = no intervals
    enabled: bool = True

    def __post_init__(self) -> None:
        _check(self.n_samples >= 1, f"eval.n_samples must be >= 1, got {self.n_samples}")
        check_seed(self.seed, "eval.seed", SAMPLE_SEED_MAX)
        _check(len(self.acceptance_rates) >= 1 and all(0 < r <= 1 for r in self.acceptance_rates),
               f"eval.acceptance_rates must be in (0, 1], got {self.acceptance_rates}")
        check_temperature(self.temperature, "eval.temperature")
        _check(self.rejection_classifier in ("separate", "same"),
               f"eval.rejection_classifier must be 'separate' or 'same', got {self.rejection_classifier!r}")
        _check(self.feature_extractor in ("domain", "inception"),
               f"eval.feature_extractor must be 'domain' or 'inception', got {self.feature_extractor!r}")
        _check(self.resize in ("torch-fidelity", "clean"),
               f"eval.resize must be 'torch-fidelity' or 'clean', got {self.resize!r}")
        _check(isinstance(self.fd_resamples, int) and not isinstance(self.fd_resamples, bool)
               and (self.fd_resamples == 0 or self.fd_resamples >= 2),
               f"eval.fd_resamples must be 0 (no intervals) or an integer >= 2, got {self.fd_resamples!r}")


@dataclass
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    train_vqvae: TrainConfig = field(default_factory=TrainConfig)
    prior: dict[str, dict] = field(default_factory=dict)  # level -> PixelSNAIL settings
    train_prior: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    classifier: dict = field(default_factory=dict)  # ClassifierConfig settings
    train_classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check(self.vqvae.image_size == self.data.size,
               f"vqvae.image_size ({self.vqvae.image_size}) must equal data.size ({self.data.size})")
        _check(isinstance(self.prior, dict), f"[prior] must hold one table per level, got {self.prior!r}")
        for level, section in self.prior.items():
            _check(isinstance(section, dict), f"[prior.{level}] must be a table of PixelSNAIL settings, got {section!r}")
            if level not in self.vqvae.levels:
                raise ValueError(f"prior.{level}: unknown level {level!r}; the VQ-VAE's levels are {self.vqvae.levels}")
            self.prior_train(level)  # a bad [prior.<level>.train] key or value is an error now, not at its stage
        # every model section is built now with what the data will fix stood in, so that a misspelled key
        # or bad value is refused before stage 1 trains, not when its own stage starts
        sizes = self.vqvae.grid_sizes()
        for level in self.vqvae.levels:
            prior_model_config(self.prior.get(level, {}), level, self.vqvae.levels, sizes, self.vqvae.codebook_size,
                               num_classes=2)
        realism_classifier_config(self)  # the labelled classifiers' config, and the realism crop on top of it
        self._check_guidance()
        for key, t in (("sample.temperature", self.sample.temperature), ("eval.temperature", self.eval.temperature),
                       ("sample.guidance", self.sample.guidance)):
            _check(not isinstance(t, list) or len(t) == len(self.vqvae.levels),
                   f"{key} has {len(t) if isinstance(t, list) else 1} values but the VQ-VAE has "
                   f"{len(self.vqvae.levels)} levels {self.vqvae.levels}: give one number, or one per level, top first")

    def _check_guidance(self) -> None:
        """Guidance other than 1 on a class-conditional level needs that level's prior trained with label dropout."""
        g = self.sample.guidance
        scales = g if isinstance(g, list) else [g] * len(self.vqvae.levels)  # a wrong length is named after this
        for level, scale in zip(self.vqvae.levels, scales):
            settings = self.prior.get(level, {})
            if scale != 1 and settings.get("class_conditional", True) and not settings.get("label_dropout", 0):
                raise ValueError(f"sample.guidance {scale} for level {level!r} needs its prior trained with label "
                                 f"dropout: set prior.{level}.label_dropout (e.g. 0.1) and train the prior again")

    def prior_train(self, level: str) -> TrainConfig:
        """The training settings of one level's prior: [train_prior] with the level's own
        [prior.<level>.train] table on top (e.g. more steps for the level whose samples need them)."""
        own = self.prior.get(level, {}).get("train", {})
        if not isinstance(own, dict):
            raise ValueError(f"prior.{level}.train must be a table of [train_prior] options, got {own!r}")
        if not own:
            return self.train_prior
        try:
            return from_dict(TrainConfig, {**to_dict(self.train_prior), **own}, where=f"prior.{level}.train.")
        except ValueError as e:  # TrainConfig's own checks name the bare field
            if str(e).split(" ", 1)[0] in {f.name for f in dataclasses.fields(TrainConfig)}:
                raise ValueError(f"prior.{level}.train.{e}") from e
            raise

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def hash_dict(self, *sections: str) -> dict[str, Any]:
        """The named sections for a stage hash: options added after runs existed are left out while
        they hold their default, so a finished run stays finished after an upgrade. Options that only
        watch a run or save memory (UNHASHED_TRAIN_OPTIONS) are always left out: turning them on mid-run
        must not restart it."""
        d = self.to_dict()
        out = {}
        for name in sections:
            later = ADDED_LATER.get(name, {})
            options = train_hash_options(d[name]) if name in TRAIN_SECTIONS else d[name]
            unhashed = UNHASHED_OPTIONS.get(name, ())
            out[name] = {k: v for k, v in options.items() if not (k in later and later[k] == v) and k not in unhashed}
            extra = getattr(getattr(self, name), "hash_extra", None)  # what identifies the data beyond its options
            if extra is not None:
                out[name] |= extra()
        return out


PRIOR_DERIVED = ("codebook_size", "height", "width", "n_classes", "cond_shapes")
CLASSIFIER_DERIVED = ("in_channels", "image_size", "num_classes")


def prior_model_config(settings: dict, level: str, levels: list[str], grid_sizes: list[int], codebook_size: int,
                       num_classes: int) -> PixelSNAILConfig:
    """A level's PixelSNAIL config: its `[prior.<level>]` settings plus what the codes fix (grid,
    codebook size, the levels above, the number of classes; 0 classes when class_conditional=false)."""
    if not isinstance(settings, dict):
        raise ValueError(f"[prior.{level}] must be a table of PixelSNAIL settings, got {settings!r}")
    settings = {k: v for k, v in settings.items() if k != "train"}  # the level's training table (prior_train)
    for key in PRIOR_DERIVED:
        if key in settings:
            raise ValueError(f"prior.{level}.{key} is set from the codes and cannot be configured")
    valid = [f.name for f in dataclasses.fields(PixelSNAILConfig) if f.name not in PRIOR_DERIVED]
    valid.append("class_conditional")
    for key in settings:
        if key not in valid and key not in PRIOR_DERIVED:
            raise unknown_key_error(key, valid + ["train"], f"prior.{level}.")
    conditional = settings.pop("class_conditional", True)
    _check(isinstance(conditional, bool), f"prior.{level}.class_conditional must be true or false, got {conditional!r}")
    i = levels.index(level)
    derived = {"codebook_size": codebook_size, "height": grid_sizes[i], "width": grid_sizes[i],
               "n_classes": num_classes if conditional else 0,
               # no labels in the data: nothing to drop (a preset written for labelled data still runs)
               **({"label_dropout": 0.0} if not (conditional and num_classes) else {}),
               "cond_shapes": [[codebook_size, s, s] for s in grid_sizes[:i]]}
    return _model_config(PixelSNAILConfig, {**settings, **derived}, f"prior.{level}.")


def classifier_model_config(settings: dict, in_channels: int, image_size: int, num_classes: int) -> ClassifierConfig:
    """The classifier's config: `[classifier]` plus what the data fixes."""
    if not isinstance(settings, dict):
        raise ValueError(f"[classifier] must be a table of classifier settings, got {settings!r}")
    valid = [f.name for f in dataclasses.fields(ClassifierConfig) if f.name not in (*CLASSIFIER_DERIVED, "crop")]
    for key in settings:
        if key in CLASSIFIER_DERIVED:
            raise ValueError(f"classifier.{key} is set from the data and cannot be configured")
        if key == "crop":
            raise ValueError("classifier.crop is the realism classifier's alone: set train_classifier.realism_crop")
        if key not in valid:
            raise unknown_key_error(key, valid, "classifier.")
    return _model_config(ClassifierConfig, {**settings, "in_channels": in_channels, "image_size": image_size,
                                            "num_classes": num_classes}, "classifier.")


def realism_classifier_config(cfg: "PipelineConfig") -> ClassifierConfig:
    """The realism classifier's config: `[classifier]` for two classes, looking at train_classifier.realism_crop."""
    base = classifier_model_config(cfg.classifier, cfg.vqvae.in_channels, cfg.data.size, num_classes=2)
    try:
        return dataclasses.replace(base, crop=cfg.train_classifier.realism_crop)
    except ValueError as e:
        raise ValueError(str(e).replace("classifier.crop", "train_classifier.realism_crop")) from None


def _model_config(cls, data: dict, where: str):
    try:
        return from_dict(cls, data, where=where)
    except TypeError as e:
        raise ValueError(f"[{where[:-1]}]: {e}") from e
    except ValueError as e:  # PixelSNAILConfig names its checks 'prior.x': add the level
        section = where.split(".")[0]
        raise ValueError(re.sub(rf"\b{section}\.(?!{where[len(section) + 1:]})", where, str(e))) from e


# section -> {option: default} of options added after the first release (see PipelineConfig.hash_dict)
ADDED_LATER: dict[str, dict[str, Any]] = {
    **{section: {"channels_last": True} for section in ("train_vqvae", "train_prior")},
    "train_classifier": {"channels_last": True, "realism_samples": 1000, "realism_crop": 1.0},
    "data": {"cache": True, "cache_dir": "", "workers": 0},
    "vqvae": {"quantizer": "ema", "level_dropout": 0.0},
    "sample": {"format": "npz", "top_p": 0.0, "guidance": 1.0},
    "eval": {"reference_stats": "", "resize": "torch-fidelity", "fd_resamples": 100},
}


# options of TrainConfig that change what is shown while a stage trains, or how much memory it takes,
# never what it trains
UNHASHED_TRAIN_OPTIONS = ("val_every", "image_every", "log_with", "activation_checkpointing")
TRAIN_SECTIONS = ("train_vqvae", "train_prior", "train_classifier")
# "auto" precision and memory format hash as the explicit values every preset had before "auto" existed, so
# a run finished then stays finished when re-run with its preset; what a stage ran with is in its metrics.json
AUTO_HASHES_AS = {"mixed_precision": "bf16", "channels_last": True}


def train_hash_options(options: dict[str, Any]) -> dict[str, Any]:
    """A [train_*] table (or a level's [prior.<level>.train]) as it enters a stage hash."""
    hashed = {k: (AUTO_HASHES_AS[k] if k in AUTO_HASHES_AS and v == "auto" else v)
              for k, v in options.items() if k not in UNHASHED_TRAIN_OPTIONS}
    if hashed.get("ema_decay", 0) > 0:  # averages before the warm-up (train.ema_decay_at) are not reused
        hashed["ema_warmup"] = True
    return hashed


# options of other sections that change where or how fast data is made, never what it is
UNHASHED_OPTIONS = {"data": ("cache", "cache_dir", "workers", "prepare")}


SECTIONS = {f.name: f for f in dataclasses.fields(PipelineConfig)}


def _build(data: dict[str, Any]) -> PipelineConfig:
    kwargs = {}
    for key, value in data.items():
        if key not in SECTIONS:
            raise unknown_key_error(key, list(SECTIONS), "")
        ftype = SECTIONS[key].default_factory().__class__
        if dataclasses.is_dataclass(ftype):
            if not isinstance(value, dict):
                raise ValueError(f"[{key}] must be a table, got {value!r}")
            try:
                kwargs[key] = from_dict(ftype, value, where=f"{key}.")
            except TypeError as e:
                raise ValueError(f"[{key}]: {e}") from e
            except ValueError as e:  # name the section when the dataclass named only its field
                names = {f.name for f in dataclasses.fields(ftype)}
                if str(e).split(" ", 1)[0] in names:
                    raise ValueError(f"{key}.{e}") from e
                raise
        else:
            kwargs[key] = copy.deepcopy(value)
    return PipelineConfig(**kwargs)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("pipelines.presets").iterdir() if p.name.endswith(".toml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    else:
        ref = resources.files("pipelines.presets") / f"{name_or_path}.toml"
        if not ref.is_file():
            raise ValueError(f"unknown preset {name_or_path!r}: choose one of {preset_names()} or give a .toml path")
        text = ref.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"preset {name_or_path}: invalid TOML ({e})") from e


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, list); anything unparseable is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Applies `a.b.c=value` (value as TOML text) to the nested dict, refusing keys the configuration lacks."""
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    key, text = assignment.split("=", 1)
    set_field(data, key.strip(), parse_value(text.strip()), "--set")


def set_field(data: dict[str, Any], key: str, value: Any, source: str = "--set") -> None:
    """data[a][b]... = value for the dotted `key`, refusing keys the configuration does not have (prior.<level>.*
    and classifier.* are checked when the configuration is built). `source` names where the key came from."""
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise unknown_key_error(parts[0], list(SECTIONS), "")
    ftype = SECTIONS[parts[0]].default_factory().__class__
    if dataclasses.is_dataclass(ftype):
        if len(parts) != 2:
            raise ValueError(f"{source} {key}: expected {parts[0]}.<key>")
        names = [f.name for f in dataclasses.fields(ftype)]
        if parts[1] not in names:
            raise unknown_key_error(parts[1], names, f"{parts[0]}.")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"{source} {key}: {p} is not a table")
    node[parts[-1]] = value


class ConfigNote(UserWarning):
    """Something the configuration did on its own that a user should know (printed, not an error)."""


def _levels_of(data: dict[str, Any]) -> list[str] | None:
    strides = data.get("vqvae", {}).get("strides", VQVAEConfig().strides)
    try:
        return level_names(len(strides))
    except (TypeError, ValueError):
        return None  # invalid strides: the VQ-VAE config names the problem


def _fit_prior_sections(data: dict[str, Any], explicit: set[str], where: str) -> None:
    """Prior sections of a preset are written for the preset's own hierarchy. A section naming a level
    that hierarchy lacks is an error; when overrides change the number of levels (a one-level model from
    a two-level preset), the preset's sections for levels that no longer exist are dropped with a note.
    A section the user set (--set prior.<level>...) for a level that does not exist stays an error."""
    levels = _levels_of(data)
    priors = data.get("prior", {})
    if levels is None or not isinstance(priors, dict):
        return
    for level in [lv for lv in priors if lv not in levels and lv not in explicit]:
        del priors[level]
        warnings.warn(f"{where}: [prior.{level}] dropped: the VQ-VAE now has levels {levels}", ConfigNote, stacklevel=3)


def _check_preset_levels(data: dict[str, Any], preset: str) -> None:
    levels = _levels_of(data)
    for level in data.get("prior", {}) if levels is not None else ():
        if level not in levels:
            raise ValueError(f"preset {preset}: [prior.{level}] names level {level!r}, but the preset's VQ-VAE has "
                             f"levels {levels}")


def _apply_overrides(data: dict[str, Any], overrides: list[str], where: str, fields: dict[str, Any]) -> None:
    explicit = set()
    for assignment in overrides:
        apply_override(data, assignment)
        parts = assignment.split("=", 1)[0].strip().split(".")
        if parts[0] == "prior" and len(parts) > 1:
            explicit.add(parts[1])
    for key, value in fields.items():  # command-line flags: typed values, no text to parse
        set_field(data, key, value, "flag for")
    _fit_prior_sections(data, explicit, where)


def resolve_config(preset: str, overrides: list[str] | None = None,
                   fields: dict[str, Any] | None = None) -> PipelineConfig:
    """The preset, then the `--set` overrides (TOML text), then `fields` ({"sample.n": 8}: flags' values)."""
    data = load_preset(preset)
    _check_preset_levels(data, preset)
    _apply_overrides(data, overrides or [], f"preset {preset}", fields or {})
    return _build(data)


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None, where: str = "config",
                     fields: dict[str, Any] | None = None) -> PipelineConfig:
    _apply_overrides(data, overrides or [], where, fields or {})
    return _build(data)
