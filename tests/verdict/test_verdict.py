"""Judging finished validation pods against the 20.06 profile."""

from __future__ import annotations

from typing import Any

import pytest
from torchproof.profile import Profile
from torchproof.verdict import evaluate_pod
from torchproof.views import NodeView, pod_view

from tests.support.builders import make_node, make_result, pod_body, terminated


def _finished(profile: Profile, status: dict[str, Any], phase: str = "Succeeded", node: NodeView | None = None) -> Any:
    node = node or make_node("n1")
    return evaluate_pod(profile, pod_view(pod_body(profile, node, phase=phase, status=status)), node.labels)


def codes(evaluation: Any) -> list[str]:
    return [r.code for r in evaluation.reasons]


def test_a_healthy_t4_passes_with_its_turing_known_issues(profile: Profile) -> None:
    ev = _finished(profile, terminated(make_result()))
    assert ev.verdict == "passed"
    assert ev.reasons == ()
    ids = {issue.id for issue in ev.known_issues}
    assert ids and all("Turing" in issue.architectures or not issue.architectures for issue in ev.known_issues)
    assert ev.numbers["fp16Speedup"] == 6.6
    assert ev.numbers["driver"] == "450.51.06"


@pytest.mark.parametrize(
    ("status", "phase", "code"),
    [
        (terminated(None, reason="OOMKilled", exit_code=137), "Failed", "OOMKilled"),
        (terminated(None, reason="Error", exit_code=1), "Failed", "ProbeCrashed"),
        (terminated("not json {{{"), "Succeeded", "UntrustedResult"),
        (terminated('{"schema": "evil", "device": "cuda"}'), "Succeeded", "UntrustedResult"),
        ({"reason": "DeadlineExceeded"}, "Failed", "DeadlineExceeded"),
        ({}, "Failed", "ProbeCrashed"),
    ],
)
def test_pods_without_a_trustworthy_result_are_errors(
    profile: Profile, status: dict[str, Any], phase: str, code: str
) -> None:
    ev = _finished(profile, status, phase)
    assert ev.verdict == "error"
    assert codes(ev) == [code]


def _nan(doc: dict[str, Any]) -> None:
    doc["checks"]["amp"]["native"].update(finite=False, lastLoss=None)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (_nan, "AmpNotFinite"),
        (lambda d: d["checks"]["amp"]["native"].update(decreased=False), "AmpNotConverging"),
        (lambda d: d["checks"]["amp"]["native"].update(maxRelError=0.5), "AmpMismatch"),
        (lambda d: d["checks"]["amp"]["native"].update(skippedSteps=8), "AmpScalerStuck"),
        (lambda d: d["checks"]["tensorCores"].update(fp16=8.7, fp16Speedup=1.1), "TensorCoresSlow"),
        (lambda d: d["checks"]["channelsLast"].update(maxRelError=0.2), "ChannelsLastMismatch"),
        (lambda d: d["checks"]["conv3d"].update(nanCount=3), "Conv3dNaN"),
        (lambda d: d["checks"]["cuda"].update(status="error", available=False,
                                              error="RuntimeError: CUDA driver version is insufficient"),
         "CudaUnavailable"),
        (lambda d: d["checks"]["cuda"].update(kernelOk=False), "CudaKernelWrong"),
        (lambda d: d["checks"]["conv3d"].update(status="error", error="ValueError: boom"), "CheckError"),
        (lambda d: d["checks"]["conv3d"].update(status="timeout"), "CheckTimeout"),
    ],
)
def test_failed_checks_fail_the_node_with_a_reason(profile: Profile, change: Any, code: str) -> None:
    ev = _finished(profile, terminated(make_result(change)))
    assert ev.verdict == "failed"
    assert code in codes(ev)


def test_observed_old_driver_on_a_consumer_board_is_incompatible(profile: Profile) -> None:
    def geforce(doc: dict[str, Any]) -> None:
        doc["gpu"]["driver"] = "440.100"
        doc["gpu"]["devices"][0].update(name="GeForce RTX 2080 Ti", brand="GeForce")

    ev = _finished(profile, terminated(make_result(geforce)), node=make_node("n1", "GeForce RTX 2080 Ti", "440.100"))
    assert ev.verdict == "incompatible"
    assert codes(ev) == ["DriverTooOld"]
    assert "GeForce RTX 2080 Ti" in ev.reasons[0].message


def test_observed_kepler_is_incompatible_even_without_gfd_labels(profile: Profile) -> None:
    def k80(doc: dict[str, Any]) -> None:
        doc["gpu"]["devices"][0].update(name="Tesla K80", cc="3.7")

    ev = _finished(profile, terminated(make_result(k80)), node=make_node("n1", "Tesla K80", gfd=False))
    assert ev.verdict == "incompatible"
    assert "ComputeCapabilityTooLow" in codes(ev)


def test_an_image_that_is_not_the_release_is_a_finding_not_a_verdict(profile: Profile) -> None:
    def other(doc: dict[str, Any]) -> None:
        doc["env"]["torch"] = "2.1.0a0+32f93b1"
        doc["env"]["vars"]["NVIDIA_PYTORCH_VERSION"] = "23.10"

    ev = _finished(profile, terminated(make_result(other)))
    assert ev.verdict == "passed"
    found = [str(f) for f in ev.findings]
    assert any("pytorch" in f and "2.1.0a0" in f for f in found)
    assert any("release" in f and "23.10" in f for f in found)


def test_pascal_has_no_tensor_cores_so_its_speedup_is_a_finding_not_a_failure(profile: Profile) -> None:
    def p100(doc: dict[str, Any]) -> None:
        doc["gpu"]["devices"][0].update(name="Tesla P100-PCIE-16GB", cc="6.0")
        doc["checks"]["tensorCores"].update(fp16=15.0, fp16Speedup=1.9)

    ev = _finished(profile, terminated(make_result(p100)), node=make_node("n1", "Tesla P100-PCIE-16GB"))
    assert ev.verdict == "passed"
    assert "NoTensorCores" in [f.code for f in ev.findings]


def test_a_slow_volta_still_fails_the_tensor_core_check(profile: Profile) -> None:
    def v100(doc: dict[str, Any]) -> None:
        doc["gpu"]["devices"][0].update(name="Tesla V100-SXM2-16GB", cc="7.0")
        doc["checks"]["tensorCores"].update(fp16=15.0, fp16Speedup=1.9)

    node = make_node("n1", "Tesla V100-SXM2-16GB")
    assert codes(_finished(profile, terminated(make_result(v100)), node=node)) == ["TensorCoresSlow"]
