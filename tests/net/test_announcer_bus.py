"""The announcer's production path: NodeAssignments from the Redis bus, Heartbeats back, link-down reported
at once, answering through a Redis outage until the validity deadline.

The announcer runs inside the node namespace; Redis (the shared ``redis_url`` fixture) listens on the root
namespace's loopback, so the test relays one TCP port from the node namespace to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.core import codec
from l2lb.core.messages import Conflict, Heartbeat, NodeAssignments, VipAssignment, decode
from l2lb.lab.netns import Host, Topology, entered

from .announcer_helpers import AnnouncerProc, RawClient, private_topology

pytestmark = pytest.mark.net

VIP4 = "198.51.100.10"
VIP6 = "2001:db8::10"
OTHERS = "198.51.100.11"
PROXY_PORT = 16379


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()


class Relay:
    """TCP relay: a listener made inside namespace ``ns`` -> ``host:port`` in the root namespace."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, ns: str, host: str, port: int) -> None:
        with entered(ns):
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", PROXY_PORT))
        ls.listen(16)
        ls.setblocking(False)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                ur, uw = await asyncio.open_connection(host, port)
            except OSError:
                w.close()
                return
            self.writers += [w, uw]
            await asyncio.gather(pipe(r, uw), pipe(ur, w))

        self.server = await asyncio.start_server(handle, sock=ls)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in self.writers:
                w.close()
            self.writers.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None


def _arping_ok(client: Host, ip: str, mac: str) -> bool:
    out = client.exec(["arping", "-c", "1", "-w", "2", "-I", client.ifname, ip], check=False, timeout=8).stdout
    return f"[{mac.upper()}]" in out


async def _heartbeats(bus: Bus, node: str, since: str = "-") -> list[tuple[str, Heartbeat]]:
    out = []
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await bus.redis.xrange(  # type: ignore[assignment]
        bus.keys.heartbeats, min=since)
    for eid, fields in entries:
        msg = decode(fields[b"m"])
        if isinstance(msg, Heartbeat) and msg.node == node:
            out.append((eid.decode() if isinstance(eid, bytes) else str(eid), msg))
    return out


async def _conflicts(bus: Bus) -> list[Conflict]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await bus.redis.xrange(  # type: ignore[assignment]
        bus.keys.heartbeats)
    return [m for m in (decode(f[b"m"]) for _, f in entries) if isinstance(m, Conflict)]


async def test_bus_assignments_heartbeats_link_and_outage(topology: Topology, tmp_path: Path,
                                                          redis_url: str) -> None:
    node = topology.add_host("n1", ifname="enp0s25", addrs=["198.51.100.2/24", "2001:db8::2/64"])
    client = topology.add_host("cli", addrs=["198.51.100.3/24", "2001:db8::3/64"])
    u = urlparse(redis_url)
    relay = Relay()
    await relay.start(node.ns, u.hostname or "127.0.0.1", u.port or 6379)
    bus = await Bus.connect(redis_url, client_name="test-announcer")
    ann = AnnouncerProc(node, "n1", tmp_path, bus=f"redis://127.0.0.1:{PROXY_PORT}/0",
                        extra=["--node-labels", "zone=a,rack=r1"])
    publishing = True
    seq = 0

    async def publisher() -> None:
        nonlocal seq
        while publishing:
            seq += 1
            mine = NodeAssignments(node="n1", term=3, seq=seq, ttl_ms=2500, sent_at=time.time(),
                                   vips=(VipAssignment(VIP4, 7, ("enp0s25",), ("default/web",)),
                                         VipAssignment(VIP6, 8)))
            theirs = NodeAssignments(node="n2", term=3, seq=seq, ttl_ms=2500, sent_at=time.time(),
                                     vips=(VipAssignment(OTHERS, 9),))
            await bus.publish(bus.keys.assignments, theirs)
            await bus.publish(bus.keys.assignments, mine)
            await asyncio.sleep(0.2)

    pub = asyncio.create_task(publisher())
    try:
        await asyncio.to_thread(ann.wait_ready)
        # answers for its own VIPs only, as soon as the bus delivered them
        deadline = time.monotonic() + 5
        while not await asyncio.to_thread(_arping_ok, client, VIP4, node.mac):
            assert time.monotonic() < deadline, ann.log()
        assert not await asyncio.to_thread(_arping_ok, client, OTHERS, node.mac)
        st = await asyncio.to_thread(ann.status)
        assert {v["ip"]: v["epoch"] for v in st["vips"]} == {VIP4: 7, VIP6: 8}
        assert st["term"] == 3 and 0 < st["remaining_s"] <= 2.5

        # a conflicting GARP from the client: a Conflict message on the heartbeats stream
        raw = RawClient(client)
        try:
            cmac = codec.mac_bytes(client.mac)
            raw.send(codec.build_garp_reply(cmac, codec.ip_bytes(VIP4)))
        finally:
            raw.close()
        conflicts: list[Conflict] = []
        deadline = time.monotonic() + 3
        while not conflicts and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            conflicts = await _conflicts(bus)
        assert conflicts, ann.log()
        c = conflicts[0]
        assert (c.node, c.ip, c.their_mac, c.our_mac, c.interface, c.defended) == \
            ("n1", VIP4, client.mac, node.mac, "enp0s25", True)

        # heartbeats: every ~100 ms, with labels, interfaces and what it serves
        await asyncio.sleep(1.0)
        hbs = await _heartbeats(bus, "n1")
        assert hbs, ann.log()
        last = hbs[-1][1]
        assert last.serving == {VIP4: 7, VIP6: 8}
        assert last.labels == {"zone": "a", "rack": "r1"}
        assert [(i.name, i.mac, i.up) for i in last.interfaces] == [("enp0s25", node.mac, True)]
        assert "198.51.100.2/24" in last.interfaces[0].addresses
        window = [h for _, h in hbs if h.sent_at >= last.sent_at - 1.0]
        assert 6 <= len(window) <= 14, len(window)
        assert [h.seq for _, h in hbs] == sorted(h.seq for _, h in hbs)

        # link down: a heartbeat saying so goes out at once (not only at the next tick)
        t0 = time.time()
        mark = hbs[-1][0]
        topology.cut("n1", up=False)
        down_at = None
        while down_at is None and time.time() - t0 < 2:
            for _, h in await _heartbeats(bus, "n1", since=mark):
                if not h.interfaces[0].up:
                    down_at = h.sent_at
                    break
            await asyncio.sleep(0.02)
        assert down_at is not None, ann.log()
        assert down_at - t0 < 0.3, down_at - t0
        topology.cut("n1", up=True)
        deadline = time.monotonic() + 5
        while not await asyncio.to_thread(_arping_ok, client, VIP4, node.mac):
            assert time.monotonic() < deadline, ann.log()

        # Redis unreachable: keeps answering until the validity deadline, then stops
        publishing = False
        await pub
        await relay.stop()
        t_out = time.monotonic()
        assert await asyncio.to_thread(_arping_ok, client, VIP4, node.mac)
        while (await asyncio.to_thread(ann.status))["valid"]:
            assert time.monotonic() - t_out < 5
            await asyncio.sleep(0.1)
        assert time.monotonic() - t_out >= 1.0  # it did not stop at the outage itself
        assert not await asyncio.to_thread(_arping_ok, client, VIP4, node.mac)
        assert "expired" in ann.log()
    finally:
        publishing = False
        pub.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pub
        await asyncio.to_thread(ann.stop)
        await relay.stop()
        await bus.close()
