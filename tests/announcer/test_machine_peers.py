"""AnnouncerMachine with LAN peer heartbeats (rule 9): the Redis-down freeze, succession takeovers, claims.
Pure: peers' frames are built with l2lb.core.peers and fed with the times we choose."""

from __future__ import annotations

import pytest

from l2lb.core import peers
from l2lb.core.announcer_machine import (
    AnnouncerMachine,
    Command,
    Count,
    Gauge,
    Published,
    PublishHeartbeat,
    RequestSnapshot,
    SendFrames,
    SendPeerFrame,
    StartAnswering,
    Stop,
    StopAnswering,
    Tick,
)
from l2lb.core.messages import StandbyVip, assignments_digest

from .machine_helpers import (
    KEY,
    V4,
    V4B,
    WALL0,
    answered,
    assign,
    garp_targets,
    link,
    links,
    machine,
    of,
    peer,
    renew,
    vips,
)

MEMBERS = ("n1", "n2", "n3")
DOWN = 0  # flags of a peer that has neither Redis nor leases
UP = peers.REDIS_OK | peers.CP_FRESH


def tick(t: float) -> Tick:
    return Tick(t, WALL0 + t, True)


def pm(**kw: object) -> AnnouncerMachine:
    m = machine(**{"peers": True, "peer_key": KEY, **kw})
    m.feed(links(link()))
    return m


class World:
    """Drives one machine through time: ticks every 50 ms, peers' frames every 100 ms, heartbeats that work
    while ``redis`` is up; records every command."""

    def __init__(self, m: AnnouncerMachine):
        self.m = m
        self.t = 0.0
        self.redis = True
        self.bus = True  # the shell's view of the bus (Tick.bus_ok)
        self.peers: dict[str, int] = {}  # node -> flags, for the peers that send
        self.claims: dict[str, tuple[tuple[str, int], ...]] = {}
        self.held: dict[str, int] = {}  # node -> VIPs it says it answers for
        self.instance: dict[str, str] = {}
        self.terms: dict[str, int] = {}  # node -> the leases term its frames name (default 1)
        self.cmds: list[tuple[float, Command]] = []

    def feed(self, ev: object) -> list[Command]:
        out = self.m.feed(ev)  # type: ignore[arg-type]
        self.cmds.extend((self.t, c) for c in out)
        return out

    def run(self, until: float, *, check: str | None = None) -> list[float]:
        """Advance to ``until``; returns the times (every 10 ms) at which ``check`` was NOT answered."""
        misses = []
        while self.t < until - 1e-9:
            self.t = round(self.t + 0.01, 3)
            step = round(self.t * 100)
            if step % 10 == 0:
                for node, flags in self.peers.items():
                    self.feed(peer(node, self.t, flags=flags, claims=self.claims.get(node, ()),
                                   held=self.held.get(node, 0), instance=self.instance.get(node, "i-1"),
                                   term=self.terms.get(node, 1)))
            if step % 5 == 0:
                for c in self.feed(Tick(self.t, WALL0 + self.t, self.bus)):
                    if c.__class__.__name__ == "PublishHeartbeat":
                        self.feed(Published(self.redis, self.t, f"{int(1e9 + self.t * 1000)}-0" if self.redis else ""))
            if check is not None and not answered(self.m, check, self.t):
                misses.append(self.t)
        return misses

    def started(self) -> list[tuple[float, StartAnswering]]:
        return [(t, c) for t, c in self.cmds if isinstance(c, StartAnswering)]

    def stopped(self) -> list[tuple[float, StopAnswering]]:
        return [(t, c) for t, c in self.cmds if isinstance(c, StopAnswering)]


def _frozen_world(**kw: object) -> World:
    """n1 holds V4 (ttl 1 s, renewed until 0.5); Redis dies at 0.5 for everybody; n2, n3 are heard."""
    w = World(pm(**kw))
    w.peers = {"n2": UP, "n3": UP}
    w.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS))
    w.run(0.5, check=V4)
    w.feed(renew(2, vips((V4, 5)), 0.5))
    w.redis = False
    w.peers = {"n2": DOWN, "n3": DOWN}  # their Redis round trips fail too, and leases is gone
    return w


# -- the Redis-down freeze -------------------------------------------------------------------------------
def test_redis_down_for_everybody_freezes_the_assignment() -> None:
    w = _frozen_world()
    assert w.run(10.0, check=V4) == []  # 9.5 s past the last renewal, not one request unanswered
    assert Gauge("peers_frozen", 1) in [c for _, c in w.cmds]
    assert w.m.status(10.0)["keeping"] == "freeze" and w.m.lan_quorum(10.0)
    # Redis comes back for n2, whose leases hears it again: we are the one cut off -> strict expiry
    w.peers["n2"] = UP
    misses = w.run(11.0, check=V4)
    assert misses and misses[0] <= 10.2
    assert [c.reason for _, c in w.stopped()] == ["expired"]


@pytest.mark.parametrize("breaker", ["no_quorum", "stale_evidence", "members_unknown", "link_down", "no_peers"])
def test_no_freeze_without_every_condition(breaker: str) -> None:
    w = _frozen_world(**({"peers": False} if breaker == "no_peers" else {}))
    if breaker == "no_quorum":  # members n1..n5: n1 + n2 + n3 would be 3 of 5, but n3 is not heard
        w.feed(assign(3, vips((V4, 5)), 0.5, members=("n1", "n2", "n3", "n4", "n5")))
        w.peers = {"n2": DOWN}
    elif breaker == "stale_evidence":
        w.peers = {}  # nobody sends after 0.5
    elif breaker == "members_unknown":  # a leases without successors sends no member list
        w.feed(assign(3, vips((V4, 5)), 0.5))
    elif breaker == "link_down":
        w.feed(links(link(up=False), now=0.5))
    misses = w.run(3.0, check=V4)
    assert misses and misses[0] <= 1.6  # within ttl of the last renewal (+ the 100 ms step)
    assert w.stopped() and w.stopped()[-1][1].reason == "expired"


def test_resumed_after_sigstop_expires_on_stale_evidence_and_yields_to_a_claim() -> None:
    """The process is stopped 30 s: the peers' frames that waited in the socket carry their arrival times."""
    w = _frozen_world()
    w.run(2.0, check=V4)
    stopped_at = w.t
    # (a) the timer runs first after the resume: all evidence is 30 s old -> strict expiry
    cmds = w.m.feed(tick(stopped_at + 30.0))
    assert [c.reason for c in of(cmds, StopAnswering)] == ["expired"]
    assert not answered(w.m, V4, stopped_at + 30.0)
    # (b) the queued frames are read first: the last ones arrived just before the resume, and one of them
    # says the successor took V4 over meanwhile (a higher epoch): stop at once
    w2 = _frozen_world()
    w2.run(2.0, check=V4)
    t = w2.t + 30.0
    for k in range(5):
        w2.m.feed(peer("n2", t - 0.4 + k * 0.1, claims=((V4, 6),)))
    cmds = w2.m.feed(peer("n3", t))
    assert not of(cmds, StopAnswering)
    assert [c.reason for _, c in [(0, c) for c in w2.m.feed(tick(t))] if isinstance(c, StopAnswering)] == []
    assert not answered(w2.m, V4, t)  # dropped when the first claim frame was read
    assert w2.m.status(t)["vips"] == []


def test_frames_that_do_not_count() -> None:
    m = pm()
    m.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS))
    bad = [
        peer("n2", 0.1, key=b"another-key-000000000"),  # wrong key
        peer("n2", 0.1, key=None),  # unsigned while we have a key
        peer("n2", 0.1, cluster="other"),  # another cluster on the same LAN
        peer("n1", 0.1),  # our own name
    ]
    reasons = [c.label for ev in bad for c in m.feed(ev) if isinstance(c, Count)]
    assert reasons == ["bad_mac", "unsigned", "other_cluster", "own"]
    good = peer("n2", 0.2)
    assert Count("peer_frames", "accepted") in m.feed(good)
    assert m.feed(good) == [Count("peer_frames", "replay")]  # the same frame again
    # a new counter whose sender clock is 5 s behind the offset its stream taught us (an old frame, or the
    # sender's clock stepped back) is refused as stale; a peer's absolute clock alone is never judged (core.peers)
    behind = peer("n2", 0.3, wall_ms=int((WALL0 + 0.3 - 5) * 1000))
    assert [c.label for c in m.feed(behind) if isinstance(c, Count)] == ["stale"]
    assert list(m.status(0.2)["peers"]["heard"]) == ["n2"]


def test_our_frames_say_what_we_know() -> None:
    m = pm()
    m.feed(links(link(), link("eth1", index=3, mac="02:00:00:00:01:02")))
    out = m.feed(tick(0.0))
    sent = of(out, SendPeerFrame)
    assert [s.iface for s in sent] == ["eth0", "eth1"]
    f = peers.decode(sent[0].frame, KEY)
    assert (f.node, f.instance, f.flags, f.held_count, f.claims) == ("n1", "test0001", 0, 0, ())
    assert sent[0].frame[6:12] == bytes.fromhex("020000000101") and sent[1].frame[6:12] == bytes.fromhex("020000000102")
    assert peers.decode(sent[1].frame, KEY).counter == f.counter + 1
    m.feed(assign(1, vips((V4, 5)), 0.05, members=MEMBERS))
    m.feed(Published(True, 0.06, "1000-0"))
    f = peers.decode(of(m.feed(tick(0.1)), SendPeerFrame)[0].frame, KEY)
    assert f.redis_ok and f.cp_fresh and f.term == 1 and f.held_count == 1
    assert f.held_digest == peers.held_digest({V4: 5})
    f = peers.decode(of(m.feed(tick(0.7)), SendPeerFrame)[0].frame, KEY)
    assert not f.redis_ok and not f.cp_fresh  # 300 ms / 500 ms later
    assert m.next_wakeup(0.7) == pytest.approx(0.8)
    last = of(m.feed(Stop(0.75, WALL0 + 0.75)), SendPeerFrame)
    assert len(last) == 2 and peers.decode(last[0].frame, KEY).stopping
    assert not of(m.feed(tick(0.9)), SendPeerFrame)
    unsigned = machine(peers=True)
    unsigned.feed(links(link()))
    raw = of(unsigned.feed(tick(0.0)), SendPeerFrame)[0].frame
    assert peers.decode(raw, None).flags & peers.UNSIGNED


# -- succession --------------------------------------------------------------------------------------------
def _successor(rank: int = 1, epoch: int = 7, holder: str = "n2") -> World:
    """n1 is successor of rank ``rank`` for V4B (held by ``holder``); Redis and leases die at 0.5."""
    w = World(pm())
    w.peers = {"n2": UP, "n3": UP}
    sb = (StandbyVip(V4B, holder, rank, epoch, ("eth0",), ("ns/web",)),)
    w.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS, standby=sb))
    w.run(0.5)
    w.redis = False
    w.peers = {"n2": DOWN, "n3": DOWN}
    w.run(2.0)
    assert not w.started()[1:]  # only V4 at 0.0
    return w


def test_successor_takes_over_when_holder_and_control_plane_are_silent() -> None:
    w = _successor()
    del w.peers["n2"]  # the holder dies at 2.0 (its last frame arrived at 2.0)
    w.run(2.28)
    assert len(w.started()) == 1  # not yet: 300 ms of silence
    w.run(2.6)
    t, start = w.started()[-1]
    assert start == StartAnswering(((V4B, 7),)) and 2.3 <= t <= 2.36
    took = [c for at, c in w.cmds if at == t]
    assert Count("takeovers") in took
    claim = [peers.decode(c.frame, KEY) for c in took if isinstance(c, SendPeerFrame)]
    assert claim and claim[0].claims == ((V4B, 7),)  # the claim goes out at once
    assert V4B in [ip for c in took if isinstance(c, SendFrames) for ip in garp_targets(c.frames)]
    assert w.m.status(t)["peers"]["held"] == {V4B: 7}
    # LAN-held: answered for as long as the quorum is heard and nobody has the control plane
    assert w.run(6.0, check=V4B) == []
    # leases is back and decides: it names V4B for us (with a fresh epoch) -> kept, no longer a claim
    cmds = w.feed(assign(2, vips((V4, 5), (V4B, 9)), 6.0, members=MEMBERS))
    assert of(cmds, StartAnswering) == [StartAnswering(((V4B, 9),))]  # the new epoch is a takeover of its own
    assert w.m.held == {} and answered(w.m, V4B, 6.0)


@pytest.mark.parametrize("breaker", ["someone_has_cp", "holder_never_heard", "no_quorum", "cp_fresh_for_us",
                                     "claimed_before_us"])
def test_no_takeover_unless_every_condition_holds(breaker: str) -> None:
    w = _successor(holder="n9" if breaker == "holder_never_heard" else "n2")
    del w.peers["n2"]
    if breaker == "someone_has_cp":
        w.peers["n3"] = UP
    elif breaker == "no_quorum":
        del w.peers["n3"]
    elif breaker == "claimed_before_us":  # a successor ranked before us took it (its epoch: ours - 1)
        w.claims["n3"] = ((V4B, 6),)
    elif breaker == "cp_fresh_for_us":  # leases still reaches us, and so does Redis
        w.redis = True
        for k in range(30):
            w.feed(renew(10 + k, vips((V4, 5)), 2.0 + k * 0.1))
            w.run(2.0 + (k + 1) * 0.1)
    w.run(5.0)
    assert [c for _, c in w.started()][1:] == []


@pytest.mark.parametrize("cp_back", [False, True])
def test_a_holder_that_restarted_without_its_set_is_taken_over_from(cp_back: bool) -> None:
    """The holder's node blinks (or its pod is recreated) while leases is dead: its new instance is heard at
    once but answers for nothing, so its VIPs are dark until the control plane returns (simulator seed 11:
    6.1 s). Heard serving nothing since it was last heard serving counts as silence for its VIPs; a control
    plane that reaches us again leaves the decision to it."""
    w = World(pm())
    w.peers, w.held = {"n2": UP, "n3": UP}, {"n2": 1}
    sb = (StandbyVip(V4B, "n2", 1, 7, ("eth0",), ("ns/web",)),)
    w.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS, standby=sb))
    w.run(0.5)
    w.redis = False
    w.peers = {"n2": DOWN, "n3": DOWN}
    w.run(2.0)
    assert not w.started()[1:]  # n2 is heard answering for its VIP: nothing to take over
    w.held["n2"], w.instance["n2"] = 0, "i-2"  # restarted at 2.0, without its set
    if cp_back:
        w.redis = True
        for k in range(30):
            w.feed(renew(10 + k, vips((V4, 5)), 2.0 + k * 0.1))
            w.run(2.0 + (k + 1) * 0.1)
        assert [c for _, c in w.started()][1:] == []
        return
    w.run(2.6)
    t, start = w.started()[-1]
    assert start == StartAnswering(((V4B, 7),)) and 2.3 <= t <= 2.36


@pytest.mark.parametrize("case", ["never_heard_serving", "same_instance_serves_nothing"])
def test_a_holder_heard_serving_nothing_is_not_taken_over_from_unless_it_restarted(case: str) -> None:
    """A peer heard answering for nothing since we started may simply be starting; the same instance that
    stopped answering had its VIPs moved by the control plane (our standby list may be older than that):
    neither is taken over from."""
    w = _successor()
    if case == "same_instance_serves_nothing":
        w.held["n2"] = 1
        w.run(2.5)
        w.held["n2"] = 0
    else:
        w.instance["n2"] = "i-2"
    w.run(5.0)
    assert [c for _, c in w.started()][1:] == []


def test_rank_two_waits_longer_and_yields_to_rank_one() -> None:
    w = _successor(rank=2, epoch=8)
    del w.peers["n2"]
    w.run(2.42)
    assert len(w.started()) == 1  # 300 + 150 ms for rank 2
    w.run(2.6)
    assert [c for _, c in w.started()][-1] == StartAnswering(((V4B, 8),))


def test_holder_stops_on_a_higher_epoch_claim_and_ignores_lower_ones() -> None:
    m = pm()
    m.feed(assign(1, vips((V4, 5), (V4B, 5)), 0.0, ttl_ms=10_000, members=MEMBERS))
    assert not of(m.feed(peer("n2", 0.1, claims=((V4, 5), (V4B, 4)))), StopAnswering)
    cmds = m.feed(peer("n2", 0.2, claims=((V4, 6),)))
    assert of(cmds, StopAnswering) == [StopAnswering((V4,), "peer_claim")]
    assert not answered(m, V4, 0.2) and answered(m, V4B, 0.2)


def test_a_vip_a_peer_still_claims_with_a_lower_epoch_is_claimed_back_until_that_peer_stops() -> None:
    """Simulator finding S3: a peer took V4 over on the LAN (epoch 5) and then missed, behind a lossy link, the
    leases messages that gave V4 to us with epoch 6. Leases' messages to it can keep getting lost; our frames
    claim V4 with our higher epoch so that it stops on rule 3, and claim it only while it is heard claiming."""
    m = pm()
    m.feed(assign(1, vips((V4, 6), (V4B, 6)), 0.0, ttl_ms=10_000, members=MEMBERS))

    def claims_at(t: float) -> list[tuple[tuple[str, int], ...]]:
        out = m.feed(tick(t))
        return [peers.decode(c.frame, KEY).claims for c in out if isinstance(c, SendPeerFrame)]

    assert claims_at(0.1) == [()]  # nobody claims what we answer: no claims (they are for takeovers)
    m.feed(peer("n2", 0.15, claims=((V4, 5),)))
    m.feed(peer("n3", 0.15, claims=((V4B, 7),)))  # a higher epoch than ours: we stop, we do not claim it
    assert claims_at(0.2) == [((V4, 6),)]
    assert not answered(m, V4B, 0.2) and answered(m, V4, 0.2)
    assert claims_at(0.6) == [()]  # n2 has not claimed V4 for longer than peer_timeout: no longer contested
    # (the peer that hears our claim stops: test_holder_stops_on_a_higher_epoch_claim_and_ignores_lower_ones)


def test_a_claim_with_an_epoch_at_least_our_standby_epoch_cancels_that_succession() -> None:
    """S3 continued: the lossy peer also kept the old leader's standby list, which named it successor of V4B with
    epoch 7; once it hears V4B claimed with epoch 7 or more, that plan is older than a decision made since and
    it never takes V4B over with it (it would answer again, with the older epoch, whenever the holder's frames
    are lost)."""
    w = _successor(epoch=7)
    w.claims["n2"] = ((V4B, 9),)  # the holder claims V4B (contested) with the epoch a later leader gave it
    w.terms["n2"] = 2
    w.run(2.2)
    assert w.m.status(2.2)["peers"]["standby"] == 0
    assert Count("standby", "superseded") in [c for _, c in w.cmds]
    del w.peers["n2"]  # the holder falls silent (lost frames, or dead): no takeover with the stale plan
    w.run(5.0)
    assert [c for _, c in w.started()][1:] == []


def test_a_fellow_successors_claim_of_the_same_term_keeps_our_plan() -> None:
    """Simulator seed 1: n3 and n4 were successors of one VIP under the same leader; both took it over at once,
    n4 yielded to n3's higher epoch, and the rule above then cancelled n4's plan -- so when n3's link went down
    nobody took the VIP (4.9 s dark). A claim from the term of our own plan is that plan at work: it stays."""
    w = _successor(rank=2, epoch=7)
    w.claims["n3"] = ((V4B, 8),)  # the rank-1 successor took it over, with its (higher) epoch of the same plan
    w.run(2.2)
    assert w.m.status(2.2)["peers"]["standby"] == 1


def test_the_holders_own_claim_does_not_hold_off_its_successor() -> None:
    """A holder that claims its VIP (contested) and dies: its claim is not a successor's, so the successor takes
    over after takeover_after_ms as usual, not after the claim has aged out."""
    w = _successor(epoch=7)
    w.claims["n2"] = ((V4B, 5),)  # lower than our standby epoch: the plan stands
    w.run(2.2)
    assert w.m.status(2.2)["peers"]["standby"] == 1 and w.m._peer_claims[V4B][0] == "n2"
    del w.peers["n2"]  # its last frame arrived at 2.2
    w.run(2.8)
    t, start = w.started()[-1]
    assert start == StartAnswering(((V4B, 7),))
    assert 2.5 <= t <= 2.56  # (held off by the claim, it would be 2.6: claims count for peer_timeout_ms, 350 ms)


def test_lan_held_vip_leases_does_not_name_is_dropped_and_a_renewal_asks_for_the_full_set() -> None:
    w = _successor()
    del w.peers["n2"]
    w.run(2.6)
    assert w.m.held == {V4B: 7}
    # leases is back, renewing the set it gave us (its digest covers standby and members too)
    sb = (StandbyVip(V4B, "n2", 1, 7, ("eth0",), ("ns/web",)),)
    cmds = w.feed(renew(2, vips((V4, 5)), 2.6, ttl_ms=1000, digest=assignments_digest(vips((V4, 5)), sb, MEMBERS)))
    assert RequestSnapshot("lan_takeover") in cmds and answered(w.m, V4B, 2.6)
    cmds = w.feed(assign(3, vips((V4, 5)), 2.7, members=MEMBERS))
    assert of(cmds, StopAnswering) == [StopAnswering((V4B,), "reassigned")] and not answered(w.m, V4B, 2.7)


def test_lan_held_ends_without_quorum() -> None:
    w = _successor()
    del w.peers["n2"]
    w.run(3.0)
    assert w.m.held
    del w.peers["n3"]  # alone now
    misses = w.run(4.0, check=V4B)
    assert misses and misses[0] <= 3.0 + 0.35 + 0.15
    assert [c.reason for _, c in w.stopped()] == ["expired"]



def test_no_freeze_while_our_redis_works_the_grace_limit_still_ends_a_leases_outage() -> None:
    """Leases is dead, Redis is up for everybody: the leases-outage grace (here 2 s) keeps the set, then it
    expires although a quorum is heard -- the freeze is for Redis being down, not leases."""
    w = World(pm(leases_outage_grace_ms=2000))
    w.peers = {"n2": peers.REDIS_OK, "n3": peers.REDIS_OK}  # Redis yes, leases no
    w.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS))
    misses = w.run(4.0, check=V4)
    assert misses and 2.9 <= misses[0] <= 3.1  # deadline 1.0 (grace checked from 0.95) + 2 s
    assert [c.reason for _, c in w.stopped()] == ["expired"]



@pytest.mark.parametrize("refused_at", [3.0, 3.02, 3.05, 3.07])
def test_a_master_that_starts_refusing_writes_during_the_grace_hands_over_to_the_freeze(refused_at: float) -> None:
    """Lab finding (5 nodes, Redis HA, two nodes dead at once: the leases leader and both Redis replicas): the
    surviving master refuses every write (NOREPLICAS, min-replicas-to-write 1). A holder kept its set through
    the leases-outage grace; when its bus failed, its last Redis round trip was still fresh (REDIS_OK_S), so
    at that deadline neither the grace (the bus is failing) nor the freeze (Redis looked fine) held: 4 VIPs
    dark for 12.8 s. The bus failing now is Redis failing us: the freeze takes over at once."""
    w = World(pm())
    w.peers = {"n2": peers.REDIS_OK, "n3": peers.REDIS_OK}  # Redis yes, leases no (its node died)
    w.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS))
    assert w.run(refused_at, check=V4) == []
    assert w.m.status(w.t)["keeping"] == "grace"
    w.redis, w.bus = False, False  # every write refused from now on, for everybody
    assert w.run(refused_at + 0.3, check=V4) == []
    w.peers = {"n2": DOWN, "n3": DOWN}  # their round trips fail too
    assert w.run(8.0, check=V4) == [] and w.stopped() == []
    assert w.m.status(w.t)["keeping"] == "freeze"

@pytest.mark.parametrize("members", [MEMBERS, ("n1", "n2")])
def test_a_holder_cut_off_from_its_peers_gets_no_grace_when_the_others_can_take_over(
        members: tuple[str, ...]) -> None:
    """Co-located chaos finding: the holder runs the Redis master and is cut off from the other nodes (the
    LAN clients still reach it); its Redis works and leases is silent for it, so the leases-outage grace
    used to keep its VIPs for seconds while the majority's successor took them over on the LAN: dual.
    With 3 members the others make a majority without us: no grace, expiry at the deadline. With 2
    members nobody can take over (no majority without us): the grace keeps the set as before."""
    w = World(pm(leases_outage_grace_ms=5000))
    w.peers = {n: UP for n in members if n != "n1"}
    w.feed(assign(1, vips((V4, 5)), 0.0, members=members))
    w.run(0.5, check=V4)
    w.peers = {}  # cut off from every peer; our own Redis round trips go on working, leases says nothing
    misses = w.run(4.0, check=V4)
    if len(members) == 3:
        assert misses and misses[0] <= 1.05, misses[:3]  # the validity deadline (1.0), no grace
        assert [c.reason for _, c in w.stopped()] == ["expired"]
    else:
        assert misses == [] and w.stopped() == []


def test_a_holder_that_never_heard_a_peer_keeps_the_grace() -> None:
    """Peer frames that never flow (blocked on this LAN, another key) stop every takeover too: the
    leases-outage grace then keeps the set as it did before the peers existed."""
    w = World(pm(leases_outage_grace_ms=5000))
    w.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS))
    assert w.run(4.0, check=V4) == [] and w.stopped() == []


def test_every_claim_reaches_the_holder_even_beyond_one_frame() -> None:
    """Regression: one peer frame carries at most peers.MAX_CLAIMS (40) claims. A successor that took over 100
    VIPs sends them all in every interval (pages), so a holder that was only silent (stopped, cut off from
    the LAN) stops every one of them when it hears the successor again -- not just 40."""
    n = 100
    ips = [f"198.51.100.{i}" for i in range(1, n + 1)]
    succ = machine(node="n2", peers=True, peer_key=KEY)
    succ.feed(links(link(mac="02:00:00:00:01:02")))
    sb = tuple(StandbyVip(ip, "n1", 1, 6) for ip in ips)
    succ.feed(assign(1, vips(("203.0.113.1", 5)), 0.0, node="n2", members=MEMBERS, standby=sb))
    for t in (0.0, 0.1):  # it hears n1 and n3 while Redis and leases work
        succ.feed(peer("n1", t, flags=UP))
        succ.feed(peer("n3", t, flags=UP))
    t = 0.1
    frames: list[bytes] = []
    while t < 1.5 and not frames:
        t = round(t + 0.1, 2)
        succ.feed(peer("n3", t))  # n1 is silent from now on, Redis and leases are gone
        out = succ.feed(Tick(t, WALL0 + t, False))
        if len(succ.held) == n:
            frames = [c.frame for c in out if isinstance(c, SendPeerFrame)]
    assert len(succ.held) == n and len(frames) == 3  # 40 + 40 + 20
    holder = pm()
    holder.feed(assign(1, vips(*((ip, 5) for ip in ips)), t, ttl_ms=60_000, members=MEMBERS))
    from l2lb.core.announcer_machine import PeerFrameReceived

    stopped = [ip for f in frames for c in holder.feed(PeerFrameReceived("eth0", f, t, WALL0 + t))
               if isinstance(c, StopAnswering) for ip in c.ips]
    assert sorted(stopped) == sorted(ips) and holder.status(t)["vips"] == []


# -- one wakeup per interval at rest; takeovers on time without extra wakeups -------------------------------
def test_heartbeat_goes_with_the_peer_frame() -> None:
    """At rest one Tick sends the heartbeat and the peer frame: after a publish completes, the next heartbeat
    is due with the next peer frame (never later than an interval after the completion, as without peers)."""
    m = pm()
    first = m.feed(tick(0.0))
    assert of(first, PublishHeartbeat) and of(first, SendPeerFrame)
    m.feed(Published(True, 0.004, "1000-0"))
    assert m.next_wakeup(0.004) == pytest.approx(0.1)  # not 0.104: the peer frame's tick
    both = m.feed(tick(0.1))
    assert of(both, PublishHeartbeat) and of(both, SendPeerFrame)
    m.feed(Published(True, 0.195, "1095-0"))  # a slow round trip: the next peer frame is only 5 ms away
    assert m.next_wakeup(0.195) == pytest.approx(0.2)
    assert not of(m.feed(tick(0.2)), PublishHeartbeat)  # too close to the last one: an interval after it
    assert m.next_wakeup(0.2) == pytest.approx(0.295)
    plain = machine()  # without peers: an interval after the completion, as before
    plain.feed(links(link()))
    plain.feed(tick(0.0))
    plain.feed(Published(True, 0.004, "1000-0"))
    assert plain.next_wakeup(0.004) == pytest.approx(0.104)


def test_takeover_wakeup_is_on_time_when_driven_only_by_next_wakeup() -> None:
    """The timer ticks only when the machine asks (next_wakeup) or an event makes it due: the takeover
    happens exactly when the holder has been silent for takeover_after_ms, not with the next peer frame."""
    w = _successor()
    w.feed(peer("n2", 2.03, flags=DOWN))  # the holder's last frame (it dies right after)
    t, frames, started = 2.03, [2.05, 2.15, 2.25, 2.35, 2.45], []
    while t < 2.5:
        nxt = w.m.next_wakeup(t)
        assert nxt is not None and nxt > t - 1e-9
        if frames and frames[0] <= nxt:
            t = frames.pop(0)
            w.t = t
            w.feed(peer("n3", t, flags=DOWN))
            continue
        t = w.t = nxt
        for c in w.feed(tick(t)):
            if isinstance(c, StartAnswering):
                started.append((t, c))
            elif c.__class__.__name__ == "PublishHeartbeat":
                w.feed(Published(False, t, "", error="down"))
    assert started and started[0][1] == StartAnswering(((V4B, 7),))
    assert started[0][0] == pytest.approx(2.33, abs=1e-5)


def test_no_extra_wakeups_at_rest_with_standby_vips() -> None:
    """Successors at rest (leases renews every 200 ms, Redis works, peers heard): every tick sends the peer
    frame and the heartbeat together, whatever the standby list holds; no tick for the takeover checks."""
    m = pm()
    sb = tuple(StandbyVip(f"203.0.113.{i}", "n2" if i % 2 else "n3", 1 + i % 2, 7, ("eth0",), ("ns/web",))
               for i in range(1, 20))
    m.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS, standby=sb))
    digest = assignments_digest(vips((V4, 5)), sb, MEMBERS)
    events = sorted([(round(k / 10 + 0.05, 3), "peers") for k in range(30)]
                    + [(round(k / 5 + 0.07, 3), "renew") for k in range(15)])
    t, seq = 0.0, 1
    ticks: list[tuple[float, bool, bool]] = []
    while t < 3.0:
        nxt = m.next_wakeup(t)
        assert nxt is not None
        nxt = max(nxt, t)
        while events and events[0][0] <= nxt:
            at, what = events.pop(0)
            if what == "peers":
                m.feed(peer("n2", at, flags=UP))
                m.feed(peer("n3", at, flags=UP))
            else:
                seq += 1
                m.feed(renew(seq, vips((V4, 5)), at, ttl_ms=1000, digest=digest))
            nxt = max(m.next_wakeup(at) or nxt, at)
        t = nxt
        out = m.feed(tick(t))
        if of(out, PublishHeartbeat):
            m.feed(Published(True, t + 0.002, f"{int(1e9 + t * 1000)}-0"))
        if t >= 0.5:
            ticks.append((round(t, 4), bool(of(out, SendPeerFrame)), bool(of(out, PublishHeartbeat))))
    # every tick sends the peer frame and the heartbeat (the VIP's GARP rounds aside: once a second)
    assert all(f and h for t, f, h in ticks if abs(t - round(t)) > 1e-6), str(ticks)
    assert 25 <= len(ticks) <= 29, str(ticks)


@pytest.mark.parametrize("late_ms", [0, 150])
def test_redis_back_after_a_freeze_hands_over_to_the_grace_whatever_leases_last_burst_looked_like(late_ms: int) -> None:
    """Lab (h22lab AFTER run: Redis restarted without data after 3 s, load ~7 on 2 cores): leases' last renewal
    burst before Redis went away reached us, then another node's message 150 ms later. When Redis came back the
    freeze ended (our round trips work again) and the leases-outage grace refused ("a message after our renewal:
    leases is alive"), so 2 of 3 announcers went dark for 1.1 s until leases renewed them. What came before the
    freeze was judged by it already: Redis was down for everybody, nobody could move a VIP."""
    w = World(pm())
    w.peers = {"n2": UP, "n3": UP}
    w.feed(assign(1, vips((V4, 5)), 0.0, members=MEMBERS))
    assert w.run(0.5, check=V4) == []
    w.feed(renew(2, vips((V4, 5)), 0.5, digest=assignments_digest(vips((V4, 5)), (), MEMBERS)))
    assert w.m.state.last_applied_at == 0.5
    w.run(0.5 + late_ms / 1000.0)
    w.feed(renew(7, (), w.t, node="n2", digest="x"))  # the same burst, for another node, late
    w.redis = False
    w.peers = {"n2": DOWN, "n3": DOWN}
    assert w.run(3.5, check=V4) == []  # frozen
    w.redis = True  # back for everybody; leases has not spoken yet (it waits for heartbeats, reloads, ...)
    w.peers = {"n2": peers.REDIS_OK, "n3": peers.REDIS_OK}
    assert w.run(5.0, check=V4) == []
    assert not w.stopped()
    # leases speaks again, for the others only: it is alive and does not name us -> strict expiry
    w.feed(renew(8, (), w.t, node="n2", digest="y"))
    misses = w.run(7.0, check=V4)
    assert misses and misses[0] <= 5.0 + 1.2
    assert [c.reason for _, c in w.stopped()] == ["expired"]


@pytest.mark.parametrize("with_peers", [True, False])
def test_heartbeats_name_the_lan_peers_heard(with_peers: bool) -> None:
    """Leases tells a node whose Redis client is late after a reconnect from a dead one by what the others hear
    on the LAN: every heartbeat lists the peers heard within the peer timeout (None without peers)."""
    from l2lb.core.messages import Heartbeat, decode, encode

    w = World(pm() if with_peers else machine())
    w.peers = {"n2": UP, "n3": UP}
    w.run(1.0)
    w.peers = {"n3": UP}  # n2 falls silent
    w.run(2.0)
    hbs = [(t, c.heartbeat) for t, c in w.cmds if isinstance(c, PublishHeartbeat)]
    assert hbs
    if not with_peers:
        assert all(hb.lan_heard is None for _, hb in hbs)
        return
    assert [hb.lan_heard for t, hb in hbs if 0.5 < t <= 1.0] and all(
        hb.lan_heard == ("n2", "n3") for t, hb in hbs if 0.5 < t <= 1.0)
    assert all(hb.lan_heard == ("n3",) for t, hb in hbs if t >= 1.5)  # n2 dropped after the peer timeout
    last = hbs[-1][1]
    back = decode(encode(last))
    assert isinstance(back, Heartbeat) and back.lan_heard == ("n3",) and back == last


def test_our_frames_clock_never_steps_back_with_the_wall_clock() -> None:
    """Simulator seed 14: NTP stepped two nodes' clocks 30 s back 0.6 s apart. Their frames, stamped with the wall
    clock, looked like replays to every peer for relearn_s (3 s): each took the other's VIPs over while the other
    still answered (1.03 s dual). Frames carry the wall clock at start moved on by the monotonic clock."""
    m = pm()
    view = peers.PeerView("n2", key=KEY)
    stamps = []
    for i in range(1, 41):
        t = i * 0.05
        wall = WALL0 + t - (30.0 if t > 1.0 else 0.0)  # stepped back at 1.0
        for c in m.feed(Tick(t, wall, True)):
            if isinstance(c, SendPeerFrame):
                f = view.receive(c.frame, t + 0.001, WALL0 + t)
                assert f is not None, (t, view.rejected)
                stamps.append(f.wall_ms)
    assert len(stamps) >= 15 and stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 1500
