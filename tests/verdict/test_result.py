"""The probe's result is untrusted: everything outside the contract is rejected with a reason."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torchproof import result as result_module
from torchproof.result import MAX_DEPTH, MAX_RESULT_BYTES, UntrustedResult, parse_result

from tests.support.builders import make_result


def test_a_contract_result_parses_into_typed_observations() -> None:
    result = parse_result(make_result())
    assert result.device == "cuda"
    assert result.gpu.driver == "450.51.06"
    assert result.gpu.devices[0].name == "Tesla T4"
    assert result.gpu.devices[0].cc == "7.5"
    assert result.env.vars["NVIDIA_PYTORCH_VERSION"] == "20.06"
    assert result.checks["tensorCores"].number("fp16Speedup") == pytest.approx(6.6)
    assert result.checks["cuda"].flag("kernelOk") is True
    assert result.checks["multiGpu"].status == "skipped"


def test_unknown_keys_are_dropped_not_trusted() -> None:
    def extra(doc: dict) -> None:
        doc["checks"]["conv3d"]["label"] = "torchproof.dev/pytorch-20.06=passed"
        doc["verdict"] = "passed"

    result = parse_result(make_result(extra))
    assert "label" not in result.checks["conv3d"].data
    assert not hasattr(result, "verdict")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        (None, "empty"),
        ("not json {{{", "not JSON"),
        ("[1, 2]", "expected an object"),
        ("x" * (MAX_RESULT_BYTES + 1), "more than 4096"),
        ("[" * 2000 + "]" * 2000, "nested deeper"),
        (json.dumps({"schema": "torchproof.dev/probe-result/v9", "device": "cuda"}), "result.schema"),
        (make_result(lambda d: d.update(device="tpu")), "unknown device"),
        (make_result(lambda d: d["checks"]["amp"].update(status="passed")), "unknown status 'passed'"),
        (make_result(lambda d: d["checks"]["conv3d"].update(nanCount="0")), "checks.conv3d.nanCount"),
        (make_result(lambda d: d["checks"]["cuda"].update(available=1)), "checks.cuda.available"),
        (make_result(lambda d: d["gpu"].update(source="magic")), "unknown source"),
        (make_result(lambda d: d["gpu"].update(devices=[d["gpu"]["devices"][0]] * 9)), "more than 8 devices"),
        (make_result(lambda d: d["env"].update(torch="x" * 201)), "longer than 200"),
        (make_result(lambda d: d["checks"]["amp"].update(native={"a": {"b": {"c": {"d": {}}}}})), "nested deeper"),
        (make_result(lambda d: d["env"]["vars"].update(X={"nested": 1})), "expected a string"),
        (make_result(lambda d: d["checks"]["tensorCores"].update(fp16=1e300)), "out of range"),
        (make_result(lambda d: d["gpu"]["devices"][0].pop("index")), "devices[0].index: missing"),
        (make_result(lambda d: d["gpu"].update(devices={"index": 0})), "expected a list"),
        (make_result(lambda d: d.update(checks=[])), "result.checks: expected an object"),
        (make_result(lambda d: d["checks"].update(cuda="ok")), "checks.cuda: expected an object"),
        (make_result(lambda d: d["checks"]["amp"].update(native=[1])), "checks.amp.native: expected an object"),
        (make_result(lambda d: d["checks"]["amp"]["native"].update(steps=8.0)), "native.steps: expected an integer"),
        (make_result(lambda d: d["checks"]["cuda"].update(status=None)), "cuda.status: expected a string"),
        (make_result(lambda d: d.update(device=None)), "result.device: expected a string"),
        (make_result(lambda d: d["env"].update(apex="yes")), "env.apex: expected true/false"),
        (make_result(lambda d: d["gpu"]["devices"][0].update(name="n" * 201)), "longer than 200"),
        (make_result(lambda d: d["checks"]["cuda"].update(error="e" * 201)), "longer than 200"),
        (make_result(lambda d: d["env"]["vars"].update({f"V{i}": "1" for i in range(31)})), "more than 32 variables"),
        (make_result(lambda d: d["env"]["vars"].update({"A=B": "1"})), "not an environment variable name"),
        (make_result(lambda d: d["env"]["vars"].update({"K" * 201: "1"})), "longer than 200"),
        ('"passed"', "expected an object"),
        ("42", "expected an object"),
        ("null", "expected an object"),
    ],
)
def test_bad_results_are_rejected_with_a_reason(text: str | None, fragment: str) -> None:
    with pytest.raises(UntrustedResult, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        parse_result(text)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(token: str) -> None:
    text = make_result().replace('"fp16Speedup": 6.6', f'"fp16Speedup": {token}')
    assert token in text
    with pytest.raises(UntrustedResult, match="non-finite"):
        parse_result(text)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a copy of the contract result: the value at a dotted path (`[0]` indexes a list)."""
    def change(doc: dict[str, Any]) -> None:
        *parents, leaf = path.replace("[0]", ".0").split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[leaf] = value
    return change


# Each numeric field of the contract has a range; a value outside it is refused, naming the field.
OUT_OF_RANGE = [
    ("seconds", -0.1), ("seconds", 86400.5), ("checks.cuda.seconds", -1), ("checks.amp.seconds", 1e9),
    ("checks.tensorCores.fp32", -7.9), ("checks.tensorCores.fp16", 1e6), ("checks.tensorCores.bf16", -1e-9),
    ("checks.tensorCores.fp16Speedup", -6.6), ("checks.tensorCores.tf32Speedup", 1e5),
    ("checks.tensorCores.size", 0), ("checks.tensorCores.size", 2**31),
    ("checks.amp.native.maxRelError", -0.004), ("checks.amp.native.firstLoss", -2.31),
    ("checks.amp.native.lastLoss", 1e39), ("checks.amp.native.steps", -8), ("checks.amp.native.skippedSteps", 10**6),
    ("checks.channelsLast.maxRelError", -1), ("checks.conv3d.nanCount", -1), ("checks.conv3d.iterations", -5),
    ("checks.multiGpu.devices", 65), ("gpu.count", -1), ("gpu.count", 1000),
    ("gpu.devices[0].index", -1), ("gpu.devices[0].index", 64), ("gpu.devices[0].memoryMiB", -15109),
    ("gpu.devices[0].memoryMiB", 2**40), ("gpu.devices[0].eccErrors", -3),
]


@pytest.mark.parametrize(("path", "value"), OUT_OF_RANGE)
def test_numbers_absurd_for_their_field_are_refused(path: str, value: float) -> None:
    with pytest.raises(UntrustedResult, match=rf"result\.{re.escape(path)}: .* out of range"):
        parse_result(make_result(_set(path, value)))


@pytest.mark.parametrize(("path", "value"), [
    ("seconds", 0), ("seconds", 86400), ("checks.tensorCores.fp16", 0.0), ("checks.tensorCores.fp16", 1e5),
    ("checks.tensorCores.fp16Speedup", 1e4), ("checks.amp.native.lastLoss", 3.4e38), ("gpu.devices[0].index", 63),
    ("gpu.count", 64), ("checks.conv3d.nanCount", 2**53), ("checks.tensorCores.size", 16384),
])
def test_numbers_at_the_edges_of_their_range_are_accepted(path: str, value: float) -> None:
    parse_result(make_result(_set(path, value)))


# Integers beyond ±2^53 anywhere (even under keys the parser drops): float() of one may overflow.
HUGE = "9" * 400
HUGE_INTEGERS = [
    ('"fp16Speedup": 6.6', f'"fp16Speedup": {HUGE}'),
    ('"fp16Speedup": 6.6', f'"fp16Speedup": -{HUGE}'),
    ('"nanCount": 0', f'"nanCount": {HUGE}'),
    ('"nanCount": 0', '"nanCount": 9007199254740993'),
    ('"seconds": 11.8', f'"seconds": 11.8, "unknownKey": {HUGE}'),
    ('"index": 0', f'"index": {HUGE}'),
]


@pytest.mark.parametrize(("old", "new"), HUGE_INTEGERS)
def test_integers_beyond_what_a_double_holds_are_refused(old: str, new: str) -> None:
    text = make_result().replace(old, new)
    assert new in text
    with pytest.raises(UntrustedResult, match=r"beyond ±2\^53"):
        parse_result(text)


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1.5e309"])
def test_float_literals_beyond_a_double_are_refused(literal: str) -> None:
    text = make_result().replace('"fp16Speedup": 6.6', f'"fp16Speedup": {literal}')
    with pytest.raises(UntrustedResult, match="beyond what a double holds"):
        parse_result(text)


def test_integers_where_a_number_is_expected_become_floats() -> None:
    result = parse_result(make_result(_set("checks.tensorCores.fp16", 52)))
    assert result.checks["tensorCores"].data["fp16"] == 52.0
    assert isinstance(result.checks["tensorCores"].data["fp16"], float)


def _nest(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


DEEP = [
    ("[" * 2000 + "]" * 2000, "bracket bomb, balanced"),
    ("[" * 4000, "bracket bomb, unclosed"),
    ('{"x":' * 600 + "1", "object bomb, unclosed"),
    (_nest(7), "seven levels of objects"),
    (make_result().replace('"apex": {', '"apex": {"a": [[{}]], '), "four levels under an amp run"),
]


@pytest.mark.parametrize(("text", "what"), DEEP, ids=[what for _, what in DEEP])
def test_nesting_deeper_than_the_limit_is_refused_before_decoding(
    text: str, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoder(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("json.loads reached")

    monkeypatch.setattr(result_module.json, "loads", no_decoder)
    with pytest.raises(UntrustedResult, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_result(text)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = make_result(_set("checks.cuda.error", '[[[[[[[[{{{{{{ \\" ]]]]'))
    assert parse_result(text).checks["cuda"].error == '[[[[[[[[{{{{{{ \\" ]]]]'


def _nesting_char_by_char(text: str) -> int:
    """The scan as first written, one character at a time: the reference the regex-based scan must agree with."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


@given(st.lists(st.sampled_from(['"', "\\", '\\"', "\\\\", "[", "]", "{", "}", "a", "\n"]), max_size=60).map("".join))
def test_the_nesting_scan_agrees_with_a_character_by_character_scan(text: str) -> None:
    assert result_module._nesting(text) == _nesting_char_by_char(text)


DUPLICATES = [
    ('"device": "cuda"', '"device": "cuda", "device": "cpu"'),
    ('"status": "ok", "seconds": 1.9', '"status": "error", "status": "ok", "seconds": 1.9'),
    ('"fp16Speedup": 6.6', '"fp16Speedup": 0.5, "fp16Speedup": 6.6'),
    ('"index": 0', '"index": 0, "index": 0'),
    ('"NVIDIA_PYTORCH_VERSION": "20.06"', '"NVIDIA_PYTORCH_VERSION": "19.01", "NVIDIA_PYTORCH_VERSION": "20.06"'),
    ('"seconds": 11.8', '"seconds": 11.8, "extra": {"k": 1, "k": 1}'),
]


@pytest.mark.parametrize(("old", "new"), DUPLICATES)
def test_duplicate_keys_are_refused_not_overridden(old: str, new: str) -> None:
    text = make_result().replace(old, new, 1)
    assert new in text
    with pytest.raises(UntrustedResult, match="appears more than once"):
        parse_result(text)


INVALID_UTF8 = [
    b"\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80",
]


@pytest.mark.parametrize("bad", INVALID_UTF8, ids=[b.hex() for b in INVALID_UTF8])
def test_invalid_utf8_is_refused(bad: bytes) -> None:
    raw = make_result().replace('"Tesla T4"', '"Tesla T4 @"').encode().replace(b"@", bad)
    with pytest.raises(UntrustedResult, match="not UTF-8"):
        parse_result(raw)


def test_a_text_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(UntrustedResult, match="not UTF-8"):
        parse_result(make_result().replace("Tesla T4", "Tesla \ud800T4"))


# Escapes that decode into characters no result string may hold, in a value or a key, kept or dropped.
CONTROL = ["\\u0000", "\\u001b[31m", "\\u0007", "\\u007f", "\\u0085", "\\u009b", "\\ud800", "\\udfff",
           "\\ufffe", "\\ufdd0", "\\ud83f\\udfff"]


@pytest.mark.parametrize("escape", CONTROL)
@pytest.mark.parametrize("where", ['"name": "Tesla T4', '"error": "RuntimeError: boom', '"X', '"X": "1', '"note": "n'])
def test_control_characters_and_non_text_code_points_are_refused(escape: str, where: str) -> None:
    doc = json.loads(make_result())
    doc["checks"]["cuda"]["error"] = "RuntimeError: boom"
    doc["gpu"]["note"] = "n"
    doc["env"]["vars"]["X"] = "1"
    text = json.dumps(doc).replace(where, where + escape, 1)
    assert where + escape in text
    with pytest.raises(UntrustedResult, match="control character or non-text code point"):
        parse_result(text)


def test_tabs_and_newlines_in_an_error_message_are_accepted() -> None:
    text = make_result(_set("checks.cuda.error", "RuntimeError: CUDA error:\n\tdevice-side assert\r"))
    assert parse_result(text).checks["cuda"].error == "RuntimeError: CUDA error:\n\tdevice-side assert\r"


def test_check_numbers_are_floats_or_none_never_a_crash() -> None:
    result = parse_result(make_result())
    amp = result.checks["amp"]
    assert amp.number("native") is None  # an object, not a number
    assert amp.number("absent") is None
    assert result.checks["cuda"].number("available") is None
