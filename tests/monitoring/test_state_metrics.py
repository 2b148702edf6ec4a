"""The state families: present state, not counts of events. One series per (node, profile) per family, and
a node's or a profile's series gone with it; reason codes from records, free text as Other."""

from __future__ import annotations

import re
from collections import Counter

from torchproof import labels as L
from torchproof.contract import NodeRecord
from torchproof.metrics import InformerState, Metrics, ProfileState, Snapshot, family_names, state_families
from torchproof.views import NodeView

from tests.support.prometheus import ROOT


def node(name: str, profile: str, verdict: str, *reasons: str, issues: tuple[str, ...] = (),
         product: str = "Tesla-T4", tflops: float = 50.0) -> NodeView:
    record = NodeRecord(verdict, 1000.0, 1, reasons=reasons, known_issues=issues,
                        numbers={"tflops": {"fp16": tflops, "fp32": 8.0}, "fp16Speedup": tflops / 8.0})
    return NodeView(
        name=name, labels={L.label_key(profile): verdict, "nvidia.com/gpu.product": product,
                           "nvidia.com/cuda.driver-version.full": "450.51.06"},
        annotations={L.result_annotation_key(profile): record.to_annotation()},
        ready=True, unschedulable=False, gpus=1, fingerprint="f",
    )


def samples(snap: Snapshot) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in state_families(snap) for s in family.samples]


def test_one_series_per_node_and_profile_and_series_vanish_with_them() -> None:
    nodes = [node("a", "p", "passed", issues=("i-1",)), node("b", "p", "failed", "AmpNotFinite: nan", "odd text"),
             node("c", "p", "passed", product="Tesla-V100-SXM2-16GB", tflops=90.0)]
    waiting = {"d": "Unschedulable: 0/3 nodes", "e": "NodeCordoned"}
    profile = ProfileState("p", {"counts": {"passed": 2, "failed": 1, "pending": 2, "waiting": 2}}, waiting,
                           {"d": 100.0, "e": 400.0}, 950.0)
    snap = Snapshot([profile], nodes, [InformerState("nodes", True, 2)], now=1000.0)
    got = samples(snap)
    per_node = Counter((name, s["node"], s["profile"]) for name, s, _ in got if "node" in s)
    assert per_node and max(per_node.values()) == 1
    verdicts = {s["node"]: s for name, s, _ in got if name == "torchproof_node_verdict"}
    assert verdicts["b"]["reasons"] == "AmpNotFinite,Other" and verdicts["a"]["reasons"] == ""
    assert verdicts["a"]["gpu_product"] == "Tesla T4" and verdicts["a"]["driver_version"] == "450.51.06"
    values = {(name, frozenset(s.items())): v for name, s, v in got}

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset(labels.items()))]

    assert value("torchproof_product_nodes", profile="p", gpu_product="Tesla T4", verdict="passed") == 1
    assert value("torchproof_waiting_nodes", profile="p", reason="Unschedulable") == 1
    assert value("torchproof_oldest_waiting_seconds", profile="p") == 900.0
    assert value("torchproof_known_issue_nodes", profile="p", issue="i-1") == 1
    assert value("torchproof_gpu_tflops", profile="p", gpu_product="Tesla T4", dtype="fp16") == 50.0
    assert value("torchproof_gpu_peak_tflops", gpu_product="Tesla T4", dtype="fp16") == 65.0
    assert value("torchproof_watch_restarts_total", resource="nodes") == 2
    assert value("torchproof_nodes", profile="p", state="waiting") == 2
    gone = samples(Snapshot([profile], nodes[:1], [], now=1000.0))
    assert not [s for name, s, _ in gone if s.get("node") == "b"], "a node's series go with it"
    assert not [s for _, s, _ in samples(Snapshot([], nodes, [], now=1000.0)) if s.get("profile") == "p"]


def test_a_verdict_the_label_no_longer_shows_is_not_reported() -> None:
    stale = node("a", "p", "passed")
    labels = {**stale.labels, L.label_key("p"): "failed"}  # edited by hand: the record no longer stands
    relabelled = NodeView(stale.name, labels, stale.annotations, True, False, 1, "f")
    got = samples(Snapshot([ProfileState("p", {})], [relabelled], [], now=0.0))
    assert not [s for name, s, _ in got if name == "torchproof_node_verdict"]


def test_docs_list_every_family() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    families = family_names(Metrics())
    missing = [f for f in families if f"`{f}`" not in doc]
    assert not missing, f"docs/metrics.md does not list {missing}"
    listed = set(re.findall(r"^\| `(torchproof_\w+)`", doc, re.M))
    assert listed == set(families), listed ^ set(families)
