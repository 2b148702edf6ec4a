"""deploy/monitoring as a kustomize component: with deploy/default it adds the ServiceMonitor and the
PrometheusRule with kube-prometheus-stack's selector label, and the dashboard ConfigMap for Grafana's sidecar,
all in the overlay's namespace."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from tests.support.prometheus import DASHBOARD_JSON, ROOT, rule_groups


def test_the_component_adds_monitor_rules_and_dashboard(tmp_path: Path) -> None:
    deploy = os.path.relpath(ROOT / "deploy", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "gpu-validation",
        "resources": [f"{deploy}/default"], "components": [f"{deploy}/monitoring"],
    }))
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], check=True, capture_output=True, text=True)
    docs = {d["kind"]: d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] in
            ("ServiceMonitor", "PrometheusRule", "ConfigMap", "Service")}
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert docs[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert docs[kind]["metadata"]["namespace"] == "gpu-validation"
    dashboard = docs["ConfigMap"]
    assert dashboard["metadata"]["name"] == "torchproof-dashboard"
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert json.loads(dashboard["data"]["torchproof.json"]) == json.loads(DASHBOARD_JSON.read_text())
    assert docs["PrometheusRule"]["spec"] == rule_groups()
    service, monitor = docs["Service"], docs["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [p["name"] for p in service["spec"]["ports"]] == [e["port"] for e in monitor["spec"]["endpoints"]]
