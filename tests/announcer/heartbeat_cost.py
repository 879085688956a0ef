"""Measure what heartbeats cost at 10k VIPs: the full serving map every time (before, or
``--heartbeat-full-every-ms 0``) vs only its digest while unchanged (the full map every 2 s).

    python -m tests.announcer.heartbeat_cost [VIPS] [ROUNDS]

Announcer side (in process, one node, a private redis-server): the tick that builds a heartbeat + encoding +
XADD, as the timer does on the loop that answers ARP. Bytes: one message of each kind, and the
steady-state bytes/s per node at 10 heartbeats/s. Leases side: decode + the machine's
``HeartbeatReceived`` (process CPU).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.core.announcer_machine import PublishHeartbeat, Tick
from l2lb.core.leases_machine import HeartbeatReceived, LeasesMachine, LeasesParams, Now
from l2lb.core.messages import Heartbeat, NodeAssignments, NodeRenewal, VipAssignment, assignments_digest, decode
from services.announcer.config import build_parser
from services.announcer.main import AnnouncerService
from tests.support.redis_server import RedisProcess

HZ = 10  # heartbeats per second (--heartbeat-interval-ms 100)
FULL_EVERY_S = 2.0


def _vips(n: int) -> tuple[VipAssignment, ...]:
    return tuple(VipAssignment(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1_764_000_000_000 + i,
                               ("eth0",)) for i in range(n))


async def _announcer(bus: Bus, vips: tuple[VipAssignment, ...], full_every_ms: int) -> AnnouncerService:
    args = build_parser().parse_args(["--node", "n1", "--interfaces", "l2lb-none-[0-9]+", "--no-netlink",
                                      "--http-port", "0", "--heartbeat-full-every-ms", str(full_every_ms),
                                      "--heartbeat-interval-ms", "1"])
    svc = AnnouncerService(args)
    svc.bus = bus
    d = assignments_digest(vips)
    eid = f"{int(time.time() * 1000)}-0"
    await svc.on_message(NodeAssignments("n1", 3, 1, 3_600_000, time.time(), vips, d), eid)
    await svc.on_message(NodeRenewal("n1", 3, 2, 3_600_000, time.time(), d), eid)
    return svc


async def _loop_ms(svc: AnnouncerService, rounds: int) -> tuple[float, float, bytes]:
    """Median and p99 (ms) of one heartbeat-loop pass; returns the last message's bytes."""
    assert svc.bus is not None
    times = []
    for _ in range(rounds):
        await asyncio.sleep(0.0015)  # one heartbeat due (interval 1 ms), as the timer finds one every 100 ms
        t0 = time.perf_counter()
        await _beat(svc)
        times.append(time.perf_counter() - t0)
    rows: Any = await svc.bus.redis.xrevrange(svc.bus.keys.heartbeats, count=1)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000, bytes(rows[0][1][b"m"])


async def _beat(svc: AnnouncerService) -> None:
    """One pass of the timer that finds a heartbeat due: tick, build, encode, XADD, feed the outcome back."""
    for c in svc.machine.feed(Tick(time.monotonic(), time.time())):
        if isinstance(c, PublishHeartbeat):
            svc.feed(await svc.publish(c))


def _leases_us(raw_full: bytes, raw_omitted: bytes | None, rounds: int) -> float:
    """Median process CPU (us) of decode + the leases machine's heartbeat handling."""
    m = LeasesMachine(LeasesParams(leader_election=False), Now(time.monotonic(), time.time()))
    first = decode(raw_full)
    assert isinstance(first, Heartbeat)
    m.handle(HeartbeatReceived(first), Now(time.monotonic(), time.time()))
    times = []
    for i in range(rounds):
        raw = raw_full if raw_omitted is None else raw_omitted
        t0 = time.process_time()
        hb = decode(raw)
        t1 = time.process_time()
        assert isinstance(hb, Heartbeat)
        hb = dataclasses.replace(hb, seq=hb.seq + i + 1)  # a newer one (not timed)
        t2 = time.process_time()
        m.handle(HeartbeatReceived(hb), Now(time.monotonic(), time.time()))
        times.append(time.process_time() - t2 + t1 - t0)
    return statistics.median(times) * 1e6


async def _main(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisProcess(Path(tmp))
        redis.start()
        bus = await Bus.connect(redis.url, prefix="bench")
        try:
            vips = _vips(n)
            before = await _announcer(bus, vips, 0)
            b_med, b_p99, raw_full = await _loop_ms(before, rounds)
            after = await _announcer(bus, vips, int(FULL_EVERY_S * 1000))
            await asyncio.sleep(0.0015)
            await _beat(after)  # the first one goes in full
            a_med, a_p99, raw_omitted = await _loop_ms(after, rounds)
            assert decode(raw_omitted).serving_omitted  # type: ignore[union-attr]
        finally:
            await bus.close()
            redis.stop()
    per_full = HZ * FULL_EVERY_S
    bps_before = len(raw_full) * HZ
    bps_after = (len(raw_full) + (per_full - 1) * len(raw_omitted)) / FULL_EVERY_S
    print(f"{n} VIPs, {rounds} heartbeats each")
    print(f"message bytes: full {len(raw_full)}  omitted {len(raw_omitted)}")
    print(f"bytes/s per node at {HZ}/s: before {bps_before / 1e6:.2f} MB/s  after {bps_after / 1e3:.1f} kB/s "
          f"(x{bps_before / bps_after:.0f} less)")
    print(f"announcer heartbeat pass (build+encode+XADD) ms: before median {b_med:.3f} p99 {b_p99:.3f}  "
          f"after median {a_med:.3f} p99 {a_p99:.3f}")
    l_full = _leases_us(raw_full, None, max(20, rounds // 10))
    l_omit = _leases_us(raw_full, raw_omitted, rounds)
    l_after = (l_full + (per_full - 1) * l_omit) / per_full
    print(f"leases CPU per heartbeat us (decode+HeartbeatReceived): before {l_full:.0f}  omitted {l_omit:.0f}  "
          f"steady-state average after {l_after:.0f}")


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 10_000
    rounds = int(argv[1]) if len(argv) > 1 else 200
    asyncio.run(_main(n, rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
