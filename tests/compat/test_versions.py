"""Driver versions and compute capabilities compare as numbers, not strings."""

from __future__ import annotations

import pytest
from torchproof.versions import ComputeCapability, DriverVersion


@pytest.mark.parametrize("text", ["450.51.06", "418.87.01", "440.30", "450", "440.100"])
def test_driver_version_round_trips_its_text(text: str) -> None:
    assert str(DriverVersion.parse(text)) == text


def test_driver_version_branch_is_the_major_number() -> None:
    assert DriverVersion.parse("418.87.01").branch == 418
    assert DriverVersion.parse("450").branch == 450


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("440.30", "440.100"),  # as strings these would sort the other way
        ("450", "450.51.06"),
        ("418.87.01", "440.30"),
        ("450.51.05", "450.51.06"),
        ("99", "100"),
    ],
)
def test_driver_versions_order_numerically(low: str, high: str) -> None:
    assert DriverVersion.parse(low) < DriverVersion.parse(high)
    assert DriverVersion.parse(high) > DriverVersion.parse(low)


def test_driver_versions_equal_by_value_and_hash_alike() -> None:
    assert DriverVersion.parse("450") == DriverVersion.parse("450.0.0")
    assert DriverVersion.parse("450.51.06") == DriverVersion.parse("450.51.6")
    assert len({DriverVersion.parse("450"), DriverVersion.parse("450.0"), DriverVersion.parse("450.1")}) == 2
    assert DriverVersion.parse("450") >= DriverVersion.parse("450.0")


@pytest.mark.parametrize("text", ["", "abc", "418.xx", "450.", ".450", "450..1", "1.2.3.4", "-450", "450 51"])
def test_driver_version_rejects_garbage_with_the_text_in_the_message(text: str) -> None:
    with pytest.raises(ValueError, match="invalid driver version"):
        DriverVersion.parse(text)


def test_driver_version_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="invalid driver version"):
        DriverVersion.parse(450)  # type: ignore[arg-type]


def test_compute_capability_parses_and_orders() -> None:
    cc = ComputeCapability.parse("7.5")
    assert (cc.major, cc.minor, str(cc)) == (7, 5, "7.5")
    assert ComputeCapability.parse("9.0") < ComputeCapability.parse("10.0") < ComputeCapability.parse("12.0")
    assert ComputeCapability.parse("8.6") > ComputeCapability.parse("8.0")
    assert ComputeCapability.parse("6.0") == ComputeCapability(6, 0)


@pytest.mark.parametrize("text", ["7", "7.", "seven", "7.5.1", "", "100.0"])
def test_compute_capability_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid compute capability"):
        ComputeCapability.parse(text)
