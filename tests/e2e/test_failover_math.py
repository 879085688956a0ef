"""The client-observed outage measure of tests/e2e/failover.py, on made-up probe records."""

from __future__ import annotations

import pytest

from tests.e2e.failover import outage


def test_outage_arithmetic() -> None:
    """The outage measure on made-up records: a 300 ms hole after the fault, then answers again."""
    recs = [[t / 100, t / 100 + 0.002, None] for t in range(0, 100)]
    recs += [[t / 100, None, "timeout"] for t in range(100, 130)]
    recs += [[t / 100, t / 100 + 0.002, None] for t in range(130, 200)]
    o = outage(recs, fault_at=1.0)
    assert o["lost"] == 30 and o["recovered"] is True
    assert 300 <= o["outage_ms"] <= 320
    assert o["recovered_ms"] == pytest.approx(302, abs=1)
    recs = [[t / 100, t / 100 + 0.002, None] for t in range(100)]
    recs += [[t / 100, None, "timeout"] for t in range(100, 400)]
    never = outage(recs, fault_at=1.0)
    assert never["recovered"] is False and never["recovered_ms"] is None and never["outage_ms"] > 2900
