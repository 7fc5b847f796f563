"""How long a second writer waits to be refused: one process holds RUN's lock while the `vqvae2` console
script (`vqvae2 sample --run-dir RUN`) is started `--repeats` times; the median wall time from process start
to exit, beside the time to import pipelines.cli (torch) that the refusal skips.

    python benchmarks/lock_refusal.py --out bench-out/lock_refusal.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

from pipelines.runlock import RunLock


def _wall(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - t0, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    result = {"machine": describe(calibrated=False)}
    with tempfile.TemporaryDirectory() as tmp, RunLock(Path(tmp), "train-vqvae (held by the benchmark)"):
        refusals = []
        for _ in range(args.repeats):
            seconds, done = _wall(["vqvae2", "sample", "--run-dir", tmp, "--n", "4"])
            if done.returncode != 2 or "is being written by" not in done.stderr:
                raise SystemExit(f"expected a refusal, got exit {done.returncode}: {done.stderr[-500:]}")
            refusals.append(seconds)
    imports = [_wall([sys.executable, "-c", "import pipelines.cli"])[0] for _ in range(3)]
    result.update(refusal_seconds_median=statistics.median(refusals), refusal_seconds=refusals,
                  import_cli_seconds_median=statistics.median(imports), message=done.stderr.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
