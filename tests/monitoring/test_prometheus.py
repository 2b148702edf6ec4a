"""The operator's metrics, the dashboard and the alerts against a real Prometheus: `torchproof simulate --serve`
on the mixed example fleet serves /metrics, Prometheus scrapes it and evaluates the shipped rules, and every
expression of the dashboard and the rules runs through Prometheus' HTTP API; the core panels agree with the
fleet the simulation labelled."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchproof import labels as L
from torchproof.kube import KubeApi, load_configuration

from tests.support.polling import eventually
from tests.support.prometheus import (
    ROOT,
    Prometheus,
    alerts,
    dashboard,
    dashboard_exprs,
    panels,
    prometheus,
    write_rules,
)

FLEET = ROOT / "examples" / "fleet.yaml"
PROFILE = ROOT / "profiles" / "pytorch-20.06.yaml"
NAME = yaml.safe_load(PROFILE.read_text())["metadata"]["name"]
pytestmark = pytest.mark.slow


class Simulation:
    """`torchproof simulate --serve` as a process; its output goes to a file the test reads."""

    def __init__(self, tmp: Path, fleet: Path) -> None:
        self.out = tmp / "simulate.out"
        self.kubeconfig = tmp / "sim.kubeconfig"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torchproof.cli", "simulate", f"--fleet={fleet}", f"--profile={PROFILE}",
             "--serve", f"--kubeconfig={self.kubeconfig}", "--timeout=120"],
            stdout=self.out.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = self.target = ""

    async def serving(self) -> Simulation:
        """Once it prints its metrics URL."""
        found = await eventually(lambda: re.search(r"Metrics: (http://[\d.:]+/metrics)", self.out.read_text())
                                 or self.proc.poll() is not None, "simulate --serve to print the metrics URL", 180)
        assert self.proc.poll() is None, self.out.read_text()[-3000:]
        self.url = str(found.group(1))
        self.target = self.url.removeprefix("http://").removesuffix("/metrics")
        return self

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return str(response.read().decode())

    def stop(self, sig: signal.Signals) -> int:
        """One signal: the process must end by itself, cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"simulate --serve ignored {sig.name}") from None


async def fleet_truth(kubeconfig: Path) -> Counter[tuple[str, str]]:
    """(GPU product as the fleet file names it, verdict label) for each labelled node of the simulation."""
    products = {n["name"]: (n.get("gpu") or {}).get("product") for n in yaml.safe_load(FLEET.read_text())["nodes"]}
    async with KubeApi(load_configuration(str(kubeconfig))) as api:
        nodes = await api.list_nodes()
    out: Counter[tuple[str, str]] = Counter()
    for node in nodes:
        verdict = (node["metadata"].get("labels") or {}).get(L.label_key(NAME))
        if verdict:
            out[(str(products[node["metadata"]["name"]]), verdict)] += 1
    return out


def by_labels(result: list[dict[str, Any]], *names: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(n, "") for n in names): float(r["value"][1]) for r in result}


async def test_dashboard_and_rules_against_prometheus_scraping_simulate_serve(tmp_path: Path) -> None:
    sim = Simulation(tmp_path, FLEET)
    try:
        await sim.serving()
        truth = await fleet_truth(sim.kubeconfig)
        passed = Counter({product: n for (product, verdict), n in truth.items() if verdict == "passed"})
        assert sum(passed.values()) >= 5 and len({v for _, v in truth}) == 4, truth  # a mixed fleet
        scraped = tmp_path / "scrape.txt"
        scraped.write_text(sim.scrape())
        check = subprocess.run(["promtool", "check", "metrics"], input=scraped.read_text(), capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert not re.search(r"^\w+_created[{ ]", scraped.read_text(), re.M), "no _created series"
        async with prometheus(tmp_path, sim.target, write_rules(tmp_path)) as prom:
            await eventually(lambda: prom.value(f'sum(torchproof_nodes{{profile="{NAME}",state="passed"}})')
                             == sum(passed.values()), "Prometheus to scrape the converged fleet", 60, every=0.2)
            await eventually(lambda: prom.value("count(rate(torchproof_api_requests_total[1m]))"), "two scrapes",
                             30, every=0.2)
            _every_expression_runs(prom)
            _the_documented_queries_run(prom)
            _core_panels_agree(prom, truth, passed)
            await _rules_load_and_evaluate(prom)
    finally:
        code = sim.stop(signal.SIGINT)
    assert code == 0, sim.out.read_text()[-3000:]


def _every_expression_runs(prom: Prometheus) -> None:
    exprs = {**dashboard_exprs(dashboard()), **{f"alert {a['alert']}": a["expr"] for a in alerts()}}
    assert len(exprs) > 30
    empty = []
    for where, expr in exprs.items():
        if not prom.query(expr):  # raises when Prometheus cannot parse or run it
            empty.append(where)
    # Empty now, by the fleet's state: no alert fires on a healthy fleet except the failing nodes, no pull
    # failure, no pass failure, and a rate of verdicts needs verdicts within the last minute.
    quiet = {"alert TorchproofValidationStalled", "alert TorchproofNodesWaiting", "alert TorchproofImagePullFailing",
             "alert TorchproofOperatorDown", "alert TorchproofNotReconciling", "alert TorchproofPassedNodesDropped",
             "alert TorchproofAPIErrorRatioHigh", "alert TorchproofGPUThroughputDropped"}
    unexpected = [w for w in empty if w not in quiet]
    assert not unexpected, f"expressions with no data on a converged mixed fleet: {unexpected}"


def _the_documented_queries_run(prom: Prometheus) -> None:
    """docs/metrics.md's PromQL per question: each one Prometheus runs (R stands for a profile's name)."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    section = doc[doc.index("## Questions and their PromQL"):doc.index("## Install with kube-prometheus-stack")]
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", section)]
    queries = [s for s in spans if re.search(r"\b(torchproof|process)_\w+", s)]
    assert len(queries) >= 20
    for query in queries:
        prom.query(query.replace('profile="R"', f'profile="{NAME}"'))
    assert prom.query(f'torchproof_node_verdict{{profile="{NAME}",reasons=~"(.*,)?DriverTooOld(,.*)?"}}')


def _core_panels_agree(prom: Prometheus, truth: Counter[tuple[str, str]], passed: Counter[str]) -> None:
    board = dashboard()
    target = {p["title"]: p["targets"] for p in panels(board)}
    exprs = dashboard_exprs(board)
    matrix = by_labels(prom.query(exprs["Fleet matrix: GPU product by verdict/A"]), "gpu_product", "verdict")
    assert {k: int(v) for k, v in matrix.items()} == dict(truth), "the fleet matrix is the simulation's"
    assert {p: int(v) for (p, verdict), v in matrix.items() if verdict == "passed"} == dict(passed)
    for verdict in ("passed", "failed", "incompatible", "error"):
        want = sum(n for (_, v), n in truth.items() if v == verdict)
        assert prom.value(exprs[f"{verdict.capitalize()}/A"]) == want, verdict
    rows = prom.query(exprs["Nodes: verdict and reasons/A"])
    assert len(rows) == sum(truth.values())
    assert all(r["metric"].get("reasons", "") == "" for r in rows if r["metric"]["verdict"] == "passed")
    assert all(r["metric"].get("reasons") for r in rows if r["metric"]["verdict"] != "passed")
    speed = by_labels(prom.query(exprs["Measured TFLOP/s beside the catalogue's peak/A"]), "gpu_product", "dtype")
    peak = by_labels(prom.query(exprs["Measured TFLOP/s beside the catalogue's peak/C"]), "gpu_product", "dtype")
    assert ("Tesla T4", "fp16") in speed and peak[("Tesla T4", "fp16")] == 65.0
    assert all(speed[k] <= peak[k] for k in speed if k in peak), "measured below the catalogue's peak"
    assert prom.value(exprs["Operator up/A"]) == 1.0 and prom.value(exprs["Informers synced/A"]) == 2.0
    assert len(target["Validation latency (pod created → node labelled)"]) == 2
    assert prom.value(f'sum(torchproof_validation_duration_seconds_count{{profile="{NAME}"}})')
    issues = by_labels(prom.query(exprs["Known issues: nodes affected/A"]), "profile", "issue")
    assert issues and all(v >= 1 for v in issues.values())
    assert prom.value(exprs["Profiles failing passes/A"]) == 0.0
    since = prom.value(exprs["Since the last pass/A"])
    assert since is not None and 0 <= since < 120
    waiting = by_labels(prom.query(exprs["Waiting nodes by reason/A"]), "reason")
    assert {"NodeNotReady", "NodeCordoned"} <= set(r for (r,) in waiting)
    assert (prom.value(exprs["Oldest waiting node/A"]) or 0) > 0


async def _rules_load_and_evaluate(prom: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                      not r["lastEvaluation"].startswith("0001") for r in rules) else None

    rules = await eventually(evaluated, "the rules to be evaluated", 30, every=0.2)
    assert {r["name"] for r in rules} == {a["alert"] for a in alerts()}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    failing = next(r for r in rules if r["name"] == "TorchproofNodesFailing")
    assert failing["state"] == "pending", "failed and error nodes: pending for its `for:` of 15m"
    assert all(r["state"] == "inactive" for r in rules if r["name"] != "TorchproofNodesFailing")


async def test_simulate_serve_stops_on_the_first_sigterm(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"nodes": [{"name": "t4", "gpu": {"product": "Tesla T4", "driver": "450.51.06"}}]}))
    sim = await Simulation(tmp_path, fleet).serving()
    assert "torchproof_node_verdict{" in sim.scrape()
    assert sim.stop(signal.SIGTERM) == 0, sim.out.read_text()[-3000:]


async def test_simulate_stops_on_the_first_sigint_while_it_converges(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    slow = {"name": "t4", "gpu": {"product": "Tesla T4", "driver": "450.51.06"}, "probeSeconds": 120}
    fleet.write_text(yaml.safe_dump({"nodes": [slow]}))
    out = tmp_path / "simulate.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchproof.cli", "simulate", f"--fleet={fleet}", f"--profile={PROFILE}", "--serve",
         f"--kubeconfig={tmp_path / 'kubeconfig'}", "--timeout=300"],
        stdout=out.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await eventually(lambda: "have a verdict" in out.read_text() or proc.poll() is not None, "a progress line",
                         120, every=0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - started < 30, "stopped at once, not after the probe or the timeout"
    assert code == 1 and "NOT CONVERGED" in out.read_text(), out.read_text()[-3000:]
    assert "Metrics:" not in out.read_text()
