"""A real Prometheus (Debian's `prometheus`, with `promtool`) on a free loopback port with its own config and
data directory, the shipped rules and dashboard read from deploy/monitoring, and a query helper
(tests/monitoring)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.support.polling import eventually
from tests.support.tools import free_port

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD_JSON = MONITORING / "dashboards" / "torchproof.json"
RULE_CR = MONITORING / "prometheusrule.yaml"
JOB = "torchproof-metrics"  # the Service's name: the job kube-prometheus-stack gives its targets
# What Grafana puts for the dashboard's variables ("All" is the regex .*) and its rate interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$profile": ".*", "$gpu_product": ".*", "$job": ".*"}


def dashboard_module() -> ModuleType:
    """deploy/monitoring/dashboard.py, the generator `make dashboards` runs."""
    spec = importlib.util.spec_from_file_location("torchproof_dashboard", MONITORING / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_JSON.read_text()))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p.get("type") != "row"]


def dashboard_exprs(board: dict[str, Any]) -> dict[str, str]:
    """Every query of the dashboard (panels and variables), by "panel title/refId", variables substituted."""
    out = {f"{p['title']}/{t['refId']}": grafana_expr(t["expr"]) for p in panels(board) for t in p["targets"]}
    for var in board["templating"]["list"]:
        query = var.get("query")
        if var["type"] == "query" and isinstance(query, str):
            # label_values(metric, label): Grafana asks for the series of the metric
            inner = query[len("label_values("):query.rindex(",")]
            out[f"variable {var['name']}"] = grafana_expr(inner)
    return out


def grafana_expr(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rule file."""
    return dict(yaml.safe_load(RULE_CR.read_text())["spec"])


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups()["groups"] for rule in group["rules"] if "alert" in rule]


def write_rules(directory: Path, *, annotations: bool = True) -> Path:
    groups = rule_groups()
    if not annotations:
        for group in groups["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = directory / "torchproof.rules.yaml"
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; raises (HTTP 400) when it does not parse."""
        return list(self.get("/api/v1/query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@contextlib.asynccontextmanager
async def prometheus(tmp: Path, target: str, rules: Path | None = None) -> AsyncIterator[Prometheus]:
    """Prometheus scraping `target` (host:port) every second as job torchproof-metrics, evaluating `rules`."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    if rules is not None:
        config["rule_files"] = [str(rules)]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _ready(url) or proc.poll() is not None, "Prometheus ready", 60, every=0.2)
        assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
