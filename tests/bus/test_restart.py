"""Redis outages: readiness, logs, reconnect with backoff, resync after a restart without persistence."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from l2lb.adapters.bus.client import BusUnavailableError
from l2lb.core.messages import AllocationSnapshot, Heartbeat, SnapshotRequest
from tests.support.redis_server import RedisProcess

from .conftest import Factory, Recorder, Running, hb, na, wait_until

RESYNC_BOUND_S = 3.0  # after redis-server is back, every consumer has resynced within this


async def test_restart_without_persistence_resyncs_every_consumer(
    redis_server: RedisProcess, redis_url: str, make_bus: Factory, running: Running,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="l2lb.bus")
    bus = await make_bus(redis_url, client_name="restart", health_interval=0.2)
    recs = [Recorder() for _ in range(3)]
    streams = [bus.keys.assignments, bus.keys.assignments, bus.keys.allocations]
    consumers = [
        bus.consumer(st, f"g{i}", "c", r, on_resync=r.on_resync, block_ms=200)
        for i, (st, r) in enumerate(zip(streams, recs, strict=True))
    ]
    served: list[tuple[str, str]] = []

    async def serve(req: SnapshotRequest) -> None:
        served.append((req.requester, req.reason))
        await bus.publish(bus.keys.allocations, AllocationSnapshot(term=1, seq=len(served)))

    consumers.append(bus.serve_snapshots("allocations", "alloc-0", serve, block_ms=200))
    for c in consumers:
        running.start(c)
    await wait_until(lambda: all(c._incarnation for c in consumers), what="consumers set up")
    await asyncio.sleep(0.05)
    await bus.publish(bus.keys.assignments, na("n1", 1, 1, "198.51.100.7"))
    await wait_until(lambda: len(recs[0].seen) == 1 and len(recs[1].seen) == 1, what="first delivery")
    old_inc = bus.incarnation_id
    assert bus.readiness()[0]

    redis_server.stop(kill=True)
    await wait_until(lambda: not bus.readiness()[0], timeout=3, what="readiness shows the outage")
    why = bus.readiness()[1]
    assert "unreachable" in why and "127.0.0.1" in why
    with pytest.raises(BusUnavailableError):
        await bus.publish(bus.keys.heartbeats, hb())
    assert any(r.getMessage() == "redis unreachable" for r in caplog.records)

    redis_server.start()
    t_back = time.monotonic()
    took = await wait_until(lambda: all(r.resyncs for r in recs), timeout=RESYNC_BOUND_S + 2,
                            what="every consumer resynced")
    print(f"resync after restart took {took:.3f}s")
    assert took < RESYNC_BOUND_S, f"resync took {took:.2f}s"
    for r in recs:
        assert [x for x, _ in r.resyncs] == ["incarnation_changed"]
        assert r.resyncs[0][1] - t_back < RESYNC_BOUND_S
    assert bus.incarnation_id != old_inc
    # the producer republished its snapshot on its own (its control consumer resynced too)
    await wait_until(lambda: ("bus", "producer_incarnation_changed") in served, timeout=2, what="republish")
    await wait_until(lambda: any(isinstance(m, AllocationSnapshot) for m, _ in recs[2].seen), timeout=2,
                     what="snapshot reaches the allocations group")
    await wait_until(lambda: bus.readiness()[0], timeout=2, what="ready again")
    assert any(r.getMessage() == "redis reachable again" for r in caplog.records)

    # the new dataset's messages reach every group, including ones published before the groups came back
    await bus.publish(bus.keys.assignments, na("n1", 2, 1, "198.51.100.8"))
    await bus.publish(bus.keys.allocations, hb(seq=5))
    await wait_until(lambda: len(recs[0].seen) == 2 and len(recs[1].seen) == 2
                     and any(isinstance(m, Heartbeat) for m, _ in recs[2].seen), what="delivery after restart")


async def test_connect_while_redis_is_down_then_comes_up(tmp_path: Path, make_bus: Factory, running: Running) -> None:
    rp = RedisProcess(tmp_path / "late")
    bus = await make_bus(rp.url, health_interval=0.1)  # not running yet: no exception, not ready
    ok, why = bus.readiness()
    assert not ok and "unreachable" in why
    rec = Recorder()
    c = bus.consumer(bus.keys.heartbeats, "late", "c", rec, block_ms=200)
    running.start(c)
    await asyncio.sleep(0.3)
    rp.start()
    try:
        await wait_until(lambda: bus.readiness()[0], timeout=4, what="ready after redis starts")
        await wait_until(lambda: c._incarnation is not None, timeout=4, what="consumer set up")
        await asyncio.sleep(0.05)
        await bus.publish(bus.keys.heartbeats, hb(seq=1))
        await wait_until(lambda: len(rec.seen) == 1, what="delivered")
    finally:
        await running.stop_all()
        rp.stop()


def test_backoff_grows_with_jitter_and_caps() -> None:
    from l2lb.adapters.bus.client import Backoff

    lo = Backoff(base=0.1, cap=1.0, rng=lambda: 0.0)
    hi = Backoff(base=0.1, cap=1.0, rng=lambda: 0.999999)
    lows = [lo.next() for _ in range(8)]
    highs = [hi.next() for _ in range(8)]
    assert lows[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert highs[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8], rel=1e-5)
    assert max(highs) == pytest.approx(1.0, rel=1e-5) and min(lows[4:]) == pytest.approx(0.5)
    lo.reset()
    assert lo.next() == pytest.approx(0.05)
