"""Owned node labels (each profile's record marks its label; the legacy shared list migrated), pod and
ConfigMap rendering, expectations."""

from __future__ import annotations

import dataclasses
import json
import re

from torchproof import labels as L
from torchproof.contract import PLAN_SCHEMA, NodeRecord
from torchproof.expectations import Expectations
from torchproof.podspec import build_plan, build_pod, build_probe_configmap, configmap_name, pod_name
from torchproof.profile import PodSecurity, Profile
from torchproof.sweep import plan_removal, plan_sweep
from torchproof.views import NodeView, pod_view

from tests.support.builders import make_node, pod_body


def test_verdict_patch_writes_only_the_profiles_own_keys_without_a_resource_version() -> None:
    record = NodeRecord("passed", 0.0, 1)
    patch = L.verdict_patch("p1", {"team": "x"}, {"result.torchproof.dev/p0": "{}"}, "passed", record)
    assert patch == {"metadata": {
        "labels": {"torchproof.dev/p1": "passed"},
        "annotations": {"result.torchproof.dev/p1": record.to_annotation()},
    }}
    assert json.loads(patch["metadata"]["annotations"]["result.torchproof.dev/p1"])["verdict"] == "passed"


def test_the_legacy_list_stays_while_it_holds_the_only_claim_on_a_label() -> None:
    legacy = {L.LEGACY_OWNED_ANNOTATION: "torchproof.dev/p0,torchproof.dev/p1"}
    labels = {"torchproof.dev/p0": "passed", "torchproof.dev/p1": "failed"}
    patch = L.verdict_patch("p1", labels, legacy, "passed", NodeRecord("passed", 0.0, 1))
    assert L.LEGACY_OWNED_ANNOTATION not in patch["metadata"]["annotations"], "p0's label is listed nowhere else"
    assert L.owns("p0", legacy) and L.owns("p1", legacy)
    assert L.profiles_on(legacy) == {"p0", "p1"}


def test_the_legacy_list_goes_with_the_write_that_leaves_it_needless() -> None:
    labels = {"torchproof.dev/p0": "passed", "torchproof.dev/p1": "failed"}
    annotations = {L.LEGACY_OWNED_ANNOTATION: "torchproof.dev/p0,torchproof.dev/p1", "result.torchproof.dev/p0": "{}"}
    patch = L.verdict_patch("p1", labels, annotations, "passed", NodeRecord("passed", 0.0, 1))
    assert patch["metadata"]["annotations"][L.LEGACY_OWNED_ANNOTATION] is None
    assert L.migration_patch(labels, annotations) is None, "p1's label has no record yet: the list still claims it"
    annotations["result.torchproof.dev/p1"] = "{}"
    assert L.migration_patch(labels, annotations) == {"metadata": {"annotations": {L.LEGACY_OWNED_ANNOTATION: None}}}
    assert L.migration_patch(labels, {"result.torchproof.dev/p1": "{}"}) is None


def test_removal_patch_removes_only_owned_labels() -> None:
    legacy = {L.LEGACY_OWNED_ANNOTATION: "torchproof.dev/p0,torchproof.dev/p1", "result.torchproof.dev/p1": "{}"}
    both = {"torchproof.dev/p0": "passed", "torchproof.dev/p1": "passed", "team": "x"}
    patch = L.removal_patch("p1", both, legacy)
    assert patch is not None
    assert patch["metadata"]["labels"] == {"torchproof.dev/p1": None}
    assert patch["metadata"]["annotations"] == {"result.torchproof.dev/p1": None}, "the list still claims p0's label"
    assert L.removal_patch("p1", {"torchproof.dev/p1": "passed"}, {}) is None, "a label torchproof did not set"
    mine = L.removal_patch("p1", {"torchproof.dev/p1": "passed"}, {"result.torchproof.dev/p1": "{}"})
    assert mine == {"metadata": {"labels": {"torchproof.dev/p1": None},
                                 "annotations": {"result.torchproof.dev/p1": None}}}
    last = L.removal_patch("p0", {"torchproof.dev/p0": "x"}, {L.LEGACY_OWNED_ANNOTATION: "torchproof.dev/p0"})
    assert last is not None and last["metadata"]["labels"] == {"torchproof.dev/p0": None}
    assert last["metadata"]["annotations"][L.LEGACY_OWNED_ANNOTATION] is None


def test_validation_pod_is_pinned_by_affinity_and_safe(profile: Profile) -> None:
    pod = build_pod(profile, node="gpu-node-1", fingerprint="fp", namespace="torchproof", configmap="cm-1")
    spec = pod["spec"]
    assert "nodeName" not in spec
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": ["gpu-node-1"]}]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == profile.validation.runtime_timeout_seconds
    assert spec["automountServiceAccountToken"] is False
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    container = spec["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/pytorch:20.06-py3"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["volumeMounts"][0]["readOnly"] is True
    assert spec["volumes"][0]["configMap"]["name"] == "cm-1"
    plan = json.loads(next(e["value"] for e in container["env"] if e["name"] == "TORCHPROOF_PLAN"))
    assert plan["schema"] == PLAN_SCHEMA and plan["profile"] == "pytorch-20.06"
    assert set(plan["checks"]) >= {"environment", "gpu", "cuda", "amp", "tensorCores", "conv3d"}
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("PyTorchReleaseProfile", "pytorch-20.06", "uid-1")
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "torchproof"
    assert pod["metadata"]["labels"][L.PROFILE_LABEL] == "pytorch-20.06"


def test_validation_pod_is_locked_down_with_its_caches_on_an_empty_dir(profile: Profile) -> None:
    spec = build_pod(profile, node="n", fingerprint="fp", namespace="torchproof", configmap="cm")["spec"]
    assert spec["securityContext"] == {"runAsUser": 1000, "runAsNonRoot": True,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert (spec["automountServiceAccountToken"], spec["enableServiceLinks"]) == (False, False)
    assert "runtimeClassName" not in spec
    container = spec["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/tmp"]] == {"name": "scratch", "emptyDir": {}}
    assert volumes[mounts["/dev/shm"]] == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    env = {e["name"]: e["value"] for e in container["env"]}
    caches = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "TORCH_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
              "CUDA_CACHE_PATH", "MPLCONFIGDIR")
    assert all(env[name] == "/tmp" or env[name].startswith("/tmp/") for name in caches)  # the only writable place
    assert container["workingDir"] == "/tmp" and env["USER"] and env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_validation_pod_follows_the_fleet_fields(profile: Profile) -> None:
    validation = dataclasses.replace(
        profile.validation, gpu_resource="nvidia.com/mig-1g.5gb", runtime_class_name="nvidia", shm_size="2Gi",
        security=PodSecurity(run_as_user=0, run_as_non_root=False, read_only_root_filesystem=False),
        resources={"requests": {"ephemeral-storage": "5Gi"}, "limits": {"ephemeral-storage": "10Gi"}},
    )
    custom = dataclasses.replace(profile, validation=validation)
    spec = build_pod(custom, node="n", fingerprint="fp", namespace="torchproof", configmap="cm")["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    container = spec["containers"][0]
    assert container["resources"] == {
        "limits": {"ephemeral-storage": "10Gi", "nvidia.com/mig-1g.5gb": "1"},
        "requests": {"ephemeral-storage": "5Gi", "nvidia.com/mig-1g.5gb": "1"},
    }
    assert spec["securityContext"]["runAsUser"] == 0 and spec["securityContext"]["runAsNonRoot"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in spec["volumes"]


def test_plan_follows_the_profile_checks(profile: Profile) -> None:
    plan = build_plan(profile)
    assert plan["checks"]["amp"]["steps"] == profile.checks.amp.steps
    assert plan["checks"]["tensorCores"]["size"] == profile.checks.tensor_cores.size
    assert plan["timeBudgetSeconds"] == profile.checks.time_budget_seconds


def test_pod_names_are_deterministic_valid_and_distinct() -> None:
    long_node = "ip-10-0-0-1.eu-west-1.compute.internal-" + "x" * 200
    names = {pod_name("pytorch-20.06", n) for n in ("a", "b", long_node, long_node + "y")}
    assert len(names) == 4
    assert pod_name("pytorch-20.06", "a") == pod_name("pytorch-20.06", "a")
    for name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)


def test_configmap_is_content_hashed() -> None:
    a = build_probe_configmap("ns", {"probe.py": "print(1)"})
    b = build_probe_configmap("ns", {"probe.py": "print(2)"})
    assert a["metadata"]["name"] != b["metadata"]["name"]
    assert a["metadata"]["name"] == configmap_name({"probe.py": "print(1)"})
    assert a["data"] == {"probe.py": "print(1)"}


def test_expectations_hide_the_watch_lag(profile: Profile) -> None:
    node = make_node("t4-a")
    manifest = pod_body(profile, node)
    expect = Expectations(ttl=60)
    expect.pod_created(manifest, now=0)
    assert [p.name for p in expect.overlay_pods([], now=1)] == [manifest["metadata"]["name"]]
    assert expect.overlay_pods([], now=61) == []
    observed = pod_view(manifest)
    expect.pod_deleted(observed.name, now=2)
    assert expect.overlay_pods([observed], now=3)[0].deleting
    assert expect.overlay_pods([], now=4) == []
    patch = L.verdict_patch("p", {}, {}, "passed", NodeRecord("passed", 0.0, 1))
    expect.node_patched("t4-a", patch, now=5)
    seen = expect.overlay_nodes([node], now=6)[0]
    assert seen.labels["torchproof.dev/p"] == "passed"
    assert expect.overlay_nodes([seen], now=7)[0] == seen
    assert "t4-a" not in expect.patched


def test_the_node_overlay_costs_the_patches_in_flight_not_the_fleet() -> None:
    nodes = {name: make_node(name) for name in ("t4-a", "t4-b")}
    expect = Expectations(ttl=60)
    assert expect.overlay(nodes, now=0) == (nodes, set())
    assert expect.overlay(nodes, now=0)[0] is nodes, "nothing in flight: the informer's own mapping, not a copy"
    expect.node_patched("t4-a", L.verdict_patch("p", {}, {}, "passed", NodeRecord("passed", 0.0, 1)), now=1)
    seen, overlaid = expect.overlay(nodes, now=2)
    assert overlaid == {"t4-a"} and seen["t4-a"].labels["torchproof.dev/p"] == "passed"
    assert seen["t4-b"] is nodes["t4-b"] and "torchproof.dev/p" not in nodes["t4-a"].labels
    assert expect.overlay(nodes, now=62) == (nodes, set()) and not expect.patched, "past the TTL: dropped"


def test_a_pod_seen_to_go_after_its_create_settles_the_create_expectation(profile: Profile) -> None:
    manifest = pod_body(profile, make_node("t4-a"))
    name = manifest["metadata"]["name"]
    expect = Expectations(ttl=60)
    expect.pod_created(manifest, now=10)
    assert [p.name for p in expect.overlay_pods([], now=11, gone={name: 9})] == [name], "an older pod of that name"
    assert expect.overlay_pods([], now=12, gone={name: 10.5}) == []
    assert expect.overlay_pods([], now=13) == []


def test_the_sweep_removes_only_what_profiles_that_are_gone_left(profile: Profile) -> None:
    keep, gone = "pytorch-20.06", "old"
    patch = L.verdict_patch(keep, {}, {}, "passed", NodeRecord("passed", 0.0, 1))
    annotations = dict(patch["metadata"]["annotations"])
    labels = {L.label_key(keep): "passed", L.label_key(gone): "failed", "team": "web", "torchproof.dev/other": "x"}
    annotations[L.LEGACY_OWNED_ANNOTATION] = f"{L.label_key(gone)},{L.label_key(keep)}"
    annotations[L.result_annotation_key(gone)] = "{}"
    annotations[L.result_annotation_key("older")] = "{}"
    node = NodeView("n1", labels, annotations, True, False, 1, "fp")
    clean = NodeView("n2", {L.label_key(keep): "passed"}, dict(patch["metadata"]["annotations"]) | {
        L.LEGACY_OWNED_ANNOTATION: L.label_key(keep)}, True, False, 1, "fp")
    pods = [dataclasses.replace(pod_view(pod_body(profile, make_node("n1"))), profile=name, name=f"pod-{name}")
            for name in (keep, gone)]
    sweep = plan_sweep([node, clean], pods, {keep})
    assert sweep.pods == (pods[1].name,)
    [(name, removal)] = sweep.patches
    assert name == "n1"
    assert removal["metadata"] == {
        "labels": {L.label_key(gone): None},
        "annotations": {L.LEGACY_OWNED_ANNOTATION: None, L.result_annotation_key(gone): None,
                        L.result_annotation_key("older"): None},
    }



def test_a_removal_takes_exactly_one_profiles_marks_and_pods(profile: Profile) -> None:
    one, other = "pytorch-20.06", "other"
    annotations = {L.LEGACY_OWNED_ANNOTATION: f"{L.label_key(one)},{L.label_key(other)}",
                   L.result_annotation_key(one): "{}", L.result_annotation_key(other): "{}"}
    node = NodeView("n1", {L.label_key(one): "passed", L.label_key(other): "failed", "team": "web"},
                    annotations, True, False, 1, "fp")
    untouched = NodeView("n2", {L.label_key(other): "failed"}, {L.LEGACY_OWNED_ANNOTATION: L.label_key(other),
                         L.result_annotation_key(other): "{}"}, True, False, 1, "fp")
    pods = [dataclasses.replace(pod_view(pod_body(profile, make_node("n1"))), profile=name, name=f"pod-{name}")
            for name in (one, other)]
    removal = plan_removal([node, untouched], pods, {one})
    assert removal.pods == ("pod-pytorch-20.06",)
    assert removal.patches == (("n1", {"metadata": {
        "labels": {L.label_key(one): None},
        "annotations": {L.LEGACY_OWNED_ANNOTATION: None, L.result_annotation_key(one): None},
    }}),)
