"""benchmarks/machine.py: what every speed benchmark records about the machine it ran on."""
import importlib.util
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "machine.py"


@pytest.fixture(scope="module")
def machine():
    spec = importlib.util.spec_from_file_location("bench_machine", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_describe_names_the_cpu_and_what_torch_runs_on(machine):
    d = machine.describe(calibrated=False)
    assert "calibration" not in d
    assert isinstance(d["cpu"], str) and d["cpu"]
    assert d["torch_threads"] == torch.get_num_threads()
    assert d["torch"] == torch.__version__
    assert d["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(d["flags"]) <= set(machine.FLAGS)


def test_cpuinfo_fields_are_read_from_the_first_processor(machine, monkeypatch, tmp_path):
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: fma avx2 amx_bf16 "
            "sse\n\nprocessor\t: 1\nmodel name\t: Other CPU\n")
    fake = tmp_path / "cpuinfo"
    fake.write_text(text)
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path,
                                                                          *a, **k))
    d = machine.describe(calibrated=False)
    assert d["cpu"] == "Test CPU @ 2.0GHz"
    assert d["vendor"] == "GenuineIntel"
    assert d["flags"] == ["avx2", "fma", "amx_bf16"]  # in FLAGS order; sse is not one of them


def test_calibrate_measures_both_precisions(machine):
    c = machine.calibrate(size=64, repeats=3)
    assert c["matmul_gflops_fp32"] > 0 and c["matmul_gflops_bf16"] > 0
    assert c["matmul_bf16_over_fp32"] == pytest.approx(c["matmul_gflops_bf16"] / c["matmul_gflops_fp32"])
    assert (c["size"], c["repeats"]) == (64, 3)
