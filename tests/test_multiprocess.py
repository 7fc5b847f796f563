"""Several processes on CPU (gloo) through `accelerate launch`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main

from conftest import TINY_PRIORS, folder_overrides, make_image_folder

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[1]


def launch(*argv, processes=2):
    # on CPU, accelerate's torchrun launcher (--multi_gpu) starts the processes; they join a gloo group
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "pipelines.cli", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_two_processes_train_identical_replicas_and_sample_like_one(tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on CPU (gloo): train-vqvae and train-prior end with identical weights and codebooks on every rank; sampling is split and gathered without duplicates"""
    folder = make_image_folder(tmp_path / "images", n_per_class=12)
    run = tmp_path / "run"
    sets = []
    for o in [*folder_overrides(folder), *TINY_PRIORS, "train_vqvae.batch_size=2", "train_prior.batch_size=2",
              "sample.n=6", "sample.batch_size=2"]:
        sets += ["--set", o]
    launch("train-vqvae", "--preset", "demo", "--run-dir", str(run), *sets)
    m = json.loads((run / "vqvae" / "metrics.json").read_text())
    assert m["processes"] == 2 and len(set(m["rank_hashes"])) == 1, m["rank_hashes"]
    assert main(["extract-codes", "--run-dir", str(run)]) == 0
    for level in ("top", "bottom"):
        launch("train-prior", "--run-dir", str(run), "--level", level)
        p = json.loads((run / f"prior-{level}" / "metrics.json").read_text())
        assert p["processes"] == 2 and len(set(p["rank_hashes"])) == 1
    launch("sample", "--run-dir", str(run), "--seed", "3")
    two = np.load(run / "samples" / "samples.npz")
    assert two["arr_0"].shape[0] == 6
    assert main(["sample", "--run-dir", str(run), "--seed", "3"]) == 0  # one process
    one = np.load(run / "samples" / "samples.npz")
    for key in ("arr_0", "codes_top", "codes_bottom", "labels"):
        assert np.array_equal(one[key], two[key]), key


def test_launched_commands_end_their_process_group(tmp_path):
    """Each rank ends the gloo group itself when a command returns, after a clean end and after an error:
    a group left to interpreter shutdown can abort a rank (SIGABRT, "terminate called without an active
    exception"), which the launcher reports as a failed run"""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys, torch.distributed as dist\n"
        "from pipelines.cli import main\n"
        "ok = main(['status', '--run-dir', sys.argv[1]])\n"
        "lines = [f'after-ok {dist.is_initialized()} {ok}']\n"
        "bad = main(['sample', '--run-dir', sys.argv[2]])\n"
        "lines.append(f'after-error {dist.is_initialized()} {bad}')\n"
        "open(os.path.join(sys.argv[3], 'rank' + os.environ['RANK']), 'w').write('\\n'.join(lines))\n")
    (tmp_path / "empty").mkdir()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
           str(tmp_path / "empty"), str(tmp_path / "missing"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for rank in (0, 1):  # one file per rank: the ranks' stdout interleaves
        ok, error = (tmp_path / f"rank{rank}").read_text().splitlines()
        assert ok == "after-ok False 0", (rank, ok)
        assert error.startswith("after-error False ") and not error.endswith(" 0"), (rank, error)
