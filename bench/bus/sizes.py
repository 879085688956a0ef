"""Message sizes on the bus: compact JSON (what l2lb uses) vs a MessagePack encoding of the same dict.

    python bench/bus/sizes.py [--redis DSN]     # also Redis memory per stream entry (private server by default)

The MessagePack encoder below is a minimal, spec-following one (maps, arrays, str, int, float,
bool, nil) so the comparison needs no extra package. Prints a Markdown table (used in docs/bus.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from l2lb.core.messages import (  # noqa: E402
    Allocation,
    AllocationSnapshot,
    Conflict,
    Heartbeat,
    InterfaceInfo,
    Message,
    NodeAssignments,
    PortSpec,
    SnapshotRequest,
    VipAssignment,
    decode,
    encode,
)


def mp(o: Any) -> bytes:
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return struct.pack("B", o)
        if -32 <= o < 0:
            return struct.pack("b", o)
        for lo, hi, tag, fmt in ((0, 2**8, 0xCC, ">B"), (0, 2**16, 0xCD, ">H"), (0, 2**32, 0xCE, ">I"),
                                 (-(2**7), 2**7, 0xD0, ">b"), (-(2**15), 2**15, 0xD1, ">h"),
                                 (-(2**31), 2**31, 0xD2, ">i")):
            if lo <= o < hi:
                return bytes([tag]) + struct.pack(fmt, o)
        return (b"\xcf" + struct.pack(">Q", o)) if o >= 0 else (b"\xd3" + struct.pack(">q", o))
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode()
        n = len(b)
        head = bytes([0xA0 | n]) if n < 32 else (b"\xd9" + struct.pack("B", n) if n < 256 else
                                                   b"\xda" + struct.pack(">H", n))
        return head + b
    if isinstance(o, (list, tuple)):
        n = len(o)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(mp(x) for x in o)
    if isinstance(o, dict):
        n = len(o)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(mp(k) + mp(v) for k, v in o.items())
    raise TypeError(type(o))


def samples() -> dict[str, Message]:
    now = time.time()
    ifs = (InterfaceInfo("eth0", "52:54:00:12:34:56", True, ("198.51.100.11/24", "2001:db8::11/64"), 2),
           InterfaceInfo("eth1", "52:54:00:12:34:57", True, ("203.0.113.11/24",), 3))

    def alloc(i: int) -> Allocation:
        return Allocation(key=f"apps/svc-{i}", namespace="apps", name=f"svc-{i}",
                          uid="6f1c9a52-8a3e-4c1b-9d0e-2f4b5a6c7d8e", generation=3, seq=1000 + i, term=4,
                          ips=(f"198.51.100.{i % 250}",), ports=(PortSpec("TCP", 443), PortSpec("UDP", 53)),
                          labels={"app.kubernetes.io/name": f"svc-{i}", "tier": "web"},
                          ip_pools={f"198.51.100.{i % 250}": "lan"}, pool_labels={"lan": {"site": "home"}})

    def vips(n: int) -> tuple[VipAssignment, ...]:
        return tuple(VipAssignment(f"198.51.100.{i}", 1_700_000_000 + i, ("eth0",), (f"apps/svc-{i}",))
                     for i in range(n))

    return {
        "Heartbeat (2 interfaces, 3 VIPs)": Heartbeat(
            node="worker-01", instance="9f3b2c1d", seq=123456, sent_at=now, interval_ms=100,
            labels={"kubernetes.io/hostname": "worker-01", "node-role.kubernetes.io/worker": ""},
            interfaces=ifs, serving={f"198.51.100.{i}": 1_700_000_000 + i for i in range(3)}),
        "NodeAssignments (0 VIPs)": NodeAssignments(node="worker-01", term=4, seq=98765, ttl_ms=1500,
                                                    sent_at=now),
        "NodeAssignments (1 VIP)": NodeAssignments(node="worker-01", term=4, seq=98765, ttl_ms=1500,
                                                   sent_at=now, vips=vips(1)),
        "NodeAssignments (20 VIPs)": NodeAssignments(node="worker-01", term=4, seq=98765, ttl_ms=1500,
                                                     sent_at=now, vips=vips(20)),
        "Allocation (2 ports, labels)": alloc(7),
        "AllocationSnapshot (100 services)": AllocationSnapshot(term=4, seq=2000,
                                                                allocations=tuple(alloc(i) for i in range(100))),
        "SnapshotRequest": SnapshotRequest("allocations", "leases-7d9f", "incarnation_changed"),
        "Conflict": Conflict("worker-01", "198.51.100.7", "52:54:00:12:34:56", "52:54:00:aa:bb:cc", "eth0", now),
    }


def timeit(fn: Any, n: int = 2000) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


async def redis_bytes_per_entry(dsn: str, payload: bytes, n: int = 2000) -> float:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(dsn)
    await r.delete("l2lbsizes:s")
    async with r.pipeline(transaction=False) as p:
        for _ in range(n):
            p.xadd("l2lbsizes:s", {"m": payload})
        await p.execute()
    used = await r.memory_usage("l2lbsizes:s", samples=0)
    await r.delete("l2lbsizes:s")
    await r.aclose()
    return float(used or 0) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default=None)
    args = ap.parse_args(argv)
    rp = None
    dsn = args.redis
    if dsn is None:
        try:
            from tests.support.redis_server import RedisProcess

            rp = RedisProcess(Path(tempfile.mkdtemp(prefix="l2lb-sizes-")))
            rp.start()
            dsn = rp.url
        except RuntimeError:
            dsn = None
    try:
        print("| message | JSON bytes | msgpack bytes | msgpack/JSON | JSON+zlib | encode µs | decode µs |"
              " Redis bytes/entry (JSON) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, msg in samples().items():
            js = encode(msg)
            d = msg.to_dict()
            d["k"], d["v"] = msg.KIND, msg.VERSION
            mpk = mp(d)
            enc = timeit(lambda m=msg: encode(m), 300 if len(js) > 10000 else 3000)
            dec = timeit(lambda j=js: decode(j), 300 if len(js) > 10000 else 3000)
            per = asyncio.run(redis_bytes_per_entry(dsn, js, 200 if len(js) > 10000 else 2000)) if dsn else 0.0
            print(f"| {name} | {len(js)} | {len(mpk)} | {len(mpk) / len(js):.2f} | {len(zlib.compress(js))} |"
                  f" {enc:.1f} | {dec:.1f} | {per:.0f} |")
        json.loads(encode(samples()["Conflict"]))  # sanity: it is JSON
    finally:
        if rp is not None:
            rp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
