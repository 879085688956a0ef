"""The announcer leaves its serving map out of heartbeats (only ``serving_digest``) while it is unchanged,
was sent in full less than --heartbeat-full-every-ms ago in the same leases term, and a NodeRenewal was
accepted recently (a leases that understands omitted maps). Real Redis; the service's own heartbeat
builder and publisher (no raw sockets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.core.announcer_machine import Published, PublishHeartbeat, Stop, Tick
from l2lb.core.messages import (
    Heartbeat,
    NodeAssignments,
    NodeRenewal,
    VipAssignment,
    assignments_digest,
    decode,
    encode,
    serving_digest,
)
from l2lb.obs.metrics import REGISTRY
from services.announcer.config import build_parser
from services.announcer.main import AnnouncerService
from tests.leases.harness import Harness, wait_for
from tests.leases.helpers import ALL_LB

VIPS = (VipAssignment("198.51.100.41", 5), VipAssignment("198.51.100.42", 6))


def _svc(bus: Bus, *flags: str, node: str = "n1") -> AnnouncerService:
    # heartbeats every 1 ms: each _beat below finds one due, as the timer would every 100 ms
    args = build_parser().parse_args(["--node", node, "--interfaces", "l2lb-none-[0-9]+", "--no-netlink",
                                      "--http-port", "0", "--heartbeat-interval-ms", "1", *flags])
    svc = AnnouncerService(args)
    svc.bus = bus
    return svc


def _eid() -> str:
    return f"{int(time.time() * 1000)}-0"


class Leases:
    """Plays the leases service towards one announcer: full sets and renewals with (term, seq)."""

    def __init__(self, svc: AnnouncerService, term: int = 3):
        self.svc = svc
        self.term = term
        self.seq = 0
        self.digest = ""

    async def full(self, vips: tuple[VipAssignment, ...] = VIPS, ttl_ms: int = 10_000) -> None:
        self.seq += 1
        self.digest = assignments_digest(vips)
        await self.svc.on_message(NodeAssignments("n1", self.term, self.seq, ttl_ms, time.time(), vips,
                                                   self.digest), _eid())

    async def renew(self, ttl_ms: int = 10_000) -> None:
        self.seq += 1
        await self.svc.on_message(NodeRenewal("n1", self.term, self.seq, ttl_ms, time.time(), self.digest), _eid())


async def _publish_one(svc: AnnouncerService) -> Published:
    """One timer tick that finds a heartbeat due, carried out as the service does (publish, feed back)."""
    await asyncio.sleep(0.002)
    cmds = [c for c in svc.machine.feed(Tick(time.monotonic(), time.time())) if isinstance(c, PublishHeartbeat)]
    assert len(cmds) == 1
    res = await svc.publish(cmds[0])
    svc.feed(res)
    return res


async def _beat(svc: AnnouncerService) -> tuple[Heartbeat, int]:
    """Build and publish one heartbeat as the timer does; returns it as read back from Redis."""
    assert (await _publish_one(svc)).ok
    rows: Any = await svc.bus.redis.xrevrange(svc.bus.keys.heartbeats, count=1)  # type: ignore[union-attr]
    raw = rows[0][1][b"m"]
    msg = decode(raw)
    assert isinstance(msg, Heartbeat)
    return msg, len(raw)


def _count(kind: str) -> float:
    return REGISTRY.get_sample_value("l2lb_announcer_heartbeats_total", {"serving": kind}) or 0.0


async def test_omits_an_unchanged_map_and_sends_it_full_on_every_reason(bus: Bus) -> None:
    svc = _svc(bus, "--heartbeat-full-every-ms", "300")
    lz = Leases(svc)
    full0, omitted0 = _count("full"), _count("omitted")
    await lz.full()
    want = {v.ip: v.epoch for v in VIPS}
    hb, _ = await _beat(svc)
    assert not hb.serving_omitted and hb.serving == want and hb.serving_digest == serving_digest(want)
    hb, _ = await _beat(svc)
    assert not hb.serving_omitted  # (a) no NodeRenewal accepted yet: this leases may not know omitted maps
    await lz.renew()
    hb, small = await _beat(svc)
    assert hb.serving_omitted and hb.serving == {} and hb.serving_digest == serving_digest(want)
    # (b) the full map again once --heartbeat-full-every-ms passed since the last full one
    await asyncio.sleep(0.35)
    hb, big = await _beat(svc)
    assert not hb.serving_omitted and hb.serving == want and small < big
    hb, _ = await _beat(svc)
    assert hb.serving_omitted
    # (b) a changed set: full at once, then digests again after the next renewal
    more = (*VIPS, VipAssignment("198.51.100.43", 7))
    await lz.full(more)
    hb, _ = await _beat(svc)
    assert not hb.serving_omitted and "198.51.100.43" in hb.serving
    await lz.renew()
    hb, _ = await _beat(svc)
    assert hb.serving_omitted and hb.serving_digest == serving_digest({v.ip: v.epoch for v in more})
    # (c) a new leases term (new leader): full at once, although renewals are fresh and the set is the same
    lz.term = 4
    await lz.full(more)
    hb, _ = await _beat(svc)
    assert not hb.serving_omitted and len(hb.serving) == 3
    hb, _ = await _beat(svc)
    assert hb.serving_omitted
    # (d) stopping: never omitted (and empty)
    last = [c for c in svc.machine.feed(Stop(time.monotonic(), time.time())) if isinstance(c, PublishHeartbeat)]
    assert len(last) == 1
    stop = last[0].heartbeat
    assert not stop.serving_omitted and stop.serving == {} and stop.stopping
    assert b"serving_omitted" not in encode(stop)
    assert (_count("full") - full0, _count("omitted") - omitted0) == (5, 4)


async def test_leases_without_renewals_always_gets_full_maps(bus: Bus) -> None:
    """An older leases (full NodeAssignments only, no NodeRenewal) never sees an omitted map."""
    svc = _svc(bus)
    lz = Leases(svc)
    for _ in range(8):
        await lz.full()
        hb, _ = await _beat(svc)
        assert not hb.serving_omitted and len(hb.serving) == 2
        await asyncio.sleep(0.02)


async def test_full_every_zero_and_stale_renewals_mean_full_maps(bus: Bus) -> None:
    svc = _svc(bus, "--heartbeat-full-every-ms", "0")
    lz = Leases(svc)
    await lz.full()
    await _beat(svc)
    for _ in range(4):
        await lz.renew()
        hb, _ = await _beat(svc)
        assert not hb.serving_omitted and len(hb.serving) == 2
    # a renewal counts for min(5 s, ttl / 2): with ttl 200 ms, 100 ms without one means full maps again
    svc2 = _svc(bus, node="n1")
    lz2 = Leases(svc2)
    await lz2.full(ttl_ms=200)
    await _beat(svc2)
    await lz2.renew(ttl_ms=200)
    hb, _ = await _beat(svc2)
    assert hb.serving_omitted
    await asyncio.sleep(0.12)
    hb, _ = await _beat(svc2)
    assert not hb.serving_omitted


async def test_a_failed_publish_is_not_a_full_map_sent(bus: Bus) -> None:
    down = await Bus.connect("redis://127.0.0.1:1/0", prefix="t")  # nothing listens there: publishes fail
    try:
        svc = _svc(down)
        lz = Leases(svc)
        await lz.full()
        await lz.renew()
        assert not (await _publish_one(svc)).ok
        assert not (await _publish_one(svc)).ok
        svc.bus = bus
        hb, _ = await _beat(svc)
        assert not hb.serving_omitted and len(hb.serving) == 2  # leases never got the map: full
        hb, _ = await _beat(svc)
        assert hb.serving_omitted
    finally:
        await down.close()


def test_flag_validation(capsys: pytest.CaptureFixture[str]) -> None:
    from services.announcer.main import main

    with pytest.raises(SystemExit):
        main(["--heartbeat-full-every-ms", "-1", "--no-bus"])
    assert "--heartbeat-full-every-ms" in capsys.readouterr().err
    assert build_parser().parse_args([]).heartbeat_full_every_ms == 2000


async def test_with_the_real_leases_service_steady_state_and_failover(bus: Bus) -> None:
    """The real announcer heartbeat loop against the real leases service: digests at steady state, the
    full map every --heartbeat-full-every-ms, leases sees the map all along; a leases restart (new term)
    gets the full map and moves nothing."""
    h = Harness(bus)
    svc = _svc(bus, "--heartbeat-interval-ms", "50", "--heartbeat-full-every-ms", "500")
    stop = asyncio.Event()
    consumer = bus.consumer(bus.keys.assignments, "announcer:n1", "t-n1", svc.on_message, block_ms=100)
    tasks = [asyncio.create_task(consumer.run(stop)), asyncio.create_task(svc._drive(stop)),
             asyncio.create_task(svc._publisher())]
    try:
        await h.add_node("n2")
        h.start_leases(static_policies=[ALL_LB])
        for i in range(6):
            await h.allocate(f"ns/s{i}", f"198.51.100.{50 + i}")
        st = svc.machine.state
        await wait_for(lambda: len(st.serving(time.monotonic())) + len(h.announcers["n2"].serving()) == 6, 5)
        mine = dict(svc.machine.state.serving(time.monotonic()))
        assert mine
        await asyncio.sleep(0.5)
        start: Any = await bus.redis.xrevrange(bus.keys.heartbeats, count=1)
        await asyncio.sleep(1.2)
        rows: Any = await bus.redis.xrange(bus.keys.heartbeats, min=start[0][0])
        beats = [m for m in (decode(f[b"m"]) for _, f in rows[1:]) if isinstance(m, Heartbeat) and m.node == "n1"]
        full = [m for m in beats if not m.serving_omitted]
        assert len(beats) >= 15 and 2 <= len(full) <= 4, (len(beats), len(full))
        assert all(m.serving_digest == serving_digest(mine) for m in beats)
        leases = h.leases[0].svc
        assert leases.m.tracker.nodes["n1"].heartbeat.serving == mine
        assert leases.m.map_unknown == set()
        # leases restart (no leader election: a later term)
        await h.leases[0].kill()
        second = h.start_leases(static_policies=[ALL_LB], instance="leases-again")
        await wait_for(lambda: second.svc.m.result is not None, 5)
        await asyncio.sleep(0.5)
        assert svc.machine.state.serving(time.monotonic()) == mine
        assert not [m for m in second.svc.m.recent_moves if m["from"] is not None]
    finally:
        stop.set()
        svc._outbox.put_nowait(None)
        await asyncio.gather(*tasks, return_exceptions=True)
        await h.close()
