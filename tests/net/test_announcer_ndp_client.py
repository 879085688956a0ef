"""The announcer's NDP as the lab's client sees it: the raw NS prober, ndisc6 and the kernel's
neighbour table agree on who answers an IPv6 VIP in a pool prefix of its own (2001:db8:53::/64),
and a takeover moves the client's kernel entry by the unsolicited NA alone. scapy is the oracle of
the NA flags (R/S/O) and the target link-layer option of every NA the prober recorded."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import Ether

from l2lb.lab.neigh import NeighWatcher
from l2lb.lab.netns import Host, Topology, entered
from l2lb.lab.probe import Answer, NdpProber

from .announcer_helpers import announcer, private_topology

pytestmark = pytest.mark.net

VIP = "2001:db8:53::1"
CLIENT = "2001:db8:53::100"
PROBER = "2001:db8:53::101"  # owned by nobody: the prober's answers never reach the client's kernel


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()


def _ndisc6(client: Host) -> list[str]:
    """The MACs that answered ndisc6's one solicitation within 500 ms (unsolicited NAs of a takeover
    are shown too: ``-m`` prints every NA for the target)."""
    if shutil.which("ndisc6") is None:
        pytest.fail("ndisc6 is missing: apt-get install ndisc6 (bash scripts/dev setup installs it)")
    out = client.exec(["ndisc6", "-m", "-n", "-r", "1", "-w", "500", VIP, client.ifname], check=False).stdout
    return sorted({m.lower() for m in re.findall(r"Target link-layer address:\s*([0-9A-Fa-f:]{17})", out)})


def _kick(client: Host) -> None:
    import socket

    with entered(client.ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with s:
        s.sendto(b"x", (VIP, 9))


def _check_na(a: Answer, mac: str, *, solicited: bool) -> None:
    p = Ether(a.frame)
    na, ip6 = p[ICMPv6ND_NA], p[IPv6]
    assert (na.R, na.S, na.O, na.tgt) == (0, int(solicited), 1, VIP), p.show(dump=True)
    assert p[ICMPv6NDOptDstLLAddr].lladdr == mac == a.mac and p.src == mac
    assert ip6.hlim == 255 and ip6.src == VIP
    assert ip6.dst == (PROBER if solicited else "ff02::1")
    assert a.flags == (0x60 if solicited else 0x20)


async def _probe(client: Host, seconds: float) -> list[Answer]:
    prober = NdpProber(client.ns, client.ifname, PROBER, VIP, interval_s=0.01)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    try:
        return (await prober.run(stop, max_seconds=seconds + 2)).answers
    finally:
        prober.close()


async def test_prober_ndisc6_and_kernel_agree_and_takeover_moves_the_kernel(topology: Topology,
                                                                             tmp_path: Path) -> None:
    n1 = topology.add_host("n1", ifname="enp0s25", addrs=["2001:db8::2/64"])
    n2 = topology.add_host("n2", ifname="enp0s25", addrs=["2001:db8::4/64"])
    client = topology.add_host("cli", addrs=[f"{CLIENT}/64"])
    owned = {"vips": [{"ip": VIP, "epoch": 1}], "ttl_ms": 60_000}
    with announcer(n1, "n1", tmp_path, static=owned) as a1, \
            announcer(n2, "n2", tmp_path, static={"vips": [], "ttl_ms": 60_000}) as a2:
        answers = await _probe(client, 0.3)
        assert {a.mac for a in answers} == {n1.mac}, answers
        replies = [a for a in answers if a.kind == "reply"]
        assert len(replies) >= 10
        for a in replies:
            _check_na(a, n1.mac, solicited=True)
        assert _ndisc6(client) == [n1.mac]
        for _ in range(20):
            _kick(client)
            await asyncio.sleep(0.05)
            if f"lladdr {n1.mac} REACHABLE" in client.exec(["ip", "-6", "neigh", "show", VIP]).stdout:
                break
        assert f"lladdr {n1.mac}" in client.exec(["ip", "-6", "neigh", "show", VIP]).stdout

        # takeover: n1 stops, n2 starts with unsolicited NAs; the prober keeps asking meanwhile
        watcher = NeighWatcher(client.ns, VIP)
        try:
            watcher.attach()
            t0 = time.monotonic()
            probing = asyncio.create_task(_probe(client, 1.5))
            await asyncio.sleep(0.2)
            a1.reload({"vips": [], "ttl_ms": 60_000})
            a2.reload({"vips": [{"ip": VIP, "epoch": 2}], "ttl_ms": 60_000})
            answers = await probing
            watcher.detach()
            moved = watcher.first_with_mac(n2.mac, t0)
        finally:
            watcher.close()
        # n1's own announcements (5 rounds, 1 s apart, from when it took the VIP) may fall just before its
        # reload: they are n1's, correctly formed; the takeover's are n2's
        assert {a.mac for a in answers if a.kind == "garp"} <= {n1.mac, n2.mac}, answers
        for a in answers:
            if a.kind == "garp":
                _check_na(a, a.mac, solicited=False)
        unsolicited = [a for a in answers if a.kind == "garp" and a.mac == n2.mac]
        assert unsolicited, answers
        assert not [a for a in answers if a.mac == n1.mac and a.t > unsolicited[0].t + 0.5], answers
        for a in (a for a in answers if a.kind == "reply" and a.mac == n2.mac):
            _check_na(a, n2.mac, solicited=True)
        assert moved is not None, watcher.events
        assert moved.t >= unsolicited[0].t - 0.05 and moved.state == "STALE"  # O=1, S=0: STALE with the new MAC
        assert f"lladdr {n2.mac}" in client.exec(["ip", "-6", "neigh", "show", VIP]).stdout
        assert _ndisc6(client) == [n2.mac]
        assert a2.status()["vips"][0]["ip"] == VIP and a1.status()["vips"] == []
