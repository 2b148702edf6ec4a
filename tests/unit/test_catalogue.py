"""NVML and GPU Feature Discovery product names map to the reference table's facts."""

from __future__ import annotations

import pytest
from torchproof.catalogue import ARCHITECTURES, architecture_for, lookup
from torchproof.versions import ComputeCapability

CASES = [
    # product as reported, compute capability, architecture, datacenter
    ("Tesla T4", "7.5", "Turing", True),
    ("Tesla V100-SXM2-16GB", "7.0", "Volta", True),
    ("Tesla P100-PCIE-16GB", "6.0", "Pascal", True),
    ("Tesla P4", "6.1", "Pascal", True),
    ("Tesla P40", "6.1", "Pascal", True),
    ("Tesla K80", "3.7", "Kepler", True),
    ("Tesla M60", "5.2", "Maxwell", True),
    ("A100-SXM4-40GB", "8.0", "Ampere", True),
    ("NVIDIA A100-SXM4-80GB", "8.0", "Ampere", True),
    ("NVIDIA A100 80GB PCIe", "8.0", "Ampere", True),
    ("NVIDIA A30", "8.0", "Ampere", True),
    ("NVIDIA A10", "8.6", "Ampere", True),
    ("NVIDIA A40", "8.6", "Ampere", True),
    ("NVIDIA L4", "8.9", "AdaLovelace", True),
    ("NVIDIA L40S", "8.9", "AdaLovelace", True),
    ("NVIDIA H100 80GB HBM3", "9.0", "Hopper", True),
    ("NVIDIA H200", "9.0", "Hopper", True),
    ("NVIDIA GH200 480GB", "9.0", "Hopper", True),
    ("NVIDIA B200", "10.0", "Blackwell", True),
    ("GeForce RTX 2080 Ti", "7.5", "Turing", False),
    ("NVIDIA GeForce RTX 3090", "8.6", "Ampere", False),
    ("NVIDIA GeForce RTX 4090", "8.9", "AdaLovelace", False),
    ("NVIDIA GeForce RTX 5090", "12.0", "Blackwell", False),
    ("Quadro RTX 6000", "7.5", "Turing", False),
    ("GeForce GTX 1080", "6.1", "Pascal", False),
    # GPU Feature Discovery label values: dashes for spaces, optional sharing/MIG suffixes
    ("Tesla-T4", "7.5", "Turing", True),
    ("Tesla-T4-SHARED", "7.5", "Turing", True),
    ("NVIDIA-A100-SXM4-40GB", "8.0", "Ampere", True),
    ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "8.0", "Ampere", True),
    ("NVIDIA-GeForce-RTX-3090", "8.6", "Ampere", False),
    ("NVIDIA-H100-80GB-HBM3", "9.0", "Hopper", True),
]


@pytest.mark.parametrize(("product", "cc", "architecture", "datacenter"), CASES)
def test_lookup_knows_the_product(product: str, cc: str, architecture: str, datacenter: bool) -> None:
    model = lookup(product)
    assert model is not None
    assert model.compute_capability == ComputeCapability.parse(cc)
    assert model.architecture == architecture
    assert model.datacenter is datacenter


@pytest.mark.parametrize(
    "product",
    ["", "Tesla", "NVIDIA A10G", "NVIDIA A1000", "Radeon RX 7900", "NVIDIA RTX 6000 Ada Generation", "T40", "Foo"],
)
def test_lookup_never_guesses(product: str) -> None:
    assert lookup(product) is None


def test_product_is_shown_as_nvml_spells_it() -> None:
    assert lookup("NVIDIA-GeForce-RTX-3090") is not None
    assert lookup("NVIDIA-GeForce-RTX-3090").product == "NVIDIA GeForce RTX 3090"  # type: ignore[union-attr]
    assert lookup(" Tesla V100-SXM2-16GB ").product == "Tesla V100-SXM2-16GB"  # type: ignore[union-attr]


def test_every_architecture_in_the_table_is_a_known_one() -> None:
    assert {m.architecture for m in (lookup(p) for p, *_ in CASES) if m} <= set(ARCHITECTURES)


def test_architecture_for_listed_capabilities_only() -> None:
    assert architecture_for(ComputeCapability(8, 0)) == "Ampere"
    assert architecture_for(ComputeCapability(7, 5)) == "Turing"
    assert architecture_for(ComputeCapability(8, 7)) is None
