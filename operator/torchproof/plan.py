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

from collections.abc import Mapping
from dataclasses import replace

from torchproof import gating
from torchproof import labels as L
from torchproof.breaker import Rollout
from torchproof.classify import Classifier
from torchproof.contract import iso, parse_time
from torchproof.planstatus import invalid_spec_status, pass_failed_status, plan_events, plan_status
from torchproof.plantypes import (
    LOST_GRACE_SECONDS,
    CreateBackoff,
    DeletePod,
    Entry,
    EventSpec,
    NodeFailure,
    NodeUpdate,
    Plan,
    PlanInput,
    PlanMemo,
    Tally,
)
from torchproof.podspec import PodTemplate, pod_template
from torchproof.recordsums import marks
from torchproof.schedule import (
    CREATE_BACKOFF_BASE,
    CREATE_BACKOFF_MAX,
    fill_slots,
    refused_create,
    selects,
    validation_order,
)
from torchproof.text import clean_text, clean_tree
from torchproof.views import NodeView, PodView, cached_record

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
    p = inp.profile
    key = L.label_key(p.name)
    nodes = inp.nodes if isinstance(inp.nodes, Mapping) else {node.name: node for node in inp.nodes}
    b = Classifier(inp)
    gates: list[gating.GateUpdate] = []
    pods = {pod.node: pod for pod in inp.pods}
    entries, tally, names = _revisit(inp, b.context, nodes, pods)
    unstable: set[str] = set()  # every node left unstable is classified again on the next pass
    template: PodTemplate | None = None  # built at the first pod this pass creates
    visit: list[tuple[tuple[int, str], NodeView]] = []
    for name in names:
        old = entries.pop(name, None)
        if old is not None:
            tally.remove(old)
        node = nodes.get(name)
        if node is None:
            continue
        if old is not None and old.view is node and old.idle is not None:
            b.memo[name] = old.idle
        visit.append((old.order if old is not None else validation_order(p.name, name), node))
    visit.sort(key=lambda item: item[0])
    selected = {node.name for _, node in visit if selects(p, node)}
    # The breaker weighs every selected node's record and claim: the sums hold the nodes kept from the
    # memo; those classified again join them for this reading, as the pass finds them.
    record_key, claim_key = L.result_annotation_key(p.name), L.gate_annotation_key(p.name)  # once, not per node
    before = {node.name: marks(node, cached_record(raw) if isinstance(raw := node.annotations.get(record_key), str)
                               else None, parse_time(node.annotations.get(claim_key)), p.spec_hash)
              for _, node in visit if node.name in selected}
    for m in before.values():
        tally.sums.add(m)
    rollout = b.rollout = Rollout.read(p, tally.sums, inp.status.get("rollout") or {}, inp.profile_resume, inp.now)
    b.medians = tally.sums.medians()
    for m in before.values():
        tally.sums.remove(m)
    for pod in inp.pods:
        if pod.node not in selected and not pod.deleting:
            b.delete.append(DeletePod(pod.name, pod.node, "NodeNotSelected"))
    for _, node in visit:
        if node.name in selected:
            continue
        patch = L.removal_patch(p.name, node.labels, node.annotations)
        if patch is not None:
            b.update.append(NodeUpdate(node.name, patch, None, node.labels.get(key)))
        released = gating.release(node, p.name)
        if released is not None:
            gates.append(released)
    for _, node in visit:
        if node.name in selected:
            found = pods.get(node.name)
            if found is not None:
                b.pod_safely(node, found)
            else:
                b.without_pod(node)
    b.migrate(node for _, node in visit)
    patched = {u.node for u in b.update}
    candidates = {node.name for node in b.candidates}
    for order, node in visit:
        name = node.name
        if name in selected:
            m = before[name]
            if name in b.records:
                m = marks(node, b.records[name], m.claim_at, p.spec_hash)
            entry = Entry(node, order, True, name in b.settled and name not in patched, b.state[name],
                          b.labels[name] if name in b.labels else node.labels.get(key),
                          b.waiting_reason.get(name), name in candidates, b.idle.get(name), b.expires.get(name), m)
        else:
            entry = Entry(node, order, False, name not in patched)
        entries[name] = entry
        tally.add(entry)
        if not entry.stable:
            unstable.add(name)
    rollout.judge(tally.sums)
    if rollout.paused:  # the candidates wait on a resume, and are classified again once it comes
        for name, entry in list(entries.items()):
            if entry.candidate and entry.selected:
                tally.remove(entry)
                entries[name] = replace(entry, stable=False, state="waiting",
                                        waiting=f"RolloutPaused: {rollout.reason}")
                tally.add(entries[name])
                unstable.add(name)
    elif not b.blocked and b.pull_failure is None:
        for node in fill_slots(p, tally, nodes, b.retrying, b.running):
            template = template or pod_template(p, namespace=inp.namespace, configmap=inp.configmap,
                                                reuse=inp.memo.pods if inp.memo is not None else None)
            b.create.append(template.pod(node.name, node.fingerprint))
            if node.name not in b.backoff:  # a refused node stays waiting until its pod exists
                old = entries[node.name]
                tally.remove(old)
                entries[node.name] = replace(old, stable=False, state="running", candidate=False)
                tally.add(entries[node.name])
                unstable.add(node.name)
    if tally.expiries:  # the first record of the fleet that revalidateAfter ends
        b.wakes.append(tally.expiries[0][0])
    if p.gate or tally.sums.claims:  # gating walks every selected node, and only where it is in use
        chosen = sorted((e for e in entries.values() if e.selected), key=lambda e: e.order)
        verdicts = {e.view.name: e.verdict for e in chosen}
        records = {e.view.name: e.marks.record if e.marks is not None else None for e in chosen}
        gates += gating.gate_updates(p.name, p.gate, [e.view for e in chosen], verdicts, records, rollout)
    status = plan_status(inp, b, tally, entries)
    b.events.extend(plan_events(inp, b, status))
    return Plan(
        create=tuple(b.create),
        delete=tuple(b.delete),
        update=tuple(b.update),
        events=tuple(EventSpec(e.type, e.reason, clean_text(e.message)) for e in b.events),
        status=clean_tree(status),
        retry_after=b.retry_after,
        wake_at=min(b.wakes) if b.wakes else None,
        create_backoff={n: backoff for n, backoff in b.backoff.items() if n in entries and entries[n].selected},
        failures=tuple(b.failures),
        gates=tuple(gates),
        waiting=dict(tally.waiting),
        memo=PlanMemo(b.context, entries, tally, frozenset(unstable),
                     template or (inp.memo.pods if inp.memo is not None else None)),
    )


def _revisit(
    inp: PlanInput, context: tuple[object, ...], nodes: Mapping[str, NodeView], pods: Mapping[str, PodView],
) -> tuple[dict[str, Entry], Tally, set[str]]:
    """The memo's entries and tally, copied, and the nodes to classify again: all of them
    without a memo for this context, else those changed (`inp.changed`, or each view compared with its
    entry's), gone, unstable, with a pod, a retry or a create backoff."""
    memo = inp.memo
    if memo is None or memo.context != context:
        return {}, Tally(), set(nodes)
    entries = dict(memo.entries)
    names = set(memo.unstable)
    if inp.changed is not None:
        names.update(inp.changed)
    else:
        names.update(name for name, node in nodes.items() if name not in entries or entries[name].view is not node)
        names.update(entries.keys() - nodes.keys())
    names.update(pods, inp.retry_after, inp.create_backoff, memo.tally.expired(inp.now))
    return entries, memo.tally.copy(), names
