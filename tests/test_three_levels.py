"""A three-level hierarchy (the paper's FFHQ-1024 shape, tiny) through every stage, and `vqvae2 vary`."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.artifacts import RunDir
from pipelines.cli import main
from pipelines.stage2 import load_priors

from conftest import TINY_EVAL, TINY_PRIORS, folder_overrides, make_image_folder

THREE_LEVELS = ["vqvae.strides=[2, 2, 2]", "prior.middle.channels=8", "prior.middle.n_blocks=1",
                "prior.middle.n_res_per_block=1", "prior.middle.attention_blocks=[]", "prior.middle.cond_channels=4",
                "prior.middle.n_cond_res=1", "prior.middle.cond_upsample='learned'",
                "prior.bottom.cond_upsample='learned'", "sample.temperature=[1.0, 0.7, 0.5]",
                "eval.temperature=[1.0, 0.7, 0.5]"]


@pytest.fixture(scope="module")
def three_level_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    run = root / "run"
    argv = ["run", "--preset", "demo", "--run-dir", str(run)]
    for o in [*folder_overrides(make_image_folder(root / "images", n_per_class=20)), *TINY_PRIORS, *TINY_EVAL,
              *THREE_LEVELS]:
        argv += ["--set", o]
    assert main(argv) == 0
    return RunDir(run)


def test_every_stage_runs_with_three_levels(three_level_run):
    run = three_level_run
    codes = json.loads((run.codes / "codes.json").read_text())
    assert codes["levels"] == ["top", "middle", "bottom"] and codes["grid_sizes"] == [2, 4, 8]
    k = codes["codebook_size"]
    shapes = {lv: json.loads((run.prior(lv) / "model.json").read_text())["config"]["cond_shapes"]
              for lv in codes["levels"]}
    assert shapes == {"top": [], "middle": [[k, 2, 2]], "bottom": [[k, 2, 2], [k, 4, 4]]}
    with np.load(run.samples / "samples.npz") as s:
        assert [s[f"codes_{lv}"].shape[1:] for lv in codes["levels"]] == [(2, 2), (4, 4), (8, 8)]
    report = json.loads((run.eval / "report.json").read_text())
    assert all(np.isfinite(r["fd"]) for r in report["rows"])
    # one temperature per level, top first, reaches the sampler and is recorded
    assert json.loads((run.samples / "metrics.json").read_text())["temperature"] == [1.0, 0.7, 0.5]
    assert report["provenance"]["temperature"] == [1.0, 0.7, 0.5]


def test_temperature_per_level_is_checked_against_the_levels(three_level_run, capsys):
    for value, message in (("[1.0, 0.5]", "sample.temperature has 2 values but the VQ-VAE has 3 levels"),
                           ("[1.0, 0.0, 0.5]", "sample.temperature must be finite and > 0"),
                           ("'warm'", "sample.temperature must be float or list[float], got 'warm'"),
                           ("[1.0, 'warm', 0.5]", "sample.temperature must be finite and > 0")):
        assert main(["sample", "--run-dir", str(three_level_run.root), "--set", f"sample.temperature={value}"]) != 0
        assert message in capsys.readouterr().err


def test_per_level_temperature_changes_only_its_level(three_level_run):
    from vqvae2.sampling import sample_hierarchy
    priors = load_priors(three_level_run, ["top", "middle", "bottom"])
    labels = torch.tensor([0, 1, 0, 1])
    draw = lambda t: sample_hierarchy(priors, 4, labels=labels, temperature=t,
                                      generator=torch.Generator().manual_seed(2))
    base, colder = draw([1.0, 1.0, 1.0]), draw([1.0, 1.0, 0.05])
    assert torch.equal(base[0], colder[0]) and torch.equal(base[1], colder[1])
    assert not torch.equal(base[2], colder[2])


def test_lower_priors_read_every_level_above(three_level_run):
    priors = load_priors(three_level_run, ["top", "middle", "bottom"])
    g = torch.Generator().manual_seed(0)
    top, middle = torch.randint(0, 16, (2, 2, 2), generator=g), torch.randint(0, 16, (2, 4, 4), generator=g)
    bottom = torch.randint(0, 16, (2, 8, 8), generator=g)
    labels = torch.tensor([0, 1])
    base = priors[2](bottom, [top, middle], labels)
    for changed in ([(top + 1) % 16, middle], [top, (middle + 1) % 16]):
        assert not torch.allclose(priors[2](bottom, changed, labels), base)


@pytest.mark.parametrize("keep", ["top", "middle"])
def test_vary_keeps_the_codes_of_the_kept_levels(three_level_run, tmp_path, keep):
    image = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(image)
    out = tmp_path / f"vary-{keep}.png"
    assert main(["vary", "--run-dir", str(three_level_run.root), "--image", str(image), "--keep", keep,
                 "--n", "5", "--class", "1", "--out", str(out)]) == 0
    with np.load(out.with_suffix(".npz")) as z:
        levels = ["top", "middle", "bottom"]
        kept = levels[: levels.index(keep) + 1]
        for lv in kept:
            assert (z[f"codes_{lv}"] == z[f"image_codes_{lv}"]).all(), lv
        assert z["codes_bottom"].shape == (5, 8, 8)
        assert not (z["codes_bottom"] == z["image_codes_bottom"]).all()  # the detail was redrawn
    # a row of (image, reconstruction, blanks) then the 5 variations, 16-px cells shown at 64 px
    assert Image.open(out).size == (5 * 66 + 2, 2 * 66 + 2)


@pytest.mark.reliability
def test_vary_refuses_what_it_cannot_do(three_level_run, tmp_path, capsys):
    """vqvae2 vary with --keep bottom (nothing left to resample), a missing image, or no class for class-conditional priors -> error naming what to give"""
    image = tmp_path / "face.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    base = ["vary", "--run-dir", str(three_level_run.root), "--image"]
    assert main([*base, str(image), "--keep", "bottom"]) == 2
    assert "choose a level with a level below it to resample, one of ['top', 'middle']" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "nope.png"), "--keep", "top", "--class", "0"]) == 2
    assert "nope.png does not exist" in capsys.readouterr().err
    assert main([*base, str(image), "--keep", "top", "--class", "7"]) == 2
    assert "outside the model's classes" in capsys.readouterr().err


def test_vary_asks_the_classifier_for_the_class(three_level_run, tmp_path, capsys):
    image = tmp_path / "face.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    assert main(["vary", "--run-dir", str(three_level_run.root), "--image", str(image), "--keep", "top",
                 "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "predicted by the classifier" in out and (three_level_run.root / "vary" / "face-keep-top.png").is_file()


def test_vary_and_status_use_the_runs_per_level_temperature(three_level_run, tmp_path, monkeypatch, capsys):
    """Without --temperature, vary draws at the run's sample.temperature (a list here); status shows it."""
    import vqvae2.pipeline as pipeline_module  # vary samples through vqvae2.Pipeline
    seen = []
    real = pipeline_module.sample_hierarchy
    monkeypatch.setattr(pipeline_module, "sample_hierarchy", lambda *a, **kw: (seen.append(kw["temperature"]), real(*a, **kw))[1])
    image = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(image)
    argv = ["vary", "--run-dir", str(three_level_run.root), "--image", str(image), "--keep", "top", "--n", "2",
            "--class", "0", "--out", str(tmp_path / "v.png")]
    assert main(argv) == 0 and main([*argv, "--temperature", "0.3"]) == 0
    assert seen == [[1.0, 0.7, 0.5], 0.3]
    capsys.readouterr()
    assert main(["status", "--run-dir", str(three_level_run.root)]) == 0
    assert "temperature 1, 0.7, 0.5" in capsys.readouterr().out
