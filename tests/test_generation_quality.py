"""Averaged prior weights (warm-up decay, the weights themselves kept beside the average) and the
generation-quality benchmark over a tiny run whose priors were trained with label dropout and an average."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipelines.artifacts import RunDir
from pipelines.config import train_hash_options
from pipelines.images import grid_image
from pipelines.train import ema_decay_at
from vqvae2.pretrained import load_weights

from conftest import finished_run

REPO = Path(__file__).resolve().parents[1]


def test_the_average_forgets_the_initial_weights_early():
    """(1 + t) / (10 + t) until the configured decay: after step 1 the initial weights hold 2/11 of the
    average; the configured decay is reached and never passed; with the plain decay 0.999, 1,600 steps would
    leave 0.999 ** 1600 ~ 20% of the initialisation, with the warm-up well under 1%"""
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 10 ** 6) == 0.999
    assert all(ema_decay_at(0.99, t) <= 0.99 for t in range(1, 5000))
    left = 1.0
    for t in range(1, 1601):
        left *= ema_decay_at(0.999, t)
    assert left < 0.01 < 0.999 ** 1600


def test_one_step_moves_the_average_by_the_warm_up_decay(tmp_path):
    """train() for one step with ema_decay 0.999: the average is 2/11 initial weights and 9/11 trained ones
    (with the plain decay it would stay 999/1000 initial); TrainResult.raw is the trained weights"""
    from torch.utils.data import TensorDataset

    from pipelines.config import TrainConfig
    from pipelines.train import train
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = TensorDataset(torch.randn(8, 3), torch.randn(8, 2))
    loss = lambda m, batch: (torch.nn.functional.mse_loss(m(batch[0]), batch[1]), {})
    cfg = TrainConfig(steps=1, batch_size=8, lr=0.1, warmup_steps=0, mixed_precision="no", channels_last=False,
                      ema_decay=0.999, log_every=1, save_every=1, num_workers=-1)
    result = train(model, data, cfg, tmp_path, loss, {"config_hash": "t"})
    for k, raw in result.raw.state_dict().items():
        assert not torch.equal(raw, initial[k])
        assert torch.allclose(result.model.state_dict()[k], initial[k] * 2 / 11 + raw * 9 / 11, atol=1e-6)


def test_averaged_training_hashes_differently_and_plain_training_as_before():
    plain = {"steps": 10, "lr": 1e-3}
    assert train_hash_options(plain) == plain
    assert train_hash_options({**plain, "ema_decay": 0.0}) == {**plain, "ema_decay": 0.0}
    assert train_hash_options({**plain, "ema_decay": 0.99})["ema_warmup"] is True


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gq")
    return finished_run(root, extra=("prior.top.label_dropout=0.3", "prior.bottom.label_dropout=0.3",
                                     "train_prior.ema_decay=0.9", "train_classifier.realism_samples=16"))


def test_priors_keep_their_own_weights_beside_the_average(guided_run):
    """prior-<level> holds the average (what sampling uses), prior-<level>/raw the weights as trained:
    the final training state's model weights, and different from the average"""
    from safetensors.torch import load_file
    for level in ("top", "bottom"):
        d = RunDir(guided_run).prior(level)
        average, raw = load_weights(d / "model.safetensors"), load_weights(d / "raw" / "model.safetensors")
        assert average.keys() == raw.keys()
        assert any(not torch.equal(average[k], raw[k]) for k in average)
        state = d / "state"  # the last training state: the model's weights and their average
        assert all(torch.equal(load_file(state / "model.safetensors")[k], raw[k]) for k in raw)
        assert all(torch.equal(load_file(state / "ema.safetensors")[k], average[k]) for k in average)
        assert json.loads((d / "metrics.json").read_text())["ema_weights"] is True


def test_a_prior_trained_again_without_an_average_drops_the_old_raw_weights(guided_run, tmp_path):
    """raw/ of an averaged training must not outlive it: trained again with ema_decay 0, prior-<level>/ holds the
    weights themselves and raw/ is gone (make_stage clears a stage trained for another configuration), else
    generation_quality.py would take it for this training's weights"""
    import shutil

    from pipelines.cli import main
    run = tmp_path / "run"
    shutil.copytree(guided_run, run)
    assert main(["train-prior", "--run-dir", str(run), "--level", "top", "--set", "train_prior.ema_decay=0.0"]) == 0
    top = RunDir(run).prior("top")
    assert (top / "model.safetensors").is_file() and not (top / "raw").exists()
    assert json.loads((top / "metrics.json").read_text())["ema_weights"] is False


def test_generation_quality_benchmark_rows(guided_run, tmp_path):
    """every row of the issue's JSON: no RUN-guided copy is trained (the priors have label dropout), an ema
    row from the run's own average, guided rows of both weights, per-level guidance on the better of them, the
    best guided row with top-p and under class rejection, class and realism rejection at equal numbers of
    candidates, realism rejection on a copy of the run whose priors are trained without labels"""
    out, grids = tmp_path / "gq.json", tmp_path / "grids"
    options = ["--n", "8", "--guidance", "2", "--top-p", "0.9", "--ema-guidance", "2", "--level-guidance", "1,3",
               "1,3:0.9", "--guided-rejection", "2,1", "2,1:0.9"]
    proc = subprocess.run([sys.executable, "benchmarks/generation_quality.py", "--run-dir", str(guided_run), "--out",
                           str(out), "--grid-dir", str(grids), *options], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    names = [r["name"] for r in result["rows"]]
    assert names[:5] == ["baseline", "top-p-0.9", "ema", "guidance-2", "guidance-2-ema"]
    by = {r["name"]: r for r in result["rows"]}
    first = min(result["rows"][3:5], key=lambda r: r["fd_domain"])  # per-level guidance builds on it
    ema = "-ema" if first["ema"] else ""
    assert names[5:7] == [f"guidance-1-3{ema}", f"guidance-1-3-top-p-0.9{ema}"]
    assert [(r["guidance"], r["top_p"]) for r in result["rows"][5:7]] == [([1, 3], 0), ([1, 3], 0.9)]
    # and the top-p reached the sampler: the same seed draws other samples
    assert Path(result["rows"][5]["grid"]).read_bytes() != Path(result["rows"][6]["grid"]).read_bytes()
    # the best guided setting with the best top-p, unless a per-level row is that setting already
    gq = _gq_module()
    combo = gq.combination(result["rows"][:7])
    k = 7 if combo is None else 8  # where the guided class rejection rows start
    if combo is not None:
        best = gq.best_guided(result["rows"][:7])
        assert names[7] == combo[0] == f"guidance-{gq.scale_name(best['guidance'])}-top-p-0.9" + \
            ("-ema" if best["ema"] else "")
        assert result["rows"][7]["ema"] == best["ema"] and result["rows"][7]["guidance"] == best["guidance"]
    best = gq.best_guided(result["rows"][:k])
    guided_rejection = result["rows"][k]
    assert guided_rejection["name"] == best["name"] + "-class-rejection-0.5"
    assert (guided_rejection["rejection"], guided_rejection["acceptance_rate"]) == ("class", 0.5)
    assert guided_rejection["guidance"] == best["guidance"]  # its cost claimed only when every level is guided:
    assert guided_rejection.get("equal_cost_acceptance") == gq.guided_cost(best["guidance"], 0.5).get("equal_cost_acceptance")
    top_only = result["rows"][k + 1]  # guidance on the top level alone under class rejection
    assert top_only["name"] == "guidance-2-1" + ("-ema" if best["ema"] else "") + "-class-rejection-0.5"
    assert (top_only["guidance"], top_only["acceptance_rate"], top_only["ema"]) == ([2, 1], 0.5, best["ema"])
    assert "equal_cost_acceptance" not in top_only  # one level unguided: its cost is measured, not 0.25
    with_top_p = result["rows"][k + 2]
    assert with_top_p["name"] == "guidance-2-1-top-p-0.9" + ("-ema" if best["ema"] else "") + "-class-rejection-0.5"
    assert (with_top_p["guidance"], with_top_p["top_p"]) == ([2, 1], 0.9)
    assert names[k + 3:] == ["class-rejection-0.5", "class-rejection-0.25", "class-rejection-0.1", "realism-rejection-1",
                             "realism-rejection-0.5", "realism-rejection-0.25", "realism-rejection-0.1"]
    assert not Path(f"{guided_run}-guided").exists()
    keys = {"name", "acceptance_rate", "rejection", "guidance", "top_p", "ema", "fd_domain", "precision", "recall", "grid",
            "sample_seconds", "cost"}
    for r in result["rows"]:
        assert keys <= r.keys() and Path(r["grid"]).is_file()
        assert r["fd_domain"] >= 0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert by["baseline"]["cost"] == 1 and all(r["sample_seconds"] > 0 for r in result["rows"])
    # rejection at rate r draws 1/r candidates per sample: its share of the 10x candidates' time
    assert by["class-rejection-0.5"]["sample_seconds"] * 5 == pytest.approx(by["class-rejection-0.1"]["sample_seconds"])
    assert by["ema"]["ema"] == 0.9 and by["baseline"]["ema"] is False and by["guidance-2-ema"]["ema"] == 0.9
    assert by["realism-rejection-0.1"]["rejection"] == "realism" and by["realism-rejection-0.1"]["acceptance_rate"] == 0.1
    assert result["realism"]["realism"] is True and result["realism"]["classifiers"]["realism"]["generated_images"] == 16
    # realism rejection ranks the samples of priors trained without labels (a copy of the run), as for a folder
    # without labels; the copy shares the run's VQ-VAE
    from vqvae2.pixelsnail import PixelSNAIL
    unlabelled = RunDir(Path(f"{guided_run}-unlabelled"))
    assert result["realism_priors"] == f"unlabelled ({unlabelled.root})"
    assert all(r["priors"] == "unlabelled" for r in result["rows"] if r["rejection"] == "realism")
    for level in ("top", "bottom"):
        assert PixelSNAIL.from_pretrained(unlabelled.prior(level)).config.n_classes == 0
        assert PixelSNAIL.from_pretrained(RunDir(guided_run).prior(level)).config.n_classes > 0
    assert (unlabelled.vqvae / "model.safetensors").read_bytes() == (RunDir(guided_run).vqvae / "model.safetensors").read_bytes()
    for key in ("reconstruction_fd_domain", "extractor", "total_seconds", "machine"):
        assert key in result
    assert result["realism_crop"] == 1 and all(r["realism_crop"] == 1 for r in result["rows"] if r["rejection"] == "realism")
    # another --realism-crop, resumed: every other row is reused, the realism rows are measured again with it
    proc = subprocess.run([sys.executable, "benchmarks/generation_quality.py", "--run-dir", str(guided_run), "--out",
                           str(out), "--grid-dir", str(grids), *options, "--resume", "--realism-crop", "0.5"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["reused_rows"] == names[:-4] and again["realism_crop"] == 0.5
    assert [r["realism_crop"] for r in again["rows"][-4:]] == [0.5] * 4
    saved = json.loads((Path(f"{unlabelled.root}-realism") / "classifier" / "model.json").read_text())
    assert saved["config"]["crop"] == 0.5


def test_guidance_settings_claim_an_equal_cost_only_when_every_level_runs_twice():
    """A guided level runs its batch twice (label and "no label"): twice the work, as acceptance 0.5 draws two
    candidates. A level at guidance 1 runs once, so such settings are timed, not given a nominal cost."""
    gq = _gq_module()
    assert gq.parse_levels("4") == 4.0 and gq.parse_levels("4,1,1") == [4.0, 1.0, 1.0]
    assert gq.guided_cost(gq.parse_levels("4")) == {"equal_cost_acceptance": 0.5}
    assert gq.guided_cost(gq.parse_levels("2,3"), 0.5) == {"equal_cost_acceptance": 0.25}
    assert gq.guided_cost(gq.parse_levels("4,1,1")) == {} and gq.guided_cost(1.0, 0.5) == {}
    assert gq.scale_name(gq.parse_levels("4,1,1")) == "4-1-1" and gq.scale_name(2.5) == "2.5"


def test_level_guidance_takes_a_top_p_and_the_combination_row_is_not_drawn_twice():
    """--level-guidance 4,4,6:0.95 is a guided row with top-p; the best guided setting with the best top-p is
    drawn only when no row has that setting already"""
    gq = _gq_module()
    assert gq.parse_setting("4,4,6:0.95") == ([4.0, 4.0, 6.0], 0.95) and gq.parse_setting("3") == (3.0, 0.0)
    assert gq.setting_name([4.0, 4.0, 6.0], 0.95, True) == "guidance-4-4-6-top-p-0.95-ema"
    assert gq.setting_name(3.0, 0.0, False) == "guidance-3"
    row = lambda name, g, p, fd, ema=False: {"name": name, "guidance": g, "top_p": p, "ema": ema, "fd_domain": fd}
    rows = [row("baseline", 1.0, 0.0, 40), row("top-p-0.9", 1.0, 0.9, 37), row("top-p-0.95", 1.0, 0.95, 38),
            row("guidance-3", 3.0, 0.0, 33), row("guidance-4-4-6-ema", [4.0, 4.0, 6.0], 0.0, 30, 0.999)]
    assert gq.combination(rows) == ("guidance-4-4-6-top-p-0.9-ema", [4.0, 4.0, 6.0], 0.9, True)
    # a --level-guidance row with top-p that scores best: its own setting, nothing to add
    rows.append(row("guidance-4-4-6-top-p-0.95-ema", [4.0, 4.0, 6.0], 0.95, 29, 0.999))
    assert gq.combination(rows) is None
    # the best guided row without top-p, whose best top-p pairing is a row already: none either
    rows[-1]["fd_domain"] = 31
    assert gq.combination(rows) is None
    # a top-p the rows have not paired with the best guided setting yet: that pair
    rows[1]["fd_domain"], rows[-1]["fd_domain"] = 28, 31
    assert gq.combination(rows) == ("guidance-4-4-6-top-p-0.9-ema", [4.0, 4.0, 6.0], 0.9, True)


def _gq_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gq", REPO / "benchmarks" / "generation_quality.py")
    gq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gq)
    return gq


def test_the_ledger_keeps_only_rows_of_the_same_context(tmp_path):
    """rows.jsonl: with resume, the rows of the same context whose grid exists are kept (a line cut short by an
    interruption is dropped) and taken again only with the settings they were recorded with; another context
    (e.g. another machine) or no resume starts it empty"""
    gq = _gq_module()
    path, grid = tmp_path / "rows.jsonl", tmp_path / "a.png"
    grid.write_bytes(b"png")
    ledger = gq.Ledger(path, {"run": "r1"}, resume=False)
    ledger.record({"name": "a", "fd_domain": 1.0, "grid": str(grid)})
    ledger.record({"name": "b", "fd_domain": 2.0, "grid": str(tmp_path / "gone.png")})
    ledger.record({"name": "_realism", "summary": {"x": 1}})
    with open(path, "a") as f:
        f.write('{"name": "c", "fd_do')
    again = gq.Ledger(path, {"run": "r1"}, resume=True)
    assert again.kept == ["a"] and again.get("_realism") == {"name": "_realism", "summary": {"x": 1},
                                                            "seconds_spent": ledger.get("_realism")["seconds_spent"]}
    assert again.get("b") is None and again.get("c") is None and again.get("a")["fd_domain"] == 1.0
    assert again.reused == [] and again.earlier == 0  # nothing taken yet
    # a row is taken only with the settings it was recorded with; what it took then counts
    assert again.take("a", fd_domain=2.0) is None and again.take("b") is None and again.reused == []
    assert again.take("a", fd_domain=1.0)["fd_domain"] == 1.0 and again.take("_realism")["summary"] == {"x": 1}
    assert again.reused == ["a"]
    assert again.earlier == pytest.approx(ledger.get("a")["seconds_spent"] + ledger.get("_realism")["seconds_spent"])
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["a", "_realism"]
    assert gq.Ledger(path, {"run": "r2"}, resume=True).kept == [] and path.read_text() == ""
    gq.Ledger(path, {"run": "r1"}, resume=True).record({"name": "a", "grid": str(grid)})
    assert gq.Ledger(path, {"run": "r1"}, resume=False).kept == [] and path.read_text() == ""


def test_generation_quality_resumes_an_interrupted_run(guided_run, tmp_path):
    """an interrupted run (its ledger cut after three rows) goes on with --resume: those rows are reused, not
    drawn again, and the rest come out as in an uninterrupted run; another --seed reuses nothing"""
    out, grids = tmp_path / "gq.json", tmp_path / "grids"
    cmd = [sys.executable, "benchmarks/generation_quality.py", "--run-dir", str(guided_run), "--out", str(out),
           "--grid-dir", str(grids), "--n", "8", "--guidance", "2", "--top-p", "0.9", "--no-realism"]
    run = lambda *extra: subprocess.run(cmd + list(extra), cwd=REPO, capture_output=True, text=True, timeout=600)
    proc = run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    whole = json.loads(out.read_text())
    assert whole["reused_rows"] == []
    ledger = grids / "rows.jsonl"
    lines = ledger.read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == [r["name"] for r in whole["rows"]]
    ledger.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # killed while writing the fourth
    out.unlink()
    proc = run("--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads(out.read_text())
    assert resumed["reused_rows"] == [r["name"] for r in whole["rows"][:3]]
    assert proc.stdout.count("(reused from") == 3
    strip = lambda r: {k: v for k, v in r.items() if k not in ("sample_seconds", "cost")}
    assert [strip(r) for r in resumed["rows"]] == [strip(r) for r in whole["rows"]]
    assert resumed["rows"][:3] == whole["rows"][:3]  # their timings too: the same baseline is the unit of cost
    proc = run("--resume", "--seed", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["reused_rows"] == []


def test_quotas_split_places_by_frequency_and_fill_from_the_rest():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from realism_variants import by_quotas, quotas
    q = quotas(torch.tensor([0, 0, 0, 1]), 3, 5)  # shares 3.75, 1.25, 0: largest remainder goes to stratum 0
    assert q.tolist() == [4, 1, 0]
    strata = torch.tensor([0, 1, 1, 1, 0, 0, 1, 1])
    score = torch.tensor([0.1, 0.9, 0.8, 0.7, 0.2, 0.3, 0.6, 0.5])
    # 2 of the first 4 (rate 0.5), quotas [1, 1]: stratum 0's only one, stratum 1's best
    assert by_quotas(strata, torch.tensor([1, 1]), score, 2, 0.5).tolist() == [0, 1]
    # quota [2, 0] among the first 4 holds one candidate of stratum 0: the other place goes to the best of the rest
    assert by_quotas(strata, torch.tensor([2, 0]), score, 2, 0.5).tolist() == [0, 1]
    assert by_quotas(strata, torch.tensor([2, 0]), score, 2, 0.25).tolist() == [4, 5]


def test_matching_keeps_the_candidates_nearest_to_the_real_rows_one_each():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from realism_variants import knn_label_accuracy, matched
    real = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    # 2 kept at rate 0.5 among the first 4: one near each of the first two real rows, never the same one twice
    candidates = torch.tensor([[0.1, 0.2], [0.3, 0.3], [9.0, 0.5], [5.0, 5.0], [10.0, 0.0]])
    assert matched(real, candidates, 2, 0.5).tolist() == [0, 2]  # the exact twin of real[1] is the fifth: not among 4
    assert matched(real, candidates, 2, 0.4).tolist() == [0, 4]
    with pytest.raises(ValueError, match="needs 2 real rows and 5 candidates"):
        matched(real[:1], candidates, 2, 0.4)
    x = torch.tensor([[0.0], [0.1], [5.0], [5.1], [0.05], [5.05]]).repeat(2, 1) + torch.arange(12.0)[:, None] * 1e-3
    labels = torch.tensor([0, 0, 1, 1, 0, 1] * 2)
    assert knn_label_accuracy(x, labels, k=1) == 1.0
    assert knn_label_accuracy(x, torch.cat([labels[:6], 1 - labels[6:]]), k=1) == 0.0  # neighbours disagree


def test_realism_variants_benchmark_rows(guided_run, tmp_path):
    """every rule of benchmarks/realism_variants.py scores its kept samples at every rate"""
    out = tmp_path / "rv.json"
    proc = subprocess.run([sys.executable, "benchmarks/realism_variants.py", "--run-dir", str(guided_run), "--out",
                           str(out), "--n", "8", "--kmeans", "2", "--steps", "3", "--realism-seeds", "2",
                           "--realism-steps", "4", "--grid-dir", str(tmp_path / "grids")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["rule"] for r in result["rows"]] == [
        "realism-images", "realism-images", "realism-images-ensemble", "realism-reconstructions",
        "realism-reconstructions", "realism-reconstructions-ensemble", "realism-latent-top", "realism-latent-bottom",
        "class-confidence", "class-quotas-random", "class-quotas-confidence",
        "kmeans-2-quotas-random", "kmeans-2-quotas-latent-top", "kmeans-2-quotas-latent-bottom",
        "match-realism", "match-top"]
    for r in result["rows"]:
        assert list(r["rates"]) == ["1", "0.5", "0.25", "0.1"]
        assert all(0 <= m["precision"] <= 1 and m["fd_domain"] >= 0 for m in r["rates"].values())
    assert result["candidates"] == 80 and result["generated_for_realism"] == 16 and result["realism_steps"] == 4
    single = [r for r in result["rows"] if r["rule"] in ("realism-images", "realism-reconstructions")]
    for r in single + result["rows"][6:8]:  # the realism classifiers' held-out accuracy
        assert 0 <= r["validation_accuracy"] <= 1
    seeds = [r["classifier_seed"] for r in single]
    assert seeds[:2] == seeds[2:] and seeds[1] == seeds[0] + 1
    assert [r["classifier_seeds"] for r in result["rows"] if r["rule"].endswith("-ensemble")] == [2, 2]
    size = json.loads((guided_run / "config.json").read_text())["data"]["size"]
    grid = grid_image(torch.zeros(64, 3, size, size, dtype=torch.uint8), nrow=8).size
    for rule in ("images", "reconstructions"):  # the 32 highest-ranked candidates over the 32 lowest: 8 rows of 8
        assert Image.open(tmp_path / "grids" / f"realism-{rule}.png").size == grid
    mix = result["predicted_class_mix"]
    assert list(mix) == ["training images", "candidates", "realism-images at 0.1 (seed 0)",
                         "realism-reconstructions at 0.1 (seed 0)", "match-realism at 0.1", "match-top at 0.1"]
    assert all(sum(shares) == pytest.approx(1) for shares in mix.values())
    assert list(result["label_knn_accuracy"]) == ["realism", "top", "chance"]
    assert all(0 <= a <= 1 for a in result["label_knn_accuracy"].values())
    drops = result["realism_fd_drop_at_0.1"]["realism-reconstructions"]
    assert drops["per_seed"] == [r["fd_drop_at_0.1"] for r in result["rows"][3:5]]
    assert drops["mean"] == pytest.approx(sum(drops["per_seed"]) / 2)
    assert drops["ensemble"] == result["rows"][5]["fd_drop_at_0.1"]


def test_realism_variants_runs_the_rules_asked_for(guided_run, tmp_path):
    """--rules runs only those families; --realism-samples sets what the realism classifiers learn from and
    --realism-crop what they look at; --realism-caps adds rows of other caps; one seed has no ensemble row"""
    out = tmp_path / "rv.json"
    proc = subprocess.run([sys.executable, "benchmarks/realism_variants.py", "--run-dir", str(guided_run), "--out",
                           str(out), "--n", "8", "--realism-seeds", "1", "--realism-steps", "2", "--realism-samples", "12",
                           "--realism-crop", "0.5", "--realism-caps", "1", "--rules", "reconstructions", "kmeans"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["rule"] for r in result["rows"]] == ["realism-reconstructions", "realism-reconstructions-cap-1",
                                                   "kmeans-12-quotas-random"]
    assert result["rows"][1]["cap_quantile"] == 1 and result["rows"][1]["classifier_seed"] == 0
    assert result["generated_for_realism"] == 12 and result["rules"] == ["reconstructions", "kmeans"]
    assert result["realism_crop"] == 0.5  # and the classifier it trained looks at the centre
    saved = json.loads((Path(f"{guided_run}-realism") / "classifier-reconstructions" / "model.json").read_text())
    assert saved["config"]["crop"] == 0.5
    assert list(result["realism_fd_drop_at_0.1"]) == ["realism-reconstructions"]


def test_realism_variants_refuses_to_match_more_samples_than_training_images(guided_run, tmp_path):
    out = tmp_path / "rv.json"
    proc = subprocess.run([sys.executable, "benchmarks/realism_variants.py", "--run-dir", str(guided_run), "--out",
                           str(out), "--n", "8", "--realism-samples", "5", "--rules", "match"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and not out.exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        "realism_variants.py: the match rules pair --n 8 samples with as many training images, but "
        "train_classifier.realism_samples gives 5: raise --realism-samples")


def test_realism_variants_runs_on_the_copy_trained_without_labels(guided_run, tmp_path):
    """RUN-unlabelled (generation_quality.py's copy whose priors learned without labels) keeps the labelled run's
    classifiers and data: realism_variants ranks its unconditional samples and gives the class rules' bounds"""
    gq = _gq_module()
    from pipelines.cli import load_run_config
    from vqvae2.pixelsnail import PixelSNAIL
    cfg = load_run_config(RunDir(guided_run), None, [], write=False)
    unlabelled = gq.retrained(RunDir(guided_run), "unlabelled",
                              [f"prior.{lv}.class_conditional=false" for lv in cfg.vqvae.levels])
    assert PixelSNAIL.from_pretrained(unlabelled.prior("top")).config.n_classes == 0
    out = tmp_path / "rv.json"
    proc = subprocess.run([sys.executable, "benchmarks/realism_variants.py", "--run-dir", str(unlabelled.root),
                           "--out", str(out), "--n", "8", "--realism-seeds", "1", "--realism-steps", "2",
                           "--rules", "reconstructions", "class"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["rule"] for r in result["rows"]] == ["realism-reconstructions", "class-confidence", "class-quotas-random",
                                                   "class-quotas-confidence"]
    assert result["run_dir"] == str(unlabelled.root)
    assert all(sum(shares) == pytest.approx(1) for shares in result["predicted_class_mix"].values())


def test_faces128_takes_the_seconds_a_stage_was_stopped_out_of_its_time():
    import importlib.util
    spec = importlib.util.spec_from_file_location("faces128_bench", REPO / "benchmarks" / "faces128.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seconds = {"vqvae": 100.0, "prior_bottom": 6756.0}
    assert bench.without_pauses(seconds, {"prior_bottom": 1946.0}) == {"vqvae": 100.0, "prior_bottom": 4810.0}
    assert bench.without_pauses(seconds, {}) == seconds
    with pytest.raises(ValueError, match="no stage named 'prior_botom'"):
        bench.without_pauses(seconds, {"prior_botom": 1.0})
    with pytest.raises(ValueError, match="vqvae ran 100 s"):
        bench.without_pauses(seconds, {"vqvae": 100.0})


def test_faces128_cost_projects_every_training_stage(tmp_path):
    """the projection multiplies each stage's timed step by the preset's steps (the middle prior trains 6,000)"""
    out = tmp_path / "cost.json"
    proc = subprocess.run([sys.executable, "benchmarks/faces128_cost.py", "--out", str(out), "--steps", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["stage"]: r for r in result["rows"]}
    assert list(rows) == ["train-vqvae", "train-prior-top", "train-prior-middle", "train-prior-bottom"]
    assert rows["train-prior-middle"]["steps"] == 6000 and rows["train-vqvae"]["batch_size"] == 32
    for r in rows.values():
        assert r["seconds_per_step"] > 0 and r["projected_seconds"] == pytest.approx(r["seconds_per_step"] * r["steps"])
    assert result["projected_training_minutes"] == pytest.approx(sum(r["projected_seconds"] for r in rows.values()) / 60)


def test_generation_quality_refuses_a_run_another_process_writes(guided_run, tmp_path):
    """the benchmark reads RUN and writes RUN-guided / RUN-realism: a writer holding RUN's lock ends it at once
    with the holder named, and nothing is written"""
    from pipelines.runlock import RunLock
    out = tmp_path / "gq.json"
    with RunLock(Path(guided_run), "vqvae2 train-prior (held by the test)"):
        proc = subprocess.run([sys.executable, "benchmarks/generation_quality.py", "--run-dir", str(guided_run),
                               "--out", str(out), "--grid-dir", str(tmp_path / "grids"), "--n", "8"],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "is being written by" in proc.stderr and "held by the test" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
