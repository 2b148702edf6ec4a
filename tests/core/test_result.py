"""The probe's result is untrusted: everything outside the contract is rejected with a reason."""

from __future__ import annotations

import json

import pytest
from builders import make_result
from torchproof.result import MAX_RESULT_BYTES, UntrustedResult, parse_result


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
        ("[" * 2000 + "]" * 2000, "not JSON"),
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
