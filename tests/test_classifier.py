"""Classifier shapes, save/load round trip, weights hash, probability and accuracy helpers."""
import pytest
import torch

from eval.classifier import (Classifier, ClassifierConfig, evaluate_accuracy, predict_features, predict_proba,
                             weights_hash)


def tiny(**kw):
    cfg = dict(in_channels=1, image_size=16, num_classes=5, channels=[4, 8, 16], blocks_per_stage=1, dropout=0.0)
    cfg.update(kw)
    torch.manual_seed(0)
    return Classifier(ClassifierConfig(**cfg))


@pytest.mark.parametrize("in_channels", [1, 3])
def test_shapes(in_channels):
    model = tiny(in_channels=in_channels, blocks_per_stage=2).eval()
    x = torch.rand(3, in_channels, 16, 16) * 2 - 1
    assert model(x).shape == (3, 5)
    assert model.features(x).shape == (3, 16) == (3, model.feature_dim)
    with pytest.raises(ValueError, match="expects images"):
        model(torch.rand(3, 4 - in_channels if in_channels == 1 else 1, 16, 16))


@pytest.mark.parametrize("stride", [2, 4])
def test_strided_stem_downsamples_first(stride):
    """classifier.stem_stride: the stem divides the image side by the stride, the stages as before."""
    model = tiny(in_channels=3, image_size=32, stem_stride=stride).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert model.stem(x).shape[-1] == 32 // stride
    assert model(x).shape == (2, 5) and model.features(x).shape == (2, model.feature_dim)


def test_default_config_is_the_fashion_mnist_resnet():
    model = Classifier(ClassifierConfig())
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # trains on 2 CPU cores in minutes per epoch


@pytest.mark.parametrize("bad, match", [
    (dict(in_channels=2), "in_channels"), (dict(num_classes=1), "num_classes"), (dict(channels=[]), "channels"),
    (dict(blocks_per_stage=0), "blocks_per_stage"), (dict(dropout=1.0), "dropout"),
    (dict(image_size=18), "multiple of 4"), (dict(stem_stride=3), "stem_stride"),
    (dict(stem_stride=4, image_size=24), "multiple of 16"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny(**bad)


def test_save_load_round_trip(tmp_path):
    model = tiny().eval()
    model(torch.rand(4, 1, 16, 16))  # BatchNorm buffers are part of the weights too
    model.save_pretrained(tmp_path / "classifier")
    loaded = Classifier.from_pretrained(tmp_path / "classifier").eval()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded(x), model(x))
    assert weights_hash(loaded) == weights_hash(model) and loaded.config == model.config


def test_weights_hash():
    a, b = tiny(), tiny()
    h = weights_hash(a)
    assert len(h) == 12 and int(h, 16) >= 0 and h == weights_hash(b)
    with torch.no_grad():
        b.stem[0].weight[0, 0, 0, 0] += 1e-3
    assert weights_hash(b) != h


def test_predict_proba_and_accuracy():
    model = tiny().train()
    images = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8)
    probs = predict_proba(model, images, batch_size=3)
    assert probs.shape == (10, 5) and model.training  # mode restored
    torch.testing.assert_close(probs.sum(1), torch.ones(10))
    torch.testing.assert_close(probs, predict_proba(model, images.float() / 127.5 - 1, batch_size=10))
    labels = probs.argmax(1)
    loader = [(images[:6], labels[:6]), (images[6:], (labels[6:] + 1) % 5)]  # 6 right, 4 wrong
    assert evaluate_accuracy(model, loader) == pytest.approx(0.6)


def test_predict_features_are_the_penultimate_layer_in_eval_mode():
    model = tiny().train()
    images = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8)
    feats = predict_features(model, images, batch_size=3)
    assert feats.shape == (10, model.feature_dim) and feats.dtype == torch.float32 and model.training
    with torch.no_grad():
        expected = model.eval().features(images.float() / 127.5 - 1)  # BatchNorm's running statistics, not the batch's
    torch.testing.assert_close(feats, expected)
    assert predict_features(model, images[:0]).shape == (0, model.feature_dim)


def _tiny_batch():
    torch.manual_seed(0)
    return torch.rand(6, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2])


def test_mixup_loss_blends_images_and_labels():
    from pipelines.stage3 import classifier_loss
    model = Classifier(ClassifierConfig(channels=[4], image_size=8, num_classes=3, dropout=0.0)).eval()
    x, y = _tiny_batch()
    torch.manual_seed(1)
    loss, logs = classifier_loss(0.4)(model, (x, y))
    # the same draws by hand: flips, then lam ~ Beta(0.4, 0.4), then the partner permutation
    torch.manual_seed(1)
    flip = torch.rand(6, 1, 1, 1) < 0.5
    xf = torch.where(flip, x.flip(-1), x)
    lam = torch.distributions.Beta(0.4, 0.4).sample((6,))
    perm = torch.randperm(6)
    logits = model(lam.view(-1, 1, 1, 1) * xf + (1 - lam.view(-1, 1, 1, 1)) * xf[perm])
    ce = torch.nn.functional.cross_entropy
    expected = (lam * ce(logits, y, reduction="none") + (1 - lam) * ce(logits, y[perm], reduction="none")).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.equal(lam.round(), lam)  # some images really were blended
    major = torch.where(lam >= 0.5, y, y[perm])
    assert torch.isclose(logs["accuracy"], (logits.argmax(1) == major).float().mean())
    # mixup 0 is plain cross-entropy on the flipped images
    torch.manual_seed(1)
    plain, _ = classifier_loss(0.0)(model, (x, y))
    assert torch.allclose(plain, ce(model(xf), y), atol=1e-6)
    assert not torch.allclose(plain, loss)


def test_rejection_mixup_must_not_be_negative():
    from pipelines.config import resolve_config
    with pytest.raises(ValueError, match="train_classifier.rejection_mixup must be >= 0, got -0.1"):
        resolve_config("demo", ["train_classifier.rejection_mixup=-0.1"])


def test_realism_real_must_name_a_rule():
    from pipelines.config import resolve_config
    with pytest.raises(ValueError, match="train_classifier.realism_real must be one of 'reconstructions', 'images', "
                                         "got 'decoded'"):
        resolve_config("ffhq256", ["train_classifier.realism_real='decoded'"])


def test_a_cropping_classifier_sees_the_centre_alone():
    """crop < 1: the network sees the centred square of that fraction of each side; the border changes nothing"""
    from eval.classifier import Classifier
    from eval.config import ClassifierConfig
    torch.manual_seed(0)
    full = Classifier(ClassifierConfig(in_channels=3, image_size=16, num_classes=2, channels=[8, 16])).eval()
    half = Classifier(ClassifierConfig(in_channels=3, image_size=32, num_classes=2, channels=[8, 16], crop=0.5)).eval()
    half.load_state_dict(full.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(half(x), full(x[..., 8:24, 8:24]), atol=1e-6)
        y = x.clone()
        y[..., :8, :] = 5.0  # another border
        assert torch.equal(half(x), half(y))
        assert not torch.allclose(full(x[..., :16, :16]), full(x[..., 8:24, 8:24]))


def test_crop_is_checked_and_is_the_realism_classifiers_alone():
    from eval.config import ClassifierConfig
    from pipelines.config import resolve_config
    with pytest.raises(ValueError, match=r"classifier.crop must be in \(0, 1\], got 0"):
        ClassifierConfig(image_size=32, crop=0)
    with pytest.raises(ValueError, match="classifier.crop 0.1 leaves 3 px of 32, fewer than the 4"):
        ClassifierConfig(image_size=32, channels=[8, 16, 32], crop=0.1)
    with pytest.raises(ValueError, match=r"train_classifier.realism_crop must be in \(0, 1\], got 1.5"):
        resolve_config("ffhq256", ["train_classifier.realism_crop=1.5"])
    # a crop too small for the network is refused when the config is resolved, before stage 1 trains
    with pytest.raises(ValueError, match="train_classifier.realism_crop 0.05 leaves 2 px of 32"):
        resolve_config("demo", ["train_classifier.realism_crop=0.05"])
    with pytest.raises(ValueError, match="classifier.crop is the realism classifier's alone: set "
                                         "train_classifier.realism_crop"):
        resolve_config("demo", ["classifier.crop=0.5"])
