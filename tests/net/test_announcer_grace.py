"""Leases-outage grace: an announcer keeps its VIPs past the validity deadline only while the leases
service is silent for *every* node and its own Redis connection is healthy (a leases crash or leader
failover), never when leases keeps renewing other nodes but not this one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.core.messages import NodeAssignments, VipAssignment
from l2lb.lab.netns import Topology

from .announcer_helpers import AnnouncerProc, metric_value, private_topology
from .test_announcer_bus import PROXY_PORT, VIP4, Relay, _arping_ok

pytestmark = pytest.mark.net
TTL_MS = 600


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()


async def _run(topology: Topology, tmp_path: Path, redis_url: str, *, keep_renewing_others: bool,
               grace_ms: int) -> tuple[AnnouncerProc, bool, str]:
    node = topology.add_host("n1", ifname="enp0s25", addrs=["198.51.100.2/24"])
    client = topology.add_host("cli", addrs=["198.51.100.3/24"])
    u = urlparse(redis_url)
    relay = Relay()
    await relay.start(node.ns, u.hostname or "127.0.0.1", u.port or 6379)
    bus = await Bus.connect(redis_url, client_name="test-leases")
    ann = AnnouncerProc(node, "n1", tmp_path, bus=f"redis://127.0.0.1:{PROXY_PORT}/0",
                        extra=["--leases-outage-grace-ms", str(grace_ms)])
    seq = 0
    mine_too = True

    async def leases() -> None:
        nonlocal seq
        while True:
            seq += 1
            if mine_too:
                await bus.publish(bus.keys.assignments, NodeAssignments(
                    node="n1", term=1, seq=seq, ttl_ms=TTL_MS, sent_at=time.time(),
                    vips=(VipAssignment(VIP4, 5, ("enp0s25",)),)))
            if keep_renewing_others or mine_too:
                await bus.publish(bus.keys.assignments, NodeAssignments(
                    node="n2", term=1, seq=seq, ttl_ms=TTL_MS, sent_at=time.time(),
                    vips=(VipAssignment("198.51.100.20", 6),)))
            await asyncio.sleep(0.15)

    task = asyncio.create_task(leases())
    try:
        await asyncio.to_thread(ann.wait_ready)
        deadline = time.monotonic() + 5
        while not await asyncio.to_thread(_arping_ok, client, VIP4, node.mac):
            assert time.monotonic() < deadline, ann.log()
        # leases stops renewing this node (and, unless told otherwise, every node: it crashed)
        mine_too = False
        if not keep_renewing_others:
            task.cancel()
        await asyncio.sleep(3 * TTL_MS / 1000)
        answering = await asyncio.to_thread(_arping_ok, client, VIP4, node.mac)
        return ann, answering, ann.metrics()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(ann.stop)
        await relay.stop()
        await bus.close()


async def test_keeps_answering_while_leases_is_silent_for_every_node(topology: Topology, tmp_path: Path,
                                                                     redis_url: str) -> None:
    ann, answering, metrics = await _run(topology, tmp_path, redis_url, keep_renewing_others=False,
                                         grace_ms=30000)
    assert answering, ann.log()
    assert metric_value(metrics, "l2lb_announcer_leases_grace") == 1.0
    assert "leases service is down" in ann.log()


async def test_stops_when_leases_renews_others_but_not_this_node(topology: Topology, tmp_path: Path,
                                                                 redis_url: str) -> None:
    ann, answering, metrics = await _run(topology, tmp_path, redis_url, keep_renewing_others=True,
                                         grace_ms=30000)
    assert not answering, ann.log()
    assert metric_value(metrics, "l2lb_announcer_leases_grace") == 0.0
    assert "expired" in ann.log()


async def test_strict_expiry_when_grace_is_off(topology: Topology, tmp_path: Path, redis_url: str) -> None:
    ann, answering, _ = await _run(topology, tmp_path, redis_url, keep_renewing_others=False, grace_ms=0)
    assert not answering, ann.log()
