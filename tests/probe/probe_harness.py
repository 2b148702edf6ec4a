"""Probe test harness: run probe.py as the pod does, and hold every result to the contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchproof.contract import PLAN_SCHEMA
from torchproof.probe import PROBE_PATH
from torchproof.result import parse_result

CHECKS = ("environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu", "sdpa", "fp8",
          "nccl", "memory", "compile")
# The wrapper runs probe.py as __main__ after a prelude, e.g. one that deletes newer torch APIs first.
WRAPPER = """
import runpy, sys
{prelude}
sys.argv = [{probe!r}] + sys.argv[1:]
runpy.run_path({probe!r}, run_name="__main__")
"""


@dataclass(frozen=True)
class ProbeRun:
    returncode: int
    raw: bytes
    result: dict[str, Any]
    stdout: str
    stderr: str
    wall: float

    @property
    def checks(self) -> dict[str, Any]:
        return self.result["checks"]

    def detail(self) -> dict[str, Any]:
        """The full detail the probe prints on stdout."""
        line = next(x for x in self.stdout.splitlines() if x.startswith("torchproof-probe detail: "))
        return json.loads(line.split(": ", 1)[1])


def make_plan(checks: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    plan = {"schema": PLAN_SCHEMA, "device": "cpu", "timeBudgetSeconds": 60,
            "checks": checks if checks is not None else {name: {} for name in CHECKS}}
    plan.update(extra)
    return plan


def assert_contract(raw: bytes) -> dict[str, Any]:
    """Everything docs/contract.md promises about a result, on top of the operator's own parser."""
    assert 0 < len(raw) <= 4096
    parse_result(raw)

    def no_constants(token: str) -> None:
        raise AssertionError(f"non-finite token {token} in the result")

    doc = json.loads(raw, parse_constant=no_constants)
    assert doc["schema"] == "torchproof.dev/probe-result/v1"
    assert doc["device"] in ("cpu", "cuda")
    for name, check in doc["checks"].items():
        assert name in CHECKS
        assert check["status"] in ("ok", "error", "timeout", "skipped"), name
        assert isinstance(check["seconds"], int | float), name
        if check["status"] == "error":
            assert 0 < len(check["error"]) <= 200 and ": " in check["error"], name
        if check["status"] == "skipped":
            assert check["reason"], name
    for run in (doc["checks"].get("amp") or {}).values():
        if isinstance(run, dict):
            assert ("skipped" in run) + ("error" in run) + ("api" in run) == 1, run
    return doc


def run_probe_script(plan: dict[str, Any] | None, tmp_path: Path, *, device: str | None = "cpu", prelude: str = "",
         hooks: bool = False, args: tuple[str, ...] = ()) -> ProbeRun:
    result_path = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHPROOF_")}
    if plan is not None:
        env["TORCHPROOF_PLAN"] = json.dumps(plan)
    if hooks:
        env["TORCHPROOF_PROBE_TEST_HOOKS"] = "1"
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER.format(prelude=prelude, probe=str(PROBE_PATH)))
    cmd = [sys.executable, str(script), "--result", str(result_path), *args]
    if device:
        cmd += ["--device", device]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    wall = time.monotonic() - started
    raw = result_path.read_bytes() if result_path.exists() else b""
    result = assert_contract(raw) if proc.returncode == 0 else {}
    return ProbeRun(proc.returncode, raw, result, proc.stdout, proc.stderr, wall)
