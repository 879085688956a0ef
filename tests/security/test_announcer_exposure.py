"""Security of the announcer on the wire, beyond tests/net: a node with two separate LAN segments
(answer only on allowed interfaces; an interface l2lb was not told about is never answered on, by the
announcer nor by the kernel), and the per-source rate limit under a real flood.

Addresses: TEST-NET-2 198.51.100.0/24 only, inside namespaces these tests create; every loop bounded.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from l2lb.core import codec
from l2lb.lab.netns import Host, Topology, entered
from tests.net.announcer_helpers import ETH_P_ALL, RawClient, announcer, http_get, private_topology

pytestmark = pytest.mark.net

VIP_LAN1 = "198.51.100.10"  # restricted to enp0s25
VIP_ANY = "198.51.100.20"  # any allowed interface
CLIENT_IP = "198.51.100.3"
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()


class Wire(RawClient):
    """A raw socket on one interface of the client namespace (any interface, not only the host's first)."""

    def __init__(self, ns: str, ifname: str, mac: str):  # not RawClient's: that one takes a Host
        with entered(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((ifname, 0))
        # a flood must not overflow the receive queue with our own frames: skip outgoing, big buffer
        self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.mac = codec.mac_bytes(mac)

    def ask(self, vip: str, *, src_mac: bytes | None = None) -> bytes:
        mac = src_mac or self.mac
        frame = codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=mac, sha=mac, spa=codec.ip_bytes(CLIENT_IP),
                                tha=codec.ZERO_MAC, tpa=codec.ip_bytes(vip))
        self.sock.send(frame)
        return frame

    def replies(self, vip: str, timeout: float, want: int | None = None) -> list[codec.ArpFrame]:
        """ARP replies for ``vip`` (not gratuitous ones) received until ``timeout`` (or ``want`` of them)."""
        spa = codec.ip_bytes(vip)

        def reply(data: bytes) -> bool:
            fr = codec.parse(data)
            return isinstance(fr, codec.ArpFrame) and fr.op == 2 and fr.spa == spa and fr.tha != codec.ZERO_MAC

        return [cast(codec.ArpFrame, codec.parse(d)) for d in self.collect(reply, timeout=timeout, want=want)]


def two_segment_node(topology: Topology) -> tuple[Host, Host, str, str]:
    """n1 on the bridge (enp0s25) and on a second, separate segment: a veth lan2 <-> c2 in the client."""
    node = topology.add_host("n1", ifname="enp0s25", addrs=["198.51.100.2/24"])
    client = topology.add_host("cli", addrs=[f"{CLIENT_IP}/24"])
    node.exec(["ip", "link", "add", "lan2", "type", "veth", "peer", "name", "c2"])
    node.exec(["ip", "link", "set", "c2", "netns", client.ns])
    node.exec(["ip", "link", "set", "lan2", "up"])
    client.exec(["ip", "link", "set", "c2", "up"])
    lan2_mac = node.exec(["cat", "/sys/class/net/lan2/address"]).stdout.strip()
    c2_mac = client.exec(["cat", "/sys/class/net/c2/address"]).stdout.strip()
    return node, client, lan2_mac, c2_mac


STATIC = {"vips": [{"ip": VIP_LAN1, "epoch": 1, "interfaces": ["enp0s25"]}, {"ip": VIP_ANY, "epoch": 1}],
          "ttl_ms": 60_000}


def test_two_segments_answer_only_where_allowed(topology: Topology, tmp_path: Path) -> None:
    node, client, lan2_mac, c2_mac = two_segment_node(topology)
    lan1 = Wire(client.ns, "eth0", client.mac)
    lan2 = Wire(client.ns, "c2", c2_mac)
    try:
        with announcer(node, "n1", tmp_path, static=STATIC,
                       extra=["--garp-count", "0", "--interfaces", "enp0s25", "lan2"]) as ann:
            # the second segment works: the unrestricted VIP is answered there, with lan2's MAC
            lan2.ask(VIP_ANY)
            got = lan2.replies(VIP_ANY, 2.0, want=1)
            assert [codec.mac_text(r.sha) for r in got] == [lan2_mac]
            # the VIP restricted to enp0s25 is answered on enp0s25 only
            lan1.ask(VIP_LAN1)
            got = lan1.replies(VIP_LAN1, 2.0, want=1)
            assert [codec.mac_text(r.sha) for r in got] == [node.mac]
            for _ in range(3):
                lan2.ask(VIP_LAN1)
            assert lan2.replies(VIP_LAN1, 1.0) == []
            assert ann.status()["counters"].get("wrong_interface", 0) >= 3
        # an interface the announcer was not given: nothing answers there, not even the kernel
        with announcer(node, "n1", tmp_path, static=STATIC, extra=["--garp-count", "0", "--interfaces", "enp0s25"]):
            lan1.ask(VIP_ANY)
            assert [codec.mac_text(r.sha) for r in lan1.replies(VIP_ANY, 2.0, want=1)] == [node.mac]
            for _ in range(3):
                lan2.ask(VIP_ANY)
                lan2.ask(VIP_LAN1)
            assert lan2.replies(VIP_ANY, 1.0) == []
            assert lan2.replies(VIP_LAN1, 0.2) == []
    finally:
        lan1.close()
        lan2.close()


def test_rate_limit_holds_under_a_flood_and_other_askers_are_served(topology: Topology, tmp_path: Path) -> None:
    node = topology.add_host("n1", ifname="enp0s25", addrs=["198.51.100.2/24"])
    client = topology.add_host("cli", addrs=[f"{CLIENT_IP}/24"])
    wire = Wire(client.ns, "eth0", client.mac)
    listen = Wire(client.ns, "eth0", client.mac)  # second socket: collects every reply during the flood
    flooder = codec.mac_bytes("02:00:5e:00:53:66")
    polite = codec.mac_bytes("02:00:5e:00:53:77")
    rate, burst = 20.0, 10.0
    try:
        with announcer(node, "n1", tmp_path, static=STATIC,
                       extra=["--garp-count", "0", "--reply-rate", str(rate), "--reply-burst", str(burst)]) as ann:
            t0 = time.monotonic()
            sent = 0
            polite_sent = 0
            while sent < 3000 and time.monotonic() - t0 < 3.0:  # bounded in count and time
                wire.ask(VIP_ANY, src_mac=flooder)
                sent += 1
                if sent % 300 == 0:
                    wire.ask(VIP_ANY, src_mac=polite)
                    polite_sent += 1
            elapsed = time.monotonic() - t0
            replies = listen.replies(VIP_ANY, 1.5)
            to_flooder = [f for f in replies if f.tha == flooder]
            to_polite = [f for f in replies if f.tha == polite]
            assert sent >= 1000, sent
            # token bucket: burst plus rate x time (plus the time the announcer needed to drain its queue)
            assert len(to_flooder) <= burst + rate * (elapsed + 1.5) + 2, (len(to_flooder), elapsed)
            assert len(to_flooder) >= burst
            assert len(to_polite) == polite_sent, (len(to_polite), polite_sent)
            status, _ = http_get(node.ns, "/healthz")
            assert status == 200
            assert ann.status()["counters"].get("rate_limited", 0) >= sent // 2
    finally:
        wire.close()
        listen.close()
