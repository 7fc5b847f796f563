"""Writes the docs pages, and the README's generated parts, from the JSON in benchmarks/results/, so that
no number on them can drift from the file it came from.

    python docs/generate.py            # rewrite the pages that changed
    python docs/generate.py --check    # change nothing; exit 1 naming every page that is out of date

A page docs/NAME.md is rendered from docs/templates/NAME.md. In a template, `{{ EXPR }}` or
`{{ EXPR | FORMAT }}` is replaced by a value. EXPR is a Python expression over the result files (each file
is a name: benchmarks/results/stage1-xeon.json is `stage1_xeon`; keys read as attributes, or as
`["fd_at_1.0"]` when they are not names or are dict methods; a list of records has `.where(mode="auto")`),
the `*_table` functions below (tables whose rows follow the file), and `source("stage1-xeon")`, which says
which command wrote the file and on which machine. FORMAT, after the first `|`, is a Python format spec
(`.3f`, `,.0f`, `.1%`) or a name in FORMATS. A page that reads a file must also show its source(), so
that every number comes with its command and machine; a missing key is an error naming the page.

In README.md, the text between `<!-- generated: EXPR [| FORMAT] -->` and `<!-- /generated -->` is
replaced in the same way; the rest of the README is written by hand.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TEMPLATES = ROOT / "docs" / "templates"
README = ROOT / "README.md"

PLACEHOLDER = re.compile(r"\{\{(.+?)\}\}", re.S)
README_PART = re.compile(r"<!-- generated: (.+?) -->(.*?)<!-- /generated -->", re.S)

# Files that do not record the command that wrote them (newer benchmarks write `command` into the JSON).
COMMANDS = {  # file: (command, a note or "")
    "ablation": ("python benchmarks/ablation.py --out bench-out/ablation.json", ""),
    "conv_ceiling": ("python benchmarks/conv_ceiling.py --out bench-out/conv_ceiling.json", ""),
    "conv_ceiling-xeon": ("python benchmarks/conv_ceiling.py --out bench-out/conv_ceiling.json", ""),
    "data_throughput": ("python benchmarks/data_throughput.py --out bench-out/data_throughput.json", ""),
    "faces128": ("python benchmarks/faces128.py --resume --run-dir bench-out/f128-m2 --set prior.middle.dropout=0.0 "
                 "--set prior.middle.train.steps=6000 --out bench-out/f128-m2.json",
                 "on a copy of a finished run directory: the stages it kept are listed under `resumed`, with the "
                 "times they were measured at"),
    "faults": ("python benchmarks/faults.py --out bench-out/faults.json", ""),
    "fid_bias": ("python benchmarks/fid_bias.py --out bench-out/fid_bias.json --run-dir bench-out/fashion32",
                 "after `vqvae2 run --preset fashion32 --run-dir bench-out/fashion32 --until classifier`"),
    "fid_bias-demo": ("python benchmarks/fid_bias.py --out F.json --run-dir /tmp/bench-runs-native/demo-auto "
                      "--n 1000,2500,5000,10000", "on the run directory of the `auto` run of demo_time-xeon.json"),
    "lock_refusal": ("python benchmarks/lock_refusal.py --out bench-out/lock_refusal.json", ""),
    "onednn_fault_sweep-avx2": ("ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 "
                                "python benchmarks/onednn_fault.py --sweep F.json", ""),
    "onednn_fault_sweep-xeon": ("python benchmarks/onednn_fault.py --sweep F.json", ""),
    "presets_profile": ("python benchmarks/presets_profile.py --out bench-out/presets_profile.json --steps 2",
                        "then the same with `--presets ffhq1024 --resume`"),
    "rejection_analysis": ("python benchmarks/rejection_analysis.py --out bench-out/rejection_analysis.json "
                           "--classifier NAME=DIR ...",
                           "one `--classifier` per network under `networks`, with its `dir`"),
    "sampling": ("python benchmarks/sampling.py --out bench-out/sampling.json", ""),
    "sampling-xeon": ("python benchmarks/sampling.py --out bench-out/sampling.json", ""),
    "stage1": ("python benchmarks/stage1.py --out bench-out/stage1.json", ""),
    "stage1-xeon": ("python benchmarks/stage1.py --out bench-out/stage1.json --reuse", ""),
    "stage2": ("python benchmarks/stage2.py --out bench-out/stage2.json", ""),
    "stage2-speed": ("python benchmarks/stage2.py --out bench-out/stage2-speed.json --speed-only", ""),
    "stage2-speed-xeon": ("python benchmarks/stage2.py --out bench-out/stage2-speed.json --speed-only", ""),
    "stage3": ("python benchmarks/stage3.py --out bench-out/stage3.json --set sample.batch_size=500 "
               "--plot docs/fashion32_tradeoff.png", ""),
    "stage3-rejection-ce": ("python benchmarks/stage3.py --out bench-out/stage3.json --set sample.batch_size=500",
                            "with a rejection network trained by plain cross-entropy, what "
                            "`--set train_classifier.rejection_mixup=0` trains today"),
}

# Files that do not record the machine (benchmarks/machine.py's `describe()` came later): what is known.
AMD = "2-core AMD EPYC VM (AVX-512 with bf16 dot products), not recorded in the file but in the notes of its run"
XEON = "2-core Intel Xeon VM with AMX (native bf16), not recorded in the file but in the notes of its run"
UNKNOWN = "a 2-core x86-64 VM, CPU model not recorded"
SHORT = {AMD: "AMD EPYC", XEON: "Xeon (AMX)", UNKNOWN: "2-core VM"}
MACHINES = {
    "ablation": AMD, "conv_ceiling": AMD, "data_throughput": AMD, "faces128": AMD, "presets_profile": AMD,
    "sampling": AMD, "stage1": AMD, "stage2": AMD, "stage2-speed": AMD,
    "faults": XEON, "fid_bias": XEON, "fid_bias-demo": XEON, "onednn_fault_sweep-avx2": XEON,
    "onednn_fault_sweep-xeon": XEON,
    "rejection_analysis": UNKNOWN, "stage3": UNKNOWN, "stage3-rejection-ce": UNKNOWN,
}


# reading the results

class Record(dict):
    """A JSON object whose keys read as attributes; a missing key is an error naming the file and the keys."""

    def __init__(self, data: dict, where: str):
        super().__init__(data)
        self._where = where

    def __getattr__(self, key):
        if key.startswith("_"):
            raise AttributeError(key)
        return self[key]

    def __getitem__(self, key):
        if key not in self:
            raise KeyError(f"{self._where} has no key {key!r} (it has: {', '.join(map(str, self.keys()))})")
        return wrap(dict.__getitem__(self, key), f"{self._where}.{key}")

    def items(self):
        return [(key, self[key]) for key in self.keys()]

    def values(self):
        return [self[key] for key in self.keys()]


class Records(list):
    """A JSON list; `.where(mode="auto")` is its first item whose fields have those values."""

    def __init__(self, data: list, where: str):
        super().__init__(data)
        self._where = where

    def __getitem__(self, i):
        return wrap(list.__getitem__(self, i), f"{self._where}[{i}]")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def where(self, **fields):
        for item in self:
            if all(item.get(k) == v for k, v in fields.items()):
                return item
        raise KeyError(f"{self._where} has no item with {fields}")


def wrap(value, where: str):
    if isinstance(value, dict):
        return Record(value, where)
    if isinstance(value, list):
        return Records(value, where)
    return value


def stem_name(stem: str) -> str:
    return stem.replace("-", "_")


def load_results() -> dict[str, Record]:
    """Every benchmarks/results/*.json by its name in templates (`stage1_xeon`)."""
    return {stem_name(p.stem): Record(json.loads(p.read_text()), p.name) for p in sorted(RESULTS.glob("*.json"))}


# formats

def minutes_seconds(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def seconds(value: float) -> str:
    """Three significant digits, without an exponent: 0.0295, 6.39, 12,729."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def speedup(value: float) -> str:
    return f"{value:,.1f}x" if value < 100 else f"{value:,.0f}x"


FORMATS = {
    "s": seconds,
    "speedup": speedup,
    "min_s": minutes_seconds,
    "x": lambda v: f"{v:.2f}x",
    "json": json.dumps,
}


def render_value(value, fmt: str | None) -> str:
    if fmt is None:
        return value if isinstance(value, str) else str(value)
    if fmt in FORMATS:
        return FORMATS[fmt](value)
    return format(value, fmt)


# sources: the command and the machine of each file

def machine_text(stem: str, data: Record) -> str:
    m = dict.get(data, "machine")
    if not isinstance(m, dict):
        text = MACHINES[stem]
        torch = dict.get(data, "torch")
        return f"{text}; torch {torch}" if torch else text
    flags = set(m.get("flags", []))
    if "amx_bf16" in flags:
        kind = "AMX, native bf16"
    elif "avx512_bf16" in flags:
        kind = "AVX-512 with native bf16"
    elif "avx512f" in flags:
        kind = "AVX-512, no native bf16"
    else:
        kind = "AVX2" if "avx2" in flags else "no AVX2"
    text = f"{m['logical_cpus']}-core {m['cpu']} ({kind}); torch {m['torch']}"
    limits = m.get("isa_limits") or dict.get(data, "isa_limits") or {}
    if limits:
        text += ", restricted to " + " ".join(f"{k}={v}" for k, v in limits.items())
    return text


def cpu_class(data: Record) -> str:
    """The demo tables' CPU class: native bf16, the AVX2 restriction on such a CPU, or a CPU with AVX2 only."""
    m = data.machine
    if m.get("isa_limits") or {}:
        return "AVX2 restriction"
    flags = set(m.get("flags", []))
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        return "native bf16 (AMX)" if "amx_bf16" in flags else "native bf16 (AVX-512)"
    return f"AVX2 only ({m['cpu']})" if "avx512f" not in flags else f"AVX-512, no bf16 ({m['cpu']})"


def machine_short(stem: str, data: Record) -> str:
    """A table's machine column: "Xeon (AMX)", "AMD EPYC", with "AVX2 restriction" where one was set."""
    m = dict.get(data, "machine")
    if not isinstance(m, dict):
        return SHORT[MACHINES[stem]]
    name = "Xeon" if "Xeon" in m["cpu"] else m["cpu"]
    name += " (AMX)" if "amx_bf16" in m.get("flags", []) else ""
    return name + (", AVX2 restriction" if m.get("isa_limits") or dict.get(data, "isa_limits") else "")


def command_text(stem: str, data: Record) -> str:
    recorded = dict.get(data, "command")
    if recorded:
        return f"`python {recorded}`" if recorded.startswith("benchmarks/") else f"`{recorded}`"
    command, note = COMMANDS[stem]
    return f"`{command}`" + (f" ({note})" if note else "")


# tables

def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def make_tables(R: dict[str, Record]) -> dict:
    """The tables whose rows follow the files (one row per run, case or preset)."""

    def demo_time(*files, summary=False):
        """The demo end to end per CPU class and mode (benchmarks/demo_time.py)."""
        rows = []
        for name in files:
            data = R[stem_name(name)]
            cls = cpu_class(data)
            for run in data.runs:
                if summary and run["mode"] != "auto":
                    continue
                s = run.settings.vqvae
                chosen = f"{'bf16' if s['mixed_precision'] == 'bf16' else 'fp32'}, " \
                         f"{'channels-last' if s['channels_last'] else 'contiguous'}"
                st = run.stage_seconds
                cells = [cls, chosen] if summary else [cls, f"`{run['mode']}`", chosen]
                if not summary:
                    cells += [f"{st[k]:.0f} s" for k in ("vqvae", "prior-top", "prior-bottom", "classifier")]
                rows.append(cells + [f"**{minutes_seconds(run['total_seconds'])}**"])
        if summary:
            return table(["CPU (2 cores)", "what `auto` chose", "the demo end to end"], rows)
        return table(["CPU class", "mode", "precision, layout (as resolved)", "VQ-VAE", "prior top", "prior bottom",
                      "classifiers", "total"], rows)

    def step_probe(*files):
        rows = []
        for name in files:
            data = R[stem_name(name)]
            cls = cpu_class(data)
            by = {(p["mixed_precision"], p["channels_last"]): p["seconds_per_step"] for p in data.vqvae_step}
            rows.append([cls] + [f"{by[(mp, cl)]:.3f} s" for mp in ("no", "bf16") for cl in (False, True)])
        return table(["CPU class", "fp32, contiguous", "fp32, channels-last", "bf16, contiguous",
                      "bf16, channels-last"], rows)

    def sampling(*files):
        """Reference, cached and compiled samplers per machine (benchmarks/sampling.py)."""
        rows = []
        for name in files:
            data = R[stem_name(name)]
            where = machine_short(name, data)
            for prior, label in (("fashion32", "(a) fashion32 top 4x4 + bottom 8x8, class-conditional"),
                                 ("ffhq256", "(b) ffhq256 bottom prior, 64x64 codes")):
                r = data[prior]
                ref = f"{seconds(r['reference_seconds'])} s" + (" (extrapolated)" if r["extrapolated"] else "")
                same = {True: "yes", False: "no"}.get(r.get("same_codes"), "not compared")
                rows.append([where, label, "cached", ref, f"{seconds(r['cached_seconds'])} s", speedup(r["speedup"]),
                             f"**{r['forward_ratio']:.2f}**", same])
                c = r.get("compiled")
                if c:
                    if "same_samples" in c:
                        same = f"{c['same_samples']} of {r['batch']} samples equal the cached sampler's"
                    else:
                        same = "yes" if c["same_codes"] else "no"
                    rows.append([where, label, "compiled", ref, f"{seconds(c['seconds'])} s", speedup(c["speedup"]),
                                 f"**{c['forward_ratio']:.2f}**", same])
        return table(["machine", "priors (batch 16, random weights)", "sampler", "reference", "time", "speed-up",
                      "time / one forward pass", "same codes as the reference"], rows)

    def fid_bias(name):
        """FD-domain against the number of samples (benchmarks/fid_bias.py)."""
        d = R[stem_name(name)]
        rows = []
        for i, n in enumerate(d.n):
            low, high = d.fd_domain_ci[i]
            std = d.fd_domain_std_over_subsets[i]
            rows.append([f"{n:,}", f"{d.fd_domain[i]:.3f}", f"{low:.3f} - {high:.3f}",
                         f"{d.fd_domain_mean_over_subsets[i]:.3f}", "-" if std is None else f"{std:.3f}",
                         d.n_subsets[i]])
        return table(["n", "FD-domain (first n)", "95% bootstrap interval", "mean over disjoint subsets",
                      "std over subsets", "subsets"], rows)

    def acceptance(name):
        """Metrics per acceptance rate of rejection sampling, and the VQ-VAE's reconstructions as a bound."""
        d = R[stem_name(name)]
        cols = [("fd_domain", "FD-domain", ".3f"), ("kid", "KID", ".3f"),
                ("inception_score_domain", "IS (domain)", ".2f"), ("precision", "precision", ".3f"),
                ("recall", "recall", ".3f")]
        cols = [c for c in cols if c[0] in d]
        rows = [[str(rate)] + [format(d[key][i], f) for key, _, f in cols] for i, rate in enumerate(d.acceptance_rates)]
        if "reconstruction_fd_domain" in d:
            recon = {"fd_domain": d.reconstruction_fd_domain, "precision": d.get("reconstruction_precision"),
                     "recall": d.get("reconstruction_recall")}
            rows.append(["reconstructions of the real images"] +
                         [format(recon[key], f) if recon.get(key) is not None else "" for key, _, f in cols])
        return table(["acceptance rate"] + [c[1] for c in cols], rows)

    def rejection_networks():
        """How each rejection network's confidence tracks k-NN precision (benchmarks/rejection_analysis.py)."""
        d = R["rejection_analysis"]
        rows = []
        for name, net in d.networks.items():
            fifths = net.inside_by_confidence_fifth  # per class, least confident fifth first
            least = sum(c[0] for c in fifths) / len(fifths)
            most = sum(c[-1] for c in fifths) / len(fifths)
            better = sum(c[-1] > c[0] for c in fifths)
            rows.append([f"`{name}`"] + [f"{p:.3f}" for p in net.precision] +
                        [f"{net.mean_prob_of_kept[-1]:.3f}", f"{least:.3f}", f"{most:.3f}",
                         f"{better} of {len(fifths)}"])
        rates = [f"precision at {r}" for r in d.acceptance_rates]
        return table(["rejection network"] + rates + [f"mean probability kept at {d.acceptance_rates[-1]}",
                      "least confident fifth inside", "most confident fifth inside",
                      "classes where the most confident fifth is inside more often"], rows)

    def ablation():
        """One level against two on fashion32 (benchmarks/ablation.py)."""
        rows = []
        for name, v in R["ablation"].variants.items():
            grids = " + ".join(f"{g}x{g}" for g in v.grid_sizes)
            nll = " / ".join(f"{v.nll_bits[level]:.3f}" for level in v.levels)
            rows.append([f"`{name}` (`{v.preset}`{', ' + ', '.join(v.overrides) if v.overrides else ''})", grids,
                         v.quantizer, f"{v.recon_mse:.5f}", " + ".join(map(str, v.codes_used)), nll,
                         f"{v.nll_bits_per_image:.0f}", f"{v.fd_domain:.2f}", f"{v.precision:.3f}", f"{v.recall:.3f}",
                         f"{v.training_seconds:.0f} s"])
        return table(["variant", "codes", "quantizer", "recon MSE", "codes used", "prior NLL, bits/code",
                      "bits/image", "FD-domain", "precision", "recall", "training"], rows)

    def presets_profile():
        rows = []
        data = R["presets_profile"]
        for preset, stages in data.items():
            if not isinstance(stages, dict):
                continue
            for stage, measured in stages.items():
                per_sample = measured.get("memory_per_sample_mb")
                for key, m in measured.items():
                    if not key.startswith("batch_"):
                        continue
                    if "seconds_per_step" in m:
                        seconds = f"{m['seconds_per_step']:.2f} s/step"
                    else:
                        seconds = f"{m['seconds_per_image']:.2f} s/image"
                    extra = f"{per_sample:.0f}" if per_sample is not None and key == "batch_2" else ""
                    rows.append([preset, stage, m["batch_size"], seconds, f"{m['peak_rss_mb']:.0f}", extra,
                                 f"{m['params'] / 1e6:.1f}M"])
        return table(["preset", "stage", "batch", "time", "peak RSS (MB)", "memory per sample (MB)", "parameters"],
                     rows)

    def faults():
        rows = []
        for case in R["faults"].cases:
            test = case["test"].split("[")[0]
            params = f" (`{case['parameters']}`)".replace("|", "\\|") if case["parameters"] else ""
            rows.append([f"`{test}`{params}", case["case"].replace("|", "\\|"), case["outcome"]])
        return table(["test", "what it injects -> what must happen", "outcome"], rows)

    def onednn_affected():
        """The shapes the oneDNN AVX2 fault hits, one row per kernel, stride and thread count."""
        groups = {}
        for c in R["onednn_fault_sweep_avx2"].affected:
            g = groups.setdefault((c["kernel"], c["stride"], c["threads"]), {"in": set(), "how": set()})
            g["in"].add(c["in_ch"])
            g["how"].add(c["status"].split(" (")[0])
        rows = [[f"{k}x{k}", s, t, ", ".join(map(str, sorted(g["in"]))), ", ".join(sorted(g["how"]))]
                for (k, s, t), g in sorted(groups.items())]
        return table(["kernel", "stride", "threads", "input channels", "what happened"], rows)

    def generation_quality(name):
        """Sampling controls and rejection on one run (benchmarks/generation_quality.py)."""
        d = R[stem_name(name)]
        scale = lambda g: ", ".join(f"{x:g}" for x in g) if isinstance(g, list) else f"{g:g}"  # one, or per level
        timed = all("cost" in r for r in d.rows)  # sampling time against the baseline's (files made since it was added)
        rows = [[f"`{r['name']}`", f"{r['acceptance_rate']:g}", r["rejection"], scale(r["guidance"]),
                 f"{r['top_p']:g}" if r["top_p"] else "off", f"{r['ema']:g}" if r["ema"] else "off",
                 *([f"{r['cost']:.2f}x"] if timed else []),
                 f"{r['fd_domain']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}"] for r in d.rows]
        rows.append(["reconstructions (the VQ-VAE alone)", "", "", "", "", "", *([""] if timed else []),
                     f"{d.reconstruction_fd_domain:.2f}", f"{d.reconstruction.precision:.3f}",
                     f"{d.reconstruction.recall:.3f}"])
        return table(["row", "acceptance", "rejection", "guidance", "top-p", "weight average",
                      *(["sampling time"] if timed else []), "FD-domain", "precision", "recall"], rows)

    def realism_variants(name):
        """Rejection rules for data without labels (benchmarks/realism_variants.py)."""
        d = R[stem_name(name)]
        rows = []
        for r in d.rows:
            rates = r["rates"]
            rule = f"`{r['rule']}`" + (f" (seed {r['classifier_seed']})" if "classifier_seed" in r else "") + \
                (f" ({r['classifier_seeds']} seeds' logits averaged)" if "classifier_seeds" in r else "")
            rows.append([rule] + [f"{rates[k]['fd_domain']:.2f}" for k in ("1", "0.5", "0.25", "0.1")] +
                        [f"{rates[k]['precision']:.3f}" for k in ("1", "0.1")] + [f"{round(r['fd_drop_at_0.1'] * 100):d}%"] +
                        [f"{r['validation_accuracy']:.3f}" if "validation_accuracy" in r else ""])
        return table(["rule", "FD-domain at 1", "0.5", "0.25", "0.1", "precision at 1", "at 0.1",
                      "FD-domain drop at 0.1", "realism classifier's validation accuracy"], rows)

    def faces128_cost(name):
        """The faces128 preset's training steps timed on one machine (benchmarks/faces128_cost.py)."""
        d = R[stem_name(name)]
        rows = [[r["stage"], r["mixed_precision"].replace("no", "fp32"), f"{r['seconds_per_step']:.2f} s", f"{r['steps']:,}",
                 f"{r['projected_seconds'] / 60:.0f}"] for r in d.rows]
        return table(["stage", "precision", "seconds per step", "steps", "projected minutes"], rows)

    def smeared(name):
        """Smeared faces counted by eye in generation-quality grids."""
        d = R[stem_name(name)]
        return "\n".join(f"| `{r['name']}` | {r['first_64']} | {r['first_32']} |" for r in d.rows)

    tables = [demo_time, step_probe, sampling, fid_bias, acceptance, rejection_networks, ablation, presets_profile,
              faults, onednn_affected, generation_quality, realism_variants, faces128_cost,
              smeared]
    return {f"{f.__name__}_table": f for f in tables}


# rendering

class Page:
    """The namespace of one page: the results, the tables, and source(); it notes which files are read."""

    def __init__(self, R: dict[str, Record], name: str):
        self.name, self.read, self.sourced = name, set(), set()
        self.names = {"source": self.source, **make_tables(_Watch(R, self.read)),
                      "min": min, "max": max, "abs": abs, "len": len, "sum": sum, "round": round, "sorted": sorted}
        self.results = _Watch(R, self.read)

    def source(self, stem: str) -> str:
        data = self.results[stem_name(stem)]
        self.sourced.add(stem_name(stem))
        return (f"`benchmarks/results/{stem}.json`, written by {command_text(stem, data)} "
                f"on {machine_text(stem, data)}")

    def evaluate(self, expression: str) -> str:
        text, _, fmt = expression.partition("|")
        fmt = fmt.strip() or None
        try:
            value = eval(text.strip(), {"__builtins__": {}}, _Names(self.names, self.results))
            return render_value(value, fmt)
        except Exception as e:
            raise SystemExit(f"{self.name}: {{{{{expression}}}}}: {type(e).__name__}: {e}") from None

    def finish(self) -> None:
        unsourced = self.read - self.sourced
        if unsourced:
            names = ", ".join(f'source("{self.results.stem(n)}")' for n in sorted(unsourced))
            raise SystemExit(f"{self.name}: reads {', '.join(sorted(unsourced))} without saying where it came "
                             f"from: add {names}")


class _Watch(dict):
    """The results, noting each file a page reads."""

    def __init__(self, R, read: set):
        super().__init__(R)
        self._read = read

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        self._read.add(key)
        return value

    def stem(self, key: str) -> str:
        """The file name of a result, less .json (`fid_bias-demo` for `fid_bias_demo`)."""
        return dict.__getitem__(self, key)._where.removesuffix(".json")


class _Names(dict):
    """What a placeholder's expression sees: the tables and helpers, then the results files."""

    def __init__(self, names, results):
        super().__init__(names)
        self._results = results

    def __missing__(self, key):
        if key in self._results:
            return self._results[key]
        raise NameError(f"{key!r} is neither a results file ({', '.join(sorted(self._results))}) nor a table")


def render_template(R, name: str, text: str) -> str:
    page = Page(R, name)
    out = PLACEHOLDER.sub(lambda m: page.evaluate(m.group(1)), text)
    page.finish()
    return out


def render_readme(R, text: str) -> str:
    page = Page(R, "README.md")

    def part(m):
        value = page.evaluate(m.group(1))
        if "\n" in value:
            value = f"\n{value}\n"
        return f"<!-- generated: {m.group(1)} -->{value}<!-- /generated -->"

    out = README_PART.sub(part, text)
    page.finish()
    return out


def header(template: Path) -> str:
    return (f"<!-- Generated by docs/generate.py from docs/templates/{template.name} and benchmarks/results/*.json: "
            f"edit the template and run `python docs/generate.py`. -->\n")


def pages() -> dict[Path, str]:
    """Every generated file and what it should hold."""
    R = load_results()
    out = {}
    for template in sorted(TEMPLATES.glob("*.md")):
        out[ROOT / "docs" / template.name] = header(template) + render_template(
            R, f"docs/templates/{template.name}", template.read_text())
    out[README] = render_readme(R, README.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is out of date")
    args = ap.parse_args(argv)
    stale = []
    made = pages()
    # a generated page whose template is gone (a page written by hand, without numbers, is left alone)
    orphans = sorted(p for p in (ROOT / "docs").glob("*.md")
                     if p not in made and p.read_text().startswith("<!-- Generated by docs/generate.py"))
    if orphans:
        print(f"no template for {', '.join(str(p.relative_to(ROOT)) for p in orphans)}: restore it in "
              f"docs/templates/ or delete the page", file=sys.stderr)
        return 1
    for path, text in made.items():
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"out of date (run `python docs/generate.py`): {', '.join(map(str, stale))}", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {', '.join(map(str, stale))}" if stale else "every page is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
