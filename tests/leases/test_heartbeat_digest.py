"""Heartbeats that leave out an unchanged serving map (``serving_omitted`` + ``serving_digest``): the leases
service puts the last full map back before anything looks at the heartbeat, treats an unmatched one as
"map unknown" (liveness only), waits for unknown maps before adopting holders, and still detects dual
announcement. Real Redis; fake announcers that omit like the real one (tests/leases/fakes.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.core.messages import Heartbeat, decode, serving_digest
from l2lb.obs.metrics import REGISTRY
from services.leases.service import LeasesConfig, LeasesService
from tests.leases.harness import Harness, wait_for
from tests.leases.helpers import hb

IPS = [f"198.51.100.{60 + i}" for i in range(4)]


def _kind(kind: str) -> float:
    return REGISTRY.get_sample_value("l2lb_leases_heartbeat_serving_total", {"serving": kind}) or 0.0


def _omitted(node: str, seq: int, serving: dict[str, int], instance: str = "i1") -> Heartbeat:
    return dataclasses.replace(hb(node, seq=seq, instance=instance), serving_digest=serving_digest(serving),
                               serving_omitted=True)


def _full(node: str, seq: int, serving: dict[str, int], instance: str = "i1") -> Heartbeat:
    return dataclasses.replace(hb(node, seq=seq, instance=instance, serving=serving),
                               serving_digest=serving_digest(serving))


def _svc(bus: Bus, clock: list[float] | None = None, **cfg: Any) -> LeasesService:
    kw: dict[str, Any] = {} if clock is None else {"monotonic": lambda: clock[0]}
    svc = LeasesService(LeasesConfig(instance="t", leader_election=False, policy_kinds=(), **cfg), bus, **kw)
    svc.snapshot_loaded = True
    return svc


async def test_omitted_map_is_the_last_full_one_same_object(bus: Bus) -> None:
    svc = _svc(bus)
    m = {IPS[0]: 7, IPS[1]: 8}
    full, omitted0, unknown0 = _kind("full"), _kind("omitted"), _kind("unknown")
    svc.apply_heartbeat(_full("a", 1, m))
    stored = svc.tracker.nodes["a"].heartbeat.serving
    assert stored == m
    svc.apply_heartbeat(_omitted("a", 2, m))
    cur = svc.tracker.nodes["a"].heartbeat
    assert cur.seq == 2 and cur.serving is stored  # the stored dict itself, no copy
    assert svc.seen_serving[IPS[0]].node == "a" and svc.map_unknown == set()
    # another digest (a map we never saw in full): alive, but the map is unknown
    svc.apply_heartbeat(_omitted("a", 3, {IPS[0]: 9}))
    cur = svc.tracker.nodes["a"].heartbeat
    assert cur.seq == 3 and cur.serving == {} and svc.tracker.nodes["a"].alive
    assert svc.map_unknown == {"a"}
    # a new instance (announcer restarted) with the same digest: the old instance's map does not count
    svc.apply_heartbeat(_omitted("a", 1, m, instance="i2"))
    assert svc.tracker.nodes["a"].heartbeat.instance == "i2" and svc.tracker.nodes["a"].heartbeat.serving == {}
    assert svc.map_unknown == {"a"}
    svc.apply_heartbeat(_full("a", 2, m, instance="i2"))
    assert svc.map_unknown == set() and svc.tracker.nodes["a"].heartbeat.serving == m
    # a stale heartbeat (old instance) changes nothing, not even the stored map
    svc.apply_heartbeat(_full("a", 99, {IPS[3]: 1}))
    assert svc.full_maps["a"][0] == "i2" and svc.tracker.nodes["a"].heartbeat.instance == "i2"
    assert (_kind("full") - full, _kind("omitted") - omitted0, _kind("unknown") - unknown0) == (2, 1, 2)


async def test_unchanged_map_is_not_walked_again(bus: Bus) -> None:
    svc = _svc(bus)
    m = {IPS[0]: 7}
    svc.apply_heartbeat(_full("a", 1, m))
    svc.seen_serving.clear()  # a walk would put it back
    svc.apply_heartbeat(_omitted("a", 2, m))
    assert svc.seen_serving == {}
    svc.apply_heartbeat(_full("a", 3, {IPS[0]: 7}))  # a new full map (another dict): walked
    assert svc.seen_serving[IPS[0]].epoch == 7


async def test_dual_announcement_is_detected_with_omitted_maps(bus: Bus) -> None:
    svc = _svc(bus)
    both = {IPS[0]: 5}
    only_b = {IPS[1]: 6}
    svc.apply_heartbeat(_full("a", 1, both))
    svc.apply_heartbeat(_full("b", 1, {**both, **only_b}))
    for seq in range(2, 5):
        svc.apply_heartbeat(_omitted("a", seq, both))
        svc.apply_heartbeat(_omitted("b", seq, {**both, **only_b}))
    assert svc.tracker.nodes["b"].heartbeat.serving_omitted
    svc._liveness_tick()
    assert svc._dual == [IPS[0]]
    # a resolved map that no longer claims it (new full map on a, then omitted): no dual any more
    svc.apply_heartbeat(_full("a", 5, {}))
    svc._liveness_tick()
    assert svc._dual == []


async def test_ready_to_elect_waits_for_unknown_maps_bounded(bus: Bus) -> None:
    clock = [100.0]
    svc = _svc(bus, clock, startup_grace_ms=300, heartbeat_full_every_ms=2000)
    svc.started = clock[0]
    svc.leader_since = clock[0]
    clock[0] += 0.5
    m = {IPS[0]: 7}
    svc.apply_heartbeat(_omitted("a", 5, m))  # leases started after a's last full map
    svc.apply_heartbeat(_full("b", 5, {IPS[1]: 3}))
    assert svc.maps_missing() == ["a"] and not svc.ready_to_elect()
    svc.apply_heartbeat(_full("a", 6, m))
    assert svc.maps_missing() == [] and svc.ready_to_elect()
    # bounded: after heartbeat_full_every_ms + 1 s it goes on without the map
    svc.apply_heartbeat(_omitted("a", 1, m, instance="other"))
    assert not svc.ready_to_elect()
    clock[0] = 100.0 + 3.0
    assert svc.maps_missing() == [] and svc.ready_to_elect()
    # once holders are adopted an unknown map does not hold elections back
    clock[0] = 100.5
    svc.adopt_pending = False
    assert svc.ready_to_elect()


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
        if svc.maps_missing():
            waited = True
            assert svc.result is None  # nothing elected while maps are missing
        if svc.result is not None:
            break
        await asyncio.sleep(0.01)
    assert waited and _kind("unknown") > unknown0
    assert svc.result is not None
    await asyncio.sleep(0.5)
    assert {ip: h.holder(ip) for ip in IPS} == before
    assert {ip: e for a in h.announcers.values() for ip, e in a.serving().items()} == epochs
    assert not [m for m in svc.recent_moves if m["from"] is not None]


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
        assert svc.tracker.nodes[node].heartbeat.serving == a.serving()
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


async def test_stored_maps_of_pruned_nodes_are_dropped(bus: Bus) -> None:
    svc = _svc(bus)
    svc.apply_heartbeat(_full("a", 1, {IPS[0]: 1}))
    svc.apply_heartbeat(_full("b", 1, {IPS[1]: 1}))
    svc.apply_heartbeat(_omitted("b", 2, {IPS[2]: 1}))  # b's map unknown
    assert set(svc.full_maps) == {"a", "b"} and svc.map_unknown == {"b"}
    for n in ("a", "b"):
        st = svc.tracker.nodes[n]
        st.alive, st.since = False, svc.hb_now() - 7200  # dead for 2 h: pruned on the next tick
    svc._liveness_tick()
    assert svc.tracker.nodes == {} and svc.full_maps == {} and svc._walked == {} and svc.map_unknown == set()


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
    assert h.leases[0].svc.map_unknown == set()
