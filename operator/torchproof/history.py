"""Performance history: each node's key number over its last validations, and the regressions it shows.

The record (contract.NodeRecord) keeps the last `HISTORY_LENGTH` validations' fp16 tensor-core TFLOP/s with
the GPU product, so the history survives restarts in the cluster itself and is bounded per node. A passed
node whose number falls more than `REGRESSION_PERCENT` below its own previous value or its GPU product's
median gets a `PerformanceRegression` finding: the verdict stays (the checks passed), the finding says how
far, against what. The status shows per GPU product the median and spread (`summary`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from torchproof.contract import HISTORY_LENGTH, NodeRecord, iso
from torchproof.reasons import Reason

METRIC = "fp16Tflops"  # the key number, as each history entry names it
REGRESSION_PERCENT = 20.0
REGRESSION = "PerformanceRegression"  # the finding's code, as `regression` spells it
MAX_PRODUCTS = 16  # rows of the status summary


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def key_number(numbers: Mapping[str, Any]) -> float | None:
    """The record's fp16 tensor-core TFLOP/s (the tensor-core check's summary, `numbers.tflops.fp16`)."""
    tflops = numbers.get("tflops")
    return number(tflops.get("fp16")) if isinstance(tflops, Mapping) else None


def extended(previous: NodeRecord | None, at: float, verdict: str, numbers: Mapping[str, Any],
             product: str) -> tuple[dict[str, Any], ...]:
    """The history after one more validation, oldest first, bounded."""
    entry: dict[str, Any] = {"at": iso(at), "verdict": verdict, "gpu": product}
    value = key_number(numbers)
    if value is not None:
        entry[METRIC] = value
    earlier = tuple(dict(e) for e in previous.history) if previous is not None else ()
    return (*earlier, entry)[-HISTORY_LENGTH:]


def latest(record: NodeRecord | None) -> tuple[str, float] | None:
    """(GPU product, value) of the record's newest passed validation with the number."""
    for entry in reversed(record.history if record is not None else ()):
        value = number(entry.get(METRIC))
        if value is not None and entry.get("verdict") == "passed":
            return str(entry.get("gpu", "")), value
    return None


def by_product(records: Iterable[NodeRecord | None]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for record in records:
        found = latest(record)
        if found is not None and found[0]:
            out[found[0]].append(found[1])
    return dict(out)


def regression(value: float | None, previous: NodeRecord | None, product: str,
               medians: Mapping[str, float]) -> Reason | None:
    """The finding when `value` is more than REGRESSION_PERCENT below the node's previous value or its
    product's median (the first that it is), else None."""
    if value is None:
        return None
    own = latest(previous)
    references = [("the node's previous", own[1] if own is not None else None),
                  (f"the {product} median", medians.get(product))]
    for what, reference in references:
        if reference and value < reference * (1 - REGRESSION_PERCENT / 100):
            below = 100 * (reference - value) / reference
            return Reason("PerformanceRegression", f"fp16 tensor cores {value:g} TFLOP/s, {below:.0f}% below {what} "
                                      f"{reference:g} TFLOP/s")
    return None


def medians(values: Mapping[str, list[float]]) -> dict[str, float]:
    return {product: statistics.median(v) for product, v in values.items() if v}


def summary(values: Mapping[str, list[float]], regressed: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per GPU product: nodes, median, min, max and spread ((max - min) / median, %), and regressions."""
    rows = []
    for product in sorted(values)[:MAX_PRODUCTS]:
        v = values[product]
        median = statistics.median(v)
        rows.append({
            "gpu": product, "metric": METRIC, "nodes": len(v), "median": round(median, 1),
            "min": round(min(v), 1), "max": round(max(v), 1),
            "spreadPercent": round(100 * (max(v) - min(v)) / median, 1) if median else 0.0,
            "regressions": regressed.get(product, 0),
        })
    return rows


def summary_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line for `kubectl get -o wide`: `Tesla T4 52.1 ±3%, ...`."""
    return ", ".join(f"{r['gpu']} {r['median']:g} ±{r['spreadPercent']:g}%" for r in rows)[:256]
