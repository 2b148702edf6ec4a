"""The contract module is the one spelling of what crosses a process boundary; the probe, which cannot import
it, spells the same constants itself, and the node record round-trips through its annotation."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from torchproof import contract
from torchproof.contract import NodeRecord
from torchproof.probe import PROBE_PATH

# The probe's name for each contract constant.
PROBE_NAMES = {
    "PLAN_SCHEMA": "PLAN_SCHEMA",
    "RESULT_SCHEMA": "RESULT_SCHEMA",
    "PROBE_VERSION": "PROBE_VERSION",
    "PLAN_ENV": "PLAN_ENV",
    "RESULT_PATH": "DEFAULT_RESULT_PATH",
    "MAX_RESULT_BYTES": "MAX_RESULT_BYTES",
    "MAX_STRING": "MAX_TEXT",
    "MAX_DEVICES": "MAX_DEVICES",
}


def probe_literals() -> dict[str, Any]:
    """The probe's module-level literal constants, read from its source (importing it needs torch)."""
    tree = ast.parse(Path(PROBE_PATH).read_text())
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


@pytest.mark.parametrize(("ours", "theirs"), sorted(PROBE_NAMES.items()))
def test_the_probe_spells_each_contract_constant_as_the_contract_does(ours: str, theirs: str) -> None:
    assert probe_literals()[theirs] == getattr(contract, ours)


def test_a_record_round_trips_through_its_annotation() -> None:
    record = NodeRecord(
        verdict="failed", at=1_700_000_000.0, generation=3, spec_hash="s", fingerprint="f", revalidate="/x",
        image="nvcr.io/nvidia/pytorch:20.06-py3", reasons=("DriverTooOld: 440 < 450",), findings=("slow",),
        known_issues=("nccl-1",), numbers={"gpu": "Tesla T4", "fp16": 52.1},
    )
    raw = record.to_annotation()
    assert NodeRecord.from_annotation(raw) == record
    assert json.loads(raw) == {
        "verdict": "failed", "at": "2023-11-14T22:13:20Z", "generation": 3, "specHash": "s", "fingerprint": "f",
        "revalidate": "/x", "image": "nvcr.io/nvidia/pytorch:20.06-py3", "reasons": ["DriverTooOld: 440 < 450"],
        "findings": ["slow"], "knownIssues": ["nccl-1"], "numbers": {"gpu": "Tesla T4", "fp16": 52.1},
    }
    assert record.standing


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "null", '"passed"'])
def test_an_annotation_that_is_not_an_object_is_no_record(raw: str) -> None:
    assert NodeRecord.from_annotation(raw) is None


def test_an_edited_record_reads_its_wrong_fields_as_absent_and_does_not_stand() -> None:
    edited = json.dumps({"verdict": "passed", "at": "yesterday", "generation": True, "reasons": "DriverTooOld",
                         "knownIssues": 3, "numbers": [1]})
    record = NodeRecord.from_annotation(edited)
    assert record is not None
    assert (record.at, record.generation, record.reasons, record.known_issues, record.numbers) == (
        None, None, (), (), {})
    assert not record.standing
    unknown = NodeRecord.from_annotation(json.dumps({"verdict": "great", "at": "2023-11-14T22:13:20Z",
                                                     "generation": 1}))
    assert unknown is not None and not unknown.standing
