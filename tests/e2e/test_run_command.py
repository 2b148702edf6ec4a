"""`torchproof run` as a separate process: kubeconfig login, labels, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path

from tests.support.polling import eventually
from tests.support.rig import NAME, Rig, profile
from tests.support.tools import free_port

FAST_ENV = {"PYTHONUNBUFFERED": "1"}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_run_command_labels_nodes_and_serves_metrics(env: Rig, tmp_path: Path) -> None:
    config = await env.operator_kubeconfig(tmp_path / "kubeconfig")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "torchproof.cli", "run", "--standalone", f"--kubeconfig={config}",
        f"--metrics-port={port}", "--metrics-address=127.0.0.1", "--health-port=0",
        env={**os.environ, **FAST_ENV}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await env.apply(profile())
        await eventually(env.converged, timeout=60, what="convergence under `torchproof run`")
        assert env.label("t4-a") == "passed" and env.label("k80-a") == "incompatible"
        text = await asyncio.to_thread(scrape, port)
        assert f'torchproof_nodes{{profile="{NAME}",state="passed"}} 3.0' in text
        assert f'torchproof_validations_total{{profile="{NAME}",verdict="passed"}} 3.0' in text
        assert f'torchproof_verdict_reason_nodes{{profile="{NAME}",reason="DriverTooOld"}} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, output.decode()[-2000:]
