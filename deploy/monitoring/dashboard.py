"""The torchproof Grafana dashboard, as code (grafana-foundation-sdk); `make dashboards` writes
deploy/monitoring/dashboards/torchproof.json, and tests/monitoring fails while the committed file differs.

Every query reads the families of operator/torchproof/metrics.py; docs/metrics.md describes each panel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as kinds
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "dashboards" / "torchproof.json"
DS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'profile=~"$profile"'
GPU = 'gpu_product=~"$gpu_product"'
JOB = 'job=~"$job"'


def query(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def stat_panel(title: str) -> stat.Panel:
    last = common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    return stat.Panel().title(title).datasource(DS).reduce_options(last).color_mode(
        kinds.BigValueColorMode.VALUE).graph_mode(kinds.BigValueGraphMode.NONE)


def table_panel(title: str) -> table.Panel:
    return table.Panel().title(title).datasource(DS).show_header(True)


def series_panel(title: str) -> timeseries.Panel:
    legend = common.VizLegendOptions().show_legend(True).display_mode(kinds.LegendDisplayMode.LIST).placement(
        kinds.LegendPlacement.BOTTOM)
    return timeseries.Panel().title(title).datasource(DS).legend(legend)


def _transform(id_val: str, options: dict[str, object]) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val=id_val, options=options)


def hide_fields(*names: str) -> model.DataTransformerConfig:
    return _transform("organize", {"excludeByName": {name: True for name in names}})


def count_stat(title: str, state: str, color: str) -> stat.Panel:
    return (stat_panel(title).span(6).height(4).unit("none")
            .with_target(query(f'sum(torchproof_nodes{{{SEL},state="{state}"}})'))
            .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color(color))
            .description(f"Nodes the selected profiles label {state}."))


def fleet_row() -> list[object]:
    matrix = (table_panel("Fleet matrix: GPU product by verdict").span(24).height(8)
              .description("Nodes with a standing verdict, per GPU product (rows) and verdict (columns), "
                           "summed over the selected profiles.")
              .with_target(query(f"sum by (gpu_product, verdict) (torchproof_product_nodes{{{SEL},{GPU}}})",
                                 instant=True))
              .with_transformation(_transform("groupingToMatrix", {
                  "columnField": "verdict", "rowField": "gpu_product", "valueField": "Value",
                  "emptyValue": "zero"})))
    return [
        dash.Row("Fleet"),
        count_stat("Passed", "passed", "green"),
        count_stat("Failed", "failed", "red"),
        count_stat("Incompatible", "incompatible", "orange"),
        count_stat("Error", "error", "purple"),
        matrix,
    ]


def nodes_row() -> list[object]:
    nodes = (table_panel("Nodes: verdict and reasons").span(24).height(10)
             .description("One row per node and profile: its verdict label, the reason codes behind it, "
                          "its GPU product and driver.")
             .with_target(query(f"torchproof_node_verdict{{{SEL},{GPU}}}", instant=True))
             .with_transformation(hide_fields("Time", "Value", "__name__", "instance", "job", "namespace",
                                               "pod", "service", "endpoint", "container")))
    reasons = (series_panel("Nodes by reason code").span(12).height(8)
               .description("How many nodes each reason code keeps from passing, over time.")
               .with_target(query(f"sum by (reason) (torchproof_verdict_reason_nodes{{{SEL}}})", "{{reason}}")))
    verdicts = (series_panel("Verdicts over time").span(12).height(8)
                .description("Nodes per verdict, over time: a driver rollout shows as passed falling.")
                .with_target(query(f"sum by (verdict) (torchproof_product_nodes{{{SEL},{GPU}}})", "{{verdict}}")))
    return [dash.Row("Nodes"), nodes, verdicts, reasons]


def latency_row() -> list[object]:
    def quantile(q: str) -> str:
        return (f"histogram_quantile({q}, sum by (le) "
                f"(rate(torchproof_validation_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))")

    latency = (series_panel("Validation latency (pod created → node labelled)")
               .span(12).height(8).unit("s")
               .description("p50 and p99 of the time from a validation pod's creation to its node's label.")
               .with_target(query(quantile("0.5"), "p50"))
               .with_target(query(quantile("0.99"), "p99", ref="B")))
    rate = (series_panel("Verdicts recorded per minute").span(12).height(8)
            .description("Verdicts written on nodes, by verdict: the validation throughput.")
            .with_target(query(f"sum by (verdict) (rate(torchproof_validations_total{{{SEL}}}[$__rate_interval])) * 60",
                               "{{verdict}}")))
    return [dash.Row("Validation latency"), latency, rate]


def speed_row() -> list[object]:
    measured = (table_panel("Measured TFLOP/s beside the catalogue's peak").span(24)
                .height(8)
                .description("Median and slowest dense matmul TFLOP/s the probe measured per GPU product and "
                             "dtype, beside the catalogue's dense peak.")
                .with_target(query(f"max by (gpu_product, dtype) (torchproof_gpu_tflops{{{SEL},{GPU}}})",
                                   instant=True))
                .with_target(query(f"min by (gpu_product, dtype) (torchproof_gpu_min_tflops{{{SEL},{GPU}}})",
                                   instant=True, ref="B"))
                .with_target(query(f"max by (gpu_product, dtype) (torchproof_gpu_peak_tflops{{{GPU}}})",
                                   instant=True, ref="C"))
                .with_transformation(_transform("merge", {}))
                .with_transformation(_transform("organize", {
                    "excludeByName": {"Time": True},
                    "renameByName": {"Value #A": "median TFLOP/s", "Value #B": "slowest node TFLOP/s",
                                     "Value #C": "peak TFLOP/s"}})))
    speedup = (series_panel("Tensor-core speedup against fp32").span(8).height(8)
               .unit("x").description("Median fp16 and bf16 matmul speedup over fp32, per GPU product.")
               .with_target(query(f"max by (gpu_product, dtype) (torchproof_gpu_speedup_ratio{{{SEL},{GPU}}})",
                                  "{{gpu_product}} {{dtype}}")))
    amp = (series_panel("AMP step time").span(8).height(8).unit("s")
           .description("Median seconds per mixed-precision training step of the probe's AMP check.")
           .with_target(query(f"max by (gpu_product) (torchproof_amp_step_seconds{{{SEL},{GPU}}})",
                              "{{gpu_product}}")))
    probe = (series_panel("Probe wall time").span(8).height(8).unit("s")
             .description("Median wall time of the whole probe, per GPU product.")
             .with_target(query(f"max by (gpu_product) (torchproof_probe_duration_seconds{{{SEL},{GPU}}})",
                                "{{gpu_product}}")))
    return [dash.Row("GPU speed"), measured, speedup, amp, probe]


def issues_row() -> list[object]:
    issues = (table_panel("Known issues: nodes affected").span(24).height(8)
              .description("Per profile and known-issue id (from the release notes): nodes whose verdict "
                           "carries it.")
              .with_target(query(f"sum by (profile, issue) (torchproof_known_issue_nodes{{{SEL}}})", instant=True))
              .with_transformation(hide_fields("Time")))
    return [dash.Row("Known issues"), issues]


def health_row() -> list[object]:
    up = (stat_panel("Operator up").span(4).height(4)
          .description("1 while Prometheus scrapes the operator.")
          .with_target(query(f"sum(up{{{JOB}}})")))
    synced = (stat_panel("Informers synced").span(4).height(4)
              .description("Informers (nodes, pods) whose first list is in; 2 when healthy.")
              .with_target(query("sum(torchproof_informer_synced)")))
    pull = (stat_panel("Image pull circuit open").span(4).height(4)
            .description("Profiles whose image cannot be pulled (the circuit is open, no pods are created).")
            .with_target(query(f"sum(torchproof_image_pull_failing{{{SEL}}})")))
    since = (stat_panel("Since the last pass").span(4).height(4).unit("s")
             .description("Seconds since the selected profiles' oldest last pass that worked.")
             .with_target(query(f"time() - min(torchproof_last_pass_timestamp_seconds{{{SEL}}})")))
    oldest = (stat_panel("Oldest waiting node").span(4).height(4).unit("s")
              .description("How long the node that has waited longest has waited.")
              .with_target(query(f"max(torchproof_oldest_waiting_seconds{{{SEL}}})")))
    failing = (stat_panel("Profiles failing passes").span(4).height(4)
               .description("Profiles whose planning passes raise (Degraded, PassFailed).")
               .with_target(query(f"sum(torchproof_pass_failing{{{SEL}}})")))
    waiting = (series_panel("Waiting nodes by reason").span(12).height(8)
               .description("Nodes that cannot be validated now, by why.")
               .with_target(query(f"sum by (reason) (torchproof_waiting_nodes{{{SEL}}})", "{{reason}}")))
    api = (series_panel("API requests by code").span(12).height(8).unit("reqps")
           .description("Kubernetes API requests per second, by HTTP status; the error ratio's input.")
           .with_target(query("sum by (code) (rate(torchproof_api_requests_total[$__rate_interval]))", "{{code}}")))
    ratio = (series_panel("API error ratio").span(8).height(8).unit("percentunit")
             .description("Failed API requests (not 2xx, 404 or 409) over all requests.")
             .with_target(query('(sum(rate(torchproof_api_requests_total{code!~"2..|404|409"}[$__rate_interval])) '
                                "or vector(0)) / sum(rate(torchproof_api_requests_total[$__rate_interval]))",
                                "errors")))
    passes = (series_panel("Reconcile passes").span(8).height(8).unit("s")
              .description("p99 seconds per planning pass, and passes that raised per minute.")
              .with_target(query("histogram_quantile(0.99, sum by (le) "
                                 f"(rate(torchproof_reconcile_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                                 "pass p99"))
              .with_target(query(f"(sum(rate(torchproof_pass_failures_total{{{SEL}}}[$__rate_interval])) * 60) "
                                 "or vector(0)", "failed passes/min", ref="B")))
    process = (series_panel("Operator process").span(8).height(8).unit("bytes")
               .description("Resident memory of the operator, and its watch restarts.")
               .with_target(query(f"max(process_resident_memory_bytes{{{JOB}}})", "resident memory"))
               .with_target(query("sum by (resource) (increase(torchproof_watch_restarts_total[$__rate_interval]))",
                                  "watch restarts {{resource}}", ref="B")))
    return [dash.Row("Operator health"), up, synced, pull, since, oldest, failing, waiting, api, ratio, passes,
            process]


def build() -> dict[str, object]:
    variables = [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        dash.QueryVariable("job").label("Job").query("label_values(torchproof_build_info, job)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"),
        dash.QueryVariable("profile").label("Profile").query("label_values(torchproof_nodes, profile)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"),
        dash.QueryVariable("gpu_product").label("GPU product")
        .query('label_values(torchproof_product_nodes{profile=~"$profile"}, gpu_product)')
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"),
    ]
    board = (dash.Dashboard("torchproof: GPU fleet validation").uid("torchproof").tags(["torchproof", "gpu"])
             .time("now-6h", "now").refresh("1m").timezone("browser").editable())
    for variable in variables:
        board = board.with_variable(variable)
    for row in (fleet_row(), nodes_row(), latency_row(), speed_row(), issues_row(), health_row()):
        for item in row:
            board = board.with_row(item) if isinstance(item, dash.Row) else board.with_panel(item)  # type: ignore[arg-type]
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))  # type: ignore[no-any-return]


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
