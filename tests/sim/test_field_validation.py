"""Server-side field validation: `fieldValidation=Strict` refuses unknown and duplicate fields with the server's
400, `Warn` drops them with a `Warning` header, `Ignore` drops them silently; custom resources by their CRD's
schema, built-in types by the published schemas (kubernetes-validate)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from gadgets import GADGETS, GROUP, VERSION
from torchproof.podspec import build_pod
from torchproof.profile import parse_profile
from torchproof_sim import BackgroundCluster, run_in_thread
from torchproof_sim.fields import builtin_unknown_fields
from torchproof_sim.store import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH

NS = "testns"
GADGET_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/gadgets"
STRICT = 'Gadget in version "v1" cannot be handled as a Gadget: strict decoding error: '
needs_schemas = pytest.mark.skipif(builtin_unknown_fields("", "v1", "Pod") is None,
                                   reason="kubernetes-validate (the built-in types' schemas) is not installed")


def send(bg: BackgroundCluster, method: str, path: str, body: bytes | None,
         content_type: str = "application/json") -> tuple[int, Any, list[str]]:
    """(status, decoded body, Warning headers) of one request as the admin."""
    request = urllib.request.Request(bg.url + path, data=body, method=method, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {bg.admin_token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers.get_all("Warning") or []
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get_all("Warning") or []


def gadget(name: str, **spec: Any) -> bytes:
    return json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget", "metadata": {"name": name},
                       "spec": {"size": 1, **spec}}).encode()


def stored_spec(bg: BackgroundCluster, name: str) -> dict[str, Any] | None:
    obj = bg.emulator.get_object(GADGETS, NS, name)
    return None if obj is None else obj["spec"]


@pytest.mark.parametrize(("directive", "code", "warnings"), [
    ("Strict", 400, []),
    ("Warn", 201, ['299 - "unknown field \\"spec.foo\\""']),
    ("Ignore", 201, []),
])
def test_an_unknown_field_on_create_by_directive(background: BackgroundCluster, directive: str, code: int,
                                                 warnings: list[str]) -> None:
    status, body, headers = send(background, "POST", f"{GADGET_PATH}?fieldValidation={directive}",
                                 gadget("g", foo="bar"))
    assert (status, headers) == (code, warnings)
    if code == 400:
        assert (body["reason"], body["message"]) == ("BadRequest", STRICT + 'unknown field "spec.foo"')
        assert stored_spec(background, "g") is None
    else:
        assert stored_spec(background, "g") == {"size": 1, "colour": "red"}, "pruned"


def test_without_a_directive_the_embedded_cluster_is_strict_and_the_bare_emulator_warns(
        background: BackgroundCluster) -> None:
    status, body, _ = send(background, "POST", GADGET_PATH, gadget("g", foo="bar"))
    assert (status, body["message"]) == (400, STRICT + 'unknown field "spec.foo"')
    background.emulator.field_validation = "Warn"  # the real server's default
    status, _, headers = send(background, "POST", GADGET_PATH, gadget("g", foo="bar"))
    assert (status, headers) == (201, ['299 - "unknown field \\"spec.foo\\""'])


BAD_WRITES = [  # (case, method, path suffix, content type, body, what the server names)
    ("a duplicate field", "POST", "", "application/json",
     b'{"apiVersion": "example.torchproof.dev/v1", "kind": "Gadget", "metadata": {"name": "d"}, '
     b'"spec": {"size": 1, "size": 2}}', 'duplicate field "size"'),
    ("two unknown fields", "POST", "", "application/json", gadget("u", foo=1, bar=2),
     'unknown field "spec.foo", unknown field "spec.bar"'),
    ("unknown at the top", "POST", "", "application/json",
     json.dumps({"kind": "Gadget", "metadata": {"name": "t"}, "spec": {"size": 1}, "spce": {}}).encode(),
     'unknown field "spce"'),
    ("a merge patch", "PATCH", "/base", MERGE_PATCH, b'{"spec": {"sise": 3}}', 'unknown field "spec.sise"'),
    ("a strategic merge patch", "PATCH", "/base", STRATEGIC_MERGE_PATCH, b'{"spec": {"sise": 3}}',
     'unknown field "spec.sise"'),
    ("a JSON patch", "PATCH", "/base", JSON_PATCH, b'[{"op": "add", "path": "/spec/sise", "value": 3}]',
     'unknown field "spec.sise"'),
    ("a list item", "PATCH", "/base", MERGE_PATCH, b'{"spec": {"tags": ["a"], "low": 1, "lwo": 2}}',
     'unknown field "spec.lwo"'),
]


@pytest.mark.parametrize(("case", "method", "suffix", "content_type", "body", "named"), BAD_WRITES,
                         ids=[b[0] for b in BAD_WRITES])
def test_strict_refuses_each_kind_of_bad_write_and_changes_nothing(
        background: BackgroundCluster, case: str, method: str, suffix: str, content_type: str, body: bytes,
        named: str) -> None:
    assert send(background, "POST", GADGET_PATH, gadget("base", low=0))[0] == 201
    before = background.emulator.get_object(GADGETS, NS, "base")
    status, answer, _ = send(background, method, f"{GADGET_PATH}{suffix}?fieldValidation=Strict", body, content_type)
    assert (status, answer["reason"], answer["message"]) == (400, "BadRequest", STRICT + named)
    assert background.emulator.get_object(GADGETS, NS, "base") == before


def test_strict_accepts_what_the_schema_keeps(background: BackgroundCluster) -> None:
    """Preserved unknown fields, a merge patch's deletions and a strategic patch's directives are not unknown."""
    assert send(background, "POST", GADGET_PATH, gadget("p", extra={"anything": {"goes": 1}}))[0] == 201
    assert send(background, "PATCH", f"{GADGET_PATH}/p", b'{"spec": {"extra": null, "gone": null}}',
                MERGE_PATCH)[0] == 200
    assert send(background, "PATCH", f"{GADGET_PATH}/p", b'{"spec": {"$retainKeys": ["size"], "size": 2}}',
                STRATEGIC_MERGE_PATCH)[0] == 200
    status, _, headers = send(background, "PATCH", f"{GADGET_PATH}/p/status", b'{"status": {"free": "form"}}',
                              MERGE_PATCH)
    assert (status, headers) == (200, [])


def test_a_directive_the_server_does_not_know_is_refused(background: BackgroundCluster) -> None:
    status, body, _ = send(background, "POST", f"{GADGET_PATH}?fieldValidation=strict", gadget("x"))
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"].startswith('fieldValidation: Unsupported value: "strict"')


@needs_schemas
@pytest.mark.parametrize(("case", "method", "path", "content_type", "body", "named"), [
    ("a misspelt container field", "POST", f"/api/v1/namespaces/{NS}/pods", "application/json",
     json.dumps({"metadata": {"name": "p"}, "spec": {"containers": [
         {"name": "c", "image": "i", "imagePullPolcy": "Never"}]}}).encode(),
     'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
     'unknown field "spec.containers[0].imagePullPolcy"'),
    ("a misspelt node label map", "PATCH", "/api/v1/nodes/n", MERGE_PATCH, b'{"metadata": {"lables": {"a": "b"}}}',
     'Node in version "v1" cannot be handled as a Node: strict decoding error: unknown field "metadata.lables"'),
    ("a misspelt annotation map in a configmap", "POST", f"/api/v1/namespaces/{NS}/configmaps", "application/json",
     b'{"metadata": {"name": "c", "anotations": {}}, "data": {"k": "v"}}',
     'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
     'unknown field "metadata.anotations"'),
])
def test_built_in_types_refuse_unknown_fields_by_their_published_schema(
        background: BackgroundCluster, case: str, method: str, path: str, content_type: str, body: bytes,
        named: str) -> None:
    background.call(background.emulator.create_object("v1/nodes", {"metadata": {"name": "n"}}))
    status, answer, _ = send(background, method, f"{path}?fieldValidation=Strict", body, content_type)
    assert (status, answer["message"]) == (400, named)


@needs_schemas
def test_built_in_types_accept_any_label_and_annotation_key(background: BackgroundCluster) -> None:
    background.call(background.emulator.create_object("v1/nodes", {"metadata": {"name": "n"}}))
    patch = {"metadata": {"labels": {"torchproof.dev/x": "passed"}, "annotations": {"result.torchproof.dev/x": "{}"}}}
    assert send(background, "PATCH", "/api/v1/nodes/n?fieldValidation=Strict", json.dumps(patch).encode(),
                MERGE_PATCH)[0] == 200


@needs_schemas
def test_the_operators_pod_manifest_has_no_unknown_field() -> None:
    """The pods the operator creates would be refused by a strict server if a field were misspelt."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    profile = parse_profile(yaml.safe_load((root / "profiles" / "pytorch-20.06.yaml").read_text()))
    pod = build_pod(profile, node="gpu-0", fingerprint="f", namespace="torchproof", configmap="probe")
    find = builtin_unknown_fields("", "v1", "Pod")
    assert find is not None
    assert find(pod) == []
    assert find({**pod, "spec": {**pod["spec"], "tolerationz": []}}) == [("spec", "tolerationz")], "it bites"


@needs_schemas
@pytest.mark.parametrize("directive", ["Warn", "Ignore"])
def test_warn_and_ignore_drop_a_built_in_types_unknown_fields(background: BackgroundCluster, directive: str) -> None:
    body = {"metadata": {"name": "c"}, "data": {"k": "v"}, "datta": {"x": "y"}}
    status, created, _ = send(background, "POST", f"/api/v1/namespaces/{NS}/configmaps?fieldValidation={directive}",
                              json.dumps(body).encode())
    assert status == 201 and "datta" not in created
    stored = background.emulator.get_object("v1/configmaps", NS, "c")
    assert stored is not None and "datta" not in stored and stored["data"] == {"k": "v"}


def test_in_process_writes_are_not_field_validated() -> None:
    """The admin's in-process API (fixtures, the simulated kubelet) neither refuses nor drops a built-in type's
    unknown fields: field validation belongs to HTTP requests."""
    with run_in_thread(namespace=NS) as bg:
        created = bg.call(bg.emulator.create_object("v1/configmaps", {
            "metadata": {"name": "c", "namespace": NS}, "data": {"k": "v"}, "datta": {}}))
        assert created["datta"] == {}
