"""The peer heartbeat socket on a real veth/bridge (namespaces, TEST-NET): frames of EtherType 0x88b5 to the
peers' group MAC reach the other nodes' sockets with their kernel receive time; our own frames, other
EtherTypes and other multicast groups do not; the ARP/NDP socket never sees a peer frame."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from l2lb.adapters.net.peerport import PeerPort
from l2lb.adapters.net.rawsock import RawPort
from l2lb.core import codec, peers
from l2lb.lab.netns import Topology, entered

from .announcer_helpers import RawClient, private_topology

pytestmark = pytest.mark.net

KEY = b"k" * 32


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()


def _frame(node: str, n: int, mac: str) -> bytes:
    return peers.encode(peers.PeerFrame("l2lb", node, "i1", n, int(time.time() * 1000)), KEY, codec.mac_bytes(mac))


async def test_peer_frames_cross_the_lan_with_their_receive_time(topology: Topology) -> None:
    a = topology.add_host("a", addrs=["198.51.100.21/24"])
    b = topology.add_host("b", addrs=["198.51.100.22/24"])
    c = topology.add_host("c", addrs=["198.51.100.23/24"])
    loop = asyncio.get_running_loop()
    got: dict[str, list[tuple[bytes, float, float]]] = {"a": [], "b": []}
    ports = {}
    for name, host in (("a", a), ("b", b)):
        with entered(host.ns):
            ports[name] = PeerPort(host.ifname)
        ports[name].start(loop, lambda p, f, mono, wall, n=name: got[n].append((f, mono, wall)))
    with entered(b.ns):
        arp = RawPort(b.ifname)
    arp_seen: list[bytes] = []
    arp.start(loop, lambda p, frames: arp_seen.extend(frames))
    other = RawClient(c)
    try:
        sent_at = time.time()
        assert ports["a"].send(_frame("a", 1, a.mac))
        # noise from c: another EtherType to the group, a peer frame to another multicast MAC
        other.send(codec.mac_bytes("0f:6c:32:6c:62:01") + other.mac + b"\x88\xb6" + b"\0" * 60)
        raw = _frame("c", 1, c.mac)
        other.send(codec.mac_bytes("0f:6c:32:6c:62:02") + raw[6:])
        await asyncio.sleep(0.5)  # delivery on a veth/bridge takes microseconds; the noise has arrived too
        assert len(got["b"]) == 1, got
        frame, mono, wall = got["b"][0]
        f = peers.decode(frame, KEY)
        assert (f.node, f.counter) == ("a", 1)
        assert sent_at - 0.05 <= wall <= time.time() and mono <= time.monotonic()
        assert got["a"] == []  # our own frame is never read back
        assert not [x for x in arp_seen if x[12:14] == b"\x88\xb5"]  # the ARP socket's filter keeps it out
        # a frame that waited in the socket: its receive time is when it arrived, not when it was read
        ports["b"].close()
        with entered(b.ns):
            ports["b"] = PeerPort(b.ifname)
        ports["a"].send(_frame("a", 2, a.mac))
        await asyncio.sleep(0.5)
        late: list[tuple[bytes, float, float]] = []
        ports["b"].start(loop, lambda p, f, mono, wall: late.append((f, mono, wall)))
        await asyncio.sleep(0.1)
        assert len(late) == 1 and time.monotonic() - late[0][1] >= 0.45
    finally:
        other.close()
        arp.close()
        for p in ports.values():
            p.close()
