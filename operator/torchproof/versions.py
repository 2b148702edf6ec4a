"""Driver versions and compute capabilities as ordered values.

Version text comes from node labels, NVML and profiles; comparing it as strings is wrong
("440.100" > "440.30"), so every comparison goes through these types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

_DRIVER = re.compile(r"^\d{1,4}(?:\.\d{1,4}){0,2}$")
_CC = re.compile(r"^(\d{1,2})\.(\d{1,2})$")


@total_ordering
@dataclass(frozen=True, eq=False)
class DriverVersion:
    """A driver version such as ``450.51.06``; ``450`` equals ``450.0.0`` and sorts below ``450.51``."""

    parts: tuple[int, ...]
    text: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> DriverVersion:
        cleaned = text.strip() if isinstance(text, str) else ""
        if not _DRIVER.match(cleaned):
            raise ValueError(
                f"invalid driver version {text!r}: expected 1 to 3 dot-separated numbers, like 450.51.06"
            )
        return cls(tuple(int(p) for p in cleaned.split(".")), cleaned)

    @property
    def branch(self) -> int:
        return self.parts[0]

    def _key(self) -> tuple[int, ...]:
        key = list(self.parts)
        while len(key) > 1 and key[-1] == 0:
            key.pop()
        return tuple(key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DriverVersion):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: DriverVersion) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, order=True)
class ComputeCapability:
    """A CUDA compute capability such as ``7.5``, ordered by (major, minor)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> ComputeCapability:
        match = _CC.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"invalid compute capability {text!r}: expected MAJOR.MINOR, like 7.5")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"
