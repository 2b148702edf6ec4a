"""`torchproof status` against a running cluster: the fleet table read back from labels, records and status,
and one-line errors when there is no cluster to read."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.support.polling import eventually
from tests.support.rig import FAST, KEY, NAME, Rig, profile


async def status(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "torchproof.cli", "status", *args, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_prints_every_nodes_verdict_as_the_labels_say(env: Rig, tmp_path: Path) -> None:
    config = env.cluster.write_kubeconfig(tmp_path / "kubeconfig")
    async with env.operator(**FAST):
        await env.apply(profile())
        await eventually(env.converged, timeout=60, what="convergence")
        code, out, err = await status(f"--kubeconfig={config}")
        assert code == 0, err
        rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith(" ")}
        for node in ("t4-a", "v100-a", "k80-a", "rtx-a", "hidden-v100", "cpu-1"):
            assert rows[node].split("  ")[0] == node
            verdict = env.label(node) or "-"
            assert f"  {verdict}" in rows[node], rows[node]
        assert "4x Tesla T4" in rows["t4-a"] and "DriverTooOld" in rows["rtx-a"]
        assert "Tesla V100-SXM2-16GB" in rows["hidden-v100"]  # no GFD labels: what the probe saw
        assert any(line.startswith("Ready=True (Converged)") for line in out.splitlines())

        code, out, err = await status(f"--kubeconfig={config}", "--json", f"--profile={NAME}")
        assert code == 0, err
        (shown,) = json.loads(out)["profiles"]
        assert {n["node"]: n["verdict"] for n in shown["nodes"]} == {
            n: env.label(n) for n in ("t4-a", "v100-a", "k80-a", "rtx-a", "hidden-v100", "cpu-1")}
        assert env.node("t4-a")["metadata"]["labels"][KEY] == "passed"


async def test_status_without_a_cluster_says_so_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, out, err = await status(f"--kubeconfig={missing}", env={"KUBERNETES_SERVICE_HOST": ""})
    assert (code, out) == (2, "")
    assert err.startswith("torchproof status: no cluster to read") and err.count("\n") == 1

    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}], "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    code, out, err = await status(f"--kubeconfig={config}")
    assert (code, out) == (1, "")
    assert err.startswith("torchproof status: list nodes failed (0)") and err.count("\n") == 1
