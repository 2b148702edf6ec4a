"""The fleet table from cluster objects alone: GFD labels, the operator's labels and records, profile status."""

from __future__ import annotations

import json
from typing import Any

from torchproof import labels as L
from torchproof.report import as_json, node_row, table

NAME = "pytorch-20.06"
KEY = L.label_key(NAME)
RECORD = L.result_annotation_key(NAME)
T4_LABELS = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.count": "4",
             "nvidia.com/cuda.driver-version.full": "418.87.01"}


def node(name: str, labels: dict[str, str] | None = None, record: Any = None) -> dict[str, Any]:
    annotations = {} if record is None else {RECORD: record if isinstance(record, str) else json.dumps(record)}
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations}}


def test_a_gfd_node_shows_its_labels_and_the_probes_nvml_name() -> None:
    record = {"verdict": "passed", "reasons": [], "knownIssues": ["a", "b"], "numbers": {"gpu": "Tesla T4"}}
    row = node_row(node("t4", {**T4_LABELS, KEY: "passed"}, record), NAME)
    assert (row.gpu, row.driver, row.verdict, row.known_issues) == ("4x Tesla T4", "418.87.01", "passed", 2)


def test_a_node_without_gfd_labels_shows_what_the_probe_observed() -> None:
    record = {"verdict": "passed", "numbers": {"gpu": "Tesla V100-SXM2-32GB", "driver": "450.51.06"}}
    row = node_row(node("v100", {KEY: "passed"}, record), NAME)
    assert (row.gpu, row.driver) == ("Tesla V100-SXM2-32GB", "450.51.06")


def test_an_unprobed_gfd_node_shows_the_label_spelled_as_nvml_would() -> None:
    row = node_row(node("k80", {"nvidia.com/gpu.product": "Tesla-K80", "nvidia.com/gpu.count": "2"}), NAME)
    assert (row.gpu, row.driver, row.verdict, row.reasons) == ("2x Tesla K80", "-", None, ())


def test_a_record_that_is_not_what_the_operator_writes_shows_nothing_from_it() -> None:
    for record in ("{not json", "[1, 2]", {"reasons": "DriverTooOld", "knownIssues": 3, "numbers": [1]}):
        row = node_row(node("t4", {**T4_LABELS, KEY: "error"}, record), NAME)
        assert (row.reasons, row.known_issues, row.gpu) == ((), 0, "4x Tesla T4")


def test_the_table_lists_each_profile_with_its_ready_condition_and_waiting_nodes() -> None:
    profile = {"metadata": {"name": NAME}, "status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "Waiting", "message": "1 of 2 nodes waiting"}],
        "waitingNodes": [{"node": "t4-b", "reason": "NodeCordoned"}]}}
    record = {"verdict": "incompatible", "reasons": ["DriverTooOld: 440.26 < 450"]}
    nodes = [node("t4-b", T4_LABELS), node("t4-a", {**T4_LABELS, KEY: "incompatible"}, record)]
    lines = table(nodes, [profile]).splitlines()
    assert lines[0] == "profile pytorch-20.06"
    assert lines[1].split() == ["NODE", "GPU", "DRIVER", "VERDICT", "REASONS"]
    assert lines[2].split()[:5] == ["t4-a", "4x", "Tesla", "T4", "418.87.01"]  # sorted by node name
    assert lines[2].endswith("incompatible  DriverTooOld: 440.26 < 450")
    assert lines[3].split()[-1] == "-"
    assert lines[4:] == ["Ready=False (Waiting): 1 of 2 nodes waiting", "  waiting: t4-b: NodeCordoned"]
    (out,) = as_json(nodes, [profile])["profiles"]
    assert [n["node"] for n in out["nodes"]] == ["t4-a", "t4-b"] and out["status"] == profile["status"]
