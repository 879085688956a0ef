"""Bus benchmark: one producer, 100 consumer groups (one consumer each) on one machine.

    python bench/bus/run.py [--groups 100] [--procs 2] [--burst 500] [--rate 20] [--seconds 5]
                            [--redis redis://...]   (default: a private redis-server on a free port)

Phase 1 (throughput): the producer publishes ``--burst`` Heartbeats as fast as it can; every
group must handle every message; reports published msgs/s and handled deliveries/s.
Phase 2 (latency): ``--rate`` msgs/s for ``--seconds``; reports p50/p99/max publish->handle latency
(CLOCK_MONOTONIC, shared by all processes). Bounded: every wait has a deadline (~30 s total).
Prints one JSON line and the ratio against bench/bus/baseline.json when present.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for tests.support.redis_server

from l2lb.adapters.bus.client import Bus  # noqa: E402
from l2lb.core.messages import Heartbeat, Message  # noqa: E402

STREAM_PREFIX = "l2lbbench"


def worker(dsn: str, groups: list[int], conn: Connection) -> None:
    asyncio.run(_worker(dsn, groups, conn))


async def _worker(dsn: str, groups: list[int], conn: Connection) -> None:
    bus = await Bus.connect(dsn, prefix=STREAM_PREFIX, client_name="bench-consumer")
    lat: dict[str, list[float]] = {"burst": [], "rate": []}
    counts = {"burst": 0, "rate": 0}

    async def handler(msg: Message, _eid: str) -> None:
        now = time.monotonic()
        assert isinstance(msg, Heartbeat)
        phase = msg.node
        counts[phase] = counts.get(phase, 0) + 1
        if phase in lat:
            lat[phase].append(now - msg.sent_at)

    stop = asyncio.Event()
    cons = [bus.consumer(bus.keys.heartbeats, f"g{g}", "c", handler, block_ms=1000)
            for g in groups]
    tasks = [asyncio.create_task(c.run(stop)) for c in cons]
    while not all(c._incarnation for c in cons):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    cpu0 = time.process_time()
    conn.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd == "counts":
            conn.send(dict(counts))
        elif cmd == "results":
            conn.send({"lat": lat, "counts": counts, "cpu_s": time.process_time() - cpu0})
        elif cmd == "stop":
            break
    stop.set()
    await asyncio.gather(*tasks)
    await bus.close()


async def producer(dsn: str, pipes: list[Connection], args: argparse.Namespace) -> dict[str, Any]:
    bus = await Bus.connect(dsn, prefix=STREAM_PREFIX, client_name="bench-producer", maxlen=100_000)
    loop = asyncio.get_running_loop()

    async def total(phase: str) -> int:
        n = 0
        for p in pipes:
            p.send("counts")
            c = await loop.run_in_executor(None, p.recv)
            n += c.get(phase, 0)
        return n

    async def wait_all(phase: str, want: int, deadline_s: float) -> float:
        t0 = time.monotonic()
        while (got := await total(phase)) < want:
            if time.monotonic() - t0 > deadline_s:
                raise SystemExit(f"bench: phase {phase}: only {got}/{want} deliveries after {deadline_s}s")
            await asyncio.sleep(0.05)
        return time.monotonic()

    # phase 1: burst
    t0 = time.monotonic()
    for i in range(args.burst):
        await bus.publish(bus.keys.heartbeats, Heartbeat(node="burst", instance="p", seq=i,
                                                         sent_at=time.monotonic(), interval_ms=0))
    t_pub = time.monotonic() - t0
    t_end = await wait_all("burst", args.burst * args.groups, 25.0)
    burst_s = t_end - t0
    # phase 2: fixed rate
    n = int(args.rate * args.seconds)
    start = time.monotonic()
    for i in range(n):
        due = start + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await bus.publish(bus.keys.heartbeats, Heartbeat(node="rate", instance="p", seq=i,
                                                         sent_at=time.monotonic(), interval_ms=0))
    await wait_all("rate", n * args.groups, 10.0)
    lat: list[float] = []
    cpu_s = 0.0
    for p in pipes:
        p.send("results")
        r = await loop.run_in_executor(None, p.recv)
        lat += r["lat"]["rate"]
        cpu_s += r["cpu_s"]
    await bus.close()
    lat.sort()

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    return {
        "groups": args.groups, "procs": args.procs, "burst": args.burst,
        "publish_msgs_per_s": round(args.burst / t_pub),
        "burst_deliveries_per_s": round(args.burst * args.groups / burst_s),
        "burst_msgs_per_s_all_groups": round(args.burst / burst_s),
        "rate_msgs_per_s": args.rate, "rate_deliveries": len(lat),
        "latency_ms_p50": round(pct(lat, 0.50), 3), "latency_ms_p99": round(pct(lat, 0.99), 3),
        "latency_ms_max": round(lat[-1] * 1000, 3) if lat else None,
        "latency_ms_mean": round(statistics.fmean(lat) * 1000, 3) if lat else None,
        # consumer-process CPU per handled delivery (both phases): less sensitive to machine load
        "consumer_cpu_us_per_delivery": round(cpu_s / ((args.burst + n) * args.groups) * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--procs", type=int, default=2, help="consumer processes (groups are split among them)")
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--redis", default=None, help="DSN (default: a private redis-server)")
    ap.add_argument("--write-baseline", action="store_true")
    args = ap.parse_args(argv)
    rp = None
    dsn = args.redis
    if dsn is None:
        from tests.support.redis_server import RedisProcess

        rp = RedisProcess(Path(tempfile.mkdtemp(prefix="l2lb-bench-redis-")))
        rp.start()
        dsn = rp.url
    ctx = mp.get_context("spawn")
    procs = []
    pipes: list[Connection] = []
    try:
        for i in range(args.procs):
            mine = list(range(i, args.groups, args.procs))
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker, args=(dsn, mine, b), daemon=True)
            p.start()
            procs.append(p)
            pipes.append(a)
        for a in pipes:
            if not a.poll(30):
                raise SystemExit("bench: consumers did not start within 30 s")
            assert a.recv() == "ready"
        res = asyncio.run(producer(dsn, pipes, args))
        for a in pipes:
            a.send("stop")
        for p in procs:
            p.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        if rp is not None:
            rp.stop()
    print(json.dumps(res))
    base_file = Path(__file__).with_name("baseline.json")
    if args.write_baseline:
        base_file.write_text(json.dumps(res, indent=2) + "\n")
    elif base_file.exists():
        base = json.loads(base_file.read_text())
        for k in ("publish_msgs_per_s", "burst_deliveries_per_s", "latency_ms_p50", "latency_ms_p99",
                  "consumer_cpu_us_per_delivery"):
            if base.get(k):
                print(f"{k}: {res[k]} (x{res[k] / base[k]:.2f} of baseline {base[k]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
