"""Every Kubernetes API call torchproof makes — writes, fresh reads, lists and watches — over one aiohttp session.

One adapter owns the wire: one error type (`KubeError`), one metric family (requests by verb, resource and
code; failures by verb and code), `Retry-After` honoured on 429, and the credentials of one `Configuration`
(the kubernetes package's loader: in-cluster, kubeconfig, or a server and token), which kopf's login reads
too. Bodies are raw JSON, never client models: torchproof keeps compact views, and on a 5,000-node fleet
model parsing (and the generated clients' per-call validation) would dominate the cost. Why aiohttp and not
`kubernetes.aio` or the sync client in threads: docs/performance.md, "API client".
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import kopf
import orjson
from kubernetes import client, config

from torchproof.plantypes import EventSpec

if TYPE_CHECKING:
    from torchproof.metrics import Metrics

GROUP = "torchproof.dev"
VERSION = "v1alpha1"
PLURAL = "pytorchreleaseprofiles"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PROFILES = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
UNAUTHORIZED = 401
THROTTLED = 429
RETRY_AFTER_ATTEMPTS = 5  # a 429 is waited on this many times before the call fails
RETRY_AFTER_CAP_SECONDS = 30.0
CONNECT_SECONDS = 10.0
UNBOUNDED = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS)  # a call with no deadline of its own
CREDENTIALS_SECONDS = 60.0  # how long a read bearer token is used before the loader's refresh runs again

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached), `retry_after` the
    server's `Retry-After` in seconds when it gave one."""

    verb: str
    status: int
    message: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.verb} failed ({self.status}): {self.message}"


def load_configuration(kubeconfig: str | None = None, server: str | None = None,
                       token: str | None = None) -> client.Configuration:
    """Credentials for a given server URL (with a bearer token), a kubeconfig, or the in-cluster service account."""
    configuration = client.Configuration()
    if server is not None:
        configuration.host = server
        if token is not None:
            configuration.api_key = {"authorization": token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    return configuration


def _authorization(configuration: client.Configuration) -> str:
    """The bearer header; the loader's refresh hook (a rotated in-cluster token, an expiring kubeconfig token)
    runs here."""
    return str(configuration.get_api_key_with_prefix("BearerToken")
               or configuration.get_api_key_with_prefix("authorization") or "")


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the adapter's Configuration (server, TLS files, bearer token): kopf's watches and
    the adapter's calls are one identity."""
    scheme, _, token = _authorization(configuration).rpartition(" ")
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


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class KubeApi:
    """The API adapter: small async methods, each one call, errors as `KubeError`.

    The session is opened on first use in the running event loop (a command may run several loops one after
    another); `close()` ends it. `metrics`, when set, counts every request.
    """

    def __init__(self, configuration: client.Configuration, metrics: Metrics | None = None) -> None:
        self.configuration = configuration
        self.metrics = metrics
        self.writes: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._base = configuration.host.rstrip("/")
        self._proxy = configuration.proxy
        self._server_hostname = configuration.tls_server_name or None
        self._authorization = ""
        self._authorized_at = -CREDENTIALS_SECONDS

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its kept-alive connections (a later call opens a new one): an open connection
        keeps a task alive on an in-process server, which kopf would wait on at exit."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            auth = None
            if self.configuration.username and self.configuration.password:
                auth = aiohttp.BasicAuth(self.configuration.username, self.configuration.password)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, ssl=_ssl_context(self.configuration)),
                auth=auth, timeout=UNBOUNDED, cookie_jar=aiohttp.DummyCookieJar(),  # the API server sets none
                read_bufsize=2**21,  # one watch event can exceed aiohttp's default line buffer
            )
            self._loop = loop
        return self._session

    def _headers(self, content_type: str = JSON) -> dict[str, str]:
        """Headers with the bearer token, read again once a minute (as client-go re-reads a projected token): the
        kubeconfig loader's refresh hook rebuilds the whole Configuration, which cost 0.35 ms on every call."""
        now = asyncio.get_running_loop().time()
        if now - self._authorized_at >= CREDENTIALS_SECONDS:
            self._authorization, self._authorized_at = _authorization(self.configuration), now
        headers = {"Content-Type": content_type, "Accept": JSON}
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def _count(self, verb: str, code: int) -> None:
        if self.metrics is not None:
            action, _, resource = verb.partition(" ")
            self.metrics.api_requests.labels(action, resource, str(code)).inc()

    def _failed(self, exc: KubeError) -> KubeError:
        if self.metrics is not None:
            self.metrics.api_errors.labels(exc.verb, str(exc.status)).inc()
        return exc

    async def _call(self, verb: str, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None
                    = None, content_type: str = JSON, timeout: float | None = None,
                    expected: frozenset[int] = frozenset()) -> bytes | None:
        """One request; the body read, or None when the server answered a status in `expected` (absent, lost a
        race). A 429 is retried after its `Retry-After`, within `timeout` when one bounds the call. A write is
        not abandoned when its caller is cancelled: it completes first, so that nothing lands after a cleanup."""
        if method == "GET":
            return await self._send(verb, method, path, body, params, content_type, timeout, expected)
        self.writes[verb] = self.writes.get(verb, 0) + 1
        request = asyncio.ensure_future(self._send(verb, method, path, body, params, content_type, timeout, expected))
        try:
            return await asyncio.shield(request)
        except asyncio.CancelledError:
            await asyncio.wait([request])
            raise

    async def _send(self, verb: str, method: str, path: str, body: Any, params: Mapping[str, str] | None,
                    content_type: str, timeout: float | None, expected: frozenset[int]) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        data = None if body is None else orjson.dumps(body, default=_plain)
        for attempt in range(RETRY_AFTER_ATTEMPTS + 1):
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:  # aiohttp reads a zero timeout as none
                raise self._failed(KubeError(verb, 0, f"no time left of its {timeout}s"))
            bound = UNBOUNDED if left is None else aiohttp.ClientTimeout(total=left, sock_connect=CONNECT_SECONDS)
            try:
                async with self._http().request(
                    method, self._base + path, data=data, params=params, headers=self._headers(content_type),
                    proxy=self._proxy, server_hostname=self._server_hostname,
                    timeout=bound,
                ) as response:
                    payload = await response.read()
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # not reached: refused, reset, timed out
                self._count(verb, 0)
                raise self._failed(KubeError(verb, 0, (str(exc) or type(exc).__name__)[:300])) from None
            self._count(verb, status)
            if status < 300:
                return payload
            if status == UNAUTHORIZED:  # perhaps a rotated token: read it again on the next call
                self._authorized_at = -CREDENTIALS_SECONDS
            if status in expected:
                return None
            error = KubeError(verb, status, _message(payload, response.reason), retry_after)
            wait = min(retry_after or 1.0, RETRY_AFTER_CAP_SECONDS)
            if (status != THROTTLED or attempt == RETRY_AFTER_ATTEMPTS
                    or (deadline is not None and loop.time() + wait >= deadline)):
                raise self._failed(error)
            log.info("%s: throttled, retrying in %.1fs", verb, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _json(self, verb: str, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        payload = await self._call(verb, method, path, **kwargs)
        if payload is None:
            return None
        document: dict[str, Any] = orjson.loads(payload)
        return document

    async def _items(self, verb: str, path: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        document = await self._json(verb, "GET", path, params=params)
        return list((document or {}).get("items") or [])

    # -- lists and watches (the informers)

    async def list_raw(self, what: str, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A whole list document (items and the list's resourceVersion), for an informer's relist."""
        return await self._json(f"list {what}", "GET", path, params=params) or {}

    async def watch(self, what: str, path: str, params: Mapping[str, str], version: str,
                    seconds: int) -> AsyncGenerator[dict[str, Any], None]:
        """The events of one watch from `version`, which the server ends after `seconds`; errors, an ERROR event
        included, as `KubeError`."""
        verb = f"watch {what}"
        query = {**params, "watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(seconds)}
        try:
            async with self._http().get(
                self._base + path, params=query, headers=self._headers(), proxy=self._proxy,
                server_hostname=self._server_hostname,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS, sock_read=seconds + 30),
            ) as response:
                self._count(verb, response.status)
                if response.status >= 300:
                    payload = await response.read()
                    raise self._failed(KubeError(verb, response.status, _message(payload, response.reason),
                                                 _retry_after(response.headers.get("Retry-After"))))
                async for line in response.content:
                    if not line.strip():
                        continue
                    event: dict[str, Any] = orjson.loads(line)
                    if event.get("type") == "ERROR":  # a Status; 410 Gone: the version is too old, list again
                        status = event.get("object") or {}
                        raise self._failed(KubeError(verb, int(status.get("code") or 0),
                                                     str(status.get("message"))[:300]))
                    yield event
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise self._failed(KubeError(verb, 0, (str(exc) or type(exc).__name__)[:300])) from None

    # -- pods, nodes, profiles, configmaps, leases, events

    async def create_pod(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        """Create a pod; False when one of that name exists already (a restart, a late watch event)."""
        created = await self._call("create pod", "POST", f"/api/v1/namespaces/{namespace}/pods", body=manifest,
                                   expected=frozenset({409}))
        return created is not None

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self._call("delete pod", "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                         expected=frozenset({404}))

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> None:
        await self._call("patch node", "PATCH", f"/api/v1/nodes/{name}", body=patch, content_type=MERGE_PATCH)

    async def patch_node_taints(self, name: str, ops: Sequence[Mapping[str, Any]]) -> None:
        """A JSON patch (RFC 6902) of the node's taints: its `test` makes a concurrent change fail it (422)."""
        await self._call("patch node", "PATCH", f"/api/v1/nodes/{name}", body=[dict(op) for op in ops],
                         content_type=JSON_PATCH)

    async def patch_profile_status(self, name: str, status: Mapping[str, Any]) -> None:
        await self._call("patch profile/status", "PATCH", f"{PROFILES}/{name}/status", body={"status": status},
                         content_type=MERGE_PATCH)

    async def patch_profile(self, name: str, patch: Mapping[str, Any]) -> None:
        await self._call("patch profile", "PATCH", f"{PROFILES}/{name}", body=patch, content_type=MERGE_PATCH)

    async def ensure_configmap(self, manifest: Mapping[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        await self._call("create configmap", "POST", f"/api/v1/namespaces/{namespace}/configmaps", body=manifest,
                         expected=frozenset({409}))

    async def list_configmaps(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return await self._items("list configmaps", f"/api/v1/namespaces/{namespace}/configmaps",
                                 {"labelSelector": label_selector})

    async def delete_configmap(self, namespace: str, name: str) -> None:
        await self._call("delete configmap", "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                         expected=frozenset({404}))

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return await self._items("list pods", f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": label_selector})

    async def list_nodes(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        return await self._items("list nodes", "/api/v1/nodes", {"labelSelector": label_selector} if label_selector
                                 else None)

    async def list_profiles(self) -> list[dict[str, Any]]:
        return await self._items("list profiles", PROFILES)

    async def list_profile_names(self) -> set[str]:
        return {str((item.get("metadata") or {}).get("name")) for item in await self.list_profiles()}

    async def get_lease(self, namespace: str, name: str, timeout: float) -> dict[str, Any] | None:
        """The Lease, or None when there is none; `timeout` bounds the request (the elector's deadlines)."""
        return await self._json("get lease", "GET", f"{_leases(namespace)}/{name}", timeout=timeout,
                                expected=frozenset({404}))

    async def create_lease(self, namespace: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
        """Create the Lease; None when another replica created it first (409)."""
        return await self._json("create lease", "POST", _leases(namespace), body=body, timeout=timeout,
                                expected=frozenset({409}))

    async def update_lease(self, namespace: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
        """Replace the Lease at the resourceVersion `body` carries; None when it changed since (409)."""
        return await self._json("update lease", "PUT", f"{_leases(namespace)}/{body['metadata']['name']}", body=body,
                                timeout=timeout, expected=frozenset({409}))

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
        await self._call("create event", "POST", f"/api/v1/namespaces/{namespace}/events", body=body)


def _leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the API server sends whole seconds; an HTTP date is not used by it)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """What orjson leaves to its caller: a read-only mapping (a view's labels) is sent as the object it is."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _message(payload: bytes, reason: str | None) -> str:
    """The Status message of an error body, else the HTTP reason."""
    try:
        document = json.loads(payload or b"{}")
        return str((document.get("message") if isinstance(document, dict) else None) or reason)[:300]
    except ValueError:
        return str(reason)[:300]
