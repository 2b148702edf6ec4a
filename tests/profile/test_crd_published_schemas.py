"""The CRD against Kubernetes' published OpenAPI schemas (kubernetes-validate, offline).

README states Kubernetes 1.28 as the minimum: `x-kubernetes-validations[].fieldPath` first appears in
1.28's CustomResourceDefinition schema, and 1.27's refuses it. The profiles are custom resources, which
kubernetes-validate has no schema for; the embedded cluster admits them through this CRD instead
(tests/sim/test_crd_admission.py::test_every_shipped_profile_is_admitted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD: dict[str, Any] = yaml.safe_load((ROOT / "crds" / "pytorchreleaseprofiles.yaml").read_text())
MINIMUM = "1.28"


@pytest.mark.parametrize("version", [MINIMUM, kubernetes_validate.latest_version()])
def test_the_crd_validates_strictly_from_the_minimum_version_on(version: str) -> None:
    kubernetes_validate.validate(CRD, version, strict=True)


def test_the_version_before_the_minimum_refuses_the_crd_for_fieldpath() -> None:
    with pytest.raises(kubernetes_validate.ValidationError, match="fieldPath"):
        kubernetes_validate.validate(CRD, "1.27", strict=True)


def test_the_shipped_profiles_have_no_published_schema_to_check_offline() -> None:
    profile = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(profile, MINIMUM, strict=True)
