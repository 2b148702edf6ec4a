"""The PyTorchReleaseProfile CRD, generated from the typed models: `python -m torchproof.crdgen` (`make crd`).

The spec's schema is `torchproof.profile.Profile`'s; the status the operator writes is modelled here. The
generator writes `crds/pytorchreleaseprofiles.yaml` and its package-data copy; a test fails when either
differs from what it produces.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from torchproof.crdmodel import Items, Rule, Schema, prop, schema_of
from torchproof.profile import NAME_MAX_LENGTH, Profile

GROUP: Final = "torchproof.dev"
VERSION: Final = "v1alpha1"
CONDITION_TYPE: Final = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                         r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
HEADER: Final = """\
# PyTorchReleaseProfile: one NVIDIA PyTorch container release and how to prove it on each GPU node.
# Generated from operator/torchproof/profile.py by `make crd` (python -m torchproof.crdgen): edit the models,
# not this file. Field meanings and defaults: docs/profile.md.
"""


@dataclass(frozen=True, kw_only=True)
class Condition:
    type: str = prop(max_length=316, pattern=CONDITION_TYPE)
    status: str = prop(enum=("True", "False", "Unknown"))
    observed_generation: int | None = prop(None, fmt="int64", minimum=0)
    last_transition_time: str = prop(fmt="date-time")
    reason: str = prop(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = prop(max_length=32768)


@dataclass(frozen=True, kw_only=True)
class Counts:
    passed: int | None = prop(None, minimum=0)
    failed: int | None = prop(None, minimum=0)
    incompatible: int | None = prop(None, minimum=0)
    error: int | None = prop(None, minimum=0)
    pending: int | None = prop(None, minimum=0)
    running: int | None = prop(None, minimum=0)
    waiting: int | None = prop(None, minimum=0)
    skipped: int | None = prop(None, minimum=0)
    total: int | None = prop(None, minimum=0)


@dataclass(frozen=True, kw_only=True)
class FailingNode:
    node: str = prop(max_length=253)
    verdict: str = prop(enum=("failed", "incompatible", "error"))
    reasons: tuple[str, ...] | None = prop(None, max_items=8, list_type="atomic", items=Items(max_length=512))


@dataclass(frozen=True, kw_only=True)
class WaitingNode:
    node: str = prop(max_length=253)
    reason: str | None = prop(None, max_length=256)


@dataclass(frozen=True, kw_only=True)
class ImagePull:
    state: str | None = prop(None, max_length=32)
    image: str | None = prop(None, max_length=512)
    generation: int | None = prop(None, fmt="int64", minimum=0)
    spec_hash: str | None = prop(None, max_length=64)
    reason: str | None = prop(None, max_length=256)
    message: str | None = prop(None, max_length=1024)
    since: str | None = prop(None, fmt="date-time")


@dataclass(frozen=True, kw_only=True)
class Status:
    observed_generation: int | None = prop(None, fmt="int64", minimum=0)
    conditions: tuple[Condition, ...] | None = prop(None, max_items=16, list_type="map", map_keys=("type",))
    counts: Counts | None = prop(None)
    failing_nodes: tuple[FailingNode, ...] | None = prop(
        None, max_items=20, list_type="atomic", description="Up to 20 nodes that did not pass, with their reasons.")
    waiting_nodes: tuple[WaitingNode, ...] | None = prop(
        None, max_items=20, list_type="atomic", description="Up to 20 nodes whose probe cannot start yet, with why.")
    image_pull: ImagePull | None = prop(
        None, description="Set while the release image cannot be pulled; holds until the image or the validated "
                          "spec changes.")


# The name is the name part of the node label torchproof.dev/<name>, which allows 63 characters; the API
# server already holds it to a lowercase DNS subdomain.
NAME_RULE: Final = Rule(f"self.metadata.name.size() <= {NAME_MAX_LENGTH}",
                        f"metadata.name must be at most {NAME_MAX_LENGTH} characters (it becomes the label "
                        f"{GROUP}/<name>)")

PRINTER_COLUMNS: Final[tuple[dict[str, Any], ...]] = (
    {"name": "Release", "type": "string", "jsonPath": ".spec.release"},
    {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
    *({"name": name.capitalize(), "type": "integer", "jsonPath": f".status.counts.{name}"}
      for name in ("passed", "failed", "incompatible", "error", "pending")),
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


def open_api_schema() -> Schema:
    """The version's openAPIV3Schema: the object, with the spec and status from their models."""
    return {
        "type": "object",
        "required": ["spec"],
        "x-kubernetes-validations": [NAME_RULE.to_schema()],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": schema_of(Profile),
            "status": schema_of(Status),
        },
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"pytorchreleaseprofiles.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": "PyTorchReleaseProfile",
                "listKind": "PyTorchReleaseProfileList",
                "plural": "pytorchreleaseprofiles",
                "singular": "pytorchreleaseprofile",
                "shortNames": ["prp"],
                "categories": ["torchproof"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                "schema": {"openAPIV3Schema": open_api_schema()},
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Leaf schemas and lists of scalars on one line, as a hand-written CRD has them."""


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list) and not (isinstance(value, str) and len(value) > 60)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = bool(data) and all(_is_scalar(v) or (isinstance(v, list) and all(map(_is_scalar, v)))
                              for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=all(map(_is_scalar, data)))


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def crd_text() -> str:
    """The CRD as the committed files hold it."""
    return HEADER + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def targets(root: Path) -> tuple[Path, Path]:
    """The checkout's CRD and the copy the operator's wheel carries as package data."""
    return root / "crds" / "pytorchreleaseprofiles.yaml", root / "operator" / "torchproof" / "data" / \
        "pytorchreleaseprofiles.yaml"


def main(argv: list[str] | None = None) -> int:
    """Write both files under the checkout given (default: the current directory)."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path.cwd()
    text = crd_text()
    for path in targets(root):
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
