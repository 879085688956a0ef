"""The chaos prober on a real wire: it sees who answers, and a real dual announcement (two announcers
given the same VIP) is reported as a violation-sized episode -- the invariant can fail."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2lb.lab.chaos import MultiProber, dual_episodes, outages
from l2lb.lab.netns import Topology
from tests.net.announcer_helpers import announcer, private_topology

pytestmark = [pytest.mark.net, pytest.mark.chaos]

VIP = "198.51.100.10"
SOLO = "198.51.100.20"


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()


async def test_prober_sees_single_and_dual_announcements(topology: Topology, tmp_path: Path) -> None:
    n1 = topology.add_host("n1", ifname="enp0s25", addrs=["198.51.100.2/24"])
    n2 = topology.add_host("n2", ifname="enp0s25", addrs=["198.51.100.4/24"])
    cli = topology.add_host("cli", addrs=["198.51.100.3/24"])
    both = {"vips": [{"ip": VIP, "epoch": 1}], "ttl_ms": 60_000}
    only1 = {"vips": [{"ip": VIP, "epoch": 1}, {"ip": SOLO, "epoch": 1}], "ttl_ms": 60_000}
    extra = ["--garp-count", "0"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    with announcer(n1, "n1", tmp_path / "a", static=only1, extra=extra), \
            announcer(n2, "n2", tmp_path / "b", static=both, extra=extra):
        prober = MultiProber(cli.ns, "eth0", [f"198.51.100.{i}" for i in range(210, 214)], interval_s=0.05)
        prober.set_targets([VIP, SOLO, "198.51.100.30"])
        stop = asyncio.Event()
        task = asyncio.create_task(prober.run(stop))
        await asyncio.sleep(1.6)
        stop.set()
        await asyncio.wait_for(task, 5)
        prober.close()
    assert prober.sent >= 60
    solo = prober.history[SOLO]
    assert sum(1 for _, m in solo if m == frozenset({n1.mac})) >= len(solo) - 3
    assert dual_episodes(SOLO, solo, interval=0.05) == []
    eps = dual_episodes(VIP, prober.history[VIP], interval=0.05)
    assert len(eps) == 1 and eps[0].seconds > 1.0, eps
    assert set(eps[0].macs) == {n1.mac, n2.mac}
    nobody = prober.history["198.51.100.30"]
    assert nobody and all(not m for _, m in nobody)
    assert outages("198.51.100.30", nobody) == []
