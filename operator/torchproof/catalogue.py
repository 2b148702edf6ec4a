"""GPU product names → compute capability, architecture and datacenter class.

Facts come from NVIDIA's CUDA GPUs list as summarised in shared/reference/ngc-pytorch.md. A product
the table does not name is unknown: the compatibility rules then say "unknown" and let the probe
decide, rather than guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torchproof.versions import ComputeCapability

#: Architectures, oldest first; the spelling is the CRD's enum.
ARCHITECTURES: tuple[str, ...] = (
    "Kepler",
    "Maxwell",
    "Pascal",
    "Volta",
    "Turing",
    "Ampere",
    "AdaLovelace",
    "Hopper",
    "Blackwell",
)


@dataclass(frozen=True)
class GpuModel:
    """What the catalogue knows about one board; ``product`` is the name as the node reported it."""

    product: str
    compute_capability: ComputeCapability
    architecture: str
    datacenter: bool


@dataclass(frozen=True)
class _Entry:
    pattern: re.Pattern[str]
    compute_capability: ComputeCapability
    architecture: str
    datacenter: bool


def _entry(pattern: str, cc: str, architecture: str, datacenter: bool) -> _Entry:
    return _Entry(re.compile(pattern), ComputeCapability.parse(cc), architecture, datacenter)


# Patterns match the normalised name (upper case, "-"/"_" as spaces, no leading "NVIDIA "). A trailing
# \b keeps "A10" from matching "A100" or "A10G"; suffixes such as "-SXM4-40GB", "-SHARED" or
# "-MIG-1g.5gb" (GPU Feature Discovery) are allowed after it.
_TABLE: tuple[_Entry, ...] = (
    _entry(r"^(TESLA )?K80\b", "3.7", "Kepler", True),
    _entry(r"^(TESLA )?M(40|60)\b", "5.2", "Maxwell", True),
    _entry(r"^(TESLA )?P100\b", "6.0", "Pascal", True),
    _entry(r"^(TESLA )?P(4|40)\b", "6.1", "Pascal", True),
    _entry(r"^(GEFORCE )?GTX 10[5-8]0( TI)?\b", "6.1", "Pascal", False),
    _entry(r"^(TESLA )?V100S?\b", "7.0", "Volta", True),
    _entry(r"^(TESLA )?T4\b", "7.5", "Turing", True),
    _entry(r"^(GEFORCE )?RTX 20[5-8]0( TI| SUPER)?\b", "7.5", "Turing", False),
    _entry(r"^QUADRO RTX [4-8]000\b", "7.5", "Turing", False),
    _entry(r"^A(100|30)\b", "8.0", "Ampere", True),
    _entry(r"^A(40|10|16|2)\b", "8.6", "Ampere", True),
    _entry(r"^(GEFORCE )?RTX 30[5-9]0( TI)?\b", "8.6", "Ampere", False),
    _entry(r"^L(4|40|40S)\b", "8.9", "AdaLovelace", True),
    _entry(r"^(GEFORCE )?RTX 40[5-9]0( TI| SUPER)?\b", "8.9", "AdaLovelace", False),
    _entry(r"^G?H(100|200)\b", "9.0", "Hopper", True),
    _entry(r"^G?B200\b", "10.0", "Blackwell", True),
    _entry(r"^RTX PRO 6000 BLACKWELL\b", "12.0", "Blackwell", False),
    _entry(r"^(GEFORCE )?RTX 50[5-9]0( TI)?\b", "12.0", "Blackwell", False),
)

_BY_CC: dict[ComputeCapability, str] = {e.compute_capability: e.architecture for e in _TABLE}


def _normalise(product: str) -> str:
    name = re.sub(r"[-_\s]+", " ", product.strip().upper())
    return name.removeprefix("NVIDIA ")


def display_name(product: str) -> str:
    """The NVML spelling of a product; GPU Feature Discovery labels use dashes for spaces."""
    name = product.strip()
    return name if " " in name else name.replace("-", " ")


def lookup(product: str) -> GpuModel | None:
    """Facts for an NVML name ("Tesla T4") or a GFD label value ("Tesla-T4"); None when not catalogued."""
    name = _normalise(product)
    for entry in _TABLE:
        if entry.pattern.search(name):
            cc, architecture = entry.compute_capability, entry.architecture
            return GpuModel(display_name(product), cc, architecture, entry.datacenter)
    return None


def architecture_for(cc: ComputeCapability) -> str | None:
    """The architecture of a compute capability the table lists; None for one it does not."""
    return _BY_CC.get(cc)
