import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines.artifacts import RunDir
from pipelines.cli import main
from pipelines.codes import CodesDataset

from conftest import TINY_PRIORS, folder_overrides, make_image_folder


def _cli(*args, overrides=()):
    argv = list(args)
    for o in overrides:
        argv += ["--set", o]
    return main(argv)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage2")
    run = root / "run"
    assert _cli("run", "--preset", "demo", "--run-dir", str(run), "--until", "samples",
                overrides=[*folder_overrides(make_image_folder(root / "images")), *TINY_PRIORS]) == 0
    return RunDir(run)


def test_tiny_end_to_end_run_produces_codes_priors_samples_and_grid(trained_run):
    run = trained_run
    meta = json.loads((run.codes / "codes.json").read_text())
    assert meta["levels"] == ["top", "bottom"] and meta["grid_sizes"] == [4, 8] and meta["num_classes"] == 2
    top = np.load(run.codes / "train" / "top.npy", mmap_mode="r")
    assert top.dtype == np.uint16 and top.shape == (meta["n"]["train"], 4, 4)
    assert np.load(run.codes / "val" / "labels.npy").shape == (meta["n"]["val"],)
    for level in ("top", "bottom"):
        m = json.loads((run.prior(level) / "metrics.json").read_text())
        assert {"nll_bits", "accuracy", "steps", "codes_per_second"} <= set(m) and m["steps"] == 4
        assert 0 < m["nll_bits"] < 8  # log2(16) = 4 bits for a uniform guess over 16 codes
    s = np.load(run.samples / "samples.npz")
    assert s["arr_0"].shape == (6, 16, 16, 3) and s["arr_0"].dtype == np.uint8  # NHWC, what FID tools read
    assert s["codes_top"].shape == (6, 4, 4) and s["codes_bottom"].shape == (6, 8, 8)
    assert s["labels"].tolist() == [0, 1, 0, 1, 0, 1]
    assert (run.samples / "grid.png").is_file()


def test_a_second_run_skips_finished_stages(trained_run, capsys):
    assert _cli("run", "--run-dir", str(trained_run.root), "--until", "priors") == 0
    out = capsys.readouterr().out
    assert "[vqvae] up to date" in out and "[codes] up to date" in out and "[prior-bottom] up to date" in out


def test_sample_command_with_class_and_png_dir(trained_run, tmp_path):
    pngs = tmp_path / "pngs"
    assert _cli("sample", "--run-dir", str(trained_run.root), "--n", "3", "--class", "1", "--seed", "7",
                "--sampler", "reference", "--png-dir", str(pngs)) == 0
    s = np.load(trained_run.samples / "samples.npz")
    assert s["labels"].tolist() == [1, 1, 1] and int(s["seed"]) == 7
    assert len(list(pngs.glob("*.png"))) == 3
    # the cached sampler (the default) draws exactly the same codes
    ref = s["codes_bottom"].copy()
    assert _cli("sample", "--run-dir", str(trained_run.root), "--n", "3", "--class", "1", "--seed", "7",
                "--sampler", "cached") == 0
    assert np.array_equal(np.load(trained_run.samples / "samples.npz")["codes_bottom"], ref)


def test_sample_formats_give_the_same_images(trained_run):
    run = trained_run.root
    assert _cli("sample", "--run-dir", str(run), "--n", "5", "--batch-size", "2", "--seed", "4") == 0
    arr = np.load(trained_run.samples / "samples.npz")["arr_0"]
    assert arr.shape == (5, 16, 16, 3) and not (trained_run.samples / "chunks").exists()
    assert _cli("sample", "--run-dir", str(run), "--n", "5", "--batch-size", "2", "--seed", "4", "--format", "png") == 0
    pngs = sorted((trained_run.samples / "png").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    assert all(np.array_equal(np.asarray(Image.open(p)), a) for p, a in zip(pngs, arr))


def test_killed_sampling_resumes_with_only_the_missing_batches(trained_run, monkeypatch):
    import pipelines.sample as sample
    run = trained_run.root
    argv = ("sample", "--run-dir", str(run), "--n", "7", "--batch-size", "2", "--seed", "5")
    assert _cli(*argv) == 0
    whole = np.load(trained_run.samples / "samples.npz")["arr_0"]
    real_batch, calls = sample.sample_batch, []

    def dying_batch(*a, **k):  # the third batch never finishes: as if the process were killed
        calls.append(a[2])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_batch(*a, **k)
    monkeypatch.setattr(sample, "sample_batch", dying_batch)
    assert _cli(*argv) == 130
    assert len(list((trained_run.samples / "chunks").glob("chunk-*.npz"))) == 2
    calls.clear()
    monkeypatch.setattr(sample, "sample_batch", lambda *a, **k: calls.append(a[2]) or real_batch(*a, **k))
    assert _cli(*argv) == 0
    assert calls == [2, 3]  # batches 0 and 1 were on disk
    assert np.array_equal(np.load(trained_run.samples / "samples.npz")["arr_0"], whole)


def test_one_level_trains_with_its_own_settings(trained_run, tmp_path, capsys):
    """[prior.<level>.train] overrides [train_prior] for that level only: its stage trains again with its
    own steps while the other level stays up to date; an option that only watches a run (val_every)
    restarts nothing; a bad key is an error naming the level's table."""
    run = tmp_path / "run"
    shutil.copytree(trained_run.root, run)
    capsys.readouterr()
    assert _cli("run", "--run-dir", str(run), "--until", "priors", overrides=["prior.bottom.train.steps=6"]) == 0
    assert "[prior-top] up to date" in capsys.readouterr().out
    steps = {lv: json.loads((run / f"prior-{lv}" / "metrics.json").read_text())["steps"] for lv in ("top", "bottom")}
    assert steps == {"top": 4, "bottom": 6}
    assert _cli("run", "--run-dir", str(run), "--until", "priors", overrides=["prior.bottom.train.val_every=2"]) == 0
    assert "[prior-bottom] up to date" in capsys.readouterr().out
    assert _cli("run", "--run-dir", str(run), "--until", "priors", overrides=["prior.bottom.train.stepz=3"]) == 2
    assert "prior.bottom.train.stepz" in capsys.readouterr().err


@pytest.mark.reliability
def test_bad_sampling_requests_are_clear_errors(trained_run, capsys):
    """--class outside the model's classes, --n 0, unknown --level -> error naming the value and what is accepted"""
    assert _cli("sample", "--run-dir", str(trained_run.root), "--class", "5") == 2
    assert "--class 5 is outside the model's classes [0, 1]" in capsys.readouterr().err
    assert _cli("sample", "--run-dir", str(trained_run.root), "--n", "0") == 2
    assert "sample.n must be >= 1" in capsys.readouterr().err
    assert _cli("train-prior", "--run-dir", str(trained_run.root), "--level", "middle") == 2
    assert "--level 'middle'" in capsys.readouterr().err


@pytest.mark.reliability
def test_codes_of_another_vqvae_are_refused(trained_run, tmp_path):
    """Codes extracted with another VQ-VAE's weights -> refused, saying to re-run extract-codes"""
    shutil.copytree(trained_run.root, tmp_path / "copy")
    trained_run = RunDir(tmp_path / "copy")
    meta_path = trained_run.codes / "codes.json"
    meta = json.loads(meta_path.read_text())
    meta["vqvae_hash"] = "0123456789abcdef"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="extracted with VQ-VAE weights 0123456789abcdef"):
        CodesDataset(trained_run, "train", "bottom")
    assert _cli("train-prior", "--run-dir", str(trained_run.root), "--level", "top", "--force") == 2


def test_stages_with_different_precisions_in_one_process_and_force(tmp_path):
    """bf16 VQ-VAE then fp32 priors in one `run` (accelerate's global state is reset between them);
    `run --force` starts again even over a stale state saved for another configuration."""
    run = tmp_path / "run"
    overrides = [*folder_overrides(make_image_folder(tmp_path / "images")), *TINY_PRIORS,
                 "train_vqvae.mixed_precision='bf16'"]
    assert _cli("run", "--preset", "demo", "--run-dir", str(run), "--until", "priors", overrides=overrides) == 0
    assert json.loads((run / "vqvae" / "metrics.json").read_text())["mixed_precision"] == "bf16"
    assert (run / "prior-bottom" / "metrics.json").is_file()
    # a state left by another configuration is refused without --force, and cleared with it
    (run / "vqvae" / "metrics.json").unlink()
    progress = run / "vqvae" / "state" / "progress.json"
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "config_hash": "stale"}))
    assert _cli("train-vqvae", "--run-dir", str(run)) == 2
    assert _cli("run", "--run-dir", str(run), "--until", "vqvae", "--force") == 0
    assert (run / "vqvae" / "metrics.json").is_file()
