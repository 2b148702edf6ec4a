"""Issue 8, sections 3-5: `passed` needs evidence, possible numbers, and a result that matches the node.

Each table holds one class of result. A rule's rows would have been `passed` (or judged on the wrong
board) before it; the control rows (possible numbers, matching labels, healthy simulated boards) keep
the rules from flagging honest results.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torchproof.checks.tensor_cores import PEAK_MARGIN
from torchproof.labels import VERDICTS
from torchproof.profile import Profile, parse_profile
from torchproof.result import UntrustedResult, parse_result
from torchproof.verdict import ALLOWED_SKIPS, MAX_REASONS, Evaluation, evaluate_pod, judge
from torchproof.views import node_view, pod_view
from torchproof_sim.fleet import build_node, parse_fleet
from torchproof_sim.kubelet import ending

from tests.support.builders import BASE_RESULT, ROOT, make_node, make_result, pod_body, profile_body, terminated

Change = Callable[[dict[str, Any]], None]


def profile_of(edit: Callable[[dict[str, Any]], None] | None = None) -> Profile:
    body = profile_body()
    if edit is not None:
        edit(body["spec"])
    return parse_profile(body)


P2006 = profile_of()
BF16 = profile_of(lambda s: s["checks"]["amp"].update(bf16=True))
TWO_GPUS = profile_of(lambda s: s["validation"].update(gpusPerProbe=2))
TORCH_15 = profile_of(lambda s: s["components"].update(pytorch="1.5.0a0+8f84ded"))

T4_LABELS = dict(make_node("n1").labels)
A100_LABELS = dict(make_node("n1", "A100-SXM4-40GB", "450.80.02").labels)
P100_LABELS = dict(make_node("n1", "Tesla P100-PCIE-16GB").labels)
H100_LABELS = dict(make_node("n1", "NVIDIA H100 80GB HBM3", "450.80.02").labels)
NO_GFD: dict[str, str] = {}


def judged(*changes: Change, profile: Profile = P2006, labels: Mapping[str, str] = T4_LABELS,
           exit_code: int = 0, reason: str = "Completed") -> Evaluation:
    def change(doc: dict[str, Any]) -> None:
        for c in changes:
            c(doc)

    status = terminated(make_result(change), exit_code=exit_code, reason=reason)
    pod = pod_body(profile, make_node("n1"), phase="Succeeded", status=status)
    return evaluate_pod(profile, pod_view(pod), labels)


def codes(ev: Evaluation) -> list[str]:
    return [r.code for r in ev.reasons]


def text(reasons: tuple[Any, ...]) -> str:
    return " | ".join(str(r) for r in reasons)


# -- result edits ------------------------------------------------------------------------------------


def checks(**edits: Any) -> Change:
    """Replace (a dict), update (a dict with "+": True) or delete (None) checks."""

    def change(doc: dict[str, Any]) -> None:
        for name, value in edits.items():
            if value is None:
                doc["checks"].pop(name, None)
            elif value.pop("+", False):
                doc["checks"][name].update(value)
            else:
                doc["checks"][name] = value

    return change


def amp(**runs: Any) -> Change:
    def change(doc: dict[str, Any]) -> None:
        for run, value in runs.items():
            if value is None:
                doc["checks"]["amp"].pop(run, None)
            else:
                doc["checks"]["amp"][run] = value

    return change


def drop(check: str, key: str, run: str | None = None) -> Change:
    def change(doc: dict[str, Any]) -> None:
        (doc["checks"][check][run] if run else doc["checks"][check]).pop(key)

    return change


def env(**values: Any) -> Change:
    return lambda doc: doc["env"].update(values)


def gpu(**values: Any) -> Change:
    return lambda doc: doc["gpu"].update(values)


def tc(**values: Any) -> Change:
    return lambda doc: doc["checks"]["tensorCores"].update(values)


def board(name: str, cc: str, brand: str = "Tesla", driver: str | None = None) -> Change:
    def change(doc: dict[str, Any]) -> None:
        doc["gpu"]["devices"][0].update(name=name, cc=cc, brand=brand)
        if driver:
            doc["gpu"]["driver"] = driver

    return change


def boards(*models: tuple[str, str, str], driver: str = "450.51.06") -> Change:
    """One device per (product, brand, cc): a node with several boards, as NVML lists them."""

    def change(doc: dict[str, Any]) -> None:
        doc["gpu"].update(driver=driver, count=len(models), devices=[
            {"index": i, "name": name, "brand": brand, "uuid": f"GPU-{i}", "cc": cc, "memoryMiB": 16000,
             "ecc": True, "eccErrors": 0, "mig": False}
            for i, (name, brand, cc) in enumerate(models)])
        doc["checks"]["multiGpu"] = {"status": "ok", "seconds": 0.8, "devices": len(models), "peerAccess": True,
                                     "allReduceOk": True}
        doc["checks"]["nccl"] = {"status": "ok", "seconds": 0.6, "devices": len(models), "sizeMiB": 64,
                                 "iterations": 10, "ok": True, "algBandwidth": 9.6, "busBandwidth": 9.6}

    return change


A100 = board("A100-SXM4-40GB", "8.0", "NVIDIA", "450.80.02")
A100_NUMBERS = tc(fp32=18.7, fp16=230.0, fp16Speedup=12.3)
NO_AUTOCAST = amp(bf16={"skipped": "torch 1.6.0a0+9907a3e has no bf16 autocast"})
SKIPPED = {"status": "skipped", "seconds": 0.0, "reason": "time budget spent"}
T4 = ("Tesla T4", "Tesla", "7.5")


# -- section 3: rules of evidence --------------------------------------------------------------------

INCOMPLETE: list[tuple[str, tuple[Change, ...], Profile, Mapping[str, str], str]] = [
    # id, result edits, profile, node labels, what the reason must name
    ("no-checks", (lambda d: d.update(checks={}),), P2006, T4_LABELS, "the result has no checks"),
    ("every-check-skipped", (lambda d: d.update(checks={k: dict(SKIPPED) for k in d["checks"]}),), P2006,
     T4_LABELS, "every check was skipped"),
    ("cuda-missing", (checks(cuda=None),), P2006, T4_LABELS, "cuda missing"),
    ("cuda-skipped", (checks(cuda=dict(SKIPPED)),), P2006, T4_LABELS, "cuda skipped (time budget spent)"),
    ("gpu-source-none", (gpu(source="none", count=0, devices=[]),), P2006, T4_LABELS, "no GPU observed"),
    ("no-devices", (gpu(devices=[]),), P2006, T4_LABELS, "no GPU observed"),
    ("count-zero", (gpu(count=0),), P2006, T4_LABELS, "no GPU observed"),
    ("ran-on-the-cpu", (lambda d: d.update(device="cpu"),), P2006, T4_LABELS, "ran on the cpu, not on cuda"),
    ("check-missing", (checks(conv3d=None),), P2006, T4_LABELS, "conv3d missing"),
    ("check-skipped", (checks(channelsLast=dict(SKIPPED)),), P2006, T4_LABELS,
     "channelsLast skipped (time budget spent)"),
    ("tensor-cores-skipped-on-a-t4", (checks(tensorCores=dict(SKIPPED)),), P2006, T4_LABELS,
     "tensorCores skipped"),
    ("amp-run-missing", (amp(native=None),), P2006, T4_LABELS, "amp.native missing"),
    ("apex-not-importable", (amp(apex={"skipped": "apex not importable"}),), P2006, T4_LABELS,
     "amp.apex skipped (apex not importable)"),
    ("native-skipped-on-torch-1.6", (amp(native={"skipped": "no autocast for cuda in torch 1.6.0"}),), P2006,
     T4_LABELS, "amp.native skipped"),
    ("native-skipped-image-older-than-profile", (env(torch="1.5.0a0+8f84ded"), amp(native={"skipped": "no amp"})),
     P2006, T4_LABELS, "amp.native skipped"),
    ("bf16-skipped-on-a100-with-autocast", (A100, A100_NUMBERS, env(torch="2.5.0a0+e000cf0ad9"), NO_AUTOCAST),
     BF16, A100_LABELS, "amp.bf16 skipped"),
    ("multi-gpu-skipped-when-the-profile-gives-two", (), TWO_GPUS, T4_LABELS, "multiGpu skipped"),
    ("cuda-without-kernelOk", (drop("cuda", "kernelOk"),), P2006, T4_LABELS, "cuda: ok without kernelOk"),
    ("conv3d-without-nanCount", (drop("conv3d", "nanCount"),), P2006, T4_LABELS, "conv3d: ok without nanCount"),
    ("channels-last-without-error", (drop("channelsLast", "maxRelError"),), P2006, T4_LABELS,
     "channelsLast: ok without maxRelError"),
    ("tensor-cores-without-speedup", (tc(fp16Speedup=None),), P2006, T4_LABELS,
     "tensorCores: ok without fp16Speedup"),
    ("amp-run-without-finite", (drop("amp", "finite", "native"),), P2006, T4_LABELS,
     "amp.native: ran without finite"),
    ("multi-gpu-without-all-reduce", (boards(T4, T4), checks(multiGpu={"status": "ok", "devices": 2})), P2006,
     {**T4_LABELS, "nvidia.com/gpu.count": "2"}, "multiGpu: ok without allReduceOk"),
]


@pytest.mark.parametrize(("changes", "profile", "labels", "missing"),
                         [pytest.param(*row[1:], id=row[0]) for row in INCOMPLETE])
def test_a_result_that_does_not_prove_every_planned_check_is_an_error_naming_the_gap(
    changes: tuple[Change, ...], profile: Profile, labels: Mapping[str, str], missing: str
) -> None:
    ev = judged(*changes, profile=profile, labels=labels)
    assert ev.verdict == "error"
    assert "IncompleteResult" in codes(ev)
    assert missing in text(ev.reasons)


ALLOWED: list[tuple[str, tuple[Change, ...], Profile, Mapping[str, str], str]] = [
    ("bf16-below-ampere", (amp(bf16={"skipped": "compute capability 7.5 < 8.0"}),), BF16, T4_LABELS,
     "amp.bf16 skipped (compute capability 7.5 < 8.0): bf16 needs compute capability 8.0"),
    ("bf16-torch-before-1.10", (A100, A100_NUMBERS, NO_AUTOCAST), BF16, A100_LABELS,
     "amp.bf16 skipped (torch 1.6.0a0+9907a3e has no bf16 autocast): the release's torch predates torch.autocast"),
    ("native-torch-before-1.6", (env(torch="1.5.0a0+8f84ded"), amp(native={"skipped": "no autocast"})), TORCH_15,
     T4_LABELS, "amp.native skipped (no autocast): the release's torch predates torch.cuda.amp"),
    ("tensor-cores-on-pascal", (board("Tesla P100-PCIE-16GB", "6.0"), checks(tensorCores=dict(SKIPPED))), P2006,
     P100_LABELS, "tensorCores skipped (time budget spent): the catalogue says no GPU in the result has tensor"),
    ("one-gpu-in-the-pod", (), P2006, T4_LABELS, "multiGpu skipped (1 GPU in the pod): the pod sees one GPU"),
]


@pytest.mark.parametrize(("changes", "profile", "labels", "finding"),
                         [pytest.param(*row[1:], id=row[0]) for row in ALLOWED])
def test_an_allowed_skip_passes_and_says_what_was_not_run_and_why(
    changes: tuple[Change, ...], profile: Profile, labels: Mapping[str, str], finding: str
) -> None:
    ev = judged(*changes, profile=profile, labels=labels)
    assert (ev.verdict, ev.reasons) == ("passed", ())
    assert any(f.code == "SkipAllowed" and finding in f.message for f in ev.findings), ev.findings


def test_every_allowed_skip_says_why() -> None:
    assert {s.what for s in ALLOWED_SKIPS} == {"amp.bf16", "amp.native", "amp.apex", "tensorCores", "multiGpu", "sdpa",
                                              "sdpa.flash", "sdpa.memEfficient", "fp8", "nccl", "compile"}
    assert all(s.why for s in ALLOWED_SKIPS)


@pytest.mark.parametrize(("exit_code", "reason", "shown"), [
    (139, "Error", "exit code 139 (SIGSEGV) after writing a result"),
    (134, "Error", "exit code 134 (SIGABRT) after writing a result"),
    (137, "Error", "exit code 137 (SIGKILL) after writing a result"),
    (1, "Error", "exit code 1 (Error) after writing a result"),
    (3, "", "exit code 3 (no reason) after writing a result"),
])
def test_a_probe_that_exits_non_zero_after_a_good_result_is_an_error(exit_code: int, reason: str, shown: str) -> None:
    ev = judged(exit_code=exit_code, reason=reason)
    assert ev.verdict == "error"
    assert [str(r) for r in ev.reasons] == [f"ProbeExited: {shown}"]


def test_a_signal_without_a_result_is_named_too() -> None:
    status = terminated(None, exit_code=139, reason="Error")
    ev = evaluate_pod(P2006, pod_view(pod_body(P2006, make_node("n1"), phase="Failed", status=status)), T4_LABELS)
    assert [str(r) for r in ev.reasons] == ["ProbeCrashed: exit code 139 (SIGSEGV) without a result"]


def test_a_proven_failure_stands_and_the_gaps_become_findings() -> None:
    ev = judged(checks(conv3d={"status": "ok", "nanCount": 3}, channelsLast=dict(SKIPPED)))
    assert (ev.verdict, codes(ev)) == ("failed", ["Conv3dNaN"])
    assert any(f.code == "IncompleteResult" and "channelsLast" in f.message for f in ev.findings)


def test_a_result_that_is_no_gpu_run_is_an_error_even_with_a_failure() -> None:
    ev = judged(checks(cuda=None, conv3d={"status": "ok", "nanCount": 3}))
    assert ev.verdict == "error"
    assert codes(ev) == ["IncompleteResult"]


# -- section 4: numbers must be possible ---------------------------------------------------------------

IMPLAUSIBLE: list[tuple[str, tuple[Change, ...], Mapping[str, str], str]] = [
    ("fp16-speedup-not-from-its-throughputs", (tc(fp16Speedup=9.9),), T4_LABELS,
     "fp16Speedup 9.9, but fp16/fp32 is 52.1/7.9 = 6.59"),
    ("bf16-speedup-not-from-its-throughputs", (A100, A100_NUMBERS, tc(bf16=230.0, bf16Speedup=20.0)), A100_LABELS,
     "bf16Speedup 20"),
    ("tf32-speedup-not-from-its-throughputs", (A100, A100_NUMBERS, tc(tf32=135.0, tf32Speedup=3.0)), A100_LABELS,
     "tf32Speedup 3"),
    ("speedup-without-throughputs", (tc(fp16=None),), T4_LABELS,
     "fp16Speedup 6.6 without the fp16 and fp32 throughputs"),
    ("speedup-over-zero-fp32", (tc(fp32=0.0),), T4_LABELS, "without the fp16 and fp32 throughputs"),
    ("t4-fp16-above-peak", (tc(fp16=100.0, fp16Speedup=12.66),), T4_LABELS,
     f"fp16 100 TFLOP/s is more than {PEAK_MARGIN:g}x the Tesla T4 peak of 65"),
    ("t4-fp32-above-peak", (tc(fp32=11.0, fp16Speedup=4.74),), T4_LABELS, "fp32 11 TFLOP/s"),
    ("a100-tf32-above-peak", (A100, A100_NUMBERS, tc(tf32=200.0, tf32Speedup=10.7)), A100_LABELS,
     "tf32 200 TFLOP/s is more than 1.25x the A100-SXM4-40GB peak of 156"),
    ("h100-bf16-above-peak", (board("NVIDIA H100 80GB HBM3", "9.0", "NVIDIA", "450.80.02"),
                              tc(fp32=51.0, fp16=720.0, fp16Speedup=14.12, bf16=1300.0, bf16Speedup=25.49)),
     H100_LABELS, "bf16 1300 TFLOP/s is more than 1.25x the NVIDIA H100 80GB HBM3 peak of 989"),
    ("compute-capability-not-the-products", (board("Tesla T4", "8.0"),), NO_GFD,
     "gpu0 (Tesla T4) reports compute capability 8.0; the catalogue says 7.5"),
]


@pytest.mark.parametrize(("changes", "labels", "shown"), [pytest.param(*row[1:], id=row[0]) for row in IMPLAUSIBLE])
def test_impossible_numbers_are_an_error(changes: tuple[Change, ...], labels: Mapping[str, str], shown: str) -> None:
    ev = judged(*changes, labels=labels)
    assert ev.verdict == "error"
    assert "ImplausibleResult" in codes(ev)
    assert shown in text(ev.reasons)


POSSIBLE: list[tuple[str, tuple[Change, ...], Mapping[str, str]]] = [
    ("t4-fp16-within-the-margin", (tc(fp16=80.0, fp16Speedup=10.13),), T4_LABELS),
    ("speedup-rounded-to-two-decimals", (tc(fp16Speedup=6.59),), T4_LABELS),
    ("a30-has-no-listed-peak", (board("NVIDIA A30", "8.0", "NVIDIA", "450.80.02"),
                                tc(fp16=2000.0, fp16Speedup=253.2)), NO_GFD),
    ("gh200-has-no-listed-peak", (board("NVIDIA GH200 480GB", "9.0", "NVIDIA", "450.80.02"),
                                  tc(fp16=2000.0, fp16Speedup=253.2)), NO_GFD),
    ("two-boards-the-faster-peak-bounds", (boards(T4, ("Tesla V100-SXM2-16GB", "Tesla", "7.0")),
                                           tc(fp16=100.0, fp16Speedup=12.66)), NO_GFD),
]


@pytest.mark.parametrize(("changes", "labels"), [pytest.param(*row[1:], id=row[0]) for row in POSSIBLE])
def test_possible_numbers_and_unlisted_peaks_pass(changes: tuple[Change, ...], labels: Mapping[str, str]) -> None:
    ev = judged(*changes, labels=labels)
    assert (ev.verdict, ev.reasons) == ("passed", ())


SLOW = tc(fp32=5.0, fp16=9.0, fp16Speedup=1.8)
TENSOR_CORES: list[tuple[str, str, str, str, Mapping[str, str], str]] = [
    # product, brand, cc, node labels, verdict
    ("gtx-1660-ti", "NVIDIA GeForce GTX 1660 Ti", "GeForce", "7.5",
     dict(make_node("n1", "NVIDIA GeForce GTX 1660 Ti").labels), "passed"),
    ("gtx-1650", "GeForce GTX 1650", "GeForce", "7.5", NO_GFD, "passed"),
    ("gtx-1660-super", "NVIDIA GeForce GTX 1660 SUPER", "GeForce", "7.5", NO_GFD, "passed"),
    ("uncatalogued-pascal", "Mystery Board", "Tesla", "6.1", NO_GFD, "passed"),
    ("rtx-2080-ti", "GeForce RTX 2080 Ti", "GeForce", "7.5", NO_GFD, "failed"),
    ("uncatalogued-turing", "Mystery Board", "Tesla", "7.5", NO_GFD, "failed"),
]


@pytest.mark.parametrize(("product", "brand", "cc", "labels", "verdict"),
                         [pytest.param(*row[1:], id=row[0]) for row in TENSOR_CORES])
def test_the_tensor_core_threshold_applies_where_the_catalogue_says_there_are_tensor_cores(
    product: str, brand: str, cc: str, labels: Mapping[str, str], verdict: str
) -> None:
    ev = judged(board(product, cc, brand), SLOW, labels=labels)
    assert ev.verdict == verdict
    if verdict == "passed":
        assert "NoTensorCores" in [f.code for f in ev.findings]
    else:
        assert codes(ev) == ["TensorCoresSlow"]


# -- section 5: the result must match the node ---------------------------------------------------------


def labelled(**values: str) -> dict[str, str]:
    return {**T4_LABELS, **{f"nvidia.com/{k.replace('_', '.')}": v for k, v in values.items()}}


MISMATCH: list[tuple[str, tuple[Change, ...], Mapping[str, str], str]] = [
    ("product", (), labelled(gpu_product="Tesla-V100-SXM2-16GB"),
     "gpu0 (Tesla T4): the node's labels say the GPU is Tesla-V100-SXM2-16GB"),
    ("compute-capability", (), {**T4_LABELS, "nvidia.com/gpu.compute.minor": "0"},
     "gpu0 (Tesla T4): compute capability 7.5; the node's labels say 7.0"),
    ("driver", (), {**T4_LABELS, "nvidia.com/cuda.driver-version.full": "460.32.03"},
     "driver 450.51.06; the node's labels say 460.32.03"),
    ("more-gpus-than-the-node", (boards(T4, T4),), T4_LABELS, "the result sees 2 GPUs; the node's labels say it has 1"),
    ("devices-not-the-count", (gpu(count=2),), {**T4_LABELS, "nvidia.com/gpu.count": "4"},
     "gpu.count 2 but 1 devices listed"),
]


@pytest.mark.parametrize(("changes", "labels", "shown"), [pytest.param(*row[1:], id=row[0]) for row in MISMATCH])
def test_a_result_that_does_not_describe_the_node_is_an_error(
    changes: tuple[Change, ...], labels: Mapping[str, str], shown: str
) -> None:
    ev = judged(*changes, labels=labels)
    assert ev.verdict == "error"
    assert "HardwareMismatch" in codes(ev)
    assert shown in text(ev.reasons)


PARTIAL_DRIVER = {k: v for k, v in T4_LABELS.items() if "driver" not in k} | {
    "nvidia.com/cuda.driver-version.major": "450"}
MATCH: list[tuple[str, tuple[Change, ...], Mapping[str, str]]] = [
    ("gfd-dashes-nvml-spaces", (), T4_LABELS),
    ("gfd-shared-suffix", (), {**T4_LABELS, "nvidia.com/gpu.product": "Tesla-T4-SHARED"}),
    ("gfd-mig-suffix", (board("NVIDIA A100-SXM4-40GB", "8.0", "NVIDIA", "450.80.02"), A100_NUMBERS),
     {**A100_LABELS, "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}),
    ("driver-known-only-in-part", (), PARTIAL_DRIVER),
    ("fewer-gpus-than-the-node", (), {**T4_LABELS, "nvidia.com/gpu.count": "8"}),
    ("no-gfd-labels", (), NO_GFD),
]


@pytest.mark.parametrize(("changes", "labels"), [pytest.param(*row[1:], id=row[0]) for row in MATCH])
def test_a_result_that_describes_the_node_passes(changes: tuple[Change, ...], labels: Mapping[str, str]) -> None:
    ev = judged(*changes, labels=labels)
    assert (ev.verdict, ev.reasons) == ("passed", ())


def test_every_board_is_judged_and_the_reasons_name_the_device() -> None:
    ev = judged(boards(T4, ("GeForce RTX 2080 Ti", "GeForce", "7.5"), driver="440.100"), labels=NO_GFD)
    assert (ev.verdict, codes(ev)) == ("incompatible", ["DriverTooOld"])
    assert ev.reasons[0].message.startswith("gpu1 (GeForce RTX 2080 Ti): 440.100 < 450")
    assert any(f.message.startswith("gpu0 (Tesla T4): 440.100 on datacenter board") for f in ev.findings)


def test_a_kepler_second_board_makes_the_node_incompatible() -> None:
    ev = judged(boards(T4, ("Tesla K80", "Tesla", "3.7")), labels=NO_GFD)
    assert ev.verdict == "incompatible"
    assert [str(r) for r in ev.reasons] == ["ComputeCapabilityTooLow: gpu1 (Tesla K80): 3.7 (Kepler, Tesla K80) < 6.0"]


def test_a_board_with_tensor_cores_keeps_the_threshold_on_a_mixed_node() -> None:
    pascal_first = boards(("Tesla P100-PCIE-16GB", "Tesla", "6.0"), T4)
    ev = judged(pascal_first, tc(fp16=15.0, fp16Speedup=1.9), labels=NO_GFD)
    assert (ev.verdict, codes(ev)) == ("failed", ["TensorCoresSlow"])


def test_an_allowed_skip_must_hold_for_every_board() -> None:
    mixed = boards(T4, ("A100-SXM4-40GB", "NVIDIA", "8.0"), driver="450.80.02")
    ev = judged(mixed, env(torch="2.5.0a0"), amp(bf16={"skipped": "compute capability 7.5 < 8.0"}),
                profile=BF16, labels=NO_GFD)
    assert ev.verdict == "error"
    assert "amp.bf16 skipped" in text(ev.reasons)


def test_known_issues_of_every_board_are_reported() -> None:
    ev = judged(boards(T4, ("Tesla V100-SXM2-16GB", "Tesla", "7.0")), labels=NO_GFD)
    assert ev.verdict == "passed"
    architectures = {a for issue in ev.known_issues for a in issue.architectures}
    assert {"Turing", "Volta"} <= architectures
    assert ev.numbers["gpu"] == "Tesla T4, Tesla V100-SXM2-16GB"


# -- the simulator's healthy boards still pass ----------------------------------------------------------

P2410 = parse_profile({**yaml.safe_load((ROOT / "profiles" / "pytorch-24.10.yaml").read_text()),
                       "metadata": {"name": "pytorch-24.10", "uid": "uid-2", "generation": 1}})
HEALTHY_BOARDS = ["Tesla P100-PCIE-16GB", "Tesla P4", "Tesla V100-SXM2-16GB", "Tesla T4", "GeForce RTX 2080 Ti",
                  "NVIDIA GeForce GTX 1660 Ti", "A100-SXM4-40GB", "NVIDIA A10", "NVIDIA L4", "NVIDIA H100 80GB HBM3",
                  "NVIDIA H200"]


@pytest.mark.parametrize("gpus", [1, 2])
@pytest.mark.parametrize(("profile", "driver"), [(P2006, "450.80.02"), (P2410, "560.35.03")], ids=["20.06", "24.10"])
@pytest.mark.parametrize("product", HEALTHY_BOARDS)
def test_the_simulated_probe_on_a_healthy_board_passes(product: str, profile: Profile, driver: str, gpus: int) -> None:
    if gpus > 1:
        profile = dataclasses.replace(profile, validation=dataclasses.replace(profile.validation, gpus_per_probe=gpus))
    sim = parse_fleet({"nodes": [{"name": "n1", "gpu": {"product": product, "count": 2, "driver": driver}}]}).nodes[0]
    node = node_view(build_node(sim))
    pod = pod_body(profile, node)
    end = ending(sim, pod)
    pod["status"] = {"phase": end.phase, **terminated(end.message, exit_code=end.exit_code, reason=end.reason)}
    ev = evaluate_pod(profile, pod_view(pod), node.labels)
    assert (ev.verdict, ev.reasons) == ("passed", ()), ev.findings


# -- judging never raises on a result the parser accepts ------------------------------------------------


def _leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] or [path]
    return [path]


LEAVES = [p for p in _leaves(BASE_RESULT) if p and p[0] != "schema"]
DELETE = object()
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.text(max_size=12), st.just(DELETE),
                   st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
LABEL_VALUE = "0123456789.-_TeslaV1ABGH"  # the API server allows only [A-Za-z0-9_.-] in label values
GFD_KEYS = ["nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.compute.major",
            "nvidia.com/gpu.compute.minor", "nvidia.com/cuda.driver-version.full",
            "nvidia.com/cuda.driver-version.major"]


def _edit(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set or delete one leaf; a path an earlier edit removed is left alone."""
    parent: Any = doc
    try:
        for key in path[:-1]:
            parent = parent[key]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


@given(edits=st.lists(st.tuples(st.sampled_from(LEAVES), VALUES), max_size=8),
       labels=st.dictionaries(st.sampled_from(GFD_KEYS), st.text(LABEL_VALUE, max_size=12)))
@settings(max_examples=300, deadline=None)
def test_judging_any_result_the_parser_accepts_gives_a_verdict(
    edits: list[tuple[tuple[str | int, ...], Any]], labels: dict[str, str]
) -> None:
    doc = copy.deepcopy(BASE_RESULT)
    for path, value in edits:
        _edit(doc, path, value)
    try:
        result = parse_result(json.dumps(doc))
    except UntrustedResult:
        return
    ev = judge(P2006, result, labels)
    assert ev.verdict in VERDICTS
    assert len(ev.reasons) <= MAX_REASONS and (ev.verdict == "passed") == (not ev.reasons)
