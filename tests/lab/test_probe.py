from __future__ import annotations

import asyncio

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import Ether

from l2lb.lab.netns import Topology
from l2lb.lab.probe import Answer, ArpProber, NdpProber, Timeline, prober_for


def test_timeline_failover_figures() -> None:
    tl = Timeline(vip="198.51.100.153", interval_s=0.01)
    old, new = "02:00:00:00:00:01", "02:00:00:00:00:02"
    fault = 100.0
    tl.answers += [Answer(99.98, old, "reply"), Answer(99.99, old, "reply"), Answer(100.005, old, "reply")]
    tl.answers += [Answer(100.30, new, "garp"), Answer(100.31, new, "reply"), Answer(100.32, old, "reply"),
                   Answer(100.33, new, "reply")]
    f = tl.failover(old, fault)
    assert f["new_mac"] == new
    assert f["first_new_answer_ms"] == pytest.approx(310, abs=0.1)
    assert f["last_old_answer_ms"] == pytest.approx(-10, abs=0.1)
    assert f["outage_ms"] == pytest.approx(320, abs=0.1)
    assert f["dual_ms"] == pytest.approx(10, abs=0.1)
    assert f["first_garp_ms"] == pytest.approx(300, abs=0.1)
    assert tl.macs() == [old, new]


def test_timeline_without_new_answer_has_no_outage_figure() -> None:
    tl = Timeline(vip="198.51.100.153", interval_s=0.01)
    tl.answers.append(Answer(1.0, "02:00:00:00:00:01", "reply"))
    f = tl.failover("02:00:00:00:00:01", 2.0)
    assert f["new_mac"] is None and f["outage_ms"] is None


@pytest.mark.net
async def test_prober_records_kernel_answers(topology: Topology) -> None:
    server = topology.add_host("srv", addrs=["198.51.100.20/24"])
    topology.add_host("cli", addrs=["198.51.100.100/24"])
    prober = ArpProber(topology.hosts["cli"].ns, "eth0", "198.51.100.100", "198.51.100.20", interval_s=0.01)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    try:
        tl = await prober.run(stop, max_seconds=2)
    finally:
        prober.close()
    assert 10 <= tl.sent <= 60
    assert tl.macs() == [server.mac]
    assert len(tl.replies()) >= tl.sent // 2


@pytest.mark.net
async def test_prober_never_sees_answers_for_an_unowned_address(topology: Topology) -> None:
    topology.add_host("srv", addrs=["198.51.100.20/24"])
    topology.add_host("cli", addrs=["198.51.100.100/24"])
    prober = ArpProber(topology.hosts["cli"].ns, "eth0", "198.51.100.100", "198.51.100.99", interval_s=0.01)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    try:
        tl = await prober.run(stop, max_seconds=2)
    finally:
        prober.close()
    assert tl.sent >= 5
    assert tl.replies() == []


STALE_MAC = "02:00:00:00:00:99"
PROBER_SRC = "2001:db8:53::101"


@pytest.mark.net
async def test_ndp_prober_records_kernel_na_and_never_feeds_the_client_kernel(topology: Topology) -> None:
    """The NDP prober asks from an address nobody owns: the kernel of a server answers it (solicited NA,
    S and O set, its MAC in the target link-layer option, as scapy reads the same frame), and the
    client's own neighbour table never learns the server from it."""
    server = topology.add_host("srv", addrs=["2001:db8:53::20/64"])
    client = topology.add_host("cli", addrs=["2001:db8:53::100/64"])
    # a stale entry with another MAC: a solicited NA with O=1 reaching the kernel would override it
    client.exec(["ip", "-6", "neigh", "add", "2001:db8:53::20", "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale"])
    prober = prober_for(client.ns, "eth0", PROBER_SRC, "2001:db8:53::20", interval_s=0.01)
    assert isinstance(prober, NdpProber)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    try:
        tl = await prober.run(stop, max_seconds=2)
    finally:
        prober.close()
    assert 10 <= tl.sent <= 60
    assert tl.macs() == [server.mac]
    reps = tl.replies()
    assert len(reps) >= tl.sent // 2
    for a in reps:
        assert a.flags == 0x60 and a.eth_src == server.mac, a  # S=1 O=1 R=0 (a host, not a router)
        p = Ether(a.frame)
        na = p[ICMPv6ND_NA]
        assert (na.R, na.S, na.O, na.tgt) == (0, 1, 1, "2001:db8:53::20")
        assert p[IPv6].dst == PROBER_SRC and p[IPv6].hlim == 255
        assert p[ICMPv6NDOptDstLLAddr].lladdr == a.mac
    assert f"lladdr {STALE_MAC}" in client.exec(["ip", "-6", "neigh", "show", "2001:db8:53::20"]).stdout


@pytest.mark.net
async def test_ndp_prober_never_sees_answers_for_an_unowned_address(topology: Topology) -> None:
    topology.add_host("srv", addrs=["2001:db8:53::20/64"])
    client = topology.add_host("cli", addrs=["2001:db8:53::100/64"])
    prober = NdpProber(client.ns, "eth0", "2001:db8:53::101", "2001:db8:53::99", interval_s=0.01)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    try:
        tl = await prober.run(stop, max_seconds=2)
    finally:
        prober.close()
    assert tl.sent >= 5
    assert tl.answers == []

