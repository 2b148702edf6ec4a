"""Fleet parsing, the Nodes it builds, the image table and the simulated probe's view of hardware."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from torchproof.result import parse_result
from torchproof.versions import ComputeCapability, DriverVersion
from torchproof_sim.fleet import FleetError, build_node, load_fleet, parse_fleet
from torchproof_sim.hardware import (
    ProbeSetting,
    board,
    cuda_for_driver,
    encode_result,
    parse_driver,
    probe_result,
)
from torchproof_sim.images import IMAGES, driver_runs, has_kernels, lookup_image

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"
T4 = {"product": "Tesla T4", "driver": "450.51.06"}


def one(entry: dict[str, Any]) -> Any:
    return parse_fleet({"nodes": [entry]}).nodes[0]


def test_example_fleet_loads_with_every_kind_of_node() -> None:
    fleet = load_fleet(EXAMPLE)
    assert 14 <= len(fleet.nodes) <= 18
    products = {n.gpu.board.product for n in fleet.nodes if n.gpu}
    for needle in ("K80", "M60", "P100", "V100", "T4", "A100", "RTX 2080 Ti"):
        assert any(needle in p for p in products), needle
    assert any(n.gpu is None for n in fleet.nodes)
    assert any(not n.gfd and n.gpu for n in fleet.nodes)
    assert any(not n.ready for n in fleet.nodes) and any(n.unschedulable for n in fleet.nodes)
    faults = set().union(*(n.faults for n in fleet.nodes))
    assert {"pending", "oomKilled", "ampNaN"} <= faults


def test_defaults_replicas_taints_and_overrides() -> None:
    fleet = parse_fleet({
        "defaults": {"labels": {"zone": "a"}, "probeSeconds": 0.5, "kernelVersion": "6.1.0"},
        "nodes": [{"name": "t4", "gpu": {**T4, "count": 2}, "replicas": 3, "labels": {"rack": "r1"},
                   "taints": ["nvidia.com/gpu=present:NoSchedule", {"key": "x", "effect": "NoExecute"}]},
                  {"name": "cpu", "probeSeconds": 2}],
    })
    assert fleet.names == ("t4-0", "t4-1", "t4-2", "cpu")
    t4 = fleet.nodes[0]
    assert dict(t4.labels) == {"zone": "a", "rack": "r1"}
    assert t4.probe_seconds == 0.5 and t4.kernel_version == "6.1.0" and t4.gpu_count == 2
    assert [(t.key, t.value, t.effect) for t in t4.taints] == [
        ("nvidia.com/gpu", "present", "NoSchedule"), ("x", "", "NoExecute")]
    assert fleet.nodes[3].probe_seconds == 2.0 and fleet.nodes[3].gpu is None


@pytest.mark.parametrize(("data", "message"), [
    ([], "fleet: expected a mapping"),
    ({"nodes": {}}, "nodes: expected a list"),
    ({"nodes": [], "extra": 1}, "fleet.extra: unknown key"),
    ({"nodes": [{"name": "a", "colour": "red"}]}, "nodes[0].colour: unknown key"),
    ({"nodes": [{"gpu": T4}]}, "nodes[0].name: expected a non-empty string"),
    ({"nodes": [{"name": "Bad_Name"}]}, "nodes[0].name: not a valid node name"),
    ({"nodes": [{"name": "a"}, {"name": "a"}]}, "nodes[1].name: duplicate node name 'a'"),
    ({"nodes": [{"name": "a", "replicas": 2}, {"name": "a-1"}]}, "nodes[1].name: duplicate node name 'a-1'"),
    ({"nodes": [{"name": "a", "replicas": 0}]}, "nodes[0].replicas: expected an integer >= 1"),
    ({"nodes": [{"name": "a", "gpu": {**T4, "driver": "45x"}}]}, 'nodes[0].gpu.driver: not a driver version "45x"'),
    ({"nodes": [{"name": "a", "gpu": {**T4, "driver": 450.51}}]}, "nodes[0].gpu.driver: expected a quoted version"),
    ({"nodes": [{"name": "a", "gpu": {"product": "Tesla T4"}}]}, "nodes[0].gpu.driver: expected a quoted"),
    ({"nodes": [{"name": "a", "gpu": {**T4, "count": 0}}]}, "nodes[0].gpu.count: expected an integer >= 1"),
    ({"nodes": [{"name": "a", "gpu": {**T4, "colour": 1}}]}, "nodes[0].gpu.colour: unknown key"),
    ({"nodes": [{"name": "a", "gpu": {**T4, "product": "Voodoo 5"}}]}, "nodes[0].gpu.product: unknown GPU"),
    ({"nodes": [{"name": "a", "gpu": {**T4, "computeCapability": 7.5}}]},
     "nodes[0].gpu.computeCapability: expected a quoted value"),
    ({"nodes": [{"name": "a", "gpu": {**T4, "computeCapability": "4.2"}}]},
     "nodes[0].gpu.computeCapability: no known architecture"),
    ({"nodes": [{"name": "a", "faults": ["meltdown"]}]}, "nodes[0].faults[0]: unknown fault 'meltdown'"),
    ({"nodes": [{"name": "a", "faults": "crash"}]}, "nodes[0].faults: expected a list"),
    ({"nodes": [{"name": "a", "ready": "yes"}]}, "nodes[0].ready: expected true or false"),
    ({"nodes": [{"name": "a", "labels": {"x": True}}]}, "nodes[0].labels.x: not a valid label value"),
    ({"nodes": [{"name": "a", "labels": {"bad key": "v"}}]}, "nodes[0].labels.bad key: not a valid label key"),
    ({"nodes": [{"name": "a", "taints": ["x=y:Sometimes"]}]}, "nodes[0].taints[0]: unknown taint effect"),
    ({"nodes": [{"name": "a", "taints": ["novalue"]}]}, "nodes[0].taints[0]: not a taint"),
    ({"nodes": [{"name": "a", "probeSeconds": 0}]}, "nodes[0].probeSeconds: expected a number of seconds > 0"),
    ({"defaults": {"gpu": T4}, "nodes": []}, "defaults.gpu: unknown key"),
    ({"defaults": {"faults": ["nope"]}, "nodes": []}, "defaults.faults[0]: unknown fault"),
])
def test_bad_fleet_names_the_path(data: Any, message: str) -> None:
    with pytest.raises(FleetError) as caught:
        parse_fleet(data)
    assert str(caught.value).startswith(message)


def test_load_fleet_reports_yaml_errors_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("nodes: [\n")
    with pytest.raises(FleetError, match=str(path)):
        load_fleet(path)


def test_gfd_node_labels_capacity_and_node_info() -> None:
    node = one({"name": "t4-a", "gpu": {"product": "Tesla T4", "count": 4, "driver": "418.87.01"},
                "labels": {"team": "ml"}})
    obj = build_node(node)
    labels = obj["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k.startswith("nvidia.com/")} == {
        "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.count": "4",
        "nvidia.com/gpu.memory": "15109", "nvidia.com/gpu.family": "turing",
        "nvidia.com/gpu.compute.major": "7", "nvidia.com/gpu.compute.minor": "5",
        "nvidia.com/cuda.driver-version.major": "418", "nvidia.com/cuda.driver-version.minor": "87",
        "nvidia.com/cuda.driver-version.revision": "01", "nvidia.com/cuda.driver-version.full": "418.87.01",
        "nvidia.com/cuda.driver.major": "418", "nvidia.com/cuda.driver.minor": "87", "nvidia.com/cuda.driver.rev": "01",
        "nvidia.com/cuda.runtime-version.major": "10", "nvidia.com/cuda.runtime-version.minor": "1",
        "nvidia.com/cuda.runtime-version.full": "10.1", "nvidia.com/mig.capable": "false",
    }
    assert labels["kubernetes.io/hostname"] == "t4-a" and labels["kubernetes.io/os"] == "linux"
    assert labels["team"] == "ml"
    assert obj["status"]["capacity"]["nvidia.com/gpu"] == obj["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Ready"] == "True"
    assert obj["spec"] == {"unschedulable": False}
    info = obj["status"]["nodeInfo"]
    assert info["bootID"] == build_node(node)["status"]["nodeInfo"]["bootID"]  # stable for a name
    assert info["kernelVersion"] and info["kubeletVersion"].startswith("v1.") and info["osImage"]


def test_node_without_gfd_still_advertises_gpus_but_no_gpu_labels() -> None:
    obj = build_node(one({"name": "quiet", "gpu": {**T4, "count": 2}, "gfd": False}))
    assert not [k for k in obj["metadata"]["labels"] if k.startswith("nvidia.com/")]
    assert obj["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in build_node(one({"name": "cpu"}))["status"]["capacity"]


def test_cordoned_and_not_ready_nodes_carry_their_conditions_and_taints() -> None:
    obj = build_node(one({"name": "x", "gpu": T4, "ready": False, "unschedulable": True}))
    assert obj["spec"]["unschedulable"] is True
    assert {t["key"] for t in obj["spec"]["taints"]} == {
        "node.kubernetes.io/unschedulable", "node.kubernetes.io/not-ready"}
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Ready"] == "False"


def test_ampere_and_ada_labels_and_brands() -> None:
    a100 = one({"name": "a", "gpu": {"product": "A100-SXM4-40GB", "driver": "450.80.02"}})
    labels = build_node(a100)["metadata"]["labels"]
    assert labels["nvidia.com/gpu.family"] == "ampere" and labels["nvidia.com/mig.capable"] == "true"
    assert labels["nvidia.com/gpu.memory"] == str(40 * 1013)
    assert a100.gpu.board.brand == "NVIDIA"
    l4 = one({"name": "l", "gpu": {"product": "NVIDIA L4", "driver": "550.54.15"}})
    assert build_node(l4)["metadata"]["labels"]["nvidia.com/gpu.family"] == "ada-lovelace"
    assert board("GeForce RTX 2080 Ti").brand == "GeForce" and not board("GeForce RTX 2080 Ti").datacenter
    assert board("Quadro RTX 6000").brand == "Quadro"
    custom = board("Mystery X", compute_capability="8.6", datacenter=True, brand="Datacenter")
    assert (custom.architecture, custom.brand, custom.datacenter) == ("Ampere", "Datacenter", True)


def test_set_driver_gives_a_new_boot_id() -> None:
    node = one({"name": "n", "gpu": T4})
    rebooted = node.with_driver(parse_driver("470.57.02"))
    assert rebooted.boot_id != node.boot_id
    assert build_node(rebooted)["metadata"]["labels"]["nvidia.com/cuda.runtime-version.full"] == "11.4"


@pytest.mark.parametrize(("driver", "cuda"), [
    ("418.87.01", "10.1"), ("440.33.01", "10.2"), ("450.51.06", "11.0"), ("455.23", "11.1"), ("460.27.03", "11.2"),
    ("465.19.01", "11.3"), ("470.57.02", "11.4"), ("510.47.03", "11.6"), ("525.85.12", "12.0"),
    ("535.104.05", "12.2"), ("545.23.08", "12.3"), ("550.54.15", "12.4"), ("560.35.03", "12.6"),
    ("570.86.10", "12.8"), ("471.11", "11.4"),
])
def test_cuda_version_follows_the_driver_branch(driver: str, cuda: str) -> None:
    assert cuda_for_driver(DriverVersion.parse(driver)) == cuda


def test_image_table_covers_the_reference_releases() -> None:
    releases = {image.release for image in IMAGES.values()}
    assert releases == {"20.03", "20.06", "20.12", "21.06", "23.10", "24.10", "25.01"}
    image = lookup_image("nvcr.io/nvidia/pytorch:20.06-py3")
    assert image is not None
    assert (image.torch, image.cuda, image.cuda_short, image.cudnn, image.nccl) == (
        "1.6.0a0+9907a3e", "11.0.167", "11.0", "8.0.1", "2.7.5")
    assert image.env == {"NVIDIA_PYTORCH_VERSION": "20.06", "CUDA_VERSION": "11.0.167"}
    assert lookup_image("nvcr.io/nvidia/pytorch:99.01-py3") is None


@pytest.mark.parametrize(("release", "driver", "datacenter", "runs"), [
    ("20.06", "450.51.06", False, True),
    ("20.06", "440.100", False, False),
    ("20.06", "440.33.01", True, True),
    ("20.06", "440.26", True, False),
    ("20.06", "418.87.01", True, True),
    ("20.06", "410.104", True, False),
    ("20.03", "440.33.01", False, True),
    ("21.06", "460.27.04", True, True),
    ("21.06", "460.20", True, False),
    ("25.01", "535.86.10", True, True),
    ("25.01", "535.86.10", False, False),
])
def test_driver_rules(release: str, driver: str, datacenter: bool, runs: bool) -> None:
    image = lookup_image(f"nvcr.io/nvidia/pytorch:{release}-py3")
    assert image is not None
    assert driver_runs(image, DriverVersion.parse(driver), datacenter=datacenter) is runs


@pytest.mark.parametrize(("release", "cc", "ok"), [
    ("20.06", "3.7", False), ("20.06", "5.2", False), ("20.06", "6.0", True), ("20.06", "8.0", True),
    ("25.01", "7.0", False), ("25.01", "7.5", True),
])
def test_kernel_coverage(release: str, cc: str, ok: bool) -> None:
    image = lookup_image(f"nvcr.io/nvidia/pytorch:{release}-py3")
    assert image is not None
    assert has_kernels(image, ComputeCapability.parse(cc)) is ok


FULL_PLAN = {"device": "cuda", "checks": {
    "environment": {}, "gpu": {}, "cuda": {}, "amp": {"steps": 8, "native": True, "apex": True, "bf16": True},
    "tensorCores": {"size": 4096}, "channelsLast": {}, "conv3d": {"iterations": 5}, "multiGpu": {}}}


def setting(product: str, driver: str, release: str, visible: int = 1) -> ProbeSetting:
    image = lookup_image(f"nvcr.io/nvidia/pytorch:{release}-py3")
    assert image is not None
    return ProbeSetting(image=image, board=board(product), visible=visible, driver=DriverVersion.parse(driver),
                        node="n")


@pytest.mark.parametrize(("product", "low", "high"), [
    ("Tesla P100-PCIE-16GB", 1.5, 2.0), ("Tesla V100-SXM2-16GB", 6, 8), ("Tesla T4", 6, 8),
    ("A100-SXM4-40GB", 11, 13),
])
def test_tensor_core_speedups_are_realistic(product: str, low: float, high: float) -> None:
    result = probe_result(setting(product, "450.80.02", "20.06"), FULL_PLAN)
    assert low <= result["checks"]["tensorCores"]["fp16Speedup"] < high


def test_bf16_and_tf32_need_ampere_and_a_new_enough_torch() -> None:
    old = probe_result(setting("A100-SXM4-40GB", "450.80.02", "20.06"), FULL_PLAN)["checks"]
    assert old["amp"]["bf16"] == {"skipped": "torch 1.6.0a0+9907a3e has no torch.autocast"}
    assert old["tensorCores"]["bf16"] is None and old["tensorCores"]["tf32"] is None
    new = probe_result(setting("A100-SXM4-40GB", "535.104.05", "23.10"), FULL_PLAN)["checks"]
    assert new["amp"]["bf16"]["dtype"] == "bfloat16" and new["tensorCores"]["tf32Speedup"] > 5
    t4 = probe_result(setting("Tesla T4", "535.104.05", "23.10"), FULL_PLAN)["checks"]
    assert t4["amp"]["bf16"] == {"skipped": "compute capability 7.5 < 8.0"}
    no_native = probe_result(setting("Tesla T4", "450.51.06", "20.03"), FULL_PLAN)["checks"]["amp"]
    assert "skipped" in no_native["native"] and no_native["apex"]["finite"] is True


def test_cpu_plan_reports_no_gpu_and_skips_cuda() -> None:
    result = probe_result(setting("Tesla T4", "450.51.06", "20.06"), {**FULL_PLAN, "device": "cpu"})
    assert result["device"] == "cpu" and result["gpu"]["source"] == "none" and result["gpu"]["note"]
    assert result["checks"]["cuda"]["status"] == "skipped"
    assert result["checks"]["tensorCores"]["bf16Speedup"] is not None
    parse_result(encode_result(result))


def test_results_stay_within_4096_bytes_even_with_long_names() -> None:
    long = setting("Tesla T4", "450.51.06", "20.06", visible=8)
    long = ProbeSetting(**{**long.__dict__, "board": board("Tesla T4 " + "X" * 150)})
    text = encode_result(probe_result(long, FULL_PLAN))
    assert len(text.encode()) <= 4096
    parsed = parse_result(text)
    assert parsed.gpu.count == 8 and len(parsed.gpu.devices) == 8
    assert json.loads(text)["checks"].keys() == FULL_PLAN["checks"].keys()
