"""The announcer's hot path end to end (real namespaces, TEST-NET only): repeated requests are answered from
the memo (counted in l2lb_announcer_memo_hits_total), identically in ring and recv/send mode, and the status
API says which I/O an interface uses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether

from l2lb.core import codec
from l2lb.lab.netns import Topology

from .announcer_helpers import RawClient, announcer, metric_value, private_topology

pytestmark = pytest.mark.net

VIP4 = "198.51.100.10"
STATIC = {"vips": [{"ip": VIP4, "epoch": 1}], "ttl_ms": 60_000}


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()


@pytest.mark.parametrize("io", ["ring", "socket"])
def test_repeated_requests_come_from_the_memo(topology: Topology, tmp_path: Path, io: str) -> None:
    node = topology.add_host("n1", ifname="enp0s25", addrs=["198.51.100.2/24"])
    client = topology.add_host("cli", addrs=["198.51.100.3/24"])
    cmac = codec.mac_bytes(client.mac)
    extra = ["--garp-count", "0"] + (["--no-packet-ring"] if io == "socket" else [])
    with announcer(node, "n1", tmp_path, static=STATIC, extra=extra) as ann:
        assert ann.status()["interfaces"][0]["io"] == io
        raw = RawClient(client)
        try:
            req = codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=cmac, sha=cmac,
                                  spa=codec.ip_bytes("198.51.100.3"), tha=codec.ZERO_MAC, tpa=codec.ip_bytes(VIP4))
            for _ in range(20):
                raw.send(req)
            got = raw.collect(lambda f: f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02", timeout=3, want=20)
        finally:
            raw.close()
        assert len(got) == 20 and len(set(got)) == 1  # every answer the same frame
        a = Ether(got[0])[ARP]
        assert (a.op, a.psrc, a.hwsrc, a.pdst, a.hwdst) == (2, VIP4, node.mac, "198.51.100.3", client.mac)
        time.sleep(1.1)  # metrics are synced every second
        m = ann.metrics()
        assert metric_value(m, "l2lb_announcer_memo_hits_total") >= 19
        assert metric_value(m, "l2lb_announcer_frames_total", 'reason="answered"') >= 20
