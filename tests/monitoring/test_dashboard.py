"""The committed dashboard is what `make dashboards` generates, reads back through grafana-foundation-sdk's
Dashboard model unchanged (no Grafana server runs here), and has the rows, variables and queries promised."""

from __future__ import annotations

import json

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.support.prometheus import DASHBOARD_JSON, dashboard, dashboard_module, panels


def test_the_committed_dashboard_is_generated() -> None:
    assert DASHBOARD_JSON.read_text() == dashboard_module().render(), "run `make dashboards` and commit the JSON"


def test_the_dashboard_reads_back_through_the_sdk_model_unchanged() -> None:
    board = dashboard()
    again = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
    assert again == board


def test_rows_variables_and_queries() -> None:
    board = dashboard()
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Fleet", "Nodes", "Validation latency", "GPU speed", "Known issues", "Operator health"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "profile", "gpu_product"} <= set(variables)
    assert variables["profile"]["includeAll"] and variables["gpu_product"]["allValue"] == ".*"
    for panel in panels(board):
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert "torchproof_" in target["expr"] or target["expr"].startswith(("sum(up", "max(process_"))
