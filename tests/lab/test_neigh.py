"""The lab's neighbour-table watcher against the real kernel (rtnetlink events in a namespace)."""

from __future__ import annotations

import asyncio

import pytest

from l2lb.lab.neigh import NeighWatcher, parse_neigh_messages
from l2lb.lab.netns import Topology

pytestmark = pytest.mark.net


async def test_watcher_sees_entries_change_with_mac_and_state(topology: Topology) -> None:
    client = topology.add_host("cli", addrs=["2001:db8:53::100/64"])
    w = NeighWatcher(client.ns, "2001:db8:53::20")
    try:
        w.attach()
        client.exec(["ip", "-6", "neigh", "add", "2001:db8:53::21", "lladdr", "02:00:00:00:00:21", "dev", "eth0"])
        client.exec(["ip", "-6", "neigh", "add", "2001:db8:53::20", "lladdr", "02:00:00:00:00:01", "dev", "eth0",
                     "nud", "stale"])
        client.exec(["ip", "-6", "neigh", "change", "2001:db8:53::20", "lladdr", "02:00:00:00:00:02", "dev", "eth0",
                     "nud", "reachable"])
        client.exec(["ip", "-6", "neigh", "del", "2001:db8:53::20", "dev", "eth0"])
        await asyncio.sleep(0.1)
        w.detach()
        got = [(e.ip, e.mac, e.state, e.deleted) for e in w.events]
        assert got[:2] == [("2001:db8:53::20", "02:00:00:00:00:01", "STALE", False),
                           ("2001:db8:53::20", "02:00:00:00:00:02", "REACHABLE", False)], got
        assert got[-1][0] == "2001:db8:53::20" and got[-1][3] is True, got
        first = w.first_with_mac("02:00:00:00:00:02", w.events[0].t)
        assert first is not None and first.state == "REACHABLE"
        assert w.first_with_mac("02:00:00:00:00:21", 0.0) is None  # another address is not recorded
    finally:
        w.close()


def test_parser_skips_garbage() -> None:
    assert parse_neigh_messages(b"", 0.0) == []
    assert parse_neigh_messages(b"\xff" * 40, 0.0) == []
    assert parse_neigh_messages(b"\x10\x00\x00\x00\x1c\x00" + b"\x00" * 10, 0.0) == []  # NEWNEIGH without a body
