"""Performance history: each node's key number over its last validations, and the regressions it shows.

The record (contract.NodeRecord) is the newest validation; its `history` keeps the verdict and fp16
tensor-core TFLOP/s of the ones before it, up to `HISTORY_LENGTH` validations in all, so the history survives
restarts in the cluster itself and is bounded per node. A passed
node whose number falls more than `REGRESSION_PERCENT` below its own previous value or its GPU product's
median gets a `PerformanceRegression` finding: the verdict stays (the checks passed), the finding says how
far, against what. The status shows per GPU product the median and spread (`summary`), from sums kept
per node (recordsums.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torchproof.catalogue import display_name
from torchproof.contract import HISTORY_LENGTH, NodeRecord, iso
from torchproof.reasons import Reason
from torchproof.views import NodeView

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


def product(node: NodeView, numbers: Mapping[str, Any]) -> str:
    """The GPU product in NVML's spelling: from GPU Feature Discovery's label (the same for every node of a
    kind), else as the probe saw it, so that nodes with and without GFD share their product's median."""
    return display_name(node.kind[0]) if node.kind[0] else str(numbers.get("gpu") or "")


def extended(previous: NodeRecord | None) -> tuple[dict[str, Any], ...]:
    """The history a new record carries: the previous record's own validation appended to its history,
    oldest first, bounded (the new record's own numbers are the newest validation)."""
    if previous is None or previous.at is None:
        return tuple(dict(e) for e in previous.history) if previous is not None else ()
    entry: dict[str, Any] = {"at": iso(previous.at), "verdict": previous.verdict}
    value = key_number(previous.numbers)
    if value is not None:
        entry[METRIC] = value
    return (*(dict(e) for e in previous.history), entry)[-(HISTORY_LENGTH - 1):]


def latest(record: NodeRecord | None) -> float | None:
    """The key number of the newest passed validation a record knows: its own, else its history's."""
    if record is None:
        return None
    if record.verdict == "passed" and (own := key_number(record.numbers)) is not None:
        return own
    for entry in reversed(record.history):
        value = number(entry.get(METRIC))
        if value is not None and entry.get("verdict") == "passed":
            return value
    return None


def regression(value: float | None, previous: NodeRecord | None, product: str,
               medians: Mapping[str, float]) -> Reason | None:
    """The finding when `value` is more than REGRESSION_PERCENT below the node's previous value or its
    product's median (the first that it is), else None."""
    if value is None:
        return None
    references = [("the node's previous", latest(previous)),
                  (f"the {product} median", medians.get(product))]
    for what, reference in references:
        if reference and value < reference * (1 - REGRESSION_PERCENT / 100):
            below = 100 * (reference - value) / reference
            return Reason("PerformanceRegression", f"fp16 tensor cores {value:g} TFLOP/s, {below:.0f}% below {what} "
                                      f"{reference:g} TFLOP/s")
    return None


def median(ordered: Sequence[float]) -> float:
    """The median of a sorted, non-empty sequence (statistics.median without sorting it again)."""
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summary(values: Mapping[str, Sequence[float]], regressed: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per GPU product (its key numbers sorted, none empty): nodes, median, min, max and spread
    ((max - min) / median, %), and regressions."""
    rows = []
    for product in sorted(values)[:MAX_PRODUCTS]:
        v = values[product]
        mid, low, high = median(v), v[0], v[-1]
        rows.append({
            "gpu": product, "metric": METRIC, "nodes": len(v), "median": round(mid, 1),
            "min": round(low, 1), "max": round(high, 1),
            "spreadPercent": round(100 * (high - low) / mid, 1) if mid else 0.0,
            "regressions": regressed.get(product, 0),
        })
    return rows


def summary_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line for `kubectl get -o wide`: `Tesla T4 52.1 ±3%, ...`."""
    return ", ".join(f"{r['gpu']} {r['median']:g} ±{r['spreadPercent']:g}%" for r in rows)[:256]
