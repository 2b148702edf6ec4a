"""Hostile probe results, end to end: the simulated kubelet ends a node's pod with a bad termination
message, and the node gets `error` with an `UntrustedResult` reason and no other change."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hostile_fleet import FOREIGN, T4
from torchproof import labels as L
from torchproof.result import UntrustedResult, parse_result
from torchproof_sim import kubelet as sim_kubelet

from tests.support.rig import NAME, cluster_rig, profile

Mangle = Callable[[str], str]


def doc_edit(change: Callable[[dict[str, Any]], None]) -> Mangle:
    def mangle(text: str) -> str:
        doc = json.loads(text)
        change(doc)
        return json.dumps(doc)
    return mangle


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


# node → (what the probe "wrote", a fragment of the UntrustedResult reason)
BAD: dict[str, tuple[Mangle, str]] = {
    "oversized": (doc_edit(lambda d: d["env"].update(vars={f"V{i}": "x" * 150 for i in range(30)})),
                  "more than 4096"),
    "truncated": (lambda text: text[: len(text) // 2], "not JSON"),
    "not-an-object": (lambda _text: '["passed"]', "expected an object"),
    "wrong-type": (doc_edit(lambda d: d["checks"]["conv3d"].update(nanCount="0")), "checks.conv3d.nanCount"),
    "nan": (doc_edit(lambda d: d["checks"]["tensorCores"].update(fp16Speedup=float("nan"))), "non-finite"),
    "infinity": (doc_edit(lambda d: d["checks"]["amp"]["native"].update(lastLoss=float("-inf"))), "non-finite"),
    "label-text": (doc_edit(lambda d: d["checks"]["cuda"].update(status="ok\ntorchproof.dev/pytorch-20.06=passed")),
                   "unknown status"),
    "deep": (doc_edit(lambda d: d["checks"]["amp"].update(native=nested(8))), "nested deeper"),
    "bracket-bomb": (lambda _text: "[" * 3000 + "]" * 1000, "nested deeper"),
    "schema-v2": (doc_edit(lambda d: d.update(schema="torchproof.dev/probe-result/v2")), "result.schema"),
    "long-string": (doc_edit(lambda d: d["gpu"].update(note="n" * 201)), "longer than 200"),
    "too-many-gpus": (doc_edit(lambda d: d["gpu"].update(devices=d["gpu"]["devices"] * 9)), "more than 8"),
    "huge-int": (doc_edit(lambda d: d["checks"]["conv3d"].update(nanCount=10**400)), "beyond ±2^53"),
    "negative-tflops": (doc_edit(lambda d: d["checks"]["tensorCores"].update(fp16=-52.1)), "out of range"),
    "negative-seconds": (doc_edit(lambda d: d.update(seconds=-1.0)), "result.seconds: -1 out of range"),
    "gpu-index-64": (doc_edit(lambda d: d["gpu"]["devices"][0].update(index=64)), "out of range"),
    "duplicate-key": (lambda text: text.rstrip()[:-1] + ', "schema": "torchproof.dev/probe-result/v1"}',
                      "appears more than once"),
    "nul-in-name": (doc_edit(lambda d: d["gpu"]["devices"][0].update(name="Tesla\x00T4")), "U+0000"),
    "ansi-in-error": (doc_edit(lambda d: d["checks"]["cuda"].update(error="\x1b[2J\x1b[31mok")), "U+001B"),
    "lone-surrogate": (doc_edit(lambda d: d["gpu"].update(note="\ud800")), "U+D800"),
    "env-flood": (doc_edit(lambda d: d["env"].update(vars={f"V{i}": "1" for i in range(40)})), "more than 32"),
}
# Keys outside the contract are dropped: a result claiming a verdict or labels gets the operator's own.
CLAIMS = doc_edit(lambda d: d.update(verdict="passed", labels={L.label_key(NAME): "passed", "team": "x"}))


def _fleet() -> list[dict[str, Any]]:
    nodes = [{"name": name, "gpu": T4, "labels": FOREIGN} for name in BAD]
    return [*nodes, {"name": "good", "gpu": T4, "labels": FOREIGN},
            {"name": "claims-nan", "gpu": T4, "labels": FOREIGN, "faults": ["ampNaN"]}]


@pytest.fixture
def hostile_kubelet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route each named node's termination message through its mangle (the probe as an attacker)."""
    real = sim_kubelet.ending

    def ending(node: Any, pod: Any) -> sim_kubelet.Ending:
        end = real(node, pod)
        mangle = CLAIMS if node.name == "claims-nan" else BAD[node.name][0] if node.name in BAD else None
        if mangle is None or end.message is None:
            return end
        return dataclasses.replace(end, message=mangle(end.message))

    monkeypatch.setattr(sim_kubelet, "ending", ending)


@pytest.mark.usefixtures("hostile_kubelet")
async def test_each_bad_result_labels_error_untrusted_and_changes_nothing_else() -> None:
    owned = {L.label_key(NAME), L.LEGACY_OWNED_ANNOTATION, L.result_annotation_key(NAME)}
    async with cluster_rig(_fleet()) as r:
        before = r.node_snapshot()
        async with r.operator():
            await r.apply(profile(maxConcurrent=20))
            await r.wait_converged(NAME)
        after = r.node_snapshot()
    assert after["good"][0][L.label_key(NAME)] == "passed"
    for node, (_mangle, fragment) in BAD.items():
        labels, annotations = after[node]
        record = json.loads(annotations[L.result_annotation_key(NAME)])
        assert labels[L.label_key(NAME)] == "error", node
        assert record["verdict"] == "error" and record["reasons"][0].startswith("UntrustedResult"), (node, record)
        assert fragment in record["reasons"][0], (node, record["reasons"])
    for node, (labels, annotations) in after.items():
        assert {k: v for k, v in labels.items() if k not in owned} == before[node][0], node
        assert {k: v for k, v in annotations.items() if k not in owned} == before[node][1], node
    claims = json.loads(after["claims-nan"][1][L.result_annotation_key(NAME)])
    assert after["claims-nan"][0][L.label_key(NAME)] == "failed" and claims["reasons"][0].startswith("AmpNotFinite")


@pytest.mark.parametrize("node", sorted(BAD))
def test_parse_result_refuses_each_with_its_reason(node: str) -> None:
    mangle, fragment = BAD[node]
    base = json.dumps({"schema": "torchproof.dev/probe-result/v1", "probe": "1.0", "device": "cuda",
                       "env": {"vars": {}}, "gpu": {"source": "nvml", "devices": [{"index": 0}]},
                       "checks": {"cuda": {"status": "ok"}, "conv3d": {"status": "ok"},
                                  "tensorCores": {"status": "ok"}, "amp": {"status": "ok", "native": {}}}})
    with pytest.raises(UntrustedResult) as refused:
        parse_result(mangle(base))
    assert fragment in str(refused.value)

