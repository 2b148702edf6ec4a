"""Text from outside the operator, made safe to show: in annotations, Events and the profile's status.

A probe result, a kubelet or a registry says what it likes; `kubectl describe`, dashboards and log viewers
then show it to a person. Escape sequences would drive their terminal (clear it, retitle it, hide lines),
bidi overrides and other invisible format characters would make one text read as another, and a long
message would crowd out the rest. So every string the core writes into an object passes `clean_text`
once, on the way out (plan.py); label values never do, because they are the operator's own four words.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

MAX_TEXT = 1000
ELLIPSIS = "…"
# Terminal escape sequences, removed whole (not only their ESC): CSI (colours, cursor moves, clears), OSC
# (window titles, hyperlinks) up to BEL or ST, DCS/SOS/PM/APC strings, other two- and three-character
# escapes, and the 8-bit CSI/OSC forms.
ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
# Dropped: controls (Cc), format characters (Cf: the bidi embeddings, overrides and isolates U+202A-U+202E
# and U+2066-U+2069, the marks U+200E, U+200F and U+061C, zero-width characters, tags), lone surrogates (Cs),
# private-use (Co) and unassigned (Cn) code points. Whitespace of any kind becomes one plain space.
DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
SPACES = re.compile(" {2,}")


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """`value` without escape sequences, controls and invisible format characters, its whitespace collapsed,
    at most `limit` characters (cut with an ellipsis). Idempotent: cleaning it again changes nothing."""
    if value.isascii() and value.isprintable() and len(value) <= limit and "  " not in value \
            and value == value.strip():
        return value  # the common case: the operator's own words
    kept: list[str] = []
    for char in ESCAPES.sub("", value):
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char) not in DROPPED:
            kept.append(char)
    text = SPACES.sub(" ", "".join(kept)).strip()
    if len(text) <= limit:
        return text
    if limit < 1:
        return ""
    return text[: limit - 1].rstrip() + ELLIPSIS


def clean_tree(value: Any, limit: int = MAX_TEXT) -> Any:
    """A JSON-like tree (dicts, lists, tuples, scalars) with `clean_text` applied to every string value.

    Keys are left as they are: the trees written are the operator's own shapes, whose keys it chose."""
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, dict):
        return {key: clean_tree(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_tree(item, limit) for item in value)
    return value
