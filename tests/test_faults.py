"""Fault injection over a whole finished run: every kind of file the run directory holds, truncated,
emptied or replaced by a file of another type, then `status`, `run` and `sample` on it. Each either
works or stops with one line naming the file; when `run` works, the run is finished again with exactly
the weights and arrays of the undamaged run (a damaged stage is redone, never trusted)."""
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from pipelines.artifacts import RunDir
from pipelines.cli import main
from pipelines.status import DONE, run_status

from conftest import finished_run


pytestmark = pytest.mark.reliability

ARRAYS = (".safetensors", ".npy", ".npz")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("faults"))


def _kinds(run):
    """One file per kind: (stage directory, inside a training state or not, suffix)."""
    kinds = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        rel = path.relative_to(run)
        kinds.setdefault((rel.parts[0] if len(rel.parts) > 1 else "", "state" in rel.parts, path.suffix or path.name),
                         rel)
    return list(kinds.values())


def _damage(path, mode):
    data = path.read_bytes()
    if mode == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "empty":
        path.write_bytes(b"")
    else:  # another type of file under this name
        path.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'" if path.suffix in (".json", ".jsonl")
                         else b'{"config_hash": "0000", "step": 3}')


def _arrays(path):
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _one_line_or_ok(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, (argv, err[-2000:])
    if code != 0:
        lines = [line for line in err.splitlines() if line.startswith(f"vqvae2 {argv[0]}: error:")]
        assert code == 2 and len(lines) == 1, (argv, code, err[-2000:])
        return code, lines[0]
    return code, ""


@pytest.mark.parametrize("mode", ["truncated", "empty", "wrong-type"])
def test_every_kind_of_run_file_damaged_is_redone_or_named(finished, tmp_path, capsys, mode):
    """Every kind of file of a finished run (weights, training states, codes, samples, evaluation chunks, metrics, pictures, config, lock) truncated / emptied / of another type -> `status` exits 0; `run` redoes what is damaged and ends with the undamaged run's exact weights and arrays, or (a damaged config.json) stops with one line naming it; `sample` works or names the file"""
    originals = {p.relative_to(finished): _arrays(p) for p in finished.rglob("*")
                 if p.suffix in ARRAYS and "state" not in p.relative_to(finished).parts}
    kinds = _kinds(finished)
    assert len(kinds) >= 25, kinds  # weights, states, codes, samples, chunks, metrics, pictures of every stage
    for rel in kinds:
        case = tmp_path / "case"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(finished, case)
        _damage(case / rel, mode)
        assert main(["status", "--run-dir", str(case)]) == 0, rel
        capsys.readouterr()
        code, line = _one_line_or_ok(capsys, ["run", "--run-dir", str(case)])
        if rel.name == "config.json":
            assert code == 2 and str(case / rel) in line, (rel, line)
            continue
        assert code == 0, (rel, line)
        states = {s["stage"]: s["state"] for s in run_status(RunDir(case))["stages"]}
        assert set(states.values()) == {DONE}, (rel, states)
        for name, arrays in originals.items():
            again = _arrays(case / name)
            # samples redone after the classifier exists also carry its scores; every original array is equal
            assert set(again) - set(arrays) <= ({"classifier_probs"} if name.name == "samples.npz" else set()), \
                (rel, name, set(again) - set(arrays))
            assert set(arrays) <= set(again) and all(np.array_equal(again[k], arrays[k]) for k in arrays), \
                (rel, name)
        code, line = _one_line_or_ok(capsys, ["sample", "--run-dir", str(case), "--n", "2", "--seed", "3"])
        assert code == 0, (rel, line)
