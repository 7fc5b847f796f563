"""`vqvae2 run` checks before its first training step that every stage it will run can run,
and unlabelled folders (FFHQ, CelebA-HQ) run end to end: unconditional priors, realism rejection (none at acceptance 1)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.cli import main

from conftest import TINY_EVAL, TINY_PRIORS, TINY_VQVAE, write_inception_weights


def unlabelled_folder(root, n=40, size=16, seed=0):
    """Images directly in the folder, no class subfolders: what an FFHQ download looks like."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"{i:05d}.png")
    return root


def ffhq_like(folder, *extra):
    """The ffhq256 preset shrunk to a tiny unlabelled folder."""
    overrides = [f"data.root='{folder}'", "data.size=16", "data.val_fraction=0.25", *TINY_VQVAE, *TINY_PRIORS,
                 *TINY_EVAL, *extra]
    argv = []
    for o in overrides:
        argv += ["--set", o]
    return argv


@pytest.mark.reliability
def test_a_run_that_cannot_evaluate_fails_before_any_training(tmp_path, capsys):
    """`vqvae2 run` on an unlabelled folder with the domain extractor, or Inception weights missing -> error naming the cause and the fix (--until samples), before any training"""
    folder = unlabelled_folder(tmp_path / "faces")
    run = tmp_path / "run"
    base = ["run", "--preset", "ffhq256", "--run-dir", str(run)]
    assert main([*base, *ffhq_like(folder, "eval.feature_extractor='domain'")]) == 2
    err = capsys.readouterr().err
    assert "has no class labels" in err and "--until samples" in err and "eval.feature_extractor='inception'" in err
    missing = tmp_path / "nowhere" / "inception.pth"
    assert main([*base, *ffhq_like(folder, f"eval.inception_weights='{missing}'")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--until samples" in err
    assert not (run / "vqvae").exists()  # nothing trained


@pytest.mark.reliability
def test_missing_data_fails_before_any_training(tmp_path, capsys):
    """`vqvae2 run` with a missing data root or missing Fashion-MNIST files -> error naming the path, before any training"""
    run = tmp_path / "run"
    assert main(["run", "--preset", "fashion32", "--run-dir", str(run), "--set",
                 f"data.root='{tmp_path / 'no-fmnist'}'"]) == 2
    assert "no-fmnist" in capsys.readouterr().err
    assert main(["run", "--preset", "ffhq256", "--run-dir", str(run), "--set",
                 f"data.root='{tmp_path / 'no-faces'}'"]) == 2
    assert "no-faces" in capsys.readouterr().err
    assert not (run / "vqvae").exists()


def test_unlabelled_folder_runs_to_samples_with_unconditional_priors(tmp_path):
    folder = unlabelled_folder(tmp_path / "faces")
    run = tmp_path / "run"
    # the domain extractor cannot work here, but --until samples never evaluates
    assert main(["run", "--preset", "ffhq256", "--run-dir", str(run), "--until", "samples",
                 *ffhq_like(folder, "eval.feature_extractor='domain'")]) == 0
    for level in ("top", "bottom"):
        assert json.loads((run / f"prior-{level}" / "model.json").read_text())["config"]["n_classes"] == 0
    with np.load(run / "samples" / "samples.npz") as s:
        assert (s["labels"] == -1).all()


def test_unlabelled_folder_runs_end_to_end_with_inception_and_realism_rejection(tmp_path, monkeypatch, capsys):
    """An unlabelled folder runs every stage: a realism classifier (real against generated) and rejection by
    its density ratio at every acceptance rate, reported like class rejection"""
    import torch
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    folder = unlabelled_folder(tmp_path / "faces")
    weights = write_inception_weights(tmp_path / "inception.pth", seed=7)
    run = tmp_path / "run"
    assert main(["run", "--preset", "ffhq256", "--run-dir", str(run),
                 *ffhq_like(folder, f"eval.inception_weights='{weights}'", "eval.acceptance_rates=[1.0, 0.5]",
                            "eval.n_samples=4", "eval.n_real=4", "eval.batch_size=4", "train_classifier.realism_samples=8",
                            "eval.fd_resamples=0")]) == 0  # intervals: tests/test_metrics.py
    assert "a realism classifier (real against generated)" in capsys.readouterr().out
    summary = json.loads((run / "classifier" / "metrics.json").read_text())
    assert summary["realism"] and summary["classifiers"]["realism"]["generated_images"] == 8
    # real = training images through the VQ-VAE; plain cross-entropy, so its density ratios are not flattened
    assert summary["classifiers"]["realism"]["real"] == "reconstructions"
    assert summary["classifiers"]["realism"]["mixup"] == 0.0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert [r["acceptance_rate"] for r in report["rows"]] == [1.0, 0.5]
    assert report["provenance"]["rejection"].startswith("realism: the data has no class labels; a classifier of "
                                                        "real (training images reconstructed by the VQ-VAE)")
    assert set(report["provenance"]["mean_classifier_prob_of_kept"]) == {"1", "0.5"}
    assert report["fd_label"].startswith("FD-inception (non-standard weights")
    from pipelines.artifacts import RunDir
    from pipelines.status import DONE, run_status
    assert all(s["state"] == DONE for s in run_status(RunDir(run))["stages"])
    capsys.readouterr()
    assert main(["run", "--run-dir", str(run)]) == 0 and "[classifier] up to date" in capsys.readouterr().out
    # at acceptance 1 alone nothing uses the realism classifier: the run skips its stage, and evaluation keeps
    # the first n candidates and reports no rejection (the ffhq presets' setting)
    assert main(["run", "--run-dir", str(run), "--set", "eval.acceptance_rates=[1.0]"]) == 0
    out = capsys.readouterr().out
    assert "[classifier] skipped: the data has no class labels and every eval.acceptance_rates is 1" in out
    assert "[classifier] up to date" not in out
    report = json.loads((run / "eval" / "report.json").read_text())
    assert [r["acceptance_rate"] for r in report["rows"]] == [1.0]
    assert report["provenance"]["rejection"].startswith("none: the data has no class labels")
    assert "rejection_classifier_hash" not in report["provenance"]
    stages = run_status(RunDir(run))["stages"]
    assert "classifier" not in [s["stage"] for s in stages] and all(s["state"] == DONE for s in stages)
    # the domain extractor needs class labels: `vqvae2 evaluate` says so in one line, as `vqvae2 run` does
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(run), "--set", "eval.feature_extractor='domain'"]) == 2  # a usage error
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqvae2 evaluate: error: evaluation uses the domain extractor") and "\n" not in err
    assert "has no class labels" in err and "eval.feature_extractor='inception'" in err
    assert json.loads((run / "eval" / "report.json").read_text())["rows"] == report["rows"]  # left as it was


def test_a_realism_classifier_that_will_not_train_is_not_checked(tmp_path):
    """Data without labels at acceptance 1 alone trains no realism classifier, so its fp16 setting is no error
    on a CPU; with a rate below 1 it trains and is refused"""
    from pipelines.config import resolve_config
    from pipelines.preflight import PreflightError, preflight
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed where a GPU is visible")
    folder = unlabelled_folder(tmp_path / "faces")
    overrides = ffhq_like(folder, "train_classifier.mixed_precision='fp16'")[1::2]  # the values after each --set
    found = preflight(resolve_config("ffhq256", [*overrides, "eval.acceptance_rates=[1.0]"]), "classifier")
    assert found["num_classes"] == 0 and "classifier" in found["groups"]  # run_all says it skips the stage
    with pytest.raises(PreflightError, match=r"train_classifier\.mixed_precision='fp16'"):
        preflight(resolve_config("ffhq256", [*overrides, "eval.acceptance_rates=[1.0, 0.5]"]), "classifier")


def test_fp16_without_a_gpu_is_refused_naming_the_section_that_sets_it(tmp_path):
    """A prior's own [prior.<level>.train] table is what its stage trains with, so its precision is
    the one checked; fp16 with no GPU is an error naming that table."""
    from pipelines.config import resolve_config
    from pipelines.preflight import PreflightError, _check_precision
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed where a GPU is visible")
    cfg = resolve_config("demo", ["prior.bottom.train.mixed_precision='fp16'"])
    with pytest.raises(PreflightError, match=r"prior\.bottom\.train\.mixed_precision='fp16'"):
        _check_precision(cfg, ["priors"])
    _check_precision(cfg, ["vqvae"])  # the priors do not run: nothing to refuse
    cfg = resolve_config("demo", ["train_prior.mixed_precision='fp16'", "prior.top.train.mixed_precision='bf16'"])
    with pytest.raises(PreflightError, match=r"train_prior\.mixed_precision"):  # the bottom prior still uses it
        _check_precision(cfg, ["priors"])


def test_a_misspelled_key_fails_before_torch_is_imported(tmp_path, capsys):
    """`vqvae2 run --preset demo --set prior.top.chanels=16` (the console script) -> the full command's one line,
    naming the key and the closest valid ones, before torch is imported and before anything is made"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.cli import main
    from pipelines.command import config_refusal
    repo = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    argv = ["run", "--preset", "demo", "--run-dir", str(run), "--set", "prior.top.chanels=16"]
    script = "import sys; from pipelines.command import main; code = main(sys.argv[1:]); print(code, 'torch' in sys.modules)"
    probe = subprocess.run([sys.executable, "-c", script, *argv], cwd=repo, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(repo)})
    assert probe.stdout.split() == ["2", "False"], probe.stdout + probe.stderr
    assert "unknown key 'prior.top.chanels'; did you mean 'channels'" in probe.stderr
    assert main(argv) == 2 and capsys.readouterr().err.strip() == probe.stderr.strip()  # the same line as the full CLI
    assert not run.exists()
    assert config_refusal(["run", "--preset", "demo", "--set", "prior.top.channels=16"]) is None
    assert config_refusal(["sample", "--run-dir", str(run)]) is None  # no preset: the full command checks
