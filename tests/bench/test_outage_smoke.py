"""The outage benchmark on a tiny fleet: lists back off during the outage, and the informer recovers after it."""

from __future__ import annotations

import asyncio

from bench.outage import measure


def test_an_outage_is_measured_in_lists_and_recovery() -> None:
    figures = asyncio.run(measure(20, 3.0))
    assert 1 <= figures["listsDuringOutage"] <= 5, figures  # backing off from 1 s: about 3, a constant retry 3+
    assert figures["listsAfter"] >= 1 and figures["secondsToSeeAChangeAfter"] >= 0
