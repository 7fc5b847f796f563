"""PixelSNAIL prior: causality by gradient, shapes, conditioning, save/load, input errors."""
import pytest
import torch
import torch.nn.functional as F

from vqvae2.config import PixelSNAILConfig, from_dict, to_dict
from vqvae2.pixelsnail import PixelSNAIL

H, W, K = 4, 6, 7


def tiny_config(**kw) -> PixelSNAILConfig:
    base = dict(codebook_size=K, height=H, width=W, channels=8, n_blocks=2, n_res_per_block=1, kernel_size=3,
                attention_blocks=[0, 1], n_heads=2, dropout=0.0, n_classes=3, cond_shapes=[[5, 1, 3], [4, H, W]],
                cond_channels=4, n_cond_res=1)
    return PixelSNAILConfig(**{**base, **kw})


def inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (b, H, W), generator=g)
    cond = [torch.randint(0, 5, (b, 1, 3), generator=g), torch.randint(0, 4, (b, H, W), generator=g)]
    return codes, cond, torch.arange(b) % 3


def model(seed=0, **kw) -> PixelSNAIL:
    torch.manual_seed(seed)
    return PixelSNAIL(tiny_config(**kw)).eval()


def embedded_grad(prior, codes, cond, labels, r, c):
    """|d logits[0, :, r, c] / d embedding| summed over channels, per sample and position: (B, H, W)."""
    store = []

    def hook(module, args, out):
        leaf = out.detach().requires_grad_()
        store.append(leaf)
        return leaf

    handle = prior.embed.register_forward_hook(hook)
    try:
        prior(codes, cond, labels)[0, :, r, c].sum().backward()
    finally:
        handle.remove()
    return store[0].grad.abs().sum(-1)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_causal_by_gradient_without_blind_spot(kernel_size):
    prior = model(kernel_size=kernel_size)
    codes, cond, labels = inputs()
    for r, c in [(0, 0), (0, 3), (0, W - 1), (1, 0), (1, W - 1), (2, 2), (H - 1, 0), (H - 1, W - 1)]:
        g = embedded_grad(prior, codes, cond, labels, r, c)
        p = r * W + c
        assert torch.all(g[0].flatten()[p:] == 0), f"logits at {(r, c)} see the input at or after it"
        assert torch.all(g[1] == 0), "samples of a batch leak into each other"
        if c > 0:
            assert g[0, r, c - 1] > 0  # left neighbour
        if r > 0:
            assert g[0, r - 1, c] > 0
            if c + 1 < W:
                assert g[0, r - 1, c + 1] > 0  # up-right: no blind spot
        # with attention every earlier position is in reach
        assert torch.all(g[0].flatten()[:p] > 0)


def test_convolutions_alone_are_causal_and_reach_up_right():
    prior = model(attention_blocks=[], n_res_per_block=2)
    codes, cond, labels = inputs()
    r, c = 3, 1
    g = embedded_grad(prior, codes, cond, labels, r, c)
    assert torch.all(g[0].flatten()[r * W + c:] == 0)
    assert g[0, r - 1, c + 2] > 0 and g[0, r - 2, c + 3] > 0


@pytest.mark.parametrize("length", [16, 300])
def test_plain_bf16_attention_equals_the_fused_kernel(length):
    """bf16 attention on CPU takes plain matmuls (mask as a bias) instead of torch's fused kernel: same causal result."""
    from vqvae2.pixelsnail import causal_attention
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 8, requires_grad=True) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = causal_attention(*(t.bfloat16() for t in (q, k, v)))
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want, atol=3e-2, rtol=3e-2)
    got.float().sum().backward()  # gradients flow through the plain path
    assert q.grad is not None and torch.isfinite(q.grad).all()
    v_changed = v.detach().clone()
    v_changed[:, :, -1] = 100.0
    changed = causal_attention(q.detach().bfloat16(), k.detach().bfloat16(), v_changed.bfloat16())
    assert torch.equal(changed[:, :, :-1], got.detach()[:, :, :-1])  # the last value moves no earlier output


def test_dropout_masks_at_rate_p_scales_and_repeats_with_the_generator():
    from vqvae2.pixelsnail import Dropout
    d = Dropout(0.25).train()
    x = torch.randn(64, 32, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(0)
    y = d(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert torch.allclose(y[kept], x[kept] / 0.75)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)  # the gradient goes through the kept elements only
    torch.manual_seed(0)
    assert torch.equal(d(x), y)  # same generator state, same mask: what resume and checkpointing rely on
    assert d.eval()(x) is x and Dropout(0.0).train()(x) is x


def test_gate_is_glu_in_value_and_gradient_and_keeps_the_layout():
    """The model's gate is written out for speed; the samplers use F.glu, so in fp32 the values must be equal."""
    from vqvae2.pixelsnail import gate
    x = torch.randn(4, 12, 3, 5).to(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(4, 6, 3, 5)
    y = gate(x)
    assert torch.equal(y, F.glu(x, dim=1))
    assert y.is_contiguous(memory_format=torch.channels_last)
    (ours,) = torch.autograd.grad(y, x, g)
    (theirs,) = torch.autograd.grad(F.glu(x, dim=1), x, g)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_prior_loss_over_flat_rows_equals_cross_entropy_over_channels():
    from pipelines.stage2 import prior_loss
    prior = model().to(memory_format=torch.channels_last)
    codes, cond, labels = inputs(b=3)
    loss, _ = prior_loss(prior, (labels, codes, *cond))
    assert torch.allclose(loss, F.cross_entropy(prior(codes, cond, labels), codes), atol=1e-6)


def test_shapes_forward_backward_and_bf16_autocast():
    prior = model(dropout=0.1).train()
    codes, cond, labels = inputs(b=3)
    logits = prior(codes, cond, labels)
    assert logits.shape == (3, K, H, W)
    F.cross_entropy(logits, codes).backward()
    assert all(p.grad is not None for p in prior.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(prior(codes, cond, labels), codes)
    loss.backward()
    assert torch.isfinite(loss)


def test_class_and_higher_levels_change_the_logits():
    prior = model()
    codes, cond, labels = inputs()
    base = prior(codes, cond, labels)
    assert not torch.allclose(base, prior(codes, cond, (labels + 1) % 3))
    for i in range(2):
        other = list(cond)
        other[i] = (cond[i] + 1) % (5 if i == 0 else 4)
        assert not torch.allclose(base, prior(codes, other, labels))


def test_save_load_round_trip(tmp_path):
    prior = model()
    codes, cond, labels = inputs()
    prior.save_pretrained(tmp_path / "prior")
    loaded = PixelSNAIL.from_pretrained(tmp_path / "prior").eval()
    assert loaded.config == prior.config
    assert torch.equal(loaded(codes, cond, labels), prior(codes, cond, labels))


def test_config_round_trips_through_json_and_validates():
    import json
    cfg = tiny_config()
    assert from_dict(PixelSNAILConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="prior.channels must be >= 1, got 0"):
        tiny_config(channels=0)
    with pytest.raises(ValueError, match="attention_blocks"):
        tiny_config(attention_blocks=[2])
    with pytest.raises(ValueError, match="divisible by prior.n_heads"):
        tiny_config(channels=9)
    with pytest.raises(ValueError, match="kernel_size"):
        tiny_config(kernel_size=4)
    with pytest.raises(ValueError, match="power of two"):
        tiny_config(cond_shapes=[[5, 3, 3]])
    with pytest.raises(ValueError, match="prior.cond_upsample must be 'nearest' or 'learned', got 'bilinear'"):
        tiny_config(cond_upsample="bilinear")


@pytest.mark.parametrize("mode", ["nearest", "learned"])
def test_conditioning_upsampling_tells_positions_under_one_higher_code_apart(mode, tmp_path):
    """A 1 x 3 level above a 4 x 6 grid: every higher code covers 4 x 2 positions. Nearest upsampling
    gives them one feature vector; learned upsampling gives each its own (and still round-trips)."""
    prior = model(cond_upsample=mode)
    codes, cond, labels = inputs()
    feat = prior.cond_features(cond)  # (B, 2 * cond_channels, H, W); the first stack reads the 1 x 3 level
    assert feat.shape == (2, 8, H, W)
    block = feat[:, :4, :, 0:2]  # the positions under the first code of the 1 x 3 level
    same = torch.allclose(block, block[:, :, :1, :1].expand_as(block))
    assert same == (mode == "nearest")
    assert not torch.allclose(prior(codes, cond, labels), prior(codes, [(cond[0] + 1) % 5, cond[1]], labels))
    prior.save_pretrained(tmp_path / "prior")
    loaded = PixelSNAIL.from_pretrained(tmp_path / "prior").eval()
    assert loaded.config.cond_upsample == mode
    assert torch.equal(loaded(codes, cond, labels), prior(codes, cond, labels))


def test_bad_inputs_raise_clear_errors():
    prior = model()
    codes, cond, labels = inputs()
    with pytest.raises(ValueError, match=r"codes of shape \(B, 4, 6\)"):
        prior(codes[:, :3], cond, labels)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 7\)"):
        prior(codes + K, cond, labels)
    with pytest.raises(ValueError, match="integer"):
        prior(codes.float(), cond, labels)
    with pytest.raises(ValueError, match="conditioned on 2 higher level"):
        prior(codes, None, labels)
    with pytest.raises(ValueError, match=r"cond\[0\] must have shape"):
        prior(codes, [cond[0][:, :, :2], cond[1]], labels)
    with pytest.raises(ValueError, match="class-conditional"):
        prior(codes, cond, None)
    with pytest.raises(ValueError, match=r"labels \(class indices\) must lie in \[0, 3\)"):
        prior(codes, cond, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="unconditional"):
        model(n_classes=0)(codes, cond, labels)


def test_activation_checkpointing_gives_the_same_loss_and_gradients_with_dropout():
    import copy
    import torch.nn.functional as F
    from vqvae2.config import PixelSNAILConfig
    from vqvae2.pixelsnail import PixelSNAIL
    torch.manual_seed(0)
    cfg = PixelSNAILConfig(codebook_size=16, height=4, width=4, channels=8, n_blocks=2, n_res_per_block=1,
                           attention_blocks=[1], n_heads=2, dropout=0.3, n_classes=3, cond_shapes=[[16, 2, 2]],
                           cond_channels=4, n_cond_res=1)
    plain = PixelSNAIL(cfg).train()
    saver = copy.deepcopy(plain)
    saver.checkpointing = True
    codes, cond, labels = torch.randint(0, 16, (5, 4, 4)), [torch.randint(0, 16, (5, 2, 2))], torch.tensor([0, 1, 2, 0, 1])
    results = []
    for m in (plain, saver):
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays them in the recomputation
        loss = F.cross_entropy(m(codes, cond, labels), codes)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (la, ga), (lb, gb) = results
    assert torch.equal(la, lb)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-5, atol=1e-7, msg=name)
