"""End to end: the embedded cluster calls the real webhook server (torchproof.webhook) over HTTPS, as the
API server calls a MutatingWebhookConfiguration, and the webhook reads the profiles as the ServiceAccount
of deploy/webhook."""

from __future__ import annotations

import base64
import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
import yaml
from torchproof.kube import KubeApi, load_configuration
from torchproof.mutation import OPT_IN_LABEL, OPT_IN_VALUE, STEERED_ANNOTATION
from torchproof.webhook import PATH, Profiles, application, tls_context
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.simulate import CRD_PATH, PROFILES
from torchproof_sim.tls import loopback_certificate
from torchproof_sim.webhooks import KEY as WEBHOOKS

from tests.support.polling import eventually
from tests.support.rig import PROFILE, assert_nothing_denied

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK = ROOT / "deploy" / "webhook"
IMAGE = PROFILE["spec"]["image"]
CERT = loopback_certificate()
pytestmark = pytest.mark.skipif(CERT is None, reason="openssl makes the webhook's certificate")


@contextlib.asynccontextmanager
async def webhook_server(cluster: EmbeddedCluster) -> AsyncIterator[tuple[str, Profiles]]:
    """The webhook as deploy/webhook runs it: its ServiceAccount and RBAC, TLS with its certificate."""
    assert CERT is not None
    for name in ("serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml"):
        await cluster.apply_yaml(WEBHOOK / name)
    token = cluster.service_account_token("torchproof", "torchproof-webhook")
    api = KubeApi(load_configuration(server=cluster.url, token=token))
    profiles = Profiles(api.list_profiles, refresh=0.1, close=api.close)
    runner = aiohttp.web.AppRunner(application(profiles))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_context(str(CERT.cert), str(CERT.key)))
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}{PATH}", profiles
    finally:
        await runner.cleanup()


def configuration(url: str, **hook: Any) -> dict[str, Any]:
    """deploy/webhook's configuration, reaching the server by URL (the test's server is on loopback), with the
    CA bundle cert-manager's injector would write."""
    assert CERT is not None
    body: dict[str, Any] = yaml.safe_load((WEBHOOK / "mutatingwebhookconfiguration.yaml").read_text())
    body["metadata"].pop("annotations")
    (entry,) = body["webhooks"]
    entry["clientConfig"] = {"url": url, "caBundle": base64.b64encode(CERT.cert.read_bytes()).decode()}
    entry.update(hook)
    return body


async def create_pod(cluster: EmbeddedCluster, namespace: str, name: str, image: str = IMAGE,
                     **spec: Any) -> tuple[int, dict[str, Any]]:
    """A pod created over HTTP by the admin, as kubectl creates it."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "main", "image": image}], **spec}}
    headers = {"Authorization": f"Bearer {cluster.admin_token}"}
    async with (aiohttp.ClientSession(headers=headers) as session,
                session.post(f"{cluster.url}/api/v1/namespaces/{namespace}/pods", json=pod) as reply):
        return reply.status, await reply.json()


def required(pod: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = (pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}
    terms = (affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    return [e for term in terms for e in term.get("matchExpressions") or []]


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(crd_paths=[CRD_PATH]) as cluster:
        await cluster.emulator.create_object("v1/namespaces", {"metadata": {
            "name": "ml", "labels": {OPT_IN_LABEL: OPT_IN_VALUE}}})
        await cluster.emulator.create_object("v1/namespaces", {"metadata": {"name": "web"}})
        await cluster.emulator.create_object(PROFILES, copy.deepcopy(PROFILE))
        yield cluster
        assert_nothing_denied(cluster)


async def test_pods_of_the_profiles_image_in_an_opted_in_namespace_are_steered_to_passed_nodes(
    cluster: EmbeddedCluster,
) -> None:
    async with webhook_server(cluster) as (url, profiles):
        await eventually(profiles.ready.is_set, "the webhook to list the profiles", 10)
        await cluster.emulator.create_object(WEBHOOKS, configuration(url))
        code, pod = await create_pod(cluster, "ml", "train")
        assert code == 201, pod
        key = f"torchproof.dev/{PROFILE['metadata']['name']}"
        assert required(pod) == [{"key": key, "operator": "In", "values": ["passed"]}]
        assert pod["metadata"]["annotations"][STEERED_ANNOTATION] == PROFILE["metadata"]["name"]
        stored = cluster.emulator.get_object("v1/pods", "ml", "train")
        assert stored is not None and required(stored) == required(pod)
        code, pod = await create_pod(cluster, "web", "train")
        assert code == 201 and required(pod) == [], "a namespace that did not opt in is not called"
        code, pod = await create_pod(cluster, "ml", "other", image="busybox")
        assert code == 201 and required(pod) == []
        code, pod = await create_pod(cluster, "ml", "chosen", nodeSelector={key: "failed"})
        assert code == 201 and required(pod) == [] and pod["spec"]["nodeSelector"] == {key: "failed"}
        calls = cluster.emulator.webhooks.calls
        assert calls == ["steering.torchproof.dev: patched", "steering.torchproof.dev: allowed",
                         "steering.torchproof.dev: allowed"]


async def test_the_webhook_fails_open_when_it_is_down(cluster: EmbeddedCluster) -> None:
    async with webhook_server(cluster) as (url, _):
        pass  # stopped: nothing answers at its address any more
    await cluster.emulator.create_object(WEBHOOKS, configuration(url))
    code, pod = await create_pod(cluster, "ml", "train")
    assert code == 201 and required(pod) == []
    assert cluster.emulator.webhooks.calls[0].startswith("steering.torchproof.dev: failed")


async def test_a_new_profile_steers_once_the_webhook_lists_it(cluster: EmbeddedCluster) -> None:
    other = copy.deepcopy(PROFILE)
    other["metadata"]["name"] = "pytorch-24.01"
    other["spec"].update(release="24.01", image="nvcr.io/nvidia/pytorch:24.01-py3")
    async with webhook_server(cluster) as (url, profiles):
        await cluster.emulator.create_object(WEBHOOKS, configuration(url))
        await eventually(profiles.ready.is_set, "the webhook to list the profiles", 10)
        await cluster.emulator.create_object(PROFILES, other)
        await eventually(lambda: any(t.profile == "pytorch-24.01" for t in profiles.targets), "the new profile", 10)
        code, pod = await create_pod(cluster, "ml", "train", image="nvcr.io/nvidia/pytorch:24.01-py3")
        assert code == 201 and required(pod)[0]["key"] == "torchproof.dev/pytorch-24.01"
