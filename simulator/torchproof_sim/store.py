"""The embedded API server's state: typed resources, objects, versions, watch history — no I/O.

Every write replaces the stored dict with a new one (copy-on-write), so event payloads and list
results can be shared without copying; callers that mutate must copy first.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import jsonpatch
import jsonpointer

from torchproof_sim.admissionpolicy import Policy, PolicyError, Request, compile_policy, denial
from torchproof_sim.fields import FieldCheck, UnknownFields, builtin_unknown_fields
from torchproof_sim.podadmission import (
    default_pod,
    grace_period,
    service_account_refusal,
)
from torchproof_sim.podsecurity import forbidden_message

Obj = dict[str, Any]
Event = dict[str, Any]
Listener = Callable[[Event, "Obj | None"], None]  # (event, object before it)
Admit = Callable[[Obj, Obj | None], Obj]  # (object, its old self on an update)
Requester = tuple[str, tuple[str, ...]]  # an HTTP request's user name and groups, for admission policies
J = TypeVar("J")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # object names
# generateName as the API server does it (apiserver/pkg/storage/names): the base cut to 58 characters, five
# characters from util/rand's alphabet (no vowels, no look-alikes), and a create retried with a new name on a
# collision, 8 attempts in all (RetryGenerateName, on by default since 1.31).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATED_NAME_ATTEMPTS = 8
HISTORY = 50_000  # watch events kept per resource for `resourceVersion=` resumption
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


class ApiError(Exception):
    """A failure the HTTP layer renders as a Kubernetes `Status` with this code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "details": self.details, "code": self.code,
        }


@dataclass
class ResourceType:
    """What discovery says about one served group/version/plural, plus its admission hook."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    admit: Admit | None = None  # CRD schema: defaults, pruning, validation (raises ApiError 422)
    printer_columns: tuple[dict[str, Any], ...] = ()
    crd_name: str | None = None  # the CRD that serves it, if any
    unknown_fields: UnknownFields | None = None  # field validation: the unknown fields of a (partial) body

    @property
    def key(self) -> str:
        """The in-process resource name: `v1/pods`, `torchproof.dev/v1alpha1/pytorchreleaseprofiles`."""
        return f"{self.group_version}/{self.plural}"

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> str:
        """Versions of one group/plural share their objects, as in a real API server."""
        return f"{self.plural}.{self.group}"


def _builtin(group: str, version: str, plural: str, kind: str, namespaced: bool, *short: str,
             status: bool = False) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced, kind.lower(), short, (), status)


BUILTINS = (
    _builtin("", "v1", "nodes", "Node", False, "no", status=True),
    _builtin("", "v1", "pods", "Pod", True, "po", status=True),
    _builtin("", "v1", "configmaps", "ConfigMap", True, "cm"),
    _builtin("", "v1", "events", "Event", True, "ev"),
    _builtin("", "v1", "namespaces", "Namespace", False, "ns", status=True),
    _builtin("", "v1", "secrets", "Secret", True),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", True, "sa"),
    _builtin("events.k8s.io", "v1", "events", "Event", True, "ev"),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease", True),
    _builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
             False, "crd", "crds", status=True),
    _builtin("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy",
             False, status=True),
    _builtin("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings",
             "ValidatingAdmissionPolicyBinding", False),
    _builtin("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
             "MutatingWebhookConfiguration", False),
)
CRD_KEY = "apiextensions.k8s.io/v1/customresourcedefinitions"
POLICY_KEY = "admissionregistration.k8s.io/v1/validatingadmissionpolicies"
BINDING_KEY = "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
NAMESPACE_KEY = "v1/namespaces"


def parse_resource_key(key: str) -> tuple[str, str, str]:
    """`v1/nodes` → ("", "v1", "nodes"); `g.dev/v1/things` → ("g.dev", "v1", "things")."""
    parts = key.split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f"resource {key!r}: expected 'v1/<plural>' or '<group>/<version>/<plural>'")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def generate_name(base: str) -> str:
    """A name for `generateName`: the base (at most 58 characters) and five random characters."""
    return base[:58] + "".join(random.choices(NAME_ALPHABET, k=5))


def timestamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: Obj) -> Obj:
    """The part of an object whose change bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


@dataclass
class _Storage:
    objects: dict[str | None, dict[str, Obj]] = field(default_factory=dict)  # namespace → name → obj
    history: deque[tuple[int, Event, Obj | None]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    listeners: set[Listener] = field(default_factory=set)

    def items(self, namespace: str | None) -> Iterator[Obj]:
        if namespace is not None:
            yield from self.objects.get(namespace, {}).values()
            return
        for by_name in self.objects.values():
            yield from by_name.values()


class Store:
    """Objects indexed by resource, namespace and name; one global resourceVersion counter."""

    def __init__(self, clock: Callable[[], datetime.datetime] = _now) -> None:
        self._clock = clock
        self._counter = itertools.count(1)
        self.resource_version = 0
        self._types: dict[str, ResourceType] = {}
        self._storages: dict[str, _Storage] = {}
        self._dependents: dict[str, set[tuple[str, str | None, str]]] = {}  # owner uid → dependents
        self._policies: dict[tuple[str, str], Policy] = {}  # compiled, by (uid, resourceVersion)
        self.policy_denials: list[str] = []  # every write an admission policy refused, by its message
        from torchproof_sim.schema import check_crd

        admits: dict[str, Admit] = {CRD_KEY: check_crd, POLICY_KEY: _check_policy}
        for rt in BUILTINS:
            self.register(dataclasses.replace(rt, admit=admits.get(rt.key),
                                              unknown_fields=builtin_unknown_fields(rt.group, rt.version, rt.kind)))

    # --- resource types --------------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        self._types[rt.key] = rt
        self._storages.setdefault(rt.storage, _Storage())

    @property
    def types(self) -> list[ResourceType]:
        return list(self._types.values())

    def resolve(self, key: str) -> ResourceType:
        try:
            group, version, plural = parse_resource_key(key)
        except ValueError as exc:
            raise ApiError(404, "NotFound", str(exc)) from None
        return self.lookup(group, version, plural)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self._types.get(f"{group}/{version}/{plural}" if group else f"{version}/{plural}")
        if rt is None:
            gv = f"{group}/{version}" if group else version
            raise ApiError(404, "NotFound", f"the server could not find the requested resource {plural!r} "
                                            f"in {gv!r}", {"group": group, "kind": plural})
        return rt

    def by_kind(self, api_version: str, kind: str) -> ResourceType:
        for rt in self._types.values():
            if rt.group_version == api_version and rt.kind == kind:
                return rt
        raise ApiError(404, "NotFound", f"no resource of kind {kind!r} in {api_version!r}")

    # --- reads -----------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._storage(rt).objects.get(self._ns(rt, namespace), {}).get(name)
        if obj is None:
            raise self._not_found(rt, name)
        return self._versioned(rt, obj)

    def list_items(self, rt: ResourceType, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[Obj]:
        match = self._matcher(label_selector, field_selector)
        ns = namespace if rt.namespaced else None
        return [self._versioned(rt, o) for o in self._storage(rt).items(ns) if match(o)]

    def list_document(self, rt: ResourceType, items: list[Obj]) -> Obj:
        return {"apiVersion": rt.group_version, "kind": f"{rt.kind}List",
                "metadata": {"resourceVersion": str(self.resource_version)}, "items": items}

    def events_since(self, rt: ResourceType, resource_version: int) -> list[tuple[Event, Obj | None]] | None:
        """(event, object before it) after that version, or None when the history does not reach back."""
        history = self._storage(rt).history
        if resource_version >= self.resource_version:
            return []
        if history and history[0][0] > resource_version + 1 and len(history) == history.maxlen:
            return None
        return [(self._versioned_event(rt, ev), before) for rv, ev, before in history if rv > resource_version]

    def subscribe(self, rt: ResourceType, listener: Listener) -> Callable[[], None]:
        """Calls `listener(event, before)` on every change of this resource; returns the unsubscriber."""
        listeners = self._storage(rt).listeners

        def deliver(event: Event, before: Obj | None) -> None:
            listener(self._versioned_event(rt, event), before)

        listeners.add(deliver)
        return lambda: listeners.discard(deliver)

    def matcher(self, label_selector: str | None, field_selector: str | None) -> Callable[[Obj], bool]:
        return self._matcher(label_selector, field_selector)

    # --- writes ----------------------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str | None, body: Any, *, owned: bool = False,
               fields: FieldCheck | None = None, user: Requester | None = None) -> Obj:
        """`owned`: the caller hands the body over (a freshly decoded request), so it is not copied.
        `fields`: the request's field validation (unknown fields are pruned or refused; none: pruned).
        `user`: who asks, over HTTP: admission policies judge such writes (in-process ones are the admin's)."""
        obj = self._require_object(body, owned)
        self._check_fields(rt, obj, fields)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _invalid(rt, "", "metadata", "must be an object")
        if rt.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(400, "BadRequest", f"the namespace of the object ({meta['namespace']}) does "
                                                  f"not match the namespace on the request ({namespace})")
            meta["namespace"] = namespace
        else:
            namespace = None
            meta.pop("namespace", None)
        name = meta.get("name")
        generated = not name and bool(meta.get("generateName"))
        if generated:
            name = generate_name(str(meta["generateName"]))
        if not isinstance(name, str) or not name:
            raise _invalid(rt, "", "metadata.name", "Required value: name or generateName is required")
        if rt.group == "rbac.authorization.k8s.io":  # path segment names, as `system:discovery`
            if name in (".", "..") or "/" in name or "%" in name:
                raise _invalid(rt, name, "metadata.name", f'Invalid value: "{name}": may not be \'.\' or '
                               "'..' and may not contain '/' or '%'")
        elif len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
            raise _invalid(rt, name, "metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                           "must consist of lower case alphanumeric characters, '-' or '.', and must start and "
                           "end with an alphanumeric character")
        meta["name"] = name
        obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
        if rt.status_subresource and rt.crd_name is not None:
            obj.pop("status", None)
        if rt.key == "v1/pods":
            obj["status"] = {"phase": "Pending"}
            obj = default_pod(obj)
            self._admit_service_account(obj)
            self._admit_pod_security(obj)
        obj = self._admit(rt, obj)
        self._admit_by_policies(rt, "CREATE", obj, None, user)
        storage = self._storage(rt)
        taken = storage.objects.get(namespace, {})
        for _ in range(GENERATED_NAME_ATTEMPTS - 1):
            if not generated or name not in taken:
                break
            name = obj["metadata"]["name"] = generate_name(str(obj["metadata"]["generateName"]))
        if name in taken:
            raise ApiError(409, "AlreadyExists", f'{rt.plural}.{rt.group} "{name}" already exists'
                           if rt.group else f'{rt.plural} "{name}" already exists',
                           {"name": name, "group": rt.group, "kind": rt.plural})
        meta = obj["metadata"]
        meta.pop("deletionTimestamp", None)
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=timestamp(self._clock()))
        if rt.key == CRD_KEY:
            obj = self._accept_crd(obj)
        self._put(rt, namespace, obj, "ADDED")
        if rt.key == NAMESPACE_KEY:
            self._create_default_service_account(name)
        return self._versioned(rt, obj)

    def replace(self, rt: ResourceType, namespace: str | None, name: str, body: Any,
                subresource: str | None = None, *, owned: bool = False, fields: FieldCheck | None = None,
                user: Requester | None = None) -> Obj:
        new = self._require_object(body, owned)
        self._check_fields(rt, new, fields)
        old = self._current(rt, namespace, name)
        self._check_version(rt, old, new)
        return self._update(rt, old, new, subresource, user)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, patch: Any, patch_type: str,
              subresource: str | None = None, *, owned: bool = False, fields: FieldCheck | None = None,
              user: Requester | None = None) -> Obj:
        """`owned`: the caller hands the patch over; its values may become part of the stored object."""
        old = self._current(rt, namespace, name)
        try:  # strategic merge and JSON patches copy what they take from the patch themselves
            if patch_type == MERGE_PATCH:
                new = apply_merge_patch(old, self._require_object(patch, owned))
            elif patch_type == STRATEGIC_MERGE_PATCH:
                new = apply_strategic_merge_patch(old, self._require_object(patch, owned=True))
            elif patch_type == JSON_PATCH:
                new = apply_json_patch(old, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                                            f"format - accepted media types include: "
                                                            f"{JSON_PATCH}, {MERGE_PATCH}, "
                                                            f"{STRATEGIC_MERGE_PATCH}")
        except PatchError as exc:
            code = 422 if exc.failed_test else 400
            raise ApiError(code, "Invalid" if exc.failed_test else "BadRequest", str(exc)) from None
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        self._check_fields(rt, new if patch_type == JSON_PATCH else patch, fields)
        if isinstance(patch, dict) and isinstance(patch.get("metadata"), dict):
            self._check_version(rt, old, patch)
        elif new.get("metadata", {}).get("resourceVersion") != old["metadata"]["resourceVersion"]:
            self._check_version(rt, old, new)
        return self._update(rt, old, new, subresource, user)

    def delete(self, rt: ResourceType, namespace: str | None, name: str, options: Any = None) -> Obj:
        old = self._current(rt, namespace, name)
        opts = options if isinstance(options, dict) else {}
        uid = (opts.get("preconditions") or {}).get("uid")
        if uid and uid != old["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                                            f"UID in object meta: {old['metadata']['uid']}")
        orphan = opts.get("propagationPolicy") == "Orphan"
        if rt.key == "v1/pods":
            grace = grace_period(old, opts.get("gracePeriodSeconds"))
            if grace:
                return self._delete_gracefully(rt, old, grace)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp") and not old["metadata"].get("deletionGracePeriodSeconds"):
                return self._versioned(rt, old)
            since = old["metadata"].get("deletionTimestamp") or timestamp(self._clock())
            obj = {**old, "metadata": {**old["metadata"], "deletionTimestamp": since, "deletionGracePeriodSeconds": 0}}
            self._put(rt, self._ns(rt, namespace), obj, "MODIFIED")
            return self._versioned(rt, obj)
        self._remove(rt, old, cascade=not orphan)
        return self._versioned(rt, old)

    def delete_collection(self, rt: ResourceType, namespace: str | None, label_selector: str | None,
                          field_selector: str | None) -> list[Obj]:
        doomed = self.list_items(rt, namespace, label_selector, field_selector)
        return [self.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"]) for o in doomed]

    def _delete_gracefully(self, rt: ResourceType, old: Obj, grace: int) -> Obj:
        """A pod its kubelet must stop first: Terminating until the kubelet deletes it with grace 0. A later
        delete may only shorten the grace, as the server's graceful deletion allows."""
        meta = old["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and grace >= current:
            return self._versioned(rt, old)
        until = self._clock() + datetime.timedelta(seconds=grace)
        obj = {**old, "metadata": {**meta, "deletionTimestamp": timestamp(until), "deletionGracePeriodSeconds": grace}}
        self._put(rt, meta.get("namespace"), obj, "MODIFIED")
        return self._versioned(rt, obj)

    # --- internals -------------------------------------------------------------------------------------

    @staticmethod
    def _check_fields(rt: ResourceType, body: Any, fields: FieldCheck | None) -> None:
        if fields is None:
            return
        try:
            fields.check(rt.kind, rt.version, body, rt.unknown_fields)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None

    def _storage(self, rt: ResourceType) -> _Storage:
        return self._storages[rt.storage]

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str | None:
        return (namespace or "default") if rt.namespaced else None

    @staticmethod
    def _require_object(body: Any, owned: bool) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        return body if owned else json_copy(body)

    @staticmethod
    def _versioned(rt: ResourceType, obj: Obj) -> Obj:
        if obj.get("apiVersion") == rt.group_version:
            return obj
        return {**obj, "apiVersion": rt.group_version}

    def _versioned_event(self, rt: ResourceType, event: Event) -> Event:
        obj = event["object"]
        if obj.get("apiVersion") == rt.group_version:
            return event
        return {"type": event["type"], "object": self._versioned(rt, obj)}

    def _not_found(self, rt: ResourceType, name: str) -> ApiError:
        what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return ApiError(404, "NotFound", f'{what} "{name}" not found',
                        {"name": name, "group": rt.group, "kind": rt.plural})

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._storage(rt).objects.get(self._ns(rt, namespace), {}).get(name)
        if obj is None:
            raise self._not_found(rt, name)
        return obj

    @staticmethod
    def _check_version(rt: ResourceType, old: Obj, new: Obj) -> None:
        given = (new.get("metadata") or {}).get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {what} '
                                            f'"{old["metadata"]["name"]}": the object has been modified; '
                                            f"please apply your changes to the latest version and try again",
                           {"name": old["metadata"]["name"], "group": rt.group, "kind": rt.plural})

    def _matcher(self, label_selector: str | None, field_selector: str | None) -> Callable[[Obj], bool]:
        try:
            labels = LabelSelector.parse(label_selector or "")
            fields = FieldSelector.parse(field_selector or "")
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        if labels.empty and fields.empty:
            return lambda _: True
        return lambda o: labels.matches(o.get("metadata", {}).get("labels") or {}) and fields.matches(o)

    def _admit_by_policies(self, rt: ResourceType, operation: str, obj: Obj, old: Obj | None,
                           user: Requester | None, subresource: str | None = None) -> None:
        """ValidatingAdmissionPolicy admission of an HTTP request's write: each binding's policy may deny it."""
        if user is None:
            return
        bindings = self._storage(self.resolve(BINDING_KEY)).objects.get(None, {})
        if not bindings:
            return
        policies = self._storage(self.resolve(POLICY_KEY)).objects.get(None, {})
        meta = obj["metadata"]
        request = Request(operation, rt.group, rt.version, rt.plural, subresource or "", str(meta["name"]),
                          str(meta.get("namespace") or ""), user[0], user[1])
        for name, binding in sorted(bindings.items()):
            spec = binding.get("spec") or {}
            policy = policies.get(str(spec.get("policyName", "")))
            if policy is None or "Deny" not in (spec.get("validationActions") or ()):
                continue
            message = denial(self._compiled(policy), name, request, obj, old)
            if message is not None:
                self.policy_denials.append(message)
                what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
                raise ApiError(422, "Invalid", f'{what} "{meta["name"]}" is invalid: : {message}',
                               {"name": meta["name"], "group": rt.group, "kind": rt.plural,
                                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": ""}]})

    def _compiled(self, policy: Obj) -> Policy:
        key = (str(policy["metadata"]["uid"]), str(policy["metadata"]["resourceVersion"]))
        if key not in self._policies:
            if len(self._policies) > 64:
                self._policies.clear()
            self._policies[key] = compile_policy(policy)
        return self._policies[key]

    def _admit_service_account(self, pod: Obj) -> None:
        """ServiceAccount admission: the pod's account must exist (in a namespace that exists: the embedded
        cluster does not refuse objects in a namespace never created)."""
        namespace = pod["metadata"]["namespace"]
        if namespace not in self._storage(self.resolve("v1/namespaces")).objects.get(None, {}):
            return
        accounts = self._storage(self.resolve("v1/serviceaccounts")).objects.get(namespace, {})
        message = service_account_refusal(pod, set(accounts))
        if message is not None:
            raise ApiError(403, "Forbidden", message, {"name": pod["metadata"]["name"], "kind": "pods"})

    def _create_default_service_account(self, namespace: str) -> None:
        """The ServiceAccount controller's work: every namespace gets its `default` account."""
        rt = self.resolve("v1/serviceaccounts")
        if "default" not in self._storage(rt).objects.get(namespace, {}):
            self.create(rt, namespace, {"metadata": {"name": "default", "namespace": namespace}})

    def _admit_pod_security(self, pod: Obj) -> None:
        """Pod Security admission on create, by the labels of the pod's namespace (podsecurity.py)."""
        namespaces = self._storage(self.resolve("v1/namespaces")).objects.get(None, {})
        namespace = namespaces.get(pod["metadata"]["namespace"])
        message = forbidden_message(pod, ((namespace or {}).get("metadata") or {}).get("labels") or {})
        if message is not None:
            raise ApiError(403, "Forbidden", message, {"name": pod["metadata"]["name"], "kind": "pods"})

    @staticmethod
    def _admit(rt: ResourceType, obj: Obj, old: Obj | None = None) -> Obj:
        """Admission may default in place, so it gets an object that shares nothing with the store."""
        return rt.admit(json_copy(obj), old) if rt.admit is not None else obj

    def _update(self, rt: ResourceType, old: Obj, new: Obj, subresource: str | None,
                user: Requester | None = None) -> Obj:
        if subresource not in (None, "status") or (subresource == "status" and not rt.status_subresource):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                                            f"{rt.plural}/{subresource}")
        if not isinstance(new.get("metadata"), dict):
            raise _invalid(rt, old["metadata"]["name"], "metadata", "must be an object")
        if subresource == "status":
            candidate = dict(old)  # copy-on-write: unchanged parts stay shared with the stored object
            if "status" in new:
                candidate["status"] = new["status"]
            else:
                candidate.pop("status", None)
            candidate["metadata"] = dict(old["metadata"])
        else:
            candidate = new
            if rt.status_subresource:
                if "status" in old:
                    candidate["status"] = old["status"]
                else:
                    candidate.pop("status", None)
            meta = candidate["metadata"] = dict(candidate["metadata"])  # a merge patch shares the old one
            for key in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
        candidate["apiVersion"], candidate["kind"] = old["apiVersion"], old["kind"]
        candidate["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        candidate = self._admit(rt, candidate, old)
        self._admit_by_policies(rt, "UPDATE", candidate, old, user, subresource)
        if rt.key == CRD_KEY:
            candidate = self._accept_crd(candidate)
        if candidate == old:
            return self._versioned(rt, old)
        if _spec_part(candidate) != _spec_part(old):
            candidate["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        ns = candidate["metadata"].get("namespace")
        meta = candidate["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not meta.get("deletionGracePeriodSeconds"):
            self._remove(rt, candidate, cascade=True)
        else:
            self._put(rt, ns, candidate, "MODIFIED")
        return self._versioned(rt, candidate)

    def _put(self, rt: ResourceType, namespace: str | None, obj: Obj, event_type: str) -> None:
        rv = next(self._counter)
        self.resource_version = rv
        obj["metadata"]["resourceVersion"] = str(rv)
        storage = self._storage(rt)
        name = obj["metadata"]["name"]
        previous = storage.objects.setdefault(namespace, {}).get(name)
        storage.objects[namespace][name] = obj
        self._index_owners(rt, previous, obj)
        self._emit(storage, rv, {"type": event_type, "object": obj}, previous)
        if rt.key == CRD_KEY:
            self._serve_crd(obj)

    def _remove(self, rt: ResourceType, obj: Obj, *, cascade: bool) -> None:
        storage = self._storage(rt)
        meta = obj["metadata"]
        namespace = meta.get("namespace") if rt.namespaced else None
        storage.objects.get(namespace, {}).pop(meta["name"], None)
        self._index_owners(rt, obj, None)
        rv = next(self._counter)
        self.resource_version = rv
        gone = {**obj, "metadata": {**meta, "resourceVersion": str(rv)}}
        self._emit(storage, rv, {"type": "DELETED", "object": gone}, obj)
        if rt.key == CRD_KEY:
            self._unserve_crd(obj)
            self._drop_custom_resources(obj)
        if cascade:
            self._collect_dependents(meta["uid"])

    @staticmethod
    def _emit(storage: _Storage, rv: int, event: Event, before: Obj | None) -> None:
        storage.history.append((rv, event, before))
        for listener in list(storage.listeners):
            listener(event, before)

    def _index_owners(self, rt: ResourceType, before: Obj | None, after: Obj | None) -> None:
        if before is not None and after is not None and (
                before["metadata"].get("ownerReferences") is after["metadata"].get("ownerReferences")):
            return  # unchanged (copy-on-write keeps the very same list)
        for obj, add in ((before, False), (after, True)):
            if obj is None:
                continue
            key = (rt.key, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            for ref in obj["metadata"].get("ownerReferences") or ():
                uid = ref.get("uid") if isinstance(ref, dict) else None
                if not isinstance(uid, str):
                    continue
                if add:
                    self._dependents.setdefault(uid, set()).add(key)
                elif uid in self._dependents:
                    self._dependents[uid].discard(key)

    def _collect_dependents(self, uid: str) -> None:
        """Background garbage collection, done at once: dependents go as if deleted by a client."""
        for key, namespace, name in sorted(self._dependents.pop(uid, set()), key=str):
            rt = self._types.get(key)
            if rt is None:
                continue
            obj = self._storage(rt).objects.get(namespace, {}).get(name)
            if obj is not None:
                self.delete(rt, namespace, name)

    # --- custom resource definitions -------------------------------------------------------------------

    def _accept_crd(self, crd: Obj) -> Obj:
        names = (crd.get("spec") or {}).get("names") or {}
        now = timestamp(self._clock())
        conditions = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ]
        old_status = crd.get("status") or {}
        if [c.get("type") for c in old_status.get("conditions", [])] == ["NamesAccepted", "Established"]:
            conditions = old_status["conditions"]
        versions = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
        status = {"acceptedNames": names, "conditions": conditions, "storedVersions": versions}
        return {**crd, "status": status}

    def _serve_crd(self, crd: Obj) -> None:
        from torchproof_sim.schema import resource_types_of_crd

        self._unserve_crd(crd)
        for rt in resource_types_of_crd(crd):
            self.register(rt)

    def _unserve_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        for key in [k for k, rt in self._types.items() if rt.crd_name == name]:
            del self._types[key]

    def _drop_custom_resources(self, crd: Obj) -> None:
        """Deleting a CRD deletes its objects (each with a DELETED event) and stops serving them."""
        from torchproof_sim.schema import resource_types_of_crd

        for rt in resource_types_of_crd(crd)[:1]:
            storage = self._storages.get(rt.storage)
            if storage is None:
                continue
            for obj in list(storage.items(None)):
                self._remove(rt, obj, cascade=True)
            del self._storages[rt.storage]


def _check_policy(policy: Obj, _old: Obj | None) -> Obj:
    """A ValidatingAdmissionPolicy whose expressions do not all compile is refused, as the server refuses it."""
    try:
        compile_policy(policy)
    except PolicyError as exc:
        rt = ResourceType("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies",
                          "ValidatingAdmissionPolicy", False)
        raise invalid(rt, str(policy["metadata"].get("name", "")), [(exc.field, exc.message)]) from None
    return policy


def _invalid(rt: ResourceType, name: str, path: str, message: str) -> ApiError:
    what = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return ApiError(422, "Invalid", f'{what} "{name}" is invalid: {path}: {message}',
                    {"name": name, "group": rt.group, "kind": rt.kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": message, "field": path}]})


def invalid(rt: ResourceType, name: str, causes: Iterable[tuple[str, str]]) -> ApiError:
    """A 422 Invalid naming every (field path, message) — the body kubectl and clients print."""
    causes = list(causes)
    what = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    text = ", ".join(f"{path}: {message}" for path, message in causes)
    return ApiError(422, "Invalid", f'{what} "{name}" is invalid: {text}',
                    {"name": name, "group": rt.group, "kind": rt.kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": m, "field": p}
                                for p, m in causes]})


# --- selectors ---------------------------------------------------------------------------------------


class SelectorError(ValueError):
    """A label or field selector that does not parse."""


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b` → [`a in (x,y)`, `b`]."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i].strip())
            start = i + 1
    terms.append(text[start:].strip())
    return [t for t in terms if t]


@dataclass(frozen=True)
class LabelSelector:
    """`labelSelector=` with =, ==, !=, in, notin, exists (`key`) and `!key`."""

    terms: tuple[tuple[str, str, frozenset[str]], ...]

    @property
    def empty(self) -> bool:
        return not self.terms

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        terms: list[tuple[str, str, frozenset[str]]] = []
        for term in _split_terms(text):
            words = term.split(None, 1)
            if len(words) == 2 and words[1].split(None, 1)[0] in ("in", "notin"):
                op, _, rest = words[1].partition(" ")
                rest = rest.strip()
                if not (rest.startswith("(") and rest.endswith(")")):
                    raise SelectorError(f"labelSelector {term!r}: expected a parenthesised list after {op!r}")
                values = frozenset(v.strip() for v in rest[1:-1].split(",") if v.strip())
                terms.append((words[0], op, values))
            elif "!=" in term:
                key, value = term.split("!=", 1)
                terms.append((key.strip(), "!=", frozenset([value.strip()])))
            elif "=" in term:
                key, value = term.replace("==", "=", 1).split("=", 1)
                terms.append((key.strip(), "=", frozenset([value.strip()])))
            elif term.startswith("!"):
                terms.append((term[1:].strip(), "!", frozenset()))
            else:
                terms.append((term, "exists", frozenset()))
            if not terms[-1][0] or any(c in terms[-1][0] for c in " ()!=,"):
                raise SelectorError(f"labelSelector {term!r}: invalid label key")
        return cls(tuple(terms))

    def matches(self, labels: dict[str, Any]) -> bool:
        for key, op, values in self.terms:
            present = key in labels
            value = labels.get(key)
            if op in ("=", "in") and not (present and value in values):
                return False
            if op in ("!=", "notin") and present and value in values:
                return False
            if (op == "exists" and not present) or (op == "!" and present):
                return False
        return True


@dataclass(frozen=True)
class FieldSelector:
    """`fieldSelector=` on dotted paths (metadata.name, metadata.namespace, spec.nodeName, …)."""

    terms: tuple[tuple[tuple[str, ...], bool, str], ...]

    @property
    def empty(self) -> bool:
        return not self.terms

    @classmethod
    def parse(cls, text: str) -> FieldSelector:
        terms = []
        for term in _split_terms(text):
            negate = "!=" in term
            path, sep, value = term.partition("!=" if negate else "=")
            if not sep:
                raise SelectorError(f"fieldSelector {term!r}: expected <field>=<value> or <field>!=<value>")
            terms.append((tuple(path.strip().split(".")), negate, value.lstrip("=").strip()))
        return cls(tuple(terms))

    def matches(self, obj: Obj) -> bool:
        for path, negate, expected in self.terms:
            value: Any = obj
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            actual = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            if (actual == expected) == negate:
                return False
        return True


# --- patches -----------------------------------------------------------------------------------------


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def json_copy(value: J) -> J:
    """A deep copy of JSON data (dicts, lists, scalars), several times faster than `copy.deepcopy`."""
    return cast(J, _json_copy(value))


def _json_copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if kind is list:
        return [_json_copy(v) for v in value]
    return value if kind in _ATOMIC else copy.deepcopy(value)


class PatchError(ValueError):
    """A patch that cannot apply; `failed_test` marks a JSON-patch `test` that did not hold."""

    def __init__(self, message: str, failed_test: bool = False) -> None:
        super().__init__(message)
        self.failed_test = failed_test


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a key, anything else replaces.

    The RFC's own pseudo-code (section 2), kept here rather than taken from a library: `jsonpatch` does
    RFC 6902 only, and this one copies nothing — the result shares untouched parts with `target` and new
    values with `patch`, which the store relies on for one write per node. tests/sim/test_emulator.py holds
    it to the RFC's examples (appendix A).
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = apply_merge_patch(result.get(key), value)
        else:
            result[key] = value
    return result


MERGE_KEYS = {"containers": "name", "initContainers": "name", "conditions": "type", "env": "name",
              "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort",
              "imagePullSecrets": "name", "ownerReferences": "uid"}


def apply_strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch whose well-known lists (containers, conditions, …) merge by key; `$` directives."""
    if not isinstance(patch, dict):
        return json_copy(patch)
    result = copy.copy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list):
            result[key] = [_strip_directives(v) for v in value if not _is_delete(v)]
        else:
            result[key] = apply_strategic_merge_patch(result.get(key), value)
    return result


def _is_delete(item: Any) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def _strip_directives(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: _strip_directives(v) for k, v in item.items() if not k.startswith("$")}
    return json_copy(item)


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if not all(isinstance(i, dict) and merge_key in i for i in current + patch):
        return [_strip_directives(v) for v in patch if not _is_delete(v)]
    merged = {item[merge_key]: item for item in current}
    for item in patch:
        if _is_delete(item):
            merged.pop(item[merge_key], None)
        else:
            merged[item[merge_key]] = apply_strategic_merge_patch(merged.get(item[merge_key]), item)
    return list(merged.values())


def apply_json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test; all or nothing) by the `jsonpatch` library; a `test`
    that does not hold is 422 on a real server, any other failure 400."""
    if not isinstance(operations, list):
        raise PatchError("json patch: the body must be a list of operations")
    try:
        return jsonpatch.JsonPatch(operations).apply(target)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchError(f"json patch test failed: {exc}", failed_test=True) from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError,
            IndexError, ValueError) as exc:
        raise PatchError(f"json patch: {exc}") from None
