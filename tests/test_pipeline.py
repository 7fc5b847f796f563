"""vqvae2.Pipeline on a tiny finished run: the same samples as `vqvae2 sample`, generators, encode/decode/vary."""
import numpy as np
import pytest
import torch
from conftest import TINY_PRIORS, folder_overrides, make_image_folder
from PIL import Image

from pipelines.cli import main
from vqvae2 import Pipeline
from vqvae2.pixelsnail import PixelSNAIL
from vqvae2.sampling import sample_hierarchy
from vqvae2.vqvae import VQVAE2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    argv = ["run", "--preset", "demo", "--run-dir", str(root / "run"), "--until", "priors"]
    for o in [*folder_overrides(make_image_folder(root / "images")), *TINY_PRIORS]:
        argv += ["--set", o]
    assert main(argv) == 0
    return root / "run"


@pytest.fixture(scope="module")
def pipe(run):
    return Pipeline.from_pretrained(run, device="cpu")


def test_pipeline_equals_vqvae2_sample_for_the_same_seed(run):
    """`vqvae2 sample --seed 5 --n 6 --batch-size 4 --temperature 0.9 --top-k 8` -> samples.npz equal to pipe(6, seed=5, ...) in images, codes and labels, with the settings given and as the run's defaults"""
    argv = ["sample", "--run-dir", str(run), "--n", "6", "--batch-size", "4", "--seed", "5", "--temperature", "0.9",
            "--top-k", "8"]
    assert main(argv) == 0
    saved = np.load(run / "samples" / "samples.npz")
    given = Pipeline.from_pretrained(run, device="cpu")(6, seed=5, batch_size=4, temperature=0.9, top_k=8,
                                                          output="uint8")
    defaults = Pipeline.from_pretrained(run, device="cpu")(6, seed=5, output="uint8")  # config.json now holds them
    for out in (given, defaults):
        assert np.array_equal(out.images.permute(0, 2, 3, 1).numpy(), saved["arr_0"])
        for level, codes in zip(["top", "bottom"], out.codes):
            assert np.array_equal(codes.numpy(), saved[f"codes_{level}"].astype(np.int64))
        assert np.array_equal(out.labels.numpy(), saved["labels"])


def test_nucleus_sampling_from_the_command_and_from_python(run):
    """`vqvae2 sample --top-p 0.7` -> samples.npz equal to pipe(..., top_p=0.7), recorded in samples/metrics.json;
    other samples than without it; a top-p of 0 is off (the stage hash of a run without it is unchanged)"""
    import json

    from pipelines.artifacts import RunDir
    from pipelines.config import config_from_dict
    from pipelines.sample import stage_hash
    cfg = json.loads((run / "config.json").read_text())
    before = stage_hash(config_from_dict(cfg), RunDir(run))
    assert stage_hash(config_from_dict(cfg, ["sample.top_p=0.0"]), RunDir(run)) == before
    argv = ["sample", "--run-dir", str(run), "--n", "6", "--batch-size", "3", "--seed", "2", "--top-p", "0.7"]
    assert main(argv) == 0
    saved = np.load(run / "samples" / "samples.npz")
    assert json.loads((run / "samples" / "metrics.json").read_text())["top_p"] == 0.7
    pipe = Pipeline.from_pretrained(run, device="cpu")
    out = pipe(6, seed=2, batch_size=3, top_p=0.7, output="uint8")
    assert np.array_equal(out.images.permute(0, 2, 3, 1).numpy(), saved["arr_0"])
    plain = pipe(6, seed=2, batch_size=3, top_p=0, output="uint8")
    assert not all(torch.equal(a, b) for a, b in zip(plain.codes, out.codes))
    assert main(["sample", "--run-dir", str(run), "--top-p", "1.5"]) == 2  # refused, and not saved
    assert json.loads((run / "config.json").read_text())["sample"]["top_p"] == 0.7
    (run / "config.json").write_text(json.dumps(cfg))  # the other tests sample with the run's own settings


def test_one_batch_equals_the_models_used_by_hand(run, pipe):
    """pipe(n, seed=s, batch_size=n) == sample_hierarchy with generator seed s * 1_000_003 + 0, decoded, (x + 1) * 127.5 rounded; the labels spread over the classes"""
    vqvae = VQVAE2.from_pretrained(run / "vqvae").eval()
    priors = [PixelSNAIL.from_pretrained(run / f"prior-{lv}").eval() for lv in ("top", "bottom")]
    labels = torch.tensor([0, 1, 0, 1, 0])
    with torch.no_grad():
        codes = sample_hierarchy(priors, 5, labels=labels, generator=torch.Generator().manual_seed(3 * 1_000_003))
        expected = ((vqvae.decode_codes(codes).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    out = pipe(5, seed=3, batch_size=5, temperature=1.0, top_k=0, output="uint8")
    assert torch.equal(out.images, expected)
    assert all(torch.equal(a, b) for a, b in zip(out.codes, codes))
    assert torch.equal(out.labels, labels)


def test_a_generator_makes_it_deterministic(pipe):
    """the same generator seed -> the same images and codes; another seed -> other codes; batches drawn one after another"""
    a = pipe(5, generator=torch.Generator().manual_seed(1), batch_size=2, output="tensor")
    b = pipe(5, generator=torch.Generator().manual_seed(1), batch_size=2, output="tensor")
    c = pipe(5, generator=torch.Generator().manual_seed(2), batch_size=2, output="tensor")
    assert torch.equal(a.images, b.images) and all(torch.equal(x, y) for x, y in zip(a.codes, b.codes))
    assert not all(torch.equal(x, y) for x, y in zip(a.codes, c.codes))
    assert a.images.shape == (5, 3, 16, 16) and a.images.min() >= -1 and a.images.max() <= 1


def test_outputs_labels_and_refusals(pipe):
    """output pil/uint8/tensor agree; labels as one class or a list; bad labels, outputs, seed+generator -> one-line ValueErrors"""
    g = lambda: torch.Generator().manual_seed(0)
    pil = pipe(3, generator=g(), labels=1).images
    pixels = pipe(3, generator=g(), labels=[1, 1, 1], output="uint8")
    assert [im.size for im in pil] == [(16, 16)] * 3 and pil[0].mode == "RGB"
    assert np.array_equal(np.stack([np.asarray(im) for im in pil]), pixels.images.permute(0, 2, 3, 1).numpy())
    assert pixels.labels.tolist() == [1, 1, 1]
    for kwargs, match in [(dict(labels=2), r"classes in \[0, 1\]"), (dict(labels=[0, 1]), "one class, or 3"),
                          (dict(output="png"), "output must be one of"), (dict(seed=1, generator=g()), "not both"),
                          (dict(temperature=0.0), "temperature must be > 0")]:
        with pytest.raises(ValueError, match=match):
            pipe(3, **kwargs)


def test_encode_decode_and_vary(pipe):
    """encode gives codes per level; decode is the VQ-VAE's decoder; vary keeps the top codes of the image and resamples the bottom ones, the same for the same generator; PIL input works"""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codes = pipe.encode(x)
    assert [tuple(c.shape) for c in codes] == [(2, 4, 4), (2, 8, 8)]
    recon = pipe.decode(codes, output="uint8")
    assert recon.images.shape == (2, 3, 16, 16) and all(torch.equal(a, b) for a, b in zip(recon.codes, codes))
    with torch.no_grad():
        assert torch.equal(pipe.decode(codes, output="tensor").images, pipe.vqvae.decode_codes(codes).clamp(-1, 1))
    image = Image.fromarray(recon.images[0].permute(1, 2, 0).numpy())
    v1 = pipe.vary(image, keep="top", n=4, labels=0, generator=torch.Generator().manual_seed(4), output="uint8")
    v2 = pipe.vary(recon.images[0], keep="top", n=4, labels=0, generator=torch.Generator().manual_seed(4),
                   output="uint8")
    own = pipe.encode(image)
    assert torch.equal(v1.codes[0], own[0].expand(4, -1, -1))
    assert torch.equal(v1.images, v2.images) and torch.equal(v1.codes[1], v2.codes[1])
    with pytest.raises(ValueError, match="keep='bottom'"):
        pipe.vary(image, keep="bottom", labels=0)
    with pytest.raises(ValueError, match="class-conditional"):
        pipe.vary(image, keep="top")
    with pytest.raises(ValueError, match="resize and crop it first"):
        pipe.encode(Image.new("RGB", (20, 16)))


def test_save_pretrained_loads_back_with_the_same_samples(pipe, tmp_path):
    """save_pretrained -> model_index.json + one folder per component; from_pretrained of it gives the same samples"""
    pipe.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["model_index.json", "prior-bottom", "prior-top",
                                                                      "vqvae"]
    again = Pipeline.from_pretrained(tmp_path / "saved", device="cpu")
    assert again.settings == pipe.settings
    a, b = pipe(4, seed=9, output="uint8"), again(4, seed=9, output="uint8")
    assert torch.equal(a.images, b.images)


def test_guidance_from_the_command_and_from_python(tmp_path):
    """priors trained with label dropout -> `vqvae2 sample --guidance 2.5` equals pipe(..., guidance=2.5) and is
    recorded; guidance 1 is none; guidance on a run whose priors have no "no label" class fails before any work"""
    import json
    argv = ["run", "--preset", "demo", "--run-dir", str(tmp_path / "run"), "--until", "priors",
            "--set", "prior.top.label_dropout=0.3", "--set", "prior.bottom.label_dropout=0.3"]
    for o in [*folder_overrides(make_image_folder(tmp_path / "images")), *TINY_PRIORS]:
        argv += ["--set", o]
    assert main(argv) == 0
    run = tmp_path / "run"
    assert main(["sample", "--run-dir", str(run), "--n", "4", "--batch-size", "2", "--seed", "1", "--guidance", "2.5"]) == 0
    saved = np.load(run / "samples" / "samples.npz")
    assert json.loads((run / "samples" / "metrics.json").read_text())["guidance"] == 2.5
    pipe = Pipeline.from_pretrained(run, device="cpu")
    assert pipe.priors[0].null_label == 2  # two classes in the folder, the third is "no label"
    out = pipe(4, seed=1, batch_size=2, guidance=2.5, output="uint8")
    assert np.array_equal(out.images.permute(0, 2, 3, 1).numpy(), saved["arr_0"])
    none, one = (pipe(4, seed=1, batch_size=2, guidance=g, output="uint8").codes for g in (0.0, 1.0))
    plain = pipe(4, seed=1, batch_size=2, guidance=1.0, top_k=0, output="uint8").codes
    assert all(torch.equal(a, b) for a, b in zip(one, plain))
    assert not all(torch.equal(a, b) for a, b in zip(none, one))


def test_guidance_without_label_dropout_is_refused_when_the_configuration_is_resolved(run, capsys):
    assert main(["sample", "--run-dir", str(run), "--guidance", "2"]) == 2
    err = capsys.readouterr().err
    assert "needs its prior trained with label dropout: set prior.top.label_dropout" in err


def test_the_largest_sampling_seed_still_gives_every_batch_its_own_generator():
    """batch b of seed s draws from s * SEED_STRIDE + b, a signed 64-bit seed: the largest allowed s works for
    2**32 batches, one more is refused by name instead of overflowing inside torch"""
    from vqvae2.config import SAMPLE_SEED_MAX
    from vqvae2.pipeline import batch_generator
    last, first = batch_generator(SAMPLE_SEED_MAX, 2 ** 32 - 1), batch_generator(SAMPLE_SEED_MAX, 0)
    assert not torch.equal(torch.rand(4, generator=last), torch.rand(4, generator=first))
    with pytest.raises(ValueError, match=f"sampling seed {SAMPLE_SEED_MAX + 1} is outside"):
        batch_generator(SAMPLE_SEED_MAX + 1, 0)
