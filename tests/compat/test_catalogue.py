"""NVML and GPU Feature Discovery product names map to the reference table's facts."""

from __future__ import annotations

import pytest
from torchproof.catalogue import (
    ARCHITECTURES,
    Peak,
    architecture_for,
    display_name,
    has_tensor_cores,
    lookup,
    peak,
    same_product,
)
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
    ("NVIDIA GeForce GTX 1650", "7.5", "Turing", False),
    ("GeForce GTX 1660", "7.5", "Turing", False),
    ("NVIDIA GeForce GTX 1660 Ti", "7.5", "Turing", False),
    ("NVIDIA GeForce GTX 1660 SUPER", "7.5", "Turing", False),
    ("NVIDIA-GeForce-GTX-1660-Ti", "7.5", "Turing", False),
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


@pytest.mark.parametrize(("product", "tensor_cores"), [
    ("Tesla K80", False), ("Tesla M60", False), ("Tesla P100-PCIE-16GB", False), ("Tesla P4", False),
    ("GeForce GTX 1080 Ti", False),
    # Turing without tensor cores: the GeForce GTX 16xx boards
    ("NVIDIA GeForce GTX 1650", False), ("GeForce GTX 1660", False), ("NVIDIA GeForce GTX 1660 Ti", False),
    ("NVIDIA GeForce GTX 1660 SUPER", False),
    ("Tesla V100-SXM2-16GB", True), ("Tesla T4", True), ("GeForce RTX 2080 Ti", True), ("Quadro RTX 6000", True),
    ("A100-SXM4-40GB", True), ("NVIDIA A10", True), ("NVIDIA GeForce RTX 3090", True), ("NVIDIA L4", True),
    ("NVIDIA H100 80GB HBM3", True), ("NVIDIA B200", True), ("NVIDIA GeForce RTX 5090", True),
])
def test_the_catalogue_says_which_products_have_tensor_cores(product: str, tensor_cores: bool) -> None:
    model = lookup(product)
    assert model is not None and model.tensor_cores is tensor_cores
    assert has_tensor_cores(product, None) is tensor_cores


@pytest.mark.parametrize(("product", "cc", "expected"), [
    ("Mystery Board", "6.1", False), ("Mystery Board", "7.0", True), ("Mystery Board", "7.5", True),
    (None, "6.0", False), ("Mystery Board", None, None), (None, None, None),
    ("GeForce GTX 1660 Ti", "9.0", False),  # the catalogue's fact wins over a reported capability
])
def test_tensor_cores_of_an_uncatalogued_product_follow_its_compute_capability(
    product: str | None, cc: str | None, expected: bool | None
) -> None:
    assert has_tensor_cores(product, ComputeCapability.parse(cc) if cc else None) is expected


V100 = Peak(fp32=15.7, tf32=None, fp16=125.0, bf16=None)
T4 = Peak(fp32=8.1, tf32=None, fp16=65.0, bf16=None)
A100 = Peak(fp32=19.5, tf32=156.0, fp16=312.0, bf16=312.0)
HOPPER = Peak(fp32=67.0, tf32=495.0, fp16=989.0, bf16=989.0)


@pytest.mark.parametrize(("product", "expected"), [
    ("Tesla V100-SXM2-16GB", V100), ("Tesla V100-PCIE-32GB", V100), ("Tesla-V100-SXM2-32GB", V100),
    ("Tesla T4", T4), ("Tesla-T4-SHARED", T4),
    ("A100-SXM4-40GB", A100), ("NVIDIA A100 80GB PCIe", A100), ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", A100),
    ("NVIDIA H100 80GB HBM3", HOPPER), ("NVIDIA H100 PCIe", HOPPER), ("NVIDIA H200", HOPPER),
    # no listed figure: never guessed
    ("Tesla V100S-PCIE-32GB", None), ("Tesla V100-SXM3-32GB", None), ("NVIDIA GH200 480GB", None),
    ("NVIDIA A30", None), ("NVIDIA L4", None), ("Tesla P100-PCIE-16GB", None), ("NVIDIA B200", None),
    ("Mystery Board", None),
])
def test_peaks_come_from_the_reference_table_only(product: str, expected: Peak | None) -> None:
    assert peak(product) == expected


@pytest.mark.parametrize(("nvml", "gfd", "same"), [
    ("Tesla T4", "Tesla-T4", True),
    ("Tesla T4", "Tesla-T4-SHARED", True),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", True),
    ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB", True),
    ("Tesla V100-SXM2-16GB", "Tesla-V100-SXM2-16GB", True),
    ("Tesla T4", "Tesla-V100-SXM2-16GB", False),
    ("Tesla V100-SXM2-16GB", "Tesla-V100-SXM2-32GB", False),
    ("NVIDIA A10", "NVIDIA-A100-SXM4-40GB", False),
    ("NVIDIA GeForce GTX 1660", "NVIDIA-GeForce-GTX-1660-Ti", False),
])
def test_same_product_across_nvml_and_gfd_spellings(nvml: str, gfd: str, same: bool) -> None:
    assert same_product(nvml, gfd) is same


@pytest.mark.parametrize(
    ("label", "nvml"),
    [
        ("Tesla-T4", "Tesla T4"),
        ("Tesla-V100-SXM2-16GB", "Tesla V100-SXM2-16GB"),
        ("Tesla-P100-PCIE-16GB", "Tesla P100-PCIE-16GB"),
        ("NVIDIA-A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"),
        ("GeForce-RTX-2080-Ti", "GeForce RTX 2080 Ti"),
        ("NVIDIA-H100-80GB-HBM3", "NVIDIA H100 80GB HBM3"),
        ("Tesla V100-SXM2-32GB", "Tesla V100-SXM2-32GB"),  # already NVML's spelling
    ],
)
def test_display_name_gives_nvmls_spelling_of_a_gfd_label(label: str, nvml: str) -> None:
    assert display_name(label) == nvml
