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


@dataclass(frozen=True)
class Throughput:
    """Measured dense matmul TFLOP/s; None where the board has no such path."""

    fp32: float
    fp16: float
    tf32: float | None = None


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

DRIVER_TOO_OLD = "RuntimeError: CUDA driver version is insufficient for CUDA runtime version"
NO_KERNEL = "RuntimeError: CUDA error: no kernel image is available for execution on the device"
NO_DRIVER = "RuntimeError: Found no NVIDIA driver on your system"
_SECONDS = {"environment": 0.01, "gpu": 0.05, "cuda": 1.9, "amp": 2.1, "tensorCores": 1.2,
            "channelsLast": 0.4, "conv3d": 0.6, "multiGpu": 0.8}
_GPU_CHECKS = ("amp", "tensorCores", "channelsLast", "conv3d", "multiGpu")


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


def _amp_run(api: str, dtype: str, steps: int, rel_error: float, nan: bool) -> dict[str, Any]:
    return {"api": api, "dtype": dtype, "steps": steps, "firstLoss": 2.31,
            "lastLoss": None if nan else 1.02, "finite": not nan, "decreased": not nan,
            "maxRelError": None if nan else rel_error, "skippedSteps": 0}


def _amp(s: ProbeSetting, gpu: Board, plan: Mapping[str, Any]) -> dict[str, Any]:
    steps = int(plan.get("steps", 8))
    out: dict[str, Any] = {"status": "ok", "seconds": _SECONDS["amp"]}
    if plan.get("native"):
        out["native"] = (_amp_run("torch.cuda.amp", "float16", steps, 0.004, s.amp_nan) if s.image.native_amp
                         else {"skipped": f"torch {s.image.torch} has no torch.cuda.amp"})
    if plan.get("apex"):
        out["apex"] = (_amp_run("apex.amp", "float16", steps, 0.005, False) if s.image.apex
                       else {"skipped": "apex not importable"})
    if plan.get("bf16"):
        if gpu.compute_capability < ComputeCapability(8, 0):
            out["bf16"] = {"skipped": f"compute capability {gpu.compute_capability} < 8.0"}
        elif not s.image.autocast:
            out["bf16"] = {"skipped": f"torch {s.image.torch} has no torch.autocast"}
        else:
            out["bf16"] = _amp_run("torch.autocast", "bfloat16", steps, 0.012, False)
    return out


def _tensor_cores(s: ProbeSetting, gpu: Board, plan: Mapping[str, Any]) -> dict[str, Any]:
    t = throughput(gpu)
    fp16 = round(t.fp32 * 1.1, 1) if s.slow_tensor_cores else t.fp16
    modern = gpu.compute_capability >= ComputeCapability(8, 0)
    bf16 = fp16 if modern and s.image.autocast else None
    tf32 = t.tf32 if modern and s.image.tf32 else None

    def speedup(value: float | None) -> float | None:
        return None if value is None else round(value / t.fp32, 2)

    return {"status": "ok", "seconds": _SECONDS["tensorCores"], "size": int(plan.get("size", 4096)),
            "fp32": t.fp32, "fp16": fp16, "bf16": bf16, "tf32": tf32, "fp16Speedup": speedup(fp16),
            "bf16Speedup": speedup(bf16), "tf32Speedup": speedup(tf32)}


def _gpu_check(name: str, s: ProbeSetting, gpu: Board, plan: Mapping[str, Any]) -> dict[str, Any]:
    seconds = _SECONDS[name]
    if name == "amp":
        return _amp(s, gpu, plan)
    if name == "tensorCores":
        return _tensor_cores(s, gpu, plan)
    if name == "channelsLast":
        return {"status": "ok", "seconds": seconds, "finite": True, "maxRelError": 0.002}
    if name == "conv3d":
        return {"status": "ok", "seconds": seconds, "iterations": int(plan.get("iterations", 5)),
                "nanCount": 0}
    if s.visible < 2:
        return {"status": "skipped", "seconds": 0.0, "reason": f"{s.visible} GPU in the pod"}
    return {"status": "ok", "seconds": seconds, "devices": s.visible, "peerAccess": True, "allReduceOk": True}


def _cpu_amp(s: ProbeSetting, plan: Mapping[str, Any]) -> dict[str, Any]:
    """As the probe on a CPU: native autocast in bf16 (the CPU has no fp16 autocast), no apex, bf16."""
    steps = int(plan.get("steps", 8))
    out: dict[str, Any] = {"status": "ok", "seconds": 3.5}
    if plan.get("native"):
        out["native"] = _amp_run("torch.autocast+torch.amp.GradScaler", "bfloat16", steps, 0.012, s.amp_nan)
    if plan.get("apex"):
        out["apex"] = {"skipped": "apex amp needs cuda"}
    if plan.get("bf16"):
        out["bf16"] = _amp_run("torch.autocast", "bfloat16", steps, 0.012, s.amp_nan)
    return out


def _cpu_checks(s: ProbeSetting, checks: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, plan in checks.items():
        if name in ("environment", "gpu"):
            out[name] = {"status": "ok", "seconds": _SECONDS[name]}
        elif name == "amp":
            out[name] = _cpu_amp(s, plan)
        elif name == "tensorCores":
            out[name] = {"status": "ok", "seconds": 4.0, "size": int(plan.get("size", 4096)), "fp32": 1.2,
                         "fp16": None, "bf16": 1.5, "tf32": None, "fp16Speedup": None, "bf16Speedup": 1.25,
                         "tf32Speedup": None}
        elif name in ("channelsLast", "conv3d"):
            out[name] = _gpu_check(name, s, Board("cpu", ComputeCapability(0, 0), "", False, "", 0), plan)
        else:
            out[name] = {"status": "skipped", "seconds": 0.0, "reason": "device cpu"}
    return out


def _cuda_checks(s: ProbeSetting, checks: Mapping[str, Any]) -> dict[str, Any]:
    if s.board is None or s.driver is None or s.visible == 0:
        failure: str | None = NO_DRIVER
    elif not driver_runs(s.image, s.driver, datacenter=s.board.datacenter):
        failure = DRIVER_TOO_OLD
    else:
        failure = None if has_kernels(s.image, s.board.compute_capability) else NO_KERNEL
    out: dict[str, Any] = {}
    for name, plan in checks.items():
        seconds = _SECONDS[name]
        if name == "environment":
            out[name] = {"status": "ok", "seconds": seconds}
        elif name == "gpu":
            out[name] = ({"status": "ok", "seconds": seconds} if s.board and s.visible
                         else {"status": "skipped", "seconds": 0.0, "reason": "no GPU visible"})
        elif name == "cuda":
            out[name] = ({"status": "ok", "seconds": seconds, "available": True, "kernelOk": True}
                         if failure is None else
                         {"status": "error", "seconds": 0.4, "available": failure == NO_KERNEL,
                          "kernelOk": False, "error": failure})
        elif failure == NO_KERNEL:
            out[name] = {"status": "error", "seconds": 0.1, "error": NO_KERNEL}
        elif failure is not None:
            out[name] = {"status": "skipped", "seconds": 0.0, "reason": "cuda unavailable"}
        elif s.board is not None:
            out[name] = _gpu_check(name, s, s.board, plan)
    return out


def probe_result(s: ProbeSetting, plan: Mapping[str, Any]) -> dict[str, Any]:
    """The result document the probe would write, for only the checks the plan lists."""
    device = "cpu" if plan.get("device") == "cpu" else "cuda"
    raw_checks = plan.get("checks")
    checks = {k: v if isinstance(v, Mapping) else {} for k, v in (raw_checks or {}).items() if k in _SECONDS}
    image = s.image
    body = _cpu_checks(s, checks) if device == "cpu" else _cuda_checks(s, checks)
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
