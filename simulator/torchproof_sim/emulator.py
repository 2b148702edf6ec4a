"""The HTTP face of the embedded API server: kmock's emulator with a direct path for Kubernetes traffic.

kmock dispatches each request by scanning its reactions and keeps every request in a log, so a request
costs more than the one before. Here `__call__` routes Kubernetes paths (and discovery) straight to the
indexed `Store`; only other paths fall through to kmock's reactions and request log.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import kmock
import orjson
from multidict import CIMultiDict

from torchproof_sim import fields as fv
from torchproof_sim.rbac import Access, Attributes
from torchproof_sim.store import (
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    Event,
    Obj,
    ResourceType,
    Store,
    json_copy,
)
from torchproof_sim.webhooks import KEY as WEBHOOKS_KEY
from torchproof_sim.webhooks import Webhooks

WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})
VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
DEFAULT_WATCH_SECONDS = 1800.0
LIVENESS_SECONDS = 1.0  # how often an idle watch checks that its client is still there
ENCODED_VALUES = 32768  # stored objects and their parts whose JSON is kept for responses and watch events
ENCODED_KEYS = 1024  # top-level keys whose JSON is kept
_EVENT_HEADS = {t: f'{{"type":"{t}","object":'.encode() for t in ("ADDED", "MODIFIED", "DELETED")}


def dumps(value: Any) -> bytes:
    """JSON as the server sends it (compact, UTF-8): orjson, or json for what orjson refuses (an integer
    beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class ApiFaults:
    """Injected failures for the reliability suite; each request of a chosen verb draws its fate."""

    seed: int = 0
    rate_500: float = 0.0
    rate_429: float = 0.0  # answered with `Retry-After: 1`
    rate_409: float = 0.0
    slow_seconds: float = 0.0
    slow_rate: float = 0.0
    cut_watch_after_events: int | None = None
    verbs: frozenset[str] = WRITE_VERBS
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def draw(self, verb: str, conditional: bool = True) -> tuple[float, ApiError | None]:
        """(delay in seconds, error to answer instead) for one request.

        409 Conflict answers only a conditional write (one that carries a resourceVersion), as a real
        API server's does: a plain merge patch never conflicts, and a 409 on create means AlreadyExists.
        """
        if verb not in self.verbs:
            return 0.0, None
        delay = self.slow_seconds if self._random.random() < self.slow_rate else 0.0
        roll = self._random.random()
        if roll < self.rate_500:
            return delay, ApiError(500, "InternalError", "injected fault: internal error")
        if roll < self.rate_500 + self.rate_429:
            return delay, ApiError(429, "TooManyRequests", "injected fault: too many requests",
                                   {"retryAfterSeconds": 1})
        if roll < self.rate_500 + self.rate_429 + self.rate_409 and conditional:
            return delay, ApiError(409, "Conflict", "injected fault: the object has been modified; "
                                                    "please apply your changes to the latest version")
        return delay, None


@dataclass(frozen=True)
class Route:
    """A Kubernetes API path, parsed: `/apis/g/v[/watch][/namespaces/ns]/plural[/name[/sub]]`."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch = bool(rest) and rest[0] == "watch"
    rest = rest[1:] if watch else rest
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and not (group == "" and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return Route(group, version, watch=watch)
    return Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None,
                 "/".join(rest[2:]) or None, watch)


def discovery_resources(types: list[ResourceType], group: str, version: str) -> Obj:
    resources = []
    for rt in sorted((t for t in types if t.group == group and t.version == version), key=lambda t: t.plural):
        entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                 "verbs": list(VERBS), "shortNames": list(rt.short_names), "categories": list(rt.categories)}
        resources.append({k: v for k, v in entry.items() if v != []})
        if rt.status_subresource:
            resources.append({"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": ["get", "patch", "update"]})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def openapi_v3_document(types: list[ResourceType]) -> Obj:
    """Paths whose operations name their GroupVersionKind and accept `fieldValidation`."""
    paths: dict[str, Obj] = {}
    params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
    for rt in types:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        base = f"/api/{rt.version}" if not rt.group else f"/apis/{rt.group_version}"
        scope = f"{base}/namespaces/{{namespace}}" if rt.namespaced else base
        operation = {"x-kubernetes-group-version-kind": gvk, "parameters": params,
                     "responses": {"200": {"description": "OK"}}}
        paths[f"{scope}/{rt.plural}"] = {"post": {**operation, "operationId": f"create{rt.kind}"}}
        paths[f"{scope}/{rt.plural}/{{name}}"] = {
            "put": {**operation, "operationId": f"replace{rt.kind}"},
            "patch": {**operation, "operationId": f"patch{rt.kind}"},
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": {}}}


def discovery_groups(types: list[ResourceType]) -> list[Obj]:
    versions: dict[str, list[str]] = {}
    for rt in types:
        if rt.group and rt.version not in versions.setdefault(rt.group, []):
            versions[rt.group].append(rt.version)
    return [{"name": group, "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{group}/{vs[0]}", "version": vs[0]}}
            for group, vs in sorted(versions.items())]


_JSONPATH_STEP = re.compile(
    r"""\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_-]+)==["']([^"']*)["']\)\]""")


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: `.a.b`, `[0]`, `[?(@.type=="Ready")]`."""
    value = obj
    for match in _JSONPATH_STEP.finditer(path):
        key, index, filter_key, filter_value = match.groups()
        if key is not None:
            value = value.get(key) if isinstance(value, dict) else None
        elif index is not None:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        else:
            found = [i for i in value or () if isinstance(i, dict) and str(i.get(filter_key)) == filter_value]
            value = found[0] if found else None
        if value is None:
            return None
    return value


def age(stamp: Any, now: datetime.datetime) -> str:
    try:
        then = datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size if unit != "m" else seconds >= 120:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _column_getter(path: str, is_date: bool, now: datetime.datetime) -> Callable[[Obj], Any]:
    def get(obj: Obj) -> Any:
        value = jsonpath(obj, path)
        return age(value, now) if is_date and value else value

    return get


def render_table(rt: ResourceType, items: list[Obj], resource_version: int, now: datetime.datetime) -> Obj:
    """A meta.k8s.io/v1 Table as `kubectl get` asks for: Name, printer columns, Age."""
    columns: list[Obj] = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                           "description": "Name must be unique within a namespace."}]
    getters: list[Callable[[Obj], Any]] = [lambda o: o["metadata"]["name"]]
    for col in rt.printer_columns:
        columns.append({"name": col["name"], "type": col.get("type", "string"),
                        "priority": col.get("priority", 0), "format": col.get("format", ""),
                        "description": col.get("description", "")})
        getters.append(_column_getter(str(col.get("jsonPath", "")), col.get("type") == "date", now))
    if rt.key == "v1/nodes":
        columns.append({"name": "Status", "type": "string", "format": "", "priority": 0, "description": ""})
        getters.append(lambda o: "Ready" if (jsonpath(o, '.status.conditions[?(@.type=="Ready")].status')
                                             == "True") else "NotReady")
    elif rt.key == "v1/pods":
        columns.append({"name": "Status", "type": "string", "format": "", "priority": 0, "description": ""})
        getters.append(lambda o: jsonpath(o, ".status.phase"))
    if not any(c.get("jsonPath") == ".metadata.creationTimestamp" for c in rt.printer_columns):
        columns.append({"name": "Age", "type": "string", "format": "", "priority": 0, "description": ""})
        getters.append(lambda o: age(o["metadata"].get("creationTimestamp"), now))
    rows = [{"cells": [get(o) for get in getters], "object": o} for o in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "columnDefinitions": columns, "rows": rows,
            "metadata": {"resourceVersion": str(resource_version)}}


def request_attributes(method: str, path: str, route: Route | None, query: Mapping[str, str]) -> Attributes:
    """What a request asks, as the API server's RequestInfo has it for RBAC: discovery and other URLs outside
    the resource API are URL requests (`get path "/apis"`); a delete without a name is `deletecollection`."""
    if route is None or route.plural is None:
        return Attributes(verb=method.lower(), path=path)
    watch = route.watch or query.get("watch", "").lower() in ("true", "1")
    verb = _verb(method, route, watch)
    if verb == "delete" and route.name is None:
        verb = "deletecollection"
    namespace = route.name if route.group == "" and route.plural == "namespaces" else route.namespace
    return Attributes(verb=verb, path=path, resource=route.plural, group=route.group,
                      subresource=route.subresource, namespace=namespace, name=route.name)


def _verb(method: str, route: Route, watch: bool) -> str:
    if method == "GET":
        return "watch" if watch else "get" if route.name else "list"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    return verbs.get(method, method.lower())


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=dumps(payload), status=status, headers=headers,
                                content_type="application/json")


class Encodings:
    """The JSON of stored objects and of their top-level parts, by identity, for the last `size` used.

    A stored object never changes (the store copies on write), so a write's response and every watch
    event that carries it share one encoding; and a new version shares the parts it did not change
    (a pod's spec across its status writes, a node's status across label writes), so an object is
    joined from its parts' encodings. Each entry holds its value, so its id is not reused while cached.
    """

    def __init__(self, size: int = ENCODED_VALUES) -> None:
        self._size = size
        self._cache: collections.OrderedDict[int, tuple[Any, bytes]] = collections.OrderedDict()
        self._keys: dict[str, bytes] = {}  # `"metadata": ` and the like

    def __call__(self, obj: Obj) -> bytes:
        data = self._lookup(obj)
        if data is None:
            if all(type(k) is str for k in obj):
                data = b"{" + b",".join(self._key(k) + (self._part(v) if type(v) is dict or type(v) is list
                                                         else dumps(v))
                                        for k, v in obj.items()) + b"}"
            else:
                data = dumps(obj)
            self._remember(obj, data)
        return data

    def _part(self, value: Any) -> bytes:
        data = self._lookup(value)
        if data is None:
            data = dumps(value)
            self._remember(value, data)
        return data

    def _key(self, key: str) -> bytes:
        data = self._keys.get(key)
        if data is None:
            data = dumps(key) + b":"
            if len(self._keys) < ENCODED_KEYS:
                self._keys[key] = data
        return data

    def _lookup(self, value: Any) -> bytes | None:
        entry = self._cache.get(id(value))
        if entry is None:
            return None
        self._cache.move_to_end(id(value))  # the least recently used go first
        return entry[1]

    def _remember(self, value: Any, data: bytes) -> None:
        if len(self._cache) >= self._size:
            self._cache.popitem(last=False)
        self._cache[id(value)] = (value, data)

    def event_line(self, event: Event) -> bytes:
        """`{"type":...,"object":...}` and a newline: the object's encoding is the one its response had."""
        head = _EVENT_HEADS.get(event["type"]) or b'{"type":' + dumps(event["type"]) + b',"object":'
        return head + self(event["object"]) + b"}\n"


class Subscription:
    """In-process watch: `{"type", "object"}` events from the moment of subscribing.

    Each object is a deep copy; with `shared` it is the stored object itself, which must not be mutated
    (for subscribers that only read, such as the simulated kubelet, so no event costs a copy). With
    `only`, just the events it accepts when the write happens are queued.
    """

    def __init__(self, store: Store, rt: ResourceType, *, shared: bool = False,
                 only: Callable[[Event], bool] | None = None) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._shared = shared
        self._only = only
        self._unsubscribe: Callable[[], None] | None = store.subscribe(rt, self._deliver)

    def _deliver(self, event: Event, _before: Obj | None) -> None:
        if self._only is None or self._only(event):
            self._queue.put_nowait(event)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._unsubscribe is None:
            raise StopAsyncIteration
        event = await self._queue.get()
        return {"type": event["type"], "object": event["object"] if self._shared else json_copy(event["object"])}

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def __del__(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """A Kubernetes API server in memory, served over HTTP by `kmock.Server` and in-process below."""

    store: Store = attrs.field(factory=Store)
    faults: ApiFaults | None = None
    access: Access | None = None  # authentication and RBAC of HTTP requests; None: every request is allowed
    field_validation: str = fv.WARN  # for writes that name no `fieldValidation`: the real server's default
    webhooks: Webhooks = attrs.field(factory=Webhooks)  # mutating admission webhooks' caller
    _counts: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _resource_counts: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _encode: Encodings = attrs.field(factory=Encodings, init=False)

    # --- in-process API ---------------------------------------------------------------------------------

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return json_copy(self.store.get(self.store.resolve(resource), namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def list_objects(self, resource: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[dict[str, Any]]:
        return json_copy(self.store.list_items(self.store.resolve(resource), namespace, label_selector))

    async def create_object(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        rt = self.store.resolve(resource)
        return json_copy(self.store.create(rt, (obj.get("metadata") or {}).get("namespace"), obj))

    async def patch_object(self, resource: str, namespace: str | None, name: str, patch: dict[str, Any],
                           subresource: str | None = None) -> dict[str, Any]:
        rt = self.store.resolve(resource)
        return json_copy(self.store.patch(rt, namespace, name, patch, MERGE_PATCH, subresource))

    async def delete_object(self, resource: str, namespace: str | None, name: str,
                            grace_period_seconds: int | None = None) -> None:
        """A running pod goes Terminating for its grace period (its kubelet deletes it); 0 deletes it at once."""
        options = {} if grace_period_seconds is None else {"gracePeriodSeconds": grace_period_seconds}
        self.store.delete(self.store.resolve(resource), namespace, name, options)

    def subscribe(self, resource: str, *, shared: bool = False,
                  only: Callable[[Event], bool] | None = None) -> AsyncIterator[dict[str, Any]]:
        return Subscription(self.store, self.store.resolve(resource), shared=shared, only=only)

    def request_counts(self) -> dict[str, Any]:
        return {"total": sum(self._counts.values()), "byVerb": dict(self._counts),
                "byResource": dict(self._resource_counts)}

    # --- HTTP -------------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path
        route = parse_route(path)
        user = None
        try:
            if self.access is not None:
                who = self.access.check(raw_request.headers.get("Authorization"),
                                        request_attributes(raw_request.method, path, route, raw_request.query))
                user = (who.name, who.groups)
            if route is None:
                if path in ("/version", "/version/"):
                    return _json(await self._serve_server_version(kmock.Request()))
                if path == "/api":
                    return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": raw_request.host}]})
                if path == "/apis":
                    return _json({"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": discovery_groups(self.store.types)})
                if path.startswith("/apis/") and path.count("/") == 2:
                    return self._serve_api_group(path.split("/")[2])
                if path in ("/healthz", "/readyz", "/livez"):
                    return aiohttp.web.Response(text="ok")
                if path.startswith("/openapi/v3"):
                    return _json(self._serve_openapi_v3(path.removeprefix("/openapi/v3").strip("/")))
                if path.startswith("/openapi/"):
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return await super().__call__(raw_request)
            if route.plural is None:
                if route.group and not any(t.group == route.group and t.version == route.version
                                           for t in self.store.types):
                    raise ApiError(404, "NotFound", f"the server could not find {path}")
                return _json(discovery_resources(self.store.types, route.group, route.version))
            return await self._serve(raw_request, route, user)
        except ApiError as exc:
            headers = {"Retry-After": "1"} if exc.code == 429 else None
            return _json(exc.status(), exc.code, headers)

    def _serve_openapi_v3(self, group_version: str) -> Obj:
        """Just enough OpenAPI v3 for kubectl to see that the server validates (`fieldValidation`)."""
        versions = sorted({("api/" if not t.group else "apis/") + t.group_version for t in self.store.types})
        if not group_version:
            hash_ = str(len(self.store.types))
            return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={hash_}"} for gv in versions}}
        if group_version not in versions:
            raise ApiError(404, "NotFound", f"the server could not find /openapi/v3/{group_version}")
        return openapi_v3_document([t for t in self.store.types if
                                    ("api/" if not t.group else "apis/") + t.group_version == group_version])

    def _serve_api_group(self, group: str) -> aiohttp.web.Response:
        for entry in discovery_groups(self.store.types):
            if entry["name"] == group:
                return _json({"kind": "APIGroup", "apiVersion": "v1", **entry})
        raise ApiError(404, "NotFound", f"the server could not find the requested resource: group {group!r}")

    async def _serve(self, raw_request: aiohttp.web.BaseRequest, route: Route,
                     user: tuple[str, tuple[str, ...]] | None) -> aiohttp.web.StreamResponse:
        """`user`: the authenticated requester (None without authentication), for admission policies."""
        assert route.plural is not None
        query = raw_request.query
        watch = route.watch or query.get("watch", "").lower() in ("true", "1")
        method = raw_request.method
        verb = _verb(method, route, watch)
        self._counts[verb] += 1
        body = b"" if watch else await raw_request.read()
        if self.faults is not None:
            conditional = method == "PUT" or (method == "PATCH" and b'"resourceVersion"' in body)
            delay, error = self.faults.draw(verb, conditional)
            if delay:
                await asyncio.sleep(delay)
            if error is not None:
                raise error
        rt = self.store.lookup(route.group, route.version, route.plural)
        self._resource_counts[f"{verb} {rt.plural}" + (f"/{route.subresource}" if route.subresource else "")] += 1
        namespace = route.namespace if rt.namespaced else None
        if verb == "watch":
            return await self._watch(raw_request, rt, namespace, route.name)
        check = None
        if verb in ("create", "update", "patch"):
            try:
                directive = fv.directive(query.get("fieldValidation"), self.field_validation)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", str(exc)) from None
            data, duplicates = self._decode(body, noting_duplicates=directive != fv.IGNORE) if body else (None, [])
            check = fv.FieldCheck(directive, duplicates)
        else:
            data = self._decode(body)[0] if body else None
        as_table = "as=Table" in raw_request.headers.get("Accept", "")
        if verb == "list":
            items = self.store.list_items(rt, namespace, query.get("labelSelector"),
                                          query.get("fieldSelector"))
            if as_table:
                now = datetime.datetime.now(datetime.UTC)
                return _json(render_table(rt, items, self.store.resource_version, now))
            return _json(self.store.list_document(rt, items))
        if verb == "create":
            if route.name is not None:
                raise ApiError(405, "MethodNotAllowed", f"POST is not supported on {raw_request.path}")
            if isinstance(data, dict):
                data = await self._mutate(rt, namespace, data, user or ("system:anonymous", ()))
            return self._stored(self.store.create(rt, namespace, data, owned=True, fields=check, user=user), 201, check)
        if route.name is None:
            if verb == "delete":
                deleted = self.store.delete_collection(rt, namespace, query.get("labelSelector"),
                                                       query.get("fieldSelector"))
                return _json(self.store.list_document(rt, deleted))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {raw_request.path}")
        if verb == "get":
            obj = self.store.get(rt, namespace, route.name)
            if as_table:
                return _json(render_table(rt, [obj], self.store.resource_version,
                                          datetime.datetime.now(datetime.UTC)))
            return self._stored(obj)
        if verb == "update":
            return self._stored(self.store.replace(rt, namespace, route.name, data, route.subresource, owned=True,
                                                   fields=check, user=user), 200, check)
        if verb == "patch":
            content_type = raw_request.headers.get("Content-Type", "").split(";")[0].strip()
            if data is None:
                raise ApiError(400, "BadRequest", "the patch body is empty")
            if content_type == JSON_PATCH and not isinstance(data, list):
                raise ApiError(400, "BadRequest", "a json patch must be a list of operations")
            return self._stored(self.store.patch(rt, namespace, route.name, data, content_type, route.subresource,
                                                 owned=True, fields=check, user=user), 200, check)
        if verb == "delete":
            options = dict(data) if isinstance(data, dict) else {}
            if "propagationPolicy" in query:
                options["propagationPolicy"] = query["propagationPolicy"]
            if "gracePeriodSeconds" in query:
                options["gracePeriodSeconds"] = query["gracePeriodSeconds"]
            return self._stored(self.store.delete(rt, namespace, route.name, options))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {raw_request.path}")

    async def _mutate(self, rt: ResourceType, namespace: str | None, obj: Obj,
                      user: tuple[str, tuple[str, ...]]) -> Obj:
        """Mutating admission webhooks (webhooks.py) of a create that came over HTTP."""
        configurations = self.store.list_items(self.store.resolve(WEBHOOKS_KEY))
        if not configurations:
            return obj
        namespace_labels = None
        if rt.namespaced:
            meta = obj.setdefault("metadata", {})
            if isinstance(meta, dict):
                meta.setdefault("namespace", namespace or "default")
            found = self.get_object("v1/namespaces", None, str(namespace or "default"))
            namespace_labels = ((found or {}).get("metadata") or {}).get("labels") or {}
        return await self.webhooks.admit(configurations, rt, "CREATE", obj, namespace_labels, user)

    def _stored(self, obj: Obj, status: int = 200, check: fv.FieldCheck | None = None) -> aiohttp.web.Response:
        """A response with an object the store holds (or held), encoded once for all who send it; the
        field validation's warnings as `Warning` headers, as the server sends them."""
        headers = None
        if check is not None and check.warnings:
            headers = CIMultiDict[str]()
            for warning in check.warnings:
                headers.add("Warning", "299 - " + json.dumps(warning))
        return aiohttp.web.Response(body=self._encode(obj), status=status, content_type="application/json",
                                    headers=headers)

    @staticmethod
    def _decode(body: bytes, *, noting_duplicates: bool = False) -> tuple[Any, list[str]]:
        try:
            return fv.decode_noting_duplicates(body) if noting_duplicates else (json.loads(body), [])
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the request body is not JSON: {exc}") from None

    async def _watch(self, raw_request: aiohttp.web.BaseRequest, rt: ResourceType, namespace: str | None,
                     name: str | None) -> aiohttp.web.StreamResponse:
        query = raw_request.query
        selects = self.store.matcher(query.get("labelSelector"), query.get("fieldSelector"))

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            meta = obj["metadata"]
            return ((namespace is None or meta.get("namespace") == namespace)
                    and (name is None or meta["name"] == name) and selects(obj))

        try:
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
            since = int(query.get("resourceVersion") or 0)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"timeoutSeconds/resourceVersion: {exc}") from None
        arrived: list[Event] = []
        wakeup = asyncio.Event()

        def seen(event: Event, before: Obj | None) -> Event | None:
            """The event as this watch sees it: objects entering or leaving its selection."""
            now, then = matches(event["object"]), matches(before)
            if event["type"] == "MODIFIED" and now != then:
                return {"type": "ADDED" if now else "DELETED", "object": event["object"]}
            return event if now or (event["type"] == "DELETED" and then) else None

        def listen(event: Event, before: Obj | None) -> None:
            if (visible := seen(event, before)) is not None:
                arrived.append(visible)
                wakeup.set()

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        unsubscribe = self.store.subscribe(rt, listen)
        try:
            replay = self.store.events_since(rt, since) if since else None
            if replay is None:
                pending = [{"type": "ADDED", "object": o} for o in self.store.list_items(rt, namespace)
                           if matches(o)]
            else:
                pending = [v for e, before in replay if (v := seen(e, before)) is not None]
            await response.prepare(raw_request)
            cut = self.faults.cut_watch_after_events if self.faults is not None else None
            sent = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline and (cut is None or sent < cut):
                if not pending:
                    if not arrived:
                        wakeup.clear()
                        try:
                            async with asyncio.timeout(min(LIVENESS_SECONDS, max(0.0, deadline - loop.time()))):
                                await wakeup.wait()
                        except TimeoutError:
                            transport = raw_request.transport
                            if transport is None or transport.is_closing():
                                break
                            continue
                    pending = arrived[:]
                    arrived.clear()
                if cut is not None:
                    pending = pending[:cut - sent]
                sent += len(pending)
                await response.write(b"".join(self._encode.event_line(e) for e in pending))
                pending = []
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing is left to tell it
        finally:
            unsubscribe()
        return response
