"""The `vqvae2` console script. A command that would write a run directory another process is writing is
refused here, before torch is imported (importing it takes most of a second or more); everything else
goes on to pipelines.cli."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .runlock import RunDirBusy, RunLock

# commands that do not take the run-directory lock (status and export only read; fid-stats and prepare-data
# write elsewhere, the cache with a lock of its own)
LOCK_FREE = ("status", "export", "fid-stats", "prepare-data")


def _run_dir(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--run-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--run-dir="):
            return arg.split("=", 1)[1]
    return None


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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    refusal = busy_refusal(args)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    from .cli import main as cli_main
    return cli_main(argv)
