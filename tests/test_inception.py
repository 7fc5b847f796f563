"""The Inception (FID) path, offline: weights files are made here in the standard file's format and
keys (random values), so everything but the values of the real weights is exercised."""
import os
import pickle

import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

import eval.features as features
from eval.features import ExtractorSpec, file_sha256, inception_extractor
from eval.metrics import FeatureExtractor

from conftest import random_inception_state, write_inception_weights


@pytest.fixture(autouse=True)
def no_network_no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_home" / "hub"))

    def refuse(*a, **k):
        raise AssertionError("a download was attempted")
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", refuse)


def images(n, seed, size=40):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_features_equal_torch_fidelitys_own_extractor(tmp_path, legacy):
    path = write_inception_weights(tmp_path / "inception.pth", seed=1, legacy=legacy)
    spec = inception_extractor(path)
    ours = FeatureExtractor(spec)
    x = images(3, 0)
    feats, logits = ours(x)
    # torch-fidelity's own extractor, reading the same (trusted, test-made) file its own way
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(path)).eval()
    with torch.no_grad():
        ref_feats, ref_logits = theirs(x)
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)
    tol = 1e-5 * float(ref_feats.abs().max())
    assert torch.isfinite(ref_feats).all()
    assert (ref_feats[0] - ref_feats[1]).abs().max() > 100 * tol  # the images are told apart: equality means something
    torch.testing.assert_close(feats, ref_feats, rtol=1e-5, atol=tol)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5 * float(ref_logits.abs().max()))
    # grey images are repeated to three channels before the network
    grey = x[:, :1]
    torch.testing.assert_close(ours(grey)[0], ours(grey.repeat(1, 3, 1, 1))[0])


def test_label_is_fid_only_for_the_standard_hash(tmp_path, monkeypatch):
    path = write_inception_weights(tmp_path / "inception.pth", seed=2)
    sha = file_sha256(path)
    spec = inception_extractor(path)
    assert spec.weights_hash == sha and not spec.standard
    assert spec.fd_label == f"FD-inception (non-standard weights, sha256 {sha[:16]})"
    # the standard file is recognised by its SHA-256 prefix (the one in its name); pretend this is it
    monkeypatch.setattr(features, "INCEPTION_SHA256_PREFIX", sha[:8])
    standard = inception_extractor(path)
    assert standard.standard and standard.fd_label == "FID"


def test_default_location_is_torch_hub_cache(tmp_path):
    default = tmp_path / "torch_home" / "hub" / "checkpoints" / features.INCEPTION_WEIGHTS_FILE
    with pytest.raises(FileNotFoundError, match="never downloads") as err:
        inception_extractor()
    assert str(default) in str(err.value)
    write_inception_weights(default, seed=3)
    assert inception_extractor().weights_hash == file_sha256(default)


class _Exploit:
    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.reliability
@pytest.mark.parametrize("how", ["pickle", "torch.save", "hub-cache"])
def test_crafted_pickle_as_inception_weights_never_executes(tmp_path, how):
    """A crafted pickle given as Inception weights (a path, a torch.save zip, or the file in torch's hub cache) -> refused as not a plain state dict, naming the file; its code never runs"""
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    path = (tmp_path / "torch_home" / "hub" / "checkpoints" / features.INCEPTION_WEIGHTS_FILE if how == "hub-cache"
            else tmp_path / "evil.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "torch.save":
        torch.save({"Conv2d_1a_3x3.conv.weight": _Exploit()}, path)
    else:
        path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match="not a plain state dict") as err:
        inception_extractor(None if how == "hub-cache" else path)
    assert str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.reliability
def test_weights_file_of_another_shape_is_a_clear_error(tmp_path):
    """An Inception weights file that is not the network's state dict (a list, missing or reshaped keys) -> error naming the file"""
    path = tmp_path / "w.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        inception_extractor(path)
    state = random_inception_state(4)
    del state["fc.bias"]
    state["Conv2d_1a_3x3.conv.weight"] = torch.zeros(1, 2, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"w\.pth does not match the inception-v3-compat network"):
        inception_extractor(path)


def test_torch_fidelitys_own_extractors_are_refused():
    # they read weights from paths or the network: the project builds only its own registered classes
    with pytest.raises(ValueError, match="torch-fidelity's own"):
        FeatureExtractor(ExtractorSpec("inception", "inception-v3-compat", "x"))
