"""`vqvae2 run` and `vqvae2 status` read one stage table: on a run directory in any state, the stages
status reports done are exactly those run skips as up to date, and the others are the ones run makes."""
import json
import shutil

import pytest

from pipelines.artifacts import RunDir
from pipelines.cli import main
from pipelines.config import config_from_dict, resolve_config
from pipelines.stages import GROUPS, groups_until, pipeline_stages, stage_named
from pipelines.status import DONE, run_status

from conftest import finished_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("stages"))


def _agree(run, capsys, only=None) -> dict:
    """Status's states, then `vqvae2 run`: every stage status calls done is skipped, every other one made.
    `only`: the stages to compare (a stage remade upstream can make a later stale one current again)."""
    states = {s["stage"]: s["state"] for s in run_status(RunDir(run))["stages"]}
    capsys.readouterr()
    assert main(["run", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    for name, state in states.items():
        if only is None or name in only:
            assert (f"[{name}] up to date" in out) == (state == DONE), (name, state, out)
    return states


def test_run_and_status_agree_on_every_stage(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    names = [s.name for s in pipeline_stages(config_from_dict(json.loads((run / "config.json").read_text())))]
    assert names == ["vqvae", "codes", "prior-top", "prior-bottom", "samples", "classifier", "eval"]
    assert set(_agree(run, capsys).values()) == {DONE}  # a finished run: nothing made again

    (run / "prior-bottom" / "metrics.json").unlink()  # a prior that never finished
    states = _agree(run, capsys)
    assert states["prior-bottom"] != DONE and states["prior-top"] == DONE

    cfg = json.loads((run / "config.json").read_text())  # another sampling temperature: samples and eval are stale
    cfg["sample"]["temperature"] = 0.5
    (run / "config.json").write_text(json.dumps(cfg))
    states = _agree(run, capsys)
    assert [n for n, s in states.items() if s != DONE] == ["samples", "eval"]

    (run / "vqvae" / "model.safetensors").write_bytes(b"")  # damaged weights: status and run both redo the VQ-VAE
    assert _agree(run, capsys, only=["vqvae"])["vqvae"] != DONE  # (retrained alike, so the codes stay current)
    assert set(_agree(run, capsys).values()) == {DONE}


def test_the_table_names_each_stage_once_with_its_command():
    cfg = resolve_config("demo")
    stages = pipeline_stages(cfg, labelled=True)
    assert [s.command for s in stages] == ["train-vqvae", "extract-codes", "train-prior --level top",
                                           "train-prior --level bottom", "sample", "train-classifier", "evaluate"]
    assert [s.group for s in stages] == ["vqvae", "codes", "priors", "priors", "samples", "classifier", "eval"]
    realism = next(s for s in pipeline_stages(cfg, labelled=False) if s.name == "classifier")  # unlabelled data
    assert realism.command == "train-classifier" and realism.make.__name__ == "_train_realism"
    # at acceptance 1 alone the realism classifier has no use: not a stage of the run, still its own command
    at_one = resolve_config("demo", ["eval.acceptance_rates=[1.0]"])
    assert "classifier" not in [s.name for s in pipeline_stages(at_one, labelled=False)]
    assert "classifier" in [s.name for s in pipeline_stages(at_one, labelled=True)]
    assert "classifier" in [s.name for s in pipeline_stages(at_one, labelled=False, every=True)]
    assert stage_named(cfg, "prior-top").command_line(RunDir("R")) == "vqvae2 train-prior --run-dir R --level top"
    assert groups_until("codes") == ["vqvae", "codes"] and groups_until(None) == GROUPS
    with pytest.raises(ValueError, match="--until 'prior'"):
        groups_until("prior")
    with pytest.raises(ValueError, match="no stage 'prior-middle'"):
        stage_named(cfg, "prior-middle")
