"""Which sampling controls make samples as good as reconstructions? One finished run's priors against
guidance, nucleus sampling, averaged weights and rejection, at acceptance 1 and at equal numbers of generated
samples:

    python benchmarks/generation_quality.py --run-dir RUN --out F.json --grid-dir DIR [--n 1000]

RUN is a finished run of a labelled preset through its classifier stage (faces128 is the one the targets are
for). Its VQ-VAE, codes and classifiers are reused. Priors trained with prior.<level>.label_dropout (the "no
label" class guidance needs) are guided as they are; otherwise a copy, RUN-guided, trains them again with it.
Priors trained with train_prior.ema_decay keep their own weights beside the average (prior-<level>/raw): the
rows use the weights themselves and an `ema` row the average. Every row samples --n images and is scored
against the validation split with the run's domain classifier (FD-domain, k-NN precision and recall); each
row's first 64 images are saved as DIR/<row>.png. Rows:

- baseline, and each --top-p;
- ema: the averaged weights (or, with --ema D on a run without them, priors trained again with ema_decay=D);
- label-dropout (only when RUN-guided was trained), each --guidance, each --ema-guidance on the averaged
  weights, each --level-guidance (one scale per level, top first, e.g. 4,4,6; 4,4,6:0.95 with top-p 0.95) on
  the weights the best guided row used, and the best of those guided rows with the best top-p (unless a
  --level-guidance row is that setting already);
- guided class rejection: the best guided setting's samples kept by the rejection network at 0.5 (2 guided
  candidates per sample: the cost of acceptance 0.25), and each --guided-rejection setting's (e.g. 4,1,1: only
  the top level guided, whose 8x8 grid costs little beside the levels below; 4,1,1:0.9 with top-p 0.9);
- class rejection (the run's rejection network) and realism rejection at 0.5, 0.25, 0.1: 2, 4 and 10
  candidates per sample; a guided sample costs two (one batch of twice the samples), as acceptance 0.5 does.
  Realism rejection is what stage 3 does for a folder without labels, on a copy of the run with the labels
  hidden from the priors (RUN-unlabelled: the same VQ-VAE and codes, its priors trained again with
  class_conditional=false): a real-vs-generated classifier (RUN-unlabelled-realism/classifier) learns that copy's samples,
  and its candidates are that copy's samples (realism-rejection-1 is their baseline). With
  --realism-priors run, the labelled run's priors draw them instead (no training, but not an unlabelled model;
  the classifier in RUN-realism/classifier). --realism-crop sets the centred part of each image the realism
  classifier looks at (train_classifier.realism_crop).

Every row records what its samples cost: `sample_seconds`, the wall time of drawing its candidates (a share of
the shared candidates for the rejection rows), and `cost`, that time over the baseline's (the same number of
samples, no guidance, no rejection); run it alone on the machine for these to mean anything.

Each row is also appended to DIR/rows.jsonl as it is scored. `--resume` goes on with an interrupted run (the
realism rows train three priors again, hours on a small CPU): rows recorded there for the same run weights,
options and machine, and with the same settings, are reused, not drawn again, and only the rest is measured. Costs stay comparable because a
row is reused only on the machine that timed the baseline.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import describe
from eval.classifier import Classifier, predict_proba
from eval.metrics import FeatureExtractor, metrics_from_features
from eval.rejection import candidates_needed, realism_sample, rejection_sample
from pipelines.allocator import keep_freed_memory
from pipelines.artifacts import RunDir, append_jsonl, atomic_write, save_png, write_json
from pipelines.cli import init_processes, load_run_config
from pipelines.datasets import build_datasets
from pipelines.evaluate import extractor_spec, image_batches, reconstructions
from pipelines.images import grid_image
from pipelines.run import run_all
from pipelines.runlock import RunDirBusy, RunLock
from pipelines.stage3 import REALISM_SEED_OFFSET, train_realism_classifier
from vqvae2 import Pipeline
from vqvae2.pixelsnail import PixelSNAIL

REJECTION_RATES = (0.5, 0.25, 0.1)


def scale_name(g) -> str:
    """A guidance setting in a row's name: 3 -> "3", [4, 4, 6] -> "4-4-6"."""
    return "-".join(f"{x:g}" for x in g) if isinstance(g, (list, tuple)) else f"{g:g}"


class Clock:
    """Draws samples and keeps the wall seconds the last draw took."""

    def __init__(self):
        self.last = 0.0

    def __call__(self, pipe: Pipeline, n: int, seed: int, **controls):
        t0 = time.perf_counter()
        out = pipe(n, seed=seed, output="uint8", **controls)
        self.last = time.perf_counter() - t0
        return out


class Ledger:
    """The rows measured so far, one JSON line each in `path`, with the `context` they were measured in (run
    weights, options, machine). `resume` keeps the rows of that context whose grid still exists; otherwise
    the file starts empty."""

    def __init__(self, path: Path, context: dict, resume: bool):
        self.path, self.context, self.done = path, context, {}
        if resume and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                if r.pop("context", None) == context and ("grid" not in r or Path(r["grid"]).is_file()):
                    self.done[r["name"]] = r
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = "".join(json.dumps({**r, "context": context}) + "\n" for r in self.done.values())
        atomic_write(path, lambda tmp: Path(tmp).write_text(kept))
        self.kept = [name for name in self.done if not name.startswith("_")]
        self.reused, self.earlier = [], 0.0  # the rows taken again, and the time they took when measured
        self.since = time.perf_counter()

    def get(self, name: str) -> dict | None:
        return self.done.get(name)

    def take(self, name: str, **settings) -> dict | None:
        """The row `name` recorded with these settings, counted as reused; None when there is none."""
        r = self.done.get(name)
        if r is None or any(r.get(k) != v for k, v in settings.items()):
            return None
        if not name.startswith("_"):
            self.reused.append(name)
        self.earlier += r.get("seconds_spent", 0.0)
        return r

    def record(self, r: dict) -> dict:
        """Append `r` with `seconds_spent`, the wall time since the previous record of this process."""
        now = time.perf_counter()
        r = {**r, "seconds_spent": now - self.since}
        self.since = now
        append_jsonl(self.path, {**r, "context": self.context})
        self.done[r["name"]] = r
        return r


def run_identity(run: RunDir, cfg) -> str:
    """A digest of what the rows of `run` depend on: its config and the weights of its VQ-VAE and priors."""
    h = hashlib.sha256(run.config.read_bytes())
    for folder in [run.vqvae] + [run.prior(level) for level in cfg.vqvae.levels]:
        for f in sorted(folder.glob("**/model.safetensors")):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def parse_levels(spec: str) -> float | list[float]:
    """A guidance setting on the command line: "3" -> 3.0, "4,1,1" -> [4.0, 1.0, 1.0] (top first)."""
    g = [float(x) for x in spec.split(",")]
    return g if len(g) > 1 else g[0]


def parse_setting(spec: str) -> tuple[float | list[float], float]:
    """A guidance setting with an optional top-p: "4,1,1" -> ([4.0, 1.0, 1.0], 0.0), "4,1,1:0.9" -> (..., 0.9)."""
    scales, _, p = spec.partition(":")
    return parse_levels(scales), float(p or 0)


def setting_name(g, top_p: float, ema: bool) -> str:
    """A guided row's name: guidance-4-4-6[-top-p-0.9][-ema]."""
    return f"guidance-{scale_name(g)}" + (f"-top-p-{top_p:g}" if top_p else "") + ("-ema" if ema else "")


def best_guided(rows: list[dict]) -> dict:
    """The guided row of `rows` with the lowest FD-domain."""
    return min((r for r in rows if r["guidance"] != 1.0), key=lambda r: r["fd_domain"])


def combination(rows: list[dict]) -> tuple | None:
    """(name, guidance, top_p, ema) of the best guided row's setting with the best top-p of `rows`, or None when
    a row of that setting is there already (a --level-guidance G,...:P row, say)."""
    best = best_guided(rows)
    top_p = min((r for r in rows if r["top_p"]), key=lambda r: r["fd_domain"])["top_p"]
    name = setting_name(best["guidance"], top_p, bool(best["ema"]))
    return None if name in [r["name"] for r in rows] else (name, best["guidance"], top_p, bool(best["ema"]))


def guided_cost(g, rate: float = 1.0) -> dict:
    """equal_cost_acceptance of guidance `g` kept at `rate`, when every level is guided: a guided sample runs
    its batch twice (label and "no label"), as acceptance 0.5 draws two candidates. A level at 1 runs once,
    so a setting with one is not claimed (its `cost` is measured)."""
    scales = g if isinstance(g, (list, tuple)) else [g]
    return {"equal_cost_acceptance": rate / 2} if all(x != 1 for x in scales) else {}


def class_rejected(pipe: Pipeline, reject: Classifier, n: int, rate: float, seed: int, clock: Clock,
                   **controls) -> torch.Tensor:
    """n images kept by the rejection network among ceil(n / rate) candidates of `pipe` (class-balanced)."""
    candidates = clock(pipe, candidates_needed(n, rate), seed, **controls)
    probs = predict_proba(reject, candidates.images, batch_size=256)
    return candidates.images[rejection_sample(candidates.images, probs, n, rate, target_classes=candidates.labels)]


def locked(root: Path) -> RunLock:
    """The run-directory lock of a directory this benchmark reads or writes, acquired (release() it): while
    another writer (a benchmark, a `vqvae2` command) holds it, this one ends with the holder's name."""
    try:
        return RunLock(root, "python " + " ".join(sys.argv)[:200]).acquire()
    except RunDirBusy as e:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {e}") from None


def sibling(run: RunDir, suffix: str) -> RunDir:
    """RUN-<suffix>, the copy of the run that retrained() trains."""
    return RunDir(Path(f"{run.root}-{suffix}"))


def retrained(run: RunDir, suffix: str, overrides: list[str]) -> RunDir:
    """RUN-<suffix>: the run's VQ-VAE, codes and classifiers, its priors trained again with `overrides`."""
    guided = sibling(run, suffix)
    lock = locked(guided.root)
    try:
        for part in ("vqvae", "codes", "classifier"):
            if not (guided.root / part).exists():
                shutil.copytree(run.root / part, guided.root / part)
        if not guided.config.is_file():
            shutil.copy(run.config, guided.config)
        cfg = load_run_config(guided, None, overrides)
        run_all(cfg, guided, until="priors")
    finally:
        lock.release()
    return guided


class Scorer:
    """FD-domain, precision and recall of uint8 images against the validation split, with the run's extractor."""

    def __init__(self, cfg, run: RunDir, pipe: Pipeline):
        self.spec = extractor_spec(cfg, run)
        self.net = FeatureExtractor(self.spec)
        _, self.val_set = build_datasets(cfg.data)
        self.real = self.net.extract(image_batches(self.val_set, 0, 256))
        recon = self.net.extract(reconstructions(pipe.vqvae, image_batches(self.val_set, 0, 256), "cpu"))
        self.reconstruction = self.score(recon)

    def features(self, images: torch.Tensor):
        return self.net.extract(images.split(256))

    def score(self, feats) -> dict:
        m = metrics_from_features(feats, self.real, self.spec, kid_subset_size=min(1000, len(feats), len(self.real)))
        return {"fd_domain": m["fd"], "precision": m["precision"], "recall": m["recall"]}


def row(name: str, scorer: Scorer, images: torch.Tensor, grid_dir: Path, seconds: float, **settings) -> dict:
    """One row of the JSON; `seconds`: the wall time of drawing its candidates."""
    grid = grid_dir / f"{name}.png"
    save_png(grid, grid_image(images[:64], nrow=8))
    out = {"name": name, "acceptance_rate": 1.0, "rejection": "none", "guidance": 1.0, "top_p": 0.0, "ema": False,
           **settings, **scorer.score(scorer.features(images)), "sample_seconds": seconds, "grid": str(grid)}
    print(json.dumps({k: v for k, v in out.items() if k != "grid"}), flush=True)
    return out


def raw_pipeline(run: RunDir, averaged: Pipeline) -> Pipeline | None:
    """The run's priors as trained, when their average is what prior-<level> holds (prior-<level>/raw)."""
    folders = [run.prior(level) / "raw" for level in averaged.levels]
    if not all((f / "model.safetensors").is_file() for f in folders):
        return None
    priors = [PixelSNAIL.from_pretrained(f, map_location="cpu").eval() for f in folders]
    return Pipeline(averaged.vqvae, priors, averaged.settings)


def guided_pipeline(run: RunDir, cfg, plain: Pipeline, label_dropout: float) -> tuple[Pipeline, bool]:
    """Priors that can be guided: the run's own when trained with label dropout, else RUN-guided's
    (trained again); and whether they were trained again."""
    if all(p.config.label_dropout > 0 for p in plain.priors):
        return plain, False
    guided_dir = retrained(run, "guided", [f"prior.{lv}.label_dropout={label_dropout}" for lv in cfg.vqvae.levels])
    return Pipeline.from_pretrained(guided_dir.root, device="cpu"), True


def realism_generated(cfg, pipe: Pipeline, seed: int, **controls) -> torch.Tensor:
    """The samples a realism classifier learns from: other samples of `pipe` than the candidates (drawn with
    `controls`, e.g. temperature)."""
    return pipe(cfg.train_classifier.realism_samples, seed=seed + REALISM_SEED_OFFSET, output="uint8",
                **controls).images


def realism_probs(cfg, run: RunDir, pipe: Pipeline, candidates: torch.Tensor, seed: int, name: str = "classifier",
                  generated: torch.Tensor | None = None, **controls) -> tuple[torch.Tensor, dict]:
    """P(real) of each candidate by a real-vs-generated classifier (cfg.train_classifier's, in RUN-realism/<name>)
    trained on `generated`, by default realism_generated(cfg, pipe, seed, **controls)."""
    out_dir = Path(f"{run.root}-realism") / name
    lock = locked(out_dir.parent)
    try:
        shutil.rmtree(out_dir, ignore_errors=True)  # its hash names the run's priors, not these weights
        if generated is None:
            generated = realism_generated(cfg, pipe, seed, **controls)
        summary = train_realism_classifier(cfg, run, generated, out_dir)
        net = Classifier.from_pretrained(out_dir).eval()
    finally:
        lock.release()
    return predict_proba(net, candidates, batch_size=256)[:, 1], summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--grid-dir", required=True, type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label-dropout", type=float, default=0.1, help="for RUN-guided, when the run's priors have none")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    ap.add_argument("--top-p", type=float, nargs="+", default=[0.9, 0.95])
    ap.add_argument("--ema", type=float, default=0.0,
                    help="a run without averaged weights: also a row of priors trained with this ema_decay (RUN-ema)")
    ap.add_argument("--ema-guidance", type=float, nargs="*", default=[],
                    help="guidance scales also tried on the averaged weights (a run trained with both)")
    ap.add_argument("--level-guidance", nargs="*", default=[], metavar="G,G,...",
                    help="per-level guidance scales (top first; :P adds top-p P), each a row: e.g. 4,4,6 or 4,4,6:0.95")
    ap.add_argument("--guided-rejection", nargs="*", default=[], metavar="G[,G,...][:P]",
                    help="guidance settings (one, or one per level; :P adds top-p P) also kept by class rejection at "
                         "0.5, e.g. 4,1,1 or 4,1,1:0.9")
    ap.add_argument("--no-realism", action="store_true", help="skip the realism rejection rows")
    ap.add_argument("--realism-priors", choices=("unlabelled", "run"), default="unlabelled",
                    help="the priors of the realism rows: a copy trained without labels (RUN-unlabelled), or the run's")
    ap.add_argument("--realism-crop", type=float, default=0.0,
                    help="the centred fraction of each side the realism classifier looks at (default: the run's "
                         "train_classifier.realism_crop)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the rows an interrupted run recorded in GRID_DIR/rows.jsonl (same run, options, machine)")
    args = ap.parse_args()
    if not 0 <= args.realism_crop <= 1:
        ap.error(f"--realism-crop must be in (0, 1], got {args.realism_crop}")
    keep_freed_memory()
    init_processes()
    machine, t0 = describe(), time.perf_counter()
    run = RunDir(args.run_dir)
    if not run.config.is_file():
        raise SystemExit(f"generation_quality.py: {run.config} does not exist: --run-dir must be a finished run")
    lock = locked(run.root)  # nothing may change the run while its rows are measured
    cfg = load_run_config(run, None, [], write=False)
    averaged = Pipeline.from_pretrained(run.root, device="cpu")
    raw = raw_pipeline(run, averaged)
    plain = raw or averaged
    ema = cfg.prior_train(cfg.vqvae.levels[0]).ema_decay if raw else args.ema
    scorer = Scorer(cfg, run, plain)
    clock = Clock()
    sample = lambda pipe, n, **kw: (lambda: clock(pipe, n, args.seed, **kw).images)  # draws when called
    grids, rows = args.grid_dir, []
    context = {"run": run_identity(run, cfg), "n": args.n, "seed": args.seed, "label_dropout": args.label_dropout,
               "ema": args.ema, "realism_priors": args.realism_priors, "machine": describe(calibrated=False)}
    ledger = Ledger(grids / "rows.jsonl", context, args.resume)

    def add(name: str, draw, seconds=None, **settings) -> None:
        """The row `name`: reused from the ledger, or drawn now (draw() -> images) and scored; `seconds`: the
        time its candidates took, by default that of the clock's last draw."""
        r = ledger.take(name, **settings)  # not one recorded with other settings (e.g. another --realism-crop)
        if r is None:
            images = draw()
            r = ledger.record(row(name, scorer, images, grids, clock.last if seconds is None else seconds(),
                                  **settings))
        else:
            print(f"(reused from {ledger.path}) {name}", flush=True)
        rows.append(r)

    plain(min(args.n, 8), seed=args.seed + 1)  # untimed warm-up: the baseline's time is the unit of cost
    add("baseline", sample(plain, args.n))
    for p in args.top_p:
        add(f"top-p-{p:g}", sample(plain, args.n, top_p=p), top_p=p)
    if ema:  # averaged weights: the run's own average, or priors trained again with one
        pipe = (lambda: averaged) if raw else \
            (lambda: Pipeline.from_pretrained(retrained(run, "ema", [f"train_prior.ema_decay={ema}"]).root, device="cpu"))
        add("ema", lambda: sample(pipe(), args.n)(), ema=ema)
    guided, again = guided_pipeline(run, cfg, plain, args.label_dropout)
    dropout = guided.priors[0].config.label_dropout
    if again:
        add("label-dropout", sample(guided, args.n), label_dropout=dropout)
    for g in args.guidance:
        add(f"guidance-{g:g}", sample(guided, args.n, guidance=g), guidance=g, label_dropout=dropout, **guided_cost(g))
    if raw and not again:  # the averaged weights guided too (they share the priors' "no label" class)
        for g in args.ema_guidance:
            add(f"guidance-{g:g}-ema", sample(averaged, args.n, guidance=g), guidance=g, ema=ema, label_dropout=dropout,
                **guided_cost(g))
    use_ema = bool(best_guided(rows)["ema"])
    weights = lambda use: averaged if use else guided
    for spec in args.level_guidance:  # one scale per level, on the weights the best guided row used
        g, top_p = parse_setting(spec)
        add(setting_name(g, top_p, use_ema), sample(weights(use_ema), args.n, guidance=g, top_p=top_p),
            guidance=g, top_p=top_p, ema=ema if use_ema else False, label_dropout=dropout, **guided_cost(g))
    if combo := combination(rows):
        name, best_g, best_p, use_ema = combo
        add(name, sample(weights(use_ema), args.n, guidance=best_g, top_p=best_p), guidance=best_g, top_p=best_p,
            label_dropout=dropout, ema=ema if use_ema else False, **guided_cost(best_g))
    dirs = [run.classifier / "rejection", run.classifier]
    reject = Classifier.from_pretrained(next(d for d in dirs if (d / "model.safetensors").is_file())).eval()
    # guided settings under class rejection at 0.5: the best one (with or without top-p), and each --guided-rejection
    best = best_guided(rows)
    settings = [(best["name"], best["guidance"], best["top_p"], best["ema"])]
    for spec in args.guided_rejection:  # on the weights the best guided row used
        g, top_p = parse_setting(spec)
        name = setting_name(g, top_p, bool(best["ema"]))
        if name not in [n for n, *_ in settings]:  # the best row's own setting is there already
            settings.append((name, g, top_p, best["ema"]))
    for name, g, top_p, averaged_weights in settings:
        controls = {"guidance": g, "top_p": top_p}
        draw = lambda e=averaged_weights, c=controls: class_rejected(weights(e), reject, args.n, 0.5, args.seed, clock, **c)
        add(f"{name}-class-rejection-0.5", draw, acceptance_rate=0.5, rejection="class", guidance=g, top_p=top_p,
            ema=averaged_weights, label_dropout=dropout, **guided_cost(g, 0.5))
    # rejection: candidates from the run's priors as trained, kept by the rejection network or by realism
    most = candidates_needed(args.n, min(REJECTION_RATES))
    drawn = {}  # the shared candidates and the seconds they took, drawn at the first row that needs them

    def shared(pipe: Pipeline, key: str):
        if key not in drawn:
            drawn[key] = (clock(pipe, most, args.seed), clock.last)
        return drawn[key]

    def share(rate: float, key: str):  # the time of the candidates a rate uses
        return lambda: drawn[key][1] * candidates_needed(args.n, rate) / most

    def class_kept(rate: float) -> torch.Tensor:
        candidates, _ = shared(plain, "plain")
        if "probs" not in drawn:
            drawn["probs"] = predict_proba(reject, candidates.images, batch_size=256)
        idx = rejection_sample(candidates.images, drawn["probs"], args.n, rate, target_classes=candidates.labels)
        return candidates.images[idx]

    for rate in REJECTION_RATES:
        add(f"class-rejection-{rate:g}", lambda rate=rate: class_kept(rate), seconds=share(rate, "plain"),
            acceptance_rate=rate, rejection="class")
    realism, realism_priors = "not run (--no-realism)", None
    if not args.no_realism:
        realism_rates = (1.0, *REJECTION_RATES)
        source, key = run, "plain"
        if args.realism_priors == "unlabelled":  # the priors a folder without labels would have
            source = sibling(run, "unlabelled")
        realism_priors = f"{args.realism_priors} ({source.root})"
        names = [f"realism-rejection-{rate:g}" for rate in realism_rates]
        crop = args.realism_crop or cfg.train_classifier.realism_crop
        if all(ledger.get(n) and ledger.get(n).get("realism_crop") == crop for n in names) and \
                ledger.get("_realism") and ledger.get("_realism").get("realism_crop") == crop:
            realism = ledger.take("_realism", realism_crop=crop)["summary"]
        else:
            rcfg, rpipe = cfg, plain
            if args.realism_priors == "unlabelled":
                source = retrained(run, "unlabelled", [f"prior.{lv}.class_conditional=false" for lv in cfg.vqvae.levels])
                rcfg = load_run_config(source, None, [], write=False)
                averaged_u = Pipeline.from_pretrained(source.root, device="cpu")
                rpipe, key = raw_pipeline(source, averaged_u) or averaged_u, "unlabelled"  # as trained, like the baseline
            candidates, _ = shared(rpipe, key)
            rcfg = dataclasses.replace(rcfg, train_classifier=dataclasses.replace(rcfg.train_classifier,
                                                                                  realism_crop=crop))
            p_real, realism = realism_probs(rcfg, source, rpipe, candidates.images, cfg.eval.seed)
            ledger.record({"name": "_realism", "summary": realism, "realism_crop": crop})
        for rate, name in zip(realism_rates, names):
            add(name, lambda rate=rate: candidates.images[realism_sample(p_real, args.n, rate, seed=args.seed)],
                seconds=share(rate, key), acceptance_rate=rate, rejection="realism", priors=args.realism_priors,
                realism_crop=crop)
    rows = [{k: v for k, v in r.items() if k != "seconds_spent"} for r in rows]
    for r in rows:  # the baseline's sampling time is the unit of cost
        r["cost"] = r["sample_seconds"] / rows[0]["sample_seconds"]
    result = {"rows": rows, "reconstruction_fd_domain": scorer.reconstruction["fd_domain"],
              "reconstruction": scorer.reconstruction, "extractor": scorer.spec.name,
              "extractor_trained_on": f"the {cfg.data.name} training split's class labels ({run.classifier})",
              "realism": realism, "realism_priors": realism_priors,
              "realism_crop": None if args.no_realism else crop, "weights": "as trained (prior-<level>/raw); ema rows: their average" if raw
              else "the run's priors", "n": args.n, "run_dir": str(run.root), "reused_rows": ledger.reused,
              # this process's time and the time the rows it reused took (time an interruption lost is not in it)
              "total_seconds": time.perf_counter() - t0 + ledger.earlier,
              "command": "python benchmarks/generation_quality.py " + " ".join(sys.argv[1:]), "machine": machine}
    lock.release()
    write_json(args.out, result)


if __name__ == "__main__":
    main()
