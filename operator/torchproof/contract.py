"""What crosses a process boundary, written once: the probe's plan and result formats, and the node record.

The operator writes the plan (podspec.py) and reads the result (result.py); the probe (probe/probe.py)
reads the plan and writes the result but must stay one self-contained file, so it spells these constants
itself and a test holds them to this module. The simulator imports them from here. The node record is
the result annotation a profile leaves on each node it judged: the planner reads it back to decide
whether a verdict stands, and `torchproof status` / `simulate` show it. Anyone may edit an annotation, so
parsing never raises and `standing` says whether the record can identify a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Verdict = Literal["passed", "failed", "incompatible", "error"]
VERDICTS: tuple[Verdict, ...] = ("passed", "failed", "incompatible", "error")  # the values of a profile's label

PLAN_SCHEMA = "torchproof.dev/probe-plan/v1"
RESULT_SCHEMA = "torchproof.dev/probe-result/v1"
PROBE_VERSION = "1.0"  # the `probe` field of a result written by this probe
PLAN_ENV = "TORCHPROOF_PLAN"  # the environment variable that carries the plan as JSON
RESULT_PATH = "/dev/termination-log"  # the plan's resultPath: the pod's termination message
MAX_RESULT_BYTES = 4096  # the kubelet's limit on a termination message
MAX_STRING = 200  # characters in any result string
MAX_DEVICES = 8  # GPUs listed in a result


def iso(ts: float) -> str:
    """A timestamp as the records and statuses spell it (RFC 3339, UTC, whole seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp as seconds since the epoch; None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


@dataclass(frozen=True)
class NodeRecord:
    """One profile's last verdict on one node, with what identifies it (spec, node, token, time) and why."""

    verdict: str
    at: float | None
    generation: int | None
    spec_hash: str = ""
    fingerprint: str = ""
    revalidate: str = ""
    image: str = ""
    reasons: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    known_issues: tuple[str, ...] = ()
    numbers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def standing(self) -> bool:
        """Complete enough to identify a verdict: a verdict word, a time and a generation."""
        return self.verdict in VERDICTS and self.at is not None and self.generation is not None

    def to_annotation(self) -> str:
        fields: dict[str, Any] = {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "findings": list(self.findings),
            "knownIssues": list(self.known_issues),
            "numbers": dict(self.numbers),
            "at": iso(self.at) if self.at is not None else None,
            "generation": self.generation,
            "specHash": self.spec_hash,
            "fingerprint": self.fingerprint,
            "revalidate": self.revalidate,
            "image": self.image,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, raw: str) -> NodeRecord | None:
        """The record an annotation holds; None when it is not a JSON object. A field of the wrong type
        reads as absent: the record is text anyone may have edited."""
        try:
            fields = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(fields, dict):
            return None
        generation = fields.get("generation")
        numbers = fields.get("numbers")
        return cls(
            verdict=str(fields.get("verdict", "")),
            at=parse_time(fields.get("at")),
            generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else None,
            spec_hash=str(fields.get("specHash", "")),
            fingerprint=str(fields.get("fingerprint", "")),
            revalidate=str(fields.get("revalidate", "")),
            image=str(fields.get("image", "")),
            reasons=_strings(fields.get("reasons")),
            findings=_strings(fields.get("findings")),
            known_issues=_strings(fields.get("knownIssues")),
            numbers=numbers if isinstance(numbers, dict) else {},
        )
