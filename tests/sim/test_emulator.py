"""The embedded API server as the kubernetes client, raw HTTP, the in-process API and kopf see it."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kopf
import kubernetes.client
import pytest
import yaml
from gadgets import GADGETS, GROUP, PLURAL, VERSION
from torchproof_sim import ApiError, ApiFaults, BackgroundCluster, EmbeddedCluster
from torchproof_sim import store as store_module
from torchproof_sim.emulator import Encodings
from torchproof_sim.store import (
    GENERATED_NAME_ATTEMPTS,
    NAME_ALPHABET,
    LabelSelector,
    PatchError,
    Store,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)

from tests.support.polling import eventually

NS = "testns"


def admin(bg: BackgroundCluster | EmbeddedCluster) -> dict[str, str]:
    """The admin's credentials: the cluster authorises every HTTP request."""
    return {"Authorization": f"Bearer {bg.admin_token}"}


def http(bg: BackgroundCluster, method: str, path: str, body: Any = None,
         content_type: str = "application/json") -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(bg.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, **admin(bg)})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def watch_lines(bg: BackgroundCluster, path: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(urllib.request.Request(bg.url + path, headers=admin(bg)), timeout=10) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def gadget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget", "metadata": {"name": name},
            "spec": {"size": 1, **spec}}


# --- CRUD and Status bodies ---------------------------------------------------------------------------


def test_crud_with_the_official_client(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    created = core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert core.read_namespaced_config_map("cm", NS).data == {"a": "1"}
    created.data = {"a": "2"}
    assert core.replace_namespaced_config_map("cm", NS, created).data == {"a": "2"}
    core.delete_namespaced_config_map("cm", NS)
    with pytest.raises(kubernetes.client.ApiException) as missing:
        core.read_namespaced_config_map("cm", NS)
    assert missing.value.status == 404


def test_not_found_and_already_exists_are_status_bodies(background: BackgroundCluster) -> None:
    code, body = http(background, "GET", f"/api/v1/namespaces/{NS}/configmaps/nope")
    assert (code, body["kind"], body["reason"], body["code"]) == (404, "Status", "NotFound", 404)
    assert http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "x"}})[0] == 201
    code, body = http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "x"}})
    assert (code, body["reason"]) == (409, "AlreadyExists")


def test_create_fills_metadata_and_generate_name(background: BackgroundCluster) -> None:
    _, first = http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"generateName": "g-"}})
    _, second = http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "b"}})
    meta = first["metadata"]
    assert meta["name"].startswith("g-") and len(meta["name"]) > 2
    assert (meta["namespace"], meta["generation"]) == (NS, 1)
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    _, listing = http(background, "GET", f"/api/v1/namespaces/{NS}/configmaps")
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert listing["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]


def test_a_generated_name_is_drawn_as_the_api_server_draws_it() -> None:
    name = store_module.generate_name("x" * 70)
    assert name[:58] == "x" * 58 and len(name) == 63 and set(name[58:]) <= set(NAME_ALPHABET)


def test_a_generated_name_that_is_taken_is_drawn_again_up_to_eight_attempts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    configmaps = store.resolve("v1/configmaps")
    store.create(configmaps, "default", {"metadata": {"name": "g-taken"}})
    draws = iter(["taken"] * (GENERATED_NAME_ATTEMPTS - 1) + ["fresh"])
    monkeypatch.setattr(store_module, "generate_name", lambda base: base + next(draws))
    created = store.create(configmaps, "default", {"metadata": {"generateName": "g-"}})
    assert created["metadata"]["name"] == "g-fresh"  # the eighth attempt
    monkeypatch.setattr(store_module, "generate_name", lambda base: base + "taken")
    with pytest.raises(ApiError) as caught:
        store.create(configmaps, "default", {"metadata": {"generateName": "g-"}})
    assert (caught.value.code, caught.value.reason) == (409, "AlreadyExists")
    with pytest.raises(ApiError) as named:  # a name asked for is never replaced
        store.create(configmaps, "default", {"metadata": {"name": "g-fresh"}})
    assert named.value.code == 409


# --- selectors ------------------------------------------------------------------------------------------


def test_label_selectors_on_list(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    for name, labels in (("a", {"gpu": "t4", "zone": "x"}), ("b", {"gpu": "a100"}), ("c", {})):
        core.create_node({"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        return sorted(n.metadata.name for n in core.list_node(label_selector=selector).items)

    assert names("gpu=t4") == names("gpu==t4") == ["a"]
    assert names("gpu!=t4") == ["b", "c"]
    assert names("gpu in (t4, a100)") == ["a", "b"]
    assert names("gpu notin (t4)") == ["b", "c"]
    assert names("gpu") == ["a", "b"]
    assert names("!zone") == ["b", "c"]
    assert names("gpu,zone=x") == ["a"]


def test_field_selectors_on_pods(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    for name, node in (("p1", "n1"), ("p2", "n2")):
        core.create_namespaced_pod(NS, {"metadata": {"name": name},
                                        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n2").items] \
        == ["p2"]
    assert [p.metadata.name for p in core.list_namespaced_pod(NS, field_selector="metadata.name!=p2").items] \
        == ["p1"]
    assert core.list_namespaced_pod("default").items == []


def test_bad_selector_is_a_clear_400(background: BackgroundCluster) -> None:
    code, body = http(background, "GET", "/api/v1/nodes?labelSelector=gpu%20in%20t4")
    assert code == 400 and "labelSelector" in body["message"]


# --- watch -----------------------------------------------------------------------------------------------


def test_watch_streams_changes_after_a_resource_version_with_a_label_selector(background: BackgroundCluster) -> None:
    _, before = http(background, "POST", "/api/v1/nodes", {"metadata": {"name": "old", "labels": {"k": "v"}}})
    since = before["metadata"]["resourceVersion"]
    http(background, "POST", "/api/v1/nodes", {"metadata": {"name": "n", "labels": {"k": "v"}}})
    http(background, "POST", "/api/v1/nodes", {"metadata": {"name": "other"}})
    http(background, "PATCH", "/api/v1/nodes/n", {"spec": {"unschedulable": True}}, "application/merge-patch+json")
    http(background, "PATCH", "/api/v1/nodes/n", {"metadata": {"labels": {"k": None}}},
         "application/merge-patch+json")
    events = watch_lines(background, f"/api/v1/nodes?watch=true&labelSelector=k%3Dv&resourceVersion={since}"
                                     "&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "n"), ("MODIFIED", "n"), ("DELETED", "n")]


def test_watch_without_version_lists_current_state_and_ends_at_timeout(background: BackgroundCluster) -> None:
    http(background, "POST", "/api/v1/nodes", {"metadata": {"name": "n"}})
    events = watch_lines(background, "/api/v1/watch/nodes?timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "n")]


async def test_watch_delivers_live_events(cluster: EmbeddedCluster) -> None:
    import aiohttp

    async with aiohttp.ClientSession(headers=admin(cluster)) as session:
        url = f"{cluster.url}/api/v1/namespaces/{NS}/configmaps?watch=1&timeoutSeconds=5"
        async with session.get(url) as response:
            await cluster.emulator.create_object("v1/configmaps", {"metadata": {"name": "live", "namespace": NS}})
            await cluster.emulator.delete_object("v1/configmaps", NS, "live")
            lines = [json.loads(await response.content.readline()) for _ in range(2)]
    assert [e["type"] for e in lines] == ["ADDED", "DELETED"]


# --- updates: versions, generation, status ----------------------------------------------------------------


def test_generation_bumps_on_spec_changes_only(api: kubernetes.client.ApiClient) -> None:
    objects = kubernetes.client.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, gadget("g"))

    def patch(body: dict[str, Any], status: bool = False) -> dict[str, Any]:
        fn = objects.patch_namespaced_custom_object_status if status else objects.patch_namespaced_custom_object
        result: dict[str, Any] = fn(GROUP, VERSION, NS, PLURAL, "g", body)
        return result

    labelled = patch({"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    resized = patch({"spec": {"size": 2}})
    assert resized["metadata"]["generation"] == 2
    assert int(resized["metadata"]["resourceVersion"]) > int(labelled["metadata"]["resourceVersion"])
    status = patch({"status": {"phase": "Ready"}}, status=True)
    assert status["metadata"]["generation"] == 2 and status["status"] == {"phase": "Ready"}
    assert int(status["metadata"]["resourceVersion"]) > int(resized["metadata"]["resourceVersion"])


def test_status_subresource_is_kept_apart(background: BackgroundCluster) -> None:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
    _, created = http(background, "POST", base, {**gadget("g"), "status": {"phase": "Forged"}})
    assert "status" not in created
    merge = "application/merge-patch+json"
    _, main = http(background, "PATCH", f"{base}/g", {"spec": {"size": 3}, "status": {"phase": "X"}}, merge)
    assert main["spec"]["size"] == 3 and "status" not in main
    _, status = http(background, "PATCH", f"{base}/g/status", {"spec": {"size": 9}, "status": {"phase": "Y"}}, merge)
    assert status["spec"]["size"] == 3 and status["status"] == {"phase": "Y"}
    same_rv = status["metadata"]["resourceVersion"]
    _, unchanged = http(background, "PATCH", f"{base}/g/status", {"status": {"phase": "Y"}}, merge)
    assert unchanged["metadata"]["resourceVersion"] == same_rv


def test_stale_resource_version_conflicts(background: BackgroundCluster) -> None:
    path = f"/api/v1/namespaces/{NS}/configmaps"
    _, cm = http(background, "POST", path, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    stale = cm["metadata"]["resourceVersion"]
    assert http(background, "PUT", f"{path}/c", {**cm, "data": {"a": "2"}})[0] == 200
    code, body = http(background, "PUT", f"{path}/c", {**cm, "data": {"a": "3"}})
    assert (code, body["reason"]) == (409, "Conflict")
    code, _ = http(background, "PATCH", f"{path}/c", {"metadata": {"resourceVersion": stale}, "data": {"a": "4"}},
                   "application/merge-patch+json")
    assert code == 409
    assert http(background, "GET", f"{path}/c")[1]["data"] == {"a": "2"}


def test_merge_json_and_strategic_patches_over_http(background: BackgroundCluster) -> None:
    path = f"/api/v1/namespaces/{NS}/configmaps"
    http(background, "POST", path, {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})
    _, merged = http(background, "PATCH", f"{path}/c", {"data": {"a": None, "c": "3"}},
                     "application/merge-patch+json")
    assert merged["data"] == {"b": "2", "c": "3"}
    ops = [{"op": "test", "path": "/data/b", "value": "2"}, {"op": "replace", "path": "/data/b", "value": "x"},
           {"op": "remove", "path": "/data/c"}, {"op": "add", "path": "/data/d", "value": "4"}]
    _, patched = http(background, "PATCH", f"{path}/c", ops, "application/json-patch+json")
    assert patched["data"] == {"b": "x", "d": "4"}
    code, body = http(background, "PATCH", f"{path}/c", [{"op": "test", "path": "/data/b", "value": "nope"}],
                      "application/json-patch+json")
    assert code == 422 and "test" in body["message"]
    assert http(background, "GET", f"{path}/c")[1]["data"] == {"b": "x", "d": "4"}
    assert http(background, "PATCH", f"{path}/c", {}, "application/apply-patch+yaml")[0] == 415


# RFC 7386 appendix A: (target, patch, result).
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc7386_appendix_a(target: Any, patch: Any, result: Any) -> None:
    assert apply_merge_patch(target, patch) == result


def test_json_patch_refusals_say_which_kind() -> None:
    with pytest.raises(PatchError) as failed:
        apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert failed.value.failed_test
    for bad in ([{"op": "remove", "path": "/missing"}], [{"op": "nope", "path": "/a"}], [{"path": "/a"}],
                [{"op": "add", "path": "a", "value": 1}], {"op": "add"}):
        with pytest.raises(PatchError) as refused:
            apply_json_patch({"a": 1}, bad)
        assert not refused.value.failed_test
    original = {"l": [1]}
    assert apply_json_patch(original, [{"op": "add", "path": "/l/-", "value": 2}]) == {"l": [1, 2]}
    assert original == {"l": [1]}  # all or nothing, and the stored object is never changed in place


def test_patch_functions() -> None:
    assert apply_merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {"a": {"c": 2},
                                                                                              "l": [2]}
    conditions = {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Disk", "status": "1"}]}}
    patched = apply_strategic_merge_patch(conditions, {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                                                                   "$setElementOrder/conditions": []}})
    assert patched["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "Disk", "status": "1"}]
    assert apply_json_patch({"l": [1, 3]}, [{"op": "add", "path": "/l/1", "value": 2},
                                            {"op": "add", "path": "/l/-", "value": 4},
                                            {"op": "move", "from": "/l/0", "path": "/first"}]) == {"l": [2, 3, 4],
                                                                                                    "first": 1}
    assert LabelSelector.parse("a in (x, y),!b").matches({"a": "y"})


# --- deletion --------------------------------------------------------------------------------------------


async def test_finalizers_hold_deletion_until_emptied(cluster: EmbeddedCluster) -> None:
    emulator = cluster.emulator
    events = emulator.subscribe("v1/configmaps")
    await emulator.create_object("v1/configmaps", {"metadata": {"name": "f", "namespace": NS, "finalizers": ["x/y"]}})
    await emulator.delete_object("v1/configmaps", NS, "f")
    held = emulator.get_object("v1/configmaps", NS, "f")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    await emulator.patch_object("v1/configmaps", NS, "f", {"metadata": {"finalizers": None}})
    assert emulator.get_object("v1/configmaps", NS, "f") is None
    seen = [(await anext(events))["type"] for _ in range(3)]
    assert seen == ["ADDED", "MODIFIED", "DELETED"]


async def test_deleting_an_owner_collects_its_dependents(cluster: EmbeddedCluster) -> None:
    emulator = cluster.emulator
    owner = await emulator.create_object(GADGETS, {**gadget("owner"), "metadata": {"name": "owner", "namespace": NS}})
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget", "name": "owner", "uid": owner["metadata"]["uid"]}
    for name in ("child", "other"):
        refs = [ref] if name == "child" else []
        await emulator.create_object("v1/pods", {"metadata": {"name": name, "namespace": NS, "ownerReferences": refs},
                                                 "spec": {"containers": []}})
    await emulator.delete_object(GADGETS, NS, "owner")
    assert emulator.get_object("v1/pods", NS, "child") is None
    assert emulator.get_object("v1/pods", NS, "other") is not None


def test_orphan_propagation_keeps_dependents(background: BackgroundCluster) -> None:
    _, owner = http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "o"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": owner["metadata"]["uid"]}
    dependent = {"metadata": {"name": "d", "ownerReferences": [ref]}}
    http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", dependent)
    http(background, "DELETE", f"/api/v1/namespaces/{NS}/configmaps/o", {"propagationPolicy": "Orphan"})
    assert http(background, "GET", f"/api/v1/namespaces/{NS}/configmaps/d")[0] == 200


# --- CRDs: discovery, schema, defaults -----------------------------------------------------------------------


def test_crd_is_served_and_discoverable(background: BackgroundCluster) -> None:
    _, groups = http(background, "GET", "/apis")
    assert {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION} in next(
        g["versions"] for g in groups["groups"] if g["name"] == GROUP)
    _, resources = http(background, "GET", f"/apis/{GROUP}/{VERSION}")
    by_name = {r["name"]: r for r in resources["resources"]}
    main = by_name[PLURAL]
    assert (main["kind"], main["singularName"], main["shortNames"], main["categories"], main["namespaced"]) == (
        "Gadget", "gadget", ["gdg"], ["toys"], True)
    assert {"get", "list", "watch", "create", "update", "patch", "delete"} <= set(main["verbs"])
    assert f"{PLURAL}/status" in by_name
    _, core = http(background, "GET", "/api/v1")
    assert {"nodes", "pods", "configmaps", "events", "namespaces", "secrets", "serviceaccounts"} <= {
        r["name"] for r in core["resources"]}
    _, crd = http(background, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"


def test_deleting_a_crd_stops_serving_it(background: BackgroundCluster) -> None:
    http(background, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", gadget("g"))
    http(background, "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    assert http(background, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}")[0] == 404
    assert GROUP not in {g["name"] for g in http(background, "GET", "/apis")[1]["groups"]}


@pytest.mark.parametrize(("spec", "field", "text"), [
    ({"size": 0}, "spec.size", "minimum"),
    ({"size": "big"}, "spec.size", "must be of type integer"),
    ({"size": 1, "colour": "green"}, "spec.colour", "Unsupported value"),
    ({"size": 1, "code": "ABC"}, "spec.code", "does not match"),
    ({"size": 1, "code": "abcdefghi"}, "spec.code", "too long"),
    ({"size": 1, "tags": ["a", "b", "c"]}, "spec.tags", "too long"),
    ({"colour": "red"}, "spec.size", "Required value"),
    ({"size": 1, "low": 5, "high": 2}, "spec", "low must not exceed high"),
])
def test_schema_validation_names_the_field(background: BackgroundCluster, spec: dict[str, Any], field: str,
                                           text: str) -> None:
    body = {**gadget("bad"), "spec": spec}
    code, status = http(background, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", body)
    assert (code, status["kind"], status["reason"]) == (422, "Status", "Invalid")
    causes = status["details"]["causes"]
    assert any(c["field"] == field and text in c["message"] for c in causes), causes
    assert http(background, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/bad")[0] == 404


def test_schema_cel_on_metadata(background: BackgroundCluster) -> None:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
    code, status = http(background, "POST", base, gadget("a-name-longer-than-twenty"))
    assert code == 422 and status["details"]["causes"][0]["message"] == "name too long"
    assert http(background, "POST", base, gadget("ok", low=1, high=2))[0] == 201


def test_defaults_and_pruning_on_create_and_update(background: BackgroundCluster) -> None:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
    # Pruned under the real server's default, Warn (the embedded cluster's own default is Strict)
    _, created = http(background, "POST", f"{base}?fieldValidation=Warn",
                      gadget("g", junk=1, extra={"free": {"form": True}}))
    assert created["spec"] == {"size": 1, "colour": "red", "extra": {"free": {"form": True}}}
    _, updated = http(background, "PATCH", f"{base}/g", {"spec": {"colour": None}}, "application/merge-patch+json")
    assert updated["spec"]["colour"] == "red"
    code, status = http(background, "PATCH", f"{base}/g", {"spec": {"size": 99}}, "application/merge-patch+json")
    assert code == 422 and status["details"]["causes"][0]["field"] == "spec.size"
    assert http(background, "GET", f"{base}/g")[1]["spec"]["size"] == 1


def test_a_malformed_crd_is_rejected_with_its_field(background: BackgroundCluster) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "things.x.dev"},
           "spec": {"group": "x.dev", "names": {"plural": "things"}, "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": True, "storage": True}]}}
    code, status = http(background, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 422 and [c["field"] for c in status["details"]["causes"]] == ["spec.names.kind"]


def test_a_crd_a_real_server_refuses_is_refused_over_http(background: BackgroundCluster) -> None:
    """Issue 8: a rule over a string without maxLength exceeds the server's cost budget (the CRD parts of
    this check are in test_crd_admission.py)."""
    schema = {"type": "object", "properties": {"spec": {
        "type": "object", "properties": {"a": {"type": "string"}},
        "x-kubernetes-validations": [{"rule": "self.a.startsWith('x')"}]}}}
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "things.x.dev"},
           "spec": {"group": "x.dev", "names": {"plural": "things", "kind": "Thing"}, "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": schema}}]}}
    code, status = http(background, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert (code, status["reason"]) == (422, "Invalid")
    [cause] = status["details"]["causes"]
    assert cause["field"] == ("spec.versions[0].schema.openAPIV3Schema.properties[spec]"
                              ".x-kubernetes-validations[0].rule")
    assert cause["message"].startswith("Forbidden: estimated rule cost exceeds budget by factor of")
    assert "spec.a is a string without maxLength" in cause["message"]
    assert http(background, "GET", "/apis/x.dev/v1/namespaces/testns/things")[0] == 404


def test_table_output_has_printer_columns(background: BackgroundCluster) -> None:
    http(background, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", gadget("g", size=4))
    request = urllib.request.Request(f"{background.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}",
                                     headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
                                              **admin(background)})
    with urllib.request.urlopen(request, timeout=10) as response:
        table = json.loads(response.read())
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Phase", "Age"]
    assert table["rows"][0]["cells"][:3] == ["g", 4, None]


# --- faults and counters ------------------------------------------------------------------------------------


def test_injected_faults_hit_the_chosen_verbs_only(background: BackgroundCluster) -> None:
    background.emulator.faults = ApiFaults(seed=1, rate_429=1.0)
    code, body = http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "c"}})
    assert (code, body["reason"]) == (429, "TooManyRequests")
    assert http(background, "GET", f"/api/v1/namespaces/{NS}/configmaps")[0] == 200
    background.emulator.faults = ApiFaults(seed=1, rate_500=1.0, verbs=frozenset({"list"}))
    assert http(background, "GET", f"/api/v1/namespaces/{NS}/configmaps")[0] == 500
    assert http(background, "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "c"}})[0] == 201
    counts = background.emulator.request_counts()
    assert counts["byVerb"] == {"create": 2, "list": 2} and counts["total"] == 4


def test_retry_after_header_and_cut_watches(background: BackgroundCluster) -> None:
    background.emulator.faults = ApiFaults(rate_429=1.0, verbs=frozenset({"get"}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"{background.url}/api/v1/nodes/x", headers=admin(background)),
                               timeout=10)
    assert refused.value.headers["Retry-After"] == "1"
    for name in "abc":
        http(background, "POST", "/api/v1/nodes", {"metadata": {"name": name}})
    background.emulator.faults = ApiFaults(cut_watch_after_events=2)
    assert len(watch_lines(background, "/api/v1/nodes?watch=true&timeoutSeconds=5")) == 2


def test_faults_are_reproducible_from_the_seed() -> None:
    def draws() -> list[int | None]:
        faults = ApiFaults(seed=7, rate_500=0.2, rate_409=0.2)
        return [None if e is None else e.code for _, e in (faults.draw("patch") for _ in range(50))]

    assert draws() == draws() and {500, 409, None} <= set(draws())


# --- in-process API -----------------------------------------------------------------------------------------


async def test_in_process_api_shares_state_and_copies(cluster: EmbeddedCluster) -> None:
    emulator = cluster.emulator
    events = emulator.subscribe("v1/nodes")
    await emulator.create_object("v1/nodes", {"metadata": {"name": "n", "labels": {"gpu": "t4"}}})
    node = emulator.get_object("v1/nodes", None, "n")
    assert node is not None
    node["metadata"]["labels"]["gpu"] = "mutated"
    assert emulator.list_objects("v1/nodes", label_selector="gpu=t4")[0]["metadata"]["name"] == "n"
    patched = await emulator.patch_object("v1/nodes", None, "n", {"status": {"capacity": {"nvidia.com/gpu": "1"}}},
                                          subresource="status")
    assert patched["status"]["capacity"] == {"nvidia.com/gpu": "1"}
    assert [(await anext(events))["type"] for _ in range(2)] == ["ADDED", "MODIFIED"]
    with pytest.raises(ApiError) as missing:
        await emulator.delete_object("v1/nodes", None, "nope")
    assert missing.value.code == 404
    assert emulator.get_object("v1/nodes", None, "nope") is None



async def test_writes_never_change_an_object_already_stored_or_sent(cluster: EmbeddedCluster) -> None:
    """Copy-on-write: events, before-images and results are shared, so no later write may touch them."""
    emulator, store = cluster.emulator, cluster.emulator.store
    seen: list[tuple[dict[str, Any], dict[str, Any] | None, str]] = []
    store.subscribe(store.resolve("v1/nodes"), lambda e, before: seen.append((e["object"], before, json.dumps(
        [e["object"], before], sort_keys=True))))
    shared = emulator.subscribe("v1/nodes", shared=True)
    await emulator.create_object("v1/nodes", {"metadata": {"name": "n", "labels": {"a": "1"}},
                                              "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    await emulator.patch_object("v1/nodes", None, "n", {"spec": {"unschedulable": True}})
    await emulator.patch_object("v1/nodes", None, "n", {"metadata": {"labels": {"b": "2"}}})
    await emulator.patch_object("v1/nodes", None, "n", {"status": {"phase": "x"}}, subresource="status")
    await emulator.patch_object("v1/nodes", None, "n", {"metadata": {"finalizers": ["f"]}})
    await emulator.delete_object("v1/nodes", None, "n")
    await emulator.patch_object("v1/nodes", None, "n", {"metadata": {"finalizers": None}})
    assert [json.dumps([obj, before], sort_keys=True) for obj, before, _ in seen] == [s for _, _, s in seen]
    versions = [(obj["metadata"]["resourceVersion"], before and before["metadata"]["resourceVersion"])
                for obj, before, _ in seen]
    assert all(b == a for (_, b), (a, _) in zip(versions[1:], versions, strict=False))
    assert (await anext(shared))["object"] is seen[0][0]

# --- kopf ---------------------------------------------------------------------------------------------------


async def test_kopf_operator_sees_nodes_and_custom_resources(cluster: EmbeddedCluster,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    registry = kopf.OperatorRegistry()
    seen_nodes: list[str] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 2
        settings.watching.client_timeout = 5
        settings.networking.request_timeout = 10

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.url, insecure=True, token=cluster.admin_token)

    @kopf.on.event("v1", "nodes", registry=registry)
    def node_seen(name: str, **_: Any) -> None:
        seen_nodes.append(name)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def gadget_created(patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Seen"

    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, clusterwide=True, standalone=True,
                                             stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await cluster.emulator.create_object("v1/nodes", {"metadata": {"name": "gpu-node"}})
        await cluster.emulator.create_object(GADGETS, {**gadget("g"), "metadata": {"name": "g", "namespace": NS}})
        await eventually(lambda: "gpu-node" in seen_nodes, "kopf to see the node")
        status = await eventually(lambda: (emulator_obj := cluster.emulator.get_object(GADGETS, NS, "g"))
                                  and emulator_obj.get("status"), "the handler's status")
        assert status["phase"] == "Seen"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_apply_yaml_creates_then_replaces_and_rejects_bad_files_whole(cluster: EmbeddedCluster,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "gadgets.yaml"
    path.write_text(yaml.safe_dump_all([gadget("a", size=2), gadget("b")]))
    assert [o["metadata"]["namespace"] for o in await cluster.apply_yaml(path)] == [NS, NS]
    path.write_text(yaml.safe_dump(gadget("a", size=5)))
    (replaced,) = await cluster.apply_yaml(path)
    assert (replaced["spec"]["size"], replaced["metadata"]["generation"]) == (5, 2)
    path.write_text(yaml.safe_dump_all([gadget("c"), {"apiVersion": "v1", "kind": "Nope", "metadata": {"name": "x"}}]))
    with pytest.raises(ValueError, match="document 1: no resource of kind 'Nope'"):
        await cluster.apply_yaml(path)
    assert cluster.emulator.get_object(GADGETS, NS, "c") is None


def test_a_conflict_is_injected_only_into_conditional_writes() -> None:
    def codes(conditional: bool) -> set[int | None]:
        faults = ApiFaults(seed=3, rate_409=1.0)
        return {None if e is None else e.code for _, e in (faults.draw("patch", conditional) for _ in range(20))}

    assert codes(True) == {409} and codes(False) == {None}


def test_encodings_decode_to_what_json_dumps_writes() -> None:
    encode = Encodings(size=8)
    shared = {"containers": [{"name": "probe", "env": [{"name": "X", "value": '{"a": "\\u00e9"}'}]}]}
    objects: list[dict[str, Any]] = [
        {}, {"a": {}}, {"a": []}, {"metadata": {"name": "é", "labels": {"k": "v"}}, "spec": shared},
        {"metadata": {"name": "n"}, "spec": shared, "status": {"phase": "Running", "n": 1.5, "ok": True,
                                                               "none": None, "nested": {"deep": {"x": [1]}}}},
        {"spec": shared, "weird": {1: "int key", "s": ["a", {"b": None}]}, "t": (1, 2)}, {2: shared, "k\u00e9y": 1},
        {"spec": shared, "big": 2**70},  # beyond 64 bits: orjson refuses it, json writes it
    ]
    for _ in range(3):  # the second and third rounds come (partly) from the cache
        for obj in objects:
            assert json.loads(encode(obj)) == json.loads(json.dumps(obj))
            line = encode.event_line({"type": "MODIFIED", "object": obj})
            assert line.endswith(b"}\n") and b"\n" not in line[:-1]
            assert json.loads(line) == json.loads(json.dumps({"type": "MODIFIED", "object": obj}))


async def test_an_object_name_that_is_not_an_rfc_1123_subdomain_is_refused(cluster: EmbeddedCluster) -> None:
    for name in ("evil/passed", "Upper", "a=b", "-dash", "x" * 254):
        with pytest.raises(ApiError) as refused:
            await cluster.emulator.create_object("v1/nodes", {"metadata": {"name": name}})
        assert refused.value.code == 422 and "metadata.name" in refused.value.message, name
    await cluster.emulator.create_object("v1/nodes", {"metadata": {"name": "gpu-1.rack-2"}})
