import pytest
import torch
import torch.nn.functional as F

from pipelines.config import preset_names, resolve_config
from pipelines.stage2 import prior_config
from vqvae2.pixelsnail import PixelSNAIL


def small(preset):
    cfg = resolve_config(preset)
    over = ["vqvae.codebook_size=32"]
    for level in cfg.prior:
        over += [f"prior.{level}.channels=8", f"prior.{level}.n_blocks=1", f"prior.{level}.n_res_per_block=1",
                 f"prior.{level}.n_heads=2", f"prior.{level}.cond_channels=4", f"prior.{level}.n_cond_res=1",
                 f"prior.{level}.attention_blocks={[0] if cfg.prior[level].get('attention_blocks') else []}"]
    return resolve_config(preset, over)


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_has_a_prior_per_level_with_working_shapes(preset):
    cfg = small(preset)
    levels, sizes = cfg.vqvae.levels, cfg.vqvae.grid_sizes()
    assert list(cfg.prior) == levels  # one prior per level, top first
    meta = {"levels": levels, "grid_sizes": sizes, "codebook_size": 32, "num_classes": 3}
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, 32, (2, s, s), generator=g) for s in sizes]
    labels = torch.tensor([0, 2])
    for i, level in enumerate(levels):
        pcfg = prior_config(cfg, level, meta)
        assert (pcfg.height, pcfg.n_classes, len(pcfg.cond_shapes)) == (sizes[i], 3, i)
        model = PixelSNAIL(pcfg)
        logits = model(codes[i], cond=codes[:i], labels=labels)
        assert logits.shape == (2, 32, sizes[i], sizes[i])
        F.cross_entropy(logits, codes[i]).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_prior_settings_fixed_by_the_codes_cannot_be_configured():
    """Checked when the configuration is resolved, not when the prior's stage starts."""
    with pytest.raises(ValueError, match="prior.top.height is set from the codes"):
        resolve_config("fashion32", ["prior.top.height=16"])
    with pytest.raises(ValueError, match="unknown key 'prior.top.chanels'; did you mean 'channels'"):
        resolve_config("fashion32", ["prior.top.chanels=16"])


def test_codes_fix_the_grid_classes_and_levels_above():
    cfg = resolve_config("fashion32", ["prior.top.class_conditional=false"])
    meta = {"levels": ["top", "bottom"], "grid_sizes": [4, 8], "codebook_size": 512, "num_classes": 10}
    top, bottom = prior_config(cfg, "top", meta), prior_config(cfg, "bottom", meta)
    assert (top.height, top.n_classes, top.cond_shapes) == (4, 0, [])
    assert (bottom.height, bottom.n_classes, bottom.cond_shapes) == (8, 10, [[512, 4, 4]])


def test_label_dropout_is_kept_for_labelled_data_and_dropped_for_unlabelled():
    """A preset written for labelled faces (prior.<level>.label_dropout) still runs on an unlabelled folder:
    with no classes there is no label to drop"""
    from pipelines.config import prior_model_config
    settings = {"channels": 8, "label_dropout": 0.2}
    assert prior_model_config(settings, "top", ["top", "bottom"], [4, 8], 16, num_classes=3).label_dropout == 0.2
    assert prior_model_config(settings, "top", ["top", "bottom"], [4, 8], 16, num_classes=0).label_dropout == 0.0
    assert prior_model_config(settings, "top", ["top", "bottom"], [4, 8], 16, num_classes=3).n_classes == 3
