"""The real kubectl binary against the embedded cluster, served from a background thread."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from gadgets import GADGETS, GROUP, VERSION
from torchproof_sim import BackgroundCluster

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
Kubectl = Callable[..., str]
pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl is not installed")


@pytest.fixture
def kubectl(background: BackgroundCluster, tmp_path: Path) -> Kubectl:
    config = background.cluster.write_kubeconfig(tmp_path / "kubeconfig")

    def run(*args: str, ok: bool = True) -> str:
        done = subprocess.run([KUBECTL, "--kubeconfig", str(config), *args], capture_output=True, text=True,
                              timeout=60)
        assert (done.returncode == 0) == ok, done.stderr
        return done.stdout + done.stderr

    return run


@pytest.fixture
def gadget_file(tmp_path: Path) -> Path:
    path = tmp_path / "gadget.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget",
                                    "metadata": {"name": "g1"}, "spec": {"size": 3}}))
    return path


def test_apply_crd_and_custom_resource_then_get_by_short_name(kubectl: Kubectl, crd_path: Path,
                                                              gadget_file: Path,
                                                              background: BackgroundCluster) -> None:
    assert "configured" in kubectl("apply", "-f", str(crd_path))  # adds kubectl's last-applied annotation
    assert "unchanged" in kubectl("apply", "-f", str(crd_path))
    assert "created" in kubectl("apply", "-f", str(gadget_file))
    assert "unchanged" in kubectl("apply", "-f", str(gadget_file))
    table = kubectl("get", "gdg").splitlines()
    assert table[0].split() == ["NAME", "SIZE", "PHASE", "AGE"] and table[1].split()[:2] == ["g1", "3"]
    stored = background.emulator.get_object(GADGETS, "testns", "g1")
    assert stored is not None and stored["spec"] == {"size": 3, "colour": "red"}


def test_apply_reports_schema_errors(kubectl: Kubectl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget",
                                   "metadata": {"name": "bad"}, "spec": {"size": 99}}))
    assert "spec.size" in kubectl("apply", "-f", str(bad), ok=False)


def test_label_get_by_selector_and_json(kubectl: Kubectl, background: BackgroundCluster) -> None:
    for name in ("n1", "n2"):
        background.call(background.emulator.create_object("v1/nodes", {"metadata": {"name": name}}))
    assert "labeled" in kubectl("label", "node", "n1", "gpu=t4")
    assert kubectl("get", "nodes", "-l", "gpu=t4", "-o", "name").split() == ["node/n1"]
    listing = json.loads(kubectl("get", "nodes", "-o", "json"))
    assert sorted(i["metadata"]["name"] for i in listing["items"]) == ["n1", "n2"]
    assert json.loads(kubectl("get", "node", "n1", "-o", "json"))["metadata"]["labels"] == {"gpu": "t4"}


def test_annotate_describe_and_delete(kubectl: Kubectl, gadget_file: Path,
                                      background: BackgroundCluster) -> None:
    kubectl("apply", "-f", str(gadget_file))
    assert "annotated" in kubectl("annotate", "gdg", "g1", "note=hello")
    described = kubectl("describe", "gadget", "g1")
    assert "note: hello" in described and "Size:" in described
    background.call(background.emulator.create_object("v1/nodes", {"metadata": {"name": "n1"}}))
    assert "Name:               n1" in kubectl("describe", "node", "n1")
    assert "deleted" in kubectl("delete", "-f", str(gadget_file))
    assert background.emulator.get_object(GADGETS, "testns", "g1") is None
    assert "No resources found" in kubectl("get", "gdg")
