"""Samplers: the cached sampler gives exactly the reference sampler's codes, and its per-step
logits equal a teacher-forced forward over the sampled codes."""
import pytest
import torch

from vqvae2.config import PixelSNAILConfig
from vqvae2.pixelsnail import PixelSNAIL
from vqvae2.sampling import sample_cached, sample_hierarchy, sample_reference

N_CLASSES = 3


def priors(cond_upsample="nearest"):
    """Top (2x3, 7 codes) and bottom (4x6, 9 codes) priors, both with attention and classes, and a "no label"
    class (label dropout) for classifier-free guidance."""
    torch.manual_seed(0)
    common = dict(channels=8, n_blocks=2, attention_blocks=[0, 1], n_heads=2, dropout=0.2,
                  n_classes=N_CLASSES, label_dropout=0.2, cond_channels=4, n_cond_res=1)
    top = PixelSNAIL(PixelSNAILConfig(codebook_size=7, height=2, width=3, n_res_per_block=1, **common))
    bottom = PixelSNAIL(PixelSNAILConfig(codebook_size=9, height=4, width=6, n_res_per_block=2, kernel_size=5,
                                         cond_shapes=[[7, 2, 3]], cond_upsample=cond_upsample, **common))
    return [top, bottom]


@pytest.mark.parametrize("temperature,top_k,top_p,guidance,cond_upsample",
                         [(1.0, None, None, None, "nearest"), (0.6, 3, None, None, "nearest"),
                          (1.7, 1, None, None, "nearest"), (1.0, None, None, None, "learned"),
                          (1.3, None, [0.5, 0.8], None, "nearest"), (0.8, 4, 0.9, None, "nearest"),
                          (1.0, None, None, 3.0, "nearest"), (0.7, None, 0.9, [0.0, 2.0], "learned")])
def test_cached_equals_reference_over_a_hierarchy(temperature, top_k, top_p, guidance, cond_upsample):
    levels = priors(cond_upsample)
    labels = torch.tensor([0, 1, 2, 1, 0])
    run = lambda sampler: sample_hierarchy(
        levels, 5, labels=labels, temperature=temperature, top_k=top_k, top_p=top_p, guidance=guidance,
        sampler=sampler, generator=torch.Generator().manual_seed(3), batch_size=3)
    ref, cached = run("reference"), run("cached")
    assert [c.shape for c in cached] == [(5, 2, 3), (5, 4, 6)]
    for a, b in zip(ref, cached):
        assert a.dtype == torch.long and torch.equal(a, b)
    assert len(torch.unique(cached[1])) > 1
    assert all(p.training for p in levels)  # samplers restore the mode
    if top_k == 1:  # greedy: the sampled code is the argmax of the teacher-forced logits
        top, bottom = levels
        assert torch.equal(cached[0], top.eval()(cached[0], labels=labels).argmax(1))


@pytest.fixture
def threads(request):
    """torch's intra-op thread count set to request.param for the test, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_compiled_equals_reference_over_a_hierarchy(monkeypatch, threads):
    """sample.sampler=compiled (torch.compile of each row's work): the reference's codes, also when a row is
    sampled in several compiled chunks (the bottom's rows of 6 in chunks of 4 and 2: its 4 units may unroll
    16 unit-steps per call, the top's 2 units all 3 columns), and when the batch is sampled in shards, one
    per CPU thread (on 2 threads: 4 samples in two shards of 2)."""
    from collections import Counter

    from vqvae2.sampling import rows, samplers, threads as sampler_threads
    monkeypatch.setattr(rows, "COMPILE_CHUNK", 8)
    monkeypatch.setattr(rows, "COMPILE_UNIT_STEPS", 16)
    shard_sizes, rows_reported, widths = [], [], []
    real_shards, real_chunks = sampler_threads.shards, rows.row_chunks

    def recording_shards(device, n):
        parts = real_shards(device, n)
        shard_sizes.extend(hi - lo for lo, hi in parts)
        return parts

    def recording_chunks(width, chunk):  # the columns each compiled call samples, per row
        chunks = real_chunks(width, chunk)
        widths.extend(c1 - c0 for c0, c1 in chunks)
        return chunks

    monkeypatch.setattr(sampler_threads, "shards", recording_shards)
    monkeypatch.setattr(rows, "row_chunks", recording_chunks)
    levels = priors()
    n = 5 if threads == 1 else 4
    labels = torch.tensor([0, 1, 2, 1, 0])[:n]
    run = lambda sampler, **kw: sample_hierarchy(levels, n, labels=labels, temperature=0.6, top_k=3, top_p=[None, 0.9],
                                                 guidance=[2.0, 1.5], sampler=sampler,
                                                 generator=torch.Generator().manual_seed(3), **kw)
    ref, compiled = run("reference"), run("compiled")
    assert shard_sizes == ([5, 5] if threads == 1 else [2, 2, 2, 2])
    per_level = len(shard_sizes) // 2  # shards of each level
    assert Counter(widths) == {3: per_level, 4: per_level, 2: per_level}  # per row: top 3, bottom 4 + 2
    for a, b in zip(ref, compiled):
        assert torch.equal(a, b)
    # progress: every row of every level counted once for the whole batch (one shard reports the rows)
    monkeypatch.setattr("tqdm.auto.tqdm.update", lambda bar, k=1: rows_reported.append(k))
    assert all(torch.equal(a, b) for a, b in zip(run("compiled", progress=True), compiled))
    assert sum(rows_reported) == n * (2 * 3 + 4 * 6)
    assert len(torch.unique(compiled[1])) > 1
    assert all(p.training for p in levels)
    # its per-step logits (a graph of their own) are those of a teacher-forced forward
    top, bottom = levels
    codes, logits = samplers.sample_compiled(bottom, n, cond=[compiled[0]], labels=labels, temperature=0.6,
                                             top_k=3, generator=torch.Generator().manual_seed(4), return_logits=True)
    with torch.no_grad():
        forced = bottom.eval()(codes, [compiled[0]], labels)
    assert logits.shape == (n, 9, 4, 6)
    torch.testing.assert_close(logits, forced, atol=1e-4, rtol=0)


def test_samplers_run_in_eval_mode_also_when_only_a_submodule_is_training():
    """The samplers skip switching a prior that is wholly in eval mode; one with a submodule left in training
    mode (its dropout active) is still switched, or the reference would drop out what the cached one does not."""
    top = priors()[0].eval()
    top.blocks[0].train()
    labels = torch.tensor([0, 1, 2])
    run = lambda fn: fn(top, 3, labels=labels, generator=torch.Generator().manual_seed(2))
    assert torch.equal(run(sample_cached), run(sample_reference))
    assert not any(m.training for m in top.modules())  # restored to the prior's own mode


def test_compiled_sampler_shards_the_batch_one_per_thread(monkeypatch):
    from vqvae2.sampling.threads import shards
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cpu = torch.device("cpu")
    assert shards(cpu, 5) == [(0, 2), (2, 5)]
    assert shards(cpu, 3) == [(0, 3)]  # fewer than two samples per thread
    assert shards(cpu, 256) == [(0, 128), (128, 256)]  # wide priors' batches too
    assert shards(torch.device("meta"), 256) == [(0, 256)]  # only CPU threads are shared out
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert shards(cpu, 10) == [(0, 2), (2, 5), (5, 8), (8, 10)]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert shards(cpu, 16) == [(0, 16)]


def test_sharded_sampling_leaves_no_thread_and_no_compiler_setting_behind():
    """The shards' pool is shut down when the call returns, and the recompile limit is raised only inside it."""
    import threading

    import torch._dynamo

    from vqvae2.sampling import sample_compiled
    from vqvae2.sampling.threads import run_sharded
    limit = torch._dynamo.config.recompile_limit
    seen = run_sharded(lambda lo, hi, first: (hi - lo, first, torch.get_num_threads(), torch.is_grad_enabled()),
                       [(0, 2), (2, 5)])
    assert seen == [(2, True, 1, False), (3, False, 1, False)]
    top = priors()[0]
    sample_compiled(top, 4, labels=torch.tensor([0, 1, 2, 0]), generator=torch.Generator().manual_seed(1))
    assert not [t for t in threading.enumerate() if t.name.startswith("vqvae2-sampler")]
    assert torch._dynamo.config.recompile_limit == limit


def test_compiled_sampler_unrolls_fewer_positions_of_deep_priors():
    """Positions per compiled call: COMPILE_CHUNK for shallow priors, fewer when positions x units would pass
    COMPILE_UNIT_STEPS (compile time grows with the unrolled graph), never fewer than one."""
    from vqvae2.sampling import COMPILE_CHUNK, COMPILE_UNIT_STEPS, compile_chunk
    from vqvae2.sampling.rows import row_chunks
    assert (COMPILE_CHUNK, COMPILE_UNIT_STEPS) == (8, 64)
    assert compile_chunk(4) == 8  # fashion32's priors: rows of 4 and 8 in one call each
    assert compile_chunk(8) == 8
    assert compile_chunk(16) == 4  # ffhq256's bottom prior
    assert compile_chunk(24) == 2
    assert compile_chunk(100) == 1
    assert compile_chunk(0) == 8
    assert row_chunks(6, 4) == [(0, 4), (4, 6)] and row_chunks(8, 8) == [(0, 8)]


def test_samplers_follow_weight_updates():
    """The incremental samplers read the weights as they are at the call: an optimizer step or a parameter
    assigned anew is seen. PriorWeights of a prior with another configuration are refused."""
    from vqvae2.sampling import PriorWeights
    top, untouched = priors()[0], priors()[0]
    labels = torch.tensor([0, 1, 2])
    run = lambda fn, prior=top: fn(prior, 3, labels=labels, generator=torch.Generator().manual_seed(2))
    assert torch.equal(run(sample_cached), run(sample_reference))
    before = PriorWeights(top)
    first = run(sample_cached, untouched)
    opt = torch.optim.SGD(top.parameters(), lr=5.0)
    loss = top(run(sample_cached), labels=labels).logsumexp(1).mean()
    loss.backward()
    opt.step()
    after = run(sample_cached)
    assert torch.equal(after, run(sample_reference))
    assert not torch.equal(after, run(sample_reference, untouched))  # the step changed the samples
    with pytest.raises(ValueError, match="another configuration"):
        sample_cached(priors()[1], 3, cond=[first], labels=labels, weights=before)
    with torch.no_grad():  # a parameter assigned anew (not updated in place) is seen too
        top.head.weight = torch.nn.Parameter(torch.randn(top.head.weight.shape, generator=torch.Generator().manual_seed(9)))
    assigned = run(sample_cached)
    assert torch.equal(assigned, run(sample_reference)) and not torch.equal(assigned, after)


@pytest.mark.parametrize("threshold", [0, 10**9])
def test_cached_equals_reference_on_the_threaded_and_the_single_thread_path(monkeypatch, threshold):
    """Large priors sample with torch's threads and their v stream's convolutions as convolutions, small ones
    on one thread with window matmuls: both give the reference's codes."""
    from vqvae2.sampling import rows, threads
    monkeypatch.setattr(threads, "THREADED_ROW_VALUES", threshold)
    as_convolutions = []
    real_v_row = rows.v_row
    monkeypatch.setattr(rows, "v_row", lambda *a, v_convs: as_convolutions.append(v_convs is not None) or
                        real_v_row(*a, v_convs=v_convs))
    torch.set_num_threads(2)
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda k: (seen.append(k), real(k)))
    levels = priors()
    labels = torch.tensor([0, 1, 2])
    run = lambda sampler: sample_hierarchy(levels, 3, labels=labels, sampler=sampler,
                                           generator=torch.Generator().manual_seed(5))
    ref, cached = run("reference"), run("cached")
    for a, b in zip(ref, cached):
        assert torch.equal(a, b)
    assert (1 in seen) == (threshold > 0)  # one thread only on the small-prior path
    assert as_convolutions and set(as_convolutions) == {threshold == 0}


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.8, 4)])
def test_cached_logits_match_teacher_forced_forward(temperature, top_k):
    top, bottom = priors()
    labels = torch.tensor([2, 0, 1])
    cond = [sample_cached(top, 3, labels=labels, generator=torch.Generator().manual_seed(1))]
    codes, logits = sample_cached(bottom, 3, cond=cond, labels=labels, temperature=temperature, top_k=top_k,
                                  generator=torch.Generator().manual_seed(2), return_logits=True)
    with torch.no_grad():
        forced = bottom.eval()(codes, cond, labels)
    assert logits.shape == (3, 9, 4, 6)
    torch.testing.assert_close(logits, forced, atol=1e-4, rtol=0)


def test_same_seed_same_codes_and_generator_consumed_identically():
    top, _ = priors()
    labels = torch.tensor([0, 1])
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = sample_reference(top, 2, labels=labels, generator=g1)
    b = sample_cached(top, 2, labels=labels, generator=g2)
    assert torch.equal(a, b)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_nucleus_keeps_the_most_probable_codes_until_their_mass_reaches_top_p():
    """Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.5 keeps one code, 0.6 two, 0.8 two (0.5 + 0.3 reaches it),
    0.81 three, 1.0 all; the picks never leave the nucleus, and within it follow the renormalised CDF."""
    from vqvae2.sampling import pick
    from vqvae2.sampling.controls import nucleus
    logits = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    for top_p, kept in [(0.5, [1]), (0.6, [1, 3]), (0.8, [1, 3]), (0.81, [0, 1, 3]), (1.0, [0, 1, 2, 3])]:
        assert torch.isfinite(nucleus(logits, top_p)[0]).nonzero().flatten().tolist() == kept, top_p
    u = torch.linspace(0, 0.999, 1000)
    codes = pick(logits.expand(1000, 4), u, 1.0, None, 0.6)
    assert set(codes.tolist()) == {1, 3} and (codes == 1).sum() == 625  # 0.5 / 0.8 of the uniforms
    tied = torch.tensor([[1.0, 1.0, 0.0]])  # codes tied with the last one kept stay
    assert torch.isfinite(nucleus(tied, 0.3)).tolist() == [[True, True, False]]


def test_guidance_zero_samples_the_no_label_class_and_guidance_pulls_toward_the_label():
    """Scale 0 gives exactly the codes of sampling with the "no label" class; the guided logits are
    l_u + s (l_c - l_u) of the teacher-forced forwards with and without the labels"""
    top, bottom = priors()
    labels = torch.tensor([2, 0, 1])
    null = torch.full((3,), top.null_label)
    assert top.null_label == N_CLASSES
    run = lambda fn, lab, **kw: fn(top, 3, labels=lab, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(run(sample_cached, labels, guidance=0.0), run(sample_reference, null))
    cond = [run(sample_cached, labels)]
    codes, logits = sample_cached(bottom, 3, cond=cond, labels=labels, guidance=2.5, return_logits=True,
                                  generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        lc, lu = bottom.eval()(codes, cond, labels), bottom(codes, cond, null)
    torch.testing.assert_close(logits, lu + 2.5 * (lc - lu), atol=1e-4, rtol=0)


def test_label_dropout_replaces_labels_with_the_no_label_class_in_training_only():
    from vqvae2.config import PixelSNAILConfig
    torch.manual_seed(0)
    prior = PixelSNAIL(PixelSNAILConfig(codebook_size=5, height=3, width=3, channels=8, n_blocks=1, n_res_per_block=1,
                                        attention_blocks=[], dropout=0.0, n_classes=2, label_dropout=0.5))
    codes, labels = torch.randint(0, 5, (64, 3, 3)), torch.randint(0, 2, (64,))
    torch.manual_seed(1)
    trained = prior.train()(codes, labels=labels)
    torch.manual_seed(1)
    dropped = labels.masked_fill(torch.rand(64) < 0.5, 2)
    assert 10 < int((dropped == 2).sum()) < 54
    with torch.no_grad():
        assert torch.equal(trained.detach(), prior.eval()(codes, labels=dropped))
        assert not torch.equal(prior(codes, labels=labels), prior(codes, labels=dropped))  # eval keeps the labels
    with pytest.raises(ValueError, match="label_dropout"):
        PixelSNAILConfig(n_classes=0, label_dropout=0.1)


def test_sampler_errors():
    top, bottom = priors()
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="temperature"):
        sample_cached(top, 2, labels=labels, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_cached(top, 2, labels=labels, top_k=8)
    with pytest.raises(ValueError, match="top_p"):
        sample_reference(top, 2, labels=labels, top_p=0.0)
    with pytest.raises(ValueError, match="guidance must be"):
        sample_cached(top, 2, labels=labels, guidance=-1.0)
    plain = PixelSNAIL(PixelSNAILConfig(codebook_size=7, height=2, width=3, channels=8, n_classes=2, n_heads=2))
    with pytest.raises(ValueError, match="label dropout"):
        sample_cached(plain, 2, labels=labels, guidance=2.0)
    with pytest.raises(ValueError, match="class-conditional"):
        sample_cached(top, 2)
    with pytest.raises(ValueError, match="higher level"):
        sample_reference(bottom, 2, labels=labels)
    with pytest.raises(ValueError, match="cond_shapes"):
        sample_hierarchy([bottom, top], 2, labels=labels)
    with pytest.raises(ValueError, match="sampler"):
        sample_hierarchy([top, bottom], 2, labels=labels, sampler="fast")
