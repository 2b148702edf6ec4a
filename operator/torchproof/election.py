"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does it, over the
API adapter (docs/architecture.md, "High availability").

A replica that holds the Lease renews it every `retry_period`; one that cannot renew it within
`renew_deadline`, or finds another holder in it, has lost it and must stop acting at once. A standby takes
the Lease when the holder's record has not changed for `leaseDurationSeconds`, timed on the standby's own
clock from when it saw that record (so clock skew between nodes does not matter), or at once when the
holder released it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from torchproof.kube import KubeApi, KubeError

log = logging.getLogger("torchproof.election")
JITTER = 1.2  # a standby retries after retry_period times a factor in [1, JITTER), as client-go's does


@dataclass(frozen=True)
class Timings:
    """client-go's defaults: a 15 s lease, a 10 s renew deadline, a try every 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problem(self) -> str | None:
        """Why these timings cannot work, or None: the holder must give up before a standby may take over."""
        if not self.retry_period > 0:
            return f"the retry period must be positive, not {self.retry_period}"
        if not self.renew_deadline > self.retry_period:
            return (f"the renew deadline ({self.renew_deadline}s) must be longer than the retry period "
                    f"({self.retry_period}s)")
        if not self.lease_duration > self.renew_deadline:
            return (f"the lease duration ({self.lease_duration}s) must be longer than the renew deadline "
                    f"({self.renew_deadline}s)")
        return None

    @property
    def takeover_seconds(self) -> float:
        """The longest a standby waits after the leader dies without releasing: the lease runs out, plus one
        jittered retry."""
        return math.ceil(self.lease_duration) + self.retry_period * JITTER


def _now() -> str:
    """A MicroTime, as the API server writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """One replica's side of the election; `acquire`, then `hold` until lost, and `release` on the way out."""

    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, timings: Timings = Timings(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.timings, self.clock = timings, clock
        self._lease: dict[str, Any] | None = None  # as last read or written
        self._observed: Mapping[str, Any] | None = None  # the lease's spec when it last changed, and when
        self._observed_at = 0.0
        self.leading = False

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        if spec != self._observed:
            self._observed, self._observed_at = spec, self.clock()
        self._lease = lease

    @property
    def holder(self) -> str:
        return str((self._observed or {}).get("holderIdentity") or "")

    def _record(self, previous: Mapping[str, Any]) -> dict[str, Any]:
        now = _now()
        ours = previous.get("holderIdentity") == self.identity
        transitions = int(previous.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.timings.lease_duration),
            "acquireTime": previous.get("acquireTime") if ours else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours or not previous else transitions + 1,
        }

    async def try_acquire_or_renew(self, timeout: float) -> bool:
        """One attempt, each request bounded by `timeout`; True when this replica holds the Lease now."""
        try:
            lease = await self.api.get_lease(self.namespace, self.name, timeout)
            if lease is None:
                created = await self.api.create_lease(self.namespace, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._record({}),
                }, timeout)
                if created is None:
                    return False
                self._observe(created)
                return True
            self._observe(lease)
            spec = lease.get("spec") or {}
            held_for = float(spec.get("leaseDurationSeconds") or 0)
            if self.holder not in ("", self.identity) and self._observed_at + held_for > self.clock():
                return False
            updated = await self.api.update_lease(self.namespace, {**lease, "spec": self._record(spec)}, timeout)
        except KubeError as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        if updated is None:
            return False
        self._observe(updated)
        return True

    async def acquire(self, stopped: asyncio.Event) -> bool:
        """Wait until this replica holds the Lease (True), or until `stopped` is set (False)."""
        while not stopped.is_set():
            if await self.try_acquire_or_renew(self.timings.retry_period):
                self.leading = True
                log.info("lease %s/%s: %s is the leader", self.namespace, self.name, self.identity)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), self.timings.retry_period * random.uniform(1.0, JITTER))
        return False

    async def hold(self) -> str:
        """Renew the Lease until it is lost; returns why. Every request is bounded by the time left before the
        renew deadline, so this returns by then, before any standby may take the Lease."""
        renewed = self.clock()
        while True:
            left = renewed + self.timings.renew_deadline - self.clock()
            await asyncio.sleep(max(0.0, min(self.timings.retry_period, left)))
            left = renewed + self.timings.renew_deadline - self.clock()
            if left > 0 and await self.try_acquire_or_renew(left):
                renewed = self.clock()
                continue
            if self.holder not in ("", self.identity):
                reason = f"{self.holder} holds the lease now"
                break
            if self.clock() - renewed >= self.timings.renew_deadline:
                reason = f"not renewed within the renew deadline ({self.timings.renew_deadline}s)"
                break
        self.leading = False
        log.error("lease %s/%s: lost: %s", self.namespace, self.name, reason)
        return reason

    async def release(self) -> None:
        """Give the Lease up (on a clean stop), so that a standby takes over at its next try rather than when the
        lease runs out. Only a Lease still ours, at the version last seen: otherwise it is not ours to give."""
        if not self.leading or self._lease is None:
            return
        self.leading = False
        spec = self._lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        released = {"leaseDurationSeconds": 1, "renewTime": _now(),
                    "leaseTransitions": spec.get("leaseTransitions") or 0}
        if spec.get("acquireTime"):
            released["acquireTime"] = spec["acquireTime"]
        try:
            done = await self.api.update_lease(self.namespace, {**self._lease, "spec": released},
                                               self.timings.retry_period)
        except KubeError as exc:
            log.warning("lease %s/%s: could not release: %s", self.namespace, self.name, exc)
            return
        if done is not None:
            log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)


@contextlib.asynccontextmanager
async def standby_health(port: int) -> AsyncIterator[None]:
    """Answer the liveness probe (`/healthz`) while this replica waits as a standby, on the port kopf's own
    endpoint takes once it leads: a standby is alive, and must not be restarted for not leading."""
    if not port:
        yield
        return

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="standby\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    try:
        yield
    finally:
        await runner.cleanup()
