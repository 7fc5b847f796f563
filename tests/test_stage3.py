import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from eval.features import file_sha256
from pipelines.cli import main

from conftest import TINY_EVAL, TINY_PRIORS, folder_overrides, make_image_folder, write_inception_weights


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
    # error bars on every FD; FD at infinite samples only from 5,000 samples (here 10)
    for row in [*report["rows"], report["reconstruction"]]:
        low, high = row["fd_ci"]
        assert 0 <= low <= row["fd"] <= high and row["fd_infinity"] is None
        assert np.isfinite(row["kid_std"])
    assert report["reconstruction_fd"] == report["reconstruction"]["fd"] and report["reconstruction_psnr"] > 0
    prov = report["provenance"]
    for key in ("extractor", "feature_extractor_name", "weights_hash", "torch_fidelity_version", "n_real", "seed",
                "n_candidates", "rejection_classifier", "rejection_classifier_hash", "resize", "n_samples",
                "reference_split", "prc_neighborhood", "fd_ci_method", "fd_infinity_method"):
        assert key in prov, key
    assert prov["resize"] == "torch-fidelity" and prov["fd_ci_resamples"] == 100 and prov["prc_neighborhood"] == 3
    assert "100 resamples" in prov["fd_ci_method"] and "val split" in prov["reference_split"]
    assert report["comparison"]["requires"]["resize"] == "torch-fidelity" and report["comparison"]["may_not_stand_beside"]
    assert prov["n_candidates"] == 20
    assert prov["feature_extractor_name"].endswith(prov["weights_hash"])
    # the rejection network is a second classifier, not the feature network
    assert prov["rejection_classifier"] == "classifier/rejection" and not prov["rejection_is_feature_network"]
    assert prov["rejection_classifier_hash"] != prov["weights_hash"]
    md = (run / "eval" / "report.md").read_text()
    assert "FD-domain" in md and "FID" not in md.replace("FD-domain", "")
    assert "95% interval" in md and "PSNR" in md and "## Comparing with published numbers" in md
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


def test_realism_classifier_tells_reconstructions_from_samples(evaluated_run, monkeypatch):
    """The realism classifier's real side is training images through the run's VQ-VAE, so both sides carry the
    decoder; under train_classifier.realism_real = "images" the images themselves"""
    import dataclasses

    import torch

    from pipelines.artifacts import RunDir
    from pipelines.cli import load_run_config
    from pipelines.datasets import build_datasets
    from pipelines.images import to_uint8
    from pipelines.stage3 import realism_sets
    from vqvae2.vqvae import VQVAE2
    run = RunDir(evaluated_run)
    cfg = load_run_config(run, None, [], write=False)
    generated = torch.randint(0, 256, (10, 3, cfg.data.size, cfg.data.size), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0))
    train, val = realism_sets(cfg, run, generated)
    images, _ = build_datasets(cfg.data)
    vqvae = VQVAE2.from_pretrained(run.vqvae).eval()
    last = round(9 * len(images) / 10)  # the held-out real image: the last of ten spread over the split
    for (x, y), image in ((train[0], images[0][0]), (val[0], images[last][0])):
        with torch.no_grad():
            recon = to_uint8(vqvae.decode_codes(vqvae.encode(image[None])))[0].float() / 127.5 - 1
        assert y == 1 and (x - recon).abs().max() <= 1.01 / 127.5  # one level of rounding between batch sizes
        assert (x - image).abs().max() > 0.1  # not the image itself
    x, y = train[len(train.indices)]
    assert y == 0 and torch.equal(x, generated[0].float() / 127.5 - 1)
    as_images = dataclasses.replace(cfg, train_classifier=dataclasses.replace(cfg.train_classifier,
                                                                               realism_real="images"))
    def no_vqvae(*args, **kwargs):
        raise AssertionError("the VQ-VAE was loaded")
    monkeypatch.setattr(VQVAE2, "from_pretrained", no_vqvae)  # samples given, images as they are: nothing to do
    train, val = realism_sets(as_images, run, generated)
    assert torch.equal(train[0][0], images[0][0]) and torch.equal(val[0][0], images[last][0])


def test_realism_hash_keeps_the_first_rule_and_the_classifier_hash(monkeypatch):
    """realism_real = "images" (what the realism classifier learnt before the option) keeps the realism hash of
    fef1f4e, so runs finished then are not retrained under it; reconstructions hash differently, and so does a
    realism_crop below 1; the labelled classifiers' hash ignores both options"""
    import dataclasses

    from pipelines import stage2, stage3
    from pipelines.config import resolve_config
    monkeypatch.setattr(stage2, "stage_hash", lambda cfg, run, level: f"prior-{level}")
    cfg = resolve_config("ffhq256")
    with_ = lambda **kw: dataclasses.replace(cfg, train_classifier=dataclasses.replace(cfg.train_classifier, **kw))
    images = with_(realism_real="images", realism_crop=1.0)  # the whole image: as before realism_crop existed
    assert stage3.realism_hash(images, None) == "a496363e82ad0bdc"  # at fef1f4e, with the priors' hashes stubbed
    assert stage3.realism_hash(with_(realism_crop=1.0), None) != "a496363e82ad0bdc"
    assert stage3.classifier_hash(images) == stage3.classifier_hash(cfg)
    # realism_crop is the realism classifier's alone
    face = with_(realism_crop=0.5)
    assert stage3.realism_hash(face, None) != stage3.realism_hash(with_(realism_crop=1.0), None)
    assert stage3.classifier_hash(face) == stage3.classifier_hash(images)


def test_inception_without_weights_is_a_clear_error(evaluated_run, tmp_path, capsys):
    code = main(["evaluate", "--run-dir", str(evaluated_run), "--feature-extractor", "inception",
                 "--inception-weights", str(tmp_path / "missing.pth")])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.pth" in err and "never downloads" in err


def _copy(run, tmp_path):
    """A copy of the evaluated run, so that re-evaluating does not change what other tests read."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_report_says_how_many_samples_stand_behind_each_fd(evaluated_run):
    report = json.loads((evaluated_run / "eval" / "report.json").read_text())
    assert report["provenance"]["n_real"] == 9 and all(r["n_generated"] == 10 for r in report["rows"])
    assert any("fewer than the 50,000" in w for w in report["warnings"])
    assert "## Warnings" in (evaluated_run / "eval" / "report.md").read_text()
    assert not (evaluated_run / "eval" / "candidates").exists()  # streamed to disk, removed once reported


def test_evaluate_with_inception_weights_made_here(evaluated_run, tmp_path, monkeypatch):
    import eval.features as features
    run = _copy(evaluated_run, tmp_path)
    weights = write_inception_weights(tmp_path / "inception.pth", seed=5)
    sha = file_sha256(weights)
    # no intervals: each resample is an eigendecomposition of a 2048 x 2048 matrix (test_metrics checks them)
    argv = ["evaluate", "--run-dir", str(run), "--feature-extractor", "inception", "--inception-weights", str(weights),
            "--set", "eval.fd_resamples=0"]
    assert main(argv) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["fd_label"] == f"FD-inception (non-standard weights, sha256 {sha[:16]})"
    assert report["provenance"]["weights_hash"] == sha and report["provenance"]["weights_standard"] is False
    assert all(np.isfinite(r["fd"]) and np.isfinite(r["precision"]) for r in report["rows"])
    # the same file with the standard hash prefix would be the real thing: then, and only then, "FID"
    monkeypatch.setattr(features, "INCEPTION_SHA256_PREFIX", sha[:8])
    assert main(argv) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["fd_label"] == "FID" and report["provenance"]["weights_standard"] is True


def test_reconstruction_fd_and_psnr_equal_a_direct_computation(evaluated_run):
    """rFID is the FD between the real evaluation images' features and their reconstructions' features."""
    import torch

    from eval.classifier import Classifier
    from pipelines.artifacts import RunDir
    from pipelines.cli import load_run_config
    from pipelines.datasets import build_datasets
    from pipelines.images import to_uint8
    from vqvae2.vqvae import VQVAE2

    cfg = load_run_config(RunDir(evaluated_run), None, [], write=False)
    vqvae = VQVAE2.from_pretrained(evaluated_run / "vqvae").eval()
    clf = Classifier.from_pretrained(evaluated_run / "classifier").eval()
    _, val = build_datasets(cfg.data)
    x = torch.stack([val[i][0] for i in range(len(val))])
    real = to_uint8(x)
    with torch.no_grad():  # the batches evaluate used, so that every pixel is computed alike
        recon = torch.cat([to_uint8(vqvae.decode_codes(vqvae.encode(b.float() / 127.5 - 1)))
                           for b in real.split(cfg.eval.batch_size)])

        def feats(images):  # the classifier's penultimate features of uint8 images, float64
            return clf.features(images.float() / 127.5 - 1).double().numpy()
        fr, fg = feats(real), feats(recon)
    s_r, s_g = np.cov(fr, rowvar=False), np.cov(fg, rowvar=False)  # rank 8 (9 images): singular
    # tr sqrt(S_r S_g) = tr sqrt(R S_g R) with R = S_r^(1/2): symmetric PSD, so exact from eigh even when singular
    w, v = np.linalg.eigh(s_r)
    root = (v * np.sqrt(w.clip(0))) @ v.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(root @ s_g @ root).clip(0)).sum()
    fd = ((fr.mean(0) - fg.mean(0)) ** 2).sum() + np.trace(s_r) + np.trace(s_g) - 2 * tr_covmean
    mse = ((real.double() - recon.double()) ** 2).mean().item()
    report = json.loads((evaluated_run / "eval" / "report.json").read_text())
    assert len(real) == 9 and fd > 1e-3
    assert report["reconstruction_fd"] == pytest.approx(fd, rel=1e-4)
    assert report["reconstruction_psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-9)
    assert "PSNR" in (evaluated_run / "eval" / "report.md").read_text()


def test_clean_resize_is_recorded_and_must_match_the_reference(evaluated_run, tmp_path, capsys):
    run = _copy(evaluated_run, tmp_path)
    before = json.loads((run / "eval" / "report.json").read_text())
    dom = ["--feature-extractor", "domain"]
    stats = tmp_path / "val-stats.npz"
    assert main(["fid-stats", "--run-dir", str(run), "--out", str(stats), *dom]) == 0  # torch-fidelity resize
    clean = ["--set", "eval.resize='clean'"]
    assert main(["evaluate", "--run-dir", str(run), *dom, *clean]) == 0
    after = json.loads((run / "eval" / "report.json").read_text())
    assert after["provenance"]["resize"] == "clean" and after["comparison"]["requires"]["resize"] == "clean"
    # the images are already at the classifier's size: the clean resize leaves them, and FD, as they were
    assert [r["fd"] for r in after["rows"]] == pytest.approx([r["fd"] for r in before["rows"]], rel=1e-6)
    assert main(["evaluate", "--run-dir", str(run), "--reference-stats", str(stats), *dom, *clean]) == 2
    assert "made with resize 'torch-fidelity'" in capsys.readouterr().err


class _Exploit:
    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.reliability
def test_evaluate_with_crafted_inception_weights_runs_nothing(evaluated_run, tmp_path, capsys):
    """`vqvae2 evaluate --inception-weights` given a crafted pickle -> exit 2, error naming the file, before any sampling; its code never runs"""
    run = _copy(evaluated_run, tmp_path)
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    evil = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    evil.write_bytes(pickle.dumps(_Exploit()))
    assert main(["evaluate", "--run-dir", str(run), "--feature-extractor", "inception",
                 "--inception-weights", str(evil)]) == 2
    err = capsys.readouterr().err
    assert str(evil) in err and "not a plain state dict" in err
    assert not marker.exists() and not (run / "eval" / "candidates").exists()


def test_reference_stats_give_the_same_fd_as_the_real_images(evaluated_run, tmp_path):
    run = _copy(evaluated_run, tmp_path)
    before = json.loads((run / "eval" / "report.json").read_text())
    stats = tmp_path / "val-stats.npz"
    dom = ["--feature-extractor", "domain"]  # the run's config may say otherwise after the tests above
    assert main(["fid-stats", "--run-dir", str(run), "--split", "val", "--out", str(stats), *dom]) == 0
    with np.load(stats, allow_pickle=False) as z:
        assert z["mu"].dtype == np.float64 and z["sigma"].shape == (len(z["mu"]), len(z["mu"]))
        assert str(z["extractor"]) == before["provenance"]["feature_extractor_name"] and int(z["n"]) == 9
    assert main(["evaluate", "--run-dir", str(run), "--reference-stats", str(stats), *dom]) == 0
    after = json.loads((run / "eval" / "report.json").read_text())
    for a, b in zip(before["rows"], after["rows"]):
        assert b["fd"] == pytest.approx(a["fd"], rel=1e-6, abs=1e-9)
        assert b["precision"] == pytest.approx(a["precision"])  # the file kept the features
    assert "val-stats.npz" in after["provenance"]["reference"]
    # mu and sigma only: FD as before, KID and precision/recall not computed, and the report says why
    assert main(["fid-stats", "--run-dir", str(run), "--out", str(stats), "--no-features", *dom]) == 0
    assert main(["evaluate", "--run-dir", str(run), "--reference-stats", str(stats), *dom]) == 0
    only = json.loads((run / "eval" / "report.json").read_text())
    assert only["rows"][0]["fd"] == pytest.approx(before["rows"][0]["fd"], rel=1e-6)
    assert only["rows"][0]["precision"] is None and any("mu and sigma only" in w for w in only["warnings"])


@pytest.mark.reliability
def test_reference_stats_of_another_extractor_are_refused(evaluated_run, tmp_path, capsys):
    """Reference statistics made with another extractor or other weights -> evaluate refuses them, naming both"""
    run = _copy(evaluated_run, tmp_path)
    weights = write_inception_weights(tmp_path / "inception.pth", seed=6)
    stats = tmp_path / "inception-stats.npz"
    assert main(["fid-stats", "--run-dir", str(run), "--feature-extractor", "inception", "--inception-weights",
                 str(weights), "--out", str(stats)]) == 0
    assert main(["evaluate", "--run-dir", str(run), "--reference-stats", str(stats), "--feature-extractor", "domain"]) == 2
    err = capsys.readouterr().err
    assert "was made with extractor 'vqvae2-inception-" in err and "vqvae2-domain-" in err


def test_fid_stats_of_an_image_folder(evaluated_run, tmp_path):
    folder = make_image_folder(tmp_path / "other", n_per_class=3, size=24)
    out = tmp_path / "folder-stats.npz"
    assert main(["fid-stats", "--run-dir", str(evaluated_run), "--folder", str(folder), "--out", str(out),
                 "--feature-extractor", "domain"]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert int(z["n"]) == 6 and "folder" in str(z["source"])


def test_the_report_says_what_the_realism_classifier_looked_at():
    from eval.classifier import Classifier
    from eval.config import ClassifierConfig
    from pipelines.config import resolve_config
    from pipelines.evaluate import _rejection_provenance
    cfg = resolve_config("ffhq256")
    for crop, expected in ((0.5, "against generated images, on the centred 0.5 of each side, (classifier/)"),
                           (1.0, "against generated images (classifier/)")):
        net = Classifier(ClassifierConfig(in_channels=3, image_size=32, num_classes=2, channels=[8, 16], crop=crop))
        out = _rejection_provenance(cfg, None, net, {"realism": None}, {0.5: 0.7})
        assert expected in out["rejection"] and out["mean_classifier_prob_of_kept"] == {"0.5": 0.7}
