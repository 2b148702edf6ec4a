"""Property tests of `parse_result`: whatever the probe writes, the parser returns a `ProbeResult` whose every
value is in range, or raises `UntrustedResult` with a reason; never anything else.

TORCHPROOF_FUZZ_SCALE=N multiplies the examples of each property (docs/reliability.md records a run at 50).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torchproof.checks.fields import (
    COUNT,
    DEVICE_COUNT,
    DEVICE_INDEX,
    LOSS,
    MATMUL_SIZE,
    MAX_INT,
    MAX_STRING,
    MEMORY_MIB,
    REL_ERROR,
    SECONDS,
    SPEEDUP,
    STEPS,
    TFLOPS,
    Range,
)
from torchproof.labels import VERDICTS
from torchproof.profile import Profile, parse_profile
from torchproof.result import FORBIDDEN, MAX_DEVICES, MAX_ENV_VARS, ProbeResult, UntrustedResult, parse_result
from torchproof.verdict import judge

from tests.support.builders import BASE_RESULT, PROFILE_PATH

SCALE = int(os.environ.get("TORCHPROOF_FUZZ_SCALE", "1"))
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# The range each numeric field must have once parsed, stated here apart from the parser's own tables.
CHECK_RANGES: Mapping[str, Mapping[str, Range]] = {
    "tensorCores": {"size": MATMUL_SIZE, "fp32": TFLOPS, "fp16": TFLOPS, "bf16": TFLOPS, "tf32": TFLOPS,
                    "fp16Speedup": SPEEDUP, "bf16Speedup": SPEEDUP, "tf32Speedup": SPEEDUP},
    "channelsLast": {"maxRelError": REL_ERROR},
    "conv3d": {"iterations": STEPS, "nanCount": COUNT},
    "multiGpu": {"devices": DEVICE_COUNT},
}
AMP_RANGES: Mapping[str, Range] = {
    "steps": STEPS, "skippedSteps": STEPS, "firstLoss": LOSS, "lastLoss": LOSS, "maxRelError": REL_ERROR,
}
KEYS = sorted({"schema", "device", "seconds", "status", "error", "index", "name", "fp16Speedup", "nanCount",
               "native", "vars", "devices", "source", "count", "memoryMiB", "steps", "maxRelError", "cc"})
ODD_TEXT = st.sampled_from([
    "\x00", "\x1b[31m", "\u202e", "\u2066", "\ufeff", "\ud800", "\udfff", "\ufffe", "\U0010ffff", "\x85", "\u2028",
    "\\", '"', "\\u0000", "\\ud800", "A" * 201, "é", "\u0301" * 50,
])
HUGE = st.sampled_from([2**53 + 1, -(2**53) - 1, 10**30, 10**400, -(10**400), 2**63, 2**64])
NUMBERS = st.integers(-(2**60), 2**60) | st.floats(-1e60, 1e60) | st.sampled_from([-0.0, -1, -1e-9, 1e5 + 1, 64])
SCALARS = (
    st.none() | st.booleans() | st.integers() | HUGE | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30) | ODD_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS),
                                                                        kids, max_size=4),
    max_leaves=25,
)


def _profile() -> Profile:
    import yaml

    body = yaml.safe_load(PROFILE_PATH.read_text())
    body["metadata"].update({"uid": "uid-1", "generation": 1})
    return parse_profile(body)


PROFILE = _profile()


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a document, without recursion."""
    slots: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            slots.append((value, key))
            stack.append(item)
    return slots


@st.composite
def mutated_results(draw: st.DrawFn) -> str | bytes:
    """The contract result with a few values replaced, keys inserted or deleted, values nested deep, then
    perhaps a key repeated in the text, or its bytes cut or flipped."""
    doc = copy.deepcopy(BASE_RESULT)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "nest", "huge", "odd", "number", "number"]))
        numeric = [(c, k) for c, k in _slots(doc) if type(c[k]) in (int, float)]
        container, key = draw(st.sampled_from(numeric if op == "number" and numeric else _slots(doc)))
        if op == "number":
            container[key] = draw(NUMBERS)
        elif op == "replace":
            container[key] = draw(JSON_VALUES)
        elif op == "insert" and isinstance(container, dict):
            container[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = draw(JSON_VALUES)
        elif op == "delete":
            del container[key]
        elif op == "nest":
            value = container[key]
            for _ in range(draw(st.integers(1, 12))):
                value = draw(st.sampled_from([[value], {"x": value}]))
            container[key] = value
        elif op == "huge":
            container[key] = draw(HUGE)
        elif op == "odd" and isinstance(container[key], str):
            at = draw(st.integers(0, len(container[key])))
            container[key] = container[key][:at] + draw(ODD_TEXT) + container[key][at:]
        if not _slots(doc):
            break
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    tail = draw(st.sampled_from(["none", "duplicate", "cut", "flip"]))
    if tail == "duplicate":
        at = draw(st.sampled_from([i for i, c in enumerate(text) if c == "{"]))
        text = f'{text[:at + 1]}"{draw(st.sampled_from(KEYS))}": {json.dumps(draw(JSON_VALUES))}, {text[at + 1:]}'
    raw = text.encode("utf-8", "surrogatepass")
    if tail == "cut":
        return raw[: draw(st.integers(0, len(raw)))]
    if tail == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw if draw(st.booleans()) else raw.decode("utf-8", "surrogatepass")


def _within(value: Any, bounds: Range, where: str) -> None:
    assert not isinstance(value, bool) and isinstance(value, int | float), where
    assert math.isfinite(float(value)) and bounds.low <= value <= bounds.high, (where, value)


def _plain(value: Any, where: str) -> None:
    assert value is None or (isinstance(value, str) and len(value) <= MAX_STRING and not FORBIDDEN.search(value)), (
        where, value)


def _assert_safe(result: ProbeResult) -> None:
    """Every value in range and every string plain text, so that downstream code needs no guard."""
    assert result.device in ("cuda", "cpu")
    for text in (result.probe, result.env.python, result.env.torch, result.env.cuda, result.env.cudnn,
                 result.env.nccl, result.gpu.driver, result.gpu.cuda_driver, result.gpu.note):
        _plain(text, "text")
    if result.seconds is not None:
        _within(result.seconds, SECONDS, "seconds")
    assert len(result.env.vars) <= MAX_ENV_VARS
    for key, value in result.env.vars.items():
        _plain(key, "vars key")
        _plain(value, f"vars.{key}")
    assert result.gpu.source in ("nvml", "torch", "none")
    if result.gpu.count is not None:
        _within(result.gpu.count, DEVICE_COUNT, "gpu.count")
    assert len(result.gpu.devices) <= MAX_DEVICES
    for device in result.gpu.devices:
        _within(device.index, DEVICE_INDEX, "index")
        for text in (device.name, device.brand, device.uuid, device.cc):
            _plain(text, "device text")
        for number, bounds in ((device.memory_mib, MEMORY_MIB), (device.ecc_errors, COUNT)):
            if number is not None:
                _within(number, bounds, "device number")
    for name, check in result.checks.items():
        assert check.status in ("ok", "error", "timeout", "skipped")
        _plain(check.error, f"{name}.error")
        _plain(check.reason, f"{name}.reason")
        if check.seconds is not None:
            _within(check.seconds, SECONDS, f"{name}.seconds")
        for key, bounds in CHECK_RANGES.get(name, {}).items():
            if check.data.get(key) is not None:
                _within(check.data[key], bounds, f"{name}.{key}")
        for key in check.data:
            check.number(key)  # never raises: a float, or None for what is not a number
        for run in ("native", "apex", "bf16") if name == "amp" else ():
            sub = check.data.get(run)
            assert sub is None or isinstance(sub, dict)
            for key, value in (sub or {}).items():
                if key in AMP_RANGES and value is not None:
                    _within(value, AMP_RANGES[key], f"amp.{run}.{key}")
                if isinstance(value, str):
                    _plain(value, f"amp.{run}.{key}")
                assert not isinstance(value, int) or isinstance(value, bool) or abs(value) <= MAX_INT


# The class of each refusal, by its reason, for the statistics (--hypothesis-show-statistics).
CLASSES = [
    ("out of range", "range"), ("beyond", "huge number"), ("non-finite", "NaN/Infinity"), ("nested", "depth"),
    ("more than once", "duplicate key"), ("UTF-8", "invalid UTF-8"), ("control character", "control character"),
    ("not JSON", "not JSON"), ("bytes, more than", "size"), ("expected", "type"), ("unknown", "enum word"),
    ("longer than", "length"), ("more than", "count"), ("missing", "missing"), ("empty", "empty"),
    ("not an environment variable", "name"),
]


def _verify(text: str | bytes) -> None:
    try:
        result = parse_result(text)
    except UntrustedResult as exc:
        reason = str(exc)
        assert reason, "a refusal says why"
        event("refused: " + next((name for fragment, name in CLASSES if fragment in reason), "other"))
        return
    event("accepted")
    _assert_safe(result)
    assert judge(PROFILE, result, {}).verdict in VERDICTS


@settings(FUZZ, max_examples=300 * SCALE)
@given(mutated_results())
def test_mutations_of_a_contract_result_parse_safely_or_are_refused(text: str | bytes) -> None:
    _verify(text)


@settings(FUZZ, max_examples=200 * SCALE)
@given(JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")))
def test_arbitrary_json_values_parse_safely_or_are_refused(text: bytes) -> None:
    _verify(text)


@settings(FUZZ, max_examples=200 * SCALE)
@given(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=8).map(
    lambda d: json.dumps({"schema": BASE_RESULT["schema"], "device": "cuda", **d})))
def test_arbitrary_objects_with_the_schema_parse_safely_or_are_refused(text: str) -> None:
    _verify(text)


@settings(FUZZ, max_examples=150 * SCALE)
@given(st.binary(max_size=5000))
def test_random_bytes_parse_safely_or_are_refused(raw: bytes) -> None:
    _verify(raw)


@settings(FUZZ, max_examples=150 * SCALE)
@given(st.text(alphabet=st.sampled_from('{}[]",:0123456789.eE-+ \\untrlfasu\x00\u202e\ud800'), max_size=300))
def test_json_ish_text_is_parsed_safely_or_refused(text: str) -> None:
    _verify(text)


def test_the_unmutated_result_passes_the_same_checks() -> None:
    """The properties above hold for a result that parses, not only for refusals."""
    result = parse_result(json.dumps(BASE_RESULT))
    _assert_safe(result)
    assert judge(PROFILE, result, {}).verdict == "passed"
