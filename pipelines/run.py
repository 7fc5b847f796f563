"""`vqvae2 run` and the stage commands: a stage is made unless it is done for this configuration
(pipelines/stages.py says what each stage is and when it is done)."""
from __future__ import annotations

import shutil

from accelerate import PartialState

from .artifacts import RunDir, damaged_output
from .config import PipelineConfig
from .preflight import preflight
from .stages import Stage, pipeline_stages, rejection_used, stage_named


def _log(msg: str) -> None:
    if PartialState().is_main_process:
        print(msg, flush=True)


def make_stage(cfg: PipelineConfig, run: RunDir, stage: Stage, force: bool = False, **options) -> dict | None:
    """Makes `stage`, or skips it when it is done for this configuration and `force` is off. A stage
    finished for another configuration starts again from nothing; a damaged one is redone."""
    if not force and stage.done(cfg, run):
        _log(f"[{stage.name}] up to date ({stage.directory(run) / stage.summary}); skipping")
        return None
    stage.hash(cfg, run)  # raises, naming the command to run first, when an earlier stage's outputs are missing
    found = damaged_output(stage.directory(run))
    if found is not None:
        _log(f"[{stage.name}] {found[0]} is damaged ({found[1]}): redoing the stage")
    if stage.restart and (force or (stage.directory(run) / stage.summary).exists()):
        shutil.rmtree(stage.directory(run), ignore_errors=True)
    summary = stage.make(cfg, run, **options)
    if summary:  # None or empty on the ranks that wrote no summary
        line, _ = stage.describe(cfg, run, summary)
        _log(f"[{stage.name}] {line} -> {stage.directory(run)}")
        if stage.name == "eval":
            for warning in summary.get("warnings", []):
                _log(f"  warning: {warning}")
    return summary


def run_stage(cfg: PipelineConfig, run: RunDir, name: str, force: bool | None = None, **options) -> dict | None:
    """The stage called `name` (vqvae, codes, prior-<level>, samples, classifier, eval), as its own command
    makes it: `force` None means the command's default (sample and evaluate make theirs again)."""
    stage = stage_named(cfg, name)
    return make_stage(cfg, run, stage, stage.redone_by_command if force is None else force, **options)


def run_all(cfg: PipelineConfig, run: RunDir, force: bool = False, until: str | None = None) -> None:
    found = preflight(cfg, until)  # before any training: every stage that will run can run
    labelled = found["num_classes"] >= 2
    if cfg.eval.enabled and not labelled and "classifier" in found["groups"]:
        _log("[classifier] the data has no class labels: a realism classifier (real against generated) is trained "
             "for rejection instead" if rejection_used(cfg) else
             "[classifier] skipped: the data has no class labels and every eval.acceptance_rates is 1, so nothing "
             "would use a realism classifier (no rejection)")
    for stage in pipeline_stages(cfg, labelled):
        if stage.group in found["groups"]:
            make_stage(cfg, run, stage, force)
