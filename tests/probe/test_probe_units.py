"""probe.py's pure parts, in-process: plan parsing, version formats, the 4 KiB fit, NVML, API fallbacks."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from probe_harness import assert_contract
from torchproof.probe import PROBE_PATH, probe_source


def plan_text(**fields: Any) -> str:
    return json.dumps({"schema": "torchproof.dev/probe-plan/v1", "checks": {}, **fields})


# -- plan ------------------------------------------------------------------------------------------


def test_no_plan_means_every_check_with_defaults(probe_module: ModuleType) -> None:
    plan = probe_module.parse_plan(None)
    assert list(plan["checks"]) == list(probe_module.CHECK_ORDER)
    assert plan["checks"]["tensorCores"] == {"size": 4096, "iterations": 20}
    assert plan["device"] == "cuda" and plan["budget"] == 120


def test_plan_fills_defaults_and_ignores_unknown_keys(probe_module: ModuleType) -> None:
    plan = probe_module.parse_plan(plan_text(checks={"amp": {"steps": 3, "tolerance": 0.1}, "future": {}},
                                             extra=1))
    assert plan["checks"] == {"amp": {"steps": 3, "native": True, "apex": True, "bf16": True}}


@pytest.mark.parametrize(("text", "message"), [
    ("{", "TORCHPROOF_PLAN: not JSON"),
    ("[]", "TORCHPROOF_PLAN: expected an object"),
    (plan_text(schema="v0"), "TORCHPROOF_PLAN.schema: expected"),
    (plan_text(device="tpu"), "TORCHPROOF_PLAN.device: expected \"cpu\" or \"cuda\", got 'tpu'"),
    (plan_text(timeBudgetSeconds=0), "TORCHPROOF_PLAN.timeBudgetSeconds: expected a positive number"),
    (plan_text(timeBudgetSeconds=True), "TORCHPROOF_PLAN.timeBudgetSeconds"),
    (plan_text(resultPath=""), "TORCHPROOF_PLAN.resultPath: expected a file path"),
    (plan_text(checks=[]), "TORCHPROOF_PLAN.checks: expected an object"),
    (plan_text(checks={"amp": 1}), "TORCHPROOF_PLAN.checks.amp: expected an object"),
    (plan_text(checks={"amp": {"steps": 0}}), "TORCHPROOF_PLAN.checks.amp.steps: expected a positive integer"),
    (plan_text(checks={"conv3d": {"iterations": True}}), "TORCHPROOF_PLAN.checks.conv3d.iterations"),
    (plan_text(checks={"amp": {"apex": "yes"}}), "TORCHPROOF_PLAN.checks.amp.apex: expected true or false"),
    (plan_text(inject=[]), "TORCHPROOF_PLAN.inject: expected an object"),
])
def test_bad_plans_name_the_field(probe_module: ModuleType, text: str, message: str) -> None:
    with pytest.raises(probe_module.PlanError, match="^" + re.escape(message)):
        probe_module.parse_plan(text)


def test_cpu_caps_only_apply_in_cpu_mode(probe_module: ModuleType) -> None:
    config = {"size": 4096, "iterations": 20}
    assert probe_module.capped(config, "tensorCores", "cpu") == {"size": 256, "iterations": 5}
    assert probe_module.capped(config, "tensorCores", "cuda") == config


# -- versions, cleaning, fitting -------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "text"), [
    (7605, "7.6.5"), (8001, "8.0.1"), (90500, "9.5.0"), (91000, "9.10.0"),  # cuDNN
    (2708, "2.7.8"), (21903, "2.19.3"), ((2, 21, 5), "2.21.5"), (None, None),  # NCCL: int, then tuple
])
def test_cudnn_and_nccl_versions_read_as_dotted(probe_module: ModuleType, raw: Any, text: str | None) -> None:
    assert probe_module._dotted_version(raw) == text


def test_clean_nulls_non_finite_numbers_rounds_and_truncates(probe_module: ModuleType) -> None:
    cleaned = probe_module.clean({"a": float("nan"), "b": [float("inf"), 1.23456789], "c": "x" * 300, "d": True})
    assert cleaned == {"a": None, "b": [None, 1.235], "c": "x" * 200, "d": True}


def test_clean_replaces_what_the_operator_refuses_in_a_string(probe_module: ModuleType) -> None:
    result = result_with(devices=1, var_length=10)
    result["checks"]["cuda"]["error"] = "RuntimeError: \x1b[31mboom\x00\x85\ud800\ufffe\U0001ffff\n\tend\r"
    cleaned = probe_module.clean(result)
    assert cleaned["checks"]["cuda"]["error"] == "RuntimeError: \ufffd[31mboom" + "\ufffd" * 5 + "\n\tend\r"
    assert_contract(probe_module.fit(result))


def result_with(devices: int, var_length: int, error_length: int = 10, name: str = "NVIDIA H200") -> dict[str, Any]:
    device = {"index": 0, "name": name, "brand": "NVIDIA", "uuid": "GPU-" + "f" * 36, "cc": "9.0",
              "memoryMiB": 143771, "ecc": True, "eccErrors": 0, "mig": False}
    checks = {name: {"status": "error", "seconds": 1.0, "error": "RuntimeError: " + "e" * error_length}
              for name in ("environment", "gpu", "cuda", "tensorCores", "channelsLast", "conv3d", "multiGpu")}
    checks["amp"] = {"status": "ok", "seconds": 1.0,
                     **{run: {"error": "RuntimeError: " + "e" * error_length} for run in ("native", "apex", "bf16")}}
    return {
        "schema": "torchproof.dev/probe-result/v1", "probe": "1.0", "device": "cuda", "seconds": 3.0,
        "env": {"python": "3.6.10", "vars": {f"VAR_{i}": "v" * var_length for i in range(20)}},
        "gpu": {"source": "nvml", "count": devices, "devices": [dict(device, index=i) for i in range(devices)]},
        "checks": checks,
    }


def test_a_small_result_is_kept_whole(probe_module: ModuleType) -> None:
    result = result_with(devices=1, var_length=10)
    assert json.loads(probe_module.fit(result)) == probe_module.clean(result)


def test_fit_drops_env_vars_first(probe_module: ModuleType) -> None:
    doc = assert_contract(probe_module.fit(result_with(devices=2, var_length=200)))
    assert "vars" not in doc["env"]
    assert doc["gpu"]["devices"][1]["uuid"].startswith("GPU-")


def test_fit_then_drops_device_detail_and_says_so(probe_module: ModuleType) -> None:
    name = "NVIDIA H200 " + "x" * 100
    doc = assert_contract(probe_module.fit(result_with(devices=8, var_length=200, error_length=200, name=name)))
    assert doc["gpu"]["devices"][7] == {"index": 7, "name": name, "cc": "9.0"}
    assert doc["gpu"]["note"] == "device detail dropped to fit 4096 bytes"


def test_fit_keeps_the_worst_case_within_4096_bytes(probe_module: ModuleType) -> None:
    result = result_with(devices=8, var_length=200, error_length=500, name="N" * 300)
    data = probe_module.fit(result)
    assert_contract(data)
    assert "devices" not in json.loads(data)["gpu"]


# -- GPU facts: NVML and its fallback --------------------------------------------------------------


class NotSupported(Exception):
    pass


def fake_nvml(devices: int, *, ecc: bool = True) -> SimpleNamespace:
    def ecc_mode(_: int) -> tuple[int, int]:
        if not ecc:
            raise NotSupported("Not Supported")
        return (1, 1)

    calls: list[str] = []
    return SimpleNamespace(
        calls=calls,
        NVML_BRAND_UNKNOWN=0, NVML_BRAND_TESLA=2, NVML_BRAND_NVIDIA_RTX=14, NVML_BRAND_COUNT=18,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1, NVML_VOLATILE_ECC=0,
        nvmlInit=lambda: calls.append("init"), nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlSystemGetDriverVersion=lambda: b"450.51.06", nvmlSystemGetCudaDriverVersion=lambda: 11000,
        nvmlDeviceGetCount=lambda: devices, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"Tesla T4" if h == 0 else "NVIDIA RTX A6000",
        nvmlDeviceGetBrand=lambda h: 2 if h == 0 else 14,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}", nvmlDeviceGetCudaComputeCapability=lambda h: (7, 5),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=15843721216),
        nvmlDeviceGetEccMode=ecc_mode, nvmlDeviceGetTotalEccErrors=lambda h, kind, counter: 3,
        nvmlDeviceGetMigMode=lambda h: (0, 0),
    )


def test_nvml_reports_driver_and_each_device(probe_module: ModuleType) -> None:
    nvml = fake_nvml(2)
    gpu = probe_module.gpu_from_nvml(nvml)
    assert gpu["source"] == "nvml" and gpu["driver"] == "450.51.06" and gpu["cudaDriver"] == "11.0"
    assert gpu["devices"][0] == {"index": 0, "name": "Tesla T4", "brand": "Tesla", "uuid": "GPU-0", "cc": "7.5",
                                 "memoryMiB": 15109, "ecc": True, "eccErrors": 3, "mig": False}
    assert gpu["devices"][1]["brand"] == "NVIDIA RTX"
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_fields_a_board_lacks_are_null_and_devices_stop_at_eight(probe_module: ModuleType) -> None:
    gpu = probe_module.gpu_from_nvml(fake_nvml(9, ecc=False))
    assert gpu["count"] == 9 and len(gpu["devices"]) == 8
    assert gpu["devices"][0]["ecc"] is None and gpu["devices"][0]["eccErrors"] is None


def test_the_torch_fallback_reads_the_kernel_module_version(probe_module: ModuleType,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  450.51.06  Sun Jun 21 2020\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        version if path == "/proc/driver/nvidia/version" else path, *a, **k))
    props = SimpleNamespace(name="Tesla T4", major=7, minor=5, total_memory=15843721216)
    torch = SimpleNamespace(cuda=SimpleNamespace(device_count=lambda: 1, get_device_properties=lambda i: props))
    gpu = probe_module.gpu_from_torch(probe_module.Probe(torch, "cuda"), "pynvml not importable (x)")
    assert gpu["driver"] == "450.51.06" and gpu["source"] == "torch"
    assert gpu["devices"] == [{"index": 0, "name": "Tesla T4", "cc": "7.5", "memoryMiB": 15109}]
    assert gpu["note"] == "pynvml not importable (x); used torch.cuda and /proc/driver/nvidia/version"


# -- API fallbacks, decided on fake torch modules --------------------------------------------------


def fake_torch(cc: tuple[int, int] = (8, 0), **attrs: Any) -> SimpleNamespace:
    return SimpleNamespace(__version__="1.x", float16="f16", bfloat16="bf16",
                           cuda=SimpleNamespace(get_device_capability=lambda: cc), **attrs)


@pytest.mark.parametrize(("torch", "device", "expected"), [
    (fake_torch((7, 5), autocast=object), "cuda", (False, "compute capability 7.5 < 8.0")),
    (fake_torch((8, 0), autocast=object), "cuda", (True, None)),
    (fake_torch((9, 0)), "cuda", (False, "torch 1.x has no bf16 autocast")),
    (SimpleNamespace(__version__="1.2"), "cpu", (False, "torch 1.2 has no bfloat16")),
    (fake_torch((6, 0)), "cpu", (True, None)),
])
def test_bf16_support(probe_module: ModuleType, torch: Any, device: str, expected: tuple[bool, Any]) -> None:
    assert probe_module.bf16_support(torch, device) == expected


def test_pre_1_10_cuda_autocast_is_torch_cuda_amp_without_dtype(probe_module: ModuleType) -> None:
    calls: list[dict[str, Any]] = []
    torch = fake_torch()
    torch.cuda = SimpleNamespace(amp=SimpleNamespace(autocast=lambda **kw: calls.append(kw)))
    name, factory = probe_module.autocast_api(torch, "cuda", "f16")
    factory()
    assert name == "torch.cuda.amp" and calls == [{}]


def test_no_autocast_at_all_skips_with_the_torch_version(probe_module: ModuleType) -> None:
    with pytest.raises(probe_module.Skip, match=re.escape("no autocast for cuda in torch 1.x")):
        probe_module.autocast_api(fake_torch(), "cuda", "f16")


def test_no_grad_scaler_at_all_skips(probe_module: ModuleType) -> None:
    with pytest.raises(probe_module.Skip, match="no GradScaler"):
        probe_module.grad_scaler(fake_torch(), "cuda")


def test_cuda_is_started_once_and_its_error_kept(probe_module: ModuleType) -> None:
    calls: list[int] = []

    def init() -> None:
        calls.append(1)
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

    p = probe_module.Probe(SimpleNamespace(cuda=SimpleNamespace(init=init)), "cuda")
    for _ in range(2):
        with pytest.raises(probe_module.Skip, match="cuda unavailable"):
            p.need_cuda()
    assert p.cuda_error() == "RuntimeError: CUDA driver version is insufficient for CUDA runtime version"
    assert calls == [1]


# -- where and how it runs -------------------------------------------------------------------------


def test_probe_imports_only_the_standard_library_torch_pynvml_and_apex() -> None:
    tree = ast.parse(PROBE_PATH.read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert names - set(sys.stdlib_module_names) == {"torch", "pynvml", "apex"}


def test_vermin_confirms_python_3_6() -> None:
    vermin = Path(sys.executable).with_name("vermin")
    proc = subprocess.run([str(vermin), "-q", "--no-tips", "--violations", "-t=3.6-",
                           str(PROBE_PATH)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_probe_package_exposes_the_file_without_importing_torch() -> None:
    code = "import sys, torchproof.probe as p; print(p.PROBE_PATH.name, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["probe.py", "False"]
    assert probe_source().startswith('"""torchproof probe')


def test_an_unwritable_result_path_exits_non_zero(probe_module: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE"):
        monkeypatch.setenv(name, "1")  # restored afterwards; the probe sets both to 0
    monkeypatch.setenv("TORCHPROOF_PLAN", plan_text(device="cpu", checks={"environment": {}}))
    assert probe_module.main(["--result", str(tmp_path / "missing" / "result.json")]) == 3
    assert "cannot write the result" in capsys.readouterr().err
