"""The validation pod passes the published Pod schema, strict (a misspelt field is an error), as built by
default and with every fleet field set: the embedded cluster would take a misspelling silently."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from torchproof.podspec import build_pod
from torchproof.profile import parse_profile

ROOT = Path(__file__).resolve().parents[2]
PROFILE: dict[str, Any] = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
MINIMUM_KUBERNETES = "1.28.0"
FLEET = {
    "gpuResource": "nvidia.com/mig-1g.5gb", "runtimeClassName": "nvidia", "shmSize": "2Gi",
    "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": False},
    "priorityClassName": "gpu-validation",
    "resources": {"requests": {"cpu": "1", "ephemeral-storage": "5Gi"},
                  "limits": {"memory": "8Gi", "ephemeral-storage": "10Gi"}},
}


@pytest.mark.parametrize("validation", [{}, FLEET], ids=["defaults", "fleet fields"])
@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, kubernetes_validate.latest_version()])
def test_the_validation_pod_passes_the_published_schema(validation: dict[str, Any], version: str) -> None:
    body = copy.deepcopy(PROFILE)
    body["metadata"]["uid"] = "uid-1"
    body["spec"]["validation"].update(validation)
    pod = build_pod(parse_profile(body), node="gpu-1", fingerprint="fp", namespace="torchproof", configmap="cm")
    kubernetes_validate.validate(pod, version, strict=True)
