"""Builders for the pure-core tests: the 20.06 profile, realistic Node objects, contract-shaped results, pods."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from torchproof.contract import RESULT_SCHEMA
from torchproof.profile import Profile
from torchproof.views import NodeView, node_view
from torchproof_sim.fleet import build_node, parse_fleet

ROOT = Path(__file__).resolve().parents[2]
PROFILE_PATH = ROOT / "profiles" / "pytorch-20.06.yaml"


def profile_body(**spec_overrides: Any) -> dict[str, Any]:
    body = yaml.safe_load(PROFILE_PATH.read_text())
    body["metadata"].update({"uid": "uid-1", "generation": 1})
    body["spec"].update(spec_overrides)
    return body


def make_node_body(
    name: str, product: str | None = "Tesla T4", driver: str = "450.51.06", **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, **extra}
    if product is not None:
        entry["gpu"] = {"product": product, "count": 1, "driver": driver}
    return build_node(parse_fleet({"nodes": [entry]}).nodes[0])


def make_node(name: str, product: str | None = "Tesla T4", driver: str = "450.51.06", **extra: Any) -> NodeView:
    return node_view(make_node_body(name, product, driver, **extra))


BASE_RESULT: dict[str, Any] = {
    "schema": RESULT_SCHEMA,
    "probe": "1.0",
    "device": "cuda",
    "seconds": 11.8,
    "env": {
        "python": "3.6.10", "torch": "1.6.0a0+9907a3e", "cuda": "11.0", "cudnn": "8.0.1", "nccl": "2.7.5",
        "apex": True, "vars": {"NVIDIA_PYTORCH_VERSION": "20.06", "CUDA_VERSION": "11.0.167"},
    },
    "gpu": {
        "source": "nvml", "driver": "450.51.06", "cudaDriver": "11.0", "count": 1,
        "devices": [{"index": 0, "name": "Tesla T4", "brand": "Tesla", "uuid": "GPU-1", "cc": "7.5",
                     "memoryMiB": 15109, "ecc": True, "eccErrors": 0, "mig": False}],
    },
    "checks": {
        "environment": {"status": "ok", "seconds": 0.01},
        "gpu": {"status": "ok", "seconds": 0.05},
        "cuda": {"status": "ok", "seconds": 1.9, "available": True, "kernelOk": True},
        "amp": {"status": "ok", "seconds": 2.1,
                "native": {"api": "torch.cuda.amp", "dtype": "float16", "steps": 8, "firstLoss": 2.31,
                           "lastLoss": 1.02, "finite": True, "decreased": True, "maxRelError": 0.004,
                           "skippedSteps": 0},
                "apex": {"api": "apex.amp", "dtype": "float16", "steps": 8, "firstLoss": 2.31, "lastLoss": 1.05,
                         "finite": True, "decreased": True, "maxRelError": 0.005, "skippedSteps": 0},
                "bf16": {"skipped": "compute capability 7.5 < 8.0"}},
        "tensorCores": {"status": "ok", "seconds": 1.2, "size": 4096, "fp32": 7.9, "fp16": 52.1, "bf16": None,
                        "tf32": None, "fp16Speedup": 6.6, "bf16Speedup": None, "tf32Speedup": None},
        "channelsLast": {"status": "ok", "seconds": 0.4, "finite": True, "maxRelError": 0.002},
        "conv3d": {"status": "ok", "seconds": 0.6, "iterations": 5, "nanCount": 0},
        "multiGpu": {"status": "skipped", "seconds": 0.0, "reason": "1 GPU in the pod"},
        "memory": {"status": "ok", "seconds": 0.8, "devices": 1, "freeMiB": 14509, "testedMiB": 11607, "mismatches": 0,
                   "eccErrors": 0, "complete": True},
    },
}


def make_result(change: Callable[[dict[str, Any]], None] | None = None) -> str:
    doc = copy.deepcopy(BASE_RESULT)
    if change is not None:
        change(doc)
    return json.dumps(doc)


def result_for(node: dict[str, Any]) -> str:
    """A healthy result from the GPU a node's GPU Feature Discovery labels describe, as a real probe there gives."""
    labels = node["metadata"].get("labels", {})

    def observed(doc: dict[str, Any]) -> None:
        doc["gpu"]["driver"] = labels["nvidia.com/cuda.driver-version.full"]
        doc["gpu"]["devices"][0].update(
            name=labels["nvidia.com/gpu.product"].replace("-", " ", 1),
            cc=f"{labels['nvidia.com/gpu.compute.major']}.{labels['nvidia.com/gpu.compute.minor']}",
        )

    return make_result(observed)


def pod_body(
    profile: Profile, node: NodeView, *, phase: str = "Running", created: str = "2026-01-01T00:00:00Z",
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from torchproof.podspec import build_pod

    body = build_pod(profile, node=node.name, fingerprint=node.fingerprint, namespace="torchproof", configmap="cm")
    body["metadata"]["creationTimestamp"] = created
    body["status"] = {"phase": phase, **(status or {})}
    return body


def terminated(message: str | None, *, reason: str = "Completed", exit_code: int = 0) -> dict[str, Any]:
    state = {"exitCode": exit_code, "reason": reason}
    if message is not None:
        state["message"] = message
    return {"containerStatuses": [{"name": "probe", "state": {"terminated": state}}]}
