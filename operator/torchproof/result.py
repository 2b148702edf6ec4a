"""The probe's result, parsed as untrusted input (see docs/contract.md).

The probe runs inside an image the operator does not control, on a node it does not control: its
termination message is attacker-reachable text. Nothing from it reaches a label except through the
operator's own verdict words; parsing rejects anything outside the contract with `UntrustedResult`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

RESULT_SCHEMA = "torchproof.dev/probe-result/v1"
PLAN_SCHEMA = "torchproof.dev/probe-plan/v1"
MAX_RESULT_BYTES = 4096
MAX_STRING = 200
MAX_DEVICES = 8
MAX_DEPTH = 6
CHECK_NAMES = ("environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu")
STATUSES = frozenset({"ok", "error", "timeout", "skipped"})
AMP_RUNS = ("native", "apex", "bf16")


class UntrustedResult(ValueError):
    """The probe's output broke the contract; the message says where."""


Number = float | int | None
Validator = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Device:
    index: int
    name: str | None
    brand: str | None
    uuid: str | None
    cc: str | None
    memory_mib: int | None
    ecc: bool | None
    ecc_errors: int | None
    mig: bool | None


@dataclass(frozen=True)
class GpuObservation:
    source: str
    driver: str | None
    cuda_driver: str | None
    count: int | None
    devices: tuple[Device, ...]
    note: str | None


@dataclass(frozen=True)
class EnvObservation:
    python: str | None
    torch: str | None
    cuda: str | None
    cudnn: str | None
    nccl: str | None
    apex: bool | None
    vars: Mapping[str, str]


@dataclass(frozen=True)
class CheckOutcome:
    """One check as the probe reported it: a status word and the check's own numbers."""

    status: str
    seconds: float | None
    error: str | None
    reason: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        return None if value is None or isinstance(value, bool) else float(value)

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        return value if isinstance(value, bool) else None


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    device: str
    seconds: float | None
    env: EnvObservation
    gpu: GpuObservation
    checks: Mapping[str, CheckOutcome]


# -- primitive validators: each returns the value or raises UntrustedResult naming the path ---------


def _fail(path: str, message: str) -> UntrustedResult:
    return UntrustedResult(f"{path}: {message}")


def _opt(validator: Validator) -> Validator:
    def check(value: Any, path: str) -> Any:
        return None if value is None else validator(value, path)

    return check


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {type(value).__name__}")
    if len(value) > MAX_STRING:
        raise _fail(path, f"string longer than {MAX_STRING} characters")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, f"expected true/false, got {type(value).__name__}")
    return value


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer, got {type(value).__name__}")
    if not -(2**53) <= value <= 2**53:
        raise _fail(path, "integer out of range")
    return value


def _num(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or abs(value) > 1e15:
        raise _fail(path, "number not finite or out of range")
    return float(value)


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, f"expected an object, got {type(value).__name__}")
    return value


def _fields(value: Any, path: str, spec: Mapping[str, Validator]) -> dict[str, Any]:
    """Validate the known keys of an object; unknown keys are dropped (forward compatible)."""
    obj = _obj(value, path)
    return {key: check(obj.get(key), f"{path}.{key}") for key, check in spec.items() if key in obj}


_AMP_RUN: Mapping[str, Validator] = {
    "api": _opt(_str), "dtype": _opt(_str), "steps": _opt(_int), "firstLoss": _opt(_num),
    "lastLoss": _opt(_num), "finite": _opt(_bool), "decreased": _opt(_bool), "maxRelError": _opt(_num),
    "skippedSteps": _opt(_int), "error": _opt(_str), "skipped": _opt(_str),
}


def _amp_run(value: Any, path: str) -> dict[str, Any]:
    return _fields(value, path, _AMP_RUN)


_CHECK_DATA: Mapping[str, Mapping[str, Validator]] = {
    "environment": {},
    "gpu": {},
    "cuda": {"available": _opt(_bool), "kernelOk": _opt(_bool)},
    "amp": {run: _opt(_amp_run) for run in AMP_RUNS},
    "tensorCores": {
        "size": _opt(_int), "fp32": _opt(_num), "fp16": _opt(_num), "bf16": _opt(_num), "tf32": _opt(_num),
        "fp16Speedup": _opt(_num), "bf16Speedup": _opt(_num), "tf32Speedup": _opt(_num),
    },
    "channelsLast": {"finite": _opt(_bool), "maxRelError": _opt(_num)},
    "conv3d": {"iterations": _opt(_int), "nanCount": _opt(_int)},
    "multiGpu": {"devices": _opt(_int), "peerAccess": _opt(_bool), "allReduceOk": _opt(_bool)},
}


def _check(name: str, value: Any, path: str) -> CheckOutcome:
    obj = _obj(value, path)
    status = _str(obj.get("status"), f"{path}.status")
    if status not in STATUSES:
        raise _fail(f"{path}.status", f"unknown status {status!r}")
    seconds = _opt(_num)(obj.get("seconds"), f"{path}.seconds")
    return CheckOutcome(
        status=status,
        seconds=seconds,
        error=_opt(_str)(obj.get("error"), f"{path}.error"),
        reason=_opt(_str)(obj.get("reason"), f"{path}.reason"),
        data=_fields(obj, path, _CHECK_DATA[name]),
    )


def _device(value: Any, path: str) -> Device:
    d = _fields(value, path, {
        "index": _int, "name": _opt(_str), "brand": _opt(_str), "uuid": _opt(_str), "cc": _opt(_str),
        "memoryMiB": _opt(_int), "ecc": _opt(_bool), "eccErrors": _opt(_int), "mig": _opt(_bool),
    })
    if "index" not in d:
        raise _fail(f"{path}.index", "missing")
    return Device(
        index=d["index"], name=d.get("name"), brand=d.get("brand"), uuid=d.get("uuid"), cc=d.get("cc"),
        memory_mib=d.get("memoryMiB"), ecc=d.get("ecc"), ecc_errors=d.get("eccErrors"), mig=d.get("mig"),
    )


def _gpu(value: Any, path: str) -> GpuObservation:
    d = _fields(value, path, {
        "source": _str, "driver": _opt(_str), "cudaDriver": _opt(_str), "count": _opt(_int),
        "devices": _opt(_obj_list), "note": _opt(_str),
    })
    source = d.get("source")
    if source not in ("nvml", "torch", "none"):
        raise _fail(f"{path}.source", f"unknown source {source!r}")
    raw_devices = d.get("devices") or []
    if len(raw_devices) > MAX_DEVICES:
        raise _fail(f"{path}.devices", f"more than {MAX_DEVICES} devices")
    devices = tuple(_device(dev, f"{path}.devices[{i}]") for i, dev in enumerate(raw_devices))
    return GpuObservation(
        source=source, driver=d.get("driver"), cuda_driver=d.get("cudaDriver"), count=d.get("count"),
        devices=devices, note=d.get("note"),
    )


def _obj_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, f"expected a list, got {type(value).__name__}")
    return value


def _env(value: Any, path: str) -> EnvObservation:
    d = _fields(value, path, {
        "python": _opt(_str), "torch": _opt(_str), "cuda": _opt(_str), "cudnn": _opt(_str),
        "nccl": _opt(_str), "apex": _opt(_bool), "vars": _opt(_obj),
    })
    raw_vars = d.get("vars") or {}
    env_vars = {_str(k, f"{path}.vars"): _str(v, f"{path}.vars.{k}") for k, v in raw_vars.items()}
    return EnvObservation(
        python=d.get("python"), torch=d.get("torch"), cuda=d.get("cuda"), cudnn=d.get("cudnn"),
        nccl=d.get("nccl"), apex=d.get("apex"), vars=env_vars,
    )


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _reject_constant(token: str) -> Any:
    raise UntrustedResult(f"non-finite number {token} in the result")


def parse_result(text: str | bytes | None) -> ProbeResult:
    """Parse a termination message into a `ProbeResult`, or raise `UntrustedResult` saying why."""
    if text is None or text == "" or text == b"":
        raise UntrustedResult("no result: the termination message is empty")
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    if len(raw) > MAX_RESULT_BYTES:
        raise UntrustedResult(f"result is {len(raw)} bytes, more than {MAX_RESULT_BYTES}")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UntrustedResult:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UntrustedResult(f"result is not JSON: {str(exc)[:120]}") from None
    top = _obj(doc, "result")
    if _depth(top) > MAX_DEPTH:
        raise UntrustedResult(f"result: nested deeper than {MAX_DEPTH} levels")
    schema = top.get("schema")
    if schema != RESULT_SCHEMA:
        raise UntrustedResult(f"result.schema: expected {RESULT_SCHEMA!r}, got {str(schema)[:80]!r}")
    device = _str(top.get("device"), "result.device")
    if device not in ("cuda", "cpu"):
        raise UntrustedResult(f"result.device: unknown device {device!r}")
    raw_checks = _obj(top.get("checks", {}), "result.checks")
    checks = {
        name: _check(name, raw_checks[name], f"result.checks.{name}")
        for name in CHECK_NAMES if name in raw_checks
    }
    return ProbeResult(
        probe=_str(top.get("probe", "?"), "result.probe"),
        device=device,
        seconds=_opt(_num)(top.get("seconds"), "result.seconds"),
        env=_env(top.get("env", {}), "result.env"),
        gpu=_gpu(top.get("gpu", {"source": "none"}), "result.gpu"),
        checks=checks,
    )
