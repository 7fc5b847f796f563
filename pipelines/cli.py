"""The `vqvae2` command. Every subcommand also runs as `accelerate launch -m pipelines.cli ...`."""
from __future__ import annotations

import argparse
import errno
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from .allocator import keep_freed_memory
from .artifacts import RunDir, RunDirBusy, read_json, write_json
from .train import TrainingError
from .config import ConfigNote, PipelineConfig, config_from_dict, preset_names, resolve_config


_default_showwarning = warnings.showwarning


def load_run_config(run: RunDir, preset: str | None, overrides: list[str], write: bool = True,
                    fields: dict | None = None) -> PipelineConfig:
    """The run's configuration: the preset (+ overrides) when given, else RUN/config.json (+ overrides);
    `fields` holds the values of command-line flags ({"sample.n": 8}), set as they are.
    With write, the resolved configuration is saved to RUN/config.json when it differs from what is there.
    An error names where the bad value came from: the preset, RUN/config.json or the command line."""
    if preset:
        cfg = resolve_config(preset, overrides, fields)
    elif run.config.is_file():
        saved = read_json(run.config)
        try:
            config_from_dict(saved, [], where=str(run.config))
        except ValueError as e:
            raise ValueError(f"{run.config}: {e}") from e
        try:
            cfg = config_from_dict(saved, overrides, where=str(run.config), fields=fields)
        except ValueError as e:
            raise ValueError(f"command line: {e}") from e
    else:
        raise ValueError(f"{run.config} does not exist: pass --preset (one of {preset_names()}) "
                         f"or run `vqvae2 train-vqvae --preset ... --run-dir {run.root}` first")
    if write:
        save_run_config(run, cfg)
    return cfg


def save_run_config(run: RunDir, cfg: PipelineConfig) -> None:
    """RUN/config.json := cfg, by the main process, and only when it changes (a finished run in a
    read-only directory stays usable)."""
    if not _is_main_process():
        return
    data = cfg.to_dict()
    try:
        if run.config.is_file() and read_json(run.config) == json.loads(json.dumps(data, default=str)):
            return
    except ValueError:
        pass  # a damaged config.json is replaced
    write_json(run.config, data)


def _is_main_process() -> bool:
    from accelerate import PartialState
    return PartialState().is_main_process


def _add_common(p: argparse.ArgumentParser, preset: bool = True) -> None:
    p.add_argument("--run-dir", required=True, type=Path, help="the run directory (created if missing)")
    if preset:
        p.add_argument("--preset", help=f"a preset name ({', '.join(preset_names())}) or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train_vqvae.steps=200 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqvae2", description="VQ-VAE-2 pipeline: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_stage_commands(sub)
    _add_generation_commands(sub)
    _add_tool_commands(sub)
    return parser


def _add_stage_commands(sub) -> None:
    """run, and the command of each stage."""
    p = sub.add_parser("run", help="run every stage, skipping the ones already done for this config")
    _add_common(p)
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--until", help="stop after this stage (vqvae, codes, priors, samples, classifier, eval)")

    p = sub.add_parser("train-vqvae", help="stage 1: train the hierarchical VQ-VAE")
    _add_common(p)
    p.add_argument("--force", action="store_true", help="start again, discarding vqvae/ (state included)")

    p = sub.add_parser("extract-codes", help="encode the train and validation splits into codes/")
    _add_common(p, preset=False)

    p = sub.add_parser("train-prior", help="stage 2: train the PixelSNAIL prior of one level")
    _add_common(p, preset=False)
    p.add_argument("--level", required=True, help="top, bottom, middle or levelN")
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("sample", help="sample images top-down from the priors")
    _add_common(p, preset=False)
    p.add_argument("--n", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int, help="sample among the k most probable codes (0 = off)")
    p.add_argument("--top-p", type=float, help="nucleus sampling: among the most probable codes whose "
                   "probabilities reach p in sum (0 = off)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale for every class-conditional level "
                   "(1 = none; priors trained with prior.<level>.label_dropout > 0)")
    p.add_argument("--class", dest="class_label", type=int, help="class index for class-conditional priors")
    p.add_argument("--seed", type=int)
    p.add_argument("--sampler", choices=["cached", "compiled", "reference"])
    p.add_argument("--format", choices=["npz", "png"],
                   help="npz: samples/samples.npz (arr_0 uint8 N x H x W x 3); png: samples/png/*.png")
    p.add_argument("--png-dir", type=Path, help="also write one PNG per image here")

    p = sub.add_parser("train-classifier", help="train the domain classifier (rejection sampling, FD-domain)")
    _add_common(p, preset=False)
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("evaluate", help="rejection sampling + FD/KID/IS/precision-recall report")
    _add_common(p, preset=False)
    p.add_argument("--feature-extractor", choices=["domain", "inception"])
    p.add_argument("--inception-weights", type=Path)
    p.add_argument("--n-samples", type=int)
    p.add_argument("--reference-stats", type=Path, help="an .npz from `vqvae2 fid-stats`, used instead of "
                   "the real images' features (refused when made with another extractor or weights)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale of the candidates (sample.guidance)")


def _add_generation_commands(sub) -> None:
    """vary (sample is a stage)."""
    p = sub.add_parser("vary", help="keep an image's codes at one level and above, resample the levels below")
    _add_common(p, preset=False)
    p.add_argument("--image", type=Path, required=True, help="an image file (resized and cropped to the model's size)")
    p.add_argument("--keep", required=True, help="keep this level and the ones above (top, middle, ...)")
    p.add_argument("--n", type=int, default=8, help="number of variations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, help="one for every level (default: the run's sample.temperature)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the run's "
                   "sample.guidance)")
    p.add_argument("--class", dest="class_label", type=int, help="class for class-conditional priors "
                   "(default: the run's classifier's prediction)")
    p.add_argument("--out", type=Path, help="the grid to write (default RUN/vary/<image>-keep-<level>.png)")


def _add_tool_commands(sub) -> None:
    """Commands around a run: data preparation, reference statistics, export, status."""
    p = sub.add_parser("prepare-data", help="decode an image folder once into the prepared-data cache")
    p.add_argument("--run-dir", type=Path, help="a run (its configuration)")
    p.add_argument("--preset", help=f"a preset name ({', '.join(preset_names())}) or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("fid-stats", help="reference statistics (mu, sigma) of a data split or an image folder")
    p.add_argument("--run-dir", type=Path, help="a run (its config; its classifier for the domain extractor)")
    p.add_argument("--preset", help=f"a preset name ({', '.join(preset_names())}) or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--folder", type=Path, help="every image in this folder instead of a split of the data")
    p.add_argument("--n", type=int, default=0, help="the first N images only (0 = all)")
    p.add_argument("--feature-extractor", choices=["domain", "inception"])
    p.add_argument("--inception-weights", type=Path)
    p.add_argument("--no-features", action="store_true",
                   help="write mu and sigma only (KID and precision/recall then cannot use the file)")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write")

    p = sub.add_parser("export", help="write a finished run as one folder for the Hugging Face Hub (components, model "
                       "card), loadable by vqvae2.Pipeline.from_pretrained", description="Write a finished run as one "
                       "folder: model_index.json, a folder per component (VQ-VAE, priors, classifiers; model.json + "
                       "model.safetensors), samples.png and a README.md model card with the run's measured numbers. "
                       "Reads the run only. With --push-to-hub the folder is then uploaded (needs a Hub token: "
                       "`huggingface-cli login` or HF_TOKEN).")
    p.add_argument("--run-dir", required=True, type=Path, help="the finished run (read only)")
    p.add_argument("--out", required=True, type=Path, help="the folder to write (new or empty; an earlier export "
                   "with --force)")
    p.add_argument("--license", default="unknown", help="the model card's license, a Hub license id such as mit, "
                   "apache-2.0, cc-by-4.0 (default: unknown)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub model repository "
                   "(owner/name), created if missing")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")

    p = sub.add_parser("status", help="every stage of a run: done, in progress, not started or stale; the next command")
    p.add_argument("--run-dir", required=True, type=Path, help="the run directory (read only)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def init_processes() -> None:
    """Sets up accelerate's process state once, before anything asks for it. Without a GPU the
    processes of `accelerate launch --multi_gpu` (torchrun) / `torchrun` join a gloo group on CPU."""
    import torch
    from accelerate import PartialState
    PartialState(cpu=not torch.cuda.is_available())


def _show_note(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ConfigNote):
        print(f"vqvae2: note: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the lock records as the holder's command
    warnings.showwarning = _show_note
    keep_freed_memory()  # before the first large tensor: see pipelines/allocator.py
    init_processes()
    run = RunDir(args.run_dir) if args.run_dir is not None else None
    code = 1  # stays 1 if an unexpected exception escapes
    try:
        code = _dispatch(args, run)
    except KeyboardInterrupt as e:
        print(f"vqvae2: interrupted: {e}", file=sys.stderr)
        code = 130
    except (ValueError, FileNotFoundError, NotADirectoryError, TrainingError, RunDirBusy) as e:
        print(f"vqvae2 {args.command}: error: {e}", file=sys.stderr)
        code = 2
    except PermissionError as e:
        print(f"vqvae2 {args.command}: error: cannot write {e.filename or 'a file'}: permission denied (a read-only "
              f"run directory can be read, e.g. by `vqvae2 status`, but not written)", file=sys.stderr)
        code = 2
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"vqvae2 {args.command}: error: the disk is full (writing {e.filename or 'a file'}); free space and run "
              f"the command again: it resumes from the last complete file", file=sys.stderr)
        code = 2
    finally:
        end_processes(orderly=code == 0)
    return code


def end_processes(orderly: bool) -> None:
    """Ends the process group of a launched run (no-op in one process). Left to interpreter shutdown,
    gloo's worker threads can abort a rank with SIGABRT ("terminate called without an active
    exception"), which the launcher reports as a failed run. After a clean end the ranks first meet,
    so none tears the group down under another; after an error they do not wait for each other."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    if orderly:
        dist.barrier()
    dist.destroy_process_group()


def _dispatch(args, run: RunDir) -> int:
    if args.command == "status":
        return _status(args, run)
    if args.command == "export":  # reads the run only: no lock, no configuration written
        return _export(args, run)
    overrides, fields = list(args.overrides), _flag_fields(args)
    if args.command == "fid-stats":
        return _fid_stats(args, run, overrides, fields)
    if args.command == "prepare-data":
        return _prepare_data(args, run, overrides)
    if _world_size() == 1:  # a run being written is the first thing to say (launched ranks agree in _one_writer)
        run.lock(args.command).refuse_if_held()
    cfg = load_run_config(run, getattr(args, "preset", None), overrides, write=False, fields=fields)  # bad values: refused,
    if args.command == "run":  # nothing made; nor for a configuration that cannot run to its end
        from .preflight import preflight
        preflight(cfg, args.until)
    with _one_writer(run, args.argv):
        return _write(args, run, overrides, fields)


@contextmanager
def _one_writer(run: RunDir, argv: list[str]):
    """The run-directory lock for the whole command, taken by the main process; when it is refused,
    every process of a launched run stops alike."""
    lock, refusal = None, None
    if _is_main_process():
        try:
            lock = run.lock(f"vqvae2 {' '.join(argv)}"[:200]).acquire()
        except (RunDirBusy, ValueError) as e:
            refusal = e
    if _others_must_stop(refusal is not None):
        raise refusal or RunDirBusy(f"{run.root}: the main process could not lock the run directory")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _world_size() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _others_must_stop(failed: bool) -> bool:
    """Whether the main process failed, as every process of a launched run sees it (one broadcast)."""
    import torch
    import torch.distributed as dist
    if _world_size() == 1:
        return failed
    flag = torch.tensor([int(failed)])
    dist.broadcast(flag, src=0)
    return bool(flag.item())


# commands whose values are one-offs: saved to config.json only once the stage has run with them
# (sample, evaluate), or never (vary), so a value they refuse never sticks to the run
SAVED_AFTER = ("sample", "evaluate")
NEVER_SAVED = ("vary",)


def _write(args, run: RunDir, overrides: list[str], fields: dict) -> int:
    cfg = load_run_config(run, getattr(args, "preset", None), overrides, fields=fields,
                          write=args.command not in SAVED_AFTER + NEVER_SAVED)
    code = _run_command(args, run, cfg)
    if args.command in SAVED_AFTER:
        save_run_config(run, cfg)
    return code


# the commands that make one stage (pipelines/stages.py)
STAGE_COMMANDS = ("train-vqvae", "extract-codes", "train-prior", "sample", "train-classifier", "evaluate")


def _run_command(args, run: RunDir, cfg: PipelineConfig) -> int:
    from . import run as pipeline
    from .stages import labelled_data, pipeline_stages

    if args.command == "run":
        pipeline.run_all(cfg, run, force=args.force, until=args.until)
    elif args.command in STAGE_COMMANDS:
        if args.command == "train-prior" and args.level not in cfg.vqvae.levels:
            raise ValueError(f"--level {args.level!r}: the VQ-VAE's levels are {cfg.vqvae.levels}")
        verb = f"train-prior --level {args.level}" if args.command == "train-prior" else args.command
        stage = next(s for s in pipeline_stages(cfg, labelled_data(cfg), evaluation=True, every=True)
                     if s.command == verb)
        options = {"png_dir": args.png_dir} if args.command == "sample" else {}
        pipeline.make_stage(cfg, run, stage, getattr(args, "force", False) or stage.redone_by_command, **options)
    elif args.command == "vary":
        from .vary import vary
        temperature = cfg.sample.temperature if args.temperature is None else args.temperature
        guidance = cfg.sample.guidance if args.guidance is None else args.guidance
        info = vary(cfg, run, args.image, args.keep, n=args.n, seed=args.seed, temperature=temperature, guidance=guidance,
                    class_label=args.class_label, out=args.out)
        print(f"[vary] kept {info['kept']}, resampled {info['resampled']} ({info['label']}) -> {info['grid']}")
    return 0


def _status(args, run: RunDir) -> int:
    import json

    from .status import render_status, run_status
    if _is_main_process():
        status = run_status(run)
        print(json.dumps(status, indent=2) if args.json else render_status(status), end="\n" if args.json else "")
    return 0


def _export(args, run: RunDir) -> int:
    from .export import export, push_to_hub
    if not _is_main_process():
        return 0
    cfg = load_run_config(run, None, [], write=False)
    info = export(cfg, run, args.out, license=args.license, repo_id=args.push_to_hub, force=args.force)
    print(f"[export] {', '.join(info['components'])} -> {info['out']} (model card: "
          f"{'measured numbers from eval/report.json' if info['evaluated'] else 'not evaluated'})")
    if args.push_to_hub:
        print(f"[export] uploaded to {push_to_hub(args.out, args.push_to_hub, private=args.private)}")
    return 0


# flag -> configuration field, per command: the flag's value (already typed by argparse) is set as it is
FLAG_FIELDS = {
    "sample": {"n": "sample.n", "batch_size": "sample.batch_size", "temperature": "sample.temperature",
               "top_k": "sample.top_k", "top_p": "sample.top_p", "guidance": "sample.guidance", "class_label": "sample.class_label", "seed": "sample.seed",
               "sampler": "sample.sampler", "format": "sample.format"},
    "evaluate": {"feature_extractor": "eval.feature_extractor", "inception_weights": "eval.inception_weights",
                 "n_samples": "eval.n_samples", "reference_stats": "eval.reference_stats",
                 "guidance": "sample.guidance"},
    "fid-stats": {"feature_extractor": "eval.feature_extractor", "inception_weights": "eval.inception_weights"},
}


def _flag_fields(args) -> dict:
    """The configuration fields the command's flags set (flags not given set nothing); paths as text."""
    out = {}
    for flag, key in FLAG_FIELDS.get(args.command, {}).items():
        value = getattr(args, flag)
        if value is not None and value != "":
            out[key] = str(value) if isinstance(value, Path) else value
    return out


def _config_without_run(args, run: RunDir | None, overrides: list[str], command: str,
                        fields: dict | None = None) -> PipelineConfig:
    if run is None and not args.preset:
        raise ValueError(f"{command} needs --preset (the data and its size) or --run-dir (a run's configuration)")
    if run is not None:
        return load_run_config(run, args.preset, overrides, write=False, fields=fields)  # reads, changes nothing
    return resolve_config(args.preset, overrides, fields)


def _prepare_data(args, run: RunDir | None, overrides: list[str]) -> int:
    from .datasets import build_datasets
    cfg = _config_without_run(args, run, overrides, "prepare-data", {"data.prepare": True})
    if cfg.data.name != "folder":
        raise ValueError(f"prepare-data prepares image folders (data.name='folder'); {cfg.data.name!r} needs no "
                         f"preparation")
    if not _is_main_process():
        return 0
    train, val = build_datasets(cfg.data)
    print(f"[prepare-data] {len(train)} train + {len(val)} val images of {cfg.data.root} at {cfg.data.size} px "
          f"-> {train.cache.path}")
    return 0


def _fid_stats(args, run: RunDir | None, overrides: list[str], fields: dict) -> int:
    from .evaluate import fid_stats
    cfg = _config_without_run(args, run, overrides, "fid-stats", fields)
    if not _is_main_process():
        return 0
    stats = fid_stats(cfg, run, args.out, split=args.split, folder=args.folder, n=args.n,
                      keep_features=not args.no_features)
    print(f"[fid-stats] {stats.n} images ({stats.source}) -> {args.out} (extractor {stats.extractor}, "
          f"weights sha256 {stats.weights_sha256[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
