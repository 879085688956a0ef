"""``settled``/``unsettled`` of the two state machines: does a decision of the machine still change by itself
(a timer of its own), given that its periodic inputs go on as they are? The simulator skips time only while
every machine says no (l2lb.sim.world.World.steady), so each timer that can change a decision must show here:
a node or peer going silent, an election or publish pending, the set running out, a rule keeping it, a takeover
that can come due."""

from __future__ import annotations

from l2lb.core.announcer_machine import Published, PublishHeartbeat, Tick
from l2lb.core.leases_machine import AllocationReceived, AllocationsLoaded, PublishAssignments, Sent
from l2lb.core.leases_machine import Tick as LTick
from l2lb.core.messages import StandbyVip
from tests.announcer.machine_helpers import KEY, V4, WALL0, assign, link, links, machine, peer, renew, vips
from tests.leases.helpers import ALL_LB, Driver, alloc

IP = "198.51.100.1"


# -- leases -----------------------------------------------------------------------------------------------
def _leader(nodes: tuple[str, ...] = ("a", "b")) -> Driver:
    d = Driver(static_policies=(ALL_LB,))
    d(AllocationsLoaded(None))
    for n in nodes:
        d.beat(n)
    d(AllocationReceived(alloc("ns/s0", IP)))
    return d


def _beat_for(d: Driver, nodes: tuple[str, ...], seconds: float, step: float = 0.05) -> None:
    """Every node heartbeats every 100 ms, a tick every 50 ms, for ``seconds``."""
    for i in range(round(seconds / step)):
        d.advance(step)
        if i % 2:
            for n in nodes:
                d.beat(n)
        d(LTick())


def test_a_leader_within_its_startup_grace_has_an_election_pending() -> None:
    d = _leader()
    d(LTick())
    assert d.m.unsettled(d.now()) == "an election is pending"  # ready_to_elect waits 500 ms: then it elects
    _beat_for(d, ("a", "b"), 0.7)
    assert d.published(), "elected and published after the grace"
    assert d.m.settled(d.now()), d.m.unsettled(d.now())


def test_a_standby_decides_nothing_so_it_is_always_settled() -> None:
    d = Driver(static_policies=(ALL_LB,), leader_election=True)
    d(AllocationsLoaded(None))
    d.beat("a")
    d(AllocationReceived(alloc("ns/s0", IP)))
    d.advance(1.0)
    d(LTick())
    assert d.m.dirty and not d.m.is_leader
    assert d.m.settled(d.now())


def test_a_node_that_misses_heartbeats_is_unsettled_until_it_times_out() -> None:
    d = _leader()
    _beat_for(d, ("a", "b"), 1.0)
    assert d.m.settled(d.now())
    # b goes silent: within 1.5 intervals nothing is said; after that its timeout is pending
    _beat_for(d, ("a",), 0.1)
    assert d.m.settled(d.now()), d.m.unsettled(d.now())
    _beat_for(d, ("a",), 0.1)
    assert d.m.unsettled(d.now()).startswith("node b missed heartbeats")
    _beat_for(d, ("a",), 0.3)  # timed out (3 x 100 ms), election run, published
    assert not d.m.tracker.is_alive("b")
    assert d.m.settled(d.now()), d.m.unsettled(d.now())


def test_no_heartbeat_read_at_all_is_unsettled() -> None:
    """Every node silent at once: the liveness clock runs on after lag_tolerance_ms (then every node counts
    silent at once: the machine suspects the bus); until then nothing says a thing changes but the idle time."""
    d = _leader()
    _beat_for(d, ("a", "b"), 1.0)
    _beat_for(d, (), 0.2)
    assert d.m.unsettled(d.now()).startswith("no heartbeat read for")


def test_a_publish_not_acknowledged_yet_is_unsettled() -> None:
    d = _leader()
    _beat_for(d, ("a", "b"), 1.0)
    d.beat("a")
    d.m.handle(AllocationReceived(alloc("ns/s1", "198.51.100.2")), d.now())
    d.advance(0.05)
    cmds = d.m.handle(LTick(), d.now())  # not carried out: the publishes are on their way
    pubs = [c for c in cmds if isinstance(c, PublishAssignments)]
    assert pubs and d.m.unsettled(d.now()) == "publishing"
    for c in pubs:
        d.m.handle(Sent(c), d.now())
    assert d.m.settled(d.now()), d.m.unsettled(d.now())


# -- announcer ----------------------------------------------------------------------------------------------
def _tick(m: object, t: float, ok: bool = True) -> None:
    for c in m.feed(Tick(t, WALL0 + t, ok)):  # type: ignore[attr-defined]
        if isinstance(c, PublishHeartbeat):
            m.feed(Published(ok, t, f"{int(1e9 + t * 1000)}-0" if ok else ""))  # type: ignore[attr-defined]


def test_a_renewed_set_is_settled_and_one_not_renewed_is_not_until_it_runs_out() -> None:
    m = machine()
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5)), 0.0))
    t, seq = 0.0, 1
    while t < 2.0:  # renewed every 250 ms
        t = round(t + 0.05, 3)
        if round(t * 100) % 25 == 0:
            seq += 1
            m.feed(renew(seq, vips((V4, 5)), t))
        _tick(m, t)
        assert m.settled(t), (t, m.unsettled(t))
    last = t - 0.05 * (round(t * 100) % 25 // 5)
    # leases renews the others but not us any more (no grace then): half the ttl later the set is reported as
    # running out, and once it did, settled
    while t < last + 1.2:
        t = round(t + 0.05, 3)
        if round(t * 100) % 25 == 0:
            seq += 1
            m.feed(renew(seq, vips(("198.51.100.99", 5)), t, node="n9"))
        _tick(m, t)
        if t - last > 0.5 + 1e-9 and t < last + 1.0 - 1e-9:
            assert m.unsettled(t).startswith("the set is not renewed"), (t, last)
    assert not m.state.valid(t) and m.settled(t), m.unsettled(t)


def test_the_leases_outage_grace_is_settled_until_it_runs_out_and_counts_skipped_time() -> None:
    """Leases silent, Redis fine: the grace keeps the set (up to 60 s). Nothing changes until it runs out, which
    next_decision_at says; time skipped without the machine perceiving it (skipped) counts against it."""
    m = machine()
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5)), 0.0))
    t = 0.0
    while t < 1.5:
        t = round(t + 0.05, 3)
        _tick(m, t)
    assert m.state.valid(t) and m.status(t)["keeping"] == "grace"
    assert m.settled(t), m.unsettled(t)
    end = m.next_decision_at(t)
    assert end is not None and 60.0 < end < 61.0
    m.skipped(59.0)  # 59 s passed unperceived: the grace has less than a second left
    assert m.next_decision_at(t) == end - 59.0
    while m.state.valid(t):
        t = round(t + 0.05, 3)
        _tick(m, t)
    assert t <= end - 59.0 + 0.2, (t, end)  # it ran out on time
    assert m.next_decision_at(t) is None and m.settled(t)


def test_a_set_kept_by_the_freeze_is_unsettled() -> None:
    m = machine(peers=True, peer_key=KEY)
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5)), 0.0, members=("n1", "n2", "n3")))
    t = 0.0
    while t < 1.5:  # Redis down for us and for the peers we hear (a quorum): the freeze keeps the set
        t = round(t + 0.05, 3)
        if round(t * 100) % 10 == 0:
            m.feed(peer("n2", t))
            m.feed(peer("n3", t))
        _tick(m, t, ok=False)
    assert m.status(t)["keeping"] == "freeze"
    assert m.unsettled(t) == "the set is kept past its deadline (freeze)"


def test_a_peer_that_stops_sending_is_unsettled_until_it_times_out() -> None:
    m = machine(peers=True, peer_key=KEY)
    m.feed(links(link()))
    t = 0.0
    for _ in range(10):
        t = round(t + 0.1, 3)
        m.feed(peer("n2", t))
        _tick(m, t)
    assert m.settled(t), m.unsettled(t)
    last = t
    for dt, settled in ((0.1, True), (0.2, False), (0.3, False), (0.4, True)):
        _tick(m, round(last + dt, 3))
        assert m.settled(round(last + dt, 3)) is settled, (dt, m.unsettled(round(last + dt, 3)))


def test_a_successor_is_unsettled_while_its_control_plane_and_its_holder_are_silent() -> None:
    m = machine(peers=True, peer_key=KEY)
    m.feed(links(link()))
    sb = (StandbyVip(V4, "n2", 1, 7),)
    m.feed(assign(1, vips(), 0.0, standby=sb, members=("n1", "n2", "n3")))
    t = 0.0
    for _ in range(10):  # n2 (the holder) and n3 heard, leases silent after the first set
        t = round(t + 0.1, 3)
        m.feed(peer("n2", t, held=1))
        m.feed(peer("n3", t))
        _tick(m, t)
    assert m.settled(t), m.unsettled(t)  # the control plane is silent, but the holder is heard
    for _ in range(2):  # n2 goes silent: its successor takes over once the silence is long enough
        t = round(t + 0.1, 3)
        m.feed(peer("n3", t))
        _tick(m, t)
    assert m.unsettled(t).startswith("the control plane is silent for us and holder n2 too"), m.unsettled(t)
    t = round(t + 0.1, 3)
    m.feed(peer("n3", t))
    _tick(m, t)
    assert m.held, "taken over"
    assert m.unsettled(t) == "the set is kept past its deadline (lan_held)"


def test_a_successor_cut_off_from_its_peers_is_settled() -> None:
    """No quorum on the LAN: nothing can be taken over, whatever the holder does (news would change that)."""
    m = machine(peers=True, peer_key=KEY)
    m.feed(links(link()))
    sb = (StandbyVip(V4, "n2", 1, 7),)
    m.feed(assign(1, vips(), 0.0, standby=sb, members=("n1", "n2", "n3")))
    _tick(m, 0.05)
    _tick(m, 1.0)
    assert m.settled(1.0), m.unsettled(1.0)
