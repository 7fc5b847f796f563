"""`vqvae2 export`: one folder with model_index.json, components, model card and grid; it loads back by folder and
by Hub repository id (an offline cache laid out here) with the run's samples; a pickle component is refused."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_EVAL, TINY_PRIORS, folder_overrides, make_image_folder

from pipelines.cli import main
from vqvae2 import Pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    argv = ["run", "--preset", "demo", "--run-dir", str(root / "run")]
    for o in [*folder_overrides(make_image_folder(root / "images", n_per_class=20)), *TINY_PRIORS, *TINY_EVAL]:
        argv += ["--set", o]
    assert main(argv) == 0
    return root / "run"


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "faces"
    assert main(["export", "--run-dir", str(run), "--out", str(out), "--license", "mit"]) == 0
    return out


def test_export_writes_components_card_and_grid(run, exported):
    """model_index.json names vqvae, both priors and both classifiers, each folder model.json + model.safetensors; README.md has the Hub's YAML and the report's numbers with provenance; samples.png is the run's grid"""
    index = json.loads((exported / "model_index.json").read_text())
    assert index["levels"] == ["top", "bottom"]
    assert {n: c["model_type"] for n, c in index["components"].items()} == {
        "vqvae": "vqvae2", "prior-top": "pixelsnail", "prior-bottom": "pixelsnail", "classifier": "classifier",
        "classifier-rejection": "classifier"}
    for comp in index["components"].values():
        assert sorted(p.name for p in (exported / comp["path"]).iterdir()) == ["model.json", "model.safetensors"]
    assert sorted(p.name for p in exported.iterdir() if p.is_file()) == ["README.md", "model_index.json", "samples.png"]
    assert (exported / "samples.png").read_bytes() == (run / "samples" / "grid.png").read_bytes()
    card = (exported / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta == {"library_name": "vqvae2", "license": "mit", "datasets": ["images"],
                    "pipeline_tag": "unconditional-image-generation",
                    "tags": ["vqvae2", "vq-vae-2", "pixelsnail", "image-generation", "class-conditional"]}
    report = json.loads((run / "eval" / "report.json").read_text())
    p = report["provenance"]
    for fact in (f"PSNR {report['reconstruction_psnr']:.4g} dB", f"weights sha256 {p['weights_hash']}",
                 f"{p['n_samples']} samples per acceptance rate", f"acceptance rates {p['acceptance_rates']}",
                 f"torch-fidelity {p['torch_fidelity_version']}", f"| 0.5 | {report['rows'][1]['fd']:.4g}", "![samples]"):
        assert fact in card, fact


def test_export_loads_back_with_the_runs_samples(run, exported):
    """Pipeline.from_pretrained(export folder) with the run's seed -> the run's samples.npz, image for image"""
    saved = np.load(run / "samples" / "samples.npz")
    out = Pipeline.from_pretrained(exported, device="cpu")(len(saved["arr_0"]), seed=0, output="uint8")
    assert np.array_equal(out.images.permute(0, 2, 3, 1).numpy(), saved["arr_0"])
    assert np.array_equal(out.codes[1].numpy(), saved["codes_bottom"].astype(np.int64))


FIVE_LINES = """
import torch, numpy as np, sys
from vqvae2 import Pipeline; pipe = Pipeline.from_pretrained("owner/faces")
out = pipe(4, generator=torch.Generator().manual_seed(0))
[im.save(f"face{i}.png") for i, im in enumerate(out.images)]
np.savez("out.npz", images=np.stack([np.asarray(im) for im in out.images]), bottom=out.codes[1].numpy())
try:
    Pipeline.from_pretrained("owner/missing")
except FileNotFoundError as e:
    print("MISSING:", e)
"""


def test_loading_by_repo_id_from_an_offline_hub_cache(exported, tmp_path):
    """A Hub cache (models--owner--faces/snapshots/<sha>, refs/main) holding the export, HF_HUB_OFFLINE=1: the five lines load 'owner/faces' and save PNGs equal to the folder's samples; an uncached repo id is one line naming it"""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--owner--faces"
    shutil.copytree(exported, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", FIVE_LINES], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in work.glob("face*.png")) == [f"face{i}.png" for i in range(4)]
    expected = Pipeline.from_pretrained(exported, device="cpu")(4, generator=torch.Generator().manual_seed(0),
                                                                output="uint8")
    got = np.load(work / "out.npz")
    assert np.array_equal(got["images"], expected.images.permute(0, 2, 3, 1).numpy())
    assert np.array_equal(got["bottom"], expected.codes[1].numpy())
    missing = [line for line in done.stdout.splitlines() if line.startswith("MISSING:")]
    assert len(missing) == 1 and "owner/missing" in missing[0] and "LocalEntryNotFoundError" in missing[0]


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.reliability
def test_a_pickle_component_is_refused_without_running_it(exported, tmp_path):
    """prior-bottom/model.safetensors replaced by a pickle whose loading would run a command, or by a torch.save zip -> one-line ValueError naming the file; the command never runs"""
    _Exploit.marker = tmp_path / "pwned"
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    weights = copy / "prior-bottom" / "model.safetensors"
    weights.write_bytes(pickle.dumps(_Exploit(), protocol=4))
    with pytest.raises(ValueError, match=r"prior-bottom/model\.safetensors is a pickle, not safetensors: refused"):
        Pipeline.from_pretrained(copy, device="cpu")
    torch.save({"w": torch.zeros(2)}, weights)
    with pytest.raises(ValueError, match=r"model\.safetensors is a zip archive \(torch\.save's format"):
        Pipeline.from_pretrained(copy, device="cpu")
    assert not _Exploit.marker.exists()


def test_export_refuses_what_it_would_overwrite_or_an_unfinished_run(run, exported, tmp_path, capsys):
    """--out non-empty and not an export, or an earlier export without --force -> one line, exit 2; --force replaces the export; a run without its bottom prior -> one line naming the command"""
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    assert main(["export", "--run-dir", str(run), "--out", str(other)]) == 2
    assert "not an export" in capsys.readouterr().err and (other / "todo.txt").read_text() == "mine"
    again = tmp_path / "again"
    assert main(["export", "--run-dir", str(run), "--out", str(again)]) == 0
    assert main(["export", "--run-dir", str(run), "--out", str(again)]) == 2
    assert "add --force" in capsys.readouterr().err
    assert main(["export", "--run-dir", str(run), "--out", str(again), "--force"]) == 0
    assert sorted(p.name for p in again.parent.iterdir()) == ["again", "notes"]  # no temporary folder left
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "prior-bottom")
    capsys.readouterr()
    assert main(["export", "--run-dir", str(cut), "--out", str(tmp_path / "x")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "vqvae2 train-prior --run-dir" in err[0] and "--level bottom" in err[0]


def test_push_to_hub_uploads_the_export_folder(run, tmp_path, monkeypatch, capsys):
    """--push-to-hub REPO: the repository is created (private with --private) and the folder uploaded; the card loads REPO; a failed upload is one line"""
    import huggingface_hub
    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw["repo_id"], kw)))
    out = tmp_path / "up"
    assert main(["export", "--run-dir", str(run), "--out", str(out), "--push-to-hub", "me/faces", "--private"]) == 0
    assert [(c[0], c[1]) for c in calls] == [("create", "me/faces"), ("upload", "me/faces")]
    assert calls[0][2]["private"] is True and calls[1][2]["folder_path"] == str(out)
    assert 'Pipeline.from_pretrained("me/faces")' in (out / "README.md").read_text()

    def refuse(**kw):
        raise OSError("401 Client Error: Unauthorized\nmore detail")
    monkeypatch.setattr(huggingface_hub, "upload_folder", refuse)
    capsys.readouterr()
    assert main(["export", "--run-dir", str(run), "--out", str(out), "--push-to-hub", "me/faces", "--force"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "Unauthorized" in err[0] and "me/faces" in err[0]


def test_export_reads_a_run_that_another_process_writes(run, tmp_path):
    """export takes no run-directory lock (it only reads): it works while a writer holds the lock"""
    from pipelines.artifacts import RunDir
    from pipelines.command import busy_refusal
    lock = RunDir(run).lock("vqvae2 sample").acquire()
    try:
        argv = ["export", "--run-dir", str(run), "--out", str(tmp_path / "while-locked")]
        assert busy_refusal(argv) is None and main(argv) == 0
    finally:
        lock.release()
