"""parse_profile: the 20.06 profile carries the seed's facts; defaults; every bad path is named."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchproof.profile import (
    Checks,
    InvalidSpec,
    LabelSelector,
    PodSecurity,
    SelectorRequirement,
    ValidationSettings,
    parse_duration,
    parse_profile,
)
from torchproof.versions import ComputeCapability, DriverVersion

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT.parent / "shared" / "seeds" / "pytorch-release-20.06.txt").read_text()
REFERENCE = (ROOT.parent / "shared" / "reference" / "ngc-pytorch.md").read_text()
SAMPLE: dict[str, Any] = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
PROFILE = parse_profile(SAMPLE)
GPU_CHECKS = ("cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu")


def minimal() -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "spec": {
            "release": "20.06",
            "image": "nvcr.io/nvidia/pytorch:20.06-py3",
            "requirements": {"driver": {"minimum": "450"}, "minComputeCapability": "6.0"},
        },
    }


# ---- the 20.06 profile against the seed -----------------------------------------------------------


def test_driver_requirements_are_the_seeds() -> None:
    minimum = re.search(r"requires NVIDIA Driver release (\d+) or later", SEED)
    branches = re.search(r"driver release (\d+)\.xx or (\d+\.\d+)", SEED)
    assert minimum and branches
    driver = PROFILE.requirements.driver
    assert driver.minimum == DriverVersion.parse(minimum.group(1))
    # "418.xx" is NVIDIA's R418 branch, whose forward-compatibility support starts at 418.40.04 (CUDA
    # compatibility documentation; later notes say "418.40 (or later R418)"): not "any 418 driver".
    assert branches.group(1) == "418"
    assert [(b.branch, str(b.minimum)) for b in driver.datacenter_branches] == [
        (418, "418.40.04"),
        (int(branches.group(2).split(".")[0]), branches.group(2)),
    ]


def test_gpu_requirements_are_the_seeds() -> None:
    found = re.search(r"compute capability (\d+\.\d+) and higher.*?the (\w+), (\w+), and (\w+) families", SEED)
    assert found
    assert PROFILE.requirements.min_compute_capability == ComputeCapability.parse(found.group(1))
    assert PROFILE.requirements.architectures == frozenset(found.group(2, 3, 4))
    assert PROFILE.requirements.max_compute_capability is None


def test_components_are_the_seeds_and_the_reference_tables() -> None:
    cuda = re.search(r"based on NVIDIA CUDA (\d+\.\d+\.\d+)", SEED)
    python = re.search(r"/opt/conda/lib/python(\d+\.\d+)/", SEED)
    row = re.search(r"^\| 20\.06 \|(.*)\|$", REFERENCE, re.MULTILINE)
    assert cuda and python and row
    pytorch, cuda_ref, python_ref, ubuntu, cudnn, nccl, tensorrt = (c.strip() for c in row.group(1).split("|"))
    c = PROFILE.components
    assert (c.cuda, c.python) == (cuda.group(1), python.group(1))
    assert (c.pytorch, c.cuda, c.python, c.ubuntu, c.cudnn, c.nccl, c.tensorrt) == (
        pytorch, cuda_ref, python_ref, ubuntu, cudnn, nccl, tensorrt,
    )
    assert PROFILE.image == "nvcr.io/nvidia/pytorch:20.06-py3"
    assert PROFILE.release == "20.06"


def test_the_24_10_profile_carries_the_reference_rows() -> None:
    p = parse_profile(yaml.safe_load((ROOT / "profiles" / "pytorch-24.10.yaml").read_text()))
    row = re.search(r"^\| 24\.10 \|(.*)\|$", REFERENCE, re.MULTILINE)
    driver_row = re.search(r"^\| 24\.10 \| (\d+) \| ([^|]*) \| (\d+\.\d+)\+", REFERENCE, re.MULTILINE)
    assert row and driver_row
    c = p.components
    assert [x.strip() for x in row.group(1).split("|")] == [
        c.pytorch, c.cuda, c.python, c.ubuntu, c.cudnn, c.nccl, c.tensorrt,
    ]
    assert str(p.requirements.driver.minimum) == driver_row.group(1)
    assert [f"{b.minimum}+" for b in p.requirements.driver.datacenter_branches] == [
        x.strip() for x in driver_row.group(2).split(",")
    ]
    assert str(p.requirements.min_compute_capability) == driver_row.group(3)


def test_both_amp_flavours_are_checked() -> None:
    assert "through the native implementation as well as a preinstalled release of Apex" in SEED
    amp = PROFILE.checks.amp
    assert amp.enabled and amp.native and amp.apex


def _regressions() -> list[tuple[str, int, str]]:
    """(architecture, percent, bullet) for each "Known <Arch> performance regressions" bullet."""
    out: list[tuple[str, int, str]] = []
    for block in re.finditer(r"Known (\w+) performance regressions.*?:\n(.*?)(?=\n  • |\Z)", SEED, re.DOTALL):
        for bullet in re.findall(r"• (Up to \d+% .*)", block.group(2)):
            out.append((block.group(1), int(re.findall(r"\d+", bullet)[0]), bullet))
    return out


def test_seed_has_the_expected_regressions() -> None:
    assert sorted(p for _, p, _ in _regressions()) == [10, 10, 10, 11, 19, 25, 30]


@pytest.mark.parametrize(("architecture", "percent", "bullet"), _regressions())
def test_every_regression_is_a_known_issue(architecture: str, percent: int, bullet: str) -> None:
    models = [m for m in re.findall(r"on (\w+)", bullet) if m not in ("NVIDIA",)]
    precision = "fp32" if "FP32" in bullet else "amp"
    matches = [
        i for i in PROFILE.known_issues
        if f"Up to {percent}%" in i.summary and all(m in i.summary for m in models)
        and i.architectures == {architecture} and precision in i.precisions
    ]
    assert len(matches) == 1, bullet


@pytest.mark.parametrize(
    ("seed_text", "workaround_text", "architectures"),
    [
        ("torch._C._jit_set_profiling_executor(False)", "torch._C._jit_set_profiling_executor(False)", set()),
        ("torch.logdet(W.unsqueeze(0).float()).squeeze()", "torch.logdet(W.unsqueeze(0).float()).squeeze()", set()),
        ("torch.backends.cudnn.enabled = False", "torch.backends.cudnn.enabled = False", set()),
        ("On NVIDIA Ampere architecture based GPUs unexpected NaN", "default memory format", {"Ampere"}),
    ],
)
def test_every_workaround_is_carried(seed_text: str, workaround_text: str, architectures: set[str]) -> None:
    assert seed_text in SEED
    carrying = [i for i in PROFILE.known_issues if i.workaround and workaround_text in i.workaround]
    assert any(i.architectures == architectures for i in carrying)


def test_transformer_xl_issue_keeps_its_percentage() -> None:
    assert "up to 5% performance drop on Transformer-XL mixed precision" in SEED
    assert any("Up to 5%" in i.summary and "Transformer-XL" in i.summary for i in PROFILE.known_issues)


def test_known_issue_count_matches_the_seeds_bullets() -> None:
    bullets = len(re.findall(r"^  • ", SEED.split("Known Issues")[1], re.MULTILINE))
    headings = len(re.findall(r"Known \w+ performance regressions", SEED))
    # each regression heading holds sub-bullets; the channels-last bullet carries two issues
    assert len(PROFILE.known_issues) == bullets - headings + len(_regressions()) + 1


# ---- defaults and values --------------------------------------------------------------------------


def test_defaults_match_the_documented_ones() -> None:
    p = parse_profile(minimal())
    assert (p.name, p.generation, p.uid) == ("p", 1, None)
    assert p.image_pull_policy == "IfNotPresent"
    assert p.image_pull_secrets == ()
    assert p.checks == Checks()
    assert (p.checks.amp.steps, p.checks.amp.tolerance, p.checks.tensor_cores.size) == (8, 0.05, 4096)
    assert (p.checks.tensor_cores.iterations, p.checks.tensor_cores.min_speedup) == (20, 2.0)
    assert p.checks.time_budget_seconds == 120
    assert p.validation == ValidationSettings()
    assert (p.validation.gpus_per_probe, p.validation.runtime_timeout_seconds) == (1, 600)
    assert p.validation.pending_timeout_seconds == 300
    assert (p.max_concurrent, p.revalidate_after_seconds, p.node_selector) == (10, None, None)
    assert p.known_issues == ()
    assert p.requirements.architectures == frozenset()


def test_metadata_and_settings_are_read() -> None:
    obj = minimal()
    obj["metadata"].update(generation=7, uid="abc-123")
    obj["spec"].update(
        imagePullSecrets=[{"name": "ngc"}],
        revalidateAfter="1h30m",
        nodeSelector={"matchLabels": {"pool": "gpu"}},
        validation={"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "priorityClassName": "low"},
    )
    p = parse_profile(obj)
    assert (p.generation, p.uid, p.image_pull_secrets, p.revalidate_after_seconds) == (7, "abc-123", ("ngc",), 5400)
    assert p.validation.tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert p.validation.priority_class_name == "low"
    assert p.node_selector is not None and p.node_selector.matches({"pool": "gpu"})


def test_parse_does_not_change_its_input() -> None:
    before = copy.deepcopy(SAMPLE)
    parse_profile(SAMPLE)
    assert before == SAMPLE


def test_spec_hash_is_stable_and_tracks_what_a_probe_proves() -> None:
    explicit = parse_profile(SAMPLE)
    assert explicit.spec_hash == PROFILE.spec_hash and re.fullmatch(r"[0-9a-f]{12}", PROFILE.spec_hash)
    assert parse_profile(minimal()).spec_hash == parse_profile(minimal()).spec_hash

    def changed(edit: Callable[[dict[str, Any]], None]) -> bool:
        obj = copy.deepcopy(SAMPLE)
        edit(obj)
        return parse_profile(obj).spec_hash != PROFILE.spec_hash

    assert changed(lambda o: o["spec"].update(image="nvcr.io/nvidia/pytorch:20.07-py3"))
    assert changed(lambda o: o["spec"]["checks"]["amp"].update(steps=9))
    assert changed(lambda o: o["spec"]["requirements"]["driver"].update(minimum="455"))
    assert not changed(lambda o: o["spec"].update(maxConcurrent=3))
    assert not changed(lambda o: o["spec"].update(revalidateAfter="24h"))
    assert not changed(lambda o: o["spec"].pop("knownIssues"))
    assert not changed(lambda o: o["metadata"].update(generation=5))
    # spelling a default out is the same spec
    assert not changed(lambda o: o["spec"]["checks"].update(timeBudgetSeconds=120))


def test_spec_hash_tracks_what_the_probe_runs_on_and_as_but_not_storage() -> None:
    def changed(validation: dict[str, Any]) -> bool:
        obj = copy.deepcopy(SAMPLE)
        obj["spec"]["validation"].update(validation)
        return parse_profile(obj).spec_hash != PROFILE.spec_hash

    # a MIG slice, another runtime, another /dev/shm or another user is another environment to prove
    assert changed({"gpuResource": "nvidia.com/mig-1g.5gb"})
    assert changed({"runtimeClassName": "nvidia"})
    assert changed({"shmSize": "2Gi"})
    assert changed({"securityContext": {"runAsUser": 0, "runAsNonRoot": False}})
    assert changed({"securityContext": {"readOnlyRootFilesystem": False}})
    # defaults spelt out, in other units, and scheduling knobs are the same spec
    assert not changed({"gpuResource": "nvidia.com/gpu", "shmSize": "1024Mi"})
    assert not changed({"securityContext": {"runAsUser": 1000, "runAsNonRoot": True}})
    assert not changed({"resources": {"requests": {"ephemeral-storage": "1Gi"},
                                      "limits": {"ephemeral-storage": "2Gi"}}})


def test_fleet_fields_parse_with_their_defaults() -> None:
    assert PROFILE.validation.gpu_resource == "nvidia.com/gpu"
    assert PROFILE.validation.runtime_class_name is None
    assert PROFILE.validation.shm_size == "1Gi"
    assert PROFILE.validation.security == PodSecurity(run_as_user=1000, run_as_non_root=True,
                                                      read_only_root_filesystem=True)
    obj = minimal()
    obj["spec"]["validation"] = {
        "gpuResource": "nvidia.com/mig-1c.3g.20gb", "runtimeClassName": "nvidia", "shmSize": "512Mi",
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": False},
        "resources": {"requests": {"ephemeral-storage": "5Gi"},
                      "limits": {"memory": "8Gi", "ephemeral-storage": "10Gi"}},
    }
    v = parse_profile(obj).validation
    assert (v.gpu_resource, v.runtime_class_name, v.shm_size) == ("nvidia.com/mig-1c.3g.20gb", "nvidia", "512Mi")
    assert v.security == PodSecurity(run_as_user=0, run_as_non_root=False, read_only_root_filesystem=False)
    assert dict(v.resources["limits"]) == {"memory": "8Gi", "ephemeral-storage": "10Gi"}


@pytest.mark.parametrize("name", ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-7g.80gb",
                                  "nvidia.com/mig-1g.10gb.me", "nvidia.com/mig-1c.4g.20gb"])
def test_gpu_resource_names_of_the_device_plugin_parse(name: str) -> None:
    obj = minimal()
    obj["spec"]["validation"] = {"gpuResource": name}
    assert parse_profile(obj).validation.gpu_resource == name


@pytest.mark.parametrize(("text", "seconds"), [("168h", 604800), ("30m", 1800), ("90s", 90), ("1h30m", 5400)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7d", "1.5h", "h", "10", "-1h", "1h 30m"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_label_selector_matches_like_kubernetes() -> None:
    sel = LabelSelector(
        {"pool": "gpu"},
        (
            SelectorRequirement("zone", "In", ("a", "b")),
            SelectorRequirement("tainted", "DoesNotExist"),
            SelectorRequirement("nvidia.com/gpu.present", "Exists"),
            SelectorRequirement("tier", "NotIn", ("spot",)),
        ),
    )
    good = {"pool": "gpu", "zone": "a", "nvidia.com/gpu.present": "true"}
    assert sel.matches(good)
    assert sel.matches({**good, "tier": "ondemand"})
    assert not sel.matches({**good, "tier": "spot"})
    assert not sel.matches({**good, "pool": "cpu"})
    assert not sel.matches({**good, "zone": "c"})
    assert not sel.matches({**good, "tainted": ""})
    assert not sel.matches({k: v for k, v in good.items() if k != "nvidia.com/gpu.present"})
    assert LabelSelector().matches({})


# ---- every InvalidSpec path -----------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets a dotted path (creating objects on the way) in a profile."""

    def edit(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = obj
        for part in parents:
            node = node[part]
        del node[last]

    return edit


BAD: list[tuple[Callable[[dict[str, Any]], None], str, str]] = [
    (_drop("metadata"), "metadata", "required"),
    (_drop("metadata.name"), "metadata.name", "required"),
    (_set("metadata.name", "x" * 64), "metadata.name", "longer than 63"),
    (_set("metadata.name", "Bad_Name"), "metadata.name", "does not match"),
    (_set("metadata.generation", 0), "metadata.generation", "positive integer"),
    (_drop("spec"), "spec", "required"),
    (_set("spec", []), "spec", "must be an object"),
    (_set("spec.imageTag", "x"), "spec.imageTag", "unknown field"),
    (_drop("spec.release"), "spec.release", "required"),
    (_set("spec.release", "2006"), "spec.release", "does not match"),
    (_set("spec.release", 20.06), "spec.release", "must be a string"),
    (_drop("spec.image"), "spec.image", "required"),
    (_set("spec.image", "nvcr.io/nvidia/pytorch:20.06 py3"), "spec.image", "does not match"),
    (_set("spec.image", "a" * 513), "spec.image", "longer than 512"),
    (_set("spec.imagePullPolicy", "Sometimes"), "spec.imagePullPolicy", "is not one of"),
    (_set("spec.imagePullSecrets", "ngc"), "spec.imagePullSecrets", "must be a list"),
    (_set("spec.imagePullSecrets", [{}]), "spec.imagePullSecrets[0].name", "required"),
    (_set("spec.imagePullSecrets", [{"name": "x"}] * 17), "spec.imagePullSecrets", "at most 16"),
    (_set("spec.components.cuda", "eleven"), "spec.components.cuda", "does not match"),
    (_set("spec.components.torch", "1.6"), "spec.components.torch", "unknown field"),
    (_drop("spec.requirements"), "spec.requirements", "required"),
    (_drop("spec.requirements.driver"), "spec.requirements.driver", "required"),
    (_set("spec.requirements.driver.minimum", "450.x"), "spec.requirements.driver.minimum", "does not match"),
    (_set("spec.requirements.driver.datacenterBranches", [{"branch": 418}]),
     "spec.requirements.driver.datacenterBranches[0].minimum", "required"),
    (_set("spec.requirements.driver.datacenterBranches", [{"branch": 418, "minimum": "440.30"}]),
     "spec.requirements.driver.datacenterBranches[0].minimum", "not on branch 418"),
    (_set("spec.requirements.driver.datacenterBranches", [{"branch": 460, "minimum": "460.1"}]),
     "spec.requirements.driver.datacenterBranches[0].branch", "not older than the minimum driver 450"),
    (_set("spec.requirements.driver.datacenterBranches", [{"branch": 418, "minimum": "418.0"}] * 2),
     "spec.requirements.driver.datacenterBranches[1].branch", "listed twice"),
    (_set("spec.requirements.driver.datacenterBranches", [{"branch": True, "minimum": "418.0"}]),
     "spec.requirements.driver.datacenterBranches[0].branch", "must be an integer"),
    (_drop("spec.requirements.minComputeCapability"), "spec.requirements.minComputeCapability", "required"),
    (_set("spec.requirements.minComputeCapability", "6"), "spec.requirements.minComputeCapability", "does not match"),
    (_set("spec.requirements.maxComputeCapability", "5.0"), "spec.requirements.maxComputeCapability",
     "below minComputeCapability 6.0"),
    (_set("spec.requirements.architectures", ["Ada Lovelace"]), "spec.requirements.architectures[0]",
     "is not one of"),
    (_set("spec.requirements.architectures", ["Volta", "Volta"]), "spec.requirements.architectures[1]",
     "listed twice"),
    (_set("spec.checks.amp.steps", 0), "spec.checks.amp.steps", "outside 1..100"),
    (_set("spec.checks.amp.enabled", "yes"), "spec.checks.amp.enabled", "must be true or false"),
    (_set("spec.checks.amp.tolerance", "0.1"), "spec.checks.amp.tolerance", "must be a number"),
    (_set("spec.checks.amp.tolerance", float("nan")), "spec.checks.amp.tolerance", "outside"),
    (_set("spec.checks.amp", {"native": False, "apex": False, "bf16": False}), "spec.checks.amp",
     "all false"),
    (_set("spec.checks.tensorCores.size", 128), "spec.checks.tensorCores.size", "outside 256..16384"),
    (_set("spec.checks.tensorCores.iterations", 201), "spec.checks.tensorCores.iterations", "outside 1..200"),
    (_set("spec.checks.tensorCores.minSpeedup", -1), "spec.checks.tensorCores.minSpeedup", "outside"),
    (_set("spec.checks.channelsLast.tolerance", 2), "spec.checks.channelsLast.tolerance", "outside"),
    (_set("spec.checks.conv3d.iterations", 0), "spec.checks.conv3d.iterations", "outside 1..100"),
    (_set("spec.checks.multiGpu.gpus", 2), "spec.checks.multiGpu.gpus", "unknown field"),
    (_set("spec.checks.timeBudgetSeconds", 5), "spec.checks.timeBudgetSeconds", "outside 10..3600"),
    # issue 8, section 9: profiles that cannot validate anything
    (_set("spec.checks", {c: {"enabled": False} for c in GPU_CHECKS}), "spec.checks", "cannot be disabled"),
    (_set("spec.checks", {c: {"enabled": False} for c in (*GPU_CHECKS, "environment", "gpu")}), "spec.checks",
     "cannot be disabled"),
    (_set("spec.checks.cuda", {"enabled": False}), "spec.checks", "checks.cuda and checks.gpu cannot be disabled"),
    (_set("spec.checks.gpu", {"enabled": False}), "spec.checks", "checks.cuda and checks.gpu cannot be disabled"),
    (_set("spec.checks.timeBudgetSeconds", 600), "spec.checks.timeBudgetSeconds",
     "must not exceed validation.runtimeTimeoutSeconds"),
    (_set("spec.checks.timeBudgetSeconds", 571), "spec.checks.timeBudgetSeconds", "plus 30s"),
    (_set("spec.validation.runtimeTimeoutSeconds", 149), "spec.checks.timeBudgetSeconds", "plus 30s"),
    (_set("spec.checks.gpu", True), "spec.checks.gpu", "must be an object"),
    (_set("spec.knownIssues", [{"id": "Bad", "summary": "s"}]), "spec.knownIssues[0].id", "does not match"),
    (_set("spec.knownIssues", [{"id": "a"}]), "spec.knownIssues[0].summary", "required"),
    (_set("spec.knownIssues", [{"id": "a", "summary": "s"}] * 2), "spec.knownIssues[1].id", "listed twice"),
    (_set("spec.knownIssues", [{"id": "a", "summary": "s", "precisions": ["int8"]}]),
     "spec.knownIssues[0].precisions[0]", "is not one of"),
    (_set("spec.knownIssues", [{"id": "a", "summary": "s", "severity": "high"}]),
     "spec.knownIssues[0].severity", "is not one of"),
    (_set("spec.knownIssues", [{"id": "a", "summary": "s" * 513}]), "spec.knownIssues[0].summary",
     "longer than 512"),
    (_set("spec.knownIssues", [{"id": f"i{n}", "summary": "s"} for n in range(65)]), "spec.knownIssues",
     "at most 64"),
    (_set("spec.nodeSelector", {"matchLabels": {"pool": "a b"}}), "spec.nodeSelector.matchLabels.pool",
     "does not match"),
    (_set("spec.nodeSelector", {"matchLabels": {"bad key!": "x"}}), "spec.nodeSelector.matchLabels.bad key!",
     "not a valid label key"),
    (_set("spec.nodeSelector", {"matchExpressions": [{"key": "a", "operator": "Is"}]}),
     "spec.nodeSelector.matchExpressions[0].operator", "is not one of"),
    (_set("spec.nodeSelector", {"matchExpressions": [{"key": "a", "operator": "In"}]}),
     "spec.nodeSelector.matchExpressions[0].values", "must not be empty"),
    (_set("spec.nodeSelector", {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
     "spec.nodeSelector.matchExpressions[0].values", "must be empty"),
    (_set("spec.validation.gpusPerProbe", 9), "spec.validation.gpusPerProbe", "outside 1..8"),
    (_set("spec.validation.runtimeTimeoutSeconds", 10), "spec.validation.runtimeTimeoutSeconds", "outside"),
    (_set("spec.validation.pendingTimeoutSeconds", 10**6), "spec.validation.pendingTimeoutSeconds", "outside"),
    (_set("spec.validation.priorityClassName", "Low"), "spec.validation.priorityClassName", "does not match"),
    (_set("spec.validation.tolerations", [{"operator": "Equal", "value": "x"}]),
     "spec.validation.tolerations[0].operator", "must be Exists when key is empty"),
    (_set("spec.validation.tolerations", [{"key": "k", "operator": "Exists", "value": "x"}]),
     "spec.validation.tolerations[0].value", "must be empty"),
    (_set("spec.validation.tolerations", [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]),
     "spec.validation.tolerations[0].tolerationSeconds", "only allowed with effect NoExecute"),
    (_set("spec.validation.tolerations", [{"key": "k", "effect": "NoExecute", "tolerationSeconds": 2**63}]),
     "spec.validation.tolerations[0].tolerationSeconds", "outside"),
    (_set("spec.validation.tolerations", [{"key": "k", "effect": "Never"}]),
     "spec.validation.tolerations[0].effect", "is not one of"),
    (_set("spec.validation.resources", {"requests": {"nvidia.com/gpu": "1"}}),
     "spec.validation.resources.requests.nvidia.com/gpu", "unknown field"),
    (_set("spec.validation.resources", {"limits": {"memory": "lots"}}),
     "spec.validation.resources.limits.memory", "invalid quantity"),
    (_set("spec.validation.resources", {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}),
     "spec.validation.resources.requests.cpu", "2 exceeds the limit 1500m"),
    # issue 10, section 4: what real fleets need
    (_set("spec.validation.gpuResource", "nvidia.com/gpu.shared"), "spec.validation.gpuResource", "does not match"),
    (_set("spec.validation.gpuResource", "amd.com/gpu"), "spec.validation.gpuResource", "does not match"),
    (_set("spec.validation.gpuResource", "nvidia.com/mig-1g"), "spec.validation.gpuResource", "does not match"),
    (_set("spec.validation.gpuResource", 1), "spec.validation.gpuResource", "must be a string"),
    (_set("spec.validation.gpuResource", "nvidia.com/mig-" + "1" * 60 + "g.5gb"), "spec.validation.gpuResource",
     "longer than 63"),
    (_set("spec.validation", {"gpuResource": "nvidia.com/mig-3g.20gb", "gpusPerProbe": 2}),
     "spec.validation.gpusPerProbe", "one usable MIG device"),
    (_set("spec.validation.runtimeClassName", "Nvidia"), "spec.validation.runtimeClassName", "does not match"),
    (_set("spec.validation.runtimeClassName", "n" * 254), "spec.validation.runtimeClassName", "longer than 253"),
    (_set("spec.validation.shmSize", "1 GiB"), "spec.validation.shmSize", "invalid quantity"),
    (_set("spec.validation.shmSize", "0"), "spec.validation.shmSize", "not more than 0"),
    (_set("spec.validation.shmSize", 1024), "spec.validation.shmSize", "must be a string"),
    (_set("spec.validation", {"shmSize": "2Gi", "resources": {"limits": {"memory": "1Gi"}}}),
     "spec.validation.shmSize", "exceeds resources.limits.memory 1Gi"),
    (_set("spec.validation.securityContext", {"runAsUser": 0}), "spec.validation.securityContext.runAsUser",
     "needs runAsNonRoot: false"),
    (_set("spec.validation.securityContext", {"runAsUser": -1}), "spec.validation.securityContext.runAsUser",
     "outside 0..2147483647"),
    (_set("spec.validation.securityContext", {"runAsUser": "1000"}), "spec.validation.securityContext.runAsUser",
     "must be an integer"),
    (_set("spec.validation.securityContext", {"runAsNonRoot": "no"}),
     "spec.validation.securityContext.runAsNonRoot", "must be true or false"),
    (_set("spec.validation.securityContext", {"privileged": True}), "spec.validation.securityContext.privileged",
     "unknown field"),
    (_set("spec.validation.securityContext", "root"), "spec.validation.securityContext", "must be an object"),
    (_set("spec.validation.resources", {"limits": {"ephemeral-storage": "10 G"}}),
     "spec.validation.resources.limits.ephemeral-storage", "invalid quantity"),
    (_set("spec.validation.resources", {"requests": {"ephemeral-storage": "20Gi"},
                                        "limits": {"ephemeral-storage": "10Gi"}}),
     "spec.validation.resources.requests.ephemeral-storage", "20Gi exceeds the limit 10Gi"),
    (_set("spec.maxConcurrent", -1), "spec.maxConcurrent", "outside 1..1000"),
    (_set("spec.maxConcurrent", 1.5), "spec.maxConcurrent", "must be an integer"),
    (_set("spec.revalidateAfter", "7d"), "spec.revalidateAfter", "invalid duration"),
    (_set("spec.revalidateAfter", "30s"), "spec.revalidateAfter", "shorter than 60s"),
]


@pytest.mark.parametrize(("edit", "field", "message"), BAD, ids=[f"{f}:{m}" for _, f, m in BAD])
def test_invalid_spec_names_the_field(edit: Callable[[dict[str, Any]], None], field: str, message: str) -> None:
    obj = copy.deepcopy(SAMPLE)
    edit(obj)
    with pytest.raises(InvalidSpec) as caught:
        parse_profile(obj)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"


ONE_MORE_CHECK = [{c: {"enabled": c in ("cuda", only)} for c in GPU_CHECKS} for only in GPU_CHECKS]


@pytest.mark.parametrize("checks", [{"timeBudgetSeconds": 570}, *ONE_MORE_CHECK])
def test_cuda_gpu_and_a_budget_30s_inside_the_timeout_are_enough(checks: dict[str, Any]) -> None:
    obj = minimal()
    obj["spec"].update(checks=checks, validation={"runtimeTimeoutSeconds": 600})
    p = parse_profile(obj)
    assert p.checks.time_budget_seconds + 30 <= p.validation.runtime_timeout_seconds


def test_a_non_mapping_object_is_invalid() -> None:
    with pytest.raises(InvalidSpec, match="must be an object"):
        parse_profile([])  # type: ignore[arg-type]


def test_valid_edge_values_parse() -> None:
    obj = minimal()
    obj["spec"].update(
        maxConcurrent=1000,
        checks={"tensorCores": {"size": 16384, "minSpeedup": 0}, "amp": {"tolerance": 0}},
        validation={"gpusPerProbe": 8, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                                     "limits": {"cpu": "0.5", "memory": "1024Mi"}}},
        requirements={"driver": {"minimum": "450"}, "minComputeCapability": "6.0", "maxComputeCapability": "6.0"},
    )
    p = parse_profile(obj)
    assert p.max_concurrent == 1000 and p.validation.gpus_per_probe == 8
    assert p.validation.resources == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "0.5", "memory": "1024Mi"}}
    assert p.requirements.max_compute_capability == ComputeCapability(6, 0)
