"""Prometheus metrics, named by Prometheus' guide: base units, `_total` counters, bounded label values.

Two kinds, kept apart. Events (verdicts recorded, pods created, API requests, pass failures, latencies) are
counters and histograms updated where they happen. The present state (each node's verdict and reasons, nodes
waiting and why, what the probe measured per GPU product, known issues, informer health) is computed at
each scrape by `StateCollector` from what the operator holds now, so a series exists exactly while its node,
profile or reason does, and a restart loses nothing: the state is re-read from the nodes' records.

Label values are profile names, node names, GFD's GPU product and driver labels, the four verdict words,
reason codes (CamelCase codes the operator makes; any other text reads as `Other`), known-issue ids from
the profiles, and API verbs and resources.

A new family: a counter or histogram goes in `Metrics.__init__`; a state family gets a `_Family` entry in
`STATE_FAMILIES` and is filled in `state_families`; docs/metrics.md lists every family (a test holds it to
`family_names()`).
"""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from torchproof import catalogue
from torchproof.contract import NodeRecord
from torchproof.labels import VERDICTS
from torchproof.views import NodeView, parse_record

# `_created` series double the series count and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

STATES = (*VERDICTS, "pending", "running", "waiting", "skipped")
DTYPES = ("fp32", "fp16", "bf16")
_CODE = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_ISSUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def reason_code(text: str) -> str:
    """The code of a reason as records and statuses spell it ("Code: message"); `Other` for free text."""
    code = text.split(":", 1)[0].strip()
    return code if _CODE.fullmatch(code) else "Other"


@dataclass(frozen=True)
class ProfileState:
    """One profile's loop as a scrape sees it."""

    name: str
    status: Mapping[str, Any]
    waiting: Mapping[str, str] = field(default_factory=dict)  # node -> why (the plan's waiting reasons)
    waiting_since: Mapping[str, float] = field(default_factory=dict)  # node -> when it began waiting
    last_pass_at: float | None = None  # wall-clock time the last pass that worked ended
    failing: bool = False  # the last pass raised


@dataclass(frozen=True)
class InformerState:
    resource: str
    synced: bool
    restarts: int


@dataclass(frozen=True)
class Snapshot:
    """Everything the state families are computed from, read in one go by the shell."""

    profiles: Sequence[ProfileState]
    nodes: Sequence[NodeView]
    informers: Sequence[InformerState]
    now: float


@dataclass(frozen=True)
class _Family:
    name: str  # without the `_total` a counter's sample adds
    help: str
    labels: tuple[str, ...]
    kind: str = "gauge"


STATE_FAMILIES: tuple[_Family, ...] = (
    _Family("torchproof_nodes", "Nodes a profile selects, by verdict label or planning state.", ("profile", "state")),
    _Family("torchproof_pending_nodes", "Nodes awaiting a verdict (pending, running or waiting).", ("profile",)),
    _Family("torchproof_node_verdict",
            "1 per node and profile with a standing verdict: the verdict, its reason codes (comma-separated) "
            "and the node's GPU.", ("profile", "node", "verdict", "reasons", "gpu_product", "driver_version")),
    _Family("torchproof_product_nodes", "Nodes with a standing verdict, by profile, GPU product and verdict.",
            ("profile", "gpu_product", "verdict")),
    _Family("torchproof_verdict_reason_nodes", "Nodes whose current verdict carries a reason code.",
            ("profile", "reason")),
    _Family("torchproof_known_issue_nodes", "Nodes whose current verdict carries a known issue of the profile.",
            ("profile", "issue")),
    _Family("torchproof_waiting_nodes", "Nodes that cannot be validated now, by why (reason code).",
            ("profile", "reason")),
    _Family("torchproof_oldest_waiting_seconds", "How long the node waiting longest has waited (0: none waits).",
            ("profile",)),
    _Family("torchproof_image_pull_failing", "1 while a profile's image cannot be pulled (circuit open).",
            ("profile",)),
    _Family("torchproof_pass_failing", "1 while the profile's planning passes raise (Degraded, PassFailed).",
            ("profile",)),
    _Family("torchproof_last_pass_timestamp_seconds", "When the profile's last planning pass that worked ended.",
            ("profile",)),
    _Family("torchproof_gpu_tflops", "Median dense matmul TFLOP/s the probe measured, by GPU product and dtype.",
            ("profile", "gpu_product", "dtype")),
    _Family("torchproof_gpu_min_tflops", "Slowest node's dense matmul TFLOP/s, by GPU product and dtype.",
            ("profile", "gpu_product", "dtype")),
    _Family("torchproof_gpu_peak_tflops", "The catalogue's dense peak TFLOP/s of each GPU product in the fleet.",
            ("gpu_product", "dtype")),
    _Family("torchproof_gpu_speedup_ratio", "Median tensor-core speedup against fp32, by GPU product and dtype.",
            ("profile", "gpu_product", "dtype")),
    _Family("torchproof_amp_step_seconds", "Median seconds per mixed-precision training step (the AMP check).",
            ("profile", "gpu_product")),
    _Family("torchproof_probe_duration_seconds", "Median wall time of the probe, by GPU product.",
            ("profile", "gpu_product")),
    _Family("torchproof_informer_synced", "1 once an informer's first list is in.", ("resource",)),
    _Family("torchproof_watch_restarts", "Watches that broke or expired and were listed again.", ("resource",),
            "counter"),
)


def _product(node: NodeView, record: NodeRecord) -> tuple[str, str]:
    """GFD's product (as NVML spells it) and driver; where GFD is absent, what the probe saw."""
    product, driver = node.kind
    shown = catalogue.display_name(product) if product else str(record.numbers.get("gpu") or "")
    return shown or "unknown", driver or str(record.numbers.get("driver") or "") or "unknown"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def state_families(snap: Snapshot) -> list[Metric]:
    """The present-state families of one snapshot (pure: tests call it with built snapshots)."""
    fam: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
    for f in STATE_FAMILIES:
        cls = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
        fam[f.name] = cls(f.name, f.help, labels=f.labels)
    products_seen: set[str] = set()
    for p in snap.profiles:
        raw = p.status.get("counts")
        counts: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        for state in STATES:
            value = counts.get(state, 0)
            fam["torchproof_nodes"].add_metric([p.name, state], float(value) if isinstance(value, int) else 0.0)
        pending = counts.get("pending", 0)
        fam["torchproof_pending_nodes"].add_metric([p.name], float(pending) if isinstance(pending, int) else 0.0)
        by_product: Tally[tuple[str, str]] = Tally()
        reasons: Tally[str] = Tally()
        issues: Tally[str] = Tally()
        speed: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for node in snap.nodes:
            record = parse_record(node, p.name)
            if record is None:
                continue
            product, driver = _product(node, record)
            products_seen.add(product)
            codes = sorted({reason_code(r) for r in record.reasons})
            fam["torchproof_node_verdict"].add_metric(
                [p.name, node.name, record.verdict, ",".join(codes), product, driver], 1.0)
            by_product[(product, record.verdict)] += 1
            reasons.update(codes)
            issues.update({i if _ISSUE.fullmatch(i) else "other" for i in record.known_issues})
            for key, values in _speed(record.numbers):
                speed[(product, *key)].append(values)
        for (product, verdict), n in sorted(by_product.items()):
            fam["torchproof_product_nodes"].add_metric([p.name, product, verdict], float(n))
        for code, n in sorted(reasons.items()):
            fam["torchproof_verdict_reason_nodes"].add_metric([p.name, code], float(n))
        for issue, n in sorted(issues.items()):
            fam["torchproof_known_issue_nodes"].add_metric([p.name, issue], float(n))
        _add_speed(fam, p.name, speed)
        waiting = Tally(reason_code(why) for why in p.waiting.values())
        for code, n in sorted(waiting.items()):
            fam["torchproof_waiting_nodes"].add_metric([p.name, code], float(n))
        since = [p.waiting_since[n] for n in p.waiting if n in p.waiting_since]
        oldest = max(0.0, snap.now - min(since)) if since else 0.0
        fam["torchproof_oldest_waiting_seconds"].add_metric([p.name], oldest)
        fam["torchproof_image_pull_failing"].add_metric([p.name], 1.0 if p.status.get("imagePull") else 0.0)
        fam["torchproof_pass_failing"].add_metric([p.name], 1.0 if p.failing else 0.0)
        if p.last_pass_at is not None:
            fam["torchproof_last_pass_timestamp_seconds"].add_metric([p.name], p.last_pass_at)
    for product in sorted(products_seen):
        peak = catalogue.peak(product)
        for dtype in DTYPES if peak is not None else ():
            value = getattr(peak, dtype)
            if value is not None:
                fam["torchproof_gpu_peak_tflops"].add_metric([product, dtype], float(value))
    for inf in snap.informers:
        fam["torchproof_informer_synced"].add_metric([inf.resource], 1.0 if inf.synced else 0.0)
        fam["torchproof_watch_restarts"].add_metric([inf.resource], float(inf.restarts))
    return list(fam.values())


def _speed(numbers: Mapping[str, Any]) -> Iterator[tuple[tuple[str, str], float]]:
    """A record's measured numbers as ((kind, dtype), value); kinds: tflops, speedup, amp, probe."""
    tflops = numbers.get("tflops")
    for dtype in DTYPES:
        value = _number(tflops.get(dtype)) if isinstance(tflops, Mapping) else None
        if value is not None:
            yield ("tflops", dtype), value
    for dtype in ("fp16", "bf16"):
        value = _number(numbers.get(f"{dtype}Speedup"))
        if value is not None:
            yield ("speedup", dtype), value
    for kind, key in (("amp", "ampStepSeconds"), ("probe", "probeSeconds")):
        value = _number(numbers.get(key))
        if value is not None:
            yield (kind, ""), value


Families = Mapping[str, GaugeMetricFamily | CounterMetricFamily]


def _add_speed(fam: Families, profile: str, speed: Mapping[tuple[str, str, str], list[float]]) -> None:
    for (product, kind, dtype), values in sorted(speed.items()):
        if kind == "tflops":
            fam["torchproof_gpu_tflops"].add_metric([profile, product, dtype], _median(values))
            fam["torchproof_gpu_min_tflops"].add_metric([profile, product, dtype], min(values))
        elif kind == "speedup":
            fam["torchproof_gpu_speedup_ratio"].add_metric([profile, product, dtype], _median(values))
        elif kind == "amp":
            fam["torchproof_amp_step_seconds"].add_metric([profile, product], _median(values))
        else:
            fam["torchproof_probe_duration_seconds"].add_metric([profile, product], _median(values))


class StateCollector(Collector):
    """The state families, computed from the operator's current state at each scrape."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return state_families(self.source())

    def describe(self) -> Iterable[Metric]:
        """The families without samples: registering it reads no state."""
        return state_families(Snapshot((), (), (), 0.0))


def _version() -> str:
    try:
        return version("torchproof")
    except PackageNotFoundError:
        return "unknown"


class Metrics:
    """The registry and the event families; `watch(source)` adds the state families of a running operator."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("torchproof_build", "The operator's version and commit (the image's TORCHPROOF_REVISION).",
             registry=r).info({"version": _version(), "revision": os.environ.get("TORCHPROOF_REVISION", "unknown")})
        self.validations = Counter(
            "torchproof_validations_total", "Verdicts recorded on nodes.", ["profile", "verdict"], registry=r,
        )
        self.validation_seconds = Histogram(
            "torchproof_validation_duration_seconds", "From validation pod creation to the node's label.",
            ["profile"], buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600, 1800), registry=r,
        )
        self.pods_created = Counter(
            "torchproof_validation_pods_created_total", "Validation pods created.", ["profile"], registry=r,
        )
        self.api_requests = Counter(
            "torchproof_api_requests_total", "Kubernetes API requests by verb, resource and HTTP status (0: none).",
            ["verb", "resource", "code"], registry=r,
        )
        self.api_errors = Counter(
            "torchproof_api_errors_total", "Kubernetes API calls that failed, by verb and HTTP status.",
            ["verb", "code"], registry=r,
        )
        self.reconcile_seconds = Histogram(
            "torchproof_reconcile_duration_seconds", "Time to plan and apply one reconcile pass.",
            ["profile"], registry=r,
        )
        self.pass_failures = Counter(
            "torchproof_pass_failures_total", "Planning passes that raised (the profile shows Degraded, PassFailed).",
            ["profile"], registry=r,
        )
        self.evaluation_failures = Counter(
            "torchproof_evaluation_failures_total", "Pods whose judging raised; their node was labelled error.",
            ["profile"], registry=r,
        )
        self.create_refusals = Counter(
            "torchproof_pod_create_refusals_total", "Validation pod creates the API server refused, by HTTP status.",
            ["profile", "code"], registry=r,
        )
        self.state: StateCollector | None = None

    def watch(self, source: Callable[[], Snapshot]) -> None:
        """Serve the state families from `source` (once per registry: one operator per registry)."""
        if self.state is not None:
            self.registry.unregister(self.state)
        self.state = StateCollector(source)
        self.registry.register(self.state)

    def forget(self, profile: str) -> None:
        """A profile is gone: its event series go too (its state series go with its loop)."""
        for counter in (self.validations, self.validation_seconds, self.pods_created, self.reconcile_seconds,
                        self.pass_failures, self.evaluation_failures, self.create_refusals):
            counter.remove_by_labels({"profile": profile})


_SUFFIX = {"counter": "_total", "info": "_info"}


def family_names(metrics: Metrics) -> list[str]:
    """Every torchproof family as scraped (`_total`, `_info`), state families included, for docs and tests."""
    families = [*metrics.registry.collect(), *state_families(Snapshot((), (), (), 0.0))]
    return sorted({f"{m.name}{_SUFFIX.get(m.type, '')}" for m in families if m.name.startswith("torchproof_")})
