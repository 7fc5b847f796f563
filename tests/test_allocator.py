"""pipelines/allocator.py: freed memory stays in the process (glibc), and the opt-out leaves malloc alone."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# allocates 64 MiB, touches every page, frees it, and reports the resident set before and after the free
PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pipelines.allocator import keep_freed_memory
applied = keep_freed_memory()
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
n = 64 << 20
b = bytearray(n)
b[::4096] = b"\x01" * (n // 4096)
held = resident()
del b
print(json.dumps({"applied": applied, "released": held - resident()}))
"""


def probe(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VQVAE2_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["VQVAE2_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"),
                           reason="the allocator settings are glibc/Linux only")


@glibc
def test_freed_memory_stays_in_the_process():
    kept = probe(None)
    assert kept["applied"] is True
    assert kept["released"] < 8 << 20, kept  # the 64 MiB stay resident for the next step


@glibc
def test_the_opt_out_leaves_malloc_as_it_is():
    default = probe("0")
    assert default["applied"] is False
    assert default["released"] > 56 << 20, default  # plain glibc gives the mmap'd block straight back


def test_keep_freed_memory_is_applied_once(monkeypatch):
    from pipelines import allocator
    calls = []
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_apply", lambda: calls.append(1) or True)
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert calls == [1]


def test_the_command_applies_it_and_library_calls_do_not(monkeypatch, tmp_path, tiny_overrides):
    """The `vqvae2` command sets malloc up before its first large tensor; a stage called from Python (the
    training loop included) leaves the process's allocator alone."""
    import pipelines.cli as cli
    from pipelines import allocator
    from pipelines.artifacts import RunDir
    from pipelines.config import resolve_config
    from pipelines.stage1 import train_vqvae
    seen = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: seen.append("cli"))
    cli.main(["status", "--run-dir", str(tmp_path / "none")])
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_apply", lambda: seen.append("library") or True)
    train_vqvae(resolve_config("demo", tiny_overrides), RunDir(tmp_path / "run"))
    assert seen == ["cli"] and (tmp_path / "run" / "vqvae" / "metrics.json").is_file()
