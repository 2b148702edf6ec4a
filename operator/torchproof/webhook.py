"""The mutating admission webhook's server: AdmissionReview in, `mutation.review` out, over HTTPS.

Its own small aiohttp server rather than kopf's `@kopf.on.mutate`: it runs as its own Deployment (two
replicas, no leader election) so that admission does not wait on the operator's leader or restart with
it; it needs only the profiles' names and images, which it lists every `refresh` seconds; and its
certificate is the one cert-manager (or the bootstrap in docs/steering.md) mounts, not one kopf makes.
Until the first list succeeds it steers nothing and says not ready; if a later list fails it keeps the
last one. The API server calls it with `failurePolicy: Ignore`, so a webhook down only means pods are
not steered (docs/steering.md, failure modes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.web

from torchproof import mutation

log = logging.getLogger("torchproof.webhook")
REFRESH_SECONDS = 10.0
PATH = "/mutate"


class Profiles:
    """The profiles' targets, listed again every `refresh` seconds."""

    def __init__(self, list_profiles: Callable[[], Awaitable[list[dict[str, Any]]]],
                 refresh: float = REFRESH_SECONDS, close: Callable[[], Awaitable[None]] | None = None) -> None:
        """`close`: awaited when the server stops (the API adapter's session)."""
        self.list_profiles = list_profiles
        self.refresh = refresh
        self.close = close
        self.targets: tuple[mutation.Target, ...] = ()
        self.ready = asyncio.Event()

    async def update(self) -> None:
        try:
            self.targets = mutation.targets(await self.list_profiles())
        except Exception as exc:  # the API server away, a 403: keep steering by the last list
            log.warning("listing profiles failed: %s", exc)
            return
        self.ready.set()

    async def run(self) -> None:
        while True:
            await self.update()
            await asyncio.sleep(self.refresh)


def application(profiles: Profiles) -> aiohttp.web.Application:
    async def mutate(request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        answer = mutation.review(body, profiles.targets)
        steered = answer["response"].get("patch") is not None
        if steered:
            log.info("steering pod %s", ((body or {}).get("request") or {}).get("name") or "(generated name)")
        return aiohttp.web.json_response(answer)

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok")

    async def readyz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok" if profiles.ready.is_set() else "no profiles listed yet",
                                    status=200 if profiles.ready.is_set() else 503)

    async def refresher(_: aiohttp.web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(profiles.run(), name="torchproof-webhook-profiles")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if profiles.close is not None:
            await profiles.close()

    app = aiohttp.web.Application()
    app.router.add_post(PATH, mutate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(refresher)
    return app


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def serve(profiles: Profiles, host: str, port: int, cert: str | None, key: str | None) -> None:
    """Serve until interrupted; without a certificate, plain HTTP (behind a TLS-terminating proxy only)."""
    context = tls_context(cert, key) if cert and key else None
    aiohttp.web.run_app(application(profiles), host=host, port=port, ssl_context=context, print=None,
                        access_log=None)
