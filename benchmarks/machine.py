"""Which machine a benchmark ran on, and how fast its fp32 and bf16 matrix products were while it ran.

    python benchmarks/machine.py            # prints the description as JSON

Speed ratios such as `bf16_speedup` depend on the CPU more than on this project's code: the same
code gave a VQ-VAE bf16 speed-up of 1.52x on a 2-core AMD EPYC (bf16 by AVX-512 dot products) and
1.34-1.74x on a 2-core Intel Xeon with AMX tiles. And on a shared virtual machine the arithmetic units
slow down for seconds at a time: on that Xeon a 2048^3 bf16 product took 8-32 ms over ten processes
(medians of 15 each, a /tmp script), and the calibrations of one afternoon's benchmark runs gave 117-251 GFLOP/s in
fp32 and 335-1,031 in bf16. So every speed benchmark records `describe()` before it times anything and
`calibrate()` after, and a ratio is read beside them.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import torch

# CPU flags that decide what fp32 and bf16 arithmetic runs on (Linux /proc/cpuinfo names)
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "hypervisor")


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def calibrate(size: int = 1024, repeats: int = 7) -> dict:
    """GFLOP/s of a size^3 matrix product in fp32 and in bf16 on torch's threads (median of `repeats`)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up (first-call set-up of the kernel)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t0)
        out[f"matmul_gflops_{name}"] = 2 * size ** 3 / statistics.median(times) / 1e9
    out["matmul_bf16_over_fp32"] = out["matmul_gflops_bf16"] / out["matmul_gflops_fp32"]
    out["size"], out["repeats"] = size, repeats
    return out


def describe(calibrated: bool = True) -> dict:
    """CPU model, logical CPUs, torch's threads and CPU capability, the flags of FLAGS it has, and (with
    `calibrated`) `calibrate()` now."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    out = {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id", ""),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": [f for f in FLAGS if f in flags],
        # restrictions to an older CPU class (e.g. AVX2 on an AVX-512 machine), when set
        "isa_limits": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ},
    }
    if calibrated:
        out["calibration"] = calibrate()
    return out


if __name__ == "__main__":
    print(json.dumps(describe(), indent=2))


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    """The median of `repeats` timings of fn() after `warmup` calls: what every speed figure here reports."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
