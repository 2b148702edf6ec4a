"""The shared test support: `eventually` waits on a condition with a deadline, `converged` is one definition."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.polling import eventually
from tests.support.rig import converged, profile


async def test_eventually_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, {"phase": "Running"}])
    assert await eventually(lambda: next(calls), "a value", timeout=5, every=0) == {"phase": "Running"}


async def test_eventually_fails_at_its_deadline_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0\.1s waiting for the pod to run"):
        await eventually(lambda: False, "the pod to run", timeout=0.1)
    assert 0.1 <= time.monotonic() - started < 2


def _with_status(generation: int, observed: int, pending: int, waiting: int, ready: bool) -> dict[str, Any]:
    body = profile()
    body["metadata"]["generation"] = generation
    body["status"] = {"observedGeneration": observed, "counts": {"pending": pending, "waiting": waiting},
                      "conditions": [{"type": "Ready", "status": "True"}] if ready else []}
    return body


@pytest.mark.parametrize(("body", "expected"), [
    (_with_status(2, 2, 0, 0, True), True),
    (_with_status(2, 2, 3, 3, True), True),   # only nodes that wait on something outside the operator
    (_with_status(2, 1, 0, 0, True), False),  # an older generation's status
    (_with_status(2, 2, 1, 0, True), False),  # a node still to be validated
    (_with_status(2, 2, 0, 0, False), False),  # no Ready condition written yet
    (None, False),
])
def test_converged_is_settled_with_the_ready_condition(body: dict[str, Any] | None, expected: bool) -> None:
    assert converged(body) is expected
