"""Verdicts that steer scheduling: the mutating admission webhook's decision, pure (webhook.py serves it).

A pod whose container image is a profile's image (same repository and tag; the same digest when the profile
pins one) gets a required node affinity `torchproof.dev/<profile> In (passed)`, ANDed into each of its
required node selector terms, so it can only land on nodes that profile proved. A pod that already
chooses nodes by that label (a nodeSelector or a node affinity expression on the key) is left alone: its
author decided. Which namespaces opt in is the webhook configuration's `namespaceSelector`; the decision
never refuses a pod (`allowed` is always true), and a request it cannot read is answered allowed and
unchanged: the webhook fails open (docs/steering.md).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchproof import labels as L

OPT_IN_LABEL = f"{L.DOMAIN}/steering"  # on a namespace, value `enabled`: its pods are steered
OPT_IN_VALUE = "enabled"
STEERED_ANNOTATION = f"{L.DOMAIN}/steered-by"  # on a mutated pod: the profiles whose label it now requires
DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True)
class ImageRef:
    repository: str  # with its registry, docker.io's spelled out as a container runtime does
    tag: str | None
    digest: str | None


def parse_image(ref: str) -> ImageRef:
    """`[registry/]path[:tag][@digest]`, with Docker Hub's implicit registry and `library/` made explicit."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    first, _, rest = name.partition("/")
    if not rest:
        name = f"{DEFAULT_REGISTRY}/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"{DEFAULT_REGISTRY}/{name}"
    return ImageRef(name, tag if tag is not None or digest else "latest", digest or None)


@dataclass(frozen=True)
class Target:
    """A profile whose verdict label steers the pods that run its image."""

    profile: str
    image: ImageRef

    def matches(self, image: str) -> bool:
        other = parse_image(image)
        if other.repository != self.image.repository:
            return False
        if self.image.digest is not None:
            return other.digest == self.image.digest
        return other.tag == self.image.tag


def targets(profiles: Iterable[Mapping[str, Any]]) -> tuple[Target, ...]:
    """The profiles (objects as listed) that name an image; a malformed one is skipped, not fatal."""
    out = []
    for obj in profiles:
        name = (obj.get("metadata") or {}).get("name")
        image = (obj.get("spec") or {}).get("image")
        if isinstance(name, str) and isinstance(image, str) and image:
            out.append(Target(name, parse_image(image)))
    return tuple(sorted(out, key=lambda t: t.profile))


def _chooses(spec: Mapping[str, Any], key: str) -> bool:
    """The pod already selects nodes by the label: its nodeSelector or any node affinity expression."""
    if key in (spec.get("nodeSelector") or {}):
        return True
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = list(required.get("nodeSelectorTerms") or [])
    terms += [p.get("preference") or {} for p in affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    return any(e.get("key") == key for term in terms for e in term.get("matchExpressions") or [])


def _images(spec: Mapping[str, Any]) -> list[str]:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return [str(c["image"]) for c in containers if isinstance(c, Mapping) and isinstance(c.get("image"), str)]


def steering(pod: Mapping[str, Any], known: Sequence[Target]) -> tuple[str, ...]:
    """The profiles whose label the pod must now require."""
    spec = pod.get("spec") or {}
    images = _images(spec)
    return tuple(t.profile for t in known
                 if any(t.matches(i) for i in images) and not _chooses(spec, L.label_key(t.profile)))


def patch(pod: Mapping[str, Any], profiles: Sequence[str]) -> list[dict[str, Any]]:
    """A JSON patch adding `label In (passed)` for each profile to every required node selector term."""
    if not profiles:
        return []
    spec = pod.get("spec") or {}
    affinity = json.loads(json.dumps(spec.get("affinity") or {}))
    node = affinity.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    wanted = [{"key": L.label_key(p), "operator": "In", "values": ["passed"]} for p in profiles]
    required["nodeSelectorTerms"] = [{**t, "matchExpressions": [*(t.get("matchExpressions") or []), *wanted]}
                                     for t in terms]
    ops: list[dict[str, Any]] = [{"op": "add", "path": "/spec/affinity", "value": affinity}]
    note = ",".join(profiles)
    if (pod.get("metadata") or {}).get("annotations"):
        ops.append({"op": "add", "path": f"/metadata/annotations/{STEERED_ANNOTATION.replace('/', '~1')}",
                    "value": note})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {STEERED_ANNOTATION: note}})
    return ops


def review(request_review: Any, known: Sequence[Target]) -> dict[str, Any]:
    """The AdmissionReview answer: allowed, with a patch for a pod created in a steered way; allowed and
    unchanged for anything else, a malformed request included."""
    request = request_review.get("request") if isinstance(request_review, Mapping) else None
    request = request if isinstance(request, Mapping) else {}
    response: dict[str, Any] = {"uid": str(request.get("uid", "")), "allowed": True}
    pod = request.get("object")
    kind = request.get("kind") or {}
    if (request.get("operation") == "CREATE" and isinstance(pod, Mapping) and isinstance(kind, Mapping)
            and kind.get("kind") == "Pod" and not kind.get("group")):
        ops = patch(pod, steering(pod, known))
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
