"""The check registry: every check the probe runs, in the order it runs them (see docs/probe.md).

The plan builder, the result parser, the verdict, the local table and the simulator iterate `REGISTRY`;
none of them names a check. Adding a check is one module here, one function in the probe, their tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchproof.checks import (
    amp,
    channels_last,
    compile,
    conv3d,
    cuda,
    environment,
    fp8,
    gpu,
    memory,
    multi_gpu,
    nccl,
    sdpa,
    tensor_cores,
)
from torchproof.checks.base import Check
from torchproof.profile import Checks

REGISTRY: tuple[Check[Any], ...] = (
    environment.CHECK, gpu.CHECK, cuda.CHECK, amp.CHECK, tensor_cores.CHECK, channels_last.CHECK,
    conv3d.CHECK, multi_gpu.CHECK, sdpa.CHECK, fp8.CHECK, nccl.CHECK, memory.CHECK, compile.CHECK,
)
BY_NAME: Mapping[str, Check[Any]] = {check.name: check for check in REGISTRY}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def default_payloads() -> dict[str, dict[str, Any]]:
    """Every check with the profile's default settings: what a plan without a profile asks for."""
    defaults = Checks()
    return {check.name: check.payload(check.settings(defaults)) for check in REGISTRY}
