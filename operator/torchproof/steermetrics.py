"""The event counters of gating and performance history (see metrics.py for the naming rules; the breaker's
pause and the regressed nodes are state families there, computed from the status at each scrape)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class SteeringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.regressions = Counter(
            "torchproof_performance_regressions_total",
            "Validations that found the node's fp16 tensor-core TFLOP/s regressed (PerformanceRegression).",
            ["profile"], registry=registry,
        )
        self.gating_taints = Counter(
            "torchproof_gating_taints_total", "Gating taints added (add) and removed (remove).",
            ["profile", "action"], registry=registry,
        )

    @property
    def counters(self) -> tuple[Counter, ...]:
        return self.regressions, self.gating_taints
