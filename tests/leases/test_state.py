"""Allocation state kept by the leases machine: stream entries vs snapshots, stale leaders; liveness on
stream time; dual announcement. Pure: no Redis, no asyncio."""

from __future__ import annotations

import dataclasses

from l2lb.core.leases_machine import AllocationReceived, AllocationSnapshotReceived, HeartbeatReceived, Tick
from l2lb.core.messages import AllocationSnapshot
from tests.leases.helpers import Driver, alloc, hb


def test_stream_order_and_snapshot_merge() -> None:
    d = Driver()
    m = d.m
    d(AllocationReceived(alloc("ns/a", "198.51.100.1", seq=5)))
    d(AllocationReceived(alloc("ns/a", "198.51.100.9", seq=4)))  # older: ignored
    assert m.allocations["ns/a"].ips == ("198.51.100.1",) and m.alloc_order["ns/a"] == (1, 5)
    d(AllocationReceived(alloc("ns/b", "198.51.100.2", seq=7)))
    d(AllocationReceived(alloc("ns/c", "198.51.100.3", seq=2)))
    # snapshot taken at seq 6: knows an older ns/a, not ns/b (created after), not ns/c (deleted before)
    snap = AllocationSnapshot(term=1, seq=6, allocations=(alloc("ns/a", "198.51.100.7", seq=3),
                                                          alloc("ns/d", "198.51.100.4", seq=6)))
    d(AllocationSnapshotReceived(snap))
    assert m.allocations["ns/a"].ips == ("198.51.100.1",)  # our newer entry wins
    assert set(m.allocations) == {"ns/a", "ns/b", "ns/d"}
    assert m.snapshot_loaded
    # a newer allocator term replaces everything it names
    new_a = dataclasses.replace(alloc("ns/a", "198.51.100.8", seq=1), term=2)
    d(AllocationSnapshotReceived(AllocationSnapshot(term=2, seq=1, allocations=(new_a,))))
    assert m.allocations["ns/a"].ips == ("198.51.100.8",)
    assert set(m.allocations) == {"ns/a"}


def test_dual_announcement_is_reported() -> None:
    d = Driver()
    d(HeartbeatReceived(hb("a", serving={"198.51.100.1": 5})))
    d(HeartbeatReceived(hb("b", serving={"198.51.100.1": 6, "198.51.100.2": 1})))
    d(Tick())
    assert d.m.dual == ["198.51.100.1"]
    d(HeartbeatReceived(hb("a", seq=2, serving={})))
    d(Tick())
    assert d.m.dual == []


def test_liveness_runs_on_stream_time_not_on_our_lag() -> None:
    d = Driver(mono=1000.0, missed=3, lag_tolerance_ms=2000)
    alive = d.m.tracker.is_alive
    t = 5000.0
    for i in range(5):  # two nodes heartbeating every 100 ms (stream time)
        d(HeartbeatReceived(hb("a", seq=i + 1), at=t + i * 0.1))
        d(HeartbeatReceived(hb("b", seq=i + 1), at=t + i * 0.1))
    d.mono += 1.5  # we stall for 1.5 s, then read the backlog
    for i in range(5, 20):
        d(HeartbeatReceived(hb("a", seq=i + 1), at=t + i * 0.1))
        d(HeartbeatReceived(hb("b", seq=i + 1), at=t + i * 0.1))
        d(Tick())
    assert alive("a") and alive("b")
    for i in range(20, 24):  # only a goes on: b is 0.4 s behind in stream time
        d(HeartbeatReceived(hb("a", seq=i + 1), at=t + i * 0.1))
    d(Tick())
    assert alive("a") and not alive("b")
    # a lone node that stops: found dead once our clock passes the lag tolerance + timeout
    d(Tick())
    assert alive("a")
    d.mono += 2.0 + 0.2
    d(Tick())
    assert alive("a")
    d.mono += 0.2
    d(Tick())
    assert not alive("a")
