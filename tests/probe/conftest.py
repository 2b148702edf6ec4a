"""Fixtures for the probe tests (helpers live in probe_harness.py, importable under a unique name)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from probe_harness import ProbeRun, run_probe_script
from torchproof.probe import PROBE_PATH


@pytest.fixture
def run_probe(tmp_path: Path) -> Callable[..., ProbeRun]:
    """Run probe.py in a subprocess with this Python; returns the run with its contract-checked result."""
    return lambda plan, **kw: run_probe_script(plan, tmp_path, **kw)


@pytest.fixture(scope="module")
def module_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ProbeRun]:
    """Like run_probe, for module-scoped fixtures that share one run across many assertions."""
    return lambda plan, **kw: run_probe_script(plan, tmp_path_factory.mktemp("probe"), **kw)


@pytest.fixture(scope="session")
def probe_module() -> ModuleType:
    """probe.py imported in-process (it is a script, not a package module) for its pure parts."""
    spec = importlib.util.spec_from_file_location("torchproof_probe_script", PROBE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
