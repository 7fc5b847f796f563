"""Rejection sampling keeps the top-scored candidates; the report files are written and honest."""
import json

import pytest
import torch

from eval.rejection import candidates_needed, rates_needed, rejection_sample
from eval.report import build_report, plot_tradeoff, save_grid, write_report


def one_hot_probs(winners, n_cand, k=4, high=0.9, low=0.4):
    """Candidates in `winners` put `high` on class 0, the others `low`; the rest of the mass is spread."""
    probs = torch.full((n_cand, k), 0.0)
    for i in range(n_cand):
        top = high if i in winners else low
        probs[i, 0] = top
        probs[i, 1:] = (1 - top) / (k - 1)
    return probs


def test_unconditional_keeps_the_most_confident():
    n, rate = 3, 0.25  # looks at the first 12 candidates
    winners = {2, 7, 11}
    probs = one_hot_probs(winners | {13, 15}, 16)  # 13, 15 are confident but beyond the first 12
    idx = rejection_sample(torch.zeros(16, 1, 4, 4), probs, n, rate)
    assert idx.tolist() == [2, 7, 11]


def test_unconditional_uses_the_predicted_class():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.1, 0.9], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1]])
    assert rejection_sample(range(4), probs, 2, 0.5).tolist() == [1, 3]


def test_conditional_scores_the_intended_class():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    target = torch.tensor([1, 1, 0, 1])  # scores 0.1, 0.8, 0.3, 0.4
    assert rejection_sample(range(4), probs, 2, 0.5, target).tolist() == [1, 3]
    assert rejection_sample(range(4), probs, 1, 0.25, 0).tolist() == [0]  # one int for every candidate


def test_conditional_rejection_keeps_the_class_balance():
    # class 0 candidates are all confidently recognised, class 1 ones poorly: a global top-n would keep
    # only class 0; per class, each keeps as many as it has among the first n, its best ones
    target = torch.tensor([0, 1] * 6)
    score = torch.tensor([0.99, 0.30, 0.98, 0.60, 0.97, 0.20, 0.96, 0.50, 0.95, 0.10, 0.94, 0.40])
    probs = torch.stack([torch.where(target == 0, score, 1 - score), torch.where(target == 1, score, 1 - score)], 1)
    idx = rejection_sample(range(12), probs, 4, 1 / 3, target)
    assert idx.tolist() == [0, 2, 3, 7]  # class 0: its first two (0.99, 0.98); class 1: 0.60 and 0.50
    assert target[idx].tolist().count(1) == 2


def test_rate_one_keeps_the_first_n():
    probs = torch.rand(10, 5, generator=torch.Generator().manual_seed(0)).softmax(1)
    assert rejection_sample(range(10), probs, 6, 1.0).tolist() == list(range(6))
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    assert rejection_sample(range(10), probs, 6, 1.0, target).tolist() == list(range(6))


def test_candidates_needed():
    assert candidates_needed(3, 0.3) == 10  # not 11 from float noise
    assert candidates_needed(10, 0.25) == 40 and candidates_needed(5, 1.0) == 5 and candidates_needed(2, 0.3) == 7
    assert rates_needed(10, [1.0, 0.5, 0.1]) == 100


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        rejection_sample(range(10), torch.rand(10, 3), 2, rate)


def test_errors():
    probs = torch.rand(8, 3)
    with pytest.raises(ValueError, match="needs 10 candidates, got 8"):
        rejection_sample(range(8), probs, 5, 0.5)
    with pytest.raises(ValueError, match=">= 1"):
        rejection_sample(range(8), probs, 0, 0.5)
    with pytest.raises(ValueError, match="N = 9"):
        rejection_sample(range(9), probs, 2, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        rejection_sample(range(8), probs, 2, 0.5, torch.full((8,), 3))
    with pytest.raises(ValueError, match="empty"):
        rates_needed(4, [])


def fake_metrics(fd, rate_seed, extractor="domain"):
    return {"fd": fd, "fd_label": "FD-domain" if extractor == "domain" else "FID", "kid_mean": 0.01 * rate_seed,
            "kid_std": 0.001, "is_mean": 3.0 + rate_seed, "is_std": 0.1, "precision": 0.5 + 0.1 * rate_seed,
            "recall": 0.6 - 0.1 * rate_seed, "extractor": extractor, "feature_extractor_name": "vqvae2-domain-abc",
            "weights_hash": "abc", "torch_fidelity_version": "0.4.0", "n_generated": 64, "n_real": 100, "seed": 0,
            "kid_subset_size": 50, "prc_neighborhood": 3}


def test_report_files(tmp_path):
    rates = [1.0, 0.5, 0.1]
    report = build_report({r: fake_metrics(10.0 * r + 2, i) for i, r in enumerate(rates)},
                          reconstruction=fake_metrics(0.5, 0), n_candidates=640)
    json_path, md_path = write_report(tmp_path / "eval", report)
    loaded = json.loads(json_path.read_text())
    assert [row["acceptance_rate"] for row in loaded["rows"]] == rates
    assert loaded["provenance"]["weights_hash"] == "abc" and loaded["provenance"]["n_candidates"] == 640
    md = md_path.read_text()
    assert "FD-domain" in md and "FID" not in md
    assert "| reconstruction | 0.5 |" in md and "| 0.1 | 3 |" in md
    assert "torch_fidelity_version: 0.4.0" in md
    assert not list((tmp_path / "eval").glob(".*tmp"))  # no temporary files left behind

    png = plot_tradeoff(tmp_path / "eval" / "tradeoff.png", rates, [r["fd"] for r in loaded["rows"]],
                        [r["precision"] for r in loaded["rows"]], [r["recall"] for r in loaded["rows"]], "FD-domain")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_domain_report_may_not_say_fid(tmp_path):
    report = build_report({1.0: fake_metrics(3.0, 0)})
    report["fd_label"] = "FID"
    with pytest.raises(ValueError, match="only the inception extractor"):
        write_report(tmp_path, report)
    assert not (tmp_path / "report.json").exists()


def test_report_refuses_mixed_extractors():
    other = fake_metrics(3.0, 1)
    other["feature_extractor_name"] = "inception-v3-compat"
    with pytest.raises(ValueError, match="different extractors"):
        build_report({1.0: fake_metrics(3.0, 0), 0.5: other})


def test_save_grid(tmp_path):
    from PIL import Image
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    path = save_grid(tmp_path / "grid.png", images, nrow=3)
    assert Image.open(path).size == (3 * 10 + 2, 2 * 10 + 2)


def test_report_carries_intervals_fd_infinity_reconstruction_and_comparison(tmp_path):
    def with_errors(fd, i, n=5000, **kw):
        m = fake_metrics(fd, i, **kw)
        m.update(fd_ci=[fd - 0.5, fd + 0.75], fd_infinity=fd - 1.0, n_generated=n, resize="clean",
                 fd_ci_method="95% bootstrap interval: 100 resamples", fd_ci_resamples=100)
        return m
    recon = with_errors(1.5, 0, n=100)
    recon["psnr"] = 27.5
    report = build_report({1.0: with_errors(12.0, 0), 0.5: with_errors(7.0, 1)}, reconstruction=recon,
                          reference_split="fashion-mnist val split at 32 px, 100 images")
    json_path, md_path = write_report(tmp_path, report)
    loaded = json.loads(json_path.read_text())
    assert loaded["rows"][0]["fd_ci"] == [11.5, 12.75] and loaded["rows"][1]["fd_infinity"] == 6.0
    assert loaded["reconstruction_fd"] == 1.5 and loaded["reconstruction_psnr"] == 27.5
    assert loaded["reconstruction"]["fd_ci"] == [1.0, 2.25]
    assert loaded["provenance"]["resize"] == "clean" and loaded["provenance"]["fd_ci_resamples"] == 100
    sheet = loaded["comparison"]
    assert sheet["requires"] == {"extractor": "vqvae2-domain-abc", "weights_sha256": "abc", "resize": "clean",
                                 "n_generated": 5000, "reference": "fashion-mnist val split at 32 px, 100 images"}
    assert any("published Frechet Inception Distance" in s for s in sheet["may_not_stand_beside"])
    md = md_path.read_text()
    assert "| 1 | 12 [11.5, 12.75] | 11 |" in md and "PSNR 27.5 dB" in md and "## Comparing with published" in md
    assert "FID" not in md  # a domain report never says FID, not even in the comparison sheet
    rows = loaded["rows"]
    png = plot_tradeoff(tmp_path / "tradeoff.png", [r["acceptance_rate"] for r in rows], [r["fd"] for r in rows],
                        [r["precision"] for r in rows], [r["recall"] for r in rows], "FD-domain",
                        fd_ci=[r["fd_ci"] for r in rows], kid_mean=[r["kid_mean"] for r in rows],
                        kid_std=[r["kid_std"] for r in rows], fd_infinity=[r["fd_infinity"] for r in rows])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_sheet_of_an_fid():
    m = fake_metrics(20.0, 0, extractor="inception")
    m.update(weights_standard=True, resize="torch-fidelity", n_generated=10_000, fd_infinity=18.0)
    sheet = build_report({1.0: m}, reference="validation images (10000)")["comparison"]
    may, may_not = " ".join(sheet["may_stand_beside"]), " ".join(sheet["may_not_stand_beside"])
    assert "FIDs of 10,000 generated images" in may and "'torch-fidelity' resize" in may and "FID-infinity" in may
    assert "usual 50,000" in may_not and "'clean' resize" in may_not and "another reference set" in may_not
    m["n_generated"] = 50_000
    assert not any("50,000" in s for s in build_report({1.0: m})["comparison"]["may_not_stand_beside"])


def test_realism_rejection_keeps_candidates_in_proportion_to_the_density_ratio():
    """Discriminator rejection sampling: D = 0.5 and 0.75 are density ratios 1 and 3, so keeping one of the two
    keeps the second 3 times in 4; rate 1 keeps the first n; the cap stops one confident score from always winning"""
    from eval.rejection import density_ratio, realism_sample
    assert torch.allclose(density_ratio(torch.tensor([0.5, 0.75, 0.9])), torch.tensor([1.0, 3.0, 9.0]))
    second = sum(int(realism_sample(torch.tensor([0.5, 0.75]), 1, 0.5, seed=s, cap_quantile=1.0)[0]) for s in range(4000))
    assert abs(second / 4000 - 0.75) < 0.03
    p = torch.rand(40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(realism_sample(p, 10, 1.0, seed=3), torch.arange(10))
    assert torch.equal(realism_sample(p, 10, 0.25, seed=3), realism_sample(p, 10, 0.25, seed=3))  # seeded
    # one candidate 10^5 times likelier than the rest: uncapped it is always kept, capped at the 0.9 quantile
    # (the other candidates' ratio) it is kept as often as any of them
    odd = torch.tensor([0.5] * 9 + [1 - 1e-5])
    kept = [int(9 in realism_sample(odd, 1, 0.1, seed=s, cap_quantile=q)) for q in (1.0, 0.9) for s in range(500)]
    assert sum(kept[:500]) == 500 and 20 < sum(kept[500:]) < 90
