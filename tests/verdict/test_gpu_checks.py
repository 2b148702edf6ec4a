"""The five checks for today's GPUs, judged: each fault the simulator can inject fails its rule with its reason
code, a skip passes only where the hardware or the release's torch explains it, and impossible numbers are
untrusted."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from torchproof.profile import Profile, parse_profile
from torchproof.verdict import Evaluation, evaluate_pod
from torchproof.views import node_view, pod_view
from torchproof_sim.fleet import build_node, parse_fleet
from torchproof_sim.kubelet import ending

from tests.support.builders import ROOT, pod_body, terminated

H100 = "NVIDIA H100 80GB HBM3"
BODY = yaml.safe_load((ROOT / "profiles" / "pytorch-24.10.yaml").read_text())


def profile(**checks: Any) -> Profile:
    spec = {**BODY["spec"], "checks": {**BODY["spec"]["checks"], **checks}}
    p = parse_profile({**BODY, "spec": spec, "metadata": {"name": "pytorch-24.10", "uid": "u", "generation": 1}})
    return dataclasses.replace(p, validation=dataclasses.replace(p.validation, gpus_per_probe=2))


P2410 = profile()


def run(product: str = H100, *, faults: tuple[str, ...] = (), p: Profile = P2410, count: int = 2,
        edit: Callable[[dict[str, Any]], None] | None = None, image: str | None = None) -> Evaluation:
    """The simulated probe on a node with these boards and faults, judged as the operator judges it."""
    entry = {"name": "n1", "gpu": {"product": product, "count": count, "driver": "570.86.10"}, "faults": list(faults)}
    sim = parse_fleet({"nodes": [entry]}).nodes[0]
    node = node_view(build_node(sim))
    pod = pod_body(p, node)
    if image is not None:
        pod["spec"]["containers"][0]["image"] = image
    end = ending(sim, pod)
    message = end.message
    if edit is not None and message:
        doc = json.loads(message)
        edit(doc)
        message = json.dumps(doc)
    pod["status"] = {"phase": end.phase, **terminated(message, exit_code=end.exit_code, reason=end.reason)}
    return evaluate_pod(p, pod_view(pod), node.labels)


def codes(ev: Evaluation) -> list[str]:
    return [r.code for r in ev.reasons]


def test_a_healthy_hopper_pair_passes_every_new_check_with_its_numbers() -> None:
    ev = run()
    assert (ev.verdict, ev.reasons) == ("passed", ())
    assert {"sdpaMaxError", "fp8RelError", "ncclBusBandwidth", "memoryTestedMiB", "compileSeconds"} <= set(ev.numbers)
    assert not [f for f in ev.findings if f.code == "SkipAllowed"]


@pytest.mark.parametrize(("fault", "expected"), [
    ("sdpaMismatch", ["SdpaMismatch"]),
    ("fp8Mismatch", ["Fp8Mismatch"]),
    ("ncclSlow", ["NcclSlow"]),
    ("memoryErrors", ["MemoryMismatch", "MemoryEccErrors"]),
    ("compileError", ["CheckError"]),
])
def test_each_simulated_fault_fails_its_rule(fault: str, expected: list[str]) -> None:
    ev = run(faults=(fault,))
    assert ev.verdict == "failed"
    assert codes(ev) == expected, ev.reasons


def test_the_nccl_threshold_is_the_profiles() -> None:
    assert codes(run(p=profile(nccl={"minBusBandwidthGBps": 500}))) == ["NcclSlow"]
    assert run(p=profile(nccl={"minBusBandwidthGBps": 100})).verdict == "passed"


def test_tolerances_are_the_profiles() -> None:
    assert codes(run(p=profile(sdpa={"tolerance": 0.001}))) == ["SdpaMismatch"] * 3  # each backend
    assert codes(run(p=profile(fp8={"tolerance": 0.001}))) == ["Fp8Mismatch"]
    assert codes(run(p=profile(compile={"tolerance": 0.0001}))) == ["CompileMismatch"]


def test_older_boards_skip_what_they_lack_and_still_pass() -> None:
    ev = run("Tesla T4", count=1, p=dataclasses.replace(P2410, validation=dataclasses.replace(
        P2410.validation, gpus_per_probe=1)))
    assert (ev.verdict, ev.reasons) == ("passed", ())
    skipped = {f.message.split(" ")[0] for f in ev.findings if f.code == "SkipAllowed"}
    assert {"sdpa.flash", "fp8", "nccl"} <= skipped


@pytest.mark.parametrize(("check", "edit"), [
    ("fp8", lambda d: d["checks"].update(fp8={"status": "skipped", "seconds": 0.0, "reason": "no fp8 here"})),
    ("sdpa.flash", lambda d: d["checks"]["sdpa"].update(flash={"skipped": "No available kernel"})),
    ("nccl", lambda d: d["checks"].update(nccl={"status": "skipped", "seconds": 0.0, "reason": "1 GPU"})),
    ("compile", lambda d: d["checks"].update(compile={"status": "skipped", "seconds": 0.0, "reason": "later"})),
])
def test_a_skip_the_hardware_does_not_explain_is_incomplete(check: str, edit: Callable[[dict[str, Any]], None]) -> None:
    ev = run(edit=edit)
    assert ev.verdict == "error" and codes(ev) == ["IncompleteResult"]
    assert f"{check} skipped" in ev.reasons[0].message


def test_an_old_release_skips_the_checks_its_torch_predates() -> None:
    old = profile(sdpa={"enabled": True}, compile={"enabled": True}, fp8={"enabled": True})
    old = dataclasses.replace(old, components=dataclasses.replace(old.components, pytorch="1.6.0a0+9907a3e"))
    ev = run("Tesla V100-SXM2-16GB", p=old, image="nvcr.io/nvidia/pytorch:20.06-py3")
    assert ev.verdict == "passed", ev.reasons
    messages = " | ".join(f.message for f in ev.findings if f.code == "SkipAllowed")
    assert "predates scaled_dot_product_attention" in messages and "predates torch.compile" in messages


@pytest.mark.parametrize(("edit", "text"), [
    (lambda d: d["checks"]["nccl"].update(busBandwidth=900.0), "nccl: busBandwidth 900"),
    (lambda d: d["checks"]["compile"].update(firstSeconds=50.0), "compile: firstSeconds 50"),
    (lambda d: d["checks"]["memory"].update(testedMiB=900000), "memory: testedMiB 900000"),
])
def test_numbers_that_cannot_be_true_are_untrusted(edit: Callable[[dict[str, Any]], None], text: str) -> None:
    ev = run(edit=edit)
    assert ev.verdict == "error" and codes(ev) == ["ImplausibleResult"]
    assert text in ev.reasons[0].message


def test_a_memory_check_the_bound_stopped_is_a_finding() -> None:
    ev = run(edit=lambda d: d["checks"]["memory"].update(complete=False))
    assert ev.verdict == "passed"
    assert any(f.code == "MemoryPartlyTested" for f in ev.findings)


def test_the_fleet_file_accepts_the_check_faults() -> None:
    nodes = parse_fleet({"nodes": [{"name": "n", "gpu": {"product": H100, "count": 1, "driver": "570.86.10"},
                                    "faults": ["sdpaMismatch", "fp8Mismatch", "ncclSlow", "memoryErrors",
                                               "compileError"]}]}).nodes
    assert len(nodes[0].faults) == 5
