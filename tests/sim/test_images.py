"""The simulated registry takes its facts from NVIDIA, not from the profiles under test, so that a simulation
catches a profile's mistake instead of sharing it."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from torchproof.compat import Hardware, evaluate
from torchproof.profile import parse_profile
from torchproof.versions import DriverVersion
from torchproof_sim.hardware import board
from torchproof_sim.images import driver_runs, lookup_image

ROOT = Path(__file__).resolve().parents[2]
BODY = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())


def test_a_profile_that_admits_any_r418_driver_is_caught_by_the_simulated_image() -> None:
    loose = copy.deepcopy(BODY)
    loose["spec"]["requirements"]["driver"]["datacenterBranches"][0]["minimum"] = "418.0"  # the old mistake
    early_r418 = Hardware(product="Tesla T4", driver="418.39")
    assert evaluate(parse_profile(loose).requirements, early_r418).verdict == "compatible"
    image = lookup_image(BODY["spec"]["image"])
    assert image is not None
    t4 = board("Tesla T4")
    # The loose profile would send a probe; in the simulated image CUDA does not start on that driver, so
    # the node comes out failed (CudaUnavailable), not passed — and the fixed profile rules it out first.
    assert not driver_runs(image, DriverVersion.parse("418.39"), datacenter=t4.datacenter)
    assert driver_runs(image, DriverVersion.parse("418.40.04"), datacenter=t4.datacenter)
    assert evaluate(parse_profile(BODY).requirements, early_r418).verdict == "incompatible"
