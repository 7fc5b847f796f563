import contextlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True, scope="session")
def _prepared_data_cache(tmp_path_factory):
    """Prepared data (rendered faces) goes to a temporary directory, never to the user's cache."""
    old = os.environ.get("VQVAE2_CACHE")
    os.environ["VQVAE2_CACHE"] = str(tmp_path_factory.mktemp("vqvae2-cache"))
    yield
    if old is None:
        os.environ.pop("VQVAE2_CACHE", None)
    else:
        os.environ["VQVAE2_CACHE"] = old


def make_image_folder(root, n_per_class=8, size=16, classes=("cats", "dogs"), seed=0):
    """A tiny labelled image folder: one subfolder per class, coloured noise PNGs."""
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            arr[..., ci % 3] = 255 - arr[..., ci % 3] // 4  # a class-dependent colour cast
            Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "images")


TINY_VQVAE = [
    "vqvae.in_channels=3", "vqvae.image_size=16", "vqvae.channels=8", "vqvae.res_channels=4",
    "vqvae.n_res_blocks=1", "vqvae.embed_dim=4", "vqvae.codebook_size=16", "vqvae.strides=[2, 2]",
    "train_vqvae.steps=6", "train_vqvae.batch_size=4", "train_vqvae.warmup_steps=2", "train_vqvae.log_every=2",
    "train_vqvae.save_every=2", "train_vqvae.mixed_precision='no'",
]


def folder_overrides(folder):
    return ["data.name='folder'", f"data.root='{folder}'", "data.size=16", "data.val_fraction=0.25", *TINY_VQVAE]


@pytest.fixture
def tiny_overrides(image_folder):
    return folder_overrides(image_folder)

TINY_PRIORS = [
    "prior.top.channels=8", "prior.top.n_blocks=1", "prior.top.n_res_per_block=1", "prior.top.attention_blocks=[0]",
    "prior.top.n_heads=2", "prior.bottom.channels=8", "prior.bottom.n_blocks=1", "prior.bottom.n_res_per_block=1",
    "prior.bottom.attention_blocks=[]", "prior.bottom.cond_channels=4", "prior.bottom.n_cond_res=1",
    "train_prior.steps=4", "train_prior.batch_size=4", "train_prior.warmup_steps=1", "train_prior.log_every=2",
    "train_prior.save_every=2", "train_prior.mixed_precision='no'", "sample.n=6", "sample.batch_size=4",
]

TINY_EVAL = [
    "classifier.channels=[4, 8]", "train_classifier.steps=3", "train_classifier.batch_size=4",
    "train_classifier.warmup_steps=1", "train_classifier.mixed_precision='no'", "train_classifier.log_every=1",
    "eval.n_samples=10", "eval.acceptance_rates=[1.0, 0.5]", "eval.kid_subset_size=4", "eval.batch_size=8",
]


def random_inception_state(seed: int = 0) -> dict:
    """A state dict with exactly the keys and shapes of torch-fidelity's inception-v3-compat network
    (what the standard weights file holds), filled with random values made here."""
    from collections import OrderedDict

    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    class Layers(tf_inception.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # build the layers, load nothing
            return None

    original = tf_inception.load_state_dict_from_url
    tf_inception.load_state_dict_from_url = lambda *a, **k: None
    try:
        torch.manual_seed(seed)
        net = Layers("layers", ["2048"])  # conv and linear weights: torch's default random init
    finally:
        tf_inception.load_state_dict_from_url = original
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, t in net.state_dict().items():
        if t.dim() >= 2:  # conv / linear weights: He-normal, so that different images keep different features
            fan_in = t[0].numel()
            t = torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif key.endswith("running_var") or key.endswith(".weight"):
            t = 0.8 + 0.4 * torch.rand(t.shape, generator=g)  # batch-norm scales and variances stay positive
        elif key.endswith(("running_mean", ".bias")):
            t = 0.05 * torch.randn(t.shape, generator=g)
        else:
            t = t.clone()  # num_batches_tracked
        state[key] = t
    return state


def write_inception_weights(path, seed: int = 0, legacy: bool = False):
    """torch.save of a plain state dict, as the standard file is (zip format, or the legacy one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_inception_state(seed), path, _use_new_zipfile_serialization=not legacy)
    return path


class Killed(Exception):
    """Stands for the process being killed in the middle of training (see `killed_after`)."""


@contextlib.contextmanager
def killed_after(step: int):
    """Training raises Killed right after optimiser step `step` (its logging and pictures done, before a save
    that step would make), as a kill there would stop it; the patch is undone on leaving."""
    from pipelines.watch import Watcher
    real = Watcher.on_step

    def on_step(self, at, model):
        real(self, at, model)
        if at >= step:
            raise Killed(f"killed after step {at}")

    Watcher.on_step = on_step
    try:
        with pytest.raises(Killed):
            yield
    finally:
        Watcher.on_step = real


def finished_run(root, n_per_class: int = 20, extra: tuple[str, ...] = ()):
    """A tiny run of the demo pipeline through every stage, evaluation included (folder data at 16 px);
    `extra`: more --set overrides."""
    from pipelines.cli import main
    run = root / "run"
    argv = ["run", "--preset", "demo", "--run-dir", str(run)]
    for o in [*folder_overrides(make_image_folder(root / "images", n_per_class=n_per_class)), *TINY_PRIORS, *TINY_EVAL,
              *extra]:
        argv += ["--set", o]
    assert main(argv) == 0
    return run
