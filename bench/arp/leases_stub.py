"""bench/arp --bus: stands in for the leases service, so the announcer runs as in production.

    python bench/arp/leases_stub.py DSN NODE VIPS_JSON

Publishes the node's full set (NodeAssignments with its digest) at start, on every SnapshotRequest and
every --full-every-ms, and a NodeRenewal (digest only) every --renew-ms in between: the traffic the
real leases service sends one node whose set does not change. The announcer meanwhile sends its
heartbeats (with the serving map of every VIP) every 100 ms. Runs until killed (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

from l2lb.adapters.bus.client import Bus
from l2lb.core.messages import NodeAssignments, NodeRenewal, SnapshotRequest, VipAssignment, assignments_digest


async def run(args: argparse.Namespace) -> None:
    vips = tuple(VipAssignment(v["ip"], int(v["epoch"])) for v in json.loads(Path(args.vips).read_text())["vips"])
    digest = assignments_digest(vips)
    bus = await Bus.connect(args.dsn, client_name="bench-leases-stub")
    term, seq = 1, 0
    want_full = True
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def on_request(req: SnapshotRequest) -> None:
        nonlocal want_full
        want_full = True

    snapshots = bus.serve_snapshots("assignments", "bench-leases-stub", on_request)
    tasks = [asyncio.create_task(snapshots.run(stop))]
    last_full = 0.0
    try:
        while not stop.is_set():
            seq += 1
            now = time.time()
            if want_full or now - last_full >= args.full_every_ms / 1000:
                await bus.publish(bus.keys.assignments, NodeAssignments(
                    node=args.node, term=term, seq=seq, ttl_ms=args.ttl_ms, sent_at=now, vips=vips, digest=digest))
                want_full, last_full = False, now
            else:
                await bus.publish(bus.keys.assignments, NodeRenewal(
                    node=args.node, term=term, seq=seq, ttl_ms=args.ttl_ms, sent_at=now, digest=digest))
            try:
                await asyncio.wait_for(stop.wait(), args.renew_ms / 1000)
            except TimeoutError:
                pass
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dsn")
    ap.add_argument("node")
    ap.add_argument("vips", help="JSON file {vips: [{ip, epoch}]}")
    ap.add_argument("--renew-ms", type=int, default=250)
    ap.add_argument("--full-every-ms", type=int, default=30_000)
    ap.add_argument("--ttl-ms", type=int, default=1000)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
