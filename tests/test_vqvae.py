import pytest
import torch

from pipelines.config import preset_names, resolve_config
from vqvae2.config import VQVAEConfig
from vqvae2.vqvae import VQVAE2

SMALL = ["vqvae.channels=8", "vqvae.res_channels=4", "vqvae.n_res_blocks=1", "vqvae.embed_dim=4", "vqvae.codebook_size=16"]


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_builds_and_has_consistent_shapes(preset):
    cfg = resolve_config(preset, SMALL).vqvae
    model = VQVAE2(cfg).eval()
    # large presets: run the shapes on an image one level-stride product wide instead of 1024 px
    x = torch.rand(1, cfg.in_channels, cfg.image_size, cfg.image_size) * 2 - 1 if cfg.image_size <= 256 else None
    if x is None:
        small = VQVAEConfig(**{**cfg.__dict__, "image_size": 128})
        model, cfg = VQVAE2(small).eval(), small
        x = torch.rand(1, cfg.in_channels, 128, 128) * 2 - 1
    out = model(x)
    assert out.recon.shape == x.shape
    assert [tuple(c.shape[1:]) for c in out.codes] == [(s, s) for s in cfg.grid_sizes()]
    assert len(out.codes) == len(cfg.levels) == len(cfg.strides)


def test_ffhq1024_has_three_levels_of_the_paper():
    cfg = resolve_config("ffhq1024", SMALL).vqvae
    assert cfg.levels == ["top", "middle", "bottom"]
    assert cfg.grid_sizes() == [32, 64, 128]
    assert resolve_config("ffhq256").vqvae.grid_sizes() == [32, 64]
    assert resolve_config("fashion32").vqvae.grid_sizes() == [4, 8]


def test_encode_decode_and_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = VQVAEConfig(in_channels=3, image_size=16, channels=8, res_channels=4, n_res_blocks=1, embed_dim=4,
                      codebook_size=16, strides=[2, 2, 2])
    model = VQVAE2(cfg)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    model.train()
    model(x)  # data-dependent init and one EMA update
    model.eval()
    codes = model.encode(x)
    assert [c.shape for c in codes] == [torch.Size([4, 2, 2]), torch.Size([4, 4, 4]), torch.Size([4, 8, 8])]
    assert cfg.levels == ["top", "middle", "bottom"]
    recon = model.decode_codes(codes)
    assert torch.allclose(recon, model(x).recon, atol=1e-6)  # decoding needs only the codes
    model.save_pretrained(tmp_path)
    loaded = VQVAE2.from_pretrained(tmp_path).eval()
    assert loaded.config == cfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.encode(x), codes))
    assert torch.allclose(loaded.decode_codes(codes), recon)


def test_bad_inputs_are_clear_errors():
    model = VQVAE2(VQVAEConfig(in_channels=1, image_size=8, channels=8, res_channels=4, n_res_blocks=1,
                               embed_dim=4, codebook_size=8, strides=[2]))
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 1, 8, 8\)"):
        model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="bottom"):
        model.decode_codes([torch.zeros(1, 3, 3, dtype=torch.long)])
    with pytest.raises(ValueError, match="65535"):
        VQVAEConfig(codebook_size=70000)
    with pytest.raises(ValueError, match="do not divide"):
        VQVAEConfig(image_size=36, strides=[2, 4])


def _grads(model, loss_fn):
    model.zero_grad()
    loss = loss_fn(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("quantizer", ["ema", "codebook_loss"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(quantizer):
    import copy
    torch.manual_seed(0)
    cfg = VQVAEConfig(in_channels=3, image_size=16, channels=16, res_channels=8, n_res_blocks=1, embed_dim=8,
                      codebook_size=16, strides=[2, 2], init="sample", quantizer=quantizer)
    plain = VQVAE2(cfg).train()
    saver = copy.deepcopy(plain)
    saver.checkpointing = True
    x = torch.rand(4, 3, 16, 16) * 2 - 1

    def loss_fn(m):
        out = m(x)
        return (out.recon - x).pow(2).mean() + out.latent_loss
    la, ga = _grads(plain, loss_fn)
    lb, gb = _grads(saver, loss_fn)
    assert torch.allclose(la, lb) and ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-5, atol=1e-7, msg=name)
    # the quantizers ran once per forward in both: their EMA state is the same
    for qa, qb in zip(plain.quantizers, saver.quantizers):
        assert torch.equal(qa.ema_count, qb.ema_count)


def test_level_dropout_hides_lower_codes_from_the_decoder_in_training_only():
    import copy
    torch.manual_seed(0)
    cfg = VQVAEConfig(in_channels=3, image_size=16, channels=16, res_channels=8, n_res_blocks=1, embed_dim=8,
                      codebook_size=16, strides=[2, 2], init="sample", dead_code_threshold=0.0)
    plain = VQVAE2(cfg)
    dropping = copy.deepcopy(plain)
    dropping.config = VQVAEConfig(**{**cfg.__dict__, "level_dropout": 0.9})
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    torch.manual_seed(1)
    a = plain.train()(x)
    torch.manual_seed(1)
    b = dropping.train()(x)
    # the quantizers saw the same features (same codes); only what reached the decoder changed
    assert all(torch.equal(ca, cb) for ca, cb in zip(a.codes, b.codes))
    assert not torch.allclose(a.recon, b.recon)
    plain.eval(), dropping.eval()
    assert torch.equal(plain(x).recon, dropping(x).recon)  # off at evaluation
    with pytest.raises(ValueError, match="level_dropout"):
        VQVAEConfig(level_dropout=1.0)
