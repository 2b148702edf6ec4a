"""The CLI as a person meets it: one-line errors, retry lines while the API server does not answer,
/healthz on --health-address, and progress lines while `simulate` waits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.simulate import wait_settled

from tests.support.polling import eventually
from tests.support.rig import NAME, Rig, profile
from tests.support.tools import free_port

NO_CLUSTER = {"KUBERNETES_SERVICE_HOST": "", "PYTHONUNBUFFERED": "1"}


def unreachable_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}], "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "torchproof.cli", *args, env={**os.environ, **NO_CLUSTER},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def stop(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return out.decode(), err.decode()


async def test_run_without_a_cluster_names_both_places_in_one_line(tmp_path: Path) -> None:
    proc = await start("run", f"--kubeconfig={tmp_path / 'nowhere'}")
    out, err = (s.decode() for s in await asyncio.wait_for(proc.communicate(), timeout=30))
    assert (proc.returncode, out) == (2, "")
    assert err == ("torchproof run: no cluster to read: not in a cluster (KUBERNETES_SERVICE_HOST is not set) and "
                   f"no usable kubeconfig at {tmp_path / 'nowhere'} (Invalid kube-config file. No configuration "
                   "found.)\n")


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_run_retries_an_unreachable_api_server_with_backoff(tmp_path: Path, log_format: str) -> None:
    config = unreachable_kubeconfig(tmp_path / "kubeconfig", free_port())
    proc = await start(f"--log-format={log_format}", "run", f"--kubeconfig={config}", "--metrics-port=0",
                       "--health-port=0")
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while len(lines) < 2 and time.monotonic() < deadline:
        lines.append((await asyncio.wait_for(proc.stderr.readline(), timeout=30)).decode().rstrip("\n"))
    await stop(proc)
    if log_format == "json":
        docs = [json.loads(line) for line in lines]
        assert [d["level"] for d in docs] == ["warning", "warning"]
        messages = [d["message"] for d in docs]
    else:
        assert all(" WARNING torchproof.connection: " in line for line in lines), lines
        messages = [line.split(" WARNING torchproof.connection: ", 1)[1] for line in lines]
    assert messages[0].startswith("retrying in 1s: list profiles failed (0): ")
    assert messages[1].startswith("retrying in 2s: list profiles failed (0): ")
    assert not any("Traceback" in line for line in lines)


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


async def test_run_serves_healthz_on_the_health_address(env: Rig, tmp_path: Path) -> None:
    config = await env.operator_kubeconfig(tmp_path / "kubeconfig")
    port = free_port()
    proc = await start("run", "--standalone", f"--kubeconfig={config}", "--metrics-port=0",
                       "--health-address=127.0.0.1", f"--health-port={port}")
    try:
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(healthz, port) != 200:
            assert time.monotonic() < deadline and proc.returncode is None, "no /healthz on 127.0.0.1"
            await asyncio.sleep(0.2)
    finally:
        _, err = await stop(proc)
    assert proc.returncode == 0, err[-2000:]


async def test_simulate_waiting_logs_progress_per_profile(env: Rig, caplog: pytest.LogCaptureFixture) -> None:
    async with env.operator(batch_window=0.02, status_interval=0.1):
        await env.apply(profile(maxConcurrent=1))
        with caplog.at_level(logging.INFO, "torchproof.progress"):
            assert await wait_settled(env.cluster, [NAME], timeout=60, every=0.05)
        await eventually(env.converged, what="convergence")
    lines = [r.getMessage() for r in caplog.records if r.name == "torchproof.progress"]
    assert lines, "no progress line while waiting"
    counted = [line for line in lines if line != f"{NAME}: no status yet"]
    assert all(line.startswith(f"{NAME}: ") and line.endswith(" of 5 nodes have a verdict") for line in counted), lines
    done = [int(line.split()[1]) for line in counted]
    assert done == sorted(done) and done[-1] < 5


async def test_run_without_the_crd_says_to_install_it(tmp_path: Path) -> None:
    async with EmbeddedCluster() as cluster:  # no CRD: listing profiles is a 404
        config = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        proc = await start("run", f"--kubeconfig={config}", "--metrics-port=0", "--health-port=0")
        out, err = (s.decode() for s in await asyncio.wait_for(proc.communicate(), timeout=60))
    assert (proc.returncode, out) == (1, "")
    assert err.startswith("torchproof run: list profiles failed (404): ") and err.count("\n") == 1
    assert err.endswith(" (is the CRD installed? kubectl apply -k deploy/crd)\n")
