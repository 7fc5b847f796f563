"""`vqvae2 status --run-dir RUN`: where every stage of a run stands, and the next command to run.

It reads only files that are complete whenever they exist, so it is safe on a run that another
process is writing or that was killed: config.json, each stage's summary (metrics.json or
codes.json, written last and atomically), state/progress.json (or state.old/ after a kill between
the two renames of a save), and the complete lines of metrics.jsonl. It writes nothing.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .artifacts import RunDir, damaged_output, describe_holder, find_training_state, lock_holder, read_json
from .config import PipelineConfig, config_from_dict, format_temperature
from .curves import read_records

DONE, IN_PROGRESS, NOT_STARTED, STALE, DAMAGED = "done", "in progress", "not started", "stale", "damaged"
# what a damaged or hand-edited file raises while it is read or described
READ_FAILURES = (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError)


@dataclass
class StageStatus:
    stage: str  # vqvae, codes, prior-<level>, samples, classifier, eval
    state: str  # DONE, IN_PROGRESS, NOT_STARTED or STALE
    detail: str = ""  # the key metric of a finished stage, the step of one in progress, why one is stale
    command: str = ""  # the command that makes (or resumes, or redoes) the stage
    metrics: dict = field(default_factory=dict)


# reading completed files

def _read(path: Path) -> dict | None:
    """A JSON file, or None when it is missing or unreadable (being replaced at this moment)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _expected(stage_hash: Callable[[], str]) -> str | None:
    """The stage hash of the current config, or None when an earlier stage's outputs are missing or changed."""
    try:
        return stage_hash()
    except (FileNotFoundError, ValueError):
        return None


def _saved(state_dir: Path) -> tuple[dict, float] | None:
    """progress.json of a training state and its modification time (the time of the last save)."""
    for _ in range(3):  # a save may swap state/ and state.old/ while we look
        found = find_training_state(state_dir)
        if found is None:
            return None
        try:
            return json.loads((found / "progress.json").read_text()), (found / "progress.json").stat().st_mtime
        except (OSError, ValueError):
            continue
    return None


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# one stage

def _finished(name: str, summary: dict | None, expected: str | None, command: str,
              describe: Callable[[dict], tuple[str, dict]], stage_dir: Path) -> StageStatus | None:
    """DONE, DAMAGED (weights or arrays unreadable) or STALE when the stage's summary exists, else None."""
    if summary is None:
        return None
    if expected is not None and summary.get("config_hash") == expected:
        found = damaged_output(stage_dir)
        if found is not None:
            return StageStatus(name, DAMAGED, f"{found[0]} is damaged ({found[1]}); `vqvae2 run` redoes the stage",
                               command)
        detail, metrics = describe(summary)
        return StageStatus(name, DONE, detail, command, metrics)
    return StageStatus(name, STALE, "finished for another configuration, or on outputs of an earlier stage that "
                       "changed since", command)


def _training(name: str, dirs: dict[str, Path], expected: str | None, steps: int, command: str,
              describe: Callable[[dict], tuple[str, dict]]) -> StageStatus:
    """A training stage. Its summary is metrics.json in the first of `dirs`; each of them may hold a state
    and a metrics.jsonl (the classifier stage trains two networks, one after the other)."""
    first, last = list(dirs.values())[0], list(dirs.values())[-1]
    done = _finished(name, _read(first / "metrics.json"), expected, command, describe, first)
    if done is not None:
        return done
    for role, d in dirs.items():
        saved = _saved(d / "state")
        logged = [r for r in read_records(d / "metrics.jsonl") if r.get("split", "train") == "train"]
        if saved is None and not logged:
            continue
        if saved is not None and saved[0].get("step", 0) >= steps and d != last:
            continue  # this network is trained; the next one is under way (or about to start)
        if saved is not None and saved[0].get("config_hash") != expected:
            return StageStatus(name, STALE, f"{d.relative_to(first.parent)}/state was saved for another "
                               "configuration", f"{command} --force")
        progress = {"step": saved[0]["step"] if saved else 0, "steps": steps,
                    "saved_at": _clock(saved[1]) if saved else None,
                    "last_logged_step": logged[-1]["step"] if logged else None,
                    "last_loss": logged[-1].get("loss") if logged else None}
        prefix = f"{role}: " if len(dirs) > 1 else ""
        return StageStatus(name, IN_PROGRESS, prefix + _progress_detail(progress), command, progress)
    return StageStatus(name, NOT_STARTED, "", command)


def _progress_detail(p: dict) -> str:
    out = f"step {p['last_logged_step'] or p['step']} of {p['steps']}"
    if p["last_loss"] is not None:
        out += f", loss {p['last_loss']:.4g}"
    return out + (f", last save at step {p['step']} ({p['saved_at']})" if p["saved_at"] else ", no save yet")


def _chunked(name: str, summary: dict | None, expected: str | None, store: Path, command: str,
             describe: Callable[[dict], tuple[str, dict]]) -> StageStatus:
    """A stage that writes chunks to a store (sampling, evaluation's candidates) before its summary."""
    done = _finished(name, summary, expected, command, describe, store.parent)
    if done is not None:
        return done
    key = _read(store / "store.json")
    if key is None:
        return StageStatus(name, NOT_STARTED, "", command)
    total = -(-key["n"] // key["chunk_size"])
    made = len(list(store.glob("chunk-*.npz")))
    return StageStatus(name, IN_PROGRESS, f"{made} of {total} chunks of {key['n']} samples", command,
                       {"chunks": made, "of": total})


# the stages of a run

def _vqvae(cfg: PipelineConfig, run: RunDir, root: str) -> StageStatus:
    from .stage1 import stage_hash

    def describe(m):
        used = "/".join(str(c) for c in m["codes_used"])
        return (f"PSNR {m['psnr']:.2f} dB, codes used {used} of {cfg.vqvae.codebook_size}",
                {"psnr": m["psnr"], "codes_used": m["codes_used"]})
    return _training("vqvae", {"vqvae": run.vqvae}, stage_hash(cfg), cfg.train_vqvae.steps,
                     f"vqvae2 train-vqvae --run-dir {root}", describe)


def _codes(cfg: PipelineConfig, run: RunDir, root: str) -> StageStatus:
    from .codes import stage_hash
    command = f"vqvae2 extract-codes --run-dir {root}"
    done = _finished("codes", _read(run.codes / "codes.json"), _expected(lambda: stage_hash(run)), command,
                     lambda m: (f"{m['n']['train']} train, {m['n']['val']} val items", {"n": m["n"]}), run.codes)
    if done is not None:
        return done
    if any(p.is_dir() for p in run.root.glob("codes.tmp*")):
        return StageStatus("codes", IN_PROGRESS, "extracting", command)
    return StageStatus("codes", NOT_STARTED, "", command)


def _prior(cfg: PipelineConfig, run: RunDir, root: str, level: str) -> StageStatus:
    from .stage2 import stage_hash
    return _training(f"prior-{level}", {level: run.prior(level)}, _expected(lambda: stage_hash(cfg, run, level)),
                     cfg.prior_train(level).steps, f"vqvae2 train-prior --run-dir {root} --level {level}",
                     lambda m: (f"NLL {m['nll_bits']:.3f} bits/code, accuracy {m['accuracy']:.3f}",
                                {"nll_bits": m["nll_bits"], "accuracy": m["accuracy"]}))


def _samples(cfg: PipelineConfig, run: RunDir, root: str) -> StageStatus:
    from .sample import stage_hash
    return _chunked("samples", _read(run.samples / "metrics.json"), _expected(lambda: stage_hash(cfg, run)),
                    run.samples / "chunks", f"vqvae2 sample --run-dir {root}",
                    lambda m: (f"{m['n']} samples, temperature {format_temperature(m['temperature'])}", {"n": m["n"]}))


def _classifier(cfg: PipelineConfig, run: RunDir, root: str) -> StageStatus:
    from .stage3 import classifier_dirs, classifier_hash

    def describe(m):
        acc = {role: c["accuracy"] for role, c in m["classifiers"].items()}
        return "accuracy " + ", ".join(f"{role} {a:.4f}" for role, a in acc.items()), {"accuracy": acc}
    return _training("classifier", classifier_dirs(cfg, run), classifier_hash(cfg),
                     cfg.train_classifier.steps, f"vqvae2 train-classifier --run-dir {root}", describe)


def _eval(cfg: PipelineConfig, run: RunDir, root: str) -> StageStatus:
    from .evaluate import eval_hash

    def describe(m):
        report = _read(run.eval / "report.json") or {"rows": []}
        fd = {f"{r['acceptance_rate']:g}": r["fd"] for r in report["rows"]}
        label = m.get("fd_label", "FD")
        return f"{label} " + ", ".join(f"{v:.3f} at {rate}" for rate, v in fd.items()), {"fd_label": label, "fd": fd}
    return _chunked("eval", _read(run.eval / "metrics.json"), _expected(lambda: eval_hash(cfg, run)),
                    run.eval / "candidates", f"vqvae2 evaluate --run-dir {root}", describe)


def _guarded(name: str, read: Callable, command: str, cfg: PipelineConfig, run: RunDir, root: str) -> StageStatus:
    """A stage's status; a file of it that cannot be read or holds malformed fields makes it DAMAGED,
    never an error: status reports the damage."""
    try:
        return read(cfg, run, root)
    except READ_FAILURES as e:
        return StageStatus(name, DAMAGED, f"a file of this stage is damaged ({type(e).__name__}: {e}); redo it",
                           command)


def run_status(run: RunDir) -> dict:
    """Every stage's StageStatus (as dicts, in pipeline order) and the next command to run."""
    root = str(run.root)
    writer = lock_holder(run.root)  # the process writing the run now, if any (read without locking)
    if not run.config.is_file():
        return {"run_dir": root, "config": None, "stages": [], "writer": writer,
                "next": f"vqvae2 run --preset PRESET --run-dir {root}", "next_stage": None}
    try:
        cfg = config_from_dict(read_json(run.config), where=str(run.config))
    except READ_FAILURES as e:
        return {"run_dir": root, "config": str(run.config), "stages": [], "writer": writer, "damaged": str(e),
                "next": f"vqvae2 run --preset PRESET --run-dir {root}   (after mending or removing {run.config})",
                "next_stage": None}
    at = f"--run-dir {root}"
    readers = [("vqvae", _vqvae, f"vqvae2 train-vqvae {at} --force"), ("codes", _codes, f"vqvae2 extract-codes {at}"),
               *((f"prior-{lv}", lambda c, r, x, lv=lv: _prior(c, r, x, lv), f"vqvae2 train-prior {at} --level {lv} --force")
                 for lv in cfg.vqvae.levels), ("samples", _samples, f"vqvae2 sample {at}")]
    if cfg.eval.enabled:
        readers += [("classifier", _classifier, f"vqvae2 train-classifier {at} --force"),
                    ("eval", _eval, f"vqvae2 evaluate {at}")]
    stages = [_guarded(name, read, command, cfg, run, root) for name, read, command in readers]
    todo = next((s for s in stages if s.state != DONE), None)
    return {"run_dir": root, "config": str(run.config), "stages": [asdict(s) for s in stages], "writer": writer,
            "next": todo.command if todo else None, "next_stage": todo.stage if todo else None}


def render_status(status: dict) -> str:
    """A plain-text table of run_status(...) and the next command."""
    writer = [f"being written now by {describe_holder(status['writer'])}"] if status.get("writer") else []
    if status["config"] is None:
        return "\n".join([f"{status['run_dir']}: no config.json, nothing has run yet", f"next: {status['next']}",
                          *writer]) + "\n"
    if status.get("damaged"):
        return "\n".join([f"{status['config']} is damaged: {status['damaged']}", f"next: {status['next']}",
                          *writer]) + "\n"
    rows = [("stage", "state", "progress / result")] + [(s["stage"], s["state"], s["detail"]) for s in status["stages"]]
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
    todo = next((s for s in status["stages"] if s["stage"] == status["next_stage"]), None)
    if todo is None:
        lines += ["", "next: nothing, every stage is done"]
    else:
        step = todo["metrics"].get("step") if todo["state"] == IN_PROGRESS else None
        lines += ["", f"next: {status['next']}" + (f"   (resumes from step {step})" if step else "")]
    return "\n".join(lines + writer) + "\n"
