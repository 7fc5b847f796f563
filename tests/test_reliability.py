"""Faults survived and bad inputs refused. Each test's docstring is one row of the table
printed by benchmarks/faults.py: "<fault or bad input> -> <what happens>"."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.artifacts import RunDir, atomic_write, save_training_state, find_training_state
from pipelines.cli import load_run_config, main
from pipelines.config import TrainConfig
from pipelines.train import TrainingError, train
from vqvae2.config import VQVAEConfig
from vqvae2.vqvae import VQVAE2

from conftest import TINY_EVAL, TINY_PRIORS, folder_overrides, make_image_folder

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[1]


def _cli_args(command, run, overrides, preset=True):
    argv = [command, "--run-dir", str(run)] + (["--preset", "demo"] if preset else [])
    for o in overrides:
        argv += ["--set", o]
    return argv


def _spawn(argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _progress_step(state_dir: Path) -> int:
    try:
        return json.loads((state_dir / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture
def long_overrides(tmp_path):
    folder = make_image_folder(tmp_path / "images")
    return [*folder_overrides(folder), "train_vqvae.steps=150", "train_vqvae.save_every=5", "train_vqvae.log_every=1"]


STAGES = {  # stage -> (command, stage directory, training section)
    "vqvae": (["train-vqvae"], "vqvae", "train_vqvae"),
    "prior": (["train-prior", "--level", "bottom"], "prior-bottom", "train_prior"),
    "classifier": (["train-classifier"], "classifier", "train_classifier"),
    # killed while the second (rejection, mixup-trained) network trains, the first one finished
    "rejection-classifier": (["train-classifier"], "classifier/rejection", "train_classifier"),
}


def _prepare(run: Path, folder: Path, stage: str) -> None:
    """RUN/config.json for a long run of `stage` and, for a prior, the VQ-VAE and codes it needs."""
    _, _, section = STAGES[stage]
    overrides = [*folder_overrides(folder), *TINY_PRIORS, *TINY_EVAL, f"{section}.steps=150",
                 f"{section}.save_every=5", f"{section}.log_every=1", f"{section}.batch_size=4"]
    if stage == "prior":
        assert main(_cli_args("train-vqvae", run, [*overrides, "train_vqvae.steps=4"])) == 0
        assert main(["extract-codes", "--run-dir", str(run)]) == 0
    else:
        load_run_config(RunDir(run), "demo", overrides)


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_mid_training_resumes_to_the_same_weights(tmp_path, stage):
    """SIGKILL during train-vqvae / train-prior / train-classifier, then the same command again -> resumes from the last state; final weights equal an uninterrupted run's"""
    command, stage_dir, _ = STAGES[stage]
    folder = make_image_folder(tmp_path / "images")
    full, cut = tmp_path / "full", tmp_path / "cut"
    for run in (full, cut):
        _prepare(run, folder, stage)
    proc = _spawn([*command, "--run-dir", str(full)])  # same thread count as the runs below
    assert proc.wait(timeout=300) == 0
    state = cut / stage_dir / "state"
    proc = _spawn([*command, "--run-dir", str(cut)])
    assert _wait_for(lambda: _progress_step(state) >= 10, proc), proc.communicate()[0][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _progress_step(state)
    assert 10 <= killed_at < 150 and not (cut / stage_dir / "metrics.json").exists()
    proc = _spawn([*command, "--run-dir", str(cut)])
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and f"resuming from {state} at step {killed_at}" in out, out[-2000:]
    weights = sorted(p.relative_to(full) for p in (full / stage_dir).rglob("model.safetensors"))
    assert weights and weights == sorted(p.relative_to(cut) for p in (cut / stage_dir).rglob("model.safetensors"))
    for w in weights:
        assert _same_weights(full / w, cut / w), w


def test_sigterm_saves_state_before_exiting(tmp_path, long_overrides):
    """SIGTERM (or SIGINT) during training -> state saved at the current step, exit code 130; re-running resumes from there"""
    run = tmp_path / "run"
    overrides = [*long_overrides, "train_vqvae.save_every=100000"]  # only the signal can save a state
    proc = _spawn(_cli_args("train-vqvae", run, overrides))
    jsonl = run / "vqvae" / "metrics.jsonl"
    assert _wait_for(lambda: jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    step = _progress_step(run / "vqvae" / "state")
    assert 3 <= step < 150 and "state saved at step" in out
    assert main(_cli_args("train-vqvae", run, [], preset=False)) == 0
    assert json.loads((run / "vqvae" / "metrics.json").read_text())["steps"] == 150


def test_non_finite_loss_stops_training_and_keeps_the_last_good_state(tmp_path):
    """Loss becomes NaN at step 5 -> TrainingError naming step 5; the state of step 4 is kept"""
    model = torch.nn.Linear(2, 1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 2), torch.randn(64, 1))
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        loss = (m(batch[0]) - batch[1]).pow(2).mean()
        return (loss * float("nan") if calls["n"] == 5 else loss), {}

    cfg = TrainConfig(steps=10, batch_size=4, save_every=2, mixed_precision="no", warmup_steps=1)
    with pytest.raises(TrainingError, match="at step 5"):
        train(model, data, cfg, tmp_path / "stage", loss_fn, {"config_hash": "x"})
    assert _progress_step(tmp_path / "stage" / "state") == 4


def test_interrupted_write_leaves_no_partial_file(tmp_path):
    """A write killed half-way (exception inside the writer) -> the previous file is intact, no temporary left"""
    target = tmp_path / "report.json"
    target.write_text("old")

    def half_then_die(tmp):
        Path(tmp).write_text("new, but only ha")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_die)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_state_swap_interrupted_between_renames_is_recovered(tmp_path):
    """Kill between the two renames of state/ -> the complete previous state (state.old/) is found and used"""
    model, opt = torch.nn.Linear(2, 2), None
    opt = torch.optim.Adam(model.parameters())
    save_training_state(tmp_path / "state", model, opt, {"step": 3})
    os.replace(tmp_path / "state", tmp_path / "state.old")  # as if killed after moving the old state aside
    assert find_training_state(tmp_path / "state") == tmp_path / "state.old"


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    """Truncated model.safetensors -> ValueError naming the file and saying to re-run the stage"""
    model = VQVAE2(VQVAEConfig(in_channels=1, image_size=8, channels=8, res_channels=4, n_res_blocks=1,
                               embed_dim=4, codebook_size=8, strides=[2]))
    model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated or corrupted.*re-run"):
        VQVAE2.from_pretrained(tmp_path)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_in_place_of_a_checkpoint_does_not_execute(tmp_path):
    """A malicious pickle saved as model.safetensors and state files -> refused, named as a pickle; its code never runs"""
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    payload = pickle.dumps(_Exploit())
    model = VQVAE2(VQVAEConfig(in_channels=1, image_size=8, channels=8, res_channels=4, n_res_blocks=1,
                               embed_dim=4, codebook_size=8, strides=[2]))
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(payload)
    with pytest.raises(ValueError, match="is a pickle, not safetensors: refused"):
        VQVAE2.from_pretrained(tmp_path / "m")
    # a crafted training state: every tensor file replaced by the pickle
    opt = torch.optim.Adam(model.parameters())
    save_training_state(tmp_path / "state", model, opt, {"step": 1, "config_hash": "h"})
    for f in (tmp_path / "state").glob("*.safetensors"):
        f.write_bytes(payload)
    cfg = TrainConfig(steps=2, batch_size=2, mixed_precision="no")
    data = torch.utils.data.TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4))
    with pytest.raises(ValueError, match="is a pickle, not safetensors: refused"):
        train(model, data, cfg, tmp_path, lambda m, b: (m(b[0]).recon.mean(), {}), {"config_hash": "h"})
    assert not marker.exists()


PROJECT_DIRS = ("vqvae2", "pipelines", "eval", "benchmarks")


def _project_files():
    return [p for d in PROJECT_DIRS for p in (REPO / d).rglob("*.py")]


def test_no_pickle_loading_anywhere_in_the_code():
    """Source scan: no pickle.load / torch.load without weights_only=True / np.load with allow_pickle=True"""
    offenders = []
    for path in _project_files():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "pickle.load" in line or "allow_pickle=True" in line or \
                    ("torch.load(" in line and "weights_only=True" not in line):
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert offenders == []


# Every call in torch-fidelity that can deserialise a file, and why no user path of this project reaches it.
# A new torch-fidelity with another such call fails the test below until someone reads it and adds it here.
TORCH_FIDELITY_LOADS = {
    ("feature_extractor_inceptionv3.py", "__init__", "torch.load"):
        "reached with feature_extractor_weights_path: SafeInceptionV3 refuses any path; weights come from "
        "eval.features.load_inception_state_dict (weights_only=True)",
    ("feature_extractor_inceptionv3.py", "__init__", "load_state_dict_from_url"):
        "swapped by SafeInceptionV3.__init__ for the already-verified state dict; nothing is downloaded",
    ("feature_extractor_vgg16.py", "__init__", "torch.load"): "vgg16 extractors are never built (FeatureExtractor "
        "refuses torch-fidelity's own classes)",
    ("feature_extractor_clip.py", "__init__", "torch.jit.load"): "clip extractors are never built",
    ("feature_extractor_clip.py", "__init__", "load_state_dict_from_url"): "clip extractors are never built",
    ("feature_extractor_dinov2.py", "__init__", "torch.hub.load"): "dinov2 extractors are never built",
    ("sample_similarity_lpips.py", "__init__", "load_state_dict_from_url"): "LPIPS / PPL is never computed",
    ("utils.py", "prepare_input_from_descriptor", "torch.jit.load"): "reached when an input is a path string; the "
        "project never passes inputs to torch-fidelity, only features to its metric functions",
    ("utils.py", "cache_lookup_one_recompute_on_miss", "torch.load"): "reached only with cache=True (calculate_*); "
        "the project never calls calculate_* and keeps its statistics in .npz files read with allow_pickle=False",
    ("utils.py", "cache_lookup_group_recompute_all_on_any_miss", "torch.load"): "as above: only with cache=True",
}
LOADERS = {"torch.load", "torch.jit.load", "torch.hub.load", "pickle.load", "pickle.loads", "np.load", "numpy.load",
           "load_state_dict_from_url", "torch.hub.load_state_dict_from_url"}
# what the project may take from torch-fidelity: registry, base classes, feature extraction, metric functions
TORCH_FIDELITY_NAMES = {"FeatureExtractorBase", "FeatureExtractorInceptionV3", "FEATURE_EXTRACTORS_REGISTRY",
                        "register_feature_extractor", "create_feature_extractor", "fid_features_to_statistics",
                        "fid_statistics_to_metric", "isc_features_to_metric", "kid_features_to_metric",
                        "prc_features_to_metric", "load_state_dict_from_url", "__version__"}


def _dotted(node):
    import ast
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def test_dependency_loaders_are_not_reached_with_user_paths():
    """Source scan of dependencies: every deserialising call in torch-fidelity is listed with why no user path reaches it; the project uses only vetted torch-fidelity names and no torchvision dataset class (CIFAR-10's are pickles)"""
    import ast
    import torch_fidelity
    root = Path(torch_fidelity.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Call) and _dotted(node.func) in LOADERS:
                        found.add((path.name, fn.name, _dotted(node.func)))
    assert found == set(TORCH_FIDELITY_LOADS), (
        f"torch-fidelity {torch_fidelity.__version__} has loader calls not reviewed here: "
        f"{sorted(found - set(TORCH_FIDELITY_LOADS))}; gone: {sorted(set(TORCH_FIDELITY_LOADS) - found)}")
    used, offenders = set(), []
    for path in _project_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch_fidelity"):
                used |= {a.name for a in node.names}
            elif isinstance(node, ast.Attribute) and _dotted(node) and _dotted(node).startswith("torch_fidelity."):
                used.add(_dotted(node).split(".")[-1])
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                module = getattr(node, "module", None) or ""
                names = [module] + [a.name for a in node.names]
                if any(n.startswith("torchvision.datasets") or (n == "datasets" and module == "torchvision")
                       for n in names):
                    offenders.append(f"{where}: imports torchvision.datasets (its CIFAR-10 class unpickles files)")
            elif isinstance(node, ast.keyword) and node.arg in ("feature_extractor_weights_path", "cache_root"):
                offenders.append(f"{where}: passes {node.arg}= to a dependency")
    assert used <= TORCH_FIDELITY_NAMES, f"unvetted torch-fidelity names used: {sorted(used - TORCH_FIDELITY_NAMES)}"
    assert offenders == []


@pytest.mark.parametrize("override, message", [
    ("vqvae.chanels=8", "unknown key 'vqvae.chanels'; did you mean 'channels'"),
    ("sample.nn=3", "unknown key 'sample.nn'; did you mean 'n'"),
    ("train_vqvae.steps=-5", "train_vqvae.steps must be >= 1, got -5"),
    ("train_vqvae.steps='many'", "train_vqvae.steps must be an int, got 'many'"),
    ("vqvae.codebook_size=70000", "codebook_size must be in [2, 65535] (codes are stored as uint16), got 70000"),
    ("vqvae.strides=[8, 8]", "do not divide vqvae.image_size 32"),
    ("data.name='imagenet'", "data.name must be one of"),
    ("prior.middle.channels=8", "prior.middle: unknown level 'middle'"),
    ("prior.top.chanels=16", "unknown key 'prior.top.chanels'; did you mean 'channels'"),
    ("prior.top.n_heads=5", "prior.top.channels (64) must be divisible by prior.top.n_heads (5)"),
    ("prior.top.train.stepz=5", "unknown key 'prior.top.train.stepz'; did you mean 'steps'"),
    ("prior.top.class_conditional=2", "prior.top.class_conditional must be true or false, got 2"),
    ("classifier.chanels=[8]", "unknown key 'classifier.chanels'; did you mean 'channels'"),
    ("classifier.num_classes=3", "classifier.num_classes is set from the data and cannot be configured"),
])
def test_bad_configuration_is_a_clear_error_and_writes_nothing(tmp_path, capsys, override, message):
    """Unknown key / wrong type / negative steps / codebook > 65535 / strides not dividing / unknown level / a prior's or the classifier's misspelled key or bad value (checked before stage 1, not at their stage) -> error naming the key and value; nothing written"""
    run = tmp_path / "run"
    assert main(["train-vqvae", "--preset", "demo", "--run-dir", str(run), "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("setup, message", [
    ("missing", "not found"),
    ("empty", "no image files"),
])
def test_missing_or_empty_data_directory(tmp_path, capsys, setup, message):
    """Missing or empty data directory -> error naming the directory; no run artefact written"""
    root = tmp_path / "data"
    if setup == "empty":
        root.mkdir()
    run = tmp_path / "run"
    assert main(["train-vqvae", "--preset", "demo", "--run-dir", str(run), "--set", "data.name='folder'",
                 "--set", f"data.root='{root}'"]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and message in err.lower()
    assert not (run / "vqvae").exists()


def test_corrupt_image_in_folder_is_named(tmp_path, capsys):
    """A truncated PNG in a training folder read per step -> error naming the file before the first step, even with DataLoader workers (or skipped with data.skip_bad_files=true, the count reported)"""
    folder = make_image_folder(tmp_path / "images")
    bad = folder / "cats" / "000.png"
    bad.write_bytes(bad.read_bytes()[:40])
    run = tmp_path / "run"
    # one step over all 12 training images, then validation over the other 4: every file is read
    overrides = [*folder_overrides(folder), "train_vqvae.steps=1", "train_vqvae.batch_size=12"]
    assert main(_cli_args("train-vqvae", run, [*overrides, "train_vqvae.num_workers=2"])) == 2
    err = capsys.readouterr().err
    assert "000.png" in err and "Traceback" not in err
    assert not (run / "vqvae" / "model.safetensors").exists()
    assert not (run / "vqvae" / "metrics.jsonl").exists()  # refused before the first step
    skip = [*overrides, "train_vqvae.batch_size=4", "data.skip_bad_files=true"]
    assert main(_cli_args("train-vqvae", tmp_path / "run2", skip)) == 0
    assert "skipped 1 unreadable image file(s)" in capsys.readouterr().out


def test_missing_previous_stage_is_explained(tmp_path, capsys):
    """extract-codes / train-prior / sample before the stage they need -> error saying which command to run first"""
    folder = make_image_folder(tmp_path / "images")
    run = tmp_path / "run"
    assert main(["train-prior", "--run-dir", str(run), "--level", "top"]) == 2
    assert "--preset" in capsys.readouterr().err  # no config yet: say how to start
    assert main(_cli_args("train-vqvae", run, [*folder_overrides(folder), "train_vqvae.steps=1"])) == 0
    os.remove(run / "vqvae" / "model.safetensors")
    assert main(["extract-codes", "--run-dir", str(run)]) == 2
    assert "vqvae2 train-vqvae" in capsys.readouterr().err
