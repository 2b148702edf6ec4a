"""docs/architecture.md's module map is the house as it stands: every module has a row, and no module imports
another module of torchproof, or a library that marks a boundary (kopf, the kubernetes client, aiohttp, the
Prometheus client, the simulator's libraries, torch, NVML), that its row does not name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = (ROOT / "docs" / "architecture.md").read_text().split("## Module map", 1)[1].split("\n## ", 1)[0]
PACKAGES = {"torchproof": ROOT / "operator" / "torchproof", "torchproof_sim": ROOT / "simulator" / "torchproof_sim"}
BOUNDARY = {"kopf", "kubernetes", "aiohttp", "prometheus_client", "kmock", "jsonschema", "cel", "jsonpatch",
            "torch", "pynvml", "grafana_foundation_sdk"}


def rows() -> dict[str, set[str]]:
    """`torchproof/profile.py` (or a package, `torchproof/checks/`) → the dotted names it may import."""
    found: dict[str, set[str]] = {}
    for line in MAP.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        module = cells[0].strip("`")
        package = module.split("/")[0]
        allowed = set()
        for name in re.findall(r"`([^`]+)`", cells[2]):
            if name in BOUNDARY or name.split(".")[0] in PACKAGES:
                allowed.add(name)
            else:
                allowed.add(f"{package}.{name}")
        found[module] = allowed
    return found


def dotted(path: Path) -> str:
    for package, base in PACKAGES.items():
        if path.is_relative_to(base):
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


def row_of(path: Path, table: dict[str, set[str]]) -> str | None:
    for package, base in PACKAGES.items():
        if path.is_relative_to(base):
            rel = path.relative_to(base)
            for key in (f"{package}/{rel}", f"{package}/{rel.parts[0]}/"):
                if key in table:
                    return key
    return None


def imported(path: Path) -> set[str]:
    """Dotted names of torchproof modules and boundary libraries the file imports (a `from pkg import mod`
    counts as `pkg.mod` where `mod` is a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    out = set()
    for name in names:
        top = name.split(".")[0]
        if top in BOUNDARY:
            out.add(top)
        elif top in PACKAGES and _is_module(name):
            out.add(name)
    return out


def _is_module(name: str) -> bool:
    top, *rest = name.split(".")
    base = PACKAGES[top].joinpath(*rest)
    return bool(rest) and (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file())


def sources() -> list[Path]:
    return [p for base in PACKAGES.values() for p in sorted(base.rglob("*.py"))
            if p.name != "__init__.py" or p.parent not in PACKAGES.values()]


def test_every_module_has_a_row() -> None:
    table = rows()
    assert table, "no module map in docs/architecture.md"
    assert not [str(p.relative_to(ROOT)) for p in sources() if row_of(p, table) is None]


def test_no_module_imports_what_its_row_does_not_name() -> None:
    table = rows()
    wrong = {}
    for path in sources():
        key = row_of(path, table)
        if key is None:
            continue
        own = dotted(path)
        inside = key.endswith("/") and {n for n in imported(path) if n.startswith(dotted(path.parent))}
        extra = imported(path) - table[key] - {own} - (inside or set())
        extra = {n for n in extra if not any(n.startswith(a + ".") for a in table[key])}
        if extra:
            wrong[str(path.relative_to(ROOT))] = sorted(extra)
    assert not wrong, wrong


def test_every_row_is_a_module() -> None:
    for key in rows():
        package, _, rest = key.partition("/")
        assert (PACKAGES[package] / rest).exists(), key


def test_tests_share_helpers_through_tests_support_only() -> None:
    """A test module imports no other test module: what two tests share lives in tests/support."""
    tests = ROOT / "tests"
    names = {p.stem for p in tests.rglob("test_*.py")}
    crossing = {}
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found = [m for m in modules if m.rpartition(".")[2] in names]
            if found:
                crossing[str(path.relative_to(ROOT))] = found
    assert not crossing
