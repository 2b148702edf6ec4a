"""examples/profile-cpu-dryrun.yaml on a fleet without GPUs, as on kind: the workers pass as a CPU dry run."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from torchproof import labels as L

from tests.support.polling import eventually
from tests.support.rig import FAST, Rig, rig_fixture

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "profile-cpu-dryrun.yaml").read_text())
NAME = EXAMPLE["metadata"]["name"]
KIND_FLEET = [
    {"name": "kind-control-plane", "labels": {"node-role.kubernetes.io/control-plane": ""},
     "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
    {"name": "kind-worker"},
    {"name": "kind-worker2"},
]
WORKERS = ("kind-worker", "kind-worker2")

env = rig_fixture(KIND_FLEET)


async def test_the_cpu_dry_run_labels_the_workers_passed_with_no_gpu_asked(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(EXAMPLE)
        await eventually(lambda: env.converged(NAME), "the profile to converge", 20.0)
        key = L.label_key(NAME)
        assert {n: env.label(n, key) for n in (*WORKERS, "kind-control-plane")} == {
            "kind-worker": "passed", "kind-worker2": "passed", "kind-control-plane": None}
        for node in WORKERS:
            record = json.loads(env.node(node)["metadata"]["annotations"][L.result_annotation_key(NAME)])
            assert record["verdict"] == "passed"
            assert any(f.startswith("CpuDryRun") for f in record["findings"]), record
        status = env.status(NAME)
        assert {k: status["counts"][k] for k in ("passed", "error", "total")} == {"passed": 2, "error": 0, "total": 2}
        assert env.condition("Ready", NAME)["status"] == "True"
        assert {node for (_, node) in env.kubelet.stats.max_live} == set(WORKERS)
