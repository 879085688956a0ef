"""Several AnnouncerMachines on one simulated LAN (their peer frames delivered to each other), a scripted
leases (full sets with members/standby, renewals every 250 ms, ttl 1 s), heartbeats that reach Redis while it
is up. Pure: one virtual clock, every 10 ms. What the real-wire tests measure, without the wire."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.announcer_machine import (
    AnnouncerMachine,
    Command,
    Published,
    PublishHeartbeat,
    SendPeerFrame,
    Tick,
)
from l2lb.core.messages import StandbyVip, VipAssignment, assignments_digest

from .machine_helpers import KEY, WALL0, answered, assign, link, links, machine, renew

NODES = ("n1", "n2", "n3")
VIPS = {"n1": "198.51.100.11", "n2": "198.51.100.12", "n3": "198.51.100.13"}
EPOCH = 100


@dataclass
class Cluster:
    ms: dict[str, AnnouncerMachine] = field(default_factory=dict)
    t: float = 0.0
    redis: bool = True
    leases: bool = True
    dead: set[str] = field(default_factory=set)
    seq: int = 0
    sent: dict[str, float] = field(default_factory=dict)  # last renewal time
    frames: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def build(cls) -> Cluster:
        c = cls()
        for i, n in enumerate(NODES):
            m = machine(node=n, instance=f"i-{n}", peers=True, peer_key=KEY)
            m.feed(links(link(mac=f"02:00:00:00:01:0{i + 1}")))
            c.ms[n] = m
        c.full()
        return c

    def sets(self, n: str) -> tuple[tuple[VipAssignment, ...], tuple[StandbyVip, ...]]:
        vs = (VipAssignment(VIPS[n], EPOCH),)
        others = [o for o in NODES if o != n]
        sb = tuple(StandbyVip(VIPS[o], o, 1 if NODES.index(n) == (NODES.index(o) + 1) % 3 else 2,
                              EPOCH + (1 if NODES.index(n) == (NODES.index(o) + 1) % 3 else 2)) for o in others)
        return vs, sb

    def full(self) -> None:
        for n in NODES:
            self.seq += 1
            vs, sb = self.sets(n)
            self.do(n, self.ms[n].feed(assign(self.seq, vs, self.t, node=n, members=NODES, standby=sb)))

    def do(self, n: str, cmds: list[Command]) -> None:
        for c in cmds:
            if isinstance(c, PublishHeartbeat):
                ok = self.redis
                self.do(n, self.ms[n].feed(Published(ok, self.t, f"{int(1e9 + self.t * 1000)}-0" if ok else "")))
            elif isinstance(c, SendPeerFrame):
                self.frames.append((n, c.frame))

    def step(self) -> None:
        self.t = round(self.t + 0.01, 3)
        if self.redis and self.leases and round(self.t * 100) % 25 == 0:
            for n in NODES:
                if n in self.dead:
                    continue
                self.seq += 1
                vs, sb = self.sets(n)
                d = assignments_digest(vs, sb, NODES)
                self.do(n, self.ms[n].feed(renew(self.seq, vs, self.t, node=n, digest=d)))
        frames, self.frames = self.frames, []
        for src, raw in frames:
            for n in NODES:
                if n != src and n not in self.dead and src not in self.dead:
                    from l2lb.core.announcer_machine import PeerFrameReceived

                    self.do(n, self.ms[n].feed(PeerFrameReceived("eth0", raw, self.t, WALL0 + self.t)))
        for n in NODES:
            if n in self.dead:
                continue
            m = self.ms[n]
            nxt = m.next_wakeup(self.t)
            if nxt is not None and nxt <= self.t + 1e-9:
                self.do(n, m.feed(Tick(self.t, WALL0 + self.t, self.redis)))

    def answering(self) -> dict[str, set[str]]:
        """VIP -> the nodes answering it now."""
        out: dict[str, set[str]] = {v: set() for v in VIPS.values()}
        for n in NODES:
            if n in self.dead:
                continue
            for v in VIPS.values():
                if answered(self.ms[n], v, self.t):
                    out[v].add(n)
        return out

    def run(self, until: float) -> list[tuple[float, str, frozenset[str]]]:
        """Steps to ``until``; (time, vip, answering nodes) whenever a VIP is answered by != 1 node."""
        bad = []
        while self.t < until - 1e-9:
            self.step()
            for v, ns in self.answering().items():
                if len(ns) != 1:
                    bad.append((self.t, v, frozenset(ns)))
        return bad


def test_redis_killed_for_five_seconds_no_vip_goes_dark() -> None:
    c = Cluster.build()
    assert c.run(2.0) == []
    c.redis = False  # Redis dies for everybody (leases cannot publish either)
    assert c.run(7.0) == []
    c.redis = True
    c.full()
    assert c.run(9.0) == []


def test_holder_and_control_plane_die_successor_answers_within_a_second() -> None:
    c = Cluster.build()
    assert c.run(2.0) == []
    c.redis = False
    c.dead.add("n1")  # with it the control plane (Redis, leases)
    bad = c.run(6.0)
    dark = [t for t, v, ns in bad if v == VIPS["n1"] and not ns]
    assert dark and max(dark) - 2.0 <= 1.0, bad
    assert all(v == VIPS["n1"] and not ns for _, v, ns in bad), bad  # no dual, no other VIP dark
    assert c.answering()[VIPS["n1"]] == {"n2"}  # its rank-1 successor


def test_a_node_cut_off_from_redis_and_peers_stops_within_ttl() -> None:
    c = Cluster.build()
    assert c.run(2.0) == []
    # n3 is cut off from everything: it hears no frames, its Redis fails; the others see it as dead
    c.dead.add("n3")
    m3 = c.ms["n3"]
    t = c.t
    while t < 3.5:
        t = round(t + 0.01, 3)
        cmds = m3.feed(Tick(t, WALL0 + t, False))
        for cmd in cmds:
            if isinstance(cmd, PublishHeartbeat):
                m3.feed(Published(False, t, "", error="down"))
        if not answered(m3, VIPS["n3"], t):
            break
    assert t - 2.0 <= 1.0 + 0.01  # within the validity window of its last renewal


def _cut_off_step(c: Cluster, cut: set[str]) -> None:
    """One 10 ms step in which the nodes in ``cut`` hear nobody and nobody hears them; their Redis fails."""
    c.t = round(c.t + 0.01, 3)
    if c.redis and c.leases and round(c.t * 100) % 25 == 0:
        for n in NODES:
            if n in c.dead or n in cut:
                continue
            c.seq += 1
            vs, sb = c.sets(n)
            c.do(n, c.ms[n].feed(renew(c.seq, vs, c.t, node=n, digest=assignments_digest(vs, sb, NODES))))
    frames, c.frames = c.frames, []
    for src, raw in frames:
        if src in cut or src in c.dead:
            continue
        for n in NODES:
            if n != src and n not in c.dead and n not in cut:
                from l2lb.core.announcer_machine import PeerFrameReceived

                c.do(n, c.ms[n].feed(PeerFrameReceived("eth0", raw, c.t, WALL0 + c.t)))
    for n in NODES:
        if n in c.dead:
            continue
        m = c.ms[n]
        nxt = m.next_wakeup(c.t)
        if nxt is not None and nxt <= c.t + 1e-9:
            redis = c.redis and n not in cut
            for cmd in m.feed(Tick(c.t, WALL0 + c.t, redis)):
                if isinstance(cmd, PublishHeartbeat):
                    m.feed(Published(redis, c.t, f"{int(1e9 + c.t * 1000)}-0" if redis else ""))
                elif isinstance(cmd, SendPeerFrame):
                    c.frames.append((n, cmd.frame))


fault = st.tuples(st.sampled_from(["redis", "leases", "kill", "cut", "heal"]), st.sampled_from(NODES),
                  st.sampled_from([0.05, 0.2, 0.5, 1.0, 2.0]))


@settings(max_examples=40, deadline=None)
@given(st.lists(fault, min_size=1, max_size=8))
def test_dual_answering_never_outlasts_the_validity_window(faults: list[tuple[str, str, float]]) -> None:
    """Random Redis outages, leases deaths, node deaths and nodes cut off from everything (Redis and peers):
    a VIP is answered by two nodes at once for at most ttl (1 s) + one grace step (the fencing argument)."""
    c = Cluster.build()
    c.run(1.5)
    cut: set[str] = set()
    dual_since: dict[str, float] = {}
    worst = 0.0
    for kind, node, dt in faults:
        if kind == "redis":
            c.redis = not c.redis
        elif kind == "leases":
            c.leases = not c.leases
        elif kind == "kill" and len(c.dead) < 1:
            c.dead.add(node)
        elif kind == "cut" and not cut:
            cut.add(node)
        elif kind == "heal":
            cut.clear()
        end = c.t + dt
        while c.t < end - 1e-9:
            _cut_off_step(c, cut)
            for v, ns in c.answering().items():
                if len(ns) > 1:
                    dual_since.setdefault(v, c.t)
                    worst = max(worst, c.t - dual_since[v])
                else:
                    dual_since.pop(v, None)
    assert worst <= 1.1, (worst, faults)
