"""The five checks for today's GPUs (sdpa, fp8, nccl, memory, compile): their CPU twins run here, the GPU-only
ones skip with a reason, an older torch without their API skips cleanly, and a compile is held to its bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from probe_harness import ProbeRun, make_plan

RunProbe = Callable[..., ProbeRun]
NEW = ("sdpa", "fp8", "nccl", "memory", "compile")


@pytest.fixture(scope="module")
def cpu_run(module_run: RunProbe) -> dict[str, Any]:
    run = module_run(make_plan({name: {} for name in NEW}))
    assert run.returncode == 0, run.stderr
    return run.checks


def test_sdpa_runs_the_math_backend_on_the_cpu_against_the_reference(cpu_run: dict[str, Any]) -> None:
    sdpa = cpu_run["sdpa"]
    assert sdpa["status"] == "ok" and sdpa["dtype"] == "float32"
    assert sdpa["flash"] == sdpa["memEfficient"] == {"skipped": "cpu mode"}
    assert 0 <= sdpa["math"]["forwardError"] < 1e-4 and 0 <= sdpa["math"]["backwardError"] < 1e-4


def test_fp8_and_nccl_need_a_gpu(cpu_run: dict[str, Any]) -> None:
    assert {k: cpu_run[k]["status"] for k in ("fp8", "nccl")} == {"fp8": "skipped", "nccl": "skipped"}
    assert cpu_run["fp8"]["reason"] == cpu_run["nccl"]["reason"] == "cpu mode"


def test_memory_fills_and_reads_back_a_bounded_buffer_on_the_cpu(cpu_run: dict[str, Any]) -> None:
    memory = cpu_run["memory"]
    assert memory == {**memory, "status": "ok", "devices": 0, "freeMiB": None, "testedMiB": 64, "mismatches": 0,
                      "eccErrors": None, "complete": True}


def test_compile_traces_with_aot_eager_on_the_cpu_and_times_the_first_call(cpu_run: dict[str, Any]) -> None:
    c = cpu_run["compile"]
    assert c["status"] == "ok" and c["backend"] == "aot_eager"
    assert 0 < c["firstSeconds"] <= c["seconds"] and c["maxError"] < 1e-4


def test_an_older_torch_without_the_apis_skips_with_the_reason(run_probe: RunProbe) -> None:
    prelude = ("import torch\ndel torch.nn.functional.scaled_dot_product_attention\ndel torch.compile\n"
               "del torch._scaled_mm\n")
    run = run_probe(make_plan({name: {} for name in ("sdpa", "compile", "memory")}), prelude=prelude)
    assert run.returncode == 0, run.stderr
    assert run.checks["sdpa"]["status"] == run.checks["compile"]["status"] == "skipped"
    assert "has no scaled_dot_product_attention" in run.checks["sdpa"]["reason"]
    assert "has no torch.compile" in run.checks["compile"]["reason"]
    assert run.checks["memory"]["status"] == "ok"


def test_a_compile_past_its_max_seconds_is_cut_off_within_the_budget(run_probe: RunProbe) -> None:
    plan = make_plan({"compile": {"maxSeconds": 1}, "memory": {}}, timeBudgetSeconds=60, inject={"hang": "compile"})
    run = run_probe(plan, hooks=True)
    assert run.returncode == 0, run.stderr
    assert run.checks["compile"]["status"] == "timeout"
    assert run.checks["compile"]["seconds"] < 5  # maxSeconds plus the 2 s grace, not the 60 s budget
    assert run.wall < 30


@pytest.mark.parametrize(("check", "field", "value", "message"), [
    ("memory", "fraction", 1.5, "expected a number between 0 and 1"),
    ("memory", "fraction", True, "expected a number between 0 and 1"),
    ("nccl", "sizeMiB", 0, "expected a positive integer"),
    ("compile", "maxSeconds", "soon", "expected a positive integer"),
])
def test_a_bad_setting_of_a_new_check_is_a_plan_error(run_probe: RunProbe, check: str, field: str, value: Any,
                                                      message: str) -> None:
    run = run_probe(make_plan({check: {field: value}}))
    assert run.returncode == 2
    assert f"TORCHPROOF_PLAN.checks.{check}.{field}: {message}" in run.stderr


def test_memory_counts_each_word_read_back_wrong(probe_module: ModuleType) -> None:
    import torch

    chunks, filled = probe_module._fill(torch, "cpu", 3, time.monotonic() + 60)
    assert filled and [c.numel() for c, _ in chunks] == [3 << 18]
    chunks[0][0][12345] += 1
    chunks[0][0][-1] = 0
    assert probe_module._verify(torch, chunks, time.monotonic() + 60) == (3, 2, True)


def test_memory_stops_at_its_bound_and_says_it_covered_less(probe_module: ModuleType) -> None:
    import torch

    assert probe_module._fill(torch, "cpu", 3, time.monotonic() - 1) == ([], False)
    chunks, _ = probe_module._fill(torch, "cpu", 2, time.monotonic() + 60)
    assert probe_module._verify(torch, chunks, time.monotonic() - 1) == (0, 0, False)
