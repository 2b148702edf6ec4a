"""The probe runs as a locked-down validation pod runs it: an arbitrary uid with no passwd entry, the probe
in a read-only directory (the ConfigMap), a read-only working directory, and writable only the scratch
directory that the pod's environment points every cache at (or, with HOME unset, nothing but the result).

As root, the run drops to such a uid (setpriv), so the permissions are enforced; as anyone else it runs as
itself with the same read-only directories."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from probe_harness import CHECKS, assert_contract, make_plan
from torchproof.contract import PLAN_ENV
from torchproof.podspec import SCRATCH, build_pod
from torchproof.probe import PROBE_PATH
from torchproof.profile import parse_profile

ROOT = Path(__file__).resolve().parents[2]
UID = 54321  # arbitrary, with no passwd entry, as a restricted pod's uid usually is


def pod_env() -> dict[str, str]:
    """The probe container's environment exactly as build_pod renders it."""
    body = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
    pod = build_pod(parse_profile(body), node="n", fingerprint="fp", namespace="torchproof", configmap="cm")
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """Outside pytest's per-user temp root, which the dropped uid could not enter."""
    top = Path(tempfile.mkdtemp(prefix="torchproof-ro-"))
    try:
        yield top
    finally:
        for path in (top, *top.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(top)


def unprivileged() -> list[str]:
    """The command prefix that makes the read-only directories hold."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: read-only directories would not hold")
    return [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("home", ["pod env", "HOME unset"])
def test_the_probe_runs_with_a_read_only_root_as_an_arbitrary_uid(sandbox: Path, home: str) -> None:
    probe_dir, work, scratch, out = (sandbox / name for name in ("probe", "work", "scratch", "out"))
    for directory in (probe_dir, work, scratch, out):
        directory.mkdir()
    shutil.copy(PROBE_PATH, probe_dir / "probe.py")
    (probe_dir / "probe.py").chmod(0o444)
    for read_only in (probe_dir, work, sandbox):
        read_only.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    scratch.chmod(0o777)  # an emptyDir is world-writable
    out.chmod(0o777)      # stands in for /dev/termination-log

    given = pod_env()
    env: dict[str, str] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if home == "pod env":
        env.update({k: v.replace(SCRATCH, str(scratch), 1) if v.startswith(SCRATCH) else v for k, v in given.items()})
    else:
        env.update({k: given[k] for k in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")})
    env[PLAN_ENV] = json.dumps(make_plan())
    env["PYTHONPATH"] = str(probe_dir)
    before = {d: tree(d) for d in (probe_dir, work)}

    proc = subprocess.run(
        [*unprivileged(), sys.executable, str(probe_dir / "probe.py"), "--device", "cpu",
         "--result", str(out / "result.json")],
        cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False,
    )

    assert proc.returncode == 0, proc.stderr
    doc = assert_contract((out / "result.json").read_bytes())
    assert list(doc["checks"]) == list(CHECKS)
    assert {name: c["status"] for name, c in doc["checks"].items() if c["status"] == "error"} == {}, proc.stdout
    assert {d: tree(d) for d in (probe_dir, work)} == before  # no bytecode, no cache beside the probe or in cwd
