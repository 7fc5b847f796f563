"""Metrics through torch-fidelity, checked against answers known independently of the code under test."""
import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from eval.classifier import Classifier, ClassifierConfig, weights_hash
from eval.features import ExtractorSpec, domain_extractor
from eval.metrics import compute_metrics

H = W = 8
FEAT_DIM = 12
# a fixed random linear map of the (3, 8, 8) pixels: features that are Gaussian-ish and known exactly
PROJECTION = np.random.default_rng(1234).standard_normal((3 * H * W, FEAT_DIM)) / np.sqrt(3 * H * W)


class LinearFeatures(FeatureExtractorBase):
    def __init__(self, name, features_list, **kwargs):  # torch-fidelity passes all its kwargs
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return ("linear",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "linear"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, H, W, dtype=torch.uint8)

    def forward(self, x):
        feats = x.reshape(len(x), -1).double() @ torch.from_numpy(PROJECTION)  # (B, FEAT_DIM) float64
        return (feats,)


LINEAR = "vqvae2-test-linear"
if LINEAR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(LINEAR, LinearFeatures)
LINEAR_SPEC = ExtractorSpec("linear", LINEAR, "none")


def reference_fd(images_a: np.ndarray, images_b: np.ndarray) -> float:
    """Frechet distance from the textbook formula with scipy's sqrtm, on features computed here."""
    def feats(x):
        x = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
        return x.reshape(len(x), -1).astype(np.float64) @ PROJECTION
    fa, fb = feats(images_a), feats(images_b)
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    s_a, s_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def gaussian_images(n, mean, std, seed, channels=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, std, size=(n, channels, H, W))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def metrics(gen, real, spec=LINEAR_SPEC, **kw):
    kw.setdefault("kid_subset_size", 10)
    kw.setdefault("kid_subsets", 5)
    kw.setdefault("isc_splits", 2)
    return compute_metrics(torch.from_numpy(gen), torch.from_numpy(real), spec, seed=0, **kw)


@pytest.fixture(autouse=True)
def no_network_no_home_cache(tmp_path, monkeypatch):
    """No test may download (weights are unavailable) or write torch-fidelity caches outside tmp."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_home" / "hub"))

    def refuse(*a, **k):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import torch_fidelity.feature_extractor_inceptionv3 as inc
    monkeypatch.setattr(inc, "load_state_dict_from_url", refuse)


def test_fd_matches_scipy_reference():
    gen = gaussian_images(120, 110, 30, seed=0)
    real = gaussian_images(150, 130, 45, seed=1)
    out = metrics(gen, real)
    ref = reference_fd(gen, real)
    assert ref > 1.0
    assert out["fd"] == pytest.approx(ref, rel=1e-5)


def test_fd_of_identical_sets_is_zero():
    real = gaussian_images(100, 128, 40, seed=2)
    out = metrics(real, real)
    scale = reference_fd(real, gaussian_images(100, 90, 40, seed=3))
    assert abs(out["fd"]) < 1e-6 * scale


def test_fd_grows_with_noise():
    real = gaussian_images(100, 128, 30, seed=4)
    noise = np.random.default_rng(5).standard_normal(real.shape)
    fds = []
    for sigma in (0, 10, 25, 50, 90):
        gen = np.clip(real.astype(float) + sigma * noise, 0, 255).round().astype(np.uint8)
        fds.append(metrics(gen, real)["fd"])
    assert all(a < b for a, b in zip(fds, fds[1:])), fds


def test_precision_recall_convention():
    real = gaussian_images(120, 128, 40, seed=6)
    # generated: 120 jittered copies of 6 real images -> inside the real support but covering little of it
    rng = np.random.default_rng(7)
    collapsed = real[rng.integers(0, 6, size=120)].astype(float) + rng.normal(0, 0.5, size=real.shape)
    collapsed = np.clip(collapsed.round(), 0, 255).astype(np.uint8)
    out = metrics(collapsed, real)
    assert out["precision"] > 0.9 and out["recall"] < 0.2, out
    swapped = metrics(real, collapsed)  # the real set now plays the generated role
    assert swapped["precision"] < 0.2 and swapped["recall"] > 0.9, swapped


def test_grey_images_are_repeated_to_three_channels():
    gen = gaussian_images(60, 120, 40, seed=8, channels=1)
    real = gaussian_images(70, 100, 30, seed=9, channels=1)
    assert metrics(gen, real)["fd"] == pytest.approx(reference_fd(gen, real), rel=1e-5)
    with pytest.raises(ValueError, match="same"):  # grey against colour is a mistake, not a comparison
        metrics(gen, np.repeat(real, 3, axis=1))


def test_provenance_and_keys():
    out = metrics(gaussian_images(30, 120, 40, seed=9), gaussian_images(40, 120, 40, seed=10))
    assert out["extractor"] == "linear" and out["feature_extractor_name"] == LINEAR
    assert out["torch_fidelity_version"] == torch_fidelity.__version__
    assert (out["n_generated"], out["n_real"], out["seed"]) == (30, 40, 0)
    for key in ("fd", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall"):
        assert np.isfinite(out[key]), key


def tiny_classifier(in_channels, seed=0):
    torch.manual_seed(seed)
    return Classifier(ClassifierConfig(in_channels=in_channels, image_size=8, num_classes=4,
                                       channels=[4, 8], blocks_per_stage=1, dropout=0.0)).eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_domain_extractor_end_to_end(channels, tmp_path):
    model = tiny_classifier(channels)
    spec = domain_extractor(model)
    assert spec.name == f"vqvae2-domain-{weights_hash(model)}" and spec.fd_label == "FD-domain"
    def big(n, mean, seed):  # 16x16 images: the extractor resizes both sides to the classifier's 8x8
        x = torch.from_numpy(gaussian_images(n, mean, 50, seed=seed, channels=channels)).float()
        return torch.nn.functional.interpolate(x, scale_factor=2).round().to(torch.uint8).numpy()
    gen, real = big(24, 100, 11), big(30, 140, 12)
    with pytest.raises(ValueError, match="same"):
        compute_metrics(torch.from_numpy(gen), torch.from_numpy(real[:, :, :8]), spec)
    out = metrics(gen, gen, spec)
    assert abs(out["fd"]) < 1e-4
    out = metrics(gen, real, spec)
    assert out["fd"] > 0 and out["is_mean"] >= 1.0 and 0 <= out["precision"] <= 1
    assert out["weights_hash"] == weights_hash(model) and out["extractor"] == "domain"
    assert not (tmp_path / "torch_home").exists()  # nothing cached under torch's home


def test_domain_name_follows_weights():
    model = tiny_classifier(1, seed=0)
    name = domain_extractor(model).name
    assert domain_extractor(model).name == name  # registering twice is fine
    assert domain_extractor(tiny_classifier(1, seed=0)).name == name  # same weights, same name
    with torch.no_grad():
        model.head.bias.add_(0.1)
    assert domain_extractor(model).name != name


def test_domain_extractor_does_not_move_or_change_the_model():
    model = tiny_classifier(1).train()
    domain_extractor(model)
    assert model.training and next(model.parameters()).requires_grad


def test_small_sets_and_bad_arguments():
    gen, real = gaussian_images(6, 120, 40, seed=13), gaussian_images(8, 110, 40, seed=14)
    out = compute_metrics(torch.from_numpy(gen), torch.from_numpy(real), LINEAR_SPEC, kid_subsets=3)
    assert out["isc_splits"] == 6 and out["kid_subset_size"] == 6 and np.isfinite(out["is_mean"])
    with pytest.raises(ValueError, match="kid_subset_size"):
        metrics(gen, real, kid_subset_size=7)
    with pytest.raises(ValueError, match="at least 4"):
        metrics(gen[:3], real, kid_subset_size=2)
    with pytest.raises(ValueError, match="uint8"):
        compute_metrics(torch.zeros(6, 3, 8, 8), torch.from_numpy(real), LINEAR_SPEC)


def test_fd_from_saved_statistics_equals_fd_from_features(tmp_path):
    from eval.metrics import FeatureExtractor, ReferenceStats, fd_from_stats, metrics_from_features
    net = FeatureExtractor(LINEAR_SPEC)
    gen = net.extract([torch.from_numpy(gaussian_images(80, 110, 30, seed=20))])
    real = net.extract([torch.from_numpy(gaussian_images(90, 130, 40, seed=21))])
    path = ReferenceStats.from_features(real, LINEAR_SPEC, source="test").save(tmp_path / "stats.npz")
    with np.load(path, allow_pickle=False) as z:  # the common layout: float64 mu (D,) and sigma (D, D)
        assert z["mu"].dtype == np.float64 and z["mu"].shape == (FEAT_DIM,) and z["sigma"].shape == (FEAT_DIM,) * 2
    stats = ReferenceStats.load(path)
    ref = reference_fd(gaussian_images(80, 110, 30, seed=20), gaussian_images(90, 130, 40, seed=21))
    assert fd_from_stats(gen, stats) == pytest.approx(fd_from_stats(gen, real), rel=1e-9)
    assert fd_from_stats(gen, stats) == pytest.approx(ref, rel=1e-5)
    from_stats = metrics_from_features(gen, stats, LINEAR_SPEC, kid_subset_size=10, kid_subsets=5)
    from_feats = metrics_from_features(gen, real, LINEAR_SPEC, kid_subset_size=10, kid_subsets=5)
    assert from_stats["precision"] == from_feats["precision"] and from_stats["n_real"] == 90


def test_statistics_of_another_extractor_are_refused(tmp_path):
    from eval.metrics import FeatureExtractor, ReferenceStats
    feats = FeatureExtractor(LINEAR_SPEC).extract([torch.from_numpy(gaussian_images(20, 110, 30, seed=22))])
    stats = ReferenceStats.load(ReferenceStats.from_features(feats, LINEAR_SPEC).save(tmp_path / "s.npz"))
    stats.check_extractor(LINEAR_SPEC)
    with pytest.raises(ValueError, match="was made with extractor 'vqvae2-test-linear'.*'vqvae2-domain-x'"):
        stats.check_extractor(ExtractorSpec("domain", "vqvae2-domain-x", "x"), tmp_path / "s.npz")
    with pytest.raises(ValueError, match="weights sha256"):
        stats.check_extractor(ExtractorSpec("linear", LINEAR, "other-weights"))
    np.savez(tmp_path / "bare.npz", mu=np.zeros(3), sigma=np.eye(3))  # another tool's file: no provenance
    with pytest.raises(ValueError, match="no 'extractor' array"):
        ReferenceStats.load(tmp_path / "bare.npz")


# error bars, FD at infinite samples, resize, PSNR

def gaussian_features(n, dim, mean, std, seed):
    from eval.metrics import Features
    x = np.random.default_rng(seed).normal(mean, std, size=(n, dim))
    return Features(torch.from_numpy(x), torch.zeros(n, 2), (3, H, W))


def test_fd_interval_covers_the_spread_of_disjoint_subsets():
    from eval.metrics import fd_from_stats, fd_interval
    dim, n, k = 8, 500, 20
    ref = {"mu": np.zeros(dim), "sigma": np.eye(dim)}  # exact: only the generated side varies
    pool = gaussian_features(n * k, dim, 0.3, 1.5, seed=0)
    subsets = np.array([fd_from_stats(pool.subset(torch.arange(i * n, (i + 1) * n)), ref) for i in range(k)])
    low, high = fd_interval(pool.subset(torch.arange(n)), ref, resamples=200, seed=0)
    assert low < subsets[0] < high
    assert low < subsets.mean() < high
    assert ((subsets >= low) & (subsets <= high)).mean() >= 0.8  # a 95% interval: most other draws fall inside
    assert 0.5 < (high - low) / (2 * 1.96 * subsets.std(ddof=1)) < 2  # as wide as the draws spread, not wider
    assert fd_interval(pool.subset(torch.arange(n)), ref, resamples=200, seed=0) == [low, high]  # seeded


def test_fd_at_infinity_recovers_a_planted_intercept():
    from eval.metrics import fd_at_infinity
    dim, scale = 64, 1.5
    # generated ~ N(0, 1.5^2 I), reference exactly N(0, I): FD_inf = dim * (1.5 - 1)^2 = 16, and finite N adds
    # about (scale^2 dim + scale dim (dim + 1) / 4) / N = 1704 / N (the sample mean's and covariance's noise)
    known = dim * (scale - 1) ** 2
    gen = gaussian_features(20_000, dim, 0.0, scale, seed=0)
    fit = fd_at_infinity(gen, {"mu": np.zeros(dim), "sigma": np.eye(dim)}, seed=0)
    assert fit["n"][0] == 5000 and fit["n"][-1] == 20_000 and len(fit["n"]) == 15
    assert fit["fd"][0] - known > 0.2  # the planted bias is there at 5,000 samples (~0.34)...
    assert abs(fit["fd_infinity"] - known) < 0.05  # ...and the intercept removes it
    assert abs(fit["fd_infinity"] - known) < abs(fit["fd"][-1] - known)
    assert 1000 < fit["slope"] < 2500
    with pytest.raises(ValueError, match="at least 5,000"):
        fd_at_infinity(gen.subset(torch.arange(4999)), {"mu": np.zeros(dim), "sigma": np.eye(dim)})


def test_metrics_carry_interval_and_fd_infinity_only_from_5000_samples():
    from eval.metrics import metrics_from_features
    real = gaussian_features(6000, 4, 0.0, 1.0, seed=1)
    small = metrics_from_features(gaussian_features(100, 4, 0.5, 1.0, seed=2), real, LINEAR_SPEC, kid_subset_size=10,
                                  kid_subsets=2, fd_resamples=20)
    assert small["fd_infinity"] is None and small["fd_ci"][0] <= small["fd"] <= small["fd_ci"][1]
    assert small["fd_ci_resamples"] == 20 and "20 resamples" in small["fd_ci_method"]
    assert small["resize"] == "torch-fidelity"
    big = metrics_from_features(gaussian_features(5000, 4, 0.5, 1.0, seed=3), real, LINEAR_SPEC, kid_subset_size=10,
                                kid_subsets=2)
    assert big["fd_ci"] is None and big["fd_ci_method"] is None  # fd_resamples=0: no interval
    assert big["fd_infinity"] == pytest.approx(4 * 0.25, abs=0.05)  # the means differ by 0.5 in each of 4 dims


def test_clean_resize_equals_pils_bicubic():
    from PIL import Image
    from eval.features import clean_resize
    x = torch.from_numpy(gaussian_images(3, 120, 60, seed=30))  # (3, 3, 8, 8)
    big = torch.nn.functional.interpolate(x.float(), size=(21, 21)).round().to(torch.uint8)
    for images, size in ((big, 8), (x, 13)):  # down and up
        out = clean_resize(images, size)
        assert out.dtype == torch.uint8 and out.shape == (len(images), 3, size, size)
        for img, got in zip(images, out):
            pil = Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB").resize((size, size), Image.Resampling.BICUBIC)
            assert np.array_equal(got.permute(1, 2, 0).numpy(), np.asarray(pil))
    grey = x[:, :1]
    pil = Image.fromarray(grey[0, 0].numpy(), "L").resize((5, 5), Image.Resampling.BICUBIC)
    assert np.array_equal(clean_resize(grey, 5)[0, 0].numpy(), np.asarray(pil))
    assert clean_resize(x, 8) is x  # already at the size: untouched


def test_clean_resize_feeds_the_extractor_pils_images():
    from PIL import Image
    from eval.metrics import FeatureExtractor
    spec = ExtractorSpec("linear", LINEAR, "none", input_size=H).with_resize("clean")
    images = gaussian_images(4, 120, 60, seed=31)
    big = np.repeat(np.repeat(images, 3, axis=2), 3, axis=3)  # (4, 3, 24, 24)
    feats, _ = FeatureExtractor(spec)(torch.from_numpy(big))
    pil = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize((W, H), Image.Resampling.BICUBIC))
                    for im in big]).transpose(0, 3, 1, 2)
    expected = pil.reshape(4, -1).astype(np.float64) @ PROJECTION
    np.testing.assert_allclose(feats.numpy(), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="no fixed input size"):
        LINEAR_SPEC.with_resize("clean")
    with pytest.raises(ValueError, match="resize mode must be one of"):
        LINEAR_SPEC.with_resize("bilinear")


def test_reference_statistics_record_the_resize(tmp_path):
    from eval.metrics import FeatureExtractor, ReferenceStats
    clean = ExtractorSpec("linear", LINEAR, "none", input_size=H).with_resize("clean")
    feats = FeatureExtractor(clean).extract([torch.from_numpy(gaussian_images(20, 110, 30, seed=32))])
    stats = ReferenceStats.load(ReferenceStats.from_features(feats, clean).save(tmp_path / "s.npz"))
    assert stats.resize == "clean"
    stats.check_extractor(clean)
    with pytest.raises(ValueError, match="made with resize 'clean'.*'torch-fidelity'"):
        stats.check_extractor(ExtractorSpec("linear", LINEAR, "none", input_size=H), tmp_path / "s.npz")
    np.savez(tmp_path / "old.npz", mu=np.zeros(3), sigma=np.eye(3), extractor=np.array(LINEAR),
             weights_sha256=np.array("none"))  # written before resize modes: the extractor's own resize
    assert ReferenceStats.load(tmp_path / "old.npz").resize == "torch-fidelity"


def test_psnr_equals_the_formula_on_the_images():
    from eval.metrics import PSNR
    a = gaussian_images(5, 120, 40, seed=33)
    b = np.clip(a.astype(int) + np.random.default_rng(34).integers(-9, 10, size=a.shape), 0, 255).astype(np.uint8)
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    psnr = PSNR()
    for i in range(0, 5, 2):  # batches of any size
        psnr.update(torch.from_numpy(a[i:i + 2]), torch.from_numpy(b[i:i + 2]))
    assert psnr.value() == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-12)
    with pytest.raises(ValueError, match="uint8"):
        psnr.update(torch.from_numpy(a).float(), torch.from_numpy(b))


def test_fixed_reference_fd_equals_torch_fidelitys():
    """The bootstrap's FD against a fixed reference (one eigendecomposition per resample) equals torch-fidelity's FD, also for rank-deficient covariances"""
    from eval.metrics import Features, FixedReferenceFD, fd_from_stats
    g = torch.Generator().manual_seed(3)
    for dim, n_gen, n_real in [(8, 500, 800), (64, 300, 1000), (256, 100, 150)]:  # the last: rank-deficient
        gen = torch.randn(n_gen, dim, generator=g) * 1.5 + 0.3
        real = torch.randn(n_real, dim, generator=g)
        f = lambda x: Features(x, torch.zeros(len(x), 2), (3, 8, 8))
        expected = fd_from_stats(f(gen), f(real))
        assert FixedReferenceFD(f(real))(gen) == pytest.approx(expected, rel=1e-6)
