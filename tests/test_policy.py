"""The machine policy (pipelines/policy.py): precision and memory format by CPU class, simulated, and the
oneDNN AVX2 fault kept out of every model."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from eval.classifier import StridedPointwise
from pipelines import policy
from pipelines.artifacts import RunDir
from pipelines.cli import load_run_config, main
from pipelines.config import TrainConfig, resolve_config
from pipelines.train import machine_settings

from conftest import TINY_EVAL, folder_overrides

REPO = Path(__file__).resolve().parents[1]
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

AMX = policy.Capability("cpu", "AVX512", native_bf16=True, avx512=True)
AVX512 = policy.Capability("cpu", "AVX512", native_bf16=False, avx512=True)
AVX2 = policy.Capability("cpu", "AVX2", native_bf16=False, avx512=False)
GPU = policy.Capability("cuda", "H100", native_bf16=True, avx512=False)
OLD_GPU = policy.Capability("cuda", "T4", native_bf16=False, avx512=False)


@pytest.mark.parametrize("cap, precision, layout", [
    (AMX, "bf16", True), (AVX512, "no", False), (AVX2, "no", False), (GPU, "bf16", True), (OLD_GPU, "no", True)])
def test_auto_follows_the_policy_table(cap, precision, layout):
    """mixed_precision / channels_last 'auto' -> the table's choice for each device class"""
    s = policy.choose("auto", "auto", cap)
    assert (s.mixed_precision, s.channels_last) == (precision, layout)
    assert s.requested == {"mixed_precision": "auto", "channels_last": "auto"}


@pytest.mark.parametrize("cap", [AMX, AVX2, GPU])
def test_explicit_settings_are_kept_on_every_class(cap):
    for precision in ("no", "bf16"):
        for layout in (True, False):
            s = policy.choose(precision, layout, cap)
            assert (s.mixed_precision, s.channels_last) == (precision, layout)


def _detect_with(monkeypatch, capability, bf16_hw, env):
    for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_hw)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return policy.detect("cpu")


@pytest.mark.parametrize("capability, bf16_hw, env, native, avx512", [
    ("AVX512", True, {}, True, True),  # avx512_bf16 or AMX, unrestricted
    ("AVX512", False, {}, False, True),  # AVX-512 without bf16
    ("AVX2", True, {}, False, False),  # ATEN_CPU_CAPABILITY=avx2 on a bf16 machine
    ("AVX512", True, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False, False),  # oneDNN restricted to AVX2
    ("AVX512", True, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False, True),  # oneDNN without its bf16 kernels
    ("AVX512", True, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True, True),
    ("DEFAULT", False, {}, False, False),
])
def test_detect_reads_the_isa_this_process_may_use(monkeypatch, capability, bf16_hw, env, native, avx512):
    """the CPU class seen through ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA, simulated"""
    cap = _detect_with(monkeypatch, capability, bf16_hw, env)
    assert (cap.native_bf16, cap.avx512) == (native, avx512)


def test_detect_under_the_avx2_restriction_in_a_real_process():
    """ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 -> fp32, channels_last off, whatever this CPU is"""
    code = ("from pipelines import policy; s = policy.resolve('auto', 'auto'); "
            "print(s.mixed_precision, s.channels_last)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **AVX2_ENV},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["no", "False"]


def test_explicit_bf16_without_native_bf16_warns(monkeypatch):
    monkeypatch.setattr(policy, "detect", lambda device=None: AVX2)
    with pytest.warns(policy.SlowSettingWarning, match=r"train_vqvae\.mixed_precision='bf16'.*emulated.*slower"):
        s = policy.resolve("bf16", "auto", where="train_vqvae")
    assert s.mixed_precision == "bf16"  # it runs as asked
    monkeypatch.setattr(policy, "detect", lambda device=None: AMX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.resolve("bf16", "auto")


def test_a_resumed_stage_keeps_the_settings_it_started_with(tmp_path, monkeypatch):
    """state saved under bf16 on a bf16 CPU, resumed on an AVX2 CPU -> still bf16"""
    monkeypatch.setattr(policy, "detect", lambda device=None: AMX)
    cfg = TrainConfig(mixed_precision="auto", channels_last="auto")
    resolved, settings = machine_settings(cfg, tmp_path, "train_vqvae")
    assert (resolved.mixed_precision, resolved.channels_last) == ("bf16", True)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "progress.json").write_text(json.dumps({"step": 3, "settings": settings.to_dict()}))
    monkeypatch.setattr(policy, "detect", lambda device=None: AVX2)
    with pytest.warns(policy.SlowSettingWarning):
        resumed, _ = machine_settings(cfg, tmp_path, "train_vqvae")
    assert (resumed.mixed_precision, resumed.channels_last) == ("bf16", True)
    fresh, _ = machine_settings(cfg, tmp_path / "elsewhere", "train_vqvae")
    assert (fresh.mixed_precision, fresh.channels_last) == ("no", False)
    # a state saved for other requested values is not followed
    explicit, _ = machine_settings(TrainConfig(mixed_precision="no", channels_last=True), tmp_path, "train_vqvae")
    assert (explicit.mixed_precision, explicit.channels_last) == ("no", True)


def test_explicit_precision_keeps_the_stage_hash():
    """stage hashes of runs that set the precision (and channels_last true, the old default) explicitly are
    unchanged, and 'auto' hashes as those old values: a run finished before 'auto' existed is not retrained
    when re-run with its preset (the hashes recorded before it: tests/test_stage1.py)"""
    from pipelines import stage1, stage3
    from pipelines.config import train_hash_options
    old = resolve_config("demo", [f"{s}.{k}={v}" for s in ("train_vqvae", "train_prior", "train_classifier")
                                  for k, v in (("mixed_precision", "'bf16'"), ("channels_last", "true"))])
    assert old.hash_dict("train_vqvae")["train_vqvae"]["mixed_precision"] == "bf16"
    assert "channels_last" not in old.hash_dict("train_vqvae")["train_vqvae"]  # true was the default before
    auto = resolve_config("demo")
    assert auto.train_vqvae.mixed_precision == "auto" and auto.train_vqvae.channels_last == "auto"
    assert stage1.stage_hash(auto) == stage1.stage_hash(old)
    assert stage3.classifier_hash(auto) == stage3.classifier_hash(old)
    assert auto.hash_dict("train_prior") == old.hash_dict("train_prior")
    fp32 = resolve_config("demo", ["train_vqvae.mixed_precision='no'"])
    assert stage1.stage_hash(fp32) != stage1.stage_hash(auto)  # an explicit other precision is another run
    # a level's own [prior.<level>.train] follows the same rule
    assert train_hash_options({"mixed_precision": "auto", "val_every": 5}) == {"mixed_precision": "bf16"}


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="channels_last must be true, false or 'auto'"):
        TrainConfig(channels_last="yes")
    with pytest.raises(ValueError, match="mixed_precision must be 'auto', 'no', 'bf16' or 'fp16'"):
        TrainConfig(mixed_precision="fp32")


def test_stage_records_the_resolved_settings(tmp_path, image_folder):
    run = tmp_path / "run"
    load_run_config(RunDir(run), "demo", [*folder_overrides(image_folder), *TINY_EVAL,
                                          "train_classifier.mixed_precision='auto'"])
    assert main(["train-classifier", "--run-dir", str(run)]) == 0
    metrics = json.loads((RunDir(run).classifier / "metrics.json").read_text())
    settings = metrics["classifiers"]["features"]["settings"]
    expected = policy.resolve("auto", "auto")
    assert settings["mixed_precision"] == expected.mixed_precision
    assert settings["channels_last"] == expected.channels_last
    assert settings["requested"] == {"mixed_precision": "auto", "channels_last": "auto"}


def test_strided_pointwise_equals_a_strided_1x1_convolution():
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 8, 1, stride=2, bias=False)
    ours = StridedPointwise(4, 8, 2)
    ours.load_state_dict(ref.state_dict())  # the same parameters, so old checkpoints load
    x = torch.randn(3, 4, 9, 9, requires_grad=True)
    y_ref, y = ref(x), ours(x.detach().requires_grad_())
    assert y.shape == y_ref.shape == (3, 8, 5, 5)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    (gw_ref,) = torch.autograd.grad(y_ref, ref.weight, g)
    (gw,) = torch.autograd.grad(y, ours.weight, g)
    torch.testing.assert_close(gw, gw_ref)


def test_no_model_reaches_the_onednn_avx2_fault():
    """every model's channels-last gradients equal the contiguous ones under the AVX2 restriction, in a
    subprocess (the fault aborts or hangs the process: benchmarks/onednn_fault.py)"""
    proc = subprocess.run([sys.executable, "benchmarks/onednn_fault.py", "--steps", "20"], cwd=REPO,
                          env={**os.environ, **AVX2_ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count(": ok") == 6


def _strided_pointwise_convs(model: nn.Module) -> list[str]:
    """Convolutions that oneDNN's faulty AVX2 path can reach: 1x1 kernel, stride above 1."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)
            and all(k == 1 for k in m.kernel_size) and any(s > 1 for s in m.stride)]


@pytest.mark.parametrize("preset", ["demo", "fashion32", "fashion32-vqvae1", "faces128", "ffhq256", "ffhq1024",
                                    "imagenet256"])
def test_no_preset_model_holds_a_strided_pointwise_convolution(preset):
    """the oneDNN AVX2 fault (benchmarks/onednn_fault.py) needs a strided 1x1 convolution: no model of any preset
    has one, whatever its widths (the classifier's shortcuts subsample first)"""
    from eval.classifier import Classifier, ClassifierConfig
    from pipelines.config import preset_names
    from vqvae2.config import from_dict
    from vqvae2.vqvae import VQVAE2
    assert preset in preset_names()
    cfg = resolve_config(preset)
    with torch.device("meta"):
        assert _strided_pointwise_convs(VQVAE2(cfg.vqvae)) == []
        for channels in (cfg.classifier.get("channels", [32, 64, 128]), [2, 3, 5, 7]):
            ccfg = from_dict(ClassifierConfig, {**cfg.classifier, "channels": channels, "in_channels": 3,
                                                "image_size": cfg.data.size, "num_classes": 10}, where="classifier.")
            model = Classifier(ccfg)
            assert _strided_pointwise_convs(model) == []
            assert any(isinstance(m, StridedPointwise) for m in model.modules())  # the route around is taken
    # the check itself sees the faulty shape
    assert _strided_pointwise_convs(nn.Sequential(nn.Conv2d(4, 8, 1, stride=2))) == ["0"]
