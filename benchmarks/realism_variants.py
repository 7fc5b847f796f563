"""Why realism rejection does not lower FD-domain, and what would: rejection rules for data without labels,
compared on one finished labelled run whose labels give the upper bounds.

    python benchmarks/realism_variants.py --run-dir RUN --out F.json [--n 1000] [--grid-dir DIR]

RUN is a finished run of a labelled preset through its classifier stage, or generation_quality.py's copy of
one whose priors learned without labels (RUN-unlabelled: the run's data, VQ-VAE and classifiers, so the class
rules below still give their bounds). Candidates are the run's unguided samples (classes spread evenly when
the priors take labels); each rule keeps --n of the first n / r at r = 0.5, 0.25, 0.1,
scored as in generation_quality.py (FD-domain, precision and recall by the run's domain classifier
against the validation split). Rules:

- realism-reconstructions: stage 3's realism classifier (training images reconstructed by the run's VQ-VAE
  against the model's own samples, trained by pipelines.stage3), accepted by its density ratio D / (1 - D), as
  `vqvae2 evaluate` does; realism-images: the same against the training images as they are
  (train_classifier.realism_real = "images", the first rule). Each is trained --realism-seeds times, from
  consecutive seeds and for --realism-steps steps, one row per seed, then (with two seeds or more)
  realism-<rule>-ensemble, the seeds' classifiers together (their logits averaged); with --grid-dir,
  DIR/realism-<rule>.png shows the 32 candidates the first seed's classifier ranks highest (top four rows) and
  the 32 it ranks lowest. --realism-samples sets how many samples (and as many real images) they learn from,
  --realism-crop the centred part of each image they look at (train_classifier.realism_crop), and each
  --realism-caps quantile a row realism-<rule>-cap-<q> of the first seed's classifier with its density ratio
  capped there instead of at eval.rejection's 0.95 (1: no cap);
- realism-latent-<level>: the same idea on one level's code vectors (the image encoded again by the
  run's VQ-VAE, both for real and generated images), which hides the decoder's texture from it;
- class-confidence: the run's rejection network, the probability of its predicted class, no quotas (what a
  classifier gives without knowing which class a sample was drawn for);
- class-quotas-random, class-quotas-confidence: the rejection network's predicted class as strata with
  the training split's class frequencies as quotas, candidates chosen at random or by confidence within
  a stratum (labels needed: an upper bound for unlabelled data);
- kmeans-<k>-quotas-random, kmeans-<k>-quotas-latent-<level>: strata from k-means on the top level's code
  vectors of real training images (no labels), quotas their frequencies, chosen at random or by the
  latent realism classifier;
- match-<features>: the candidates an optimal one-to-one matching pairs with n training images (scipy's
  linear_sum_assignment on Euclidean distances of standardised features): `realism`, the penultimate features of
  the first realism classifier trained above; `top`, the top level's code vectors. No labels: it keeps the
  training images' mix as far as the features see it.

--rules picks the families to run (default all): images, reconstructions, latent (realism-latent-<level>),
class (class-*), kmeans (kmeans-*; its latent rows only with latent), match (match-*; match-realism only with
images or reconstructions).

The JSON's label_knn_accuracy says how much of the classes each label-free feature space holds: the share of the
second half of the training images whose 10 nearest neighbours in the first half mostly carry their label (the
labels used for this diagnostic only), beside `chance`, the largest class's share.

The JSON's predicted_class_mix holds the shares of the rejection network's predicted classes among the training
images, the first n candidates, and those the first seed of each realism rule and each match rule keep at 0.1.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch.utils.data import TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from generation_quality import Scorer, locked, raw_pipeline, realism_generated, realism_probs
from machine import describe
from eval.classifier import Classifier, ClassifierConfig, predict_features, predict_proba
from eval.rejection import candidates_needed, realism_sample
from pipelines.artifacts import RunDir, save_png, write_json
from pipelines.cli import init_processes, load_run_config
from pipelines.datasets import build_datasets
from pipelines.images import grid_image
from pipelines.stage3 import classifier_loss, val_accuracy
from pipelines.train import machine_settings, train
from vqvae2 import Pipeline

RATES = (0.5, 0.25, 0.1)
RULES = ("images", "reconstructions", "latent", "class", "kmeans", "match")


@torch.no_grad()
def code_vectors(pipe: Pipeline, images: torch.Tensor, level: int) -> torch.Tensor:
    """One level's quantised code vectors (N, D, h, w) of images (uint8, or float in [-1, 1]) encoded again."""
    return torch.cat([pipe.vqvae.quantizers[level].lookup(pipe.encode(chunk)[level]).float()
                      for chunk in images.split(250)])


def latent_discriminator(cfg, real: torch.Tensor, generated: torch.Tensor, steps: int,
                         out_dir: Path) -> tuple[Classifier, float]:
    """Real (label 1) against generated code vectors, trained as stage 3 trains its classifiers (pipelines.train
    with the rejection network's mixup, train_classifier's batch size and learning rate, `steps` steps) on all
    but the last tenth of each side; and its accuracy on that held-out tenth. The project's classifier with its
    stem widened to the code dimension (ClassifierConfig admits images only)."""
    cut_r, cut_g = len(real) - max(1, len(real) // 10), len(generated) - max(1, len(generated) // 10)
    split = lambda a, b: TensorDataset(torch.cat([a, b]), torch.cat([torch.ones(len(a)), torch.zeros(len(b))]).long())
    train_set, val_set = split(real[:cut_r], generated[:cut_g]), split(real[cut_r:], generated[cut_g:])
    net = Classifier(ClassifierConfig(in_channels=3, image_size=real.shape[-1], num_classes=2, channels=[32, 64, 128]))
    stem = net.stem[0]
    net.stem[0] = torch.nn.Conv2d(real.shape[1], stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                                  bias=False)
    net.config.in_channels = real.shape[1]
    tcfg = dataclasses.replace(cfg.train_classifier, steps=steps, warmup_steps=min(cfg.train_classifier.warmup_steps,
                               steps // 10), save_every=steps, log_every=max(1, steps // 10), num_workers=-1)
    tcfg, _ = machine_settings(tcfg, None, "latent realism classifier")
    torch.manual_seed(tcfg.seed)
    shutil.rmtree(out_dir, ignore_errors=True)  # a fresh training, not a resumed one
    model = train(net, train_set, tcfg, out_dir, classifier_loss(tcfg.rejection_mixup), {"config_hash": "latent"},
                  desc=f"latent realism {out_dir.name}").model.eval()
    return model, val_accuracy(model, val_set)


def standardised(reference: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """reference and others scaled by reference's per-feature mean and standard deviation."""
    mu, sd = reference.mean(0), reference.std(0) + 1e-6
    return [(x.double() - mu) / sd for x in (reference, *others)]


def matched(real: torch.Tensor, candidates: torch.Tensor, n: int, rate: float) -> torch.Tensor:
    """Indices (ascending) of the n candidates among the first ceil(n / rate) that a minimum-cost one-to-one
    matching pairs with the first n rows of real (feature rows, Euclidean cost on standardised features)."""
    m = candidates_needed(n, rate)
    if len(real) < n or len(candidates) < m:
        raise ValueError(f"matching {n} samples at rate {rate} needs {n} real rows and {m} candidates, "
                         f"got {len(real)} and {len(candidates)}")
    a, b = standardised(real, real[:n], candidates[:m])[1:]
    _, cols = linear_sum_assignment(torch.cdist(a, b).numpy())
    return torch.as_tensor(cols).sort().values


def knn_label_accuracy(x: torch.Tensor, labels: torch.Tensor, k: int = 10) -> float:
    """Share of the second half of rows whose k nearest rows of the first half (standardised Euclidean) carry its
    label most often."""
    half = len(x) // 2
    x = standardised(x)[0]
    near = torch.cdist(x[half:], x[:half]).topk(min(k, half), largest=False).indices
    votes = torch.nn.functional.one_hot(labels[:half][near], int(labels.max()) + 1).sum(1).argmax(1)
    return (votes == labels[half:]).double().mean().item()


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Centroids (k, D) of Lloyd's k-means on rows of x, started from k random rows."""
    c = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k]].clone()
    for _ in range(iters):
        a = torch.cdist(x, c).argmin(1)
        for j in range(k):
            if (a == j).any():
                c[j] = x[a == j].mean(0)
    return c


def quotas(strata: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """n places split over k strata by their frequencies in `strata` (largest remainders)."""
    share = torch.bincount(strata, minlength=k).double() / len(strata) * n
    q = share.floor().long()
    q[(share - q).argsort(descending=True)[:n - int(q.sum())]] += 1
    return q


def by_quotas(strata: torch.Tensor, quota: torch.Tensor, score: torch.Tensor, n: int, rate: float) -> torch.Tensor:
    """Indices (ascending) of n candidates among the first ceil(n / rate): each stratum's quota of its best-scored
    ones; places a stratum cannot fill go to the best-scored of the rest."""
    m = candidates_needed(n, rate)
    chosen = []
    for j, q in enumerate(quota.tolist()):
        members = (strata[:m] == j).nonzero().flatten()
        chosen.append(members[score[members].argsort(descending=True)[:q]])
    chosen = torch.cat(chosen)
    if len(chosen) < n:
        rest = torch.ones(m, dtype=torch.bool)
        rest[chosen] = False
        rest = rest.nonzero().flatten()
        chosen = torch.cat([chosen, rest[score[rest].argsort(descending=True)[:n - len(chosen)]]])
    return chosen.sort().values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, nargs="*", default=None, help="per level; default the run's")
    ap.add_argument("--kmeans", type=int, nargs="*", default=[12], help="numbers of k-means strata")
    ap.add_argument("--steps", type=int, default=1000, help="training steps of each latent realism classifier")
    ap.add_argument("--grid-dir", type=Path, default=None, help="pictures of what each realism rule ranks")
    ap.add_argument("--realism-seeds", type=int, default=3, help="stage 3 realism classifiers trained per rule")
    ap.add_argument("--realism-steps", type=int, default=0,
                    help="their training steps (default: the run's train_classifier.steps)")
    ap.add_argument("--realism-samples", type=int, default=0,
                    help="samples (and real images) each learns from (default: the run's train_classifier.realism_samples)")
    ap.add_argument("--realism-crop", type=float, default=0.0,
                    help="the centred fraction of each side they look at (default: the run's train_classifier.realism_crop)")
    ap.add_argument("--realism-caps", type=float, nargs="*", default=[],
                    help="other caps of the density ratio (quantiles; 1: none), each a row of the first seed's classifier")
    ap.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES), help="the families of rules to run")
    args = ap.parse_args()
    if not all(0 < q <= 1 for q in args.realism_caps):
        ap.error(f"--realism-caps must be quantiles in (0, 1], got {args.realism_caps}")
    if not 0 <= args.realism_crop <= 1:
        ap.error(f"--realism-crop must be in (0, 1], got {args.realism_crop}")
    if args.realism_seeds < 1 or args.realism_steps < 0 or args.realism_samples < 0:
        ap.error(f"--realism-seeds must be >= 1, --realism-steps and --realism-samples >= 0, got {args.realism_seeds}, "
                 f"{args.realism_steps} and {args.realism_samples}")
    init_processes()
    machine, t0 = describe(), time.perf_counter()
    run = RunDir(args.run_dir)
    if not run.config.is_file():
        raise SystemExit(f"realism_variants.py: {run.config} does not exist: --run-dir must be a finished run")
    lock = locked(run.root)  # nothing may change the run while it is read
    cfg = load_run_config(run, None, [], write=False)
    realism_options = {k: v for k, v in (("realism_samples", args.realism_samples),
                                         ("realism_crop", args.realism_crop)) if v}
    if realism_options:
        cfg = dataclasses.replace(cfg, train_classifier=dataclasses.replace(cfg.train_classifier, **realism_options))
    averaged = Pipeline.from_pretrained(run.root, device="cpu")
    pipe = raw_pipeline(run, averaged) or averaged
    n, temperature = args.n, args.temperature or None
    n_gen = cfg.train_classifier.realism_samples
    train_set, _ = build_datasets(cfg.data)
    picks = [round(i * len(train_set) / n_gen) for i in range(min(n_gen, len(train_set)))]
    if "match" in args.rules and len(picks) < n:
        raise SystemExit(f"realism_variants.py: the match rules pair --n {n} samples with as many training images, "
                         f"but train_classifier.realism_samples gives {len(picks)}: raise --realism-samples")
    real = torch.stack([train_set[i][0] for i in picks])
    real_labels = torch.tensor([int(train_set[i][1]) for i in picks])
    scorer = Scorer(cfg, run, pipe)
    candidates = pipe(candidates_needed(n, min(RATES)), seed=args.seed, output="uint8", temperature=temperature)
    generated = realism_generated(cfg, pipe, cfg.eval.seed, temperature=temperature)  # every realism classifier's
    rows = []

    unfiltered = scorer.score(scorer.features(candidates.images[:n]))

    def add(rule: str, chosen: dict[float, torch.Tensor], **info) -> None:
        out = {"rule": rule, **info, "rates": {"1": unfiltered}}
        for rate, idx in chosen.items():
            out["rates"][f"{rate:g}"] = scorer.score(scorer.features(candidates.images[idx]))
        first, last = out["rates"]["1"], out["rates"][f"{min(RATES):g}"]
        out["fd_drop_at_0.1"] = 1 - last["fd_domain"] / first["fd_domain"]
        out["precision_higher_at_0.1"] = last["precision"] > first["precision"]
        print(json.dumps({k: v for k, v in out.items() if k != "rates"}), flush=True)
        rows.append(out)

    drs = lambda p: {r: realism_sample(p, n, r, seed=args.seed) for r in RATES}
    steps, first_kept, features = args.realism_steps or cfg.train_classifier.steps, {}, {}
    for rule in [r for r in ("images", "reconstructions") if r in args.rules]:
        logits = []
        for s in range(args.realism_seeds):
            tc = dataclasses.replace(cfg.train_classifier, realism_real=rule, seed=cfg.train_classifier.seed + s,
                                     steps=steps, save_every=steps)
            p_real, summary = realism_probs(dataclasses.replace(cfg, train_classifier=tc), run, pipe, candidates.images,
                                            cfg.eval.seed, name=f"classifier-{rule}", generated=generated)
            chosen = drs(p_real)
            add(f"realism-{rule}", chosen, classifier_seed=tc.seed, steps=steps, validation_accuracy=summary["accuracy"])
            logits.append(torch.logit(p_real.double(), eps=1e-6))
            if s + 1 == args.realism_seeds > 1:
                add(f"realism-{rule}-ensemble", drs(torch.stack(logits).mean(0).sigmoid()), classifier_seeds=len(logits),
                    steps=steps)
            if s > 0:
                continue
            for q in args.realism_caps:  # the same classifier, its density ratio capped elsewhere
                add(f"realism-{rule}-cap-{q:g}", {r: realism_sample(p_real, n, r, seed=args.seed, cap_quantile=q)
                                                  for r in RATES}, classifier_seed=tc.seed, cap_quantile=q)
            first_kept[f"realism-{rule} at {min(RATES):g} (seed {tc.seed})"] = chosen[min(RATES)]
            if "match" in args.rules and "realism" not in features:
                net = Classifier.from_pretrained(Path(f"{run.root}-realism") / f"classifier-{rule}")
                features["realism"] = (predict_features(net, real), predict_features(net, candidates.images))
            if args.grid_dir is not None:
                order = p_real.argsort(descending=True)
                save_png(args.grid_dir / f"realism-{rule}.png",
                         grid_image(candidates.images[torch.cat([order[:32], order[-32:]])], nrow=8))
    p_latent, realism_lock = {}, locked(Path(f"{run.root}-realism"))  # where the latent classifiers train
    for level, name in enumerate(pipe.levels if "latent" in args.rules else []):
        net, accuracy = latent_discriminator(cfg, code_vectors(pipe, real, level), code_vectors(pipe, generated, level),
                                             args.steps, Path(f"{run.root}-realism") / f"latent-{name}")
        p_latent[name] = predict_proba(net, code_vectors(pipe, candidates.images, level), batch_size=500)[:, 1]
        add(f"realism-latent-{name}", drs(p_latent[name]), validation_accuracy=accuracy)
    realism_lock.release()
    dirs = [run.classifier / "rejection", run.classifier]
    reject = Classifier.from_pretrained(next(d for d in dirs if (d / "model.safetensors").is_file())).eval()
    probs = predict_proba(reject, candidates.images, batch_size=256)
    confidence, predicted = probs.max(1)
    share = lambda classes: (torch.bincount(classes, minlength=probs.shape[1]) / len(classes)).tolist()
    random_score = torch.rand(len(predicted), generator=torch.Generator().manual_seed(args.seed))
    if "class" in args.rules:
        add("class-confidence", {r: by_quotas(torch.zeros_like(predicted), torch.tensor([n]), confidence, n, r)
                                 for r in RATES})
        q = quotas(real_labels, probs.shape[1], n)
        add("class-quotas-random", {r: by_quotas(predicted, q, random_score, n, r) for r in RATES})
        add("class-quotas-confidence", {r: by_quotas(predicted, q, confidence, n, r) for r in RATES})
    top = pipe.levels[0]
    if "kmeans" in args.rules or "match" in args.rules:  # every candidate encoded again: not done for nothing
        real_top = code_vectors(pipe, real, 0).flatten(1)
        cand_top = code_vectors(pipe, candidates.images, 0).flatten(1)
        features["top"] = (real_top, cand_top)
    for k in args.kmeans if "kmeans" in args.rules else []:
        centroids = kmeans(real_top, k, seed=args.seed)
        q, strata = quotas(torch.cdist(real_top, centroids).argmin(1), k, n), torch.cdist(cand_top, centroids).argmin(1)
        add(f"kmeans-{k}-quotas-random", {r: by_quotas(strata, q, random_score, n, r) for r in RATES})
        for name in p_latent:
            add(f"kmeans-{k}-quotas-latent-{name}", {r: by_quotas(strata, q, p_latent[name], n, r) for r in RATES})
    for name, (real_f, cand_f) in features.items() if "match" in args.rules else ():
        chosen = {r: matched(real_f, cand_f, n, r) for r in RATES}
        add(f"match-{name}", chosen)
        first_kept[f"match-{name} at {min(RATES):g}"] = chosen[min(RATES)]
    class_mix = {"training images": share(predict_proba(reject, real, batch_size=256).argmax(1)),
                 "candidates": share(predicted[:n]), **{k: share(predicted[idx]) for k, idx in first_kept.items()}}
    label_knn = {name: knn_label_accuracy(real_f, real_labels) for name, (real_f, _) in features.items()}
    if label_knn:
        label_knn["chance"] = torch.bincount(real_labels[len(real_labels) // 2:]).max().item() / (
            len(real_labels) - len(real_labels) // 2)
    drops = {}
    for rule in ("realism-images", "realism-reconstructions"):
        d = [r["fd_drop_at_0.1"] for r in rows if r["rule"] == rule]
        together = [r["fd_drop_at_0.1"] for r in rows if r["rule"] == f"{rule}-ensemble"]
        if d:
            drops[rule] = {"per_seed": d, "mean": sum(d) / len(d), **({"ensemble": together[0]} if together else {})}
    result = {"rows": rows, "realism_fd_drop_at_0.1": drops, "rules": args.rules,
              "reconstruction_fd_domain": scorer.reconstruction["fd_domain"], "n": n,
              "candidates": len(candidates.images), "generated_for_realism": n_gen,
              "realism_steps": steps, "realism_crop": cfg.train_classifier.realism_crop, "temperature": temperature,
              "predicted_class_mix": class_mix, "label_knn_accuracy": label_knn, "run_dir": str(run.root),
              "kmeans_on": f"the {top} level's code vectors of {len(real)} training images",
              "extractor": scorer.spec.name, "total_seconds": time.perf_counter() - t0,
              "command": "python benchmarks/realism_variants.py " + " ".join(sys.argv[1:]), "machine": machine}
    lock.release()
    write_json(args.out, result)


if __name__ == "__main__":
    main()
