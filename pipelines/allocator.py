"""Keep freed memory in the process, so that a training step does not page-fault its tensors in again.

glibc's malloc serves a large request (above 128 KiB at first, up to 32 MiB as it adapts) with a
fresh mmap and returns it to the kernel on free, and it trims the top of the heap once more than
twice that is free there. A training step frees and re-allocates the same large activations every
step, so every step touches fresh pages and pays a page fault per 4 KiB (benchmarks/results/kernels.json:
a prior's training step with and without).

`keep_freed_memory()` tells malloc to serve every request from its heap (M_MMAP_MAX = 0) and never
to give the heap's top back (M_TRIM_THRESHOLD = -1). The process then holds on to its peak memory,
as PyTorch's GPU caching allocator does. It is a process-wide setting, so only entry points call it (the
`vqvae2` command, the benchmarks), never the library; set VQVAE2_KEEP_FREED_MEMORY=0 to leave malloc as it is.
Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
ENV = "VQVAE2_KEEP_FREED_MEMORY"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Applies the malloc settings once per process; True when they are in effect."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl and others have no such mallopt parameters
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # -1 for the trim threshold is documented (mallopt(3)) as "never trim"
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
