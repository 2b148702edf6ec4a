"""The PrometheusRule's alerts: `promtool check rules`, and `promtool test rules` with a case per alert in which
it fires and one in which it does not; each alert links its runbook section in docs/metrics.md."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from tests.support.prometheus import ROOT, alerts, promtool, write_rules

TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(write_rules(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_every_alert_firing_and_not(tmp_path: Path) -> None:
    write_rules(tmp_path, annotations=False)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    result = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [c for test in yaml.safe_load(TESTS.read_text())["tests"] for c in test["alert_rule_test"]]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine) and any(not c["exp_alerts"] for c in mine), alert["alert"]


def test_every_alert_has_a_runbook_section() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    headings = set(re.findall(r"^### (\w+)$", doc, re.M))
    for alert in alerts():
        assert alert["alert"] in headings, f"docs/metrics.md: no runbook section for {alert['alert']}"
        assert alert["annotations"]["runbook_url"].endswith(f"docs/metrics.md#{alert['alert'].lower()}")
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
