"""The vocabulary of the probe result's contract: value ranges and the validators that enforce them.

Shared by `torchproof.result` (the envelope) and each check's own result schema in `torchproof.checks`,
so that a check module can declare its fields without importing the parser that iterates the checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torchproof.contract import MAX_STRING

MAX_INT = 2**53  # I-JSON (RFC 7493): the integers a double holds exactly


@dataclass(frozen=True)
class Range:
    """The values a numeric field of the contract can truly take; anything outside is rejected."""

    low: float
    high: float


FP32_MAX = 3.4028234663852886e38
SECONDS = Range(0.0, 86400.0)  # a pod never outlives runtimeTimeoutSeconds (at most one day)
TFLOPS = Range(0.0, 1e5)  # 100 PFLOP/s on one GPU: far above any GPU's peak (plausibility is verdict.py's)
SPEEDUP = Range(0.0, 1e4)
LOSS = Range(0.0, FP32_MAX)  # cross-entropy, computed in fp32 (beyond it the probe writes null)
REL_ERROR = Range(0.0, 1e51)  # |got - want| (fp32) over a scale the probe floors at 1e-12
STEPS = Range(0, 10_000)  # amp steps and skipped steps, conv3d iterations (the profile allows 100)
MATMUL_SIZE = Range(1, 65_536)  # the profile allows 16384
DEVICE_INDEX = Range(0, 63)
DEVICE_COUNT = Range(0, 64)
MEMORY_MIB = Range(0, 2**24)  # 16 TiB
COUNT = Range(0, MAX_INT)  # ECC errors, NaN outputs, memory words read back wrong
BANDWIDTH = Range(0.0, 1e5)  # GB/s: 100 TB/s, far above any intra-node link
ITERATIONS = Range(1, 10_000)  # nccl all-reduces (the profile allows 100)


class UntrustedResult(ValueError):
    """The probe's output broke the contract; the message says where."""


Validator = Callable[[Any, str], Any]


# -- primitive validators: each returns the value or raises UntrustedResult naming the path ---------


def fail(path: str, message: str) -> UntrustedResult:
    return UntrustedResult(f"{path}: {message}")


def optional(validator: Validator) -> Validator:
    def check(value: Any, path: str) -> Any:
        return None if value is None else validator(value, path)

    return check


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise fail(path, f"expected a string, got {type(value).__name__}")
    if len(value) > MAX_STRING:
        raise fail(path, f"string longer than {MAX_STRING} characters")
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise fail(path, f"expected true/false, got {type(value).__name__}")
    return value


def integer(bounds: Range) -> Validator:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, f"expected an integer, got {type(value).__name__}")
        if not bounds.low <= value <= bounds.high:
            raise fail(path, f"{value} out of range [{bounds.low:g}, {bounds.high:g}]")
        return value

    return check


def number(bounds: Range) -> Validator:
    def check(value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(path, f"expected a number, got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > MAX_INT:  # parse_result refuses them first; float() overflows
            raise fail(path, "integer beyond ±2^53")
        if not bounds.low <= value <= bounds.high:
            raise fail(path, f"{value:.6g} out of range [{bounds.low:g}, {bounds.high:g}]")
        return float(value)

    return check


def json_object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise fail(path, f"expected an object, got {type(value).__name__}")
    return value


def known_fields(value: Any, path: str, spec: Mapping[str, Validator]) -> dict[str, Any]:
    """Validate the known keys of an object; unknown keys are dropped (forward compatible)."""
    obj = json_object(value, path)
    return {key: check(obj.get(key), f"{path}.{key}") for key, check in spec.items() if key in obj}
