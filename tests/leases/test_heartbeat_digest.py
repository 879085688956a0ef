"""Heartbeats that leave out an unchanged serving map (``serving_omitted`` + ``serving_digest``): the leases
service puts the last full map back before anything looks at the heartbeat, treats an unmatched one as
"map unknown" (liveness only), waits for unknown maps before adopting holders, and still detects dual
announcement. Real Redis; fake announcers that omit like the real one (tests/leases/fakes.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.core.leases_machine import AllocationsLoaded, Command, HeartbeatReceived, Metric, Tick
from l2lb.core.messages import Heartbeat, decode, serving_digest
from l2lb.obs.metrics import REGISTRY
from tests.leases.harness import Harness, wait_for
from tests.leases.helpers import Driver, hb

IPS = [f"198.51.100.{60 + i}" for i in range(4)]


def _kind(kind: str) -> float:
    return REGISTRY.get_sample_value("l2lb_leases_heartbeat_serving_total", {"serving": kind}) or 0.0


def _omitted(node: str, seq: int, serving: dict[str, int], instance: str = "i1") -> Heartbeat:
    return dataclasses.replace(hb(node, seq=seq, instance=instance), serving_digest=serving_digest(serving),
                               serving_omitted=True)


def _full(node: str, seq: int, serving: dict[str, int], instance: str = "i1") -> Heartbeat:
    return dataclasses.replace(hb(node, seq=seq, instance=instance, serving=serving),
                               serving_digest=serving_digest(serving))


def _served(cmds: list[Command]) -> tuple[int, int, int]:
    """(full, omitted, unknown) heartbeats counted by the machine's Metric commands."""
    kinds = [c.labels[0] for c in cmds if isinstance(c, Metric) and c.name == "l2lb_leases_heartbeat_serving_total"]
    return kinds.count("full"), kinds.count("omitted"), kinds.count("unknown")


def _driver(**params: Any) -> Driver:
    d = Driver(mono=100.0, **params)
    d(AllocationsLoaded(None))
    return d


def test_omitted_map_is_the_last_full_one_same_object() -> None:
    d = _driver()
    nodes = d.m.tracker.nodes
    m = {IPS[0]: 7, IPS[1]: 8}
    d(HeartbeatReceived(_full("a", 1, m)))
    stored = nodes["a"].heartbeat.serving
    assert stored == m
    d(HeartbeatReceived(_omitted("a", 2, m)))
    cur = nodes["a"].heartbeat
    assert cur.seq == 2 and cur.serving is stored  # the stored dict itself, no copy
    assert d.m.seen_serving[IPS[0]].node == "a" and d.m.map_unknown == set()
    # another digest (a map we never saw in full): alive, but the map is unknown
    d(HeartbeatReceived(_omitted("a", 3, {IPS[0]: 9})))
    cur = nodes["a"].heartbeat
    assert cur.seq == 3 and cur.serving == {} and nodes["a"].alive
    assert d.m.map_unknown == {"a"}
    # a new instance (announcer restarted) with the same digest: the old instance's map does not count
    d(HeartbeatReceived(_omitted("a", 1, m, instance="i2")))
    assert nodes["a"].heartbeat.instance == "i2" and nodes["a"].heartbeat.serving == {}
    assert d.m.map_unknown == {"a"}
    d(HeartbeatReceived(_full("a", 2, m, instance="i2")))
    assert d.m.map_unknown == set() and nodes["a"].heartbeat.serving == m
    # a stale heartbeat (old instance) changes nothing, not even the stored map
    d(HeartbeatReceived(_full("a", 99, {IPS[3]: 1})))
    assert d.m.full_maps["a"][0] == "i2" and nodes["a"].heartbeat.instance == "i2"
    assert _served(d.commands) == (2, 1, 2)


def test_unchanged_map_is_not_walked_again() -> None:
    d = _driver()
    m = {IPS[0]: 7}
    d(HeartbeatReceived(_full("a", 1, m)))
    d.m.seen_serving.clear()  # a walk would put it back
    d(HeartbeatReceived(_omitted("a", 2, m)))
    assert d.m.seen_serving == {}
    d(HeartbeatReceived(_full("a", 3, {IPS[0]: 7})))  # a new full map (another dict): walked
    assert d.m.seen_serving[IPS[0]].epoch == 7


def test_dual_announcement_is_detected_with_omitted_maps() -> None:
    d = _driver()
    both = {IPS[0]: 5}
    only_b = {IPS[1]: 6}
    d(HeartbeatReceived(_full("a", 1, both)))
    d(HeartbeatReceived(_full("b", 1, {**both, **only_b})))
    for seq in range(2, 5):
        d(HeartbeatReceived(_omitted("a", seq, both)))
        d(HeartbeatReceived(_omitted("b", seq, {**both, **only_b})))
    assert d.m.tracker.nodes["b"].heartbeat.serving_omitted
    d(Tick())
    assert d.m.dual == [IPS[0]]
    # a resolved map that no longer claims it (new full map on a, then omitted): no dual any more
    d(HeartbeatReceived(_full("a", 5, {})))
    d(Tick())
    assert d.m.dual == []


def test_ready_to_elect_waits_for_unknown_maps_bounded() -> None:
    d = _driver(startup_grace_ms=300, heartbeat_full_every_ms=2000)  # started (and leader) at mono 100
    m = d.m
    d.mono += 0.5
    mp = {IPS[0]: 7}
    d(HeartbeatReceived(_omitted("a", 5, mp)))  # leases started after a's last full map
    d(HeartbeatReceived(_full("b", 5, {IPS[1]: 3})))
    assert m.maps_missing(d.now()) == ["a"] and not m.ready_to_elect(d.now())
    d(HeartbeatReceived(_full("a", 6, mp)))
    assert m.maps_missing(d.now()) == [] and m.ready_to_elect(d.now())
    # bounded: after heartbeat_full_every_ms + 1 s it goes on without the map
    d(HeartbeatReceived(_omitted("a", 1, mp, instance="other")))
    assert not m.ready_to_elect(d.now())
    d.mono = 100.0 + 3.0
    assert m.maps_missing(d.now()) == [] and m.ready_to_elect(d.now())
    # once holders are adopted an unknown map does not hold elections back
    d.mono = 100.5
    m.adopt_pending = False
    assert m.ready_to_elect(d.now())


async def _setup(h: Harness, nodes: int = 2, **kw: Any) -> None:
    for i in range(nodes):
        await h.add_node(f"node-{i}", **kw)
    h.start_leases()
    for i, ip in enumerate(IPS):
        await h.allocate(f"ns/svc{i}", ip)
    await wait_for(lambda: all(h.holder(ip) for ip in IPS), 5)


async def _heartbeats(bus: Bus, after: str) -> list[tuple[Heartbeat, int]]:
    rows: Any = await bus.redis.xrange(bus.keys.heartbeats, min=after)
    out = []
    for eid, f in rows:
        if (eid.decode() if isinstance(eid, bytes) else str(eid)) == after:
            continue
        msg = decode(f[b"m"])
        if isinstance(msg, Heartbeat):
            out.append((msg, len(f[b"m"])))
    return out


async def _last_id(bus: Bus, stream: str) -> str:
    last: Any = await bus.redis.xrevrange(stream, count=1)
    if not last:
        return "0-0"
    eid = last[0][0]
    return eid.decode() if isinstance(eid, bytes) else str(eid)


async def test_cold_started_leases_waits_for_maps_then_adopts_with_zero_moves(h: Harness) -> None:
    await _setup(h)
    await asyncio.sleep(0.6)  # steady state: the fakes omit their maps now
    assert all(a.hb_omitted > 0 for a in h.announcers.values())
    before = {ip: h.holder(ip) for ip in IPS}
    epochs = {ip: e for a in h.announcers.values() for ip, e in a.serving().items()}
    await h.leases[0].kill()
    unknown0 = _kind("unknown")
    second = h.start_leases(instance="leases-cold")  # joins after the last full maps: sees only digests
    svc = second.svc
    waited = False
    for _ in range(300):  # bounded: 3 s
        if svc.m.maps_missing(svc.now()):
            waited = True
            assert svc.m.result is None  # nothing elected while maps are missing
        if svc.m.result is not None:
            break
        await asyncio.sleep(0.01)
    assert waited and _kind("unknown") > unknown0
    assert svc.m.result is not None
    await asyncio.sleep(0.5)
    assert {ip: h.holder(ip) for ip in IPS} == before
    assert {ip: e for a in h.announcers.values() for ip, e in a.serving().items()} == epochs
    assert not [m for m in svc.m.recent_moves if m["from"] is not None]


async def test_steady_state_stream_carries_digests_and_a_full_map_every_2s(h: Harness) -> None:
    await _setup(h)
    await asyncio.sleep(0.5)
    start = await _last_id(h.bus, h.bus.keys.heartbeats)
    await asyncio.sleep(2.6)
    beats = await _heartbeats(h.bus, start)
    svc = h.leases[0].svc
    for node, a in h.announcers.items():
        mine = [(m, size) for m, size in beats if m.node == node]
        full = [m for m, _ in mine if not m.serving_omitted]
        omitted = [m for m, _ in mine if m.serving_omitted]
        assert len(mine) >= 20 and 1 <= len(full) <= 3, (node, len(mine), len(full))
        assert all(m.serving == {} and m.serving_digest == serving_digest(a.serving()) for m in omitted)
        assert all(m.serving == a.serving() for m in full)
        # leases sees the map all along
        assert svc.m.tracker.nodes[node].heartbeat.serving == a.serving()
        small = max(size for m, size in mine if m.serving_omitted)
        big = min(size for m, size in mine if not m.serving_omitted)
        assert small < big


async def test_changed_set_and_new_term_send_the_full_map_at_once(h: Harness) -> None:
    await _setup(h)
    await asyncio.sleep(0.6)
    start = await _last_id(h.bus, h.bus.keys.heartbeats)
    await h.allocate("ns/extra", "198.51.100.99")
    await wait_for(lambda: h.holder("198.51.100.99") is not None, 3)
    holder = str(h.holder("198.51.100.99"))
    a = h.announcers[holder]
    new_digest = serving_digest(a.serving())
    await asyncio.sleep(0.3)
    beats = [m for m, _ in await _heartbeats(h.bus, start) if m.node == holder]
    with_new = [m for m in beats if m.serving_digest == new_digest]
    assert len(with_new) >= 2 and not with_new[0].serving_omitted and "198.51.100.99" in with_new[0].serving
    assert any(m.serving_omitted for m in with_new)  # then digests again
    # a new leases term (restart without leader election: a later term): the next heartbeat is full
    await h.leases[0].kill()
    h.start_leases(instance="leases-term")
    term0 = a.last[0]
    await wait_for(lambda: a.last[0] > term0, 5)
    await wait_for(lambda: a.full_sent is not None and a.full_sent[2] == a.last[0], 0.3)


async def test_fake_with_full_every_zero_always_sends_the_map(h: Harness) -> None:
    await _setup(h, full_every_ms=0)
    await asyncio.sleep(0.3)
    start = await _last_id(h.bus, h.bus.keys.heartbeats)
    await asyncio.sleep(0.5)
    beats = [m for m, _ in await _heartbeats(h.bus, start)]
    assert len(beats) >= 6 and not any(m.serving_omitted for m in beats)
    assert all(a.hb_omitted == 0 for a in h.announcers.values())


def test_stored_maps_of_pruned_nodes_are_dropped() -> None:
    d = _driver()
    m = d.m
    d(HeartbeatReceived(_full("a", 1, {IPS[0]: 1})))
    d(HeartbeatReceived(_full("b", 1, {IPS[1]: 1})))
    d(HeartbeatReceived(_omitted("b", 2, {IPS[2]: 1})))  # b's map unknown
    assert set(m.full_maps) == {"a", "b"} and m.map_unknown == {"b"}
    for n in ("a", "b"):
        st = m.tracker.nodes[n]
        st.alive, st.since = False, m.hb_now(d.now()) - 7200  # dead for 2 h: pruned on the next tick
    d(Tick())
    assert m.tracker.nodes == {} and m.full_maps == {} and m._walked == {} and m.map_unknown == set()


async def test_leases_with_full_every_zero_sends_no_renewals_so_maps_stay_full(h: Harness) -> None:
    """--full-every-ms 0 (the upgrade setting): leases sends no NodeRenewal, so announcers never omit."""
    for i in range(2):
        await h.add_node(f"node-{i}")
    h.start_leases(full_every_ms=0)
    for i, ip in enumerate(IPS):
        await h.allocate(f"ns/svc{i}", ip)
    await wait_for(lambda: all(h.holder(ip) for ip in IPS), 5)
    await asyncio.sleep(0.8)
    assert all(a.renewed == 0 and a.hb_omitted == 0 and a.hb_full >= 8 for a in h.announcers.values())
    assert h.leases[0].svc.m.map_unknown == set()
