"""The leases state machine on its own: no Redis, no asyncio, a clock we set. Table cases for each
decision, then hypothesis properties over random schedules (node deaths, restarts, requests, failed
publishes, leadership changes): epochs only grow per IP, renewals name only unchanged sets, no VIP is in
two nodes' sets at any point of the published stream, adoption after a restart moves nothing, and the
same events give the same commands."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.leases_machine import (
    AllocationReceived,
    AllocationsLoaded,
    Command,
    EpochsLoaded,
    HeartbeatReceived,
    KubeWritten,
    LeadershipChanged,
    Log,
    PublishAssignments,
    PublishRenewal,
    RequestSnapshot,
    Sent,
    ServiceEvent,
    SnapshotRequested,
    StatusPart,
    StoreEpochs,
    Tick,
    WriteCondition,
    WriteLease,
)
from l2lb.core.messages import StandbyVip, VipAssignment, assignments_digest
from tests.leases.helpers import ALL_LB, Driver, alloc, hb

IPS = [f"198.51.100.{1 + i}" for i in range(8)]


def _cluster(nodes: tuple[str, ...] = ("a", "b"), ips: int = 2, **params: Any) -> Driver:
    """Nodes heartbeating, ``ips`` Services of one IP each, past the startup grace, one tick done."""
    params.setdefault("static_policies", (ALL_LB,))
    d = Driver(**params)
    d(AllocationsLoaded(None))
    for n in nodes:
        d.beat(n)
    for i in range(ips):
        d(AllocationReceived(alloc(f"ns/s{i}", IPS[i])))
    d.advance(0.6)
    for n in nodes:
        d.beat(n)
    d(Tick())
    return d


def _full(cmds: list[Command]) -> list[PublishAssignments]:
    return [c for c in cmds if isinstance(c, PublishAssignments)]


def _renewals(cmds: list[Command]) -> list[PublishRenewal]:
    return [c for c in cmds if isinstance(c, PublishRenewal)]


def _sets(d: Driver) -> dict[str, dict[str, int]]:
    return {n: {v.ip: v.epoch for v in ns.vips} for n, ns in d.m.published.items()}


def _only_reservations_stored(d: Driver, cmds: list[Command]) -> None:
    """No new holder epoch: what is stored are successor epochs, above the holders' (adopted) ones."""
    for c in cmds:
        if isinstance(c, StoreEpochs):
            for ip, e in c.epochs.items():
                plan = d.m.successions[ip]
                assert e == max(plan.epochs) and min(plan.epochs) > plan.holder_epoch == d.m.holders[ip].epoch


def _step(d: Driver, seconds: float, nodes: tuple[str, ...] = ("a", "b")) -> list[Command]:
    """``seconds`` of 100 ms heartbeats from ``nodes`` with a tick after each round."""
    out: list[Command] = []
    for _ in range(round(seconds / 0.1)):
        d.advance(0.1)
        for n in nodes:
            out += d.beat(n)
        out += d(Tick())
    return out


# -- table cases ----------------------------------------------------------------------------------------
def test_no_epoch_is_published_before_it_is_stored() -> None:
    """Simulator finding S4: a leader behind a lossy link had its StoreEpochs fail and published the epochs all
    the same; the next leader started from the store and handed out lower ones. A failed store drops what
    follows it (SendFailed(None)); the next tick stores those epochs again before any publish."""
    d = _cluster(ips=0)
    d.fail_store = 1
    mark = len(d.commands)
    d(AllocationReceived(alloc("ns/s0", IPS[0])))
    d.advance(0.3)
    d(Tick())
    first = d.commands[mark:]
    assert isinstance(d.failed[-1], StoreEpochs) and not d.store.get(IPS[0])
    epoch = d.failed[-1].epochs[IPS[0]]  # type: ignore[attr-defined]
    assert not [c for c in first if isinstance(c, PublishAssignments) and any(v.ip == IPS[0] for v in c.msg.vips)]
    mark = len(d.commands)
    d.advance(0.3)
    d(Tick())
    nxt = d.commands[mark:]
    stores = [i for i, c in enumerate(nxt) if isinstance(c, StoreEpochs) and IPS[0] in c.epochs]
    pubs = [i for i, c in enumerate(nxt)
            if isinstance(c, PublishAssignments) and any(v.ip == IPS[0] for v in c.msg.vips)]
    assert stores and pubs and stores[0] < pubs[0] and d.store[IPS[0]] >= epoch
    assert all(v.epoch <= d.store[IPS[0]] for c in d.published() if isinstance(c, PublishAssignments)
               for v in c.msg.vips if v.ip == IPS[0])


def test_a_failed_store_of_a_term_we_no_longer_lead_is_never_written_again() -> None:
    d = _cluster(ips=0, leader_election=True)
    d(LeadershipChanged(True, 1))
    d.advance(0.6)
    d(Tick())
    d.fail_store = 1
    d(AllocationReceived(alloc("ns/s0", IPS[0])))
    d.advance(0.3)
    d(Tick())
    assert isinstance(d.failed[-1], StoreEpochs)
    d(LeadershipChanged(False, 1))
    d(LeadershipChanged(True, 3))  # leading again, later: another leader may have stored higher epochs since
    mark = len(d.commands)
    d.advance(0.3)
    d(Tick())
    assert d.m._unstored == {} and not [c for c in d.commands[mark:] if isinstance(c, StoreEpochs)
                                        and c.epochs == d.failed[-1].epochs]  # type: ignore[attr-defined]


def test_first_tick_stores_epochs_then_publishes_balanced_sets_then_renews_by_digest() -> None:
    d = _cluster()
    cmds = d.commands
    store = next(i for i, c in enumerate(cmds) if isinstance(c, StoreEpochs))
    first_pub = next(i for i, c in enumerate(cmds) if isinstance(c, PublishAssignments))
    assert store < first_pub  # the epochs are stored before anything names them
    epochs = cmds[store].epochs  # type: ignore[union-attr]
    assert set(epochs) == set(IPS[:2]) and all(e >= int(d.wall * 1000) - 1000 for e in epochs.values())
    full = _full(cmds)
    assert [c.why for c in full] == ["change", "change"] and sorted(c.msg.node for c in full) == ["a", "b"]
    assert all(len(c.msg.vips) == 1 and c.msg.digest == assignments_digest(c.msg.vips, c.msg.standby, c.msg.members)
               for c in full)
    # the same tick's renewal round names the sets just sent
    ren = _renewals(cmds)
    assert {r.msg.node: r.msg.digest for r in ren} == {c.msg.node: c.msg.digest for c in full}
    seqs = [c.msg.seq for c in cmds if isinstance(c, PublishAssignments | PublishRenewal)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [c.part for c in cmds if isinstance(c, StatusPart)] == ["assignments", "nodes"]


def test_renewals_by_digest_until_full_every_ms_then_the_full_set() -> None:
    d = _cluster(full_every_ms=1000)
    start = len(d.commands)
    out = _step(d, 0.8)
    assert _full(out) == [] and len(_renewals(out)) == 2 * 2  # 250 ms, on 100 ms ticks: at 0.3 and 0.6
    out = _step(d, 0.5)
    assert sorted((c.msg.node, c.why) for c in _full(out)) == [("a", "renew"), ("b", "renew")]
    assert all(r.msg.digest == d.m.published[r.msg.node].digest() for r in _renewals(d.commands[start:]))


def test_full_every_zero_means_every_renewal_is_full() -> None:
    d = _cluster(full_every_ms=0)
    out = _step(d, 0.6)
    assert _renewals(out) == [] and len(_full(out)) == 4


def test_snapshot_requests_from_an_announcer_and_from_the_bus() -> None:
    d = _cluster()
    _step(d, 0.1)
    d(SnapshotRequested("announcer:a", "digest_mismatch"))
    assert d.m.want_full == {"a"}
    d.advance(0.05)
    out = d(Tick())  # not a renewal round: only a's full set, at once
    assert [(c.msg.node, c.why, c.requested) for c in _full(out)] == [("a", "snapshot", True)]
    assert d.m.want_full == set()
    d(SnapshotRequested("bus", "producer_incarnation_changed"))
    d.advance(0.05)
    out = d(Tick())
    assert sorted(c.msg.node for c in _full(out)) == ["a", "b"] and _renewals(out) == []
    # a request from a node that is not alive is dropped, not kept forever
    d(SnapshotRequested("announcer:ghost"))
    d.advance(0.05)
    assert _full(d(Tick())) == [] and d.m.want_full == set()


def test_a_request_that_arrives_while_a_renewal_is_in_flight_is_still_answered() -> None:
    """Simulator finding (seed 13 after the announcer's wakeup change): a restarted announcer asks for its full
    set right after a renewal it cannot use; the request reached leases while the next renewal to that node
    was in flight, and that renewal's acknowledgement cleared the request. The retries (every 1.2 s = 4
    renewal rounds) hit the same phase: the node stayed dark 6.2 s. A renewal never answers a request."""
    d = _cluster()
    _step(d, 0.1)
    out: list[Command] = []
    asked = False
    for _ in range(20):
        d.advance(0.05)
        todo = list(d.m.handle(Tick(), d.now()))
        while todo:
            c = todo.pop(0)
            out.append(c)
            if isinstance(c, PublishRenewal) and c.msg.node == "a" and not asked:
                out += d.m.handle(SnapshotRequested("announcer:a", "digest_mismatch"), d.now())
                asked = True
            if isinstance(c, PublishAssignments | PublishRenewal):
                todo += d.m.handle(Sent(c), d.now())
        if asked:
            break
    assert asked
    d.advance(0.05)
    out += d(Tick())
    assert [(c.msg.node, c.requested) for c in _full(out)] == [("a", True)]


def test_a_standby_ignores_snapshot_requests() -> None:
    d = Driver(leader_election=True, static_policies=(ALL_LB,))
    d(SnapshotRequested("announcer:a"))
    assert d.m.want_full == set()


def test_node_death_loser_first_higher_epoch_then_pruned() -> None:
    d = _cluster()
    before = _sets(d)
    lost = next(iter(before["a"]))
    mark = len(d.commands)
    out = _step(d, 0.5, nodes=("b",))  # a falls silent: dead after 3 x 100 ms
    full = _full(out)
    assert [(c.msg.node, c.why) for c in full[:2]] == [("a", "change"), ("b", "change")]
    assert full[0].msg.vips == ()  # told once that it lost everything, before b gains it
    got = {v.ip: v.epoch for v in full[1].msg.vips}
    assert got[lost] > before["a"][lost]
    assert [m["reason"] for m in d.m.recent_moves if m["ip"] == lost][-1] == "holder_dead"
    assert "a" not in d.m.published  # pruned once told
    assert not [c for c in _full(d.commands[mark:]) if c.msg.node == "a"][1:]
    assert any(isinstance(c, Log) and c.message == "node is dead" and c.fields["node"] == "a" for c in out)


def test_a_node_that_loses_one_vip_and_gains_another_waits_for_the_gains_old_holder() -> None:
    """Regression (found by the stream property, present before the machine): c loses .1 (its Service is
    gone) and gains .2 from d, which dies. "Losers first, by name" sent c's new set (with .2) before d's
    empty one: for a moment .2 was in two nodes' sets. Now c first gets its set without .2, then d, then c
    with .2."""
    d = _cluster(nodes=("c", "d"), ips=2, successors=0)
    held = {ip: n for n, s in _sets(d).items() for ip in s}
    c_ip = next(ip for ip, n in held.items() if n == "c")
    d_ip = next(ip for ip, n in held.items() if n == "d")
    svc = f"ns/s{IPS.index(c_ip)}"
    d(AllocationReceived(dataclasses.replace(alloc(svc, seq=2), deleted=True)))
    d.advance(0.1)
    d.beat("c")
    d.beat("d", stopping=True)
    out = d(Tick())
    order = [(c.msg.node, tuple(v.ip for v in c.msg.vips)) for c in _full(out)]
    assert order == [("c", ()), ("d", ()), ("c", (d_ip,))]


def test_a_failed_publish_drops_the_rest_and_is_retried_in_order() -> None:
    d = _cluster()
    _step(d, 0.3, nodes=("b",))  # a is silent: dead on the next tick
    d.fail = 1  # the next publish (a's empty set) fails
    out = _step(d, 0.1, nodes=("b",))
    assert [c.msg.node for c in _full(out)] == ["a"] and _renewals(out) == []
    assert any(isinstance(c, Log) and c.message == "leases tick failed; retrying" for c in out)
    assert d.m.published["a"]  # a was not told: it still holds its IP as far as we know
    out = _step(d, 0.1, nodes=("b",))
    assert [c.msg.node for c in _full(out)][:2] == ["a", "b"]


def test_requested_full_set_that_fails_stays_wanted() -> None:
    d = _cluster()
    _step(d, 0.1)
    d(SnapshotRequested("announcer:b"))
    d.fail = 1
    d.advance(0.05)
    d(Tick())
    assert d.m.want_full == {"b"}
    d.advance(0.05)
    assert [c.msg.node for c in _full(d(Tick()))] == ["b"]


def test_tick_waits_for_the_acknowledgement_of_the_last_sends() -> None:
    d = _cluster()
    _step(d, 0.3)
    d(AllocationReceived(alloc("ns/new", IPS[5])))
    d.advance(0.05)
    first = d.m.handle(Tick(), d.now())  # not acknowledged
    assert _full(first)
    d.advance(0.05)
    assert _full(d.m.handle(Tick(), d.now())) == []  # the previous sends are still out


def test_adoption_after_restart_moves_nothing() -> None:
    d = _cluster(nodes=("a", "b", "c"), ips=6)
    serving = _sets(d)
    d2 = Driver(static_policies=(ALL_LB,), wall=d.wall + 5)  # a new instance: a later term
    d2(AllocationsLoaded(None))
    for i in range(6):
        d2(AllocationReceived(alloc(f"ns/s{i}", IPS[i])))
    for n in ("a", "b", "c"):
        d2.beat(n, serving=serving[n])
    d2.advance(0.6)
    for n in ("a", "b", "c"):
        d2.beat(n, serving=serving[n])
    out = d2(Tick())
    assert _sets(d2) == serving and d2.m.moves_total == 0
    _only_reservations_stored(d2, out)
    assert all(c.msg.term == d2.m.term > d.m.term for c in _full(out))


def test_adoption_keeps_a_holder_whose_assignment_ran_out_during_the_takeover() -> None:
    d = _cluster()
    serving = _sets(d)
    d2 = Driver(static_policies=(ALL_LB,), wall=d.wall + 5, leader_election=True)
    d2(AllocationsLoaded(None))
    for i in range(2):
        d2(AllocationReceived(alloc(f"ns/s{i}", IPS[i])))
    for n in ("a", "b"):
        d2.beat(n, serving=serving[n])
    d2.advance(1.0)
    for n in ("a", "b"):
        d2.beat(n, serving={})  # expired while no leader renewed them
    d2(LeadershipChanged(True, term=7))
    d2.advance(0.6)
    d2(Tick())
    # same nodes, nothing moved; but fresh epochs: the old ones may be below an epoch another leader issued
    # meanwhile (stored in a Redis that failed over without it: found by the simulator, seed 18)
    got = _sets(d2)
    assert {n: set(v) for n, v in got.items()} == {n: set(v) for n, v in serving.items()}
    assert d2.m.moves_total == 0 and d2.m.term == 7
    assert all(got[n][ip] > e and got[n][ip] >= int((d.wall + 5) * 1000) for n, s in serving.items()
               for ip, e in s.items())


def test_a_new_leader_never_reissues_an_epoch_below_one_issued_meanwhile() -> None:
    """Simulator seed 18: the leader and the Redis master are cut off together; the cut-off leader moves a
    VIP with a new epoch into a Redis that then fails over without it. The standby, which last saw the old
    holder serve it with its old epoch, must not hand it out under that old epoch."""
    d = _cluster()
    serving = _sets(d)
    ip, old = next((ip, e) for s in serving.values() for ip, e in s.items())
    issued_elsewhere = old + 4000  # what the cut-off leader gave another node (never seen by the standby)
    d2 = Driver(static_policies=(ALL_LB,), wall=d.wall + 8, leader_election=True)
    d2(AllocationsLoaded(None))
    for i in range(2):
        d2(AllocationReceived(alloc(f"ns/s{i}", IPS[i])))
    for n in ("a", "b"):
        d2.beat(n, serving=serving[n])
    d2.advance(1.0)
    for n in ("a", "b"):
        d2.beat(n, serving={})
    d2(LeadershipChanged(True, term=2))
    d2(EpochsLoaded({}))  # the store came back without it
    d2.advance(0.6)
    d2(Tick())
    got = {ip_: e for s in _sets(d2).values() for ip_, e in s.items()}
    assert got[ip] > issued_elsewhere


def test_restore_epochs_after_redis_lost_them() -> None:
    d = _cluster()
    mark = len(d.commands)
    d(EpochsLoaded({}, restore=True))
    store = [c for c in d.commands[mark:] if isinstance(c, StoreEpochs)]
    held = {ip: e for s in _sets(d).values() for ip, e in s.items()}
    assert len(store) == 1 and set(store[0].epochs) == set(held)
    # what we know: the holders' epochs and, above them, the successors' reserved ones
    assert all(store[0].epochs[ip] == max(d.m.successions[ip].epochs) > e for ip, e in held.items())
    d(EpochsLoaded({IPS[0]: 10**15}))  # a stored epoch above ours: the next move goes above it
    assert d.m.last_epochs[IPS[0]] == 10**15


def test_allocations_loaded_requests_a_snapshot_and_waits_for_one_only_if_stored() -> None:
    d = Driver(static_policies=(ALL_LB,))
    assert d(AllocationsLoaded(None, "startup")) == [RequestSnapshot("allocations", "startup")]
    assert d.m.snapshot_loaded
    d = Driver(static_policies=(ALL_LB,))
    d(AllocationsLoaded(hb("x")))  # a stored message of another kind: wait for the real snapshot
    assert not d.m.snapshot_loaded


def test_kube_intents_follow_the_election_and_stop_when_written() -> None:
    d = Driver(static_policies=(ALL_LB,), leader_election=True, kube=True, mirror_leases=True)
    d(AllocationsLoaded(None))
    d(LeadershipChanged(True, term=3))
    for n in ("a", "b"):
        d.beat(n)
    d(AllocationReceived(alloc("ns/s0", IPS[0])))
    for _ in range(6):  # heartbeats go on (every node silent at once would be the bus's problem, not theirs)
        d.advance(0.1)
        for n in ("a", "b"):
            d.beat(n)
    out = d(Tick())
    conds = [c for c in out if isinstance(c, WriteCondition)]
    leases = [c for c in out if isinstance(c, WriteLease)]
    assert [(c.service, c.state.announced) for c in conds] == [("ns/s0", True)]
    holder = next(iter(n for n, s in _sets(d).items() if s))
    assert [(c.service, c.holder, c.duration_s) for c in leases] == [("ns/s0", holder, 1)]
    assert not [c for c in out if isinstance(c, ServiceEvent)]  # the first placement is not a move
    for c in (*conds, *leases):
        d(KubeWritten(c))
    d(AllocationReceived(alloc("ns/s1", IPS[1])))
    d.advance(0.05)
    out = d(Tick())
    assert [c.service for c in out if isinstance(c, WriteCondition | WriteLease)] == ["ns/s1", "ns/s1"]
    # the holder dies: the mirror follows, the Service gets an Event, the condition stays (still announced)
    other = "b" if holder == "a" else "a"
    out = _step(d, 0.5, nodes=(other,))
    assert [(c.service, c.holder) for c in out if isinstance(c, WriteLease) and c.service == "ns/s0"] == [
        ("ns/s0", other)]
    ev = [c for c in out if isinstance(c, ServiceEvent)]
    assert [(e.service, e.reason, e.uid) for e in ev if e.service == "ns/s0"] == [("ns/s0", "AnnouncerMoved",
                                                                                    "uid-ns/s0")]
    assert f"from node {holder} to {other} (holder_dead)" in ev[0].message
    assert not [c for c in out if isinstance(c, WriteCondition) and c.service == "ns/s0"]
    # not leader: no intents at all
    d(LeadershipChanged(False))
    d(AllocationReceived(alloc("ns/s2", IPS[2])))
    out = _step(d, 0.3, nodes=(other,))
    assert not [c for c in out if isinstance(c, WriteCondition | WriteLease | ServiceEvent | PublishAssignments)]


def test_invalid_policy_gets_a_warning_event_as_leader_only() -> None:
    bad = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
           "metadata": {"name": "broken"}, "spec": {"interfaces": ["eth[0-"], "loadBalancerIPs": True}}
    from l2lb.core.leases_machine import PoliciesChanged, PolicyEvent

    d = Driver(leader_election=True, kube=True)
    assert not [c for c in d(PoliciesChanged((bad,), bad)) if isinstance(c, PolicyEvent)]
    assert d.m.policy_errors and d.m.policy_errors[0][0] == "broken"
    ev = [c for c in d(LeadershipChanged(True, 1)) if isinstance(c, PolicyEvent)]
    assert len(ev) == 1 and ev[0].slot == ("policy-event", "CiliumL2AnnouncementPolicy//broken")
    assert "not a valid regex" in ev[0].message


# -- properties -----------------------------------------------------------------------------------------
NODES = ("a", "b", "c", "d")

action = st.one_of(
    st.tuples(st.just("step"), st.integers(1, 6), st.frozensets(st.sampled_from(NODES))),  # 100 ms rounds
    st.tuples(st.just("alloc"), st.integers(0, 5), st.integers(0, len(IPS) - 1)),
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("stopping"), st.sampled_from(NODES)),
    st.tuples(st.just("ifdown"), st.sampled_from(NODES)),
    st.tuples(st.just("request"), st.sampled_from((*NODES, "bus"))),
    st.tuples(st.just("fail"), st.integers(1, 3)),
    st.tuples(st.just("leader"), st.booleans()),
    st.tuples(st.just("takeover"), st.sampled_from(NODES)),
)


class Model:
    """Announcers that keep the last full set of the current leases term (what they would serve), and take
    VIPs over on the LAN with the epoch of their standby entry when told to ("takeover")."""

    def __init__(self) -> None:
        self.sets: dict[str, tuple[str, tuple[VipAssignment, ...], tuple[StandbyVip, ...]]] = {}
        self.term = -1
        self.epochs: dict[str, tuple[str, int]] = {}  # ip -> (node, epoch) last published as holder
        self.names: dict[tuple[str, int], str] = {}  # (ip, epoch) -> the one node it was ever issued to
        self.reserved: dict[str, int] = {}  # ip -> highest successor epoch published
        self.taken: dict[str, dict[str, int]] = {}  # node -> VIPs it took over on the LAN (until told)
        self.down: set[str] = set()
        self.stopping: set[str] = set()

    def serving(self, node: str) -> dict[str, int]:
        return {**{v.ip: v.epoch for v in self.sets.get(node, ("", (), ()))[1]}, **self.taken.get(node, {})}

    def take_over(self, node: str) -> None:
        for sb in self.sets.get(node, ("", (), ()))[2]:
            if sb.rank == 1:
                self.taken.setdefault(node, {})[sb.ip] = sb.epoch

    def _name(self, ip: str, epoch: int, node: str) -> None:
        assert self.names.setdefault((ip, epoch), node) == node, (ip, epoch, self.names[(ip, epoch)], node)

    def check(self, d: Driver, out: list[Command]) -> None:
        sent = [c for c in out if isinstance(c, PublishAssignments | PublishRenewal)
                and not any(c is f for f in d.failed)]
        for c in sent:
            if c.msg.term != self.term:
                self.term, self.sets = c.msg.term, {}
            if isinstance(c, PublishRenewal):
                # renewed by digest only if unchanged: the set last sent to it in this term, and what it
                # should hold now
                assert self.sets[c.msg.node][0] == c.msg.digest
                assert d.m.node_sets()[c.msg.node].digest() == c.msg.digest
                continue
            for v in c.msg.vips:  # epochs only grow per IP; a new holder gets a higher one
                prev = self.epochs.get(v.ip)
                if prev is not None:
                    assert v.epoch >= prev[1], (v.ip, prev, c.msg.node, v.epoch)
                    assert prev[0] == c.msg.node or v.epoch > prev[1], (v.ip, prev, c.msg.node, v.epoch)
                    if prev[0] != c.msg.node and self.names.get((v.ip, v.epoch)) != c.msg.node:
                        assert v.epoch > self.reserved.get(v.ip, 0)  # a move by leases: above every reservation
                self._name(v.ip, v.epoch, c.msg.node)
                self.epochs[v.ip] = (c.msg.node, v.epoch)
                for s in v.successors:  # unique, above the holder's epoch, never the holder itself
                    assert s.epoch > v.epoch and s.node != c.msg.node
                    self._name(v.ip, s.epoch, s.node)
                    self.reserved[v.ip] = max(self.reserved.get(v.ip, 0), s.epoch)
            for sb in c.msg.standby:
                assert sb.holder != c.msg.node and sb.rank >= 1
                self._name(sb.ip, sb.epoch, c.msg.node)
            assert list(c.msg.members) == sorted(set(c.msg.members))
            self.sets[c.msg.node] = (c.msg.digest, c.msg.vips, c.msg.standby)
            self.taken.pop(c.msg.node, None)  # an authoritative set replaces what it took over
            owners: dict[str, str] = {}
            for node, (_, vips, _sb) in sorted(self.sets.items()):
                for v in vips:  # at every point of the stream: no VIP in two nodes' sets
                    assert owners.setdefault(v.ip, node) == node, (v.ip, owners[v.ip], node)


def _run(actions: list[tuple[Any, ...]], d: Driver, model: Model | None = None) -> None:
    model = model or Model()
    term = 1
    d(AllocationsLoaded(None))
    d(LeadershipChanged(True, term))
    for act in actions:
        out: list[Command] = []
        if act[0] == "step":
            for _ in range(act[1]):
                d.advance(0.1)
                for n in sorted(act[2]):
                    ifaces = (("eth0", n not in model.down),)
                    model.check(d, d.beat(n, ifaces=ifaces, stopping=n in model.stopping, serving=model.serving(n)))
                model.check(d, d(Tick()))  # each tick on its own: renewals name what the node holds now
        elif act[0] == "alloc":
            out = d(AllocationReceived(alloc(f"ns/s{act[1]}", IPS[act[2]], seq=len(d.commands) + 1)))
        elif act[0] == "delete":
            a = dataclasses.replace(alloc(f"ns/s{act[1]}", seq=len(d.commands) + 1), deleted=True)
            out = d(AllocationReceived(a))
        elif act[0] == "stopping":
            model.stopping.add(act[1])
        elif act[0] == "ifdown":
            model.down.add(act[1])
        elif act[0] == "request":
            out = d(SnapshotRequested(f"announcer:{act[1]}" if act[1] != "bus" else "bus"))
        elif act[0] == "fail":
            d.fail = act[1]
        elif act[0] == "takeover":
            model.take_over(act[1])
        elif act[0] == "leader":
            if not act[1]:
                out = d(LeadershipChanged(False))
            elif not d.m.is_leader:
                term += 1
                out = d(LeadershipChanged(True, term))
        model.check(d, out)


@settings(max_examples=200, deadline=None)
@given(st.lists(action, min_size=1, max_size=40))
def test_properties_over_random_schedules(actions: list[tuple[Any, ...]]) -> None:
    _run(actions, Driver(static_policies=(ALL_LB,), leader_election=True))


@settings(max_examples=40, deadline=None)
@given(st.lists(action, min_size=1, max_size=25))
def test_same_events_same_clock_same_commands(actions: list[tuple[Any, ...]]) -> None:
    runs = []
    for _ in range(2):
        d = Driver(static_policies=(ALL_LB,), leader_election=True)
        _run(actions, d)
        runs.append(d.commands)
    assert runs[0] == runs[1]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, len(IPS)), st.integers(0, 2**32 - 1))
def test_adoption_after_restart_moves_nothing_any_shape(n_nodes: int, n_ips: int, seed: int) -> None:
    nodes = NODES[:n_nodes]
    d = _cluster(nodes=nodes, ips=n_ips, wall=1_764_000_000.0 + seed % 10**6)
    _step(d, 0.3, nodes=nodes)
    serving = {n: s for n, s in _sets(d).items()}
    d2 = Driver(static_policies=(ALL_LB,), wall=d.wall + 3)
    d2(AllocationsLoaded(None))
    for i in range(n_ips):
        d2(AllocationReceived(alloc(f"ns/s{i}", IPS[i])))
    for _ in range(2):
        for n in nodes:
            d2.beat(n, serving=serving.get(n, {}))
        d2.advance(0.3)
    d2(Tick())
    assert _sets(d2) == serving and d2.m.moves_total == 0
    _only_reservations_stored(d2, d2.commands)


_SCENARIO = """
import hashlib, sys
sys.path[:0] = [{root!r}, {src!r}]
from tests.leases.test_machine import Driver, ALL_LB, _run
d = Driver(static_policies=(ALL_LB,), leader_election=True)
_run([("alloc", i, i) for i in range(6)] + [("step", 6, frozenset("abcd")), ("step", 5, frozenset("bd")),
      ("request", "b"), ("fail", 1), ("step", 3, frozenset("bd")), ("ifdown", "d"), ("step", 4, frozenset("abcd"))], d)
print(hashlib.sha256(repr(d.commands).encode()).hexdigest(), len(d.commands))
"""


def test_commands_do_not_depend_on_the_hash_seed() -> None:
    root = Path(__file__).resolve().parents[2]
    code = _SCENARIO.format(root=str(root), src=str(root / "src"))
    outs = set()
    for seed in ("0", "4242"):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        outs.add(r.stdout.strip())
    assert len(outs) == 1, outs
    digest, n = outs.pop().split()
    assert int(n) > 50 and len(digest) == 64
    assert hashlib.sha256(b"").hexdigest() != digest


def test_the_first_heartbeat_without_time_uses_the_wall_clock() -> None:
    d = Driver()
    d(HeartbeatReceived(hb("a")))
    assert d.m.tracker.nodes["a"].last_seen == d.wall


# -- pre-authorised succession (design-failover: successors, standby, members, LAN takeovers) ------------
def _plans(d: Driver) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    return {ip: (p.holder, p.nodes, p.epochs) for ip, p in d.m.successions.items()}


def _last_full(d: Driver, node: str) -> PublishAssignments:
    return [c for c in _full(d.commands) if c.msg.node == node][-1]


def test_every_vip_gets_ranked_successors_with_reserved_epochs_and_each_node_its_standby_list() -> None:
    d = _cluster(nodes=("a", "b", "c"), ips=6)
    holders = {ip: n for n, s in _sets(d).items() for ip in s}
    assert len(holders) == 6
    for ip, (holder, nodes, epochs) in _plans(d).items():
        assert holder == holders[ip] and len(nodes) == 2 and holder not in nodes and len(set(nodes)) == 2
        assert epochs == (d.m.holders[ip].epoch + 1, d.m.holders[ip].epoch + 2)
    # stored before the first message that names them: the epoch store holds the highest reserved one
    assert d.store == {ip: p.epochs[-1] for ip, p in d.m.successions.items()}
    for n in ("a", "b", "c"):
        msg = _last_full(d, n).msg
        assert msg.members == ("a", "b", "c")
        for v in msg.vips:
            p = d.m.successions[v.ip]
            assert [(s.node, s.epoch) for s in v.successors] == list(zip(p.nodes, p.epochs, strict=True))
        want = sorted((ip, p.holder, r, e) for ip, p in d.m.successions.items()
                      for r, (m, e) in enumerate(zip(p.nodes, p.epochs, strict=True), 1) if m == n)
        assert sorted((s.ip, s.holder, s.rank, s.epoch) for s in msg.standby) == want
        assert all(s.interfaces == ("eth0",) and s.services for s in msg.standby)
        assert msg.digest == assignments_digest(msg.vips, msg.standby, msg.members)
    # renewals name those digests (standby and members included)
    out = _step(d, 0.3, nodes=("a", "b", "c"))
    assert {r.msg.node: r.msg.digest for r in _renewals(out)} == {n: _last_full(d, n).msg.digest for n in "abc"}


def test_rank_one_is_what_the_election_picks_when_the_holder_dies() -> None:
    d = _cluster(nodes=("a", "b", "c", "d"), ips=8)
    plans = _plans(d)
    victim = plans[IPS[0]][0]
    lost = [ip for ip, p in plans.items() if p[0] == victim]
    others = tuple(n for n in "abcd" if n != victim)
    _step(d, 0.5, nodes=others)
    after = {ip: n for n, s in _sets(d).items() for ip in s}
    assert {ip: after[ip] for ip in lost} == {ip: plans[ip][1][0] for ip in lost}
    # with a fresh normal epoch above every reserved one; the holder's other successor plan starts again
    for ip in lost:
        assert d.m.holders[ip].epoch > plans[ip][2][-1]
        assert d.m.successions[ip].holder == after[ip] and min(d.m.successions[ip].epochs) > d.m.holders[ip].epoch
    # and the plan of a fresh election agrees: no preference needed for a single death
    from l2lb.core.election import elect

    alive = {n: hb(n) for n in others}
    res = elect(d.m.allocations.values(), d.m.policies, alive,
                {ip: h for ip, h in d.m.holders.items() if ip not in lost}
                | {ip: type(d.m.holders[ip])(victim, 1) for ip in lost}, now_ms=1)
    assert {ip: res.assignments[ip].node for ip in lost} == {ip: plans[ip][1][0] for ip in lost}


def test_rank_two_when_the_holder_and_rank_one_die_together() -> None:
    d = _cluster(nodes=("a", "b", "c", "d"), ips=8)
    plans = _plans(d)
    holder, (s1, s2), _ = plans[IPS[0]]
    alive = tuple(n for n in "abcd" if n not in (holder, s1))
    _step(d, 0.5, nodes=alive)
    assert {ip: n for n, s in _sets(d).items() for ip in s}[IPS[0]] == s2


def test_successors_are_sticky_and_move_up_when_one_dies() -> None:
    d = _cluster(nodes=("a", "b", "c", "d"), ips=4)
    before = _plans(d)
    d(AllocationReceived(alloc("ns/s7", IPS[7])))
    _step(d, 0.1, nodes=("a", "b", "c", "d"))
    assert {ip: p for ip, p in _plans(d).items() if ip != IPS[7]} == before  # untouched: same nodes, epochs
    # a successor that dies (and holds nothing of interest) drops out, the next one moves up, fresh epochs
    ip0 = IPS[0]
    holder, (s1, s2), epochs = before[ip0]
    alive = tuple(n for n in "abcd" if n != s1)
    _step(d, 0.5, nodes=alive)
    h2, nodes2, epochs2 = _plans(d)[ip0]
    if h2 == holder:
        assert nodes2[0] == s2 and s1 not in nodes2 and min(epochs2) > max(epochs)


def test_a_lan_takeover_is_adopted_without_moving_anything() -> None:
    d = _cluster(nodes=("a", "b", "c"), ips=3, kube=True, leader_election=False)
    plans = _plans(d)
    ip, (holder, (s1, _s2), epochs) = IPS[0], plans[IPS[0]]
    serving = _sets(d)
    stored = dict(d.store)
    mark = len(d.commands)
    d.advance(0.1)
    # the successor answers with its reserved epoch (it could not hear leases, then Redis came back)
    d.beat(s1, serving={**serving.get(s1, {}), ip: epochs[0]})
    for n in ("a", "b", "c"):
        if n != s1:
            d.beat(n, serving=serving.get(n, {}))
    out = d(Tick())
    assert d.m.holders[ip].node == s1 and d.m.holders[ip].epoch == epochs[0]
    assert {v.ip: v.epoch for v in _last_full(d, s1).msg.vips}[ip] == epochs[0]  # no new epoch
    assert ip not in {v.ip for v in _last_full(d, holder).msg.vips}
    losers = [c.msg.node for c in _full(out) if c.why == "change"]
    assert losers.index(holder) < losers.index(s1)  # the old holder is told first
    moves = [m for m in d.m.recent_moves if m["ip"] == ip]
    assert (moves[-1]["from"], moves[-1]["to"], moves[-1]["reason"], moves[-1]["epoch"]) == (
        holder, s1, "lan_takeover", epochs[0])
    ev = [c for c in d.commands[mark:] if isinstance(c, ServiceEvent)]
    assert [(e.reason, e.message) for e in ev] == [
        ("AnnouncerMoved", f"{ip} moved from node {holder} to {s1} (lan_takeover)")]
    # nothing but new reservations stored: no holder epoch was issued
    new = {k: v for k, v in d.store.items() if stored.get(k) != v}
    assert set(new) <= {ip} and all(v == max(d.m.successions[k].epochs) for k, v in new.items())


def test_a_higher_epoch_that_was_not_reserved_for_that_node_is_not_adopted() -> None:
    d = _cluster(nodes=("a", "b", "c"), ips=1)
    holder, (s1, s2), epochs = _plans(d)[IPS[0]]
    serving = _sets(d)
    d.advance(0.1)
    d.beat(s2, serving={IPS[0]: epochs[0]})  # rank 1's epoch, claimed by rank 2
    for n in (holder, s1):
        d.beat(n, serving=serving.get(n, {}))
    d(Tick())
    assert d.m.holders[IPS[0]].node == holder and d.m.moves_total == 1


def test_members_change_sends_full_sets() -> None:
    d = _cluster(nodes=("a", "b"), ips=2)
    _step(d, 0.3)
    out = _step(d, 0.2, nodes=("a", "b", "c"))  # c joins
    assert {c.msg.node for c in _full(out)} == {"a", "b", "c"}
    assert all(c.msg.members == ("a", "b", "c") for c in _full(out))


def test_no_successors_means_the_messages_of_before() -> None:
    d = _cluster(nodes=("a", "b", "c"), ips=3, successors=0)
    assert d.m.successions == {} and d.m.members == ()
    for c in _full(d.commands):
        assert c.msg.standby == () and c.msg.members == () and all(v.successors == () for v in c.msg.vips)
        assert set(c.msg.to_dict()) == {"node", "term", "seq", "ttl_ms", "sent_at", "vips", "digest"}
    assert d.store == {ip: e for s in _sets(d).values() for ip, e in s.items()}


def test_a_new_leader_reads_the_epoch_store_before_adopting() -> None:
    d = Driver(static_policies=(ALL_LB,), leader_election=True)
    d(AllocationsLoaded(None))
    d(AllocationReceived(alloc("ns/s0", IPS[0])))
    d.beat("a", serving={IPS[0]: 1000})
    d.beat("b")
    d.store = {IPS[0]: 5000}  # what the last leader reserved
    out = d.m.handle(LeadershipChanged(True, 2), d.now())
    from l2lb.core.leases_machine import LoadEpochs

    assert LoadEpochs() in out and d.m.epochs_pending
    d.advance(0.6)
    assert not d.m.ready_to_elect(d.now())
    d(EpochsLoaded(dict(d.store)))
    d(Tick())
    assert d.m.holders[IPS[0]].epoch == 1000 and min(d.m.successions[IPS[0]].epochs) == 5001


@settings(max_examples=250, deadline=None)
@given(st.integers(2, 4), st.integers(1, len(IPS)), st.sampled_from(NODES), st.frozensets(st.sampled_from(NODES)),
       st.lists(action, max_size=10))
def test_lan_takeovers_then_anything(n_nodes: int, n_ips: int, taker: str, dead: frozenset[str],
                                     then: list[tuple[Any, ...]]) -> None:
    """Steady state, one node takes over every VIP it is first successor for (some nodes die meanwhile),
    then random events: the stream properties hold and each takeover by a live taker is adopted with the
    reserved epoch as it was taken."""
    nodes = NODES[:n_nodes]
    d = Driver(static_policies=(ALL_LB,), leader_election=True)
    model = Model()
    _run([*[("alloc", i, i) for i in range(n_ips)], ("step", 7, frozenset(nodes))], d, model)
    if taker not in nodes:
        return
    model.take_over(taker)
    taken = dict(model.taken.get(taker, {}))
    alive = frozenset(nodes) - (dead - {taker})
    _run([("step", 2, alive)], d, model)
    for ip, e in taken.items():
        assert (d.m.holders[ip].node, d.m.holders[ip].epoch) == (taker, e)
    _run(then, d, model)


def test_single_node_cluster_has_no_successors_but_a_member_list() -> None:
    d = _cluster(nodes=("a",), ips=2)
    assert d.m.successions == {} and d.m.members == ("a",)
    msg = _last_full(d, "a").msg
    assert msg.members == ("a",) and msg.standby == () and all(v.successors == () for v in msg.vips)


def test_plan_successions_directly() -> None:
    from l2lb.core.election import ElectionResult, IpAssignment
    from l2lb.core.succession import Succession, plan_successions

    res = ElectionResult(assignments={ip: IpAssignment(ip, "a", 10) for ip in IPS[:3]},
                         eligible={ip: {"a": (), "b": (), "c": ()} for ip in IPS[:3]})
    assert plan_successions(res, {}, 0, {}) == ({}, {})
    plans, reserved = plan_successions(res, {}, 2, {IPS[0]: 50})
    # rank 1 spreads a's IPs over b and c (the election's own greedy placement), rank 2 is the other one
    firsts = [plans[ip].nodes[0] for ip in IPS[:3]]
    assert {firsts[0], firsts[1]} == {"b", "c"} and all(set(plans[ip].nodes) == {"b", "c"} for ip in IPS[:3])
    assert plans[IPS[0]].epochs == (51, 52) and plans[IPS[1]].epochs == (11, 12) and reserved[IPS[0]] == 52
    again, reserved2 = plan_successions(res, plans, 2, {IPS[0]: 52})
    assert again == plans and reserved2 == {}  # unchanged: same epochs, nothing new to store
    # b no longer eligible for IPS[0]: c moves up, fresh epochs above the old ones
    res.eligible[IPS[0]] = {"a": (), "c": ()}
    moved, reserved3 = plan_successions(res, plans, 2, {IPS[0]: 52})
    assert moved[IPS[0]] == Succession("a", 10, ("c",), (53,)) and reserved3 == {IPS[0]: 53}


def test_a_leader_that_lost_and_regained_leadership_never_brings_back_its_old_epochs() -> None:
    """Simulator scenario partition-holder: leader L (term 1) placed the IPs; it lost leadership, leader M
    (term 2) moved them to node c with higher epochs; c then got cut off with M. When L leads again, its own
    holders from term 1 (a, b with the old epochs) are history: what it hands out goes above c's epochs."""
    d = _cluster(nodes=("a", "b", "c"), ips=2, leader_election=True)
    d(LeadershipChanged(True, term=1))
    d.advance(0.6)
    for n in ("a", "b", "c"):
        d.beat(n, serving=_sets(d).get(n, {}))
    d(Tick())
    old = {ip: e for s in _sets(d).values() for ip, e in s.items()}
    assert old
    d(LeadershipChanged(False))
    later = {ip: e + 5000 for ip, e in old.items()}  # what the other leader gave c
    d.advance(0.2)
    for n in ("a", "b"):
        d.beat(n, serving={})
    d.beat("c", serving=later)
    for _ in range(50):  # c is cut off now: no more heartbeats from it (a and b go on)
        d.advance(0.1)
        for n in ("a", "b"):
            d.beat(n, serving={})
    d(LeadershipChanged(True, term=3))
    d(EpochsLoaded({}))
    d.advance(0.6)
    for n in ("a", "b"):
        d.beat(n, serving={})
    d(Tick())
    now = {ip: e for n, s in _sets(d).items() if n != "c" for ip, e in s.items()}
    assert set(now) == set(old)
    assert all(now[ip] > later[ip] for ip in old), (now, later)


@pytest.mark.parametrize("peers", [True, False])
def test_a_leader_elected_while_redis_is_down_moves_nothing_when_it_comes_back(peers: bool) -> None:
    """Lab, co-located, the node with Redis and the leases leader dies (h22lab AFTER run): the standby's
    heartbeat reader stalls before its bus notices, every node expires one tick after the other (so the
    "every node silent at once" guard never fires), it becomes leader while Redis is down, and when Redis is
    back the dead node's last heartbeats (read from the stream's backlog) revive it for a moment. The new
    leader must not elect on that: it waits for the bus, then for fresh heartbeats, and adopts what the
    living nodes serve (their frozen sets) -- their VIPs do not move, none goes to the dead node.
    Without LAN peers (no ``lan_heard`` in the heartbeats) the dead node gets the reconnect grace like the
    nodes whose clients are merely late: its VIPs move to b and c that much later (docs/ARCHITECTURE.md)."""
    lan = {"a": ("b", "c"), "b": ("a", "c"), "c": ("a", "b")} if peers else {}
    d0 = _cluster(nodes=("a", "b", "c"), ips=6)
    serving = _sets(d0)
    d = Driver(static_policies=(ALL_LB,), wall=d0.wall + 5, leader_election=True)
    d(AllocationsLoaded(None))
    for i in range(6):
        d(AllocationReceived(alloc(f"ns/s{i}", IPS[i])))
    d(LeadershipChanged(False, term=1))  # a standby: another instance leads
    for n in ("a", "b", "c"):
        d.beat(n, serving=serving[n], lan_heard=lan.get(n))
        d.advance(0.05)
    a_last = d.wall
    # node a (Redis, the leader) dies: no heartbeat from anyone; the bus has not noticed yet
    for _ in range(100):
        d.advance(0.05)
        d(Tick())
    assert not d.m.tracker.alive()
    d(Tick(bus_ok=False))
    d(LeadershipChanged(True, term=2))
    for _ in range(100):  # 5 s of Redis outage
        d.advance(0.05)
        d(Tick(bus_ok=False))
    mark = len(d.commands)
    d(Tick())  # Redis is back
    d.seqs["a"] = d.seqs.get("a", 0) + 1  # a's last heartbeat, stored before it died, read only now
    d(HeartbeatReceived(hb("a", seq=d.seqs["a"], serving=serving["a"], lan_heard=lan.get("a")), at=a_last))
    d(Tick())
    after = {"b": ("c",), "c": ("b",)} if peers else {}
    for _ in range(20 if peers else 60):  # b and c heartbeat again: they kept their sets through the outage
        d.advance(0.05)
        for n in ("b", "c"):
            d.beat(n, serving=serving[n], lan_heard=after.get(n))
        d(Tick())
    got = _sets(d)
    for n in ("b", "c"):
        for ip in serving[n]:
            assert ip in got.get(n, {}), f"{ip} moved off {n}: {got}"
    for c in d.published(mark):
        if isinstance(c, PublishAssignments) and peers:
            assert not (c.msg.node == "a" and c.msg.vips), f"the dead node was given {c.msg.vips}"
    assert not got.get("a")
    assert {ip for s in got.values() for ip in s} == set(IPS[:6])  # a's VIPs went to b and c


def test_a_member_that_dies_stays_one_until_it_is_forgotten() -> None:
    """The quorum announcers count on the LAN must not shrink to the nodes alive during a burst of faults:
    a dead member stays in the list (it only makes the quorum harder to reach) until the tracker forgets it."""
    d = _cluster(nodes=("a", "b", "c"), ips=3)
    _step(d, 0.3, nodes=("a", "b", "c"))
    assert d.m.members == ("a", "b", "c")
    out = _step(d, 3.0, nodes=("a", "b"))  # c dies: its VIP moves, members stay
    assert not d.m.tracker.nodes["c"].alive and d.m.moves_total >= 1
    assert d.m.members == ("a", "b", "c")
    assert all(c.msg.members == ("a", "b", "c") for c in _full(out))
    d.m.tracker.forget("c")  # e.g. its Node object was deleted, or it was pruned after an hour
    d(AllocationReceived(alloc("ns/s3", IPS[3])))
    _step(d, 0.3, nodes=("a", "b"))
    assert d.m.members == ("a", "b")
