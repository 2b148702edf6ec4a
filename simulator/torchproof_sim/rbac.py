"""Authentication and RBAC authorisation for the embedded API server, as a real one does them.

Bearer tokens name users; each request's attributes are checked against the Roles, ClusterRoles and
bindings *stored in the cluster*, so whatever `deploy/rbac` grants is exactly what its ServiceAccount may
do here. Every request is counted by (user, verb, group, resource, namespace, allowed): tests compare what
the operator called with what it was granted, both ways. Pure: no I/O, the store is read at each request.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torchproof_sim.store import ApiError, Obj, Store

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES = f"{RBAC_GROUP}/v1/roles"
CLUSTER_ROLES = f"{RBAC_GROUP}/v1/clusterroles"
ROLE_BINDINGS = f"{RBAC_GROUP}/v1/rolebindings"
CLUSTER_ROLE_BINDINGS = f"{RBAC_GROUP}/v1/clusterrolebindings"
SERVICE_ACCOUNTS = "v1/serviceaccounts"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
# Kubernetes' bootstrap policy for URLs outside the resource API (discovery, version, health, OpenAPI).
DISCOVERY_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                  "/readyz", "/version", "/version/")
PUBLIC_INFO_URLS = ("/healthz", "/livez", "/readyz", "/version", "/version/")


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


ANONYMOUS = User("system:anonymous", (UNAUTHENTICATED,))
ADMIN = User("admin", (MASTERS, AUTHENTICATED))


def service_account_user(namespace: str, name: str) -> User:
    return User(f"system:serviceaccount:{namespace}:{name}",
                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED))


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, as the API server's RequestInfo has it; `resource` None: a URL request."""

    verb: str
    path: str
    resource: str | None = None
    group: str = ""
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None

    @property
    def combined(self) -> str:
        """`pods`, `pytorchreleaseprofiles/status`: what a rule's `resources` names."""
        return f"{self.resource}/{self.subresource}" if self.subresource else str(self.resource)


@dataclass(frozen=True)
class Call:
    """One recorded kind of request; `resource` includes the subresource, or is the path of a URL request."""

    user: str
    verb: str
    group: str
    resource: str
    namespace: str | None
    allowed: bool


def _any(values: Iterable[Any], wanted: str) -> bool:
    listed = [str(v) for v in values or ()]
    return "*" in listed or wanted in listed


def _resource_matches(rule_resources: Iterable[Any], attrs: Attributes) -> bool:
    for resource in (str(r) for r in rule_resources or ()):
        if resource in ("*", attrs.combined):
            return True
        if attrs.subresource and resource == f"*/{attrs.subresource}":
            return True
    return False


def _url_matches(rule_urls: Iterable[Any], path: str) -> bool:
    for url in (str(u) for u in rule_urls or ()):
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    """One PolicyRule against one request, as Kubernetes' RBAC authorizer matches them."""
    if not _any(rule.get("verbs") or (), attrs.verb):
        return False
    if attrs.resource is None:
        return _url_matches(rule.get("nonResourceURLs") or (), attrs.path)
    if not _any(rule.get("apiGroups") or (), attrs.group) or not _resource_matches(rule.get("resources") or (), attrs):
        return False
    names = [str(n) for n in rule.get("resourceNames") or ()]
    return not names or (attrs.name is not None and attrs.name in names)


def _binds(binding: Obj, user: User, namespace: str | None) -> bool:
    """Whether a binding's subjects name the user; a ServiceAccount subject without a namespace is in the
    RoleBinding's own (`namespace`), as the API server reads it."""
    for subject in binding.get("subjects") or ():
        if not isinstance(subject, dict):
            continue
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "User" and name == user.name:
            return True
        if kind == "Group" and name in user.groups:
            return True
        if kind == "ServiceAccount":
            sa_namespace = subject.get("namespace") or namespace
            if sa_namespace and user.name == f"system:serviceaccount:{sa_namespace}:{name}":
                return True
    return False


def _rules(store: Store, resource: str, namespace: str | None, name: Any) -> list[Mapping[str, Any]]:
    if not isinstance(name, str):
        return []
    try:
        role = store.get(store.resolve(resource), namespace, name)
    except ApiError:
        return []  # a binding to a role that does not exist grants nothing
    return [r for r in role.get("rules") or () if isinstance(r, dict)]


def authorize(store: Store, user: User, attrs: Attributes) -> bool:
    """RBAC over the bindings stored now: ClusterRoleBindings anywhere, RoleBindings in the request's
    namespace (to a Role there or a ClusterRole); `system:masters` is allowed everything."""
    if MASTERS in user.groups:
        return True
    for binding in store.list_items(store.resolve(CLUSTER_ROLE_BINDINGS)):
        ref = binding.get("roleRef") or {}
        if (ref.get("kind") == "ClusterRole" and _binds(binding, user, None)
                and any(rule_allows(r, attrs) for r in _rules(store, CLUSTER_ROLES, None, ref.get("name")))):
            return True
    if attrs.resource is None or attrs.namespace is None:
        return False
    for binding in store.list_items(store.resolve(ROLE_BINDINGS), attrs.namespace):
        ref = binding.get("roleRef") or {}
        if not _binds(binding, user, attrs.namespace):
            continue
        if ref.get("kind") == "Role":
            rules = _rules(store, ROLES, attrs.namespace, ref.get("name"))
        elif ref.get("kind") == "ClusterRole":
            rules = _rules(store, CLUSTER_ROLES, None, ref.get("name"))
        else:
            continue
        if any(rule_allows(r, attrs) for r in rules):
            return True
    return False


def forbidden(user: User, attrs: Attributes) -> ApiError:
    """The real server's 403 Status, message and details included."""
    if attrs.resource is None:
        return ApiError(403, "Forbidden", f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"')
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    what = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    details: dict[str, Any] = {"group": attrs.group, "kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    return ApiError(403, "Forbidden", f'{what} is forbidden: User "{user.name}" cannot {attrs.verb} resource '
                                      f'"{attrs.combined}" in API group "{attrs.group}" {scope}', details)


UNAUTHORIZED = ApiError(401, "Unauthorized", "Unauthorized")


class Access:
    """The cluster's authenticator and authoriser: tokens to users, RBAC from the store, a record of calls."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.admin_token = secrets.token_urlsafe(24)
        self._tokens: dict[str, tuple[str, str] | None] = {self.admin_token: None}  # None: the admin
        self._minted: dict[tuple[str, str], str] = {}
        self.calls: collections.Counter[Call] = collections.Counter()

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token for a ServiceAccount (valid while the ServiceAccount exists), as TokenRequest mints."""
        key = (namespace, name)
        if key not in self._minted:
            token = secrets.token_urlsafe(24)
            self._tokens[token] = key
            self._minted[key] = token
        return self._minted[key]

    def authenticate(self, authorization: str | None) -> User:
        """No bearer token (no header, another scheme, an empty token): `system:anonymous`, as the API
        server's bearer-token authenticator passes such requests on; a token this cluster did not mint, or
        whose ServiceAccount is gone: 401, even where anonymous requests are allowed."""
        parts = (authorization or "").strip().split(" ")
        if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
            return ANONYMOUS
        if parts[1] not in self._tokens:
            raise UNAUTHORIZED
        account = self._tokens[parts[1]]
        if account is None:
            return ADMIN
        try:
            self.store.get(self.store.resolve(SERVICE_ACCOUNTS), *account)
        except ApiError:
            raise UNAUTHORIZED from None
        return service_account_user(*account)

    def check(self, authorization: str | None, attrs: Attributes) -> User:
        """The request's user, or the ApiError (401, 403) to answer instead; either way it is recorded."""
        user = self.authenticate(authorization)
        allowed = authorize(self.store, user, attrs)
        resource = attrs.path if attrs.resource is None else attrs.combined
        self.calls[Call(user.name, attrs.verb, attrs.group, resource, attrs.namespace, allowed)] += 1
        if not allowed:
            raise forbidden(user, attrs)
        return user

    def calls_of(self, user: str) -> list[Call]:
        return [call for call in self.calls if call.user == user]

    def denials(self) -> list[Call]:
        return [call for call in self.calls if not call.allowed]


def bootstrap_policy() -> list[tuple[str, Obj]]:
    """The default roles every API server creates that matter here: discovery for anyone authenticated,
    version and health for everyone, and cluster-admin for `system:masters`."""
    def cluster_role(name: str, rules: list[Obj]) -> tuple[str, Obj]:
        return CLUSTER_ROLES, {"metadata": {"name": name}, "rules": rules}

    def binding(name: str, *groups: str) -> tuple[str, Obj]:
        return CLUSTER_ROLE_BINDINGS, {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups]}

    return [
        cluster_role("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                       {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        binding("cluster-admin", MASTERS),
        cluster_role("system:discovery", [{"nonResourceURLs": list(DISCOVERY_URLS), "verbs": ["get"]}]),
        binding("system:discovery", AUTHENTICATED),
        cluster_role("system:public-info-viewer", [{"nonResourceURLs": list(PUBLIC_INFO_URLS), "verbs": ["get"]}]),
        binding("system:public-info-viewer", AUTHENTICATED, UNAUTHENTICATED),
    ]


CLUSTER_SCOPED_KINDS = frozenset({"ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition"})
BINDING_KINDS = frozenset({"RoleBinding", "ClusterRoleBinding"})


def kustomize_namespace(directory: Path, namespace: str) -> list[Obj]:
    """The resources a kustomization lists (files only, no generators), with kustomize's `namespace:`
    transformer applied: namespaced objects, and ServiceAccount subjects of bindings with no namespace (or
    `default`), move into `namespace`. Read here rather than rendered by kubectl, so that `torchproof
    simulate` needs no kubectl; tests/sim/test_authorization.py checks it against `kubectl kustomize`."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    docs: list[Obj] = []
    for resource in kustomization.get("resources") or ():
        docs += [d for d in yaml.safe_load_all((directory / str(resource)).read_text()) if isinstance(d, dict)]
    return [_in_namespace(doc, namespace) for doc in docs]


def _in_namespace(doc: Obj, namespace: str) -> Obj:
    doc = {**doc, "metadata": dict(doc.get("metadata") or {})}
    if doc.get("kind") not in CLUSTER_SCOPED_KINDS:
        doc["metadata"]["namespace"] = namespace
    if doc.get("kind") in BINDING_KINDS:
        doc["subjects"] = [{**s, "namespace": namespace}
                           if s.get("kind") == "ServiceAccount" and s.get("namespace") in (None, "", "default")
                           else s for s in doc.get("subjects") or ()]
    return doc


def granted(docs: Sequence[Obj]) -> Iterator[tuple[str, str, str, str | None]]:
    """(verb, group, resource, namespace) each rule of rendered Roles and ClusterRoles grants, expanded;
    a ClusterRole's grants have namespace None (everywhere), a Role's its own. Wildcards stay `*`."""
    for doc in docs:
        if doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        namespace = (doc.get("metadata") or {}).get("namespace") if doc["kind"] == "Role" else None
        for rule in doc.get("rules") or ():
            for group in rule.get("apiGroups") or ():
                for resource in rule.get("resources") or ():
                    for verb in rule.get("verbs") or ():
                        yield str(verb), str(group), str(resource), namespace
