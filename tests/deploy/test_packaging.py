"""Two products from two distributions: the operator (`pyproject.toml`) and the embedded cluster
(`simulator/pyproject.toml`). Each works from its wheel, with the files it needs as package data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from torchproof import cli, resources

ROOT = Path(__file__).resolve().parents[2]


def test_the_packaged_crd_is_the_one_in_crds() -> None:
    assert resources.crd_text() == (ROOT / "crds" / "pytorchreleaseprofiles.yaml").read_text()


def test_the_simulators_packaged_rbac_is_deploy_rbac() -> None:
    from torchproof_sim.simulate import RBAC_PATH

    packaged = {p.name: p.read_text() for p in RBAC_PATH.glob("*.yaml")}
    assert packaged == {p.name: p.read_text() for p in (ROOT / "deploy" / "rbac").glob("*.yaml")}


def test_the_cli_lists_simulate_without_importing_the_simulator() -> None:
    code = ("import sys; from torchproof import cli; p = cli.parser(); "
            "print('simulate' in cli.plugins(), 'torchproof_sim' in sys.modules, 'kmock' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_simulate_without_the_simulator_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "plugins", dict)
    assert cli.main(["simulate", "--fleet", "f.yaml", "--profile", "p.yaml"]) == 2
    assert "pip install ./simulator" in capsys.readouterr().err


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both wheels, built without network or build isolation from copies of the sources (a build writes
    `build/` beside them), unpacked as an installer would lay them out."""
    out = tmp_path_factory.mktemp("wheels")
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for tree in ("operator", "simulator"):
        shutil.copytree(ROOT / tree, src / tree, ignore=junk)
    for source in (src, src / "simulator"):
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out / "dist"), str(source)], check=True, capture_output=True)
    site = out / "site"
    for wheel in (out / "dist").glob("*.whl"):
        zipfile.ZipFile(wheel).extractall(site)
    return site


def test_the_operator_wheel_holds_no_simulator(wheels: Path) -> None:
    names = {n for w in (wheels.parent / "dist").glob("torchproof-*.whl") for n in zipfile.ZipFile(w).namelist()}
    assert "torchproof/data/pytorchreleaseprofiles.yaml" in names
    assert not [n for n in names if n.startswith("torchproof_sim")]


def test_simulate_runs_from_the_wheels_outside_the_checkout(wheels: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text((ROOT / "examples" / "fleet.yaml").read_text())
    profile = tmp_path / "profile.yaml"
    profile.write_text((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
    code = ("import sys, torchproof, torchproof_sim; from torchproof.cli import main; "
            "assert torchproof.__file__.startswith(sys.argv[1]) and torchproof_sim.__file__.startswith(sys.argv[1]); "
            "sys.exit(main(sys.argv[2:]))")
    out = subprocess.run([sys.executable, "-c", code, str(wheels), "--log-level", "error", "simulate",
                          "--fleet", str(fleet), "--profile", str(profile), "--json", "--timeout", "60"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=180,
                         env={"PYTHONPATH": str(wheels), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["converged"] is True
    assert yaml.safe_load(profile.read_text())["metadata"]["name"] in json.dumps(report)
