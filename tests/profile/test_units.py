"""The profile's durations and quantities mean what Kubernetes says they mean.

The core parses them itself (profile.py): `kubernetes.utils` would do it, but importing it loads the whole
client (`kubernetes.client`), which the core may not import. So the library is the oracle here: for every
string the CRD's pattern admits, the core's value is the library's.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from kubernetes.utils.duration import parse_duration as k8s_duration
from kubernetes.utils.duration import reDuration as K8S_DURATION
from kubernetes.utils.quantity import parse_quantity as k8s_quantity
from torchproof.crdmodel import schema_pattern
from torchproof.profile import DURATION, QUANTITY, _quantity, parse_duration

durations = st.from_regex(schema_pattern(DURATION), fullmatch=True)
quantities = st.from_regex(schema_pattern(QUANTITY), fullmatch=True).filter(lambda q: len(q) <= 32)


@given(durations)
def test_a_duration_is_the_seconds_kubernetes_reads(text: str) -> None:
    # kubernetes.utils reads GEP-2257 durations: at most 5 digits a part and 4 parts (and ms, which the CRD
    # does not take); where both read a text, they agree.
    assume(K8S_DURATION.match(text))
    assert parse_duration(text) == int(k8s_duration(text).total_seconds())


@given(quantities)
def test_a_quantity_is_the_amount_kubernetes_reads(text: str) -> None:
    assert _quantity(text) == Decimal(k8s_quantity(text))


def test_the_crd_takes_one_spelling_where_kubernetes_takes_several() -> None:
    # Kubernetes reads these; the CRD refuses them (one spelling per amount keeps spec hashes stable).
    for text in ("1e3", "+1", ".5", "1E3"):
        assert k8s_quantity(text) is not None
        assert not schema_pattern(QUANTITY).search(text)
    for text in ("100ms", "1h0ms"):
        assert k8s_duration(text) is not None
        assert not schema_pattern(DURATION).search(text)


def test_patterns_are_read_as_the_api_server_reads_them() -> None:
    # Go's regexp: \d is ASCII, and $ ends the text. Python alone would take both of these.
    for bad in ("\u0660h", "168h\n"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("\u0664Gi", "1Gi\n"):
        with pytest.raises(ValueError):
            _quantity(bad)
