"""The stages of a pipeline, one table: each stage's name, directory, hash, done marker, runner, summary
and command. `vqvae2 run`, `vqvae2 status`, pre-flight and the stage commands all read it, so they
cannot disagree on what a stage is or whether it is done. One stage is optional: the realism classifier of
data without labels evaluated at acceptance 1 alone is not part of the run (nothing uses it), though its
command still trains it."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from .artifacts import RunDir, damaged_output, read_json
from .config import PipelineConfig, format_temperature

# the groups `vqvae2 run --until` names, in pipeline order (one group per stage, all priors in one)
GROUPS = ["vqvae", "codes", "priors", "samples", "classifier", "eval"]


@dataclass(frozen=True)
class Stage:
    name: str  # as status shows it: vqvae, codes, prior-<level>, samples, classifier, eval
    group: str  # one of GROUPS
    directory: Callable[[RunDir], Path]
    summary: str  # written last, atomically; its config_hash marks the stage done for a configuration
    hash: Callable[[PipelineConfig, RunDir], str]  # the hash a finished stage must have recorded
    make: Callable[..., dict | None]  # (cfg, run, **options) -> the stage's summary, None on a rank that made none
    describe: Callable[[PipelineConfig, RunDir, dict], tuple[str, dict]]  # (line, key metrics) of a summary
    command: str  # the `vqvae2` subcommand (and its own flags) that makes the stage
    progress: str  # how it shows work under way: "training" (state/), "chunks" (a chunk store), "once"
    redone_by_command: bool = False  # its own command makes it again although done (sample, evaluate)
    restart: bool = False  # outputs of another configuration are removed before it runs again
    steps: Callable[[PipelineConfig], int] | None = None  # a training stage's steps
    # a training stage's networks, each {role: directory holding its state/ and metrics.jsonl}, in training order
    networks: Callable[[PipelineConfig, RunDir], dict[str, Path]] | None = None
    store: str = ""  # a chunked stage's chunk store, under its directory

    def command_line(self, run: RunDir) -> str:
        verb, *flags = self.command.split(" ")
        return " ".join(["vqvae2", verb, "--run-dir", str(run.root), *flags])

    def recorded_hash(self, run: RunDir) -> str | None:
        """The config hash in the stage's summary, or None when it has not finished."""
        return run.recorded_hash(self.directory(run) / self.summary)

    def expected_hash(self, cfg: PipelineConfig, run: RunDir) -> str | None:
        """The hash of the current configuration, or None when an earlier stage's outputs are missing."""
        try:
            return self.hash(cfg, run)
        except (FileNotFoundError, ValueError):
            return None

    def done(self, cfg: PipelineConfig, run: RunDir) -> bool:
        """Finished for this configuration, with its weights and arrays intact."""
        expected = self.expected_hash(cfg, run)
        return expected is not None and self.recorded_hash(run) == expected and \
            damaged_output(self.directory(run)) is None


# the runners and summaries of each stage (imported late: most pull in torch and the models)

def _vqvae_hash(cfg, run):
    from .stage1 import stage_hash
    return stage_hash(cfg)


def _train_vqvae(cfg, run):
    from .stage1 import train_vqvae
    return train_vqvae(cfg, run)


def _describe_vqvae(cfg, run, m):
    used = "/".join(str(c) for c in m["codes_used"])
    return (f"val mse {m['mse']:.5f}, PSNR {m['psnr']:.2f} dB, codes used {used} of {cfg.vqvae.codebook_size}",
            {"psnr": m["psnr"], "codes_used": m["codes_used"]})


def _codes_hash(cfg, run):
    from .codes import stage_hash
    return stage_hash(run)


def _extract_codes(cfg, run):
    from accelerate import PartialState

    from .codes import extract_codes
    out = extract_codes(cfg, run) if PartialState().is_main_process else None
    PartialState().wait_for_everyone()
    return out


def _describe_codes(cfg, run, m):
    return f"{m['n']['train']} train, {m['n']['val']} val items, grids {m['grid_sizes']}", {"n": m["n"]}


def _prior_hash(level, cfg, run):
    from .stage2 import stage_hash
    return stage_hash(cfg, run, level)


def _train_prior(level, cfg, run):
    from .stage2 import train_prior
    return train_prior(cfg, run, level)


def _describe_prior(cfg, run, m):
    return (f"NLL {m['nll_bits']:.3f} bits/code, accuracy {m['accuracy']:.3f}",
            {"nll_bits": m["nll_bits"], "accuracy": m["accuracy"]})


def _samples_hash(cfg, run):
    from .sample import stage_hash
    return stage_hash(cfg, run)


def _sample(cfg, run, png_dir=None):
    from .sample import sample_stage
    return sample_stage(cfg, run, png_dir=png_dir)


def _describe_samples(cfg, run, m):
    return f"{m['n']} samples, temperature {format_temperature(m['temperature'])}", {"n": m["n"]}


def _classifier_hash(cfg, run):
    from .stage3 import classifier_hash
    return classifier_hash(cfg)


def _train_classifier(cfg, run):
    from .stage3 import train_classifier
    return train_classifier(cfg, run)


def _realism_hash(cfg, run):
    from .stage3 import realism_hash
    return realism_hash(cfg, run)


def _train_realism(cfg, run):
    from .stage3 import train_realism_classifier
    return train_realism_classifier(cfg, run)


def _classifier_networks(cfg, run):
    from .stage3 import classifier_dirs
    return classifier_dirs(cfg, run)


def _describe_classifier(cfg, run, m):
    acc = {role: c["accuracy"] for role, c in m["classifiers"].items()}
    return "accuracy " + ", ".join(f"{role} {a:.4f}" for role, a in acc.items()), {"accuracy": acc}


def _eval_hash(cfg, run):
    from .evaluate import eval_hash
    return eval_hash(cfg, run)


def _evaluate(cfg, run):
    from .evaluate import evaluate
    return evaluate(cfg, run)


def _describe_eval(cfg, run, m):
    report = read_json(run.eval / "report.json")
    fd = {f"{r['acceptance_rate']:g}": r["fd"] for r in report["rows"]}
    label = m.get("fd_label", "FD")
    return f"{label} " + ", ".join(f"{v:.3f} at {rate}" for rate, v in fd.items()), {"fd_label": label, "fd": fd}


def rejection_used(cfg: PipelineConfig) -> bool:
    """Whether evaluation keeps fewer candidates than it draws (an acceptance rate below 1): the only use of the
    realism classifier of data without labels."""
    return any(r < 1 for r in cfg.eval.acceptance_rates)


def pipeline_stages(cfg: PipelineConfig, labelled: bool | None = None, evaluation: bool | None = None,
                    every: bool = False) -> list[Stage]:
    """Every stage of the configured pipeline, in order. The classifier stage trains the domain classifiers on
    labelled data, the realism classifier when `labelled` is False (None: not known, taken as labelled) and
    some acceptance rate is below 1 (or `every`: its own command trains it anyway); the evaluation stages are
    there when `evaluation` (default: eval.enabled)."""
    evaluation = cfg.eval.enabled if evaluation is None else evaluation
    out = [Stage("vqvae", "vqvae", lambda r: r.vqvae, "metrics.json", _vqvae_hash, _train_vqvae, _describe_vqvae,
                 "train-vqvae", "training", restart=True, steps=lambda c: c.train_vqvae.steps,
                 networks=lambda c, r: {"vqvae": r.vqvae}),
           Stage("codes", "codes", lambda r: r.codes, "codes.json", _codes_hash, _extract_codes, _describe_codes,
                 "extract-codes", "once")]
    out += [Stage(f"prior-{lv}", "priors", lambda r, lv=lv: r.prior(lv), "metrics.json", partial(_prior_hash, lv),
                  partial(_train_prior, lv), _describe_prior, f"train-prior --level {lv}", "training", restart=True,
                  steps=lambda c, lv=lv: c.prior_train(lv).steps, networks=lambda c, r, lv=lv: {lv: r.prior(lv)})
            for lv in cfg.vqvae.levels]
    out.append(Stage("samples", "samples", lambda r: r.samples, "metrics.json", _samples_hash, _sample,
                     _describe_samples, "sample", "chunks", redone_by_command=True, store="chunks"))
    if evaluation and labelled is not False:
        out.append(Stage("classifier", "classifier", lambda r: r.classifier, "metrics.json", _classifier_hash,
                         _train_classifier, _describe_classifier, "train-classifier", "training", restart=True,
                         steps=lambda c: c.train_classifier.steps, networks=_classifier_networks))
    elif evaluation and (every or rejection_used(cfg)):  # no labels: the realism classifier (realism rejection)
        out.append(Stage("classifier", "classifier", lambda r: r.classifier, "metrics.json", _realism_hash,
                         _train_realism, _describe_classifier, "train-classifier", "training", restart=True,
                         steps=lambda c: c.train_classifier.steps, networks=lambda c, r: {"realism": r.classifier}))
    if evaluation:
        out.append(Stage("eval", "eval", lambda r: r.eval, "metrics.json", _eval_hash, _evaluate, _describe_eval,
                         "evaluate", "chunks", redone_by_command=True, store="candidates"))
    return out


def labelled_data(cfg: PipelineConfig) -> bool | None:
    """Whether the configured data has class labels, or None when that cannot be told now (data missing)."""
    from .preflight import data_num_classes
    try:
        return data_num_classes(cfg) >= 2
    except (OSError, ValueError):
        return None


def stage_named(cfg: PipelineConfig, name: str) -> Stage:
    stages = pipeline_stages(cfg, labelled_data(cfg), evaluation=True, every=True)
    for stage in stages:
        if stage.name == name:
            return stage
    raise ValueError(f"no stage {name!r} in this pipeline: its stages are {[s.name for s in stages]}")


def groups_until(until: str | None) -> list[str]:
    """The groups `vqvae2 run --until UNTIL` runs."""
    if until is not None and until not in GROUPS:
        raise ValueError(f"--until {until!r}: choose one of {GROUPS}")
    return GROUPS if until is None else GROUPS[: GROUPS.index(until) + 1]
