"""Every failure path still yields a contract-valid result and exit 0 (each test is one probe run)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from probe_harness import ProbeRun, make_plan

RunProbe = Callable[..., ProbeRun]
GPU_CHECKS = ("amp", "tensorCores", "channelsLast", "conv3d", "multiGpu")


def test_nan_in_amp_and_an_exception_in_a_check_are_findings_not_crashes(run_probe: RunProbe) -> None:
    plan = make_plan({"environment": {}, "amp": {"steps": 4, "bf16": False}, "conv3d": {}, "multiGpu": {}},
                     inject={"ampNaN": True, "raise": "conv3d"})
    run = run_probe(plan, hooks=True)
    assert run.returncode == 0, run.stderr
    native = run.checks["amp"]["native"]
    assert run.checks["amp"]["status"] == "ok"
    assert native["finite"] is False and native["decreased"] is False
    assert native["firstLoss"] is None and native["lastLoss"] is None and native["maxRelError"] is None
    assert run.checks["conv3d"] == {**run.checks["conv3d"], "status": "error",
                                    "error": "RuntimeError: injected by test hook"}
    assert "injected by test hook" in run.detail()["detail"]["tracebacks"]["conv3d"]
    assert run.checks["environment"]["status"] == "ok"
    assert run.checks["multiGpu"]["status"] == "skipped"  # checks after the exception still run


def test_a_hung_check_is_cut_by_the_budget_and_the_rest_skipped(run_probe: RunProbe) -> None:
    budget = 6
    plan = make_plan({"environment": {}, "conv3d": {}, "multiGpu": {}}, timeBudgetSeconds=budget,
                     inject={"hang": "conv3d"})
    run = run_probe(plan, hooks=True)
    assert run.returncode == 0, run.stderr
    assert run.checks["environment"]["status"] == "ok"
    assert run.checks["conv3d"]["status"] == "timeout"
    assert 0 < run.checks["conv3d"]["seconds"] <= budget
    assert run.checks["multiGpu"] == {**run.checks["multiGpu"], "status": "skipped", "reason": "time budget spent"}
    assert run.result["seconds"] == pytest.approx(budget, abs=1.5)
    assert run.wall < budget + 10  # the hung thread does not keep the process alive


def test_cuda_unavailable_and_pynvml_missing(run_probe: RunProbe) -> None:
    # This torch is a CPU build: on --device cuda, CUDA cannot start, as on a node whose driver is absent.
    run = run_probe(make_plan(), device="cuda", prelude="sys.modules['pynvml'] = None")
    assert run.returncode == 0, run.stderr
    cuda = run.checks["cuda"]
    assert cuda["status"] == "error" and cuda["available"] is False
    assert cuda["error"] == "AssertionError: Torch not compiled with CUDA enabled"
    for name in GPU_CHECKS:
        assert run.checks[name] == {**run.checks[name], "status": "skipped", "reason": "cuda unavailable"}, name
    gpu = run.result["gpu"]
    assert gpu["source"] == "torch"
    assert gpu["note"].startswith("pynvml not importable (ModuleNotFoundError")
    assert "torch.cuda" in gpu["note"] and gpu["count"] == 0
    assert run.checks["environment"]["status"] == "ok"


INSUFFICIENT = "CUDA driver version is insufficient for CUDA runtime version"
OLD_DRIVER = f"""
import torch
def init():
    raise RuntimeError({INSUFFICIENT!r})
torch.cuda.init = init
"""


def test_an_old_driver_comes_back_as_the_contract_finding(run_probe: RunProbe) -> None:
    run = run_probe(make_plan({"gpu": {}, "cuda": {}, "amp": {}}), device="cuda", prelude=OLD_DRIVER)
    assert run.returncode == 0, run.stderr
    assert run.checks["cuda"] == {**run.checks["cuda"], "status": "error", "available": False,
                                  "error": f"RuntimeError: {INSUFFICIENT}"}
    assert run.checks["amp"]["reason"] == "cuda unavailable"
    # pynvml is importable here, but there is no driver for NVML to load: the fallback says so.
    assert run.result["gpu"]["source"] == "torch"
    assert run.result["gpu"]["note"].startswith("NVML failed (NVMLError")


AMP_PLAN = {"amp": {"steps": 6}}


def test_without_torch_amp_native_amp_falls_back_to_the_cuda_amp_scaler(run_probe: RunProbe) -> None:
    run = run_probe(make_plan(AMP_PLAN), prelude="import torch; del torch.amp")
    native = run.checks["amp"]["native"]
    # torch.cuda.amp.GradScaler disables itself off CUDA, as the probe asks it to.
    assert native["api"] == "torch.autocast+torch.cuda.amp.GradScaler"
    assert native["finite"] is True and native["decreased"] is True and native["skippedSteps"] == 0
    assert run.checks["amp"]["bf16"]["api"] == "torch.autocast"


def test_without_torch_autocast_amp_falls_back_to_the_per_device_autocast(run_probe: RunProbe) -> None:
    run = run_probe(make_plan(AMP_PLAN), prelude="import torch; del torch.autocast")
    amp = run.checks["amp"]
    assert amp["native"]["api"] == "torch.cpu.amp+torch.amp.GradScaler"
    assert amp["native"]["finite"] is True and amp["native"]["decreased"] is True
    assert amp["bf16"]["api"] == "torch.cpu.amp"


def test_without_any_native_amp_the_runs_are_skipped_with_the_reason(run_probe: RunProbe) -> None:
    # As on 20.03 (PyTorch 1.5): no autocast anywhere; channelsLast still runs, in the default precision.
    prelude = "import torch; del torch.autocast; del torch.amp; del torch.cpu.amp"
    run = run_probe(make_plan({**AMP_PLAN, "channelsLast": {}}), prelude=prelude)
    amp = run.checks["amp"]
    assert amp["status"] == "ok"
    assert amp["native"]["skipped"].startswith("no autocast for cpu in torch")
    assert amp["bf16"]["skipped"].startswith("no autocast for cpu in torch")
    assert run.checks["channelsLast"]["finite"] is True


def test_a_bad_plan_names_the_field_and_writes_no_result(run_probe: RunProbe) -> None:
    run = run_probe(make_plan({"amp": {"steps": "eight"}}))
    assert run.returncode == 2
    assert "TORCHPROOF_PLAN.checks.amp.steps: expected a positive integer, got 'eight'" in run.stderr
    assert run.raw == b""


def test_without_torch_every_planned_check_reports_the_import_error(run_probe: RunProbe) -> None:
    run = run_probe(make_plan({"environment": {}, "amp": {}}), prelude="sys.modules['torch'] = None")
    assert run.returncode == 0, run.stderr
    for name in ("environment", "amp"):
        assert run.checks[name]["status"] == "error"
        assert run.checks[name]["error"].startswith("ModuleNotFoundError: import of torch halted")
