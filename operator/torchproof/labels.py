"""Names torchproof writes on nodes, and the patches that write them.

A profile owns its label `torchproof.dev/<profile>` on a node while its own record annotation
`result.torchproof.dev/<profile>` is there: the label and the record are written and removed together,
so a stale label is removed and a label torchproof did not set is never touched. Each profile writes only
its own keys, so plain JSON merge patches (computed here, apart from the API) from different profiles
never conflict and need no resourceVersion.

Earlier releases listed the owned labels in one annotation shared by all profiles
(`torchproof.dev/owned-labels`, as Node Feature Discovery does with one writer). A label listed there
stays owned; nothing adds to the list any more, and the patches below drop it whole once every label it
lists is gone or owned through its profile's record, so no entry is ever lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torchproof.contract import VERDICTS as VERDICTS  # the label's values, written once in the contract
from torchproof.contract import NodeRecord
from torchproof.contract import Verdict as Verdict

DOMAIN = "torchproof.dev"
LEGACY_OWNED_ANNOTATION = f"{DOMAIN}/owned-labels"  # read, and removed once nothing needs it
REVALIDATE_ANNOTATION = f"{DOMAIN}/revalidate"
RESULT_ANNOTATION_PREFIX = f"result.{DOMAIN}/"
PROFILE_LABEL = f"{DOMAIN}/profile"
NODE_ANNOTATION = f"{DOMAIN}/node"
SPEC_ANNOTATION = f"{DOMAIN}/validates"
MANAGED_BY = "torchproof"

def label_key(profile: str) -> str:
    return f"{DOMAIN}/{profile}"


def result_annotation_key(profile: str) -> str:
    return f"{RESULT_ANNOTATION_PREFIX}{profile}"


def legacy_owned(annotations: Mapping[str, str]) -> frozenset[str]:
    """The labels the legacy owned-labels annotation lists."""
    raw = annotations.get(LEGACY_OWNED_ANNOTATION, "")
    return frozenset(part for part in raw.split(",") if part)


def owns(profile: str, annotations: Mapping[str, str]) -> bool:
    """Whether torchproof set the profile's label: its record is there, or the legacy list names it."""
    return result_annotation_key(profile) in annotations or label_key(profile) in legacy_owned(annotations)


def legacy_needed(labels: Mapping[str, str], annotations: Mapping[str, str]) -> bool:
    """Whether the legacy list still holds the only claim on a label: one present on the node whose
    profile has no record there."""
    prefix = f"{DOMAIN}/"
    for key in legacy_owned(annotations):
        if key not in labels:
            continue
        profile = key[len(prefix):] if key.startswith(prefix) else None
        if profile is None or result_annotation_key(profile) not in annotations:
            return True
    return False


def _merged(base: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    out = {k: v for k, v in base.items() if patch.get(k, v) is not None}
    out.update({k: v for k, v in patch.items() if v is not None})
    return out


def _migrate(meta: dict[str, Any], labels: Mapping[str, str], annotations: Mapping[str, str]) -> None:
    """Add the legacy list's removal to a patch when, with the patch applied, nothing needs the list."""
    if LEGACY_OWNED_ANNOTATION not in annotations:
        return
    if not legacy_needed(_merged(labels, meta["labels"]), _merged(annotations, meta["annotations"])):
        meta["annotations"][LEGACY_OWNED_ANNOTATION] = None


def verdict_patch(
    profile: str, labels: Mapping[str, str], annotations: Mapping[str, str], verdict: Verdict, record: NodeRecord,
) -> dict[str, Any]:
    """Set the profile's label and its record on a node (the record is what marks the label as owned)."""
    meta: dict[str, Any] = {
        "labels": {label_key(profile): verdict},
        "annotations": {result_annotation_key(profile): record.to_annotation()},
    }
    _migrate(meta, labels, annotations)
    return {"metadata": meta}


def removal_patch(
    profile: str | Iterable[str], labels: Mapping[str, str], annotations: Mapping[str, str],
) -> dict[str, Any] | None:
    """Remove the profiles' labels (only those torchproof owns) and records; None if nothing to do."""
    profiles = [profile] if isinstance(profile, str) else sorted(profile)
    meta: dict[str, Any] = {"labels": {}, "annotations": {}}
    for p in profiles:
        if owns(p, annotations) and label_key(p) in labels:
            meta["labels"][label_key(p)] = None
        if result_annotation_key(p) in annotations:
            meta["annotations"][result_annotation_key(p)] = None
    _migrate(meta, labels, annotations)
    if not meta["labels"] and not meta["annotations"]:
        return None
    return {"metadata": meta}


def migration_patch(labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, Any] | None:
    """Drop the legacy list from a node no patch of this pass touches, once nothing needs it; else None."""
    meta: dict[str, Any] = {"labels": {}, "annotations": {}}
    _migrate(meta, labels, annotations)
    return {"metadata": {"annotations": meta["annotations"]}} if meta["annotations"] else None


def profiles_on(annotations: Mapping[str, str]) -> frozenset[str]:
    """Every profile that left a mark on a node: a record, or a label the legacy list names."""
    prefix = f"{DOMAIN}/"
    owned = {key[len(prefix):] for key in legacy_owned(annotations) if key.startswith(prefix)}
    records = {key[len(RESULT_ANNOTATION_PREFIX):] for key in annotations if key.startswith(RESULT_ANNOTATION_PREFIX)}
    return frozenset(owned | records)
