"""The `vqvae2` console script. What can be refused without torch is refused here, before torch is imported
(importing it takes most of a second or more): a command that would write a run directory another process
is writing, and a preset with overrides that do not resolve (a misspelled key). Everything else goes on to
pipelines.cli, which checks all of it again."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from .runlock import RunDirBusy, RunLock

# commands that do not take the run-directory lock (status and export only read; fid-stats and prepare-data
# write elsewhere, the cache with a lock of its own)
LOCK_FREE = ("status", "export", "fid-stats", "prepare-data")


# commands that resolve a preset from --preset and --set before they train
CONFIGURED = ("run", "train-vqvae")


def _values(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag` (`--flag V` or `--flag=V`), in order."""
    out = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            out.append(arg.split("=", 1)[1])
    return out


def _run_dir(argv: list[str]) -> str | None:
    found = _values(argv, "--run-dir")
    return found[0] if found else None


def busy_refusal(argv: list[str]) -> str | None:
    """The one-line refusal when `argv` would write a run directory that a live process holds, else None.
    Launched runs (accelerate) and help requests go on to the full command, which checks again."""
    if not argv or argv[0].startswith("-") or argv[0] in LOCK_FREE or {"-h", "--help"} & set(argv):
        return None
    if os.environ.get("WORLD_SIZE", "1") != "1":  # a launched rank: the full command agrees across ranks
        return None
    run_dir = _run_dir(argv)
    if run_dir is None:
        return None
    try:
        RunLock(Path(run_dir), argv[0]).refuse_if_held()
    except RunDirBusy as e:
        return f"vqvae2 {argv[0]}: error: {e}"
    return None


def config_refusal(argv: list[str]) -> str | None:
    """The one-line error when the command's --preset and --set overrides do not resolve, else None."""
    if not argv or argv[0] not in CONFIGURED or {"-h", "--help"} & set(argv):
        return None
    presets = _values(argv, "--preset")
    if not presets:
        return None
    from .config import resolve_config  # no torch
    try:
        with warnings.catch_warnings():  # notes are printed once, by the full command
            warnings.simplefilter("ignore")
            resolve_config(presets[-1], _values(argv, "--set"))
    except ValueError as e:
        return f"vqvae2 {argv[0]}: error: {e}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    refusal = busy_refusal(args) or config_refusal(args)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    from .cli import main as cli_main
    return cli_main(argv)
