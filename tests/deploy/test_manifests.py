"""Every manifest `deploy/` renders passes the published Kubernetes schemas, offline and strict (a misspelt
field is an error), for the oldest Kubernetes torchproof supports and the newest the schemas know."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MINIMUM_KUBERNETES = "1.28.0"  # README: x-kubernetes-validations[].fieldPath and the CEL the CRD uses
# Kinds the published schemas do not cover: the Prometheus Operator's own CRD types.
NOT_PUBLISHED = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomizations")


def render(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _with_monitoring(tmp_path: Path) -> Path:
    """An overlay as README shows it: deploy/default plus the optional monitoring component."""
    deploy = os.path.relpath(ROOT / "deploy", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{deploy}/default"], "components": [f"{deploy}/monitoring"],
    }))
    return tmp_path


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, kubernetes_validate.latest_version()])
def test_every_rendered_manifest_passes_the_published_schemas(version: str, tmp_path: Path) -> None:
    docs = render(_with_monitoring(tmp_path))
    kinds = {doc["kind"] for doc in docs}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "NetworkPolicy", "ServiceMonitor"} <= kinds
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in NOT_PUBLISHED:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_misspelt_field_is_refused_by_the_strict_check() -> None:
    deployment = next(doc for doc in render(ROOT / "deploy" / "default") if doc["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["serviceAcountName"] = "torchproof"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MINIMUM_KUBERNETES, strict=True)

