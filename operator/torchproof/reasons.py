"""Machine-readable reasons shared by compatibility rules, results and verdicts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Reason:
    """A finding: a CamelCase code a machine can match on, and a message a person can read."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
