"""Delivery, acks, redelivery, duplicates, dead letters, group/trim resync against a real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.seq import SeqFilter
from l2lb.core.messages import Heartbeat, Message, NodeAssignments
from l2lb.obs.metrics import REGISTRY
from tests.support.redis_server import RedisProcess

from .conftest import Recorder, Running, hb, na, wait_until


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_delivery_in_order_with_acks(bus: Bus, running: Running) -> None:
    s = bus.keys.heartbeats
    rec = Recorder()
    c = bus.consumer(s, "g-ack", "c1", rec, block_ms=200)
    running.start(c)
    await wait_until(lambda: c.running and c._incarnation is not None, what="consumer set up")
    await asyncio.sleep(0.05)
    before = metric("l2lb_bus_consumed_total", stream="heartbeats", group="g-ack")
    pub_before = metric("l2lb_bus_published_total", stream="heartbeats")
    ids = [await bus.publish(s, hb(seq=i)) for i in range(1, 21)]
    assert metric("l2lb_bus_published_total", stream="heartbeats") - pub_before == 20
    await wait_until(lambda: len(rec.seen) == 20, what="20 messages")
    assert [m.seq for m, _ in rec.seen if isinstance(m, Heartbeat)] == list(range(1, 21))
    assert [eid for _, eid in rec.seen] == ids
    await wait_until(lambda: metric("l2lb_bus_consumed_total", stream="heartbeats", group="g-ack") - before == 20,
                     what="consumed metric")
    pend = await bus.redis.xpending(s, "g-ack")
    assert pend["pending"] == 0
    # a second group sees every message too (broadcast by group)
    rec2 = Recorder()
    c2 = bus.consumer(s, "g-other", "c1", rec2, from_start=True, block_ms=200)
    running.start(c2)
    await wait_until(lambda: len(rec2.seen) == 20, what="second group reads history")


async def test_redelivery_to_another_consumer_after_kill(bus: Bus, running: Running) -> None:
    s = bus.keys.allocations
    got_first = asyncio.Event()

    async def stuck(msg: Message, eid: str) -> None:
        got_first.set()
        await asyncio.Event().wait()  # never returns: the consumer dies holding the entries

    await bus.redis.xgroup_create(s, "workers", "$", mkstream=True)
    for i in range(5):
        await bus.publish(s, hb(seq=i))
    a = bus.consumer(s, "workers", "a", stuck, block_ms=200, batch=10)
    _, task_a = running.start(a)
    await asyncio.wait_for(got_first.wait(), 5)
    task_a.cancel()  # kill -9 of consumer "a"
    await asyncio.gather(task_a, return_exceptions=True)
    pend = await bus.redis.xpending(s, "workers")
    assert pend["pending"] == 5

    rec = Recorder()
    b = bus.consumer(s, "workers", "b", rec, block_ms=200, min_idle_ms=300, claim_interval=0.1)
    running.start(b)
    await wait_until(lambda: len(rec.seen) == 5, timeout=5, what="b handles a's pending entries")
    assert sorted(m.seq for m, _ in rec.seen if isinstance(m, Heartbeat)) == [0, 1, 2, 3, 4]
    assert b.claimed == 5
    await wait_until(lambda: b.handled == 5, what="handled")
    assert (await bus.redis.xpending(s, "workers"))["pending"] == 0


async def test_duplicate_delivery_is_harmless(bus: Bus, running: Running) -> None:
    """A handler applies a message, then dies before the ack: the entry is delivered again (claimed
    by another consumer) and applying it twice leaves the same state; stale ones are dropped."""
    s = bus.keys.assignments
    state: dict[str, tuple[str, ...]] = {}
    flt = SeqFilter()
    applied: list[tuple[int, int]] = []
    crash_once = {"armed": True}

    async def handler(msg: Message, eid: str) -> None:
        assert isinstance(msg, NodeAssignments)
        if flt.accept(msg.node, msg.term, msg.seq):
            state[msg.node] = tuple(v.ip for v in msg.vips)
            applied.append((msg.term, msg.seq))
        if crash_once["armed"] and msg.seq == 2:
            crash_once["armed"] = False
            raise RuntimeError("crash after applying, before ack")

    c1 = bus.consumer(s, "ann", "x", handler, block_ms=200, min_idle_ms=200, claim_interval=0.05)
    running.start(c1)
    await wait_until(lambda: c1._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    await bus.publish(s, na("n1", 1, 1, "198.51.100.10"))
    await bus.publish(s, na("n1", 1, 2, "198.51.100.10", "198.51.100.11"))
    await bus.publish(s, na("n1", 1, 1, "198.51.100.10"))  # stale duplicate published again
    await wait_until(lambda: c1.handled == 2, what="two handled")
    # the failed entry (seq 2) is redelivered after min_idle and handled again: no state change
    await wait_until(lambda: c1.handled == 3, timeout=5, what="redelivery of seq 2")
    assert state == {"n1": ("198.51.100.10", "198.51.100.11")}
    assert applied == [(1, 1), (1, 2)]
    assert flt.dropped == 2  # the stale seq 1 and the redelivered seq 2
    assert (await bus.redis.xpending(s, "ann"))["pending"] == 0


async def test_bad_messages_are_dead_lettered(bus: Bus, running: Running) -> None:
    s = bus.keys.heartbeats
    rec = Recorder()
    c = bus.consumer(s, "dl", "c", rec, block_ms=200)
    running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    before = metric("l2lb_bus_deadletter_total", stream="heartbeats", reason="unsupported_version")
    old = json.loads(json.dumps(hb(seq=1).to_dict()))
    old.update(k="heartbeat", v=0)
    await bus.publish_raw(s, json.dumps(old).encode())
    await bus.publish_raw(s, b"\xff not json")
    await bus.publish_raw(s, b'{"k":"martian","v":1}')
    await bus.publish_raw(s, b'{"k":"heartbeat","v":1,"node":5}')
    await bus.redis.xadd(s, {"other": "field"})
    await bus.publish(s, hb(seq=2))
    await wait_until(lambda: len(rec.seen) == 1 and c.deadlettered == 5, what="1 good + 5 dead")
    assert isinstance(rec.seen[0][0], Heartbeat) and rec.seen[0][0].seq == 2
    dead = await bus.redis.xrange(bus.keys.deadletter)
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert reasons == ["unsupported_version", "not_json", "unknown_kind", "malformed", "no_payload"]
    assert dead[0][1][b"stream"].decode() == s and b"no longer supported" in dead[0][1][b"error"]
    assert dead[0][1][b"m"] == json.dumps(old).encode()
    after = metric("l2lb_bus_deadletter_total", stream="heartbeats", reason="unsupported_version")
    assert after - before == 1
    assert (await bus.redis.xpending(s, "dl"))["pending"] == 0


async def test_handler_failing_forever_ends_in_dead_letter(bus: Bus, running: Running) -> None:
    s = bus.keys.heartbeats
    calls: list[int] = []

    async def bad(msg: Message, eid: str) -> None:
        assert isinstance(msg, Heartbeat)
        calls.append(msg.seq)
        if msg.seq == 13:
            raise ValueError("cannot handle 13")

    c = bus.consumer(s, "poison", "c", bad, block_ms=100, min_idle_ms=100, claim_interval=0.05,
                     max_deliveries=3)
    running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    await bus.publish(s, hb(seq=13))
    await bus.publish(s, hb(seq=14))
    await wait_until(lambda: c.deadlettered == 1, timeout=5, what="poison message dead-lettered")
    assert calls.count(13) == 3 and calls.count(14) == 1
    dead = await bus.redis.xrange(bus.keys.deadletter)
    assert dead[-1][1][b"reason"] == b"handler_failed"
    assert (await bus.redis.xpending(s, "poison"))["pending"] == 0


async def test_group_deleted_resyncs(bus: Bus, running: Running) -> None:
    s = bus.keys.assignments
    rec = Recorder()
    c = bus.consumer(s, "gm", "c", rec, on_resync=rec.on_resync, block_ms=100)
    running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    await bus.redis.xgroup_destroy(s, "gm")
    await wait_until(lambda: len(rec.resyncs) == 1, timeout=3, what="resync after group deletion")
    assert rec.resyncs[0][0] == "group_missing"
    await bus.publish(s, na("n1", 1, 1))
    await wait_until(lambda: len(rec.seen) == 1, what="delivery after group recreated")


async def test_stream_trimmed_past_position_resyncs_once(bus: Bus, running: Running) -> None:
    s = bus.keys.heartbeats
    bus.set_maxlen(s, 10)
    rec = Recorder()
    c = bus.consumer(s, "slow", "c", rec, on_resync=rec.on_resync, block_ms=100, check_interval=0.1)
    stop, task = running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    stop.set()
    await task
    for i in range(600):  # ~ trimming works per macro node (100 entries by default)
        await bus.publish(s, hb(seq=i))
    assert await bus.redis.xlen(s) < 600
    c2 = bus.consumer(s, "slow", "c", rec, on_resync=rec.on_resync, block_ms=100, check_interval=0.1)
    running.start(c2)
    await wait_until(lambda: [r for r, _ in rec.resyncs] == ["stream_trimmed"], what="trim resync")
    await wait_until(lambda: bool(rec.seen) and getattr(rec.seen[-1][0], "seq", None) == 599,
                     what="reads the remaining entries")
    assert len(rec.seen) < 600  # the trimmed ones are gone for good
    await asyncio.sleep(0.4)  # several checks later: reported once, lag back to 0
    assert [r for r, _ in rec.resyncs] == ["stream_trimmed"]
    await c2.check()
    assert c2.lag == 0 and c2.pending == 0


async def test_lag_and_pending_metrics(bus: Bus, running: Running) -> None:
    s = bus.keys.allocations
    rec = Recorder()
    c = bus.consumer(s, "lagg", "c", rec, block_ms=100, check_interval=0.1, stats_interval=0.2)
    stop, task = running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    stop.set()
    await task
    for i in range(7):
        await bus.publish(s, hb(seq=i))
    await c.check()
    assert c.lag == 7
    assert metric("l2lb_bus_consumer_lag", stream="allocations", group="lagg") == 7
    running.start(c)
    await wait_until(lambda: len(rec.seen) == 7, what="catch up")
    await wait_until(lambda: metric("l2lb_bus_consumer_lag", stream="allocations", group="lagg") == 0,
                     what="lag metric 0")
    assert metric("l2lb_bus_pending", stream="allocations", group="lagg") == 0
    hist = REGISTRY.get_sample_value("l2lb_bus_handler_seconds_count", {"stream": "allocations", "group": "lagg"})
    assert hist is not None and hist >= 7


async def test_snapshots_roundtrip_and_requests(bus: Bus, running: Running) -> None:
    from l2lb.core.messages import Allocation, AllocationSnapshot, SnapshotRequest

    assert await bus.load_snapshot("allocations") is None
    snap = AllocationSnapshot(term=3, seq=9, allocations=(
        Allocation(key="default/web", namespace="default", name="web", uid="u", generation=1, seq=9, term=3,
                   ips=("198.51.100.20",)),))
    await bus.store_snapshot("allocations", snap)
    assert await bus.load_snapshot("allocations") == snap
    await bus.redis.set(bus.keys.snapshot("allocations"), b'{"k":"allocation_snapshot","v":0}')
    assert await bus.load_snapshot("allocations") is None  # unreadable -> None (logged)

    served: list[SnapshotRequest] = []

    async def serve(req: SnapshotRequest) -> None:
        served.append(req)

    c = bus.serve_snapshots("allocations", "alloc-0", serve)
    running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    await bus.request_snapshot("assignments", "ann-1", "other topic")
    await bus.request_snapshot("allocations", "leases-1", "group_missing")
    await wait_until(lambda: c.handled == 2, what="requests handled")
    assert [(r.topic, r.requester, r.reason) for r in served] == [("allocations", "leases-1", "group_missing")]


async def test_idle_consumers_without_pending_are_forgotten(bus: Bus, running: Running) -> None:
    s = bus.keys.assignments
    await bus.redis.xgroup_create(s, "announcer:n1", "$", mkstream=True)
    await bus.publish(s, na("n1", 1, 1))
    await bus.publish(s, na("n1", 1, 2))
    # two earlier processes of this announcer: one acked everything, one died holding an entry
    got = await bus.redis.xreadgroup("announcer:n1", "old-acked", {s: ">"}, count=1)
    await bus.redis.xack(s, "announcer:n1", got[0][1][0][0])
    await bus.redis.xreadgroup("announcer:n1", "old-pending", {s: ">"}, count=1)
    await asyncio.sleep(0.3)
    rec = Recorder()
    c = bus.consumer(s, "announcer:n1", "new", rec, block_ms=100, forget_after=0.25, min_idle_ms=60_000,
                     claim_interval=0.05)
    running.start(c)

    async def names() -> set[str]:
        return {x["name"].decode() if isinstance(x["name"], bytes) else x["name"]
                for x in await bus.redis.xinfo_consumers(s, "announcer:n1")}

    t0 = asyncio.get_running_loop().time()
    while "old-acked" in await names():
        assert asyncio.get_running_loop().time() - t0 < 3, "old consumer not removed"
        await asyncio.sleep(0.05)
    assert await names() == {"new", "old-pending"}  # one with pending entries is kept (claimed later)


async def test_stop_interrupts_a_blocked_read_promptly(bus: Bus) -> None:
    c = bus.consumer(bus.keys.heartbeats, "stopper", "c", Recorder(), block_ms=3000)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.2)  # now blocked in XREADGROUP BLOCK 3000
    t0 = asyncio.get_running_loop().time()
    stop.set()
    await asyncio.wait_for(task, 2)
    assert asyncio.get_running_loop().time() - t0 < 0.5
    assert not c.running
    await bus.publish(bus.keys.heartbeats, hb())  # the pool is still healthy after the cancelled read
    ok, why = bus.readiness()
    assert ok, why


async def test_cli_args_and_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from l2lb.adapters.bus.client import DSNError, add_redis_args, bus_from_args

    monkeypatch.setenv("L2LB_REDIS", redis_url)
    monkeypatch.setenv("L2LB_REDIS_PREFIX", "envpfx")
    p = argparse.ArgumentParser()
    add_redis_args(p)
    args = p.parse_args([])
    assert args.redis == redis_url and args.redis_prefix == "envpfx" and args.redis_maxlen == 10_000
    b = await bus_from_args(args, client_name="cli-test")
    try:
        assert b.keys.prefix == "envpfx"
        eid = await b.publish(b.keys.control, hb())
        assert await b.redis.xlen("envpfx:stream:control") == 1 and "-" in eid
    finally:
        await b.close()
    args = p.parse_args(["--redis", "redis://u:s3cret@h:nope/0", "--redis-prefix", "x", "--redis-maxlen", "50"])
    assert args.redis_maxlen == 50
    with pytest.raises(DSNError) as ei:
        await bus_from_args(args)
    assert "s3cret" not in str(ei.value) and "--redis redis://u:***@h:nope/0" in str(ei.value)


async def test_acks_ride_with_the_next_read(bus: Bus, running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """One round trip per entry: a handled entry's XACK goes out in one pipeline with the next XREADGROUP (no
    separate XACK), before that read blocks (nothing stays pending while the consumer waits), and a consumer
    stopped right after handling acks what it handled (nothing is redelivered to the next one)."""
    s = bus.keys.heartbeats
    separate: list[tuple[str, ...]] = []
    real_xack = bus.redis.xack

    async def counting_xack(stream: str, group: str, *ids: str) -> int:
        separate.append(ids)
        return await real_xack(stream, group, *ids)

    monkeypatch.setattr(bus.redis, "xack", counting_xack)
    rec = Recorder()
    c = bus.consumer(s, "g-pipe", "c1", rec, block_ms=500)
    stop, task = running.start(c)
    await wait_until(lambda: c.running and c._incarnation is not None, what="consumer set up")
    await asyncio.sleep(0.05)
    for i in range(1, 11):
        await bus.publish(s, hb(seq=i))
        await wait_until(lambda n=i: len(rec.seen) == n, what=f"message {i}")  # type: ignore[misc]
        await wait_until(lambda: c._unacked == [], what="ack sent with the next read")
        assert (await bus.redis.xpending(s, "g-pipe"))["pending"] == 0  # while blocked in the next read
    assert separate == []
    await bus.publish(s, hb(seq=11))
    await wait_until(lambda: len(rec.seen) == 11, what="message 11")
    stop.set()
    await asyncio.wait_for(task, 3)
    assert (await bus.redis.xpending(s, "g-pipe"))["pending"] == 0


async def test_noack_consumer_leaves_nothing_pending_and_sends_no_xack(
        bus: Bus, running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """``noack=True`` (leases reading heartbeats): entries are read with XREADGROUP NOACK, never pending, never
    acknowledged, a failing handler drops the entry (no redelivery)."""
    s = bus.keys.heartbeats
    xacks: list[tuple[str, ...]] = []
    real_xack = bus.redis.xack

    async def counting_xack(stream: str, group: str, *ids: str) -> int:
        xacks.append(ids)
        return await real_xack(stream, group, *ids)

    seen: list[int] = []

    async def handler(msg: Message, eid: str) -> None:
        assert isinstance(msg, Heartbeat)
        seen.append(msg.seq)
        if msg.seq == 3:
            raise RuntimeError("boom")

    c = bus.consumer(s, "g-noack", "c1", handler, block_ms=300, noack=True)
    running.start(c)
    await wait_until(lambda: c.running and c._incarnation is not None, what="consumer set up")
    monkeypatch.setattr(bus.redis, "xack", counting_xack)
    for i in range(1, 6):
        await bus.publish(s, hb(seq=i))
    await wait_until(lambda: len(seen) == 5, what="5 messages")
    await asyncio.sleep(0.4)
    assert seen == [1, 2, 3, 4, 5]  # 3 failed and is not delivered again
    assert xacks == []
    assert (await bus.redis.xpending(s, "g-noack"))["pending"] == 0  # with acks, 3 would be pending
    assert c._unacked == []


async def test_a_read_that_does_not_come_back_is_overdue(bus: Bus, running: Running,
                                                       redis_server: RedisProcess) -> None:
    """reads_ok (the announcer's Tick.reads_ok): an idle blocking read returns every block_ms, so one that has not
    returned block_ms + 0.3 s after it went out means the path from Redis is stalled (here: Redis SIGSTOPped; on a
    lossy link: TCP retransmissions) -- while the next write might still work."""
    import os
    import signal
    import time

    c = bus.consumer(bus.keys.assignments, "g-overdue", "c1", Recorder(), block_ms=200)
    running.start(c)
    await wait_until(lambda: c.running and c._incarnation is not None, what="consumer set up")
    for _ in range(10):  # idle: reads come back every 200 ms
        await asyncio.sleep(0.1)
        assert c.reads_ok(time.monotonic())
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(1.0)
        assert not c.reads_ok(time.monotonic())
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_until(lambda: c.reads_ok(time.monotonic()), what="reads come back")
