"""The two products' boundary, as docs/architecture.md states it: the operator never imports the simulator,
and the simulator imports only the operator's public contract — except `simulate.py`, which composes the
embedded cluster with the real operator for `torchproof simulate`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the simulator may read of the operator: the formats and names that cross the boundary (contract, labels),
# the checks' simulated outcomes, the GPU catalogue, version types, and the packaged CRD.
PUBLIC = {"torchproof.contract", "torchproof.labels", "torchproof.checks", "torchproof.catalogue",
          "torchproof.versions", "torchproof.resources"}
COMPOSER = "simulate.py"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from torchproof import catalogue`
    return found


def test_the_operator_never_imports_the_simulator() -> None:
    for path in (ROOT / "operator" / "torchproof").rglob("*.py"):
        assert not {m for m in imports(path) if m.split(".")[0] in ("torchproof_sim", "kmock")}, path


def test_the_simulator_imports_only_the_operators_public_contract() -> None:
    for path in (ROOT / "simulator" / "torchproof_sim").glob("*.py"):
        if path.name == COMPOSER:
            continue
        operator = {m for m in imports(path) if m.split(".")[0] == "torchproof"}
        outside = {m for m in operator if not any(m == p or m.startswith(p + ".") for p in PUBLIC)}
        assert not outside, (path.name, sorted(outside))
