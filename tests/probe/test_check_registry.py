"""The check registry is complete: every check has each part, and the probe and the simulator implement it.

Adding a check (docs/probe.md, "Adding a check") is one module in `torchproof.checks` and one function in
probe.py; these tests fail when either half, or a part of the module, is missing.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from torchproof.checks import BY_NAME, NAMES, REGISTRY, default_payloads
from torchproof.checks.base import Check, CheckOutcome, Observed, SimulatedPod, Throughput
from torchproof.checks.fields import UntrustedResult
from torchproof.podspec import build_plan
from torchproof.profile import Checks, parse_profile
from torchproof.result import STATUSES, parse_result
from torchproof.versions import ComputeCapability
from torchproof_sim.hardware import ProbeSetting, board, encode_result, parse_driver, probe_result
from torchproof_sim.images import lookup_image

PROFILE = yaml.safe_load((Path(__file__).resolve().parents[2] / "profiles" / "pytorch-24.10.yaml").read_text())
POD = SimulatedPod(device="cuda", failure=None, gpu_visible=True, visible=2,
                   compute_capability=ComputeCapability(8, 0), throughput=Throughput(18.7, 230.0, 135.0),
                   torch="2.5.0a0+e000cf0ad9", native_amp=True, apex=True, autocast=True, tf32=True)


@pytest.fixture(scope="module")
def observed() -> Observed:
    return Observed(parse_profile(PROFILE), (), 1, (2, 5))


def test_the_registry_names_each_check_once_in_run_order() -> None:
    assert NAMES == ("environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu", "sdpa",
                     "fp8", "nccl", "memory", "compile")
    assert len(set(NAMES)) == len(REGISTRY)
    assert all(BY_NAME[c.name] is c for c in REGISTRY)


@pytest.mark.parametrize("check", REGISTRY, ids=NAMES)
def test_every_check_has_each_part(check: Check[object], observed: Observed) -> None:
    module = importlib.import_module(type(check).__module__)
    assert module.__name__.startswith("torchproof.checks.") and module.CHECK is check
    assert module.__doc__, "a check module says what the check proves"
    settings = check.settings(Checks())
    assert isinstance(settings.enabled, bool)
    payload = check.payload(settings)
    assert json.loads(json.dumps(payload)) == payload
    assert all(callable(v) for v in check.schema.values())
    assert set(check.proof_fields(observed)) <= set(check.schema), "proof fields are fields of the schema"
    assert all(s.what == check.name or s.what.startswith(f"{check.name}.") for s in check.allowed_skips)
    assert all(s.why for s in check.allowed_skips)
    ok = CheckOutcome("ok", 1.0, None, None, {})
    assert isinstance(check.judge(settings, ok, observed), list)
    assert isinstance(check.evidence(settings, ok, observed, lambda what, why: None), list)
    assert isinstance(check.implausible(ok, ()), list)
    assert isinstance(check.findings(ok, observed), list)
    assert isinstance(check.summary(ok), dict)
    for pod in (POD, SimulatedPod(**{**POD.__dict__, "device": "cpu"})):
        outcome = check.simulate(pod, payload)
        assert outcome["status"] in STATUSES
        assert check.simulated_seconds > 0 or outcome["status"] != "ok"


# A profile cannot disable gpu or cuda: there would be nothing to validate.
@pytest.mark.parametrize("check", [c for c in REGISTRY if c.name not in ("gpu", "cuda")], ids=lambda c: c.name)
def test_a_check_disabled_in_the_profile_leaves_the_plan(check: Check[object]) -> None:
    spec = {**PROFILE["spec"], "checks": {check.name: {"enabled": False}}}
    planned = build_plan(parse_profile({**PROFILE, "spec": spec}))["checks"]
    assert check.name not in planned and set(planned) == set(NAMES) - {check.name}


def test_the_probe_implements_every_registered_check(probe_module: ModuleType) -> None:
    assert list(probe_module.CHECKS) == list(NAMES)
    assert list(probe_module.DEFAULT_CHECKS) == list(NAMES)
    for name, payload in default_payloads().items():
        assert set(payload) <= set(probe_module.DEFAULT_CHECKS[name]), f"{name}: the probe reads every planned field"
        assert {k: probe_module.DEFAULT_CHECKS[name][k] for k in payload} == payload, f"{name}: same defaults"


def test_the_simulated_outcome_of_every_check_meets_its_schema() -> None:
    """On a board with every feature a check needs (FP8 from compute capability 8.9), each one runs."""
    setting = ProbeSetting(image=lookup_image("nvcr.io/nvidia/pytorch:24.10-py3"), board=board("NVIDIA H100 80GB HBM3"),
                           visible=2, driver=parse_driver("570.86.10"), node="n1")
    for device in ("cuda", "cpu"):
        plan = {**build_plan(parse_profile(PROFILE)), "device": device}
        result = parse_result(encode_result(probe_result(setting, plan)))
        assert tuple(result.checks) == NAMES
        allowed = ("ok",) if device == "cuda" else ("ok", "skipped")
        assert all(c.status in allowed for c in result.checks.values()), result.checks


@pytest.mark.parametrize("check", [c for c in REGISTRY if c.schema], ids=lambda c: c.name)
def test_each_schema_rejects_a_wrong_type(check: Check[object]) -> None:
    field = next(iter(check.schema))
    doc = json.loads(encode_result(probe_result(
        ProbeSetting(image=lookup_image("nvcr.io/nvidia/pytorch:24.10-py3"), board=board("A100-SXM4-40GB"),
                     visible=2, driver=parse_driver("570.86.10"), node="n1"),
        build_plan(parse_profile(PROFILE)))))
    doc["checks"][check.name][field] = [1]
    with pytest.raises(UntrustedResult, match=f"result.checks.{check.name}.{field}"):
        parse_result(json.dumps(doc))
