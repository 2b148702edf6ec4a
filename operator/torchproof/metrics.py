"""Prometheus metrics, named by Prometheus' guide: base units, `_total` counters, bounded label values.

Label values are profile names, the four verdict words, reason codes (a closed CamelCase set made by
the operator, never text from a probe) and API verbs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from torchproof.labels import VERDICTS


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.nodes = Gauge(
            "torchproof_nodes", "Nodes matched by a profile, by verdict label or state.",
            ["profile", "state"], registry=r,
        )
        self.validations = Counter(
            "torchproof_validations_total", "Verdicts recorded on nodes.", ["profile", "verdict"], registry=r,
        )
        self.reasons = Counter(
            "torchproof_verdict_reasons_total", "Reasons behind non-passing verdicts, by reason code.",
            ["profile", "reason"], registry=r,
        )
        self.validation_seconds = Histogram(
            "torchproof_validation_duration_seconds", "From validation pod creation to the node's label.",
            ["profile"], buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600, 1800), registry=r,
        )
        self.pods_created = Counter(
            "torchproof_validation_pods_created_total", "Validation pods created.", ["profile"], registry=r,
        )
        self.image_pull_failing = Gauge(
            "torchproof_image_pull_failing", "1 while a profile's image cannot be pulled (circuit open).",
            ["profile"], registry=r,
        )
        self.api_errors = Counter(
            "torchproof_api_errors_total", "Kubernetes API calls that failed, by verb and HTTP status.",
            ["verb", "code"], registry=r,
        )
        self.api_requests = Counter(
            "torchproof_api_requests_total", "Kubernetes API requests by verb, resource and HTTP status (0: none).",
            ["verb", "resource", "code"], registry=r,
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
        self.pending_nodes = Gauge(
            "torchproof_pending_nodes", "Nodes awaiting a verdict.", ["profile"], registry=r,
        )

    def observe_status(self, profile: str, status: Mapping[str, object]) -> None:
        counts = status.get("counts")
        if not isinstance(counts, Mapping):
            return
        for state in (*VERDICTS, "running", "skipped"):
            value = counts.get(state, 0)
            self.nodes.labels(profile, state).set(float(value) if isinstance(value, int) else 0.0)
        pending = counts.get("pending", 0)
        self.pending_nodes.labels(profile).set(float(pending) if isinstance(pending, int) else 0.0)
        self.image_pull_failing.labels(profile).set(1.0 if status.get("imagePull") else 0.0)

    def forget(self, profile: str) -> None:
        series: list[tuple[Gauge, tuple[str, ...]]] = [
            (self.nodes, (profile, state)) for state in (*VERDICTS, "running", "skipped")
        ]
        series += [(self.pending_nodes, (profile,)), (self.image_pull_failing, (profile,))]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
