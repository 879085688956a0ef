"""Cluster API latency at 10k Services.

    python bench/status/run.py [--services 10000] [--requests 400] [--concurrency 4] [--redis redis://...]
                               (default: a private redis-server on a free port)

Writes the status parts of ``--services`` synthetic Services (one IPv6 TEST-NET IP each, 3 nodes)
through StatusPublisher, serves them with a StatusServer + mount_cluster_api on loopback and issues
``--requests`` GETs per route with ``--concurrency`` clients: ``/v1/services?limit=500`` (pages
walked with ``continue``), ``/v1/services?namespace=ns3&limit=500`` (filtered), ``/v1/cluster``, and
``/v1/services?limit=500`` with ``If-None-Match`` (304), and ``/v1/services?limit=N`` with a distinct N per
request (uncached: page built and encoded each time). Also measures the first request after a
change of the services part (re-read + re-join of 10k Services). Bounded (~60 s max). Prints one JSON
line with p50/p99/max milliseconds per route and the ratio against bench/status/baseline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for tests.support.redis_server / tests.status.conftest

from l2lb.adapters.bus.client import Bus  # noqa: E402
from l2lb.adapters.bus.status import StatusPublisher  # noqa: E402
from l2lb.adapters.http.cluster import mount_cluster_api  # noqa: E402
from l2lb.adapters.http.server import StatusServer  # noqa: E402
from tests.status.conftest import synthetic_services  # noqa: E402

PREFIX = "l2lbbench"
DEADLINE_S = 60.0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def summary(xs: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in xs]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(pct(ms, 99), 2),
            "max_ms": round(max(ms), 2)}


async def write(bus: Bus, parts: dict[str, list[dict[str, Any]]]) -> None:
    for name, items in parts.items():
        pub = StatusPublisher(bus, name, min_interval=0.0)
        pub.update({"items": items})
        await pub.close()


async def hammer(url: str, paths: list[str], n: int, conc: int, deadline: float,
                 headers: dict[str, str] | None = None, expect: int = 200) -> list[float]:
    lat: list[float] = []
    todo = iter(range(n))

    async def client() -> None:
        async with aiohttp.ClientSession(headers=headers) as s:
            for i in todo:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                async with s.get(url + paths[i % len(paths)]) as r:
                    await r.read()
                    if r.status != expect:
                        raise SystemExit(f"{paths[i % len(paths)]}: HTTP {r.status}")
                lat.append(time.perf_counter() - t0)
    await asyncio.gather(*(client() for _ in range(conc)))
    return lat


async def main_async(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    bus = await Bus.connect(dsn, prefix=PREFIX, client_name="bench-status")
    srv = StatusServer("bench", port=0)
    mount_cluster_api(srv, bus)
    port = await srv.start()
    url = f"http://127.0.0.1:{port}"
    try:
        parts = synthetic_services(args.services)
        t0 = time.perf_counter()
        await write(bus, parts)
        write_s = time.perf_counter() - t0
        size = len(await bus.redis.get(bus.keys.status("services")) or b"")
        async with aiohttp.ClientSession() as s:
            # page tokens for a walk over all Services
            paths, tok = [], None
            while True:
                p = "/v1/services?limit=500" + (f"&continue={tok}" if tok else "")
                paths.append(p)
                async with s.get(url + p) as r:
                    body = await r.json()
                tok = body["continue"]
                if tok is None:
                    break
            # a change of the services part: time until an answer shows it, and that answer's latency
            changed, stale = [], []
            for k in range(5):
                parts["services"][0]["message"] = f"change {k}"
                await write(bus, {"services": parts["services"]})
                tw = time.perf_counter()
                while time.monotonic() < deadline:
                    t1 = time.perf_counter()
                    async with s.get(url + "/v1/services?limit=1") as r:
                        body = await r.json()
                    t2 = time.perf_counter()
                    if body["items"][0]["message"] == f"change {k}":
                        changed.append(t2 - t1)
                        stale.append(t2 - tw)
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # let the re-parse hold-off pass, then take the final validator
            async with s.get(url + "/v1/services?limit=500") as r:
                await r.read()
            async with s.get(url + "/v1/services?limit=500") as r:
                etag = r.headers["ETag"]
        res = {
            "services": args.services, "part_bytes": size, "write_all_parts_s": round(write_s, 3),
            "pages": len(paths),
            "services_limit500": summary(await hammer(url, paths, args.requests, args.concurrency, deadline)),
            # every request a distinct query (limit 100..499): nothing comes from the body cache
            "services_uncached": summary(await hammer(
                url, [f"/v1/services?limit={100 + i}" for i in range(400)], args.requests, args.concurrency,
                deadline)),
            "services_ns_filter": summary(await hammer(
                url, ["/v1/services?namespace=ns3&limit=500"], args.requests, args.concurrency, deadline)),
            "cluster": summary(await hammer(url, ["/v1/cluster"], args.requests, args.concurrency, deadline)),
            "services_304": summary(await hammer(url, ["/v1/services?limit=500"], args.requests, args.concurrency,
                                                 deadline, headers={"If-None-Match": etag}, expect=304)),
            "services_after_change": summary(changed),
            "change_visible_after": summary(stale),
            "concurrency": args.concurrency,
        }
    finally:
        await srv.stop()
        await bus.redis.delete(*[bus.keys.status(p) for p in ("services", "pools", "assignments", "nodes")],
                               bus.keys.status_index)
        await bus.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--redis", default=None)
    args = ap.parse_args()
    if args.redis:
        res = asyncio.run(main_async(args, args.redis))
    else:
        from tests.support.redis_server import RedisProcess

        with tempfile.TemporaryDirectory() as d:
            rp = RedisProcess(Path(d))
            rp.start()
            try:
                res = asyncio.run(main_async(args, rp.url))
            finally:
                rp.stop()
    print(json.dumps(res))
    base = Path(__file__).with_name("baseline.json")
    if base.exists():
        b = json.loads(base.read_text())
        for route in ("services_limit500", "cluster"):
            if route in b:
                print(f"{route}: p99 {res[route]['p99_ms']} ms vs baseline {b[route]['p99_ms']} ms "
                      f"(x{res[route]['p99_ms'] / b[route]['p99_ms']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
