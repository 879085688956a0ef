"""Allocation state kept by the leases service: stream entries vs snapshots, stale leaders."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.core.messages import AllocationSnapshot
from services.leases.service import LeasesConfig, LeasesService
from tests.leases.helpers import alloc, hb


@pytest.fixture
async def svc(redis_url: str) -> AsyncIterator[LeasesService]:
    bus = await Bus.connect(redis_url, prefix="t")
    try:
        yield LeasesService(LeasesConfig(instance="x", leader_election=False, policy_kinds=()), bus)
    finally:
        await bus.close()


async def test_stream_order_and_snapshot_merge(svc: LeasesService) -> None:
    assert svc.apply_allocation(alloc("ns/a", "198.51.100.1", seq=5))
    assert not svc.apply_allocation(alloc("ns/a", "198.51.100.9", seq=4))  # older: ignored
    assert svc.allocations["ns/a"].ips == ("198.51.100.1",)
    assert svc.apply_allocation(alloc("ns/b", "198.51.100.2", seq=7))
    assert svc.apply_allocation(alloc("ns/c", "198.51.100.3", seq=2))
    # snapshot taken at seq 6: knows an older ns/a, not ns/b (created after), not ns/c (deleted before)
    snap = AllocationSnapshot(term=1, seq=6, allocations=(alloc("ns/a", "198.51.100.7", seq=3),
                                                          alloc("ns/d", "198.51.100.4", seq=6)))
    svc.apply_snapshot(snap)
    assert svc.allocations["ns/a"].ips == ("198.51.100.1",)  # our newer entry wins
    assert set(svc.allocations) == {"ns/a", "ns/b", "ns/d"}
    assert svc.snapshot_loaded
    # a newer allocator term replaces everything it names
    new_a = dataclasses.replace(alloc("ns/a", "198.51.100.8", seq=1), term=2)
    svc.apply_snapshot(AllocationSnapshot(term=2, seq=1, allocations=(new_a,)))
    assert svc.allocations["ns/a"].ips == ("198.51.100.8",)
    assert set(svc.allocations) == {"ns/a"}


async def test_dual_announcement_is_reported(svc: LeasesService) -> None:
    svc.apply_heartbeat(hb("a", serving={"198.51.100.1": 5}))
    svc.apply_heartbeat(hb("b", serving={"198.51.100.1": 6, "198.51.100.2": 1}))
    svc._liveness_tick()
    assert svc._dual == ["198.51.100.1"]
    svc.apply_heartbeat(hb("a", seq=2, serving={}))
    svc._liveness_tick()
    assert svc._dual == []


async def test_liveness_runs_on_stream_time_not_on_our_lag(redis_url: str) -> None:
    clock = [1000.0]
    bus = await Bus.connect(redis_url, prefix="t")
    try:
        svc = LeasesService(LeasesConfig(instance="x", leader_election=False, policy_kinds=(), missed=3,
                                         lag_tolerance_ms=2000), bus, monotonic=lambda: clock[0])
        t = 5000.0
        for i in range(5):  # two nodes heartbeating every 100 ms (stream time)
            svc.apply_heartbeat(hb("a", seq=i + 1), at=t + i * 0.1)
            svc.apply_heartbeat(hb("b", seq=i + 1), at=t + i * 0.1)
        clock[0] += 1.5  # we stall for 1.5 s, then read the backlog
        for i in range(5, 20):
            svc.apply_heartbeat(hb("a", seq=i + 1), at=t + i * 0.1)
            svc.apply_heartbeat(hb("b", seq=i + 1), at=t + i * 0.1)
            svc._liveness_tick()
        assert svc.tracker.is_alive("a") and svc.tracker.is_alive("b")
        for i in range(20, 24):  # only a goes on: b is 0.4 s behind in stream time
            svc.apply_heartbeat(hb("a", seq=i + 1), at=t + i * 0.1)
        svc._liveness_tick()
        assert svc.tracker.is_alive("a") and not svc.tracker.is_alive("b")
        # a lone node that stops: found dead once our clock passes the lag tolerance + timeout
        svc._liveness_tick()
        assert svc.tracker.is_alive("a")
        clock[0] += 2.0 + 0.2
        svc._liveness_tick()
        assert svc.tracker.is_alive("a")
        clock[0] += 0.2
        svc._liveness_tick()
        assert not svc.tracker.is_alive("a")
    finally:
        await bus.close()
