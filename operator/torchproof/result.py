"""The probe's result, parsed as untrusted input (see docs/contract.md).

The probe runs inside an image the operator does not control, on a node it does not control: its
termination message is attacker-reachable text. Nothing from it reaches a label except through the
operator's own verdict words; parsing rejects anything outside the contract with `UntrustedResult`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchproof.checks import BY_NAME, NAMES
from torchproof.checks.base import CheckOutcome as CheckOutcome
from torchproof.checks.fields import (
    COUNT,
    DEVICE_COUNT,
    DEVICE_INDEX,
    MAX_INT,
    MEMORY_MIB,
    SECONDS,
    boolean,
    fail,
    integer,
    json_object,
    known_fields,
    number,
    optional,
    string,
)
from torchproof.checks.fields import UntrustedResult as UntrustedResult
from torchproof.contract import MAX_DEVICES, MAX_RESULT_BYTES, RESULT_SCHEMA

MAX_DEPTH = 6
STATUSES = frozenset({"ok", "error", "timeout", "skipped"})
MAX_ENV_VARS = 32
ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Code points no result string may hold (decoded from escapes such as \u0000): C0 controls but tab, newline and
# carriage return; DEL and C1 controls; lone surrogates; noncharacters (I-JSON, RFC 7493 section 2.1).
FORBIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17))
    + "]"
)
FORBIDDEN_ASCII = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # what FORBIDDEN finds in ASCII text, sooner
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BRACKET = re.compile(r"[][{}]")


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
class ProbeResult:
    probe: str
    device: str
    seconds: float | None
    env: EnvObservation
    gpu: GpuObservation
    checks: Mapping[str, CheckOutcome]


def _check(name: str, value: Any, path: str) -> CheckOutcome:
    obj = json_object(value, path)
    status = string(obj.get("status"), f"{path}.status")
    if status not in STATUSES:
        raise fail(f"{path}.status", f"unknown status {status!r}")
    seconds = optional(number(SECONDS))(obj.get("seconds"), f"{path}.seconds")
    return CheckOutcome(
        status=status,
        seconds=seconds,
        error=optional(string)(obj.get("error"), f"{path}.error"),
        reason=optional(string)(obj.get("reason"), f"{path}.reason"),
        data=known_fields(obj, path, BY_NAME[name].schema),
    )


def _device(value: Any, path: str) -> Device:
    d = known_fields(value, path, {
        "index": integer(DEVICE_INDEX), "name": optional(string), "brand": optional(string), "uuid": optional(string),
        "cc": optional(string), "memoryMiB": optional(integer(MEMORY_MIB)), "ecc": optional(boolean),
        "eccErrors": optional(integer(COUNT)), "mig": optional(boolean),
    })
    if "index" not in d:
        raise fail(f"{path}.index", "missing")
    return Device(
        index=d["index"], name=d.get("name"), brand=d.get("brand"), uuid=d.get("uuid"), cc=d.get("cc"),
        memory_mib=d.get("memoryMiB"), ecc=d.get("ecc"), ecc_errors=d.get("eccErrors"), mig=d.get("mig"),
    )


def _gpu(value: Any, path: str) -> GpuObservation:
    d = known_fields(value, path, {
        "source": string, "driver": optional(string), "cudaDriver": optional(string),
        "count": optional(integer(DEVICE_COUNT)),
        "devices": optional(_obj_list), "note": optional(string),
    })
    source = d.get("source")
    if source not in ("nvml", "torch", "none"):
        raise fail(f"{path}.source", f"unknown source {source!r}")
    raw_devices = d.get("devices") or []
    if len(raw_devices) > MAX_DEVICES:
        raise fail(f"{path}.devices", f"more than {MAX_DEVICES} devices")
    devices = tuple(_device(dev, f"{path}.devices[{i}]") for i, dev in enumerate(raw_devices))
    return GpuObservation(
        source=source, driver=d.get("driver"), cuda_driver=d.get("cudaDriver"), count=d.get("count"),
        devices=devices, note=d.get("note"),
    )


def _obj_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise fail(path, f"expected a list, got {type(value).__name__}")
    return value


def _env(value: Any, path: str) -> EnvObservation:
    d = known_fields(value, path, {
        "python": optional(string), "torch": optional(string), "cuda": optional(string), "cudnn": optional(string),
        "nccl": optional(string), "apex": optional(boolean), "vars": optional(json_object),
    })
    raw_vars = d.get("vars") or {}
    if len(raw_vars) > MAX_ENV_VARS:
        raise fail(f"{path}.vars", f"more than {MAX_ENV_VARS} variables")
    env_vars = {_var_name(k, f"{path}.vars"): string(v, f"{path}.vars.{k}") for k, v in raw_vars.items()}
    return EnvObservation(
        python=d.get("python"), torch=d.get("torch"), cuda=d.get("cuda"), cudnn=d.get("cudnn"),
        nccl=d.get("nccl"), apex=d.get("apex"), vars=env_vars,
    )


def _var_name(value: str, path: str) -> str:
    if not ENV_VAR_NAME.fullmatch(string(value, path)):
        raise fail(path, f"{value!r} is not an environment variable name")
    return value


# -- the text itself: checked before and while json.loads builds it ---------------------------------


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings, or MAX_DEPTH + 1 as soon as it is passed.

    A loop, not a recursion, and before json.loads (which recurses once per level): a bracket bomb is
    refused without ever reaching the decoder. Strings go first (a string runs to its closing quote, past
    escaped characters, or to the end of the text), then only the brackets are walked. The scan agrees with
    JSON wherever the text is JSON; where it is not, the decoder stops at the first place they disagree,
    before any deeper bracket."""
    depth = deepest = 0
    for char in _BRACKET.findall(_STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        else:
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a repeated key, readers disagree on which one counts."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise UntrustedResult(f"result: key {key[:40]!r} appears more than once in one object")
        obj[key] = value
    return obj


def _parse_int(token: str) -> int:
    """Integers within ±2^53, judged by their digits first: a float() of a longer one may overflow."""
    if len(token.lstrip("-")) <= len(str(MAX_INT)):
        value = int(token)
        if abs(value) <= MAX_INT:
            return value
    raise UntrustedResult(f"result: integer {token[:24]}{'…' if len(token) > 24 else ''} is beyond ±2^53")


def _parse_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise UntrustedResult(f"result: number {token[:24]} is beyond what a double holds")
    return value


def _reject_constant(token: str) -> Any:
    raise UntrustedResult(f"non-finite number {token} in the result")


def _check_strings(doc: Any) -> None:
    """Every key and string in the document, without recursion: no control character, lone surrogate or
    noncharacter (they arrive as escapes like \\u0000, which the decoder turns into the character)."""
    stack: list[tuple[Any, str]] = [(doc, "result")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                _plain_text(key, f"{path} key")
                stack.append((item, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            _plain_text(value, path)


def _plain_text(value: str, path: str) -> None:
    bad = FORBIDDEN.search(value)
    if bad is not None:
        where = path if len(path) <= 80 else f"{path[:80]}…"
        raise UntrustedResult(f"{where}: control character or non-text code point U+{ord(bad.group()):04X}")


def _decode(text: str | bytes) -> str:
    raw = text if isinstance(text, bytes) else None
    try:
        if raw is None:
            raw = text.encode("utf-8") if isinstance(text, str) else b""
        if len(raw) > MAX_RESULT_BYTES:
            raise UntrustedResult(f"result is {len(raw)} bytes, more than {MAX_RESULT_BYTES}")
        return raw.decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError) as exc:
        raise UntrustedResult(f"result is not UTF-8 text: {exc.reason} at {exc.start}") from None


def parse_result(text: str | bytes | None) -> ProbeResult:
    """Parse a termination message into a `ProbeResult`, or raise `UntrustedResult` saying why.

    Nothing else escapes: every number returned lies in its field's declared `Range`, every string is
    at most MAX_STRING characters of plain text, so downstream code can use them without guarding."""
    if text is None or text == "" or text == b"":
        raise UntrustedResult("no result: the termination message is empty")
    decoded = _decode(text)
    if _nesting(decoded) > MAX_DEPTH:
        raise UntrustedResult(f"result: nested deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(
            decoded, object_pairs_hook=_unique_keys, parse_int=_parse_int, parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except UntrustedResult:
        raise
    except (ValueError, RecursionError) as exc:
        raise UntrustedResult(f"result is not JSON: {str(exc)[:120]}") from None
    top = json_object(doc, "result")
    # A decoded string holds only the text's own characters unless an escape made one: without a backslash,
    # one search of the text stands for the walk over every key and string.
    if "\\" in decoded or (FORBIDDEN_ASCII if decoded.isascii() else FORBIDDEN).search(decoded) is not None:
        _check_strings(top)
    schema = top.get("schema")
    if schema != RESULT_SCHEMA:
        raise UntrustedResult(f"result.schema: expected {RESULT_SCHEMA!r}, got {str(schema)[:80]!r}")
    device = string(top.get("device"), "result.device")
    if device not in ("cuda", "cpu"):
        raise UntrustedResult(f"result.device: unknown device {device!r}")
    raw_checks = json_object(top.get("checks", {}), "result.checks")
    checks = {
        name: _check(name, raw_checks[name], f"result.checks.{name}")
        for name in NAMES if name in raw_checks
    }
    return ProbeResult(
        probe=string(top.get("probe", "?"), "result.probe"),
        device=device,
        seconds=optional(number(SECONDS))(top.get("seconds"), "result.seconds"),
        env=_env(top.get("env", {}), "result.env"),
        gpu=_gpu(top.get("gpu", {"source": "none"}), "result.gpu"),
        checks=checks,
    )
