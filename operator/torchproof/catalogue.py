"""GPU product names → compute capability, architecture, datacenter class, tensor cores and peak throughput.

Facts come from NVIDIA's CUDA GPUs list and product pages as summarised in shared/reference/ngc-pytorch.md.
A product the table does not name is unknown: the compatibility rules then say "unknown" and let the
probe decide, and a product without a listed peak is not judged on throughput, rather than guessed.
"""

from __future__ import annotations

import functools
import itertools
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
    tensor_cores: bool


@dataclass(frozen=True)
class _Entry:
    pattern: re.Pattern[str]
    compute_capability: ComputeCapability
    architecture: str
    datacenter: bool
    tensor_cores: bool


def _entry(pattern: str, cc: str, architecture: str, datacenter: bool, *, tensor_cores: bool) -> _Entry:
    return _Entry(re.compile(pattern), ComputeCapability.parse(cc), architecture, datacenter, tensor_cores)


# Patterns match the normalised name (upper case, "-"/"_" as spaces, no leading "NVIDIA "). A trailing
# \b keeps "A10" from matching "A100" or "A10G"; suffixes such as "-SXM4-40GB", "-SHARED" or
# "-MIG-1g.5gb" (GPU Feature Discovery) are allowed after it.
_TABLE: tuple[_Entry, ...] = (
    _entry(r"^(TESLA )?K80\b", "3.7", "Kepler", True, tensor_cores=False),
    _entry(r"^(TESLA )?M(40|60)\b", "5.2", "Maxwell", True, tensor_cores=False),
    _entry(r"^(TESLA )?P100\b", "6.0", "Pascal", True, tensor_cores=False),
    _entry(r"^(TESLA )?P(4|40)\b", "6.1", "Pascal", True, tensor_cores=False),
    _entry(r"^(GEFORCE )?GTX 10[5-8]0( TI)?\b", "6.1", "Pascal", False, tensor_cores=False),
    _entry(r"^(TESLA )?V100S?\b", "7.0", "Volta", True, tensor_cores=True),
    _entry(r"^(TESLA )?T4\b", "7.5", "Turing", True, tensor_cores=True),
    # GeForce GTX 16xx (TU116/TU117) are Turing without tensor cores.
    _entry(r"^(GEFORCE )?GTX 16[56]0( TI| SUPER)?\b", "7.5", "Turing", False, tensor_cores=False),
    _entry(r"^(GEFORCE )?RTX 20[5-8]0( TI| SUPER)?\b", "7.5", "Turing", False, tensor_cores=True),
    _entry(r"^QUADRO RTX [4-8]000\b", "7.5", "Turing", False, tensor_cores=True),
    _entry(r"^A(100|30)\b", "8.0", "Ampere", True, tensor_cores=True),
    _entry(r"^A(40|10|16|2)\b", "8.6", "Ampere", True, tensor_cores=True),
    _entry(r"^(GEFORCE )?RTX 30[5-9]0( TI)?\b", "8.6", "Ampere", False, tensor_cores=True),
    _entry(r"^L(4|40|40S)\b", "8.9", "AdaLovelace", True, tensor_cores=True),
    _entry(r"^(GEFORCE )?RTX 40[5-9]0( TI| SUPER)?\b", "8.9", "AdaLovelace", False, tensor_cores=True),
    _entry(r"^G?H(100|200)\b", "9.0", "Hopper", True, tensor_cores=True),
    _entry(r"^G?B200\b", "10.0", "Blackwell", True, tensor_cores=True),
    _entry(r"^RTX PRO 6000 BLACKWELL\b", "12.0", "Blackwell", False, tensor_cores=True),
    _entry(r"^(GEFORCE )?RTX 50[5-9]0( TI)?\b", "12.0", "Blackwell", False, tensor_cores=True),
)


_BY_CC: dict[ComputeCapability, str] = {e.compute_capability: e.architecture for e in _TABLE}

#: Volta brought the first tensor cores: the fallback for a product the table does not name.
TENSOR_CORES_FROM = ComputeCapability(7, 0)


@dataclass(frozen=True)
class Peak:
    """Dense peak TFLOP/s (no sparsity) of one product; None where the reference lists no figure."""

    fp32: float
    tf32: float | None
    fp16: float | None
    bf16: float | None


# shared/reference/ngc-pytorch.md, "Peak dense throughput". Each pattern names only boards whose peak the
# row bounds: V100 PCIe and SXM2 (PCIe is slower; V100S and SXM3 are faster and not listed), every A100,
# H100 and H200 (the SXM figures bound PCIe and NVL boards). GH200, A30 and the rest have no listed peak.
_PEAKS: tuple[tuple[re.Pattern[str], Peak], ...] = (
    (re.compile(r"^(TESLA )?V100( (PCIE|SXM2)\b|$)"), Peak(fp32=15.7, tf32=None, fp16=125.0, bf16=None)),
    (re.compile(r"^(TESLA )?T4\b"), Peak(fp32=8.1, tf32=None, fp16=65.0, bf16=None)),
    (re.compile(r"^A100\b"), Peak(fp32=19.5, tf32=156.0, fp16=312.0, bf16=312.0)),
    (re.compile(r"^H(100|200)\b"), Peak(fp32=67.0, tf32=495.0, fp16=989.0, bf16=989.0)),
)


def _normalise(product: str) -> str:
    name = re.sub(r"[-_\s]+", " ", product.strip().upper())
    return name.removeprefix("NVIDIA ")


# NVML joins a board's form factor, and the memory after it, to its model with dashes ("Tesla V100-SXM2-16GB");
# GPU Feature Discovery's label turns the spaces into dashes too ("Tesla-V100-SXM2-16GB").
_FORM_FACTOR = re.compile(r"^(SXM\d*|PCIE)$", re.IGNORECASE)
_MEMORY = re.compile(r"^\d+GB$", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def display_name(product: str) -> str:
    """The NVML spelling of a product: GFD's dashes become spaces, except those NVML writes itself (cached: a
    fleet has few products and the planner asks for every node's, every pass)."""
    name = product.strip()
    if " " in name:
        return name
    parts = name.split("-")
    out = parts[0]
    for before, part in itertools.pairwise(parts):
        kept = _FORM_FACTOR.match(part) or (_FORM_FACTOR.match(before) and _MEMORY.match(part))
        out += ("-" if kept else " ") + part
    return out


@functools.lru_cache(maxsize=1024)
def lookup(product: str) -> GpuModel | None:
    """Facts for an NVML name ("Tesla T4") or a GFD label value ("Tesla-T4"); None when not catalogued (cached as
    `display_name` is: judging one result asks several times)."""
    name = _normalise(product)
    for entry in _TABLE:
        if entry.pattern.search(name):
            cc, architecture = entry.compute_capability, entry.architecture
            return GpuModel(display_name(product), cc, architecture, entry.datacenter, entry.tensor_cores)
    return None


def has_tensor_cores(product: str | None, cc: ComputeCapability | None) -> bool | None:
    """The catalogue's fact for a named product, else what the compute capability implies; None if neither."""
    model = lookup(product) if product else None
    if model is not None:
        return model.tensor_cores
    return None if cc is None else cc >= TENSOR_CORES_FROM


def peak(product: str) -> Peak | None:
    """The listed dense peak of a product; None for one the reference gives no figure for."""
    name = _normalise(product)
    return next((value for pattern, value in _PEAKS if pattern.search(name)), None)


def same_product(a: str, b: str) -> bool:
    """Whether two spellings name one board: NVML ("Tesla T4") and GFD ("Tesla-T4-SHARED", "...-MIG-1g.5gb")."""
    return _board_key(a) == _board_key(b)


def _board_key(product: str) -> str:
    name = re.sub(r"[^A-Z0-9.]+", " ", product.upper()).strip().removeprefix("NVIDIA ")
    return re.sub(r"( SHARED| MIG .*)$", "", name)


def architecture_for(cc: ComputeCapability) -> str | None:
    """The architecture of a compute capability the table lists; None for one it does not."""
    return _BY_CC.get(cc)
