"""How long one planning pass takes for a large fleet mid-validation (the operator's per-pass CPU cost).

Run: `.venv/bin/python bench/plan_speed.py [N ...]` (default 1000 5000). The state: half the nodes carry a
current verdict, maxConcurrent (100) validation pods run, the rest wait. Prints milliseconds per pass, each
on the memo of the one before: with every node's view compared to its entry, and told that no node changed
(as the controller is by the node informer between two events).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import yaml
from torchproof import labels as L
from torchproof.contract import NodeRecord, parse_time
from torchproof.plan import PlanInput, compute_plan
from torchproof.podspec import build_pod
from torchproof.profile import parse_profile
from torchproof.views import node_view, pod_view
from torchproof_sim.fleet import build_node, parse_fleet

from bench import ROOT
from bench.scale.fleet import fleet_data

PASSES = 20


def state(n: int) -> PlanInput:
    body = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
    body["metadata"].update(generation=1, uid="u")
    profile = parse_profile(body)
    nodes, pods = [], []
    now = time.time()
    for i, sim in enumerate(parse_fleet(fleet_data(n)).nodes):
        view = node_view(build_node(sim))
        if i % 2 == 0:
            record = NodeRecord("passed", parse_time("2026-11-29T00:00:00Z"), 1, spec_hash=profile.spec_hash,
                                fingerprint=view.fingerprint, revalidate="/", image=profile.image)
            patch = L.verdict_patch(profile.name, view.labels, view.annotations, "passed", record)["metadata"]
            view = node_view(build_node(sim) | {"metadata": {
                **build_node(sim)["metadata"],
                "labels": {**view.labels, **patch["labels"]},
                "annotations": {**view.annotations, **patch["annotations"]}}})
        elif len(pods) < profile.max_concurrent:
            pod = build_pod(profile, node=view.name, fingerprint=view.fingerprint, namespace="torchproof",
                            configmap="cm")
            pod["status"] = {"phase": "Running"}
            pods.append(pod_view(pod))
        nodes.append(view)
    inp = PlanInput(profile=profile, nodes=nodes, pods=pods, now=now, namespace="torchproof", configmap="cm")
    labelled = {u.node: u.patch["metadata"] for u in compute_plan(inp).update}  # the incompatible ones
    nodes = [
        dataclasses.replace(view, labels={**view.labels, **labelled[view.name]["labels"]},
                            annotations={**view.annotations, **labelled[view.name]["annotations"]})
        if view.name in labelled else view
        for view in nodes
    ]
    return dataclasses.replace(inp, nodes=nodes)


def timed(inp: PlanInput, changed: set[str] | None) -> float:
    """Milliseconds per pass, each on the last one's memo; `changed`: what the node informer reports."""
    memo = compute_plan(inp).memo
    started = time.perf_counter()
    for _ in range(PASSES):
        plan = compute_plan(dataclasses.replace(inp, memo=memo, changed=changed))
        memo = plan.memo
    return (time.perf_counter() - started) / PASSES * 1000


def main(sizes: list[int]) -> None:
    for n in sizes:
        inp = state(n)
        compared = timed(inp, None)
        told = timed(dataclasses.replace(inp, nodes={node.name: node for node in inp.nodes}), set())
        print(f"{n:>6} nodes: {compared:7.1f} ms per pass with each view compared to the memo's, "
              f"{told:5.1f} ms told that none changed")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 5000])
