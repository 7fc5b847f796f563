"""What a training stage runs with on this machine: precision and memory format, chosen from what the
device does well (docs/performance.md has the measurements behind the table).

| device                                  | mixed_precision "auto" | channels_last "auto" |
|-----------------------------------------|------------------------|----------------------|
| CUDA GPU with bf16                      | bf16                   | on                   |
| CUDA GPU without bf16                   | no (fp32)              | on                   |
| CPU with avx512_bf16 or AMX             | bf16                   | on                   |
| CPU with AVX-512, no native bf16        | no (fp32)              | off                  |
| CPU with AVX2 or less                   | no (fp32)              | off                  |

Without native bf16, oneDNN emulates bf16 convolutions through fp32 at many times the cost, and its
AVX2 channels-last kernels gain nothing here and hold a known fault (benchmarks/onednn_fault.py).
The ISA is the one this process may use: ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA restrict it.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass

import torch

AUTO = "auto"
# the demo's VQ-VAE training step under the AVX2 restriction, bf16 against fp32 in the same layout
# (channels-last / NCHW: benchmarks/results/demo_time-avx2.json, vqvae_step)
EMULATED_BF16_SLOWDOWN = "12-14x"


@dataclass(frozen=True)
class Capability:
    """What the device offers this process."""

    device: str  # "cpu" or "cuda"
    isa: str  # torch's CPU capability in use ("AVX512", "AVX2", "DEFAULT", ...), or the GPU's name
    native_bf16: bool  # bf16 arithmetic in hardware that the kernels of this process may use
    avx512: bool  # oneDNN may use AVX-512 kernels (CPU only)

    def describe(self) -> str:
        if self.device == "cuda":
            return f"CUDA {self.isa}" + (" with bf16" if self.native_bf16 else " without bf16")
        return f"CPU {self.isa}" + (" with native bf16" if self.native_bf16 else " without native bf16")


def _onednn_allows(prefix_ok: tuple[str, ...]) -> bool:
    """Whether ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA), when set, allows an ISA whose
    name contains one of `prefix_ok`."""
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    return isa in ("ALL", "DEFAULT", "") or any(p in isa for p in prefix_ok)


def detect(device: torch.device | str | None = None) -> Capability:
    """The capability of `device` (default: CUDA when visible, else the CPU)."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return Capability("cuda", torch.cuda.get_device_name(device), torch.cuda.is_bf16_supported(), False)
    isa = torch.backends.cpu.get_cpu_capability()  # honours ATEN_CPU_CAPABILITY
    aten_avx512 = isa.upper().startswith("AVX512")
    hardware_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    avx512 = aten_avx512 and _onednn_allows(("AVX512", "AVX10"))
    native = avx512 and hardware_bf16 and _onednn_allows(("BF16", "AMX", "FP16", "AVX10"))
    return Capability("cpu", isa, native, avx512)


@dataclass(frozen=True)
class Settings:
    """The resolved precision and memory format of one training stage, as recorded in its outputs."""

    mixed_precision: str  # "no", "bf16" or "fp16"
    channels_last: bool
    requested: dict  # the configuration's values, "auto" included
    device: str  # Capability.describe()

    def describe(self) -> str:
        precision = "fp32" if self.mixed_precision == "no" else self.mixed_precision
        return (f"{precision}, channels_last {'on' if self.channels_last else 'off'} on {self.device} "
                f"(requested mixed_precision={self.requested['mixed_precision']!r}, "
                f"channels_last={self.requested['channels_last']!r})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def choose(mixed_precision: str, channels_last: bool | str, cap: Capability) -> Settings:
    """The table above; explicit values are kept as given."""
    fast_bf16 = cap.native_bf16
    precision = ("bf16" if fast_bf16 else "no") if mixed_precision == AUTO else mixed_precision
    layout = (cap.device == "cuda" or fast_bf16) if channels_last == AUTO else bool(channels_last)
    return Settings(precision, layout, {"mixed_precision": mixed_precision, "channels_last": channels_last},
                    cap.describe())


def warn_if_slow(settings: Settings, cap: Capability, where: str) -> None:
    """An explicit bf16 on a CPU that emulates it runs, with a warning that says what it costs."""
    if cap.device == "cpu" and settings.mixed_precision == "bf16" and not cap.native_bf16:
        warnings.warn(f"{where}.mixed_precision='bf16' on a CPU without native bf16 ({cap.isa}): bf16 is emulated "
                      f"there and measured {EMULATED_BF16_SLOWDOWN} slower than fp32; set it to 'auto' or 'no'",
                      SlowSettingWarning, stacklevel=3)


class SlowSettingWarning(UserWarning):
    """An explicit setting that this machine runs much slower than the alternative."""


def resolve(mixed_precision: str, channels_last: bool | str, recorded: dict | None = None,
            device: torch.device | str | None = None, where: str = "train") -> Settings:
    """The settings a stage runs with: those recorded by the state it resumes (a resumed stage keeps
    the precision it started with), else the policy's choice for this device."""
    cap = detect(device)
    if recorded and recorded.get("requested") == {"mixed_precision": mixed_precision, "channels_last": channels_last}:
        settings = Settings(recorded["mixed_precision"], bool(recorded["channels_last"]), recorded["requested"],
                            recorded.get("device", cap.describe()))
    else:
        settings = choose(mixed_precision, channels_last, cap)
    warn_if_slow(settings, cap, where)
    return settings
