"""The embedded cluster calls mutating admission webhooks as the API server does: rules, selectors,
failurePolicy, timeoutSeconds, the CA bundle and the service's name in the certificate."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiohttp.web
import pytest
from torchproof_sim import EmbeddedCluster
from torchproof_sim.tls import loopback_certificate
from torchproof_sim.webhooks import KEY

CERT = loopback_certificate()
pytestmark = pytest.mark.skipif(CERT is None, reason="openssl makes the webhook's certificate")
Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
LABEL = {"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}


async def patching(review: dict[str, Any]) -> dict[str, Any]:
    return {"uid": review["request"]["uid"], "allowed": True, "patchType": "JSONPatch",
            "patch": base64.b64encode(json.dumps([LABEL]).encode()).decode()}


@contextlib.asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    assert CERT is not None
    seen: list[dict[str, Any]] = []

    async def handle(request: aiohttp.web.Request) -> aiohttp.web.Response:
        review = await request.json()
        seen.append(review)
        return aiohttp.web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                          "response": await answer(review)})

    app = aiohttp.web.Application()
    app.router.add_post("/mutate", handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=CERT.server_context())
    await site.start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


def hook(port: int, *, ca: bytes | None = None, **settings: Any) -> dict[str, Any]:
    assert CERT is not None
    bundle = base64.b64encode(ca if ca is not None else CERT.cert.read_bytes()).decode()
    entry = {"name": "test.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
             "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate", "caBundle": bundle}, **settings}
    return {"metadata": {"name": "test"}, "webhooks": [entry]}


async def create_pod(cluster: EmbeddedCluster, namespace: str = "testns",
                     labels: dict[str, str] | None = None, name: str = "p") -> tuple[int, dict[str, Any]]:
    pod = {"metadata": {"name": name, "labels": labels or {}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    headers = {"Authorization": f"Bearer {cluster.admin_token}"}
    async with (aiohttp.ClientSession(headers=headers) as session,
                session.post(f"{cluster.url}/api/v1/namespaces/{namespace}/pods", json=pod) as reply):
        return reply.status, await reply.json()


async def test_a_webhook_gets_an_admission_review_and_its_patch_is_stored(cluster: EmbeddedCluster) -> None:
    async with server(patching) as (port, seen):
        await cluster.emulator.create_object(KEY, hook(port))
        code, pod = await create_pod(cluster)
    assert code == 201 and pod["metadata"]["labels"] == {"mutated": "yes"}
    (review,) = seen
    request = review["request"]
    assert (review["apiVersion"], review["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert (request["operation"], request["namespace"], request["kind"]["kind"]) == ("CREATE", "testns", "Pod")
    assert request["userInfo"]["username"] and request["object"]["spec"]["containers"][0]["image"] == "busybox"


async def test_only_matching_rules_and_selectors_call_the_webhook(cluster: EmbeddedCluster) -> None:
    await cluster.emulator.create_object("v1/namespaces", {"metadata": {"name": "opted", "labels": {"steer": "on"}}})
    async with server(patching) as (port, seen):
        await cluster.emulator.create_object(KEY, hook(
            port, namespaceSelector={"matchLabels": {"steer": "on"}},
            objectSelector={"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]}))
        assert (await create_pod(cluster))[1]["metadata"].get("labels") in (None, {})
        assert (await create_pod(cluster, "opted", {"skip": "1"}))[1]["metadata"]["labels"] == {"skip": "1"}
        code, pod = await create_pod(cluster, "opted", name="q")
        assert code == 201 and pod["metadata"]["labels"] == {"mutated": "yes"}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cluster.admin_token}"}) as session:
            await session.post(f"{cluster.url}/api/v1/namespaces/opted/configmaps", json={"metadata": {"name": "c"}})
    assert len(seen) == 1


async def test_failure_policy_decides_when_the_webhook_is_unreachable(cluster: EmbeddedCluster) -> None:
    async with server(patching) as (port, _):
        pass
    await cluster.emulator.create_object(KEY, hook(port, failurePolicy="Fail"))
    code, status = await create_pod(cluster)
    assert code == 500 and 'failed calling webhook "test.example.com"' in status["message"]
    await cluster.emulator.patch_object(KEY, None, "test", {"webhooks": [
        {**hook(port)["webhooks"][0], "failurePolicy": "Ignore"}]})
    assert (await create_pod(cluster, name="q"))[0] == 201


async def test_a_slow_webhook_is_cut_off_at_its_timeout(cluster: EmbeddedCluster) -> None:
    async def slow(review: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(5)
        return await patching(review)

    async with server(slow) as (port, _):
        await cluster.emulator.create_object(KEY, hook(port, timeoutSeconds=1, failurePolicy="Ignore"))
        started = time.monotonic()
        code, pod = await create_pod(cluster)
        assert code == 201 and not pod["metadata"].get("labels")
        assert time.monotonic() - started < 4


async def test_a_certificate_the_ca_bundle_does_not_sign_is_refused(cluster: EmbeddedCluster) -> None:
    other = loopback_certificate.__wrapped__()  # a second self-signed certificate: another CA
    assert other is not None
    async with server(patching) as (port, seen):
        await cluster.emulator.create_object(KEY, hook(port, ca=other.cert.read_bytes()))
        code, status = await create_pod(cluster)
    assert code == 500 and "certificate" in status["message"].lower() and not seen


async def test_a_service_is_reached_by_its_name_in_the_certificate(cluster: EmbeddedCluster) -> None:
    async with server(patching) as (port, seen):
        body = hook(port)
        body["webhooks"][0]["clientConfig"] = {
            "service": {"namespace": "testns", "name": "hooks", "path": "/mutate"},
            "caBundle": body["webhooks"][0]["clientConfig"]["caBundle"]}
        cluster.emulator.webhooks.services["testns/hooks"] = f"127.0.0.1:{port}"
        await cluster.emulator.create_object(KEY, body)
        code, status = await create_pod(cluster)
    assert code == 500 and "hooks.testns.svc" in status["message"] and not seen, "the certificate names 127.0.0.1"


async def test_a_denial_refuses_the_write_with_its_status(cluster: EmbeddedCluster) -> None:
    async def deny(review: dict[str, Any]) -> dict[str, Any]:
        return {"uid": review["request"]["uid"], "allowed": False, "status": {"code": 403, "message": "no"}}

    async with server(deny) as (port, _):
        await cluster.emulator.create_object(KEY, hook(port))
        code, status = await create_pod(cluster)
    assert code == 403 and status["message"] == 'admission webhook "test.example.com" denied the request: no'
