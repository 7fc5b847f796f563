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

from .artifacts import RunDir, damaged_output, describe_holder, find_training_state, lock_holder, read_json
from .config import PipelineConfig, config_from_dict
from .curves import read_records
from .stages import Stage, labelled_data, pipeline_stages

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

def _finished(stage: Stage, cfg: PipelineConfig, run: RunDir, expected: str | None) -> StageStatus | None:
    """DONE, DAMAGED (weights or arrays unreadable) or STALE when the stage's summary exists, else None."""
    summary = _read(stage.directory(run) / stage.summary)
    if summary is None:
        return None
    command = stage.command_line(run)
    if expected is not None and summary.get("config_hash") == expected:
        found = damaged_output(stage.directory(run))
        if found is not None:
            return StageStatus(stage.name, DAMAGED, f"{found[0]} is damaged ({found[1]}); `vqvae2 run` redoes the "
                               "stage", command)
        detail, metrics = stage.describe(cfg, run, summary)
        return StageStatus(stage.name, DONE, detail, command, metrics)
    return StageStatus(stage.name, STALE, "finished for another configuration, or on outputs of an earlier stage "
                       "that changed since", command)


def _training(stage: Stage, cfg: PipelineConfig, run: RunDir, expected: str | None) -> StageStatus:
    """A training stage: each of its networks may hold a state and a metrics.jsonl (the classifier stage
    trains two, one after the other)."""
    dirs, steps, command = stage.networks(cfg, run), stage.steps(cfg), stage.command_line(run)
    last = list(dirs.values())[-1]
    for role, d in dirs.items():
        saved = _saved(d / "state")
        logged = [r for r in read_records(d / "metrics.jsonl") if r.get("split", "train") == "train"]
        if saved is None and not logged:
            continue
        if saved is not None and saved[0].get("step", 0) >= steps and d != last:
            continue  # this network is trained; the next one is under way (or about to start)
        if saved is not None and saved[0].get("config_hash") != expected:
            return StageStatus(stage.name, STALE, f"{d.relative_to(run.root)}/state was saved for another "
                               "configuration", f"{command} --force")
        progress = {"step": saved[0]["step"] if saved else 0, "steps": steps,
                    "saved_at": _clock(saved[1]) if saved else None,
                    "last_logged_step": logged[-1]["step"] if logged else None,
                    "last_loss": logged[-1].get("loss") if logged else None}
        prefix = f"{role}: " if len(dirs) > 1 else ""
        return StageStatus(stage.name, IN_PROGRESS, prefix + _progress_detail(progress), command, progress)
    return StageStatus(stage.name, NOT_STARTED, "", command)


def _progress_detail(p: dict) -> str:
    out = f"step {p['last_logged_step'] or p['step']} of {p['steps']}"
    if p["last_loss"] is not None:
        out += f", loss {p['last_loss']:.4g}"
    return out + (f", last save at step {p['step']} ({p['saved_at']})" if p["saved_at"] else ", no save yet")


def _chunked(stage: Stage, run: RunDir) -> StageStatus:
    """A stage that writes chunks to a store (sampling, evaluation's candidates) before its summary."""
    store = stage.directory(run) / stage.store
    key = _read(store / "store.json")
    if key is None:
        return StageStatus(stage.name, NOT_STARTED, "", stage.command_line(run))
    total = -(-key["n"] // key["chunk_size"])
    made = len(list(store.glob("chunk-*.npz")))
    return StageStatus(stage.name, IN_PROGRESS, f"{made} of {total} chunks of {key['n']} samples",
                       stage.command_line(run), {"chunks": made, "of": total})


def _once(stage: Stage, run: RunDir) -> StageStatus:
    """A stage made in one go into a temporary directory renamed into place (codes)."""
    if any(p.is_dir() for p in run.root.glob(f"{stage.directory(run).name}.tmp*")):
        return StageStatus(stage.name, IN_PROGRESS, "being made", stage.command_line(run))
    return StageStatus(stage.name, NOT_STARTED, "", stage.command_line(run))


def stage_status(stage: Stage, cfg: PipelineConfig, run: RunDir) -> StageStatus:
    """Where `stage` stands; a file of it that cannot be read or holds malformed fields makes it DAMAGED,
    never an error: status reports the damage."""
    try:
        expected = stage.expected_hash(cfg, run)
        done = _finished(stage, cfg, run, expected)
        if done is not None:
            return done
        if stage.progress == "training":
            return _training(stage, cfg, run, expected)
        return _chunked(stage, run) if stage.progress == "chunks" else _once(stage, run)
    except READ_FAILURES as e:
        return StageStatus(stage.name, DAMAGED, f"a file of this stage is damaged ({type(e).__name__}: {e}); redo "
                           "it", stage.command_line(run) + (" --force" if stage.restart else ""))


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
    stages = [stage_status(stage, cfg, run) for stage in pipeline_stages(cfg, labelled_data(cfg))]
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
