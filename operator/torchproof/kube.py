"""Every Kubernetes API call torchproof makes, over the official (synchronous) client.

Calls run in a bounded thread pool so the kopf event loop never blocks, and responses are not
deserialised into client models (`_preload_content=False`): torchproof reads nothing back from its
writes, and model parsing would dominate the cost on large fleets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import kopf
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from torchproof.plan import EventSpec

GROUP = "torchproof.dev"
VERSION = "v1alpha1"
PLURAL = "pytorchreleaseprofiles"
MERGE_PATCH = "application/merge-patch+json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    verb: str
    status: int
    message: str

    def __str__(self) -> str:
        return f"{self.verb} failed ({self.status}): {self.message}"


def load_api_client(kubeconfig: str | None = None, server: str | None = None,
                    token: str | None = None) -> client.ApiClient:
    """An ApiClient for a given server URL (with a bearer token), a kubeconfig, or the in-cluster service
    account."""
    if server is not None:
        configuration = client.Configuration()
        configuration.host = server
        if token is not None:
            configuration.api_key = {"authorization": token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
    else:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the API adapter's Configuration (server, TLS files, bearer token): kopf's
    watches and the adapter's calls are one identity."""
    header = (configuration.get_api_key_with_prefix("BearerToken")
              or configuration.get_api_key_with_prefix("authorization") or "")
    scheme, _, token = header.rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class KubeApi:
    """The API adapter: small async methods, each one call, errors as `KubeError`."""

    def __init__(self, api_client: client.ApiClient, *, workers: int = 16) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="torchproof-api")
        self.writes: dict[str, int] = {}
        self.on_request: Callable[[str, int | None], None] | None = None  # (verb, status or None when answered)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.disconnect()

    def disconnect(self) -> None:
        """Close the kept-alive connections (a later call opens a new one): an open connection keeps a
        task alive on an in-process server, which kopf would wait on at exit."""
        self.core.api_client.rest_client.close()

    async def _call(self, verb: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        request = loop.run_in_executor(self._pool, partial(_read, fn, *args, **kwargs))
        code: int | None = None
        answered = True  # unknown when cancelled: then the request is not counted
        try:
            return await asyncio.shield(request)
        except asyncio.CancelledError:
            # The thread cannot be stopped: wait for the request to end, so that a cancelled pass (a daemon
            # stopped for a deleted profile) has nothing still in flight that could land after its cleanup.
            answered = False
            with contextlib.suppress(Exception):
                await request
            raise
        except ApiException as exc:
            code = exc.status or 0
            raise KubeError(verb, code, _api_message(exc)) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # not reached: refused, reset, timed out, retries spent
            code = 0
            raise KubeError(verb, 0, str(exc)[:300]) from None
        finally:
            if verb.split()[0] in ("create", "patch", "delete"):
                self.writes[verb] = self.writes.get(verb, 0) + 1
            if self.on_request is not None and answered:
                self.on_request(verb, code)

    async def create_pod(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        """Create a pod; False when one of that name exists already (a restart, a late watch event)."""
        try:
            await self._call("create pod", self.core.create_namespaced_pod, namespace, dict(manifest))
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def delete_pod(self, namespace: str, name: str) -> None:
        try:
            await self._call("delete pod", self.core.delete_namespaced_pod, name, namespace)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> None:
        await self._call("patch node", self.core.patch_node, name, dict(patch), _content_type=MERGE_PATCH)

    async def patch_profile_status(self, name: str, status: Mapping[str, Any]) -> None:
        await self._call(
            "patch profile/status", self.custom.patch_cluster_custom_object_status,
            GROUP, VERSION, PLURAL, name, {"status": dict(status)}, _content_type=MERGE_PATCH,
        )

    async def patch_profile(self, name: str, patch: Mapping[str, Any]) -> None:
        await self._call("patch profile", self.custom.patch_cluster_custom_object, GROUP, VERSION, PLURAL, name,
                         dict(patch), _content_type=MERGE_PATCH)

    async def ensure_configmap(self, manifest: Mapping[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        try:
            await self._call("create configmap", self.core.create_namespaced_config_map, namespace, dict(manifest))
        except KubeError as exc:
            if exc.status != 409:
                raise

    async def list_configmaps(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return _items(await self._call(
            "list configmaps", self.core.list_namespaced_config_map, namespace, label_selector=label_selector
        ))

    async def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            await self._call("delete configmap", self.core.delete_namespaced_config_map, name, namespace)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        response = await self._call(
            "list pods", self.core.list_namespaced_pod, namespace, label_selector=label_selector
        )
        return _items(response)

    async def list_nodes(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        return _items(await self._call("list nodes", self.core.list_node, **kwargs))

    async def list_profiles(self) -> list[dict[str, Any]]:
        return _items(await self._call("list profiles", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL))

    async def list_profile_names(self) -> set[str]:
        return {str((item.get("metadata") or {}).get("name")) for item in await self.list_profiles()}

    async def get_lease(self, namespace: str, name: str, timeout: float) -> dict[str, Any] | None:
        """The Lease, or None when there is none; `timeout` bounds the request (the elector's deadlines)."""
        return await self._lease("get lease", 404, timeout, self.coordination.read_namespaced_lease, name, namespace)

    async def create_lease(self, namespace: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
        """Create the Lease; None when another replica created it first (409)."""
        return await self._lease("create lease", 409, timeout, self.coordination.create_namespaced_lease,
                                 namespace, dict(body))

    async def update_lease(self, namespace: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
        """Replace the Lease at the resourceVersion `body` carries; None when it changed since (409)."""
        return await self._lease("update lease", 409, timeout, self.coordination.replace_namespaced_lease,
                                 body["metadata"]["name"], namespace, dict(body))

    async def _lease(self, verb: str, none_on: int, timeout: float, fn: Callable[..., Any], *args: Any
                     ) -> dict[str, Any] | None:
        """One Lease call, bounded by `timeout`; None when the server answers `none_on` (absent, or lost a race)."""
        try:
            response = await self._call(verb, fn, *args, _request_timeout=timeout)
        except KubeError as exc:
            if exc.status == none_on:
                return None
            raise
        lease: dict[str, Any] = json.loads(response.data)
        return lease

    async def post_event(self, namespace: str, profile: Mapping[str, Any], event: EventSpec) -> None:
        """An Event about a (cluster-scoped) profile, in the operator's own namespace: a namespaced Role
        suffices, and `kubectl describe` finds a cluster-scoped object's events in every namespace."""
        meta = profile.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'profile')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "PyTorchReleaseProfile",
                "name": meta.get("name"),
                "uid": meta.get("uid"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
            "source": {"component": "torchproof"},
            "reportingComponent": "torchproof.dev/operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call("create event", self.core.create_namespaced_event, namespace, body)


def _read(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call, read the raw body and hand the connection back to the pool: an unread response keeps its
    connection, so each call would open (and later close) a new one."""
    response = fn(*args, _preload_content=False, **kwargs)
    _ = response.data
    response.release_conn()
    return response


def _items(response: Any) -> list[dict[str, Any]]:
    """Items of a list call made with `_preload_content=False` (a raw urllib3 response)."""
    items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
    return items


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)[:300]
    except ValueError:
        return str(exc.reason)[:300]
