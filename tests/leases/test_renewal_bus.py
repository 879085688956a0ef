"""Digest renewals on a real Redis: at steady state the assignments stream carries NodeRenewal, the full
set goes out on change, on request (SnapshotRequest), after a term change and every --full-every-ms."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from l2lb.core.messages import (
    Message,
    NodeAssignments,
    NodeRenewal,
    SnapshotRequest,
    assignments_digest,
    decode,
    encode,
)
from tests.leases.harness import Harness, wait_for

IPS = [f"198.51.100.{20 + i}" for i in range(4)]


async def _stream(h: Harness, stream: str, after: str = "-") -> list[tuple[str, Message, int]]:
    """(entry id, message, encoded size) of every entry after ``after``."""
    out = []
    rows: Any = await h.bus.redis.xrange(stream, min=after)
    for eid, fields in rows:
        raw = fields[b"m"]
        out.append((eid.decode() if isinstance(eid, bytes) else str(eid), decode(raw), len(raw)))
    return [e for e in out if e[0] != after]


async def _last_id(h: Harness, stream: str) -> str:
    last = await h.bus.redis.xrevrange(stream, count=1)
    if not last:
        return "0-0"
    eid = last[0][0]
    return eid.decode() if isinstance(eid, bytes) else str(eid)


async def _setup(h: Harness, nodes: int = 2, **cfg: object) -> None:
    for i in range(nodes):
        await h.add_node(f"node-{i}")
    h.start_leases(**cfg)
    for i, ip in enumerate(IPS):
        await h.allocate(f"ns/svc{i}", ip)
    await wait_for(lambda: all(h.holder(ip) for ip in IPS), 5)


async def test_steady_state_sends_renewals_not_the_full_set(h: Harness) -> None:
    await _setup(h)
    svc = h.leases[0].svc
    await asyncio.sleep(0.3)  # let the placement burst pass
    start = await _last_id(h, h.bus.keys.assignments)
    held = {n: dict(a.serving()) for n, a in h.announcers.items()}
    await asyncio.sleep(2.0)  # 2x the ttl: the sets live on renewals only
    entries = await _stream(h, h.bus.keys.assignments, start)
    full = [m for _, m, _ in entries if isinstance(m, NodeAssignments)]
    renewals = [m for _, m, _ in entries if isinstance(m, NodeRenewal)]
    assert full == []  # unchanged sets, within --full-every-ms (30 s): no full set at all
    per_node = {n: [r for r in renewals if r.node == n] for n in h.announcers}
    assert all(len(rs) >= 6 for rs in per_node.values()), {n: len(rs) for n, rs in per_node.items()}  # ~8 in 2 s
    for n, rs in per_node.items():
        want = svc.m.published[n].digest()
        assert {r.digest for r in rs} == {want}
        assert [r.seq for r in rs] == sorted(r.seq for r in rs) and all(r.term == svc.m.term for r in rs)
    # the fake announcers kept their sets on renewals alone, matching every one of them
    assert {n: dict(a.serving()) for n, a in h.announcers.items()} == held
    assert all(a.mismatches == 0 for a in h.announcers.values())
    sizes = [size for _, m, size in entries if isinstance(m, NodeRenewal)]
    assert max(sizes) < 200


async def test_changed_set_goes_out_full_at_once_then_renewals_resume(h: Harness) -> None:
    await _setup(h)
    await asyncio.sleep(0.5)
    start = await _last_id(h, h.bus.keys.assignments)
    t0 = time.monotonic()
    await h.allocate("ns/new", "198.51.100.99")
    holder_seen = await wait_for(lambda: h.holder("198.51.100.99") is not None, 2)
    print(f"new IP served after {(holder_seen - t0) * 1000:.0f} ms")
    holder = h.holder("198.51.100.99")
    await asyncio.sleep(0.8)
    entries = await _stream(h, h.bus.keys.assignments, start)
    mine = [m for _, m, _ in entries if isinstance(m, NodeAssignments | NodeRenewal) and m.node == holder]
    first_full = next(i for i, m in enumerate(mine) if isinstance(m, NodeAssignments))
    assert all(isinstance(m, NodeRenewal) for m in mine[:first_full])  # renewals of the old set before
    full = mine[first_full]
    assert isinstance(full, NodeAssignments) and "198.51.100.99" in {v.ip for v in full.vips}
    assert full.digest == assignments_digest(full.vips, full.standby, full.members)
    after = mine[first_full + 1:]
    assert after and all(isinstance(m, NodeRenewal) and m.digest == full.digest for m in after)
    assert holder_seen - t0 < 0.5


async def test_announcer_that_lost_its_state_gets_the_full_set_via_snapshot(h: Harness) -> None:
    await _setup(h)
    svc = h.leases[0].svc
    victim = h.announcers["node-0"]
    mine = set(victim.serving())
    assert mine
    await asyncio.sleep(0.3)
    ctl_start = await _last_id(h, h.bus.keys.control)
    # the announcer restarts: same node, nothing applied, heartbeats go on
    victim.vips, victim.digest, victim.expires, victim.last = {}, "", 0.0, (0, 0)
    t0 = time.monotonic()
    t1 = await wait_for(lambda: set(victim.serving()) == mine, 3)
    print(f"set restored through a snapshot request after {(t1 - t0) * 1000:.0f} ms")
    assert victim.mismatches >= 1 and victim.snapshot_requests == 1
    reqs = [m for _, m, _ in await _stream(h, h.bus.keys.control, ctl_start) if isinstance(m, SnapshotRequest)]
    assert [(r.topic, r.requester) for r in reqs] == [("assignments", "announcer:node-0")]
    # only the node that asked got its full set; the other one kept renewals
    await asyncio.sleep(0.6)
    assert set(victim.serving()) == mine and victim.renewed > 0
    assert h.announcers["node-1"].mismatches == 0
    assert svc.m.want_full == set()


async def test_renewal_with_a_wrong_digest_does_not_keep_the_vips(h: Harness) -> None:
    await _setup(h, nodes=1)
    ann = h.announcers["node-0"]
    assert ann.serving()
    await h.leases[0].kill()  # leases gone: we forge its renewals
    await asyncio.sleep(0.3)  # what it published just before dying is delivered first
    term, seq = ann.last
    renewed = ann.renewed
    for _ in range(15):  # 1.5 s of renewals naming another set
        seq += 1
        await h.bus.publish(h.bus.keys.assignments, NodeRenewal(
            node="node-0", term=term, seq=seq, ttl_ms=1000, sent_at=time.time(), digest="0" * 32))
        await asyncio.sleep(0.1)
    assert ann.serving() == {} and ann.renewed == renewed and ann.mismatches >= 10
    assert ann.snapshot_requests in (1, 2)  # rate-limited to one per second


async def test_full_every_ms_is_the_safety_net_and_zero_means_always_full(h: Harness) -> None:
    await _setup(h, nodes=1, full_every_ms=600)
    await asyncio.sleep(0.3)
    start = await _last_id(h, h.bus.keys.assignments)
    await asyncio.sleep(1.9)
    entries = [m for _, m, _ in await _stream(h, h.bus.keys.assignments, start)]
    n_full = sum(isinstance(m, NodeAssignments) for m in entries)
    n_ren = sum(isinstance(m, NodeRenewal) for m in entries)
    assert 2 <= n_full <= 4 and n_ren >= 3, (n_full, n_ren)
    await h.leases[0].kill()
    # 0: every renewal is the full set (the behaviour before NodeRenewal)
    h.start_leases(instance="leases-always-full", full_every_ms=0)
    await asyncio.sleep(1.5)
    start = await _last_id(h, h.bus.keys.assignments)
    await asyncio.sleep(1.0)
    entries = [m for _, m, _ in await _stream(h, h.bus.keys.assignments, start)]
    assert entries and all(isinstance(m, NodeAssignments) for m in entries)
    assert set(h.announcers["node-0"].serving()) == set(IPS)


async def test_term_change_sends_the_full_set(h: Harness) -> None:
    await _setup(h, nodes=1)
    svc = h.leases[0].svc
    await asyncio.sleep(0.4)
    start = await _last_id(h, h.bus.keys.assignments)
    svc.m.term += 1  # what a leadership gain does (the elector's new term)
    await asyncio.sleep(0.6)
    entries = [m for _, m, _ in await _stream(h, h.bus.keys.assignments, start)]
    new_term = [m for m in entries if isinstance(m, NodeAssignments | NodeRenewal) and m.term == svc.m.term]
    assert isinstance(new_term[0], NodeAssignments)
    assert all(isinstance(m, NodeRenewal) for m in new_term[1:]) and len(new_term) >= 2
    assert h.announcers["node-0"].last[0] == svc.m.term and h.announcers["node-0"].mismatches == 0


async def test_bus_wide_snapshot_request_resends_every_full_set(h: Harness) -> None:
    await _setup(h)
    await asyncio.sleep(0.4)
    start = await _last_id(h, h.bus.keys.assignments)
    await h.bus.request_snapshot("assignments", "bus", "producer_incarnation_changed")
    await asyncio.sleep(0.6)
    entries = [m for _, m, _ in await _stream(h, h.bus.keys.assignments, start)]
    full_nodes = {m.node for m in entries if isinstance(m, NodeAssignments)}
    assert full_nodes == set(h.announcers)


async def test_renewal_bytes_are_a_fraction_of_the_full_set() -> None:
    from l2lb.core.messages import VipAssignment

    vips = tuple(VipAssignment(f"198.51.{100 + i // 250}.{i % 250}", 1_700_000_000_000 + i, ("eth0",),
                               (f"ns/svc-{i}",)) for i in range(1000))
    d = assignments_digest(vips)
    full = len(encode(NodeAssignments("worker-01", 4, 98765, 1000, time.time(), vips, d)))
    ren = len(encode(NodeRenewal("worker-01", 4, 98766, 1000, time.time(), d)))
    print(f"1000 VIPs: full {full} B, renewal {ren} B")
    assert ren * 500 < full


def test_full_every_ms_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from services.leases.main import build_parser, config_from_args, main

    assert main(["--no-kube", "--full-every-ms", "-1"]) == 2
    assert "--full-every-ms must be >= 0, got -1" in capsys.readouterr().err
    assert config_from_args(build_parser().parse_args(["--no-kube"])).full_every_ms == 30000
    assert config_from_args(build_parser().parse_args(["--no-kube", "--full-every-ms", "0"])).full_every_ms == 0


async def test_a_renewal_round_goes_out_in_one_round_trip(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The renewals of one tick (one per node) are XADDed in one pipeline (Bus.publish_many), in node order,
    and the announcers keep their sets on them."""
    await _setup(h, nodes=3)
    svc = h.leases[0].svc
    await asyncio.sleep(0.3)
    single: list[Message] = []
    batches: list[list[Message]] = []
    real_one, real_many = svc.bus.publish, svc.bus.publish_many

    async def one(stream: str, msg: Message) -> str:
        single.append(msg)
        return await real_one(stream, msg)

    async def many(stream: str, msgs: list[Message]) -> list[Any]:
        batches.append(list(msgs))
        return await real_many(stream, msgs)

    monkeypatch.setattr(svc.bus, "publish", one)
    monkeypatch.setattr(svc.bus, "publish_many", many)
    held = {n: dict(a.serving()) for n, a in h.announcers.items()}
    await asyncio.sleep(2.0)  # 2x the ttl: the sets live on renewals only
    assert {n: dict(a.serving()) for n, a in h.announcers.items()} == held
    renewal_batches = [b for b in batches if all(isinstance(m, NodeRenewal) for m in b)]
    assert len(renewal_batches) >= 6  # every 250 ms
    for b in renewal_batches:
        nodes = [m.node for m in b if isinstance(m, NodeRenewal)]
        assert nodes == sorted(nodes) and len(nodes) == len(set(nodes)) >= 2
    assert not [m for m in single if isinstance(m, NodeRenewal)]
