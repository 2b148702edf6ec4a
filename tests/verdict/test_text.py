"""Text from a result (or a kubelet, or a registry) reaches annotations, Events and the status only cleaned:
no escape sequences, controls, NUL or bidi overrides, whitespace collapsed, length bounded."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torchproof import labels as L
from torchproof.plan import Plan, PlanInput, compute_plan
from torchproof.profile import parse_profile
from torchproof.text import DROPPED, ELLIPSIS, MAX_TEXT, clean_text, clean_tree
from torchproof.views import node_view, pod_view

from tests.support.builders import make_node_body, make_result, pod_body, profile_body, terminated

T0 = 1_800_000_000.0
NAME = "pytorch-20.06"

# Each class of hostile text → what is shown.
CLASSES = [
    ("\x1b[31mred\x1b[0m", "red"),  # SGR colours
    ("ok\x1b[2J\x1b[H\x1b[1A\x1b[K", "ok"),  # clear screen, cursor home/up, erase line
    ("\x1b]0;pwned\x07text", "text"),  # OSC window title, to BEL
    ("\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\", "click"),  # OSC 8 hyperlink, to ST
    ("\x1bP1$r0m\x1b\\after", "after"),  # DCS string
    ("\x9b31mred\x9b0m", "red"),  # 8-bit CSI
    ("a\x1b(Bb\x1bc", "ab"),  # charset designation, full reset
    ("trailing ESC\x1b", "trailing ESC"),
    ("Tesla\x00T4", "TeslaT4"),  # NUL
    ("\x07bell\x08back\x7fdel\x85next", "bellbackdel next"),  # C0, DEL; NEL is whitespace
    ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override
    ("\u202aa\u202bb\u202cc\u202dd", "abcd"),  # embeddings, pop, left-to-right override
    ("\u2066x\u2067y\u2068z\u2069", "xyz"),  # isolates
    ("a\u200e\u200f\u061cb", "ab"),  # LRM, RLM, Arabic letter mark
    ("pa\u200bss\u200ced\u200d\u2060", "passed"),  # zero-width space, non-joiner, joiner, word joiner
    ("\ufeffok\u00ad", "ok"),  # BOM, soft hyphen
    ("ok\U000e0070\U000e0061\U000e007f", "ok"),  # tag characters
    ("a\ud800b\udfffc", "abc"),  # lone surrogates
    ("a\ue000b\U000f0000c", "abc"),  # private use
    ("a\n\tb\r\n c\x0b\x0cd", "a b c d"),  # line breaks and tabs
    ("\u00a0 lead\u2028and\u2029trail\u3000 ", "lead and trail"),  # other spaces
    ("a \u200b b", "a b"),  # a dropped character leaves no double space
    ("\x1b\x1b[31m[0m", "[0m"),  # an ESC alone, then a sequence: nothing of either left
]
KEPT = ["Tesla T4", "GeForce GTX 1660 Ti", "NVIDIA H200", "naïve café", "日本語のGPU", "GPU 🚀", "e\u0301",
        "RuntimeError: CUDA error: out of memory", "UntrustedResult: result.gpu.note: U+0000"]


@pytest.mark.parametrize(("text", "shown"), CLASSES)
def test_each_class_of_hostile_text_is_cleaned(text: str, shown: str) -> None:
    assert clean_text(text) == shown
    assert clean_text(shown) == shown


@pytest.mark.parametrize("text", KEPT)
def test_plain_text_in_any_script_is_kept(text: str) -> None:
    assert clean_text(text) == text


@pytest.mark.parametrize(("text", "limit", "shown"), [
    ("x" * (MAX_TEXT + 1), MAX_TEXT, "x" * (MAX_TEXT - 1) + ELLIPSIS),
    ("x" * MAX_TEXT, MAX_TEXT, "x" * MAX_TEXT),
    ("abc def ghi", 8, "abc def" + ELLIPSIS),
    ("abc defghi", 5, "abc" + ELLIPSIS),  # no space before the ellipsis
    ("\x1b[31m" * 400 + "short", 10, "short"),  # bounded after cleaning, not before
    ("abc", 1, ELLIPSIS),
    ("abc", 0, ""),
])
def test_length_is_bounded_with_an_ellipsis(text: str, limit: int, shown: str) -> None:
    assert clean_text(text, limit) == shown


def test_a_tree_has_every_string_value_cleaned_and_nothing_else_changed() -> None:
    tree = {"a": ["x\x00y", ("\u202ez", 3)], "n": 1.5, "b": None, "t": True, "k\x00": "v\x1b[1m"}
    assert clean_tree(tree) == {"a": ["xy", ("z", 3)], "n": 1.5, "b": None, "t": True, "k\x00": "v"}


def _forbidden(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in DROPPED or (c.isspace() and c != " ")]


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=400), st.integers(0, 300))
def test_any_text_comes_out_plain_bounded_and_stable(text: str, limit: int) -> None:
    shown = clean_text(text, limit)
    assert _forbidden(shown) == []
    assert "  " not in shown and shown == shown.strip()
    assert len(shown) <= limit
    assert clean_text(shown, limit) == shown


# -- through compute_plan: what a result, a kubelet or a registry says reaches objects only cleaned ---------

# Accepted by parse_result (which refuses C0 controls such as ESC and NUL), shown only cleaned.
DISGUISED = "\u202edessap\u202c \u2066\u200bboom\t\n  " + "y" * 150


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _assert_clean(value: Any) -> None:
    for text in _strings(value):
        assert _forbidden(text) == [] and "\x1b" not in text, text
        assert len(text) <= MAX_TEXT and "  " not in text, text


def _plan(node_body: dict[str, Any], pods: list[dict[str, Any]]) -> Plan:
    node = node_view(node_body)
    inp = PlanInput(profile=PROFILE, nodes=[node], pods=[pod_view(pod) for pod in pods], now=T0,
                    namespace="torchproof", configmap="cm")
    return compute_plan(inp)


def _finished(node_body: dict[str, Any], status: dict[str, Any], phase: str = "Succeeded") -> Plan:
    return _plan(node_body, [pod_body(PROFILE, node_view(node_body), phase=phase, status=status)])


def _shown(plan: Plan) -> list[Any]:
    """Everything the plan writes into objects: node patches (labels, record), Events, the status."""
    return [[u.patch for u in plan.update], [e.message for e in plan.events], plan.status]


def _record(plan: Plan) -> dict[str, Any]:
    (update,) = plan.update
    assert set(update.patch["metadata"]["labels"].values()) <= set(L.VERDICTS)  # the operator's own words
    return dict(json.loads(update.patch["metadata"]["annotations"][L.result_annotation_key(NAME)]))


PROFILE = parse_profile(profile_body())


def test_a_results_text_reaches_the_record_events_and_status_cleaned() -> None:
    def disguised(doc: dict[str, Any]) -> None:
        doc["gpu"]["devices"][0]["name"] = "Tesla T4\u202e\u2066\u200b"
        doc["checks"]["amp"]["native"] = {"error": f"RuntimeError: {DISGUISED}"}

    plan = _finished(make_node_body("t4-a"), terminated(make_result(disguised)))
    record = _record(plan)
    reason = "CheckError: amp native: RuntimeError: dessap boom " + "y" * 150
    assert plan.update[0].patch["metadata"]["labels"] == {L.label_key(NAME): "failed"}
    assert record["numbers"]["gpu"] == "Tesla T4"
    assert record["reasons"] == [reason]
    assert plan.status["failingNodes"][0]["reasons"] == [reason]
    assert any(e.message == f"node t4-a failed: {reason}" for e in plan.events)
    _assert_clean(_shown(plan))


def test_a_result_with_escapes_or_nul_is_refused_and_its_reason_is_plain() -> None:
    text = make_result(lambda d: d["gpu"]["devices"][0].update(name="Tesla\x00\x1b[2JT4"))
    plan = _finished(make_node_body("t4-a"), terminated(text))
    assert plan.update[0].patch["metadata"]["labels"] == {L.label_key(NAME): "error"}
    assert _record(plan)["reasons"] == [
        "UntrustedResult: result.gpu.devices[0].name: control character or non-text code point U+0000"]
    _assert_clean(_shown(plan))


def test_a_registrys_pull_message_reaches_the_status_and_events_cleaned() -> None:
    prefix = "\x1b[31mmanifest\x00 unknown\u202e "
    waiting = {"reason": "ImagePullBackOff", "message": prefix + "m" * 5000}
    plan = _finished(make_node_body("t4-a"), {"containerStatuses": [{"state": {"waiting": waiting}}]}, "Pending")
    shown = "manifest unknown " + "m" * (300 - len(prefix))  # the plan keeps 300 characters, then cleans them
    assert plan.status["imagePull"]["message"] == shown
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["message"] == f"cannot pull {PROFILE.image}: {shown}"
    assert any(e.reason == "DegradedTrue" and "manifest unknown mmm" in e.message for e in plan.events)
    _assert_clean(_shown(plan))


def test_what_identifies_a_record_is_kept_verbatim_so_the_verdict_stands() -> None:
    """A revalidate token is compared with the node's annotation on every pass: cleaned, it would never
    match again, and the node would be validated without end."""
    body = make_node_body("t4-a")
    token = "again  \u202e" + "t" * 1200
    body["metadata"].setdefault("annotations", {})[L.REVALIDATE_ANNOTATION] = token
    plan = _finished(body, terminated(make_result()))
    assert _record(plan)["revalidate"] == f"/{token}"
    meta = plan.update[0].patch["metadata"]
    body["metadata"]["labels"].update(meta["labels"])
    body["metadata"]["annotations"].update(meta["annotations"])
    again = _plan(body, [])
    assert (again.create, again.update) == ((), ())
