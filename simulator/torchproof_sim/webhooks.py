"""Mutating admission webhooks, called as the API server calls them: each registered
MutatingWebhookConfiguration's webhooks in order, over HTTPS verified by its caBundle.

For a write that comes over HTTP (in-process writes are the admin's and skip admission, as the policies do):
a webhook whose rules name the operation and resource, whose namespaceSelector matches the namespace's
labels and whose objectSelector matches the object's, gets an `admission.k8s.io/v1` AdmissionReview and
may return a JSONPatch, which is applied before the write goes on to the store (and its validating
admission). A call that fails (no answer, a bad certificate, past `timeoutSeconds`, an answer that is not
a review) refuses the write with 500 under `failurePolicy: Fail` (the default) and is skipped under
`Ignore`; a webhook that says `allowed: false` refuses it with its status. `clientConfig.service` is
reached through `services` (namespace/name → host:port on loopback), with the certificate checked for
`<name>.<namespace>.svc`. Not modelled: reinvocation, `matchConditions`, `matchPolicy: Equivalent`.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import ssl
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp

from torchproof_sim.store import ApiError, LabelSelector, Obj, PatchError, ResourceType, apply_json_patch, json_copy

KEY = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
DEFAULT_TIMEOUT = 10


def _selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    """A LabelSelector object (matchLabels, matchExpressions); absent or empty selects everything."""
    if not isinstance(selector, Mapping):
        return True
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), ",".join(e.get("values") or [])
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": str(key),
                      "DoesNotExist": f"!{key}"}.get(str(op), str(key)))
    return LabelSelector.parse(",".join(terms)).matches(dict(labels))


def _rule_matches(rule: Mapping[str, Any], operation: str, rt: ResourceType) -> bool:
    def listed(values: Any, value: str) -> bool:
        return any(v == "*" or v == value or fnmatch.fnmatchcase(value, v) for v in values or ())

    scope = rule.get("scope", "*")
    in_scope = scope == "*" or (scope == "Namespaced") == rt.namespaced
    return bool(listed(rule.get("operations"), operation) and listed(rule.get("apiGroups"), rt.group)
                and listed(rule.get("apiVersions"), rt.version) and listed(rule.get("resources"), rt.plural)
                and in_scope)


class Webhooks:
    """The emulator's caller of registered mutating webhooks."""

    def __init__(self) -> None:
        self.services: dict[str, str] = {}  # "namespace/name" → "127.0.0.1:port"
        self.calls: list[str] = []  # each call's webhook name and outcome, for tests

    async def admit(self, configurations: list[Obj], rt: ResourceType, operation: str, obj: Obj,
                    namespace_labels: Mapping[str, Any] | None, user: tuple[str, tuple[str, ...]]) -> Obj:
        for config in sorted(configurations, key=lambda c: str(c["metadata"]["name"])):
            for hook in config.get("webhooks") or []:
                if not any(_rule_matches(r, operation, rt) for r in hook.get("rules") or []):
                    continue
                if rt.namespaced and not _selects(hook.get("namespaceSelector"), namespace_labels or {}):
                    continue
                if not _selects(hook.get("objectSelector"), (obj.get("metadata") or {}).get("labels") or {}):
                    continue
                obj = await self._call(hook, rt, operation, obj, user)
        return obj

    async def _call(self, hook: Mapping[str, Any], rt: ResourceType, operation: str, obj: Obj,
                    user: tuple[str, tuple[str, ...]]) -> Obj:
        name = str(hook.get("name", ""))
        meta = obj.get("metadata") or {}
        uid = str(uuid.uuid4())
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": uid, "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
            "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
            "name": meta.get("name", ""), "namespace": meta.get("namespace", ""), "operation": operation,
            "userInfo": {"username": user[0], "groups": list(user[1])}, "object": obj, "oldObject": None,
            "dryRun": False,
        }}
        try:
            answer = await self._post(hook, review)
            response = answer["response"]
            if response.get("uid") != uid:
                raise ValueError("the response's uid is not the request's")
        except (TimeoutError, OSError, aiohttp.ClientError, ssl.SSLError, ValueError, KeyError, TypeError) as exc:
            self.calls.append(f"{name}: failed: {exc}")
            if hook.get("failurePolicy", "Fail") == "Ignore":
                return obj
            raise ApiError(500, "InternalError", f'Internal error occurred: failed calling webhook "{name}": '
                                                 f"failed to call webhook: {exc}") from None
        if not response.get("allowed"):
            status = response.get("status") or {}
            self.calls.append(f"{name}: denied")
            raise ApiError(int(status.get("code") or 400), str(status.get("reason") or "BadRequest"),
                           f'admission webhook "{name}" denied the request: {status.get("message", "")}')
        raw = response.get("patch")
        if raw is None:
            self.calls.append(f"{name}: allowed")
            return obj
        if response.get("patchType") != "JSONPatch":
            raise ApiError(500, "InternalError", f'admission webhook "{name}" returned an unknown patchType')
        try:
            patched = apply_json_patch(json_copy(obj), json.loads(base64.b64decode(raw)))
        except (PatchError, ValueError) as exc:
            raise ApiError(500, "InternalError", f'Internal error occurred: admission webhook "{name}" '
                                                 f"returned an invalid patch: {exc}") from None
        self.calls.append(f"{name}: patched")
        return patched  # type: ignore[no-any-return]

    async def _post(self, hook: Mapping[str, Any], review: Obj) -> Any:
        client = hook.get("clientConfig") or {}
        context = ssl.create_default_context()
        bundle = client.get("caBundle")
        if bundle:
            context = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
        server_hostname = None
        if client.get("url"):
            url = str(client["url"])
        else:
            service = client.get("service") or {}
            where = self.services.get(f"{service.get('namespace')}/{service.get('name')}")
            if where is None:
                raise OSError(f"service {service.get('namespace')}/{service.get('name')} has no endpoints")
            url = f"https://{where}{service.get('path') or '/'}"
            server_hostname = f"{service.get('name')}.{service.get('namespace')}.svc"
        timeout = aiohttp.ClientTimeout(total=float(hook.get("timeoutSeconds") or DEFAULT_TIMEOUT))
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(url, json=review, ssl=context, server_hostname=server_hostname) as reply):
            if reply.status != 200:
                raise ValueError(f"the webhook answered {reply.status}")
            return await reply.json(content_type=None)
