"""Writing a run directory: one writer at a time (pipelines/runlock.py RunLock: a second writer is
refused at once, naming the holder; a killed holder leaves no stale lock; readers never take it), and
config.json saved only with values a stage ran with (pipelines/cli.py)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.artifacts import RunDir, RunDirBusy, lock_holder, save_training_state
from pipelines.cli import main

from conftest import TINY_PRIORS, folder_overrides, make_image_folder

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[1]
HOLD = ("import sys; from pipelines.artifacts import RunDir; "
        "lock = RunDir(sys.argv[1]).lock('vqvae2 train-vqvae (held by the test)').acquire(); "
        "print('held', flush=True); sys.stdin.read()")


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock")
    run = root / "run"
    argv = ["run", "--preset", "demo", "--run-dir", str(run), "--until", "priors"]
    for o in [*folder_overrides(make_image_folder(root / "images")), *TINY_PRIORS]:
        argv += ["--set", o]
    assert main(argv) == 0
    return run


def _holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_changes_nothing(tmp_path, capsys):
    """A second command on a run directory another process writes -> refused at once, one line naming the holder's PID and command; config.json untouched"""
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        before = sorted(p.name for p in run.iterdir())
        for argv in (["train-vqvae", "--preset", "demo"], ["sample", "--seed", "2"], ["run", "--preset", "demo"]):
            assert main([argv[0], "--run-dir", str(run), *argv[1:]]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1, err
            assert f"PID {holder.pid}" in err and "train-vqvae (held by the test)" in err and "being written" in err
        assert sorted(p.name for p in run.iterdir()) == before == [".lock"]  # no config.json was written
        # readers do not take the lock: status works and names the writer
        assert main(["status", "--run-dir", str(run)]) == 0
        assert f"being written now by PID {holder.pid}" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """SIGKILL of the process holding the run-directory lock -> the OS releases it: the next writer goes ahead"""
    run = tmp_path / "run"
    holder = _holder(run)
    with pytest.raises(RunDirBusy, match=f"PID {holder.pid}"):
        RunDir(run).lock("second").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_holder(run) is None  # the file still names the dead PID, which is not taken for a writer
    with RunDir(run).lock("third"):
        assert lock_holder(run)["pid"] == os.getpid() and lock_holder(run)["command"] == "third"
    assert lock_holder(run) is None


def test_the_lock_refuses_a_run_directory_that_is_a_file(tmp_path, capsys):
    """--run-dir naming a file -> one line saying it is a file, no traceback"""
    path = tmp_path / "run"
    path.write_text("not a directory")
    assert main(["train-vqvae", "--run-dir", str(path), "--preset", "demo"]) == 2
    assert capsys.readouterr().err.strip() == f"vqvae2 train-vqvae: error: run directory {path} is a file, not a directory"


def test_concurrent_samplers_the_first_gets_exactly_a_lone_runs_samples(sampled_run, tmp_path, capsys):
    """Two `vqvae2 sample` on one run (seeds 1 and 2) -> the second is refused while the first runs; the first's samples.npz equals a lone run's, array for array"""
    alone = tmp_path / "alone"
    shutil.copytree(sampled_run, alone)
    assert main(["sample", "--run-dir", str(alone), "--seed", "1", "--n", "64"]) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "sample", "--run-dir", str(sampled_run),
                              "--seed", "1", "--n", "64"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while (lock_holder(sampled_run) or {}).get("pid") != first.pid:
        assert first.poll() is None and time.time() - t0 < 120, first.communicate()[0][-2000:]
        time.sleep(0.002)
    code = main(["sample", "--run-dir", str(sampled_run), "--seed", "2", "--n", "64"])
    err = capsys.readouterr().err
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out[-2000:]
    assert code == 2 and f"PID {first.pid}" in err, err
    got = np.load(RunDir(sampled_run).samples / "samples.npz")
    ref = np.load(RunDir(alone).samples / "samples.npz")
    assert sorted(got.files) == sorted(ref.files)
    for key in ref.files:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    meta, lone = (json.loads((RunDir(r).samples / "metrics.json").read_text()) for r in (sampled_run, alone))
    assert meta.pop("outputs") == [str(RunDir(sampled_run).samples / "samples.npz")]
    assert meta["seed"] == 1 and meta == {k: v for k, v in lone.items() if k != "outputs"}


def test_training_states_use_unique_temporary_names(tmp_path):
    """A state left half-written by a killed writer (state.tmp*) -> removed by the next save, which writes under a name of its own"""
    import torch
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    (tmp_path / "state.tmp").mkdir()
    (tmp_path / "state.tmp-abc").mkdir()
    save_training_state(tmp_path / "state", model, opt, {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


@pytest.mark.parametrize("flags, message", [
    (["--top-k", "100000"], "top_k must be in [1, 16]"),
    (["--class", "6"], "--class 6 is outside the model's classes [0, 1]"),
    (["--class", "-5"], "sample.class_label must be -1 (all classes) or a class index >= 0, got -5"),
    (["--temperature", "inf"], "sample.temperature must be finite and > 0"),
    (["--seed", "123456789012345678901"], "sample.seed must be an integer in [0, 9223343313950]"),
    (["--seed", "9223343313951"], "sample.seed must be an integer in [0, 9223343313950], got 9223343313951"),
])
def test_a_refused_sample_value_is_not_saved(sampled_run, capsys, flags, message):
    """`vqvae2 sample` with a value it refuses (--top-k 100000, --class 6, --class -5, --temperature inf, a 20-digit --seed, a seed whose
    batch seeds would overflow 64 bits) -> one line naming the value; config.json unchanged, the next sample works"""
    config = RunDir(sampled_run).config
    before = config.read_bytes()
    assert main(["sample", "--run-dir", str(sampled_run), *flags]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("vqvae2 sample: error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert config.read_bytes() == before
    assert main(["sample", "--run-dir", str(sampled_run), "--n", "3"]) == 0
    assert json.loads(config.read_text())["sample"]["n"] == 3  # a value that ran is saved


def test_errors_name_where_the_bad_value_came_from(sampled_run, tmp_path, capsys):
    """A bad --set on a run -> the error says "command line"; a bad value inside config.json -> the error names the file"""
    assert main(["sample", "--run-dir", str(sampled_run), "--set", "sample.batch_size=0"]) == 2
    assert capsys.readouterr().err.strip().startswith("vqvae2 sample: error: command line: sample.batch_size must be >= 1")
    broken = tmp_path / "broken"
    shutil.copytree(sampled_run, broken)
    data = json.loads((broken / "config.json").read_text())
    data["sample"]["batch_size"] = 0
    (broken / "config.json").write_text(json.dumps(data))
    assert main(["sample", "--run-dir", str(broken)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"vqvae2 sample: error: {broken / 'config.json'}: sample.batch_size")


def test_an_unchanged_configuration_is_not_rewritten(sampled_run):
    """`vqvae2 run` on a finished run with the same configuration -> config.json is not rewritten (a finished run stays usable read-only)"""
    config = RunDir(sampled_run).config
    stamp = (config.stat().st_ino, config.stat().st_mtime_ns)
    assert main(["run", "--run-dir", str(sampled_run), "--until", "priors"]) == 0
    assert (config.stat().st_ino, config.stat().st_mtime_ns) == stamp


def test_a_finished_run_in_a_read_only_directory_is_usable(sampled_run, monkeypatch, capsys):
    """`vqvae2 run` on a finished run whose directory cannot be written (read-only mount) -> works, writes nothing; a command that must write says so in one line"""
    import errno as errno_mod

    import pipelines.artifacts as artifacts
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno_mod.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)
    monkeypatch.setattr(artifacts.os, "open", read_only)  # the lock file (tests run as root: chmod would not hold)
    assert main(["run", "--run-dir", str(sampled_run), "--until", "priors"]) == 0
    import pipelines.cli as cli_module
    monkeypatch.setattr(cli_module, "write_json", lambda path, data: (_ for _ in ()).throw(
        PermissionError(errno_mod.EACCES, "Permission denied", str(path))))
    assert main(["run", "--run-dir", str(sampled_run), "--until", "priors", "--set", "sample.n=5"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "config.json" in err and "Traceback" not in err


def test_flag_values_reach_the_configuration_unchanged(tmp_path):
    """A flag value with quotes, backslashes or non-ASCII characters (a --reference-stats path) -> the configuration
    holds exactly that value: flags set configuration fields directly, with no text to parse in between"""
    from pipelines.cli import _flag_fields, build_parser
    from pipelines.config import resolve_config
    for path in [tmp_path / "it's \"odd\"\\dir" / "ref.npz", tmp_path / "ünï cödé" / "r.npz", tmp_path / "[1, 2]"]:
        args = build_parser().parse_args(["evaluate", "--run-dir", "R", "--reference-stats", str(path)])
        assert resolve_config("demo", fields=_flag_fields(args)).eval.reference_stats == str(path)
    args = build_parser().parse_args(["sample", "--run-dir", "R", "--temperature", "0.7", "--sampler", "reference"])
    cfg = resolve_config("demo", fields=_flag_fields(args))
    assert cfg.sample.temperature == 0.7 and cfg.sample.sampler == "reference" and cfg.sample.n == resolve_config("demo").sample.n


def test_forked_children_do_not_keep_the_lock(tmp_path):
    """A SIGKILLed writer whose forked children (DataLoader workers) live on -> its lock is released all the same"""
    code = ("import os, sys, time; from pipelines.artifacts import RunDir; "
            "lock = RunDir(sys.argv[1]).lock('parent').acquire(); pid = os.fork()\n"
            "if pid == 0:\n    time.sleep(60); os._exit(0)\n"
            "print(pid, flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    child = int(proc.stdout.readline())
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)  # the child is still alive
        with RunDir(tmp_path / "run").lock("next"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_the_lock_records_the_holders_own_command(tmp_path):
    """While a command holds the lock, the holder recorded is that command, as its user typed it"""
    from pipelines import cli
    seen = []
    original = cli._write
    cli._write = lambda args, run, *config: seen.append(lock_holder(run.root)) or 0
    try:
        assert main(["train-vqvae", "--run-dir", str(tmp_path / "run"), "--preset", "demo"]) == 0
    finally:
        cli._write = original
    assert seen[0]["pid"] == os.getpid()
    assert seen[0]["command"] == f"vqvae2 train-vqvae --run-dir {tmp_path / 'run'} --preset demo"


def test_the_console_script_refuses_a_second_writer_before_importing_torch(tmp_path, capsys):
    """`vqvae2 sample` (the console script) on a run another process writes -> refused with the full command's one line, without importing torch; `status` and `--help` are not refused"""
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        script = ("import sys; from pipelines.command import main; code = main(sys.argv[1:]); "
                  "print(code, 'torch' in sys.modules)")
        probe = subprocess.run([sys.executable, "-c", script, "sample", "--run-dir", str(run), "--n", "4"], cwd=REPO,
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert probe.stdout.split() == ["2", "False"], probe.stdout + probe.stderr
        assert main(["sample", "--run-dir", str(run), "--n", "4"]) == 2
        assert probe.stderr.strip() == capsys.readouterr().err.strip() and f"PID {holder.pid}" in probe.stderr
        from pipelines.command import busy_refusal
        assert busy_refusal(["sample", f"--run-dir={run}"]) == probe.stderr.strip()
        assert busy_refusal(["status", "--run-dir", str(run)]) is None
        assert busy_refusal(["sample", "--run-dir", str(run), "--help"]) is None
    finally:
        holder.communicate("")
    assert busy_refusal(["sample", "--run-dir", str(run)]) is None  # released with its holder
