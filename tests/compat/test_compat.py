"""Static compatibility of a node's GPU and driver with the 20.06 requirements."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torchproof.compat import Hardware, evaluate, hardware_from_labels, matching_known_issues
from torchproof.profile import KnownIssue, Requirements, parse_profile
from torchproof.versions import ComputeCapability

ROOT = Path(__file__).resolve().parents[2]
PROFILE = parse_profile(yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text()))
REQ: Requirements = PROFILE.requirements


def codes(hw: Hardware, req: Requirements = REQ) -> tuple[str, list[str]]:
    result = evaluate(req, hw)
    return result.verdict, [r.code for r in result.reasons]


def test_t4_on_a_418_driver_uses_forward_compatibility() -> None:
    result = evaluate(REQ, Hardware(product="Tesla T4", driver="418.87.01"))
    assert result.verdict == "compatible"
    assert [r.code for r in result.reasons] == ["ForwardCompatibility"]
    assert result.model is not None and result.model.architecture == "Turing"


def test_rtx_2080_ti_on_440_is_too_old_because_it_is_no_datacenter_board() -> None:
    result = evaluate(REQ, Hardware(product="GeForce RTX 2080 Ti", driver="440.100"))
    assert result.verdict == "incompatible"
    assert [str(r) for r in result.reasons] == [
        "DriverTooOld: 440.100 < 450 and GeForce RTX 2080 Ti is not a datacenter board"
    ]


def test_k80_has_too_low_a_compute_capability() -> None:
    result = evaluate(REQ, Hardware(product="Tesla K80", driver="450.51.06"))
    assert result.verdict == "incompatible"
    assert [str(r) for r in result.reasons] == ["ComputeCapabilityTooLow: 3.7 (Kepler, Tesla K80) < 6.0"]


def test_v100_on_410_is_on_no_forward_compatible_branch() -> None:
    result = evaluate(REQ, Hardware(product="Tesla V100-SXM2-16GB", driver="410.79"))
    assert result.verdict == "incompatible"
    assert [str(r) for r in result.reasons] == [
        "DriverTooOld: 410.79 < 450 and branch 410 is not a forward-compatible branch for datacenter boards"
        " (418, 440)"
    ]


def test_t4_below_the_branch_minimum_is_too_old() -> None:
    verdict, found = codes(Hardware(product="Tesla T4", driver="440.26"))
    assert (verdict, found) == ("incompatible", ["DriverTooOld"])
    assert "440.30" in str(evaluate(REQ, Hardware(product="Tesla T4", driver="440.26")).reasons[0])


def test_a100_on_450_passes_though_ampere_is_not_named() -> None:
    result = evaluate(REQ, Hardware(product="A100-SXM4-40GB", driver="450.51.06"))
    assert result.verdict == "compatible"
    assert [r.code for r in result.reasons] == ["ArchitectureNotListed"]
    assert "Ampere" in result.reasons[0].message


def test_listed_architectures_on_a_new_driver_give_no_reasons() -> None:
    for product in ("Tesla T4", "Tesla V100-SXM2-16GB", "Tesla P100-PCIE-16GB", "GeForce RTX 2080 Ti"):
        assert codes(Hardware(product=product, driver="450.51.06")) == ("compatible", [])


def test_no_labels_is_unknown_and_says_what_is_missing() -> None:
    result = evaluate(REQ, hardware_from_labels({}))
    assert result.verdict == "unknown"
    assert [r.code for r in result.reasons] == ["DriverUnknown", "ComputeCapabilityUnknown"]
    assert result.model is None


def test_unknown_product_without_capability_is_unknown() -> None:
    verdict, found = codes(Hardware(product="NVIDIA A10G", driver="535.104.05"))
    assert (verdict, found) == ("unknown", ["ComputeCapabilityUnknown"])
    assert "'NVIDIA A10G' is not in the GPU catalogue" in str(evaluate(REQ, Hardware(product="NVIDIA A10G")))


def test_unknown_product_is_judged_by_its_labelled_capability() -> None:
    assert codes(Hardware(product="NVIDIA A10G", driver="535.104.05", compute_capability="8.6")) == (
        "compatible",
        ["ArchitectureNotListed"],
    )
    assert codes(Hardware(product="Mystery", driver="535.104.05", compute_capability="5.2"))[0] == "incompatible"


def test_an_incompatible_fact_outweighs_a_missing_one_and_only_blocking_reasons_are_given() -> None:
    assert codes(Hardware(product="Tesla K80")) == ("incompatible", ["ComputeCapabilityTooLow"])


def test_unparsable_driver_is_unknown_not_incompatible() -> None:
    assert codes(Hardware(product="Tesla T4", driver="n/a")) == ("unknown", ["DriverUnknown"])


def test_forward_compatibility_needs_a_known_board_class() -> None:
    assert codes(Hardware(product="Mystery", driver="440.64", compute_capability="7.5")) == (
        "unknown",
        ["BoardClassUnknown"],
    )
    assert codes(Hardware(product="Mystery", brand="Tesla", driver="440.64", compute_capability="7.5")) == (
        "compatible",
        ["ForwardCompatibility"],
    )
    assert codes(Hardware(brand="GeForce", driver="440.64", compute_capability="7.5")) == (
        "incompatible",
        ["DriverTooOld"],
    )


def test_catalogue_class_wins_over_brand() -> None:
    assert codes(Hardware(product="GeForce RTX 2080 Ti", brand="Tesla", driver="440.64"))[0] == "incompatible"


def test_max_compute_capability_and_unsupported_architecture() -> None:
    capped = Requirements(
        driver=REQ.driver,
        min_compute_capability=REQ.min_compute_capability,
        max_compute_capability=ComputeCapability(7, 5),
        architectures=frozenset({"Pascal", "Turing"}),
    )
    assert codes(Hardware(product="NVIDIA H100 80GB HBM3", driver="550.54.15"), capped) == (
        "incompatible",
        ["ComputeCapabilityTooHigh"],
    )
    # Volta lies between two named architectures: the release leaves it out on purpose.
    assert codes(Hardware(product="Tesla V100-SXM2-16GB", driver="550.54.15"), capped) == (
        "incompatible",
        ["ArchitectureUnsupported"],
    )


def test_hardware_from_full_gfd_labels() -> None:
    hw = hardware_from_labels(
        {
            "nvidia.com/gpu.product": "Tesla-T4",
            "nvidia.com/gpu.count": "4",
            "nvidia.com/cuda.driver-version.full": "418.87.01",
            "nvidia.com/cuda.driver-version.major": "999",
            "nvidia.com/gpu.compute.major": "7",
            "nvidia.com/gpu.compute.minor": "5",
        }
    )
    assert hw == Hardware(product="Tesla-T4", driver="418.87.01", compute_capability="7.5", count=4)
    assert evaluate(REQ, hw).verdict == "compatible"


@pytest.mark.parametrize(
    ("labels", "driver"),
    [
        ({"nvidia.com/cuda.driver-version.major": "450", "nvidia.com/cuda.driver-version.minor": "51",
          "nvidia.com/cuda.driver-version.revision": "06"}, "450.51.06"),
        ({"nvidia.com/cuda.driver.major": "440", "nvidia.com/cuda.driver.minor": "30",
          "nvidia.com/cuda.driver.rev": ""}, "440.30"),
        ({"nvidia.com/cuda.driver.minor": "30"}, None),
    ],
)
def test_hardware_from_split_driver_labels(labels: dict[str, str], driver: str | None) -> None:
    assert hardware_from_labels(labels).driver == driver


def test_hardware_from_labels_ignores_a_bad_count_and_a_half_capability() -> None:
    hw = hardware_from_labels({"nvidia.com/gpu.count": "many", "nvidia.com/gpu.compute.major": "7"})
    assert (hw.count, hw.compute_capability) == (None, None)


T4_LABEL = {"nvidia.com/gpu.product": "Tesla-T4"}


# Partial label sets: each is unknown (the probe decides), never read as a complete fact and judged. A
# bare major "440" read as 440.0 would be judged DriverTooOld (below 440.30), "418" as 418.0 likewise, and
# "450" as 450.0 would pass the minimum without anyone knowing the driver.
@pytest.mark.parametrize(
    ("labels", "partial"),
    [
        ({"nvidia.com/cuda.driver-version.major": "440"}, "cuda.driver-version.major=440 without a minor"),
        ({"nvidia.com/cuda.driver-version.major": "418", "nvidia.com/cuda.driver-version.revision": "87"},
         "cuda.driver-version.major=418 without a minor"),
        ({"nvidia.com/cuda.driver.major": "450"}, "cuda.driver.major=450 without a minor"),
        ({"nvidia.com/cuda.driver-version.full": "440"}, "cuda.driver-version.full=440 without a minor"),
    ],
)
def test_a_driver_known_only_by_its_major_is_unknown(labels: dict[str, str], partial: str) -> None:
    hw = hardware_from_labels({**T4_LABEL, **labels})
    assert hw.driver is None
    result = evaluate(REQ, hw)
    assert result.verdict == "unknown"
    assert [r.code for r in result.reasons][:1] == ["DriverUnknown"]
    assert partial in result.reasons[0].message


@pytest.mark.parametrize(
    "labels",
    [
        {"nvidia.com/gpu.compute.major": "3"},  # a K80's major alone must not rule the node out
        {"nvidia.com/gpu.compute.minor": "7"},
    ],
)
def test_a_half_compute_capability_is_unknown(labels: dict[str, str]) -> None:
    hw = hardware_from_labels({"nvidia.com/cuda.driver-version.full": "450.51.06", **labels})
    assert hw.compute_capability is None
    assert "not both labelled" in hw.partial[0]
    assert evaluate(REQ, hw).verdict == "unknown"


@pytest.mark.parametrize(
    ("driver", "verdict"),
    [
        ("418.39", "incompatible"),  # on R418, but before its forward-compatibility support began
        ("418.40.04", "compatible"),
        ("418.87.01", "compatible"),
    ],
)
def test_r418_forward_compatibility_starts_at_418_40_04(driver: str, verdict: str) -> None:
    result = evaluate(REQ, Hardware(product="Tesla T4", driver=driver))
    assert result.verdict == verdict
    if verdict == "incompatible":
        assert str(result.reasons[0]) == "DriverTooOld: 418.39 < 450 and < 418.40.04, the minimum on branch 418"


def test_matching_known_issues_filters_by_architecture_and_precision() -> None:
    issues = PROFILE.known_issues
    turing = {i.id for i in matching_known_issues(issues, "Turing")}
    assert "turing-maskrcnn-fp32-perf" in turing
    assert "volta-waveglow-fp32-perf" not in turing
    assert "conv3d-fft-tiled-nan" in turing  # names no architecture: applies to all
    turing_amp = {i.id for i in matching_known_issues(issues, "Turing", frozenset({"amp"}))}
    assert "turing-resnet50-amp-perf" in turing_amp
    assert "turing-maskrcnn-fp32-perf" not in turing_amp
    assert {i.id for i in matching_known_issues(issues, "Ampere")} >= {"ampere-channels-last-cudnn-nan"}
    assert matching_known_issues(issues, None) == issues


def test_matching_known_issues_keeps_order() -> None:
    a = KnownIssue("a", "x", frozenset({"Volta"}))
    b = KnownIssue("b", "y")
    assert matching_known_issues([b, a], "Volta") == (b, a)


def test_24_10_on_hopper_and_on_an_old_datacenter_branch() -> None:
    """24.10 names Hopper (Triton 24.10, same base): no ArchitectureNotListed there; Blackwell is newer."""
    req = parse_profile(yaml.safe_load((ROOT / "profiles" / "pytorch-24.10.yaml").read_text())).requirements
    assert codes(Hardware(product="NVIDIA H200", driver="570.86.15"), req) == ("compatible", [])
    assert codes(Hardware(product="NVIDIA B200", driver="570.86.15"), req) == ("compatible", ["ArchitectureNotListed"])
    assert codes(Hardware(product="NVIDIA H100 80GB HBM3", driver="535.104.05"), req) == (
        "compatible",
        ["ForwardCompatibility"],
    )
    assert codes(Hardware(product="NVIDIA GeForce RTX 4090", driver="535.104.05"), req) == (
        "incompatible",
        ["DriverTooOld"],
    )


LABEL_KEYS = ["nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.compute.major",
              "nvidia.com/gpu.compute.minor", "nvidia.com/cuda.driver-version.full",
              "nvidia.com/cuda.driver-version.major", "nvidia.com/cuda.driver-version.minor",
              "nvidia.com/cuda.driver-version.revision", "nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor"]


@given(st.dictionaries(st.sampled_from(LABEL_KEYS), st.text(max_size=12) | st.from_regex(r"\A[0-9.²³¹٣-]{1,8}\Z")))
@example({"nvidia.com/gpu.count": "²"})  # str.isdigit() is true, int() refuses it
@settings(max_examples=400, deadline=None, database=None)
def test_any_label_values_give_hardware_and_a_verdict_never_an_exception(labels: dict[str, str]) -> None:
    """Node labels are anyone's with node patch rights: odd digits ('²'), signs, spaces and partial sets."""
    hw = hardware_from_labels(labels)
    assert hw.count is None or hw.count >= 0
    assert evaluate(REQ, hw).verdict in ("compatible", "incompatible", "unknown")
