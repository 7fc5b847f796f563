"""Watching a run: validation points, curves.png, progress pictures, trackers, `vqvae2 status`."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pipelines.artifacts import RunDir, find_training_state, read_json
from pipelines.cli import load_run_config, main
from pipelines.codes import first_codes
from pipelines.config import TRACKERS, preset_names, resolve_config
from pipelines.curves import plot_curves, read_records
from pipelines.images import grid_image, to_uint8
from pipelines.stage1 import train_vqvae
from vqvae2.vqvae import VQVAE2

from conftest import TINY_EVAL, TINY_PRIORS, folder_overrides, killed_after, make_image_folder

REPO = Path(__file__).resolve().parents[1]
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
SECTIONS = ("train_vqvae", "train_prior", "train_classifier")
WATCH = [f"{s}.{k}" for s in SECTIONS for k in ("val_every=2", "image_every=2")]
TENSORBOARD = [f"{s}.log_with='tensorboard'" for s in SECTIONS] if HAS_TENSORBOARD else []
UNWATCH = [f"{s}.{k}" for s in SECTIONS for k in ("val_every=0", "image_every=0", "log_with=''")]


def _cli(*args, overrides=()):
    argv = list(args)
    for o in overrides:
        argv += ["--set", o]
    return main(argv)


def _status(run) -> dict:
    from pipelines.status import run_status
    return run_status(RunDir(run))


def _stages(status: dict) -> dict:
    return {s["stage"]: s for s in status["stages"]}


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    """Every stage of a tiny run, each training stage validating and drawing every 2 steps."""
    root = tmp_path_factory.mktemp("watch")
    overrides = [*folder_overrides(make_image_folder(root / "images", n_per_class=20)), *TINY_PRIORS, *TINY_EVAL,
                 *WATCH, *TENSORBOARD]
    assert _cli("run", "--preset", "demo", "--run-dir", str(root / "run"), overrides=overrides) == 0
    return root / "run"


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _grid_size(n: int, rows: int, side: int = 16) -> tuple[int, int]:
    """(width, height) of grid_image's picture: cells upscaled to 64 px, 2 px padding around each."""
    cell = side * (64 // side)
    return n * (cell + 2) + 2, rows * (cell + 2) + 2


# 1. validation points and curves.png

def test_validation_points_and_curves_of_every_training_stage(watched_run):
    # stage dir -> (steps, validation keys): val_every=2 gives points at the even steps before the last
    expected = {"vqvae": (6, {"mse", "psnr", "perplexity_top", "codes_used_bottom", "dead_codes_top"}),
                "prior-top": (4, {"nll_bits", "accuracy"}), "prior-bottom": (4, {"nll_bits", "accuracy"}),
                "classifier": (3, {"accuracy"}), "classifier/rejection": (3, {"accuracy"})}
    for stage, (steps, keys) in expected.items():
        records = read_records(watched_run / stage / "metrics.jsonl")
        val = [r for r in records if r.get("split") == "val"]
        assert [r["step"] for r in val] == list(range(2, steps, 2)), stage
        assert all(keys <= set(r) for r in val), stage
        train_steps = [r["step"] for r in records if "split" not in r]
        assert train_steps == sorted(train_steps) and train_steps[-1] == steps, stage
        curves = Image.open(watched_run / stage / "curves.png")
        assert curves.format == "PNG" and curves.size[0] > 300 and curves.size[1] > 200, stage
    codes_used = [r["codes_used_top"] for r in read_records(watched_run / "vqvae" / "metrics.jsonl") if "split" in r]
    assert all(1 <= c <= 16 for c in codes_used)  # 16 codes in the tiny codebook


def test_curves_read_only_complete_lines(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "loss": 2.0, "lr": 1e-3, "mse": 0.4}, {"step": 2, "split": "val", "mse": 0.1, "psnr": 10.0},
             {"step": 2, "loss": 1.5, "lr": 1e-3, "mse": 0.3}]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 3, "loss": 1.')  # cut by a kill
    assert read_records(jsonl) == lines
    out = plot_curves(jsonl, tmp_path / "curves.png", final={"step": 3, "split": "val", "mse": 0.05})
    assert out == tmp_path / "curves.png" and Image.open(out).format == "PNG"
    assert plot_curves(tmp_path / "missing.jsonl", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


# 2. pictures during training

def test_vqvae_reconstruction_pictures_of_fixed_validation_images(watched_run):
    progress = watched_run / "vqvae" / "progress"
    assert sorted(p.name for p in progress.iterdir()) == ["recon-000002.png", "recon-000004.png", "recon-000006.png"]
    n = min(8, read_json(watched_run / "codes" / "codes.json")["n"]["val"])
    pictures = [_png(progress / f"recon-{s:06d}.png") for s in (2, 4, 6)]
    for p in pictures:
        assert p.shape == (_grid_size(n, 2)[1], _grid_size(n, 2)[0], 3)
    half = pictures[0].shape[0] // 2
    assert all(np.array_equal(p[:half], pictures[0][:half]) for p in pictures)  # the same originals every time
    assert not np.array_equal(pictures[0][half:], pictures[1][half:])  # reconstructions change as it trains
    assert np.array_equal(_png(watched_run / "vqvae" / "recon.png"), pictures[-1])  # the latest, from the final weights


def test_prior_pictures_decode_the_validation_codes_and_samples(watched_run):
    run = RunDir(watched_run)
    vqvae = VQVAE2.from_pretrained(run.vqvae).eval()
    codes, _ = first_codes(run, "val", n=8)
    with torch.no_grad():
        originals = np.asarray(grid_image(to_uint8(vqvae.decode_codes(codes)), nrow=len(codes[0])).convert("RGB"))
    for level in ("top", "bottom"):
        progress = run.prior(level) / "progress"
        assert sorted(p.name for p in progress.iterdir()) == ["samples-000002.png", "samples-000004.png"]
        picture = _png(progress / "samples-000004.png")
        assert picture.shape == (_grid_size(len(codes[0]), 2)[1], _grid_size(len(codes[0]), 2)[0], 3)
        half = originals.shape[0]
        assert np.array_equal(picture[:half], originals)  # top row: the items' own codes, decoded
        assert not np.array_equal(picture[half - 2:], originals)  # bottom row: this level sampled
        assert np.array_equal(_png(run.prior(level) / "samples.png"), picture)


def test_watching_changes_no_weight_and_resumes_exactly(tmp_path):
    """A run validating and drawing every step, killed and resumed, ends with the weights of a plain run."""
    folder = make_image_folder(tmp_path / "images")
    plain, watched = RunDir(tmp_path / "plain"), RunDir(tmp_path / "watched")
    train_vqvae(resolve_config("demo", folder_overrides(folder)), plain)
    cfg = resolve_config("demo", [*folder_overrides(folder), "train_vqvae.val_every=1", "train_vqvae.image_every=1"])
    with killed_after(3):  # dies after step 3; the last state is step 2
        train_vqvae(cfg, watched)
    train_vqvae(cfg, watched)
    a, b = load_file(str(plain.vqvae / "model.safetensors")), load_file(str(watched.vqvae / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    records = read_records(watched.vqvae / "metrics.jsonl")
    assert [r["step"] for r in records if "split" in r] == [1, 2, 3, 4, 5]  # no point twice after the resume
    assert [r for r in records if "split" not in r] == read_records(plain.vqvae / "metrics.jsonl")


def test_watching_leaves_the_prior_and_classifier_weights_alone(watched_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(watched_run, copy)
    assert _cli("train-prior", "--run-dir", str(copy), "--level", "bottom", "--force", overrides=UNWATCH) == 0
    assert _cli("train-classifier", "--run-dir", str(copy), "--force", overrides=UNWATCH) == 0
    for stage in ("prior-bottom", "classifier", "classifier/rejection"):
        assert not (copy / stage / "progress").exists() and not (copy / stage / "logs").exists()
        a, b = (load_file(str(r / stage / "model.safetensors")) for r in (watched_run, copy))
        assert all(torch.equal(a[k], b[k]) for k in a), stage


def test_watch_options_leave_the_stage_hashes_alone():
    # the fashion32 preset's hashes recorded before these options existed (as in test_stage1)
    from pipelines import stage3
    from pipelines.stage1 import stage_hash
    cfg = resolve_config("fashion32", ["train_vqvae.val_every=50", "train_vqvae.image_every=100",
                                       "train_vqvae.log_with='tensorboard'", "train_classifier.val_every=10",
                                       "train_vqvae.activation_checkpointing=true", "data.workers=1",
                                       "data.cache_dir='/elsewhere'"])
    assert stage_hash(cfg) == "9073958a6b4a4db6" and stage3.classifier_hash(cfg) == "f50a9b053a9bac40"


# 3. trackers

def test_tensorboard_event_files_hold_the_scalars_and_pictures(watched_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logs = EventAccumulator(str(watched_run / "vqvae" / "logs" / "train-vqvae")).Reload()
    scalars = set(logs.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/mse", "train/perplexity_top", "val/mse", "val/psnr",
            "val/codes_used_top", "val/perplexity_bottom"} <= scalars
    assert [e.step for e in logs.Scalars("train/loss")] == [2, 4, 6]
    assert [e.step for e in logs.Scalars("val/psnr")] == [2, 4, 6]  # periodic points and the final evaluation
    logged = read_records(watched_run / "vqvae" / "metrics.jsonl")
    assert [e.value for e in logs.Scalars("train/loss")] == pytest.approx([r["loss"] for r in logged if "loss" in r])
    assert [e.step for e in logs.Images("recon")] == [2, 4, 6]
    prior = EventAccumulator(str(watched_run / "prior-bottom" / "logs" / "train-prior-bottom")).Reload()
    assert {"train/nll_bits", "val/nll_bits", "val/accuracy"} <= set(prior.Tags()["scalars"])
    assert "samples" in prior.Tags()["images"]


def test_trackers_are_off_by_default_and_tensorboard_is_imported_only_when_asked(tmp_path):
    folder = make_image_folder(tmp_path / "images")
    script = (
        "import sys\n"
        "from pipelines.cli import main\n"
        "def loaded(): return any(m.split('.')[0] == 'tensorboard' or m.startswith('torch.utils.tensorboard') "
        "for m in sys.modules)\n"
        f"sets = [a for o in {folder_overrides(folder)!r} for a in ('--set', o)]\n"
        f"assert main(['train-vqvae', '--preset', 'demo', '--run-dir', {str(tmp_path / 'a')!r}, *sets]) == 0\n"
        "print('default', loaded())\n"
        f"if {HAS_TENSORBOARD}:\n"
        f"    main(['train-vqvae', '--preset', 'demo', '--run-dir', {str(tmp_path / 'b')!r}, *sets, "
        "'--set', \"train_vqvae.log_with='tensorboard'\"])\n"
        "    print('asked', loaded())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "default False" in out.stdout
    assert not (tmp_path / "a" / "vqvae" / "logs").exists()
    if HAS_TENSORBOARD:  # the check above can see an import
        assert "asked True" in out.stdout


def test_tracker_names_follow_accelerate():
    from accelerate.utils import LoggerType
    assert set(TRACKERS) == {t.value for t in LoggerType} - {"all"}


@pytest.mark.reliability
def test_unknown_or_missing_tracker_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """log_with names an unknown tracker, or one whose package is not installed -> error naming the key or the pip command; nothing trained"""
    overrides = folder_overrides(make_image_folder(tmp_path / "images"))
    with pytest.raises(ValueError, match="train_vqvae.log_with names an unknown tracker 'tensorbord'"):
        resolve_config("demo", [*overrides, "train_vqvae.log_with='tensorbord'"])
    import pipelines.watch
    monkeypatch.setattr(pipelines.watch, "_installed", lambda package: package != "tensorboard")
    run = tmp_path / "run"
    assert _cli("train-vqvae", "--preset", "demo", "--run-dir", str(run),
                overrides=[*overrides, "train_vqvae.log_with='tensorboard'"]) == 2
    err = capsys.readouterr().err
    assert "the tensorboard tracker needs the 'tensorboard' package" in err and "pip install -e .[tensorboard]" in err
    assert not (run / "vqvae").exists()


# 4. vqvae2 status

def test_status_of_a_fresh_run(tmp_path, capsys):
    assert _status(tmp_path / "nothing") == {"run_dir": str(tmp_path / "nothing"), "config": None, "stages": [],
                                             "next": f"vqvae2 run --preset PRESET --run-dir {tmp_path / 'nothing'}",
                                             "next_stage": None, "writer": None}
    run = tmp_path / "run"
    load_run_config(RunDir(run), "demo", folder_overrides(make_image_folder(tmp_path / "images")))
    status = _status(run)
    assert [(s["stage"], s["state"]) for s in status["stages"]] == [
        ("vqvae", "not started"), ("codes", "not started"), ("prior-top", "not started"),
        ("prior-bottom", "not started"), ("samples", "not started"), ("classifier", "not started"),
        ("eval", "not started")]
    assert status["next"] == f"vqvae2 train-vqvae --run-dir {run}"
    assert _cli("status", "--run-dir", str(run)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["vqvae", "not", "started"] and "next: vqvae2 train-vqvae" in out


def test_status_of_a_finished_run_shows_each_stage_key_metric(watched_run, capsys):
    assert _cli("status", "--run-dir", str(watched_run), "--json") == 0
    status = json.loads(capsys.readouterr().out)
    stages = _stages(status)
    assert all(s["state"] == "done" for s in status["stages"]) and status["next"] is None
    vq = read_json(watched_run / "vqvae" / "metrics.json")
    assert stages["vqvae"]["metrics"] == {"psnr": vq["psnr"], "codes_used": vq["codes_used"]}
    for level in ("top", "bottom"):
        m = read_json(watched_run / f"prior-{level}" / "metrics.json")
        assert stages[f"prior-{level}"]["metrics"]["nll_bits"] == m["nll_bits"]
    cls = read_json(watched_run / "classifier" / "metrics.json")["classifiers"]
    assert stages["classifier"]["metrics"]["accuracy"] == {r: c["accuracy"] for r, c in cls.items()}
    rows = read_json(watched_run / "eval" / "report.json")["rows"]
    assert stages["eval"]["metrics"] == {"fd_label": "FD-domain", "fd": {"1": rows[0]["fd"], "0.5": rows[1]["fd"]}}
    assert _cli("status", "--run-dir", str(watched_run)) == 0
    text = capsys.readouterr().out
    assert f"PSNR {vq['psnr']:.2f} dB" in text and "FD-domain" in text and "next: nothing, every stage is done" in text


def test_status_of_a_killed_run_and_of_a_changed_config(tmp_path):
    folder = make_image_folder(tmp_path / "images")
    run = RunDir(tmp_path / "run")
    overrides = [*folder_overrides(folder), "train_vqvae.log_every=1"]
    cfg = load_run_config(run, "demo", overrides)
    with killed_after(3):  # as if killed after step 3; the last save is step 2
        train_vqvae(cfg, run)
    with open(run.vqvae / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a line cut by the kill
    os.replace(run.vqvae / "state", run.vqvae / "state.old")  # killed between the two renames of a save
    last = read_records(run.vqvae / "metrics.jsonl")[-1]
    vq = _stages(_status(run.root))["vqvae"]
    assert vq["state"] == "in progress" and vq["metrics"]["step"] == 2 and vq["metrics"]["steps"] == 6
    assert vq["metrics"]["last_logged_step"] == 3 and vq["metrics"]["last_loss"] == last["loss"]
    assert vq["metrics"]["saved_at"] is not None and "step 3 of 6" in vq["detail"]
    assert _status(run.root)["next"] == f"vqvae2 train-vqvae --run-dir {run.root}"
    # the config changed since the state was saved: training would refuse it without --force
    load_run_config(run, "demo", [*overrides, "train_vqvae.lr=0.01"])
    vq = _stages(_status(run.root))["vqvae"]
    assert vq["state"] == "stale" and vq["command"].endswith("--force")
    # a finished stage whose config changed since
    shutil.rmtree(run.vqvae)
    train_vqvae(cfg, run)
    assert _stages(_status(run.root))["vqvae"]["state"] == "stale"
    load_run_config(run, "demo", overrides)
    assert [s["state"] for s in _status(run.root)["stages"]][:2] == ["done", "not started"]


@pytest.mark.reliability
def test_status_while_another_process_trains_and_after_a_sigkill(tmp_path):
    """vqvae2 status while train-vqvae writes the run, then after SIGKILL -> never fails; in progress with the step of the last save"""
    folder = make_image_folder(tmp_path / "images")
    run = tmp_path / "run"
    load_run_config(RunDir(run), "demo", [*folder_overrides(folder), "train_vqvae.steps=5000",
                                          "train_vqvae.save_every=3", "train_vqvae.log_every=1",
                                          "train_vqvae.val_every=4"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "train-vqvae", "--run-dir", str(run)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = set()
    try:
        t0 = time.time()
        while time.time() - t0 < 120 and proc.poll() is None:
            vq = _stages(_status(run))["vqvae"]
            seen.add(vq["state"])
            if vq["state"] == "in progress" and vq["metrics"]["step"] >= 9:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert "in progress" in seen and seen <= {"not started", "in progress"}
    saved = json.loads((find_training_state(run / "vqvae" / "state") / "progress.json").read_text())["step"]
    vq = _stages(_status(run))["vqvae"]
    assert vq["state"] == "in progress" and vq["metrics"]["step"] == saved >= 9


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_watches_its_training_by_default(preset):
    """Validation points and progress pictures are on in every preset, at least two per training run"""
    cfg = resolve_config(preset)
    for name, tcfg in [("train_vqvae", cfg.train_vqvae), *((f"prior.{lv}", cfg.prior_train(lv)) for lv in cfg.prior)]:
        assert 0 < tcfg.val_every and 0 < tcfg.image_every, name
        assert tcfg.steps // tcfg.image_every >= 2 and tcfg.steps // tcfg.val_every >= 2, name
