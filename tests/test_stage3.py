import json

import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main

from conftest import TINY_EVAL, TINY_PRIORS, folder_overrides, make_image_folder


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage3")
    run = root / "run"
    overrides = [*folder_overrides(make_image_folder(root / "images", n_per_class=20)), *TINY_PRIORS, *TINY_EVAL]
    argv = ["run", "--preset", "demo", "--run-dir", str(run)]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0
    return run


def test_tiny_end_to_end_run_writes_the_report(evaluated_run):
    run = evaluated_run
    for name in ("report.json", "report.md", "tradeoff.png", "samples-rate-1.png", "samples-rate-0.5.png"):
        assert (run / "eval" / name).is_file(), name
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["fd_label"] == "FD-domain"  # never "FID" for the domain extractor
    assert [r["acceptance_rate"] for r in report["rows"]] == [1.0, 0.5]
    for row in report["rows"]:
        for key in ("fd", "kid_mean", "precision", "recall", "is_mean"):
            assert np.isfinite(row[key]), key
        assert row["n_generated"] == 10
    assert report["reconstruction"] is not None and np.isfinite(report["reconstruction"]["fd"])
    prov = report["provenance"]
    for key in ("extractor", "feature_extractor_name", "weights_hash", "torch_fidelity_version", "n_real", "seed",
                "n_candidates", "rejection_classifier", "rejection_classifier_hash"):
        assert key in prov, key
    assert prov["n_candidates"] == 20
    assert prov["feature_extractor_name"].endswith(prov["weights_hash"])
    # the rejection network is a second classifier, not the feature network
    assert prov["rejection_classifier"] == "classifier/rejection" and not prov["rejection_is_feature_network"]
    assert prov["rejection_classifier_hash"] != prov["weights_hash"]
    md = (run / "eval" / "report.md").read_text()
    assert "FD-domain" in md and "FID" not in md.replace("FD-domain", "")
    assert Image.open(run / "eval" / "tradeoff.png").size[0] > 200


def test_classifier_metrics_and_both_networks_saved(evaluated_run):
    m = json.loads((evaluated_run / "classifier" / "metrics.json").read_text())
    assert set(m["classifiers"]) == {"features", "rejection"}
    # mixup trains the rejection network only; the report says so
    assert m["classifiers"]["features"]["mixup"] == 0.0 and m["classifiers"]["rejection"]["mixup"] == 0.4
    report = json.loads((evaluated_run / "eval" / "report.json").read_text())
    assert report["provenance"]["rejection_classifier_mixup"] == 0.4
    assert 0.0 <= m["accuracy"] <= 1.0 and m["num_classes"] == 2
    assert (evaluated_run / "classifier" / "rejection" / "model.safetensors").is_file()


def test_inception_without_weights_is_a_clear_error(evaluated_run, tmp_path, capsys):
    code = main(["evaluate", "--run-dir", str(evaluated_run), "--feature-extractor", "inception",
                 "--inception-weights", str(tmp_path / "missing.pth")])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.pth" in err and "never downloads" in err
