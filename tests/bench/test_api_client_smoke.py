"""The API client benchmark on a tiny fleet: every candidate lists, watches and patches, and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {"list_cpu_ms", "list_wall_ms", "watch_cpu_ms_per_1000", "watch_wall_ms_per_1000", "patch_cpu_ms",
           "patch_wall_ms"}


def test_each_candidate_reports_its_figures() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.api_client", "--nodes", "30", "--patches", "10",
                          "--events", "10"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [row["client"] for row in rows] == ["kubernetes (sync) + threads", "kubernetes.aio", "aiohttp"]
    assert all(set(row) == {"client", *FIGURES} and all(row[k] >= 0 for k in FIGURES) for row in rows)
