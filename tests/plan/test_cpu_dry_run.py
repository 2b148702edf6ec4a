"""validation.device cpu: a dry run of the whole flow on nodes without GPUs, which passes as a CpuDryRun."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from torchproof.podspec import GPU_TOLERATIONS, build_plan, build_pod
from torchproof.profile import CPU_NEEDS_SELECTOR, InvalidSpec, Profile, parse_profile
from torchproof.result import parse_result
from torchproof.verdict import judge, static_evaluation
from torchproof_sim.hardware import ProbeSetting, encode_result, probe_result
from torchproof_sim.images import lookup_image

from tests.support.builders import ROOT, make_node, profile_body

EXAMPLE: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "profile-cpu-dryrun.yaml").read_text())
CPU = parse_profile({**EXAMPLE, "metadata": {**EXAMPLE["metadata"], "uid": "uid-1"}})
GPU = parse_profile(profile_body())
WORKER = make_node("kind-worker", None)


def sim_result(profile: Profile, **setting: Any) -> dict[str, Any]:
    image = lookup_image(profile.image)
    assert image is not None
    s = ProbeSetting(image=image, board=None, visible=0, driver=None, node="kind-worker", **setting)
    return probe_result(s, build_plan(profile))


def test_device_defaults_to_cuda_and_cpu_needs_a_node_selector() -> None:
    assert GPU.validation.device == "cuda" and CPU.validation.device == "cpu"
    body = copy.deepcopy(EXAMPLE)
    del body["spec"]["nodeSelector"]
    with pytest.raises(InvalidSpec) as caught:
        parse_profile(body)
    assert (caught.value.field, caught.value.message) == ("spec.nodeSelector", CPU_NEEDS_SELECTOR)
    body["spec"]["validation"]["device"] = "tpu"
    with pytest.raises(InvalidSpec) as caught:
        parse_profile(body)
    assert caught.value.field == "spec.validation.device"


def test_a_cpu_result_never_proves_the_gpu_spec() -> None:
    body = copy.deepcopy(EXAMPLE)
    body["spec"]["validation"]["device"] = "cuda"
    assert parse_profile(body).spec_hash != CPU.spec_hash


def test_the_plan_says_cpu_and_the_pod_asks_for_no_gpu_and_tolerates_no_gpu_taint() -> None:
    assert build_plan(CPU)["device"] == "cpu" and build_plan(GPU)["device"] == "cuda"
    pod = build_pod(CPU, node="kind-worker", fingerprint="f", namespace="torchproof", configmap="cm")
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    assert pod["spec"]["tolerations"] == []
    gpu_pod = build_pod(GPU, node="n1", fingerprint="f", namespace="torchproof", configmap="cm")
    assert gpu_pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_pod["spec"]["tolerations"][: len(GPU_TOLERATIONS)] == list(GPU_TOLERATIONS)


def test_the_static_pre_check_is_skipped_on_a_node_without_gpu_labels() -> None:
    assert static_evaluation(CPU, WORKER.labels).verdict == "compatible"
    assert static_evaluation(GPU, WORKER.labels).verdict == "unknown"


def test_the_simulated_cpu_probe_passes_as_a_dry_run_that_says_so() -> None:
    ev = judge(CPU, parse_result(encode_result(sim_result(CPU))), WORKER.labels)
    assert (ev.verdict, ev.reasons) == ("passed", ())
    codes = [f.code for f in ev.findings]
    assert "CpuDryRun" in codes and "NoTensorCores" not in codes


def test_a_cpu_dry_run_still_fails_what_fails_on_the_cpu() -> None:
    ev = judge(CPU, parse_result(encode_result(sim_result(CPU, amp_nan=True))), WORKER.labels)
    assert ev.verdict == "failed" and {r.code for r in ev.reasons} == {"AmpNotFinite"}


def test_a_gpu_result_is_no_cpu_dry_run_and_a_cpu_result_no_gpu_pass() -> None:
    cpu_result = parse_result(encode_result(sim_result(CPU)))
    ev = judge(GPU, cpu_result, WORKER.labels)
    assert ev.verdict == "error" and any("ran on the cpu, not on cuda" in r.message for r in ev.reasons)
    gpu_result = parse_result(encode_result({**sim_result(CPU), "device": "cuda"}))
    ev = judge(CPU, gpu_result, WORKER.labels)
    assert ev.verdict == "error" and any("ran on the cuda, not on cpu" in r.message for r in ev.reasons)


def test_apex_skipped_is_allowed_on_the_cpu() -> None:
    """On a GPU the same skip is IncompleteResult (tests/verdict/test_evidence.py, apex-not-importable)."""
    apex = parse_profile({**EXAMPLE, "spec": {**EXAMPLE["spec"], "checks": {"amp": {"apex": True}}}})
    ev = judge(apex, parse_result(encode_result(sim_result(apex))), WORKER.labels)
    assert ev.verdict == "passed"
    assert any(f.code == "SkipAllowed" and f.message.startswith("amp.apex skipped") for f in ev.findings)
