"""Metrics of the rollout breaker and the performance history (see metrics.py for the naming rules).

Label values: profile names and GPU product names, which a fleet has few of (GPU Feature Discovery's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge


class SteeringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.rollout_paused = Gauge(
            "torchproof_rollout_paused", "1 while a profile's validation wave is paused by its circuit breaker.",
            ["profile"], registry=r,
        )
        self.regressions = Counter(
            "torchproof_performance_regressions_total",
            "Validations that found the node's fp16 tensor-core TFLOP/s regressed (PerformanceRegression).",
            ["profile"], registry=r,
        )
        self.regressed_nodes = Gauge(
            "torchproof_performance_regressed_nodes", "Nodes whose latest record has a PerformanceRegression.",
            ["profile", "gpu"], registry=r,
        )
        self.tflops_median = Gauge(
            "torchproof_gpu_fp16_tflops_median", "Median fp16 tensor-core TFLOP/s of a GPU product's nodes.",
            ["profile", "gpu"], registry=r,
        )
        self.gating_taints = Counter(
            "torchproof_gating_taints_total", "Gating taints added (add) and removed (remove).",
            ["profile", "action"], registry=r,
        )
        self._products: dict[str, set[str]] = {}

    def observe_status(self, profile: str, status: Mapping[str, object]) -> None:
        rollout = status.get("rollout")
        paused = isinstance(rollout, Mapping) and bool(rollout.get("paused"))
        self.rollout_paused.labels(profile).set(1.0 if paused else 0.0)
        rows = status.get("performance")
        seen: set[str] = set()
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, Mapping):
                gpu = str(row.get("gpu", ""))
                seen.add(gpu)
                self.tflops_median.labels(profile, gpu).set(float(row.get("median") or 0.0))
                self.regressed_nodes.labels(profile, gpu).set(float(row.get("regressions") or 0))
        for gpu in self._products.get(profile, set()) - seen:
            self._remove(profile, gpu)
        self._products[profile] = seen

    def _remove(self, profile: str, gpu: str) -> None:
        for gauge in (self.tflops_median, self.regressed_nodes):
            with contextlib.suppress(KeyError):
                gauge.remove(profile, gpu)

    def forget(self, profile: str) -> None:
        for gpu in self._products.pop(profile, set()):
            self._remove(profile, gpu)
        with contextlib.suppress(KeyError):
            self.rollout_paused.remove(profile)
