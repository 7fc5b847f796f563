"""Damaged files and odd inputs: one line naming the file or value, never a traceback; `status` reports
damage instead of failing; a failed write leaves nothing half-written."""
import errno
import json

import numpy as np
import pytest
import torch
from PIL import Image

from eval.metrics import ReferenceStats
from pipelines import cli
from pipelines.artifacts import RunDir, load_npy, save_npy, save_training_state
from pipelines.cli import load_run_config, main
from pipelines.status import DAMAGED, render_status, run_status
from pipelines.vary import load_image

from conftest import folder_overrides, make_image_folder

pytestmark = pytest.mark.reliability


def test_a_npy_with_a_damaged_header_is_a_clear_error(tmp_path):
    """A codes .npy whose header was overwritten (unbalanced brackets) -> ValueError naming the file, not tokenize's error"""
    path = save_npy(tmp_path / "top.npy", np.zeros((4, 2, 2), np.uint16))
    data = bytearray(path.read_bytes())
    end = data.index(b"}")
    data[end:end + 1] = b" "  # the header dict never closes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"top\.npy is truncated or not a \.npy array"):
        load_npy(path)


def test_truncated_reference_statistics_are_a_clear_error(tmp_path):
    """A reference-statistics .npz cut short -> ValueError naming the file"""
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(4), sigma=np.eye(4), extractor=np.array("x"), weights_sha256=np.array("y"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"stats\.npz is not a readable \.npz of statistics"):
        ReferenceStats.load(path)


def test_a_decompression_bomb_given_to_vary_is_refused(tmp_path, monkeypatch):
    """`vary --image` on an image past PIL's pixel limit (a decompression bomb) -> ValueError naming the file"""
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64)  # 64x64 is then more than twice the limit
    with pytest.raises(ValueError, match=r"cannot read image file .*big\.png"):
        load_image(path, 16, 3)


def test_a_failed_state_save_leaves_nothing_behind(tmp_path, monkeypatch):
    """A full disk while a training state is saved -> the previous state stays, no temporary directory is left"""
    import pipelines.artifacts as artifacts
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    save_training_state(tmp_path / "state", model, opt, {"step": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))
    monkeypatch.setattr(artifacts, "save_file", full)
    with pytest.raises(OSError):
        save_training_state(tmp_path / "state", model, opt, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert json.loads((tmp_path / "state" / "progress.json").read_text()) == {"step": 1}


def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """A command that fills the disk -> one line saying so and what to do, exit code 2"""
    def full(args, run):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    monkeypatch.setattr(cli, "_dispatch", full)
    assert main(["train-vqvae", "--run-dir", str(tmp_path), "--preset", "demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqvae2 train-vqvae: error: the disk is full") and len(err.splitlines()) == 1


@pytest.fixture
def configured_run(tmp_path):
    run = RunDir(tmp_path / "run")
    load_run_config(run, "demo", folder_overrides(make_image_folder(tmp_path / "images")))
    return run


@pytest.mark.parametrize("name, content", [
    ("vqvae/metrics.json", "@@stage1@@"),  # the current hash, fields of the wrong type
    ("vqvae/metrics.json", "[1, 2]"),  # not an object
    ("vqvae/metrics.jsonl", '{"step": "ten", "loss": "x"}\n[3]\n'),
    ("vqvae/state/progress.json", '{"step": "ten"}'),
])
def test_status_reports_damaged_files_instead_of_failing(configured_run, capsys, name, content):
    """Malformed fields in metrics.json / metrics.jsonl / progress.json -> `vqvae2 status` exits 0 and reports the stage as damaged, with the command that redoes it"""
    from pipelines.stage1 import stage_hash
    run = configured_run
    cfg = load_run_config(run, None, [], write=False)
    if content == "@@stage1@@":
        content = json.dumps({"config_hash": stage_hash(cfg), "psnr": "high", "codes_used": 3})
    path = run.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    status = run_status(run)
    vqvae = status["stages"][0]
    assert vqvae["stage"] == "vqvae" and vqvae["state"] == DAMAGED
    assert "damaged" in vqvae["detail"] and vqvae["command"].endswith("--force")
    assert main(["status", "--run-dir", str(run.root)]) == 0
    assert "vqvae" in capsys.readouterr().out


def test_status_of_a_damaged_config_says_so(configured_run, capsys):
    """A config.json that is not valid JSON or holds a bad value -> `vqvae2 status` exits 0 and names the file"""
    for text in ("{not json", json.dumps({"sample": {"n": 0}})):
        configured_run.config.write_text(text)
        status = run_status(configured_run)
        assert status["damaged"] and status["stages"] == []
        assert render_status(status).startswith(f"{configured_run.config} is damaged")
        assert main(["status", "--run-dir", str(configured_run.root)]) == 0
        assert "is damaged" in capsys.readouterr().out
