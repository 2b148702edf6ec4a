"""The GPU bench script's CPU path, so it is known to work before a GPU machine runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUN_SH = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "run.sh"


def test_bench_records_probe_times_and_gemm_against_the_reference(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    env.pop("TORCHPROOF_PLAN", None)
    subprocess.run([str(RUN_SH), "--device", "cpu", "--reference-iterations", "10"], env=env,
                   capture_output=True, text=True, timeout=120, check=True)
    report = json.loads((tmp_path / "probe_bench.json").read_text())
    assert report["device"] == "cpu" and report["gpu"] == "cpu"
    assert 0 < report["wallSeconds"] < 60 and isinstance(report["wallTargetMet"], bool)
    assert set(report["checks"]) == {"environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d",
                                     "multiGpu", "sdpa", "fp8", "nccl", "memory", "compile"}
    statuses = {name: c["status"] for name, c in report["checks"].items()}
    assert {statuses[n] for n in ("sdpa", "memory", "compile")} == {"ok"}  # their CPU twins run
    assert statuses["fp8"] == statuses["nccl"] == "skipped"  # GPU only, with a reason
    assert report["gemmSize"] == 256  # the probe's CPU cap, which the reference follows
    assert [g["precision"] for g in report["gemm"]] == ["fp32", "bf16"]
    for g in report["gemm"]:
        assert g["probe"] > 0 and g["reference"] > 0
        assert g["deviation"] == g["probe"] / g["reference"] - 1
    snippet = (tmp_path / "probe_bench.md").read_text()
    assert snippet.startswith(f"### Probe on cpu ({report['date']}")
    assert "| fp32 |" in snippet
    assert all(g["peak"] is None and g["ofPeak"] is None for g in report["gemm"])  # a CPU has no catalogue peak
    assert "| compile | ok |" in snippet and "backend=aot_eager" in snippet
