"""The per-profile plan: from the observed state (nodes, validation pods, earlier verdicts) to actions.

`compute_plan(PlanInput) -> Plan` is the one entry point, pure; its parts are split by concern:
classify.py (each node's state, from its pod or its record), schedule.py (the selection, each profile's
node order, the free slots, the create backoff), planstatus.py (status and Events), and plantypes.py
(the input, the output and what the parts hand each other). The names callers use are exported here.

A verdict stays current while the profile's spec hash (what is validated: image, components,
requirements, checks), the node's fingerprint (GPU product, driver, boot, kernel) and the revalidate
tokens are unchanged and it is younger than revalidateAfter. Pods and records carry the spec hash rather
than trusting the generation alone, so that a torn read of the profile never labels with a stale spec.

Level-triggered and idempotent: the same state always gives the same plan, a plan applied twice does
no harm, and everything it needs survives a restart in the cluster itself (node labels and result
annotations, pod annotations, the profile's status). The only in-memory inputs are the per-node retry
time after a pending timeout and the per-node backoff after a refused create, which a restart may
forget (the node is simply tried again), and the memo, a cache each plan returns for the next pass's
input. Judging one node's pod never raises out of the plan: it becomes that node's `error` verdict,
listed in `failures` for the shell to log (the core does not log).
"""

from __future__ import annotations

from torchproof import labels as L
from torchproof.classify import Classifier
from torchproof.contract import iso
from torchproof.planstatus import invalid_spec_status, pass_failed_status, plan_events, plan_status
from torchproof.plantypes import (
    LOST_GRACE_SECONDS,
    CreateBackoff,
    DeletePod,
    EventSpec,
    NodeFailure,
    NodeUpdate,
    Plan,
    PlanInput,
    PlanMemo,
)
from torchproof.podspec import build_pod
from torchproof.schedule import (
    CREATE_BACKOFF_BASE,
    CREATE_BACKOFF_MAX,
    fill_slots,
    ordered,
    refused_create,
    selects,
    validation_order,
)
from torchproof.text import clean_text, clean_tree

__all__ = [
    "CREATE_BACKOFF_BASE",
    "CREATE_BACKOFF_MAX",
    "LOST_GRACE_SECONDS",
    "CreateBackoff",
    "DeletePod",
    "EventSpec",
    "NodeFailure",
    "NodeUpdate",
    "Plan",
    "PlanInput",
    "PlanMemo",
    "compute_plan",
    "invalid_spec_status",
    "iso",
    "pass_failed_status",
    "refused_create",
    "validation_order",
]


def compute_plan(inp: PlanInput) -> Plan:
    b = Classifier(inp)
    p = inp.profile
    key = L.label_key(p.name)
    matched = {node.name: node for node in inp.nodes if selects(p, node)}
    pods = {pod.node: pod for pod in inp.pods}
    for pod in inp.pods:
        if pod.node not in matched and not pod.deleting:
            b.delete.append(DeletePod(pod.name, pod.node, "NodeNotSelected"))
    for node in inp.nodes:
        if node.name in matched:
            continue
        patch = L.removal_patch(p.name, node.labels, node.annotations)
        if patch is not None:
            b.update.append(NodeUpdate(node.name, patch, None, node.labels.get(key)))
    steady = p.revalidate_after_seconds is None
    order = ordered(p.name, matched, inp.memo)
    for name in order:
        node = matched[name]
        found = pods.get(name)
        if found is not None:
            b.pod_safely(node, found)
            continue
        hit = b.memo.get(name)
        if steady and hit is not None and hit.view is node and hit.recorded_at is not None:
            b.idle[name] = hit  # the common case on a validated fleet, without the calls of without_pod
            b.state[name] = node.labels[key]
        else:
            b.without_pod(node)
    if not b.blocked and b.pull_failure is None:
        for node in fill_slots(p, matched, b.state, b.candidates, b.retrying, b.running):
            b.create.append(build_pod(
                p, node=node.name, fingerprint=node.fingerprint, namespace=inp.namespace, configmap=inp.configmap,
            ))
            if node.name not in b.backoff:  # a refused node stays waiting until its pod exists
                b.state[node.name] = "running"
    b.migrate()
    status = plan_status(inp, b, matched)
    b.events.extend(plan_events(inp, b, status))
    return Plan(
        create=tuple(b.create),
        delete=tuple(b.delete),
        update=tuple(b.update),
        events=tuple(EventSpec(e.type, e.reason, clean_text(e.message)) for e in b.events),
        status=clean_tree(status),
        retry_after=b.retry_after,
        wake_at=min(b.wakes) if b.wakes else None,
        create_backoff={n: backoff for n, backoff in b.backoff.items() if n in matched},
        failures=tuple(b.failures),
        waiting=dict(b.waiting_reason),
        memo=PlanMemo(b.context, b.idle, order),
    )
