"""The original one-level VQ-VAE: configs that reshape a preset, and a run through every stage."""
import json

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.config import ConfigNote, resolve_config

from conftest import TINY_EVAL, TINY_PRIORS, folder_overrides, make_image_folder

ONE_LEVEL = ["vqvae.strides=[4]", "vqvae.quantizer='codebook_loss'"]
BOTTOM_PRIOR = [o for o in TINY_PRIORS if not o.startswith("prior.top.")]


def _argv(command, run, overrides, preset="demo"):
    argv = [command, "--run-dir", str(run)] + (["--preset", preset] if preset else [])
    for o in overrides:
        argv += ["--set", o]
    return argv


def test_a_two_level_preset_reshaped_to_one_level_drops_the_missing_levels_sections():
    with pytest.warns(ConfigNote, match=r"\[prior.top\] dropped: the VQ-VAE now has levels \['bottom'\]"):
        cfg = resolve_config("demo", ["vqvae.strides=[4]"])
    assert cfg.vqvae.levels == ["bottom"] and list(cfg.prior) == ["bottom"]
    assert list(resolve_config("fashion32-vqvae1").prior) == ["bottom"]


@pytest.mark.reliability
def test_a_prior_section_for_a_missing_level_is_an_error_naming_the_levels(tmp_path, capsys):
    """A prior section set for a level the VQ-VAE does not have (or a preset naming one) -> error naming the levels that exist"""
    run = tmp_path / "run"
    assert main(_argv("train-vqvae", run, ["vqvae.strides=[4]", "prior.top.channels=8"])) == 2
    assert "prior.top: unknown level 'top'; the VQ-VAE's levels are ['bottom']" in capsys.readouterr().err
    preset = tmp_path / "mine.toml"
    preset.write_text('[vqvae]\nstrides = [2, 4]\n\n[prior.middle]\nchannels = 8\n')
    assert main(_argv("train-vqvae", run, [], preset=str(preset))) == 2
    assert "[prior.middle] names level 'middle', but the preset's VQ-VAE has levels ['top', 'bottom']" in \
        capsys.readouterr().err
    assert not run.exists()


def test_one_level_codebook_loss_run_goes_through_every_stage(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", n_per_class=20)
    run = tmp_path / "run"
    overrides = [*folder_overrides(folder), *ONE_LEVEL, *BOTTOM_PRIOR, *TINY_EVAL]
    assert main(_argv("run", run, overrides)) == 0
    assert "[prior.top] dropped" in capsys.readouterr().err
    codes = json.loads((run / "codes" / "codes.json").read_text())
    assert codes["levels"] == ["bottom"] and codes["grid_sizes"] == [4]
    assert json.loads((run / "vqvae" / "model.json").read_text())["config"]["quantizer"] == "codebook_loss"
    assert not (run / "prior-top").exists() and (run / "prior-bottom" / "model.safetensors").is_file()
    prior = json.loads((run / "prior-bottom" / "model.json").read_text())["config"]
    assert prior["cond_shapes"] == [] and prior["n_classes"] == 2
    with np.load(run / "samples" / "samples.npz") as s:
        assert s["arr_0"].shape == (6, 16, 16, 3) and s["codes_bottom"].shape == (6, 4, 4)
    report = json.loads((run / "eval" / "report.json").read_text())
    assert [r["acceptance_rate"] for r in report["rows"]] == [1.0, 0.5]
    assert all(np.isfinite(r["fd"]) for r in report["rows"])
