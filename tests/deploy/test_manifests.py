"""Every manifest `deploy/` renders passes the published Kubernetes schemas, offline and strict (a misspelt
field is an error), for the oldest Kubernetes torchproof supports and the newest the schemas know."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.support.tools import render

ROOT = Path(__file__).resolve().parents[2]
MINIMUM_KUBERNETES = "1.28.0"  # README: x-kubernetes-validations[].fieldPath and the CEL the CRD uses
# Kinds the published schemas do not cover: the Prometheus Operator's own CRD types.
NOT_PUBLISHED = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomizations")


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



CERT_MANAGER = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, kubernetes_validate.latest_version()])
def test_the_webhook_component_passes_the_schemas_and_fails_open_for_opted_in_namespaces(
    version: str, tmp_path: Path,
) -> None:
    from torchproof.mutation import OPT_IN_LABEL, OPT_IN_VALUE

    deploy = os.path.relpath(ROOT / "deploy", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{deploy}/default"], "components": [f"{deploy}/webhook"],
    }))
    docs = render(tmp_path)
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) not in CERT_MANAGER:
            kubernetes_validate.validate(doc, version, strict=True)
    (config,) = (d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] <= 5
    assert hook["namespaceSelector"] == {"matchLabels": {OPT_IN_LABEL: OPT_IN_VALUE}}
    assert hook["clientConfig"]["service"]["name"] == "torchproof-webhook"
    certificate = next(d for d in docs if d["kind"] == "Certificate")
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "torchproof-webhook")
    assert f"torchproof-webhook.{service['metadata']['namespace']}.svc" in certificate["spec"]["dnsNames"]
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}")
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "torchproof-webhook")
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == (
        certificate["spec"]["secretName"])
