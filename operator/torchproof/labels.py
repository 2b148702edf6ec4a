"""Names torchproof writes on nodes, and the patches that write them.

Ownership follows Node Feature Discovery: a node annotation lists every label torchproof set, so a
stale label is removed and a label torchproof did not set is never touched. Patches are JSON merge
patches computed here, apart from the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torchproof.contract import NodeRecord

DOMAIN = "torchproof.dev"
OWNED_LABELS_ANNOTATION = f"{DOMAIN}/owned-labels"
REVALIDATE_ANNOTATION = f"{DOMAIN}/revalidate"
RESULT_ANNOTATION_PREFIX = f"result.{DOMAIN}/"
PROFILE_LABEL = f"{DOMAIN}/profile"
NODE_ANNOTATION = f"{DOMAIN}/node"
SPEC_ANNOTATION = f"{DOMAIN}/validates"
MANAGED_BY = "torchproof"

Verdict = Literal["passed", "failed", "incompatible", "error"]
VERDICTS: tuple[Verdict, ...] = ("passed", "failed", "incompatible", "error")


def label_key(profile: str) -> str:
    return f"{DOMAIN}/{profile}"


def result_annotation_key(profile: str) -> str:
    return f"{RESULT_ANNOTATION_PREFIX}{profile}"


def owned_labels(annotations: Mapping[str, str]) -> frozenset[str]:
    raw = annotations.get(OWNED_LABELS_ANNOTATION, "")
    return frozenset(part for part in raw.split(",") if part)


def _owned_value(keys: frozenset[str]) -> str | None:
    return ",".join(sorted(keys)) or None


def verdict_patch(
    profile: str,
    annotations: Mapping[str, str],
    verdict: Verdict,
    record: NodeRecord,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """Set the profile's label and result record on a node, and list the label as owned.

    The owned-labels list is one string shared by all profiles; when it changes, the patch carries
    the node's resourceVersion so that two writers never lose each other's entry (409, then retry).
    """
    key = label_key(profile)
    owned = owned_labels(annotations)
    meta: dict[str, Any] = {
        "labels": {key: verdict},
        "annotations": {
            result_annotation_key(profile): record.to_annotation(),
        },
    }
    if key not in owned:
        meta["annotations"][OWNED_LABELS_ANNOTATION] = _owned_value(owned | {key})
        if resource_version:
            meta["resourceVersion"] = resource_version
    return {"metadata": meta}


def removal_patch(
    profile: str | Iterable[str],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    resource_version: str | None = None,
) -> dict[str, Any] | None:
    """Remove the profiles' labels (only those torchproof owns) and records; None if nothing to do."""
    profiles = [profile] if isinstance(profile, str) else sorted(profile)
    owned = owned_labels(annotations)
    mine = owned & {label_key(p) for p in profiles}
    meta: dict[str, Any] = {"labels": {}, "annotations": {}}
    if mine:
        meta["labels"] = {key: None for key in sorted(mine) if key in labels}
        meta["annotations"][OWNED_LABELS_ANNOTATION] = _owned_value(owned - mine)
        if resource_version:
            meta["resourceVersion"] = resource_version
    for p in profiles:
        if result_annotation_key(p) in annotations:
            meta["annotations"][result_annotation_key(p)] = None
    if not meta["labels"] and not meta["annotations"]:
        return None
    return {"metadata": meta}


def profiles_on(annotations: Mapping[str, str]) -> frozenset[str]:
    """Every profile that left a mark on a node: an owned label or a result record."""
    prefix = f"{DOMAIN}/"
    owned = {key[len(prefix):] for key in owned_labels(annotations) if key.startswith(prefix)}
    records = {key[len(RESULT_ANNOTATION_PREFIX):] for key in annotations if key.startswith(RESULT_ANNOTATION_PREFIX)}
    return frozenset(owned | records)
