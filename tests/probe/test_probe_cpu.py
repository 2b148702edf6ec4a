"""One CPU-mode run of the whole probe, shared by assertions about every check."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from probe_harness import ProbeRun, make_plan
from torchproof.podspec import build_plan
from torchproof.profile import parse_profile
from torchproof.result import parse_result
from torchproof.verdict import judge

ROOT = Path(__file__).resolve().parents[2]

# Hooks in the plan must do nothing unless TORCHPROOF_PROBE_TEST_HOOKS=1 is set; this run does not set it.
IGNORED_HOOKS = {"ampNaN": True, "raise": "conv3d", "hang": "channelsLast"}


@pytest.fixture(scope="module")
def cpu(module_run: Callable[..., ProbeRun]) -> ProbeRun:
    return module_run(make_plan(inject=IGNORED_HOOKS))


def test_exits_zero_with_a_small_result_for_every_planned_check(cpu: ProbeRun) -> None:
    assert cpu.returncode == 0, cpu.stderr
    assert len(cpu.raw) <= 4096
    assert list(cpu.checks) == ["environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d",
                                "multiGpu", "sdpa", "fp8", "nccl", "memory", "compile"]
    assert cpu.result["device"] == "cpu"
    assert cpu.wall < 30


def test_hooks_in_the_plan_are_ignored_without_the_env_switch(cpu: ProbeRun) -> None:
    assert cpu.checks["conv3d"]["status"] == "ok"
    assert cpu.checks["channelsLast"]["status"] == "ok"
    assert cpu.checks["amp"]["native"]["finite"] is True


def test_environment_reports_this_interpreter_and_torch(cpu: ProbeRun) -> None:
    env = cpu.result["env"]
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    assert env["cuda"] is None and env["cudnn"] is None  # the CPU build has neither
    assert env["apex"] is False
    assert isinstance(env["vars"], dict)


def test_gpu_is_not_queried_in_cpu_mode_and_says_so(cpu: ProbeRun) -> None:
    gpu = cpu.result["gpu"]
    assert gpu["source"] == "none"
    assert "cpu mode" in gpu["note"]
    assert gpu["devices"] == []


def test_cuda_and_multi_gpu_are_skipped_on_the_cpu(cpu: ProbeRun) -> None:
    assert cpu.checks["cuda"] == {**cpu.checks["cuda"], "status": "skipped", "reason": "cpu mode"}
    assert cpu.checks["multiGpu"]["status"] == "skipped"


@pytest.mark.parametrize("run", ["native", "bf16"])
def test_amp_trains_in_bf16_with_finite_falling_losses(cpu: ProbeRun, run: str) -> None:
    amp: dict[str, Any] = cpu.checks["amp"]
    assert amp["status"] == "ok"
    sub = amp[run]
    assert sub["dtype"] == "bfloat16"
    assert sub["api"].startswith("torch.autocast")
    assert sub["finite"] is True and sub["decreased"] is True
    assert sub["lastLoss"] < sub["firstLoss"]
    assert 0 <= sub["maxRelError"] < 0.05
    assert sub["skippedSteps"] == 0
    assert sub["steps"] == 8


def test_native_amp_uses_the_newest_grad_scaler(cpu: ProbeRun) -> None:
    assert cpu.checks["amp"]["native"]["api"] == "torch.autocast+torch.amp.GradScaler"


def test_apex_is_skipped_off_cuda(cpu: ProbeRun) -> None:
    assert cpu.checks["amp"]["apex"] == {"skipped": "apex amp needs cuda"}


def test_tensor_cores_compare_bf16_with_fp32_at_capped_sizes(cpu: ProbeRun) -> None:
    tc = cpu.checks["tensorCores"]
    assert tc["status"] == "ok"
    assert tc["size"] == 256 and tc["iterations"] == 5  # CPU caps, whatever the plan asked
    assert tc["fp32"] > 0 and tc["bf16"] > 0
    assert tc["fp16"] is None and tc["tf32"] is None
    assert tc["bf16Speedup"] == pytest.approx(tc["bf16"] / tc["fp32"], rel=0.01)


def test_channels_last_matches_the_default_format(cpu: ProbeRun) -> None:
    cl = cpu.checks["channelsLast"]
    assert cl["status"] == "ok" and cl["finite"] is True
    assert cl["maxRelError"] < 0.01


def test_conv3d_counts_no_nans(cpu: ProbeRun) -> None:
    c3 = cpu.checks["conv3d"]
    assert c3 == {**c3, "status": "ok", "nanCount": 0, "iterations": 2}


def test_stdout_has_progress_lines_and_the_full_detail(cpu: ProbeRun) -> None:
    assert "torchproof-probe: amp" in cpu.stdout
    detail = cpu.detail()
    assert detail["result"]["checks"].keys() == cpu.checks.keys()
    losses = detail["detail"]["ampLosses"]["torch.autocast+torch.amp.GradScaler/bfloat16"]
    assert len(losses) == 8 and losses[-1] < losses[0]


def test_a_cpu_dry_run_profile_plans_a_run_the_operator_judges_passed(run_probe: Callable[..., ProbeRun]) -> None:
    """The example profile's own plan, run by the real probe on this CPU, labels a node `passed` as a dry run."""
    profile = parse_profile(yaml.safe_load((ROOT / "examples" / "profile-cpu-dryrun.yaml").read_text()))
    run = run_probe(build_plan(profile), device=None)
    assert run.returncode == 0, run.stderr
    ev = judge(profile, parse_result(run.raw), {})
    assert (ev.verdict, ev.reasons) == ("passed", ()), ev
    assert "CpuDryRun" in {f.code for f in ev.findings}
