"""The announcer service's handling of NodeRenewal on a real Redis (no raw sockets: the service's bus
handlers and its state machine's reply decisions; the wire is covered by tests/net)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.core import codec
from l2lb.core.announce import Iface, Outcome
from l2lb.core.messages import (
    NodeAssignments,
    NodeRenewal,
    SnapshotRequest,
    VipAssignment,
    assignments_digest,
    decode,
)
from l2lb.obs.metrics import REGISTRY
from services.announcer.config import build_parser
from services.announcer.main import AnnouncerService
from tests.leases.harness import ALL_POLICY, Harness, wait_for

VIP = "198.51.100.40"
MAC = codec.mac_bytes("02:00:00:00:01:01")
ASKER = codec.mac_bytes("02:00:00:00:02:02")
ETH0 = Iface("eth0", 2, MAC)


def _assigned(result: str) -> float:
    v = REGISTRY.get_sample_value("l2lb_announcer_assignments_total", {"result": result})
    return v or 0.0


def _answers(svc: AnnouncerService, ip: str = VIP) -> bool:
    frame = codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=ASKER, sha=ASKER,
                            spa=codec.ip_bytes("198.51.100.2"), tha=codec.ZERO_MAC, tpa=codec.ip_bytes(ip))
    return svc.machine.state.handle(frame, ETH0, time.monotonic()).reason == Outcome.ANSWERED


class Node:
    """An AnnouncerService for ``node`` whose assignments consumer runs on the bus (no sockets opened, no
    heartbeats: the timer does not run), in consumer group ``announcer:<group>`` (default: the node)."""

    def __init__(self, bus: Bus, node: str, group: str | None = None):
        args = build_parser().parse_args(["--node", node, "--interfaces", "l2lb-none-[0-9]+", "--no-netlink",
                                          "--http-port", "0"])
        self.svc = AnnouncerService(args)
        self.svc.bus = bus
        self.stop = asyncio.Event()
        self.consumer = bus.consumer(bus.keys.assignments, f"announcer:{group or node}", f"t-{node}",
                                     self.svc.on_message, on_resync=self.svc.on_resync, block_ms=100)
        self.task = asyncio.create_task(self.consumer.run(self.stop))
        self.publisher = asyncio.create_task(self.svc._publisher())  # snapshot requests

    async def close(self) -> None:
        self.stop.set()
        self.svc._outbox.put_nowait(None)
        await asyncio.wait_for(self.task, 5)
        await asyncio.wait_for(self.publisher, 5)


async def _requests(bus: Bus) -> list[SnapshotRequest]:
    rows: Any = await bus.redis.xrange(bus.keys.control)
    msgs = [decode(f[b"m"]) for _, f in rows]
    return [m for m in msgs if isinstance(m, SnapshotRequest) and m.topic == "assignments"]


async def _wait_consumer(bus: Bus, node: str) -> None:
    async def ready() -> bool:
        groups: Any = await bus.redis.xinfo_groups(bus.keys.assignments)
        return any(g["name"] in (f"announcer:{node}", f"announcer:{node}".encode()) for g in groups)

    deadline = time.monotonic() + 5
    while not await ready():
        assert time.monotonic() < deadline, "consumer group not created"
        await asyncio.sleep(0.02)


async def test_matching_renewals_keep_the_set_and_wrong_ones_let_it_expire(bus: Bus) -> None:
    await bus.redis.xadd(bus.keys.assignments, {"m": b"{}"})  # the stream exists before the group
    n = Node(bus, "n1")
    try:
        await _wait_consumer(bus, "n1")
        vips = (VipAssignment(VIP, 5),)
        d = assignments_digest(vips)
        renewed0, mismatch0, asked0 = _assigned("renewed"), _assigned("digest_mismatch"), _assigned(
            "snapshot_requested")
        await bus.publish(bus.keys.assignments, NodeAssignments("n1", 3, 1, 500, time.time(), vips, d))
        await wait_for(lambda: _answers(n.svc), 2)
        seq = 1
        for _ in range(10):  # 1 s of matching renewals: twice the ttl
            seq += 1
            await bus.publish(bus.keys.assignments, NodeRenewal("n1", 3, seq, 500, time.time(), d))
            await asyncio.sleep(0.1)
        assert _answers(n.svc) and n.svc.machine.state.serving(time.monotonic()) == {VIP: 5}
        assert _assigned("renewed") - renewed0 >= 8
        assert await _requests(bus) == []
        # renewals naming another set (same IP, another epoch): nothing is extended, the VIP expires
        other = assignments_digest((VipAssignment(VIP, 6),))
        t0 = time.monotonic()
        for _ in range(12):
            seq += 1
            await bus.publish(bus.keys.assignments, NodeRenewal("n1", 3, seq, 500, time.time(), other))
            await asyncio.sleep(0.1)
        expired_at = n.svc.machine.state.deadline
        assert expired_at is not None and expired_at - t0 < 0.6
        assert not _answers(n.svc) and n.svc.machine.state.serving(time.monotonic()) == {}
        assert _assigned("digest_mismatch") - mismatch0 >= 3  # before the set ran out
        assert _assigned("expired") + _assigned("digest_mismatch") - mismatch0 >= 10
        reqs = await _requests(bus)
        # at most one per second, or one per 250 ms while the set is still valid (it expires ~0.4 s in): 1 + 1,
        # a third if a renewal lands just past a boundary
        assert 1 <= len(reqs) <= 3 and all(r.requester == "announcer:n1" for r in reqs)
        assert _assigned("snapshot_requested") - asked0 == len(reqs)
        # the full set re-establishes it; renewals of it work again
        seq += 1
        await bus.publish(bus.keys.assignments, NodeAssignments("n1", 3, seq, 500, time.time(), vips, d))
        await wait_for(lambda: _answers(n.svc), 2)
    finally:
        await n.close()


async def test_renewals_for_other_nodes_count_as_leases_alive_but_change_nothing(bus: Bus) -> None:
    await bus.redis.xadd(bus.keys.assignments, {"m": b"{}"})
    n = Node(bus, "n1")
    try:
        await _wait_consumer(bus, "n1")
        before = n.svc.machine.leases_heard_at
        await bus.publish(bus.keys.assignments, NodeRenewal("n2", 3, 7, 500, time.time(), "a" * 32))
        await wait_for(lambda: n.svc.machine.leases_heard_at > before, 2)
        assert n.svc.machine.state.deadline is None and await _requests(bus) == []
        # an old renewal (backlog) is ignored entirely
        before = n.svc.machine.leases_heard_at
        await bus.publish(bus.keys.assignments, NodeRenewal("n2", 3, 8, 500, time.time() - 60, "a" * 32))
        await asyncio.sleep(0.3)
        assert n.svc.machine.leases_heard_at == before
    finally:
        await n.close()


async def test_late_announcer_gets_its_set_from_the_real_leases_service(bus: Bus) -> None:
    h = Harness(bus)
    n: Node | None = None
    try:
        await h.add_node("n1")  # heartbeats for n1 (the fake consumes in its own group, like a peer would)
        await h.add_node("n2")
        h.start_leases(static_policies=[ALL_POLICY])
        for i in range(4):
            await h.allocate(f"ns/s{i}", f"198.51.100.{50 + i}")
        await wait_for(lambda: len(h.serving()) == 4, 5)
        await asyncio.sleep(0.6)  # steady state: only renewals on the stream now
        mine = set(h.announcers["n1"].serving())
        assert mine
        # the real announcer of n1 starts late, with nothing applied
        n = Node(bus, "n1", group="n1-late")
        asked0 = _assigned("snapshot_requested")
        t0 = time.monotonic()
        t1 = await wait_for(lambda: set(n.svc.machine.state.serving(time.monotonic())) == mine, 3)
        print(f"late announcer: full set via snapshot request after {(t1 - t0) * 1000:.0f} ms")
        assert _assigned("snapshot_requested") - asked0 == 1
        assert any(r.requester == "announcer:n1" for r in await _requests(bus))
        await asyncio.sleep(2.0)  # kept on renewals alone, answering all along
        assert set(n.svc.machine.state.serving(time.monotonic())) == mine
        assert all(_answers(n.svc, ip) for ip in mine)
        assert _assigned("snapshot_requested") - asked0 == 1
    finally:
        if n is not None:
            await n.close()
        await h.close()


async def test_term_that_went_backwards_recovers_through_snapshot_requests(bus: Bus) -> None:
    """The election Lease was recreated: leases' term is lower than the one our set came with. Renewals
    of the lower term cannot reset the fencing; they make the announcer ask for full sets, and those do
    (after the set expired and lower-term messages kept coming for 2 x ttl)."""
    await bus.redis.xadd(bus.keys.assignments, {"m": b"{}"})
    n = Node(bus, "n1")
    try:
        await _wait_consumer(bus, "n1")
        vips = (VipAssignment(VIP, 5),)
        d = assignments_digest(vips)
        await bus.publish(bus.keys.assignments, NodeAssignments("n1", 9, 1, 300, time.time(), vips, d))
        await wait_for(lambda: _answers(n.svc), 2)
        await asyncio.sleep(0.4)
        assert not n.svc.machine.state.valid(time.monotonic())
        asked0 = _assigned("snapshot_requested")
        seq = 0
        for _ in range(6):  # the new (lower-term) leader renews; every second we ask for the full set
            seq += 1
            await bus.publish(bus.keys.assignments, NodeRenewal("n1", 2, seq, 300, time.time(), d))
            await asyncio.sleep(0.25)
        assert _assigned("stale_term") >= 1 and _assigned("snapshot_requested") - asked0 >= 1
        assert not _answers(n.svc)
        # what leases answers to those requests: full sets of the lower term, accepted once they kept coming
        # for 2 x their ttl (AnnouncerState.apply's term_reset)
        t0 = time.monotonic()
        for _ in range(12):
            seq += 1
            await bus.publish(bus.keys.assignments, NodeAssignments("n1", 2, seq, 1000, time.time(), vips, d))
            await asyncio.sleep(0.3)
            if _answers(n.svc):
                break
        assert _answers(n.svc) and n.svc.machine.state.last_order is not None and n.svc.machine.state.last_order[0] == 2
        assert 1.9 <= time.monotonic() - t0 < 3.0
        seq += 1
        await bus.publish(bus.keys.assignments, NodeRenewal("n1", 2, seq, 300, time.time(), d))
        await wait_for(lambda: n.svc.machine.state.last_order == (2, seq), 2)
    finally:
        await n.close()
