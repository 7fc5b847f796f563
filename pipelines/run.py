"""`vqvae2 run`: every stage in order, each skipped when its outputs exist and match the config."""
from __future__ import annotations

import shutil

from accelerate import PartialState

from .artifacts import RunDir, damaged_output
from .config import PipelineConfig

from .preflight import STAGES, preflight  # noqa: F401 (STAGES: the order of `vqvae2 run`)


def _log(msg: str) -> None:
    if PartialState().is_main_process:
        print(msg, flush=True)


def _done(run: RunDir, stage_dir, h: str) -> bool:
    """Finished for this configuration, with its weights and arrays intact (a damaged one is redone)."""
    return run.stage_hash(stage_dir) == h and _intact(stage_dir)


def _intact(stage_dir) -> bool:
    found = damaged_output(stage_dir)
    if found is not None:
        _log(f"[{stage_dir.name}] {found[0]} is damaged ({found[1]}): redoing the stage")
    return found is None


def stage_vqvae(cfg: PipelineConfig, run: RunDir, force: bool = False) -> None:
    from . import stage1
    h = stage1.stage_hash(cfg)
    if not force and _done(run, run.vqvae, h):
        _log(f"[vqvae] up to date ({run.vqvae}/metrics.json); skipping")
        return
    if force or (run.vqvae / "metrics.json").exists():  # forced, or finished for another config: start again
        shutil.rmtree(run.vqvae, ignore_errors=True)
    m = stage1.train_vqvae(cfg, run)
    if m is not None:
        _log(f"[vqvae] val mse {m['mse']:.5f}  psnr {m['psnr']:.2f} dB  codes used {m['codes_used']}  "
             f"-> {run.vqvae}/recon.png")


def stage_codes(cfg: PipelineConfig, run: RunDir, force: bool = False) -> None:
    from . import codes
    h = codes.stage_hash(run)
    meta = run.codes / "codes.json"
    if not force and meta.is_file() and _read_hash(meta) == h and _intact(run.codes):
        _log(f"[codes] up to date ({meta}); skipping")
        return
    if PartialState().is_main_process:
        m = codes.extract_codes(cfg, run)
        _log(f"[codes] {m['n']} images -> {run.codes} (levels {m['levels']}, grids {m['grid_sizes']})")
    PartialState().wait_for_everyone()


def stage_prior(cfg: PipelineConfig, run: RunDir, level: str, force: bool = False) -> None:
    from . import stage2
    h = stage2.stage_hash(cfg, run, level)
    d = run.prior(level)
    if not force and _done(run, d, h):
        _log(f"[prior-{level}] up to date ({d}/metrics.json); skipping")
        return
    if force or (d / "metrics.json").exists():
        shutil.rmtree(d, ignore_errors=True)
    m = stage2.train_prior(cfg, run, level)
    if m is not None:
        _log(f"[prior-{level}] val nll {m['nll_bits']:.3f} bits/code  accuracy {m['accuracy']:.3f}")


def stage_sample(cfg: PipelineConfig, run: RunDir, png_dir=None, force: bool = True) -> None:
    from . import sample
    if not force and _done(run, run.samples, sample.stage_hash(cfg, run)):
        _log(f"[samples] up to date ({run.samples}); skipping")
        return
    info = sample.sample_stage(cfg, run, png_dir=png_dir)
    if info:
        _log(f"[samples] {info['n']} samples -> {', '.join(info['outputs'])}, {run.samples}/grid.png")


def stage_classifier(cfg: PipelineConfig, run: RunDir, force: bool = False) -> None:
    from . import stage3
    if not force and _done(run, run.classifier, stage3.classifier_hash(cfg)):
        _log(f"[classifier] up to date ({run.classifier}/metrics.json); skipping")
        return
    if force or (run.classifier / "metrics.json").exists():
        shutil.rmtree(run.classifier, ignore_errors=True)
    m = stage3.train_classifier(cfg, run)
    if m is not None:
        accs = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in m["classifiers"].items())
        _log(f"[classifier] validation accuracy: {accs}")


def stage_eval(cfg: PipelineConfig, run: RunDir, force: bool = True) -> None:
    from . import evaluate
    if not force and _done(run, run.eval, evaluate.eval_hash(cfg, run)):
        _log(f"[eval] up to date ({run.eval}/report.md); skipping")
        return
    report = evaluate.evaluate(cfg, run)
    if report is not None:
        _log(f"[eval] {run.eval}/report.md, {run.eval}/tradeoff.png")
        for row in report["rows"]:
            pr = "" if row["precision"] is None else f"  precision {row['precision']:.3f}  recall {row['recall']:.3f}"
            _log(f"  acceptance {row['acceptance_rate']:<5g} {report['fd_label']} {row['fd']:.3f}{pr}")
        if report["reconstruction"]:
            _log(f"  reconstruction {report['fd_label']} {report['reconstruction']['fd']:.3f} (upper bound)")
        for w in report.get("warnings", []):
            _log(f"  warning: {w}")


def _read_hash(path) -> str | None:
    import json
    try:
        return json.loads(path.read_text()).get("config_hash")
    except (OSError, ValueError, AttributeError):
        return None


def run_all(cfg: PipelineConfig, run: RunDir, force: bool = False, until: str | None = None) -> None:
    found = preflight(cfg, until)  # before any training: every stage that will run can run
    labelled = found["num_classes"] >= 2
    for stage in found["stages"]:
        if stage == "vqvae":
            stage_vqvae(cfg, run, force)
        elif stage == "codes":
            stage_codes(cfg, run, force)
        elif stage == "priors":
            for level in cfg.vqvae.levels:
                stage_prior(cfg, run, level, force)
        elif stage == "samples":
            stage_sample(cfg, run, force=force)
        elif stage == "classifier":
            if cfg.eval.enabled and labelled:
                stage_classifier(cfg, run, force)
            elif cfg.eval.enabled:
                _log("[classifier] the data has no class labels: no classifier, so evaluation makes no rejection")
        elif stage == "eval":
            if cfg.eval.enabled:
                stage_eval(cfg, run, force=force)
