import torch

from vqvae2.quantize import VectorQuantizer, VectorQuantizerEMA, build_quantizer, nearest_code


def make_vq(embed, decay=0.5, eps=0.0, threshold=0.0):
    vq = VectorQuantizerEMA(embed.shape[0], embed.shape[1], decay=decay, eps=eps, dead_code_threshold=threshold, init="none")
    vq.embed.copy_(embed)
    vq.ema_sum.copy_(embed)
    return vq


def as_map(rows):
    """(N, D) rows -> (1, D, 1, N) feature map, so the quantizer sees exactly these vectors."""
    return rows.t().reshape(1, rows.shape[1], 1, rows.shape[0])


def test_ema_update_matches_hand_computed_example():
    vq = make_vq(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])
    _, codes, _, stats = vq(as_map(x))
    assert codes.flatten().tolist() == [0, 0, 1]
    # counts [2, 1], sums [(1,1), (9,9)]; decay 0.5 from counts 1 and sums = codebook
    assert torch.allclose(vq.ema_count, torch.tensor([1.5, 1.0]))
    assert torch.allclose(vq.ema_sum, torch.tensor([[0.5, 0.5], [9.5, 9.5]]))
    assert torch.allclose(vq.embed, torch.tensor([[1 / 3, 1 / 3], [9.5, 9.5]]))
    assert stats.codes_used.item() == 2
    # perplexity of usage (2/3, 1/3)
    p = torch.tensor([2 / 3, 1 / 3])
    assert abs(stats.perplexity.item() - torch.exp(-(p * p.log()).sum()).item()) < 1e-5


def test_unused_code_stays_put_with_laplace_smoothing():
    far = torch.tensor([100.0, -100.0])
    vq = make_vq(torch.stack([torch.zeros(2), torch.ones(2), far]), decay=0.99, eps=1e-5)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        vq(as_map(torch.rand(64, 2, generator=g)))
    assert vq.ema_count[2] < 1.0  # it really was unused
    assert torch.allclose(vq.embed[2], far, rtol=1e-3), vq.embed[2]


def test_dead_code_is_restarted_from_the_batch():
    vq = make_vq(torch.tensor([[0.0, 0.0], [50.0, 50.0]]), decay=0.9, threshold=1.0)
    x = torch.randn(32, 2)
    _, _, _, stats = vq(as_map(x))
    assert stats.dead_codes.item() == 1
    # code 1 was never chosen: it now equals one of the batch vectors, with a fresh EMA state
    assert (x - vq.embed[1]).abs().sum(1).min() < 1e-6
    assert torch.allclose(vq.ema_sum[1] / vq.ema_count[1], vq.embed[1])
    assert vq.ema_count[1] >= 1.0


def test_distance_argmin_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    x, e = torch.randn(1000, 8, generator=g), torch.randn(50, 8, generator=g)
    expected = torch.cdist(x, e).argmin(1)
    assert torch.equal(nearest_code(x, e, chunk_size=97), expected)


def test_straight_through_gradient_and_commitment():
    vq = make_vq(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), threshold=0.0)
    vq.eval()
    z = torch.tensor([[0.2, 0.1], [0.9, 0.7]]).t().reshape(1, 2, 1, 2).requires_grad_(True)
    q, codes, commitment, _ = vq(z)
    assert codes.flatten().tolist() == [0, 1]
    w = torch.randn_like(q)
    (q * w).sum().backward()
    assert torch.allclose(z.grad, w)  # the quantiser passes gradients straight through
    z.grad = None
    _, _, commitment, _ = vq(z)
    commitment.backward()
    expected = 0.25 * 2 * (z.detach() - torch.tensor([[0.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)) / z.numel()
    assert torch.allclose(z.grad, expected)


def test_quantizer_runs_under_bf16_autocast_in_fp32():
    vq = VectorQuantizerEMA(16, 4, init="sample")
    z = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, codes, loss, _ = vq(z.bfloat16())
    assert q.dtype == torch.float32 and codes.dtype == torch.int64 and vq.embed.dtype == torch.float32


# the gradient-trained codebook (VQ-VAE 2017, eq. 3)

def make_cb(embed, beta=0.25, threshold=0.0):
    vq = VectorQuantizer(embed.shape[0], embed.shape[1], beta=beta, dead_code_threshold=threshold, init="none")
    with torch.no_grad():
        vq.embed.copy_(embed)
    return vq


def test_codebook_loss_terms_match_hand_computed_values():
    e = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    vq = make_cb(e, beta=0.25)
    z = as_map(torch.tensor([[0.2, 0.1], [0.9, 0.7], [0.6, 0.7]]))
    _, codes, loss, stats = vq(z)
    assert codes.flatten().tolist() == [0, 1, 1]
    # squared errors: (0.04 + 0.01) + (0.01 + 0.09) + (0.16 + 0.09) = 0.40 over 6 elements
    assert abs(stats.codebook_loss.item() - 0.40 / 6) < 1e-6
    assert abs(stats.commitment.item() - 0.25 * 0.40 / 6) < 1e-6
    assert abs(loss.item() - 1.25 * 0.40 / 6) < 1e-6


def test_gradients_reach_the_codebook_only_through_the_codebook_loss():
    e = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    vq = make_cb(e, beta=0.25)
    rows = torch.tensor([[0.2, 0.1], [0.9, 0.7], [0.6, 0.7]])
    z = as_map(rows).requires_grad_(True)
    q, _, loss, _ = vq(z)
    loss.backward()
    # codebook: d/de of mean((e_k - z_i)^2) = 2 (e_k - z_i) / 6, summed over the rows assigned to k
    expected_e = torch.stack([2 * (e[0] - rows[0]) / 6, 2 * ((e[1] - rows[1]) + (e[1] - rows[2])) / 6])
    assert torch.allclose(vq.embed.grad, expected_e, atol=1e-7)
    # encoder: only the commitment term, beta * 2 (z_i - e_k) / 6
    assigned = torch.stack([e[0], e[1], e[1]])
    assert torch.allclose(z.grad, as_map(0.25 * 2 * (rows - assigned) / 6), atol=1e-7)
    # the decoder's gradient passes straight through to the encoder and never reaches the codebook
    vq.embed.grad, z.grad = None, None
    q, _, _, _ = vq(z)
    w = torch.randn_like(q)
    (q * w).sum().backward()
    assert torch.equal(z.grad, w) and vq.embed.grad is None


def test_codebook_loss_quantizer_restarts_dead_codes_and_counts_usage():
    vq = make_cb(torch.tensor([[0.0, 0.0], [50.0, 50.0]]), threshold=1.0)
    vq.decay = 0.5
    x = torch.randn(32, 2)
    _, _, _, stats = vq(as_map(x))
    assert stats.dead_codes.item() == 1 and stats.codes_used.item() == 1
    assert (x - vq.embed[1].detach()).abs().sum(1).min() < 1e-6 and vq.ema_count[1] == 2.0
    assert isinstance(vq.embed, torch.nn.Parameter) and not hasattr(vq, "ema_sum")


def test_build_quantizer_names_the_choices():
    assert isinstance(build_quantizer("codebook_loss", 4, 2), VectorQuantizer)
    assert isinstance(build_quantizer("ema", 4, 2), VectorQuantizerEMA)
    import pytest
    with pytest.raises(ValueError, match="vqvae.quantizer must be one of"):
        build_quantizer("kmeans", 4, 2)
