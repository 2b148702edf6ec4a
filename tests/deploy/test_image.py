"""The operator image, as far as it can be read without building it: who it runs as, what it starts, that it is
pinned and labelled, and that it installs exactly the locked runtime dependencies, which are all that
`torchproof run` imports."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from torchproof import cli

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Linux on CPython 3.11, as in the image.
IMAGE_ENV = {**default_environment(), "python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
             "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
SIMULATOR = ("kmock", "jsonschema", "common-expression-language")


def instructions(stage: int) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one build stage (-1: the image), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = [[]]
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages[1:][stage]


def one(stage: int, word: str) -> str:
    (found,) = [rest for w, rest in instructions(stage) if w == word]
    return found


def lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock: name → (version, hashes)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "requirements.lock").read_text())
    entries = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement, *options = line.split(" --hash=")
        req = Requirement(requirement.strip())
        (specifier,) = req.specifier
        assert specifier.operator == "==", line
        entries[canonicalize_name(req.name)] = (specifier.version, options)
    return entries


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    uid, gid = one(-1, "USER").split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0


def test_the_entrypoint_is_the_installed_command() -> None:
    assert json.loads(one(-1, "ENTRYPOINT")) == ["torchproof"]
    assert PYPROJECT["project"]["scripts"]["torchproof"] == "torchproof.cli:main"
    assert "PATH=/opt/torchproof/bin:" in one(-1, "ENV")
    assert ("COPY", "--from=build /opt/torchproof /opt/torchproof") in instructions(-1)


def test_the_locked_dependencies_get_a_layer_before_the_code() -> None:
    build = instructions(0)
    lock_copy = build.index(("COPY", "requirements.lock /tmp/requirements.lock"))
    (install,) = [i for i, (w, rest) in enumerate(build) if w == "RUN" and "-r /tmp/requirements.lock" in rest]
    assert "--require-hashes" in build[install][1] and "--no-deps" in build[install][1]
    code = build.index(("COPY", "operator /src/operator"))
    assert lock_copy < install < code
    (package,) = [rest for w, rest in build[code:] if w == "RUN"]
    assert "--no-deps" in package  # the package adds no dependency the lock did not pin


def test_the_base_image_is_pinned_to_an_exact_tag() -> None:
    base = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert len(base) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base[0]), base
    assert {rest.split()[0] for w, rest in (*instructions(0), *instructions(-1)) if w == "FROM"} == {"${BASE_IMAGE}"}


def test_the_image_carries_the_oci_labels() -> None:
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', one(-1, "LABEL")))
    for key in ("source", "version", "revision", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.version"] == "${VERSION}"  # `make image` passes pyproject's


def test_every_locked_requirement_is_pinned_with_hashes() -> None:
    entries = lock()
    assert entries
    for name, (_, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h.strip()) for h in hashes), name


def runtime_closure() -> dict[str, Requirement]:
    """pyproject's dependencies and, from the installed distributions' metadata, everything they require on the
    image's platform (extras followed)."""
    found: dict[str, Requirement] = {}
    todo = [(Requirement(r), "") for r in PYPROJECT["project"]["dependencies"]]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**IMAGE_ENV, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in found and extras <= set(found[name].extras):
            continue
        found[name] = req
        for sub in metadata.requires(req.name) or ():
            todo += [(Requirement(sub), e) for e in ("", *extras)]
    return found


def test_the_lock_is_exactly_the_runtime_dependencies_and_their_requirements() -> None:
    entries = lock()
    closure = runtime_closure()
    assert set(closure) == set(entries), (sorted(set(closure) - set(entries)), sorted(set(entries) - set(closure)))
    for name in (canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]):
        assert closure[name].specifier.contains(entries[name][0]), (name, entries[name][0])
    for name in SIMULATOR:
        assert canonicalize_name(name) not in entries


def test_the_simulator_is_its_own_distribution_and_the_test_tools_an_extra() -> None:
    runtime = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    simulator = tomllib.loads((ROOT / "simulator" / "pyproject.toml").read_text())["project"]
    assert {canonicalize_name(Requirement(r).name) for r in simulator["dependencies"]} == {
        "torchproof", "jsonpatch", "orjson", *map(canonicalize_name, SIMULATOR)}  # jsonpatch: kopf's too, so locked
    assert set(PYPROJECT["project"]["optional-dependencies"]) == {"probe", "dev"}
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    # What the simulator alone or the tests need never reaches the operator's runtime (orjson, which both use, may).
    assert not runtime & {canonicalize_name(Requirement(r).name) for r in [*SIMULATOR, "jsonpatch", *dev]}


def run_path_imports() -> list[str]:
    """The import statements of `torchproof run` (`_run` and `_lead` in cli.py), as source lines."""
    tree = ast.parse((ROOT / "operator" / "torchproof" / "cli.py").read_text())
    functions = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)
                 and n.name in ("_run", "_lead")]
    assert len(functions) == 2
    return [ast.unparse(n) for f in functions for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)]


# Finds no module that the image does not install: neither the standard library, nor torchproof, nor a locked
# distribution's (so the optional imports of what is installed find nothing and fall back, as in the image).
GUARD = """
import importlib.machinery, importlib.metadata, json, re, sys, sysconfig
allowed, refused = set(sys.stdlib_module_names) | {"torchproof", sysconfig._get_sysconfigdata_name()}, []
locked = set(json.loads(sys.argv[1]))
for module, dists in importlib.metadata.packages_distributions().items():
    if any(re.sub(r"[-_.]+", "-", d).lower() in locked for d in dists):
        allowed.add(module)
class Guard(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] not in allowed:
            refused.append(name)
            return None
        return super().find_spec(name, path, target)
sys.meta_path = [Guard if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
exec(sys.argv[2])
from torchproof.controller import OperatorConfig, build_registry
from torchproof.kube import KubeApi
from kubernetes import client
build_registry(OperatorConfig(api=KubeApi(client.Configuration())))
print(json.dumps({"modules": sorted(sys.modules), "refused": sorted(set(refused))}))
"""


def test_the_run_path_imports_only_what_the_image_installs() -> None:
    out = subprocess.run([sys.executable, "-c", GUARD, json.dumps(sorted(lock())), "\n".join(run_path_imports())],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    found = json.loads(out.stdout.splitlines()[-1])
    modules = set(found["modules"])
    assert {"kopf", "kubernetes", "prometheus_client", "torchproof.controller", "torchproof.election"} <= modules
    for name in ("torchproof_sim", "torchproof_sim.simulate", "kmock", "cel", "jsonschema"):
        assert name not in modules
    # What the image lacks is at most tried, optionally: the kubernetes client tries kubernetes_validate (a dev
    # tool, installed here, and hidden: the guard works), which would import jsonschema.
    assert "kubernetes_validate" in found["refused"]
    assert not [m for m in found["refused"] if m.startswith(("torchproof", "kmock", "cel"))], found["refused"]


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"torchproof {metadata.version('torchproof')}"
    assert metadata.version("torchproof") == PYPROJECT["project"]["version"]
