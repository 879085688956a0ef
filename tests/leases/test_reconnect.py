"""Liveness around a bus outage or a Redis master change (issue 22): the nodes' heartbeat clients reconnect each
at its own pace (a command in flight to a dead master waits for its socket time-out), so after the bus came back,
the master changed, or every node was silent at once, a node not heard since then keeps its VIPs for the
reconnect grace -- and a node that really died is still declared dead, the grace later, and loses its VIPs."""

from __future__ import annotations

from typing import Any

import pytest

from l2lb.core.leases_machine import AllocationReceived, AllocationsLoaded, Log, RequestSnapshot, Tick
from tests.leases.helpers import ALL_LB, Driver, alloc

IPS = [f"198.51.100.{1 + i}" for i in range(6)]
NODES = ("a", "b", "c")


def _cluster(**params: Any) -> Driver:
    """Three nodes heartbeating every 100 ms, six Services of one IP each, sets published and renewed."""
    d = Driver(static_policies=(ALL_LB,), **params)
    d(AllocationsLoaded(None))
    for n in NODES:
        d.beat(n)
    for i, ip in enumerate(IPS):
        d(AllocationReceived(alloc(f"ns/s{i}", ip)))
    _beats(d, 1.0, NODES)
    assert {n for n, ns in d.m.published.items() if ns.vips} == set(NODES)
    return d


def _beats(d: Driver, seconds: float, nodes: tuple[str, ...], tick: bool = True) -> None:
    """``seconds`` of 100 ms heartbeats from ``nodes`` (stream time = now), a tick every 50 ms."""
    for i in range(round(seconds / 0.05)):
        d.advance(0.05)
        if i % 2 == 1:
            for n in nodes:
                d.beat(n)
        if tick:
            d(Tick())


def _holders(d: Driver) -> dict[str, str]:
    return {ip: h.node for ip, h in sorted(d.m.holders.items())}


def _dead(d: Driver) -> set[str]:
    return {n for n, st in d.m.tracker.nodes.items() if not st.alive}


def _outage(d: Driver, seconds: float) -> None:
    for _ in range(round(seconds / 0.05)):
        d.advance(0.05)
        d(Tick(bus_ok=False))


def test_nodes_whose_heartbeats_are_late_after_the_bus_returns_keep_their_vips() -> None:
    """Lab (Sentinel master SIGKILL) and simulator (seed 19, Redis SIGSTOP): leases reconnects first and reads
    node a's heartbeat at once; b's and c's clients are still finding the new master for 1.5 s. Counting their
    silence from their last heartbeat before the outage declared both dead on a's first heartbeat and moved
    their VIPs to a."""
    d = _cluster()
    before, moves = _holders(d), d.m.moves_total
    _outage(d, 1.3)
    d(Tick())  # the bus is back
    _beats(d, 1.5, ("a",))
    _beats(d, 1.0, NODES)
    assert _dead(d) == set() and d.m.moves_total == moves and _holders(d) == before
    logs = [c for c in d.commands if isinstance(c, Log) and c.message.startswith("heartbeats flow again")]
    assert logs and logs[-1].fields["why"] == "bus ready again"


@pytest.mark.parametrize("grace_ms", [1000, 2000])
def test_a_node_that_died_during_the_outage_is_dead_the_grace_later_and_loses_its_vips(grace_ms: int) -> None:
    """The grace delays only leases' own verdict (the LAN successors take a dead holder's VIPs over by themselves
    while the control plane is silent for them): c never comes back and is declared dead exactly at its timeout
    + the grace, counted from the first heartbeat read after the bus returned; its VIPs go to a and b."""
    d = _cluster(reconnect_grace_ms=grace_ms)
    before, moves = _holders(d), d.m.moves_total
    _outage(d, 1.3)
    d(Tick())
    floor = d.wall + 0.1  # the first heartbeat read after the return (stream time)
    grace = grace_ms / 1000.0
    _beats(d, 0.3 + grace - 0.05, ("a", "b"))  # up to 50 ms before c's deadline
    assert _dead(d) == set() and d.m.tracker.deadline(d.m.tracker.nodes["c"]) == pytest.approx(floor + 0.3 + grace)
    _beats(d, 0.2, ("a", "b"))
    assert _dead(d) == {"c"}
    after = _holders(d)
    assert "c" not in after.values() and d.m.moves_total == moves + sum(1 for n in before.values() if n == "c")
    assert all(after[ip] == n for ip, n in before.items() if n != "c")  # only c's VIPs moved


def test_every_node_silent_at_once_without_a_bus_error_is_our_problem_not_theirs() -> None:
    """A short Redis SIGSTOP: leases' blocking read just waits (its bus reports nothing), no heartbeat arrives for
    1.3 s of stream time, then a's does and b's and c's only later. The gap in the stream (longer than every
    node's timeout) says every node was silent at once: they get the reconnect grace."""
    d = _cluster()
    before, moves = _holders(d), d.m.moves_total
    for _ in range(26):  # 1.3 s: ticks with the bus "ok", no heartbeat
        d.advance(0.05)
        d(Tick())
    _beats(d, 1.2, ("a",))
    _beats(d, 1.0, NODES)
    assert _dead(d) == set() and d.m.moves_total == moves and _holders(d) == before
    logs = [c for c in d.commands if isinstance(c, Log) and c.message.startswith("heartbeats flow again")]
    assert logs and logs[-1].fields["why"].startswith("no heartbeat from any node for 1")


def test_the_every_node_silent_guard_holds_after_a_long_silence_too() -> None:
    """No heartbeat at all for 5 s (past the lag tolerance: the liveness clock runs on ours and the guard fires);
    when a is heard again, b and c, 1.5 s late, are not declared dead one tick later."""
    d = _cluster()
    before, moves = _holders(d), d.m.moves_total
    for _ in range(100):
        d.advance(0.05)
        d(Tick())
    assert any(isinstance(c, Log) and c.message.startswith("no heartbeat from any node") for c in d.commands)
    _beats(d, 1.5, ("a",))
    _beats(d, 1.0, NODES)
    assert _dead(d) == set() and d.m.moves_total == moves and _holders(d) == before


@pytest.mark.parametrize("master_moved", [True, False])
def test_a_node_still_on_the_old_master_keeps_its_vips_for_the_grace(master_moved: bool) -> None:
    """Sentinel named another master and leases' bus followed it without an outage of its own (bus_generation
    changed): a and b heartbeat on, c's client writes to the deposed master until its socket time-out (1.5 s).
    With the master change reported, c keeps its VIPs; without it, it is a plain 1.5 s silence of one node."""
    d = _cluster()
    before, moves = _holders(d), d.m.moves_total
    d(Tick(bus_generation=1 if master_moved else 0))
    _beats(d, 1.5, ("a", "b"))
    _beats(d, 1.0, NODES)
    if master_moved:
        assert _dead(d) == set() and d.m.moves_total == moves and _holders(d) == before
    else:
        assert "c" not in {n for ip, n in _holders(d).items() if before[ip] == "c"} and d.m.moves_total > moves


def test_another_redis_master_asks_the_allocator_for_a_snapshot_once() -> None:
    """Replication is asynchronous: the last Allocation written to the deposed master may be missing on the new
    one, and nothing would send it again (co-located chaos run: a Service's IP never announced). A master
    change asks for an allocation snapshot -- once per change, not on every tick, and not without a change."""
    d = _cluster()
    def asks() -> list[RequestSnapshot]:
        return [c for c in d.commands if isinstance(c, RequestSnapshot) and c.reason == "redis master moved"]
    d(Tick(bus_generation=0))
    d.advance(0.05)
    d(Tick(bus_generation=0))
    assert asks() == []
    d.advance(0.05)
    d(Tick(bus_generation=1))
    d.advance(0.05)
    d(Tick(bus_generation=1))
    assert asks() == [RequestSnapshot("allocations", "redis master moved")]
    d.advance(0.05)
    d(Tick(bus_ok=False, bus_generation=2))  # seen only once the bus works again
    assert len(asks()) == 1
    d.advance(0.05)
    d(Tick(bus_generation=2))
    assert len(asks()) == 2

def test_a_node_heard_after_the_return_that_dies_then_gets_its_normal_timeout() -> None:
    """The grace is for nodes not heard since the return: c heartbeats after it, then dies -- dead after its
    usual 300 ms, not after the grace."""
    d = _cluster()
    _outage(d, 1.3)
    d(Tick())
    _beats(d, 0.3, NODES)
    last_c = d.m.tracker.nodes["c"].last_seen
    _beats(d, 0.45, ("a", "b"))  # the liveness clock is stream time: it moves with a's and b's heartbeats
    assert "c" in _dead(d) and d.m.tracker.nodes["c"].since <= last_c + 0.3 + 0.101


def _lan_beats(d: Driver, seconds: float, lan: dict[str, tuple[str, ...]]) -> None:
    """Like _beats, each node in ``lan`` reporting the LAN peers it hears."""
    for i in range(round(seconds / 0.05)):
        d.advance(0.05)
        if i % 2 == 1:
            for n, heard in lan.items():
                d.beat(n, lan_heard=heard)
        d(Tick())


ALL_HEAR = {"a": ("b", "c"), "b": ("a", "c"), "c": ("a", "b")}


@pytest.mark.parametrize("c_on_the_lan", [True, False])
def test_a_node_its_lan_neighbours_no_longer_hear_gets_no_reconnect_grace(c_on_the_lan: bool) -> None:
    """c dies just after the bus came back, before its client was heard again. Leases renews its successors by
    then, so they do not take its VIPs over by themselves: the grace would darken them for 2 s. a and b, heard
    since the return, report the LAN peers they hear: without c, c is dead at once (it is silent on the LAN for
    longer than the peers' timeout already); with c, c's Redis client is merely late and keeps its VIPs."""
    d = _cluster()
    _lan_beats(d, 0.5, ALL_HEAR)  # a, b, c learn who hears whom
    before, moves = _holders(d), d.m.moves_total
    _outage(d, 1.3)
    d(Tick())
    heard = ("a", "b", "c") if c_on_the_lan else ("a", "b")
    # 0.7 s: leases elects nothing within its startup grace (500 ms) after the bus came back
    _lan_beats(d, 0.7, {"a": tuple(n for n in heard if n != "a"), "b": tuple(n for n in heard if n != "b")})
    if c_on_the_lan:
        assert _dead(d) == set() and d.m.moves_total == moves
        assert d.m.tracker.in_grace(d.m.tracker.nodes["c"], d.m.hb_now(d.now()))
    else:
        assert _dead(d) == {"c"} and "c" not in _holders(d).values()
        assert d.m.tracker.nodes["c"].since <= d.m.tracker.floor + 0.101  # at its first tick past the floor
        assert all(_holders(d)[ip] == n for ip, n in before.items() if n != "c")


def test_reports_of_nodes_that_never_heard_it_on_the_lan_are_no_evidence() -> None:
    """Nodes on another L2 segment never hear c's frames: their reports say nothing about c, which keeps the
    grace (the LAN evidence is counted only from c's own LAN neighbours)."""
    d = _cluster()
    _lan_beats(d, 0.5, {"a": ("b",), "b": ("a",), "c": ()})  # c shares no segment with a and b
    moves = d.m.moves_total
    _outage(d, 1.3)
    d(Tick())
    _lan_beats(d, 1.5, {"a": ("b",), "b": ("a",)})
    assert _dead(d) == set() and d.m.moves_total == moves
    _lan_beats(d, 1.0, {"a": ("b",), "b": ("a",)})  # c never comes back: dead after the grace
    assert _dead(d) == {"c"}
