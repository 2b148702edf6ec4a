"""Waiting on a condition in a test: poll it until it holds, fail with what was awaited at the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(condition: Callable[[], T], what: str = "the condition", timeout: float = 20.0,
                     *, every: float = 0.02) -> T:
    """Poll `condition()` every `every` seconds until it is truthy and return its value; `AssertionError`
    naming `what` once `timeout` seconds have passed, so a test waits on a condition, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)
    return value
