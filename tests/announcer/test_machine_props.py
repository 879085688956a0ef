"""AnnouncerMachine under random event sequences (hypothesis), each property checked after every event
against an oracle that recomputes the rule from the events alone:

* never answers after validity unless a grace rule held at a timer check less than 100 ms before;
* stops at once when a set for another node names a VIP with a higher epoch;
* announces (GARP / unsolicited NA) only VIPs it answers for, on interfaces where it answers;
* defends a VIP at most once per defend interval, and reports every defence;
* deterministic: the same events give the same commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core import codec
from l2lb.core.announcer_machine import (
    Assignments,
    Command,
    Count,
    Event,
    Frames,
    LinksChanged,
    Published,
    PublishHeartbeat,
    Renewal,
    ReportConflict,
    SendFrames,
    StopAnswering,
    Tick,
)

from .machine_helpers import (
    OTHER,
    V4,
    V4B,
    V6,
    WALL0,
    answered,
    assign,
    garp_targets,
    link,
    links,
    machine,
    renew,
    vips,
)

IPS = [V4, V4B, V6]
GRACE_STEP = 0.1
FRESH = 0.3  # max(300 ms, 3 heartbeat intervals of 100 ms)
CP_SILENCE = 0.5  # cp_silence_ms: leases that said nothing for this long is silent, whatever it said last

step = st.one_of(
    st.tuples(st.just("assign_me"), st.lists(st.tuples(st.sampled_from(IPS), st.integers(1, 4)), max_size=3,
                                             unique_by=lambda p: p[0]), st.sampled_from([300, 500, 1000])),
    st.tuples(st.just("renew_me"), st.booleans(), st.sampled_from([300, 500, 1000])),
    st.tuples(st.just("assign_other"), st.lists(st.tuples(st.sampled_from(IPS), st.integers(1, 6)), max_size=2,
                                                unique_by=lambda p: p[0])),
    st.tuples(st.just("renew_other")),
    st.tuples(st.just("published"), st.booleans()),
    st.tuples(st.just("tick"), st.booleans()),
    st.tuples(st.just("tick"), st.just(True)),
    st.tuples(st.just("link"), st.booleans()),
    st.tuples(st.just("claim"), st.sampled_from(IPS)),
)
# (time step, event, then a heartbeat round trip + timer run at the same time: the common case in production)
timed = st.tuples(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.1, 0.2, 0.4, 1.1]), step, st.booleans())


def build(steps: list[tuple[float, tuple[Any, ...], bool]]) -> list[Event]:
    """The event sequence of ``steps`` (messages with strictly increasing seq, as one leases term sends)."""
    events: list[Event] = [links(link())]
    t, mine = 0.0, vips()
    for seq, (dt, s, beat) in enumerate(steps, start=1):
        t = round(t + dt, 3)
        if beat:
            events.append(Published(True, t, f"{int(1e9 + t * 1000)}-0"))
            events.append(Tick(t, WALL0 + t, True))
        kind = s[0]
        if kind == "assign_me":
            mine = vips(*s[1])
            events.append(assign(seq, mine, t, ttl_ms=s[2]))
        elif kind == "renew_me":
            events.append(renew(seq, mine if s[1] else vips((V4, 9)), t, ttl_ms=s[2]))
        elif kind == "assign_other":
            events.append(assign(seq, vips(*s[1]), t, node="n2"))
        elif kind == "renew_other":
            events.append(renew(seq, vips(), t, node="n2"))
        elif kind == "published":
            events.append(Published(s[1], t, f"{int(1e9 + t * 1000)}-0"))
        elif kind == "tick":
            events.append(Tick(t, WALL0 + t, s[1]))
        elif kind == "link":
            events.append(links(link(up=s[1]), now=t))
        elif kind == "claim":
            events.append(Frames("eth0", (codec.build_garp_request(OTHER, codec.ip_bytes(s[1])),), t))
    return events


def _now(ev: Event) -> float:
    return float(ev.now)


@dataclass
class Oracle:
    """Recomputes, from the events and the machine's acceptance of its own messages, when answering is allowed."""

    grace: bool
    valid_until: float = float("-inf")
    last_accept: float | None = None
    last_any: float = 0.0
    last_publish_ok: float | None = None
    link_down_at: float | None = None
    answering_link: bool = True
    grace_checks: list[float] = field(default_factory=list)
    epochs: dict[str, int] = field(default_factory=dict)  # what we answer with, per IP

    def before(self, ev: Event) -> None:
        """Facts known before the machine sees ``ev``."""
        if isinstance(ev, Tick) and self._grace_holds(ev):
            self.grace_checks.append(ev.now)

    def after(self, ev: Event, cmds: list[Command], ttl_ms: int | None) -> None:
        now = _now(ev)
        if isinstance(ev, Renewal) or (isinstance(ev, Assignments) and ev.source == "bus"):
            self.last_any = now  # leases is alive
        if any(isinstance(c, Count) and c.name == "assignments" and c.label in ("applied", "renewed", "term_reset")
               for c in cmds):
            assert ttl_ms is not None
            self.last_accept = now
            self.valid_until = now + ttl_ms / 1000.0
        if isinstance(ev, Published) and ev.ok:
            self.last_publish_ok = now
        if isinstance(ev, LinksChanged):
            up = ev.links[0].answering
            if self.answering_link and not up:
                self.link_down_at = now
            self.answering_link = up

    def _grace_holds(self, ev: Tick) -> bool:
        if not self.grace or not ev.bus_ok or self.last_accept is None:
            return False
        if self.last_publish_ok is None or ev.now - self.last_publish_ok > FRESH:
            return False
        if self.link_down_at is not None and self.link_down_at >= self.last_accept:
            return False
        # leases is down: nothing for any node after our last accepted set's burst, or nothing at all for
        # cp_silence_ms (its last word before it died does not keep it alive: simulator S7)
        return self.last_any <= self.last_accept + 0.1 or ev.now - self.last_any >= CP_SILENCE

    def may_answer(self, t: float) -> bool:
        return t < self.valid_until or any(t - g < GRACE_STEP for g in self.grace_checks)


def _ttl(ev: Event) -> int | None:
    msg = getattr(ev, "msg", None)
    return None if msg is None else int(msg.ttl_ms)


@settings(max_examples=300, deadline=None)
@given(st.lists(timed, max_size=40), st.booleans())
def test_never_answers_after_validity_unless_a_grace_rule_held(steps: list[tuple[float, tuple[Any, ...], bool]],
                                                               grace: bool) -> None:
    m = machine(leases_outage_grace_ms=60_000 if grace else 0, garp_count=3, garp_interval_ms=300)
    oracle = Oracle(grace)
    for ev in build(steps):
        oracle.before(ev)
        cmds = m.feed(ev)
        oracle.after(ev, cmds, _ttl(ev))
        t = _now(ev)
        for ip in IPS:
            if answered(m, ip, t):
                assert oracle.may_answer(t), (ip, t, oracle)
            assert answered(m, ip, t) == m.answers(ip, "eth0", t)


@settings(max_examples=300, deadline=None)
@given(st.lists(timed, max_size=40))
def test_stops_at_once_on_a_higher_epoch_elsewhere(steps: list[tuple[float, tuple[Any, ...], bool]]) -> None:
    m = machine()
    for ev in build(steps):
        before = {v["ip"]: v["epoch"] for v in m.status(_now(ev))["vips"]}
        cmds = m.feed(ev)
        if isinstance(ev, Assignments) and ev.msg.node != "n1":
            higher = {v.ip for v in ev.msg.vips if v.ip in before and v.epoch > before[v.ip]}
            for ip in higher:
                assert not answered(m, ip, ev.now), (ip, ev)
            stopped = {ip for c in cmds if isinstance(c, StopAnswering) for ip in c.ips}
            assert stopped == higher


@settings(max_examples=300, deadline=None)
@given(st.lists(timed, max_size=40))
def test_announces_only_what_it_answers_and_defends_at_most_once_per_interval(
        steps: list[tuple[float, tuple[Any, ...], bool]]) -> None:
    m = machine(garp_count=3, garp_interval_ms=300, defend_interval_ms=1000)
    last_defence: dict[str, float] = {}
    for ev in build(steps):
        cmds = m.feed(ev)
        t = _now(ev)
        for c in cmds:
            if isinstance(c, StopAnswering):
                for ip in c.ips:  # a VIP taken anew may be defended anew
                    last_defence.pop(ip, None)
        if isinstance(ev, Tick):
            for c in cmds:
                if isinstance(c, SendFrames):
                    for ip in garp_targets(c.frames):
                        assert m.answers(ip, c.iface, t), (ip, t)
        if isinstance(ev, Frames):
            reports = [c.conflict for c in cmds if isinstance(c, ReportConflict)]
            defended = {ip for c in cmds if isinstance(c, SendFrames) for ip in garp_targets(c.frames)}
            assert {r.ip for r in reports} == defended
            for r in reports:
                prev = last_defence.get(r.ip)
                assert prev is None or t - prev >= 1.0 - 1e-9, (r.ip, prev, t)
                last_defence[r.ip] = t


@settings(max_examples=100, deadline=None)
@given(st.lists(timed, max_size=40))
def test_deterministic(steps: list[tuple[float, tuple[Any, ...], bool]]) -> None:
    events = build(steps)
    runs: list[list[object]] = []
    for _ in range(2):
        m = machine()
        out: list[object] = []
        for ev in events:
            out.extend(m.feed(ev))
            out.append(m.next_wakeup(_now(ev)))
        runs.append(out)
    assert runs[0] == runs[1]
    hbs = [c for c in runs[0] if isinstance(c, PublishHeartbeat)]
    assert [h.heartbeat.seq for h in hbs] == list(range(1, len(hbs) + 1))
