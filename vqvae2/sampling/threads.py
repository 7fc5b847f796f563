"""How the samplers use CPU threads: small priors on one intra-op thread, compiled sampling of a batch in
shards, one Python thread each. Every setting is restored when the call returns; no pool outlives a call."""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

# a row pass of at least this many values (batch x width x channels) is worth torch's thread pool;
# below it, waking the pool for each tiny op costs more than the op (docs/sampling.md)
THREADED_ROW_VALUES = 65536


def wide(row_values: int) -> bool:
    """Whether row passes of `row_values` values (batch x width x channels) count as wide."""
    return row_values >= THREADED_ROW_VALUES


@contextlib.contextmanager
def threads_for(device: torch.device, row_values: int):
    """One intra-op CPU thread inside for a prior whose row passes are small; torch's threads otherwise."""
    if device.type != "cpu" or wide(row_values):
        yield
        return
    with one_thread():
        yield


@contextlib.contextmanager
def one_thread():
    """torch.set_num_threads(1) inside (OpenMP keeps the count per OS thread), the count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def shards(device: torch.device, n: int) -> list[tuple[int, int]]:
    """[lo, hi) batch slices: one per CPU thread when the batch has at least two samples per thread,
    otherwise the whole batch. A compiled call runs without the GIL, so the shards run side by side."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or n < 2 * threads:
        return [(0, n)]
    bounds = [round(i * n / threads) for i in range(threads + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run_sharded(fn: Callable, parts: list[tuple[int, int]]) -> list:
    """[fn(lo, hi, first) for each part], each in its own thread on one intra-op thread without grad;
    `first` is True for the first part only. The pool is shut down before returning."""
    def one(i: int):
        with one_thread(), torch.no_grad():
            return fn(*parts[i], i == 0)

    with ThreadPoolExecutor(len(parts), thread_name_prefix="vqvae2-sampler") as pool:
        return list(pool.map(one, range(len(parts))))
