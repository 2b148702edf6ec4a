"""Simulated GPU boards and drivers: what NVML, GFD and a matmul benchmark would report.

Compute capability, architecture and datacenter class come from `torchproof.catalogue`, so the
simulator and the operator agree on the facts; memory, NVML brand and throughput are the simulator's
own, chosen to resemble real boards (see docs/fleet.md for the numbers and why).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchproof import catalogue
from torchproof.checks import BY_NAME
from torchproof.checks.base import DRIVER_TOO_OLD as DRIVER_TOO_OLD
from torchproof.checks.base import NO_DRIVER as NO_DRIVER
from torchproof.checks.base import NO_KERNEL as NO_KERNEL
from torchproof.checks.base import SimulatedPod, Throughput
from torchproof.contract import MAX_RESULT_BYTES, PROBE_VERSION, RESULT_SCHEMA
from torchproof.versions import ComputeCapability, DriverVersion

from torchproof_sim.images import Image, driver_runs, has_kernels

# Driver branch → the newest CUDA version it supports (what cuDriverGetVersion reports).
_CUDA_BY_BRANCH: tuple[tuple[int, str], ...] = (
    (384, "9.0"), (390, "9.1"), (396, "9.2"), (410, "10.0"), (418, "10.1"), (440, "10.2"),
    (450, "11.0"), (455, "11.1"), (460, "11.2"), (465, "11.3"), (470, "11.4"), (495, "11.5"),
    (510, "11.6"), (515, "11.7"), (520, "11.8"), (525, "12.0"), (530, "12.1"), (535, "12.2"),
    (545, "12.3"), (550, "12.4"), (555, "12.5"), (560, "12.6"), (565, "12.7"), (570, "12.8"),
    (575, "12.9"), (580, "13.0"),
)

# NVML total memory (MiB) of the usual variant; a "NNGB" in the product name overrides it.
_MEMORY_MIB: tuple[tuple[str, int], ...] = (
    (r"K80", 11441), (r"M60", 8129), (r"M40", 12215), (r"P100", 16280), (r"P40", 22919), (r"P4\b", 7611),
    (r"V100", 16160), (r"T4\b", 15109), (r"A100", 40536), (r"A30", 24258), (r"A40", 46068),
    (r"A10\b", 22731), (r"A16", 15356), (r"A2\b", 15356), (r"L40", 46068), (r"L4\b", 23034),
    (r"H200", 143771), (r"H100", 81559), (r"B200", 183359), (r"2080 TI", 11019), (r"RTX 20", 7982),
    (r"RTX 30", 24268), (r"RTX 40", 24564), (r"RTX 50", 32607), (r"RTX PRO 6000", 97887),
)


# (compute capability, datacenter) → throughput a 4096³ matmul reaches. Consumer boards accumulate
# fp16 in fp32 at half rate, so their tensor-core speedup is lower; Pascal has fast fp16 (P100) or none.
_THROUGHPUT: dict[tuple[str, bool], Throughput] = {
    ("3.7", True): Throughput(2.9, 2.6),
    ("5.2", True): Throughput(4.8, 4.6),
    ("6.0", True): Throughput(8.6, 16.3),
    ("6.1", True): Throughput(10.9, 9.8),
    ("6.1", False): Throughput(10.0, 9.0),
    ("7.0", True): Throughput(14.0, 95.0),
    ("7.5", True): Throughput(7.9, 52.1),
    ("7.5", False): Throughput(13.4, 53.0),
    ("8.0", True): Throughput(18.7, 230.0, 135.0),
    ("8.6", True): Throughput(30.0, 115.0, 55.0),
    ("8.6", False): Throughput(24.0, 65.0, 33.0),
    ("8.9", True): Throughput(22.0, 95.0, 48.0),
    ("8.9", False): Throughput(55.0, 150.0, 75.0),
    ("9.0", True): Throughput(51.0, 720.0, 380.0),
    ("10.0", True): Throughput(70.0, 1750.0, 900.0),
    ("12.0", False): Throughput(90.0, 210.0, 105.0),
}
# Turing boards the catalogue lists without tensor cores (GeForce GTX 16xx): fp16 at twice the fp32 rate.
_TURING_WITHOUT_TENSOR_CORES = Throughput(4.6, 8.7)


@dataclass(frozen=True)
class Board:
    """One GPU model as the simulator presents it."""

    product: str
    compute_capability: ComputeCapability
    architecture: str
    datacenter: bool
    brand: str
    memory_mib: int


# What a CPU dry run stands on: no board at all.
_CPU_BOARD = Board("cpu", ComputeCapability(0, 0), "", False, "", 0)


def parse_driver(text: str) -> DriverVersion:
    """Raise ValueError unless ``text`` is an NVIDIA driver version with a three-digit branch."""
    version = DriverVersion.parse(text)
    if not 100 <= version.branch <= 999:
        raise ValueError(f"driver branch {version.branch} is not three digits")
    return version


def cuda_for_driver(driver: DriverVersion) -> str:
    """The CUDA version a driver branch supports; an unlisted branch behaves as the listed one below it."""
    supported = "9.0"
    for branch, cuda in _CUDA_BY_BRANCH:
        if driver.branch >= branch:
            supported = cuda
    return supported


def gfd_family(architecture: str) -> str:
    """GFD's `gpu.family` value: "AdaLovelace" → "ada-lovelace"."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", architecture).lower()


def _default_brand(name: str, cc: ComputeCapability, datacenter: bool) -> str:
    if datacenter:
        return "Tesla" if cc < ComputeCapability(8, 0) else "NVIDIA"
    if "QUADRO" in name:
        return "Quadro"
    if re.search(r"\b(GEFORCE|GTX|TITAN)\b|\bRTX [2-5]0\d0\b", name):
        return "GeForce"
    return "NVIDIA RTX"


def _default_memory(name: str) -> int:
    sized = re.search(r"(\d+)\s*GB\b", name)
    if sized:
        return int(sized.group(1)) * 1013
    for pattern, mib in _MEMORY_MIB:
        if re.search(pattern, name):
            return mib
    return 16384


def board(
    product: str,
    *,
    compute_capability: str | None = None,
    brand: str | None = None,
    datacenter: bool | None = None,
    memory_mib: int | None = None,
) -> Board:
    """The board for an NVML product name; explicit values override the catalogue.

    Raises ValueError when neither the catalogue nor ``compute_capability`` says what the board is.
    """
    model = catalogue.lookup(product)
    if compute_capability is not None:
        cc = ComputeCapability.parse(compute_capability)
    elif model is not None:
        cc = model.compute_capability
    else:
        raise ValueError(f"unknown GPU {product!r}: give computeCapability")
    architecture = model.architecture if model and compute_capability is None else catalogue.architecture_for(cc)
    if architecture is None:
        raise ValueError(f"no known architecture has compute capability {cc}")
    is_datacenter = datacenter if datacenter is not None else (model.datacenter if model else False)
    name = product.upper()
    return Board(
        product=product,
        compute_capability=cc,
        architecture=architecture,
        datacenter=is_datacenter,
        brand=brand or _default_brand(name, cc, is_datacenter),
        memory_mib=memory_mib or _default_memory(name),
    )


def throughput(gpu: Board) -> Throughput:
    """Matmul TFLOP/s for a board; an unlisted one gets no tensor-core speedup at all."""
    if catalogue.has_tensor_cores(gpu.product, gpu.compute_capability) is False and gpu.architecture == "Turing":
        return _TURING_WITHOUT_TENSOR_CORES
    cc = str(gpu.compute_capability)
    found = _THROUGHPUT.get((cc, gpu.datacenter)) or _THROUGHPUT.get((cc, not gpu.datacenter))
    return found or Throughput(10.0, 10.0)


# -- what the probe reports ---------------------------------------------------------------------------



@dataclass(frozen=True)
class ProbeSetting:
    """Everything the probe can observe in one pod: the board, the GPUs it sees, the driver, the image."""

    image: Image
    board: Board | None
    visible: int
    driver: DriverVersion | None
    node: str
    amp_nan: bool = False
    slow_tensor_cores: bool = False
    faults: frozenset[str] = frozenset()  # CHECK_FAULTS the node carries


#: Faults that change one check's simulated outcome (docs/fleet.md), read by the check's `simulate`.
CHECK_FAULTS = frozenset({"sdpaMismatch", "fp8Mismatch", "compileError", "ncclSlow", "memoryErrors"})


def _device(s: ProbeSetting, gpu: Board, index: int) -> dict[str, Any]:
    uuid_text = uuid.uuid5(uuid.NAMESPACE_DNS, f"{s.node}/gpu{index}")
    return {"index": index, "name": gpu.product, "brand": gpu.brand, "uuid": f"GPU-{uuid_text}",
            "cc": str(gpu.compute_capability), "memoryMiB": gpu.memory_mib, "ecc": gpu.datacenter,
            "eccErrors": 0, "mig": False}


def _gpu_section(s: ProbeSetting) -> dict[str, Any]:
    if s.board is None or s.driver is None or s.visible == 0:
        return {"source": "none", "count": 0, "devices": [], "note": "NVML: Driver Not Loaded"}
    return {"source": "nvml", "driver": str(s.driver), "cudaDriver": cuda_for_driver(s.driver),
            "count": s.visible, "devices": [_device(s, s.board, i) for i in range(min(s.visible, 8))]}


def _failure(s: ProbeSetting) -> str | None:
    """Why CUDA cannot start in this pod, as torch words it; None when it can."""
    if s.board is None or s.driver is None or s.visible == 0:
        return NO_DRIVER
    if not driver_runs(s.image, s.driver, datacenter=s.board.datacenter):
        return DRIVER_TOO_OLD
    return None if has_kernels(s.image, s.board.compute_capability) else NO_KERNEL


def simulated_pod(s: ProbeSetting, device: str) -> SimulatedPod:
    """The facts each check's simulated outcome reads, for a plan on ``device``."""
    gpu = s.board or _CPU_BOARD
    image = s.image
    return SimulatedPod(
        device=device, failure=_failure(s) if device == "cuda" else None,
        gpu_visible=s.board is not None and s.visible > 0, visible=s.visible,
        compute_capability=gpu.compute_capability, throughput=throughput(gpu), torch=image.torch,
        native_amp=image.native_amp, apex=image.apex, autocast=image.autocast, tf32=image.tf32,
        amp_nan=s.amp_nan, slow_tensor_cores=s.slow_tensor_cores, memory_mib=gpu.memory_mib,
        datacenter=gpu.datacenter, faults=s.faults,
    )


def probe_result(s: ProbeSetting, plan: Mapping[str, Any]) -> dict[str, Any]:
    """The result document the probe would write, for only the checks the plan lists."""
    device = "cpu" if plan.get("device") == "cpu" else "cuda"
    raw_checks = plan.get("checks")
    checks = {k: v if isinstance(v, Mapping) else {} for k, v in (raw_checks or {}).items() if k in BY_NAME}
    image = s.image
    pod = simulated_pod(s, device)
    body = {name: BY_NAME[name].simulate(pod, payload) for name, payload in checks.items()}
    gpu = _gpu_section(s)
    if device == "cpu":
        gpu = {"source": "none", "count": 0, "devices": [], "note": "device cpu: NVML not queried"}
    return {
        "schema": RESULT_SCHEMA,
        "probe": PROBE_VERSION,
        "device": device,
        "seconds": round(2.5 + sum(c.get("seconds", 0.0) for c in body.values()), 2),
        "env": {"python": image.python, "torch": image.torch, "cuda": image.cuda_short, "cudnn": image.cudnn,
                "nccl": image.nccl, "apex": image.apex, "vars": image.env},
        "gpu": gpu,
        "checks": body,
    }


def encode_result(doc: dict[str, Any]) -> str:
    """Compact JSON within the termination-message limit, dropping detail in the probe's order."""
    text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode()) > MAX_RESULT_BYTES:
        doc = {**doc, "env": {k: v for k, v in doc["env"].items() if k != "vars"}}
        text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode()) > MAX_RESULT_BYTES:
        devices = [{"index": d["index"], "name": d["name"], "cc": d["cc"]} for d in doc["gpu"].get("devices", [])]
        doc = {**doc, "gpu": {**doc["gpu"], "devices": devices}}
        text = json.dumps(doc, separators=(",", ":"))
    return text
