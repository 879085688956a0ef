"""AnnouncerMachine, rule by rule (see its module docstring): pure, driven with a clock we set. No sockets,
no Redis, no asyncio."""

from __future__ import annotations

from dataclasses import replace

import pytest

from l2lb.core import codec
from l2lb.core.announcer_machine import (
    AnnouncerMachine,
    Command,
    Count,
    Frames,
    Gauge,
    LabelsChanged,
    Log,
    Published,
    PublishHeartbeat,
    ReportConflict,
    RequestSnapshot,
    Resync,
    SendFrames,
    SetMulticast,
    StartAnswering,
    Stop,
    StopAnswering,
    Tick,
)

from .machine_helpers import (
    MAC,
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
    of,
    renew,
    vips,
)


def tick(now: float, bus_ok: bool = True, reads_ok: bool = True) -> Tick:
    return Tick(now, WALL0 + now, bus_ok, reads_ok)


def beat_ok(m: AnnouncerMachine, now: float, entry_ms: int | None = None) -> list[Command]:
    """A heartbeat round trip that worked at ``now`` (Redis's clock = ours + 1e9 ms unless given)."""
    cmds: list[Command] = m.feed(tick(now))
    ms = int(1e9 + now * 1000) if entry_ms is None else entry_ms
    return [*cmds, *m.feed(Published(True, now, f"{ms}-0"))]


# -- rule 1: validity ---------------------------------------------------------------------------------
def test_answers_until_the_deadline_then_stops_and_says_so() -> None:
    m = machine(bus=False)
    m.feed(links(link()))
    cmds = m.feed(assign(1, vips((V4, 5), (V6, 5)), 0.0, ttl_ms=500))
    assert of(cmds, StartAnswering) == [StartAnswering(((V4, 5), (V6, 5)))]
    assert Count("assignments", "applied") in cmds and Gauge("vips", 2) in cmds
    assert of(cmds, SetMulticast) == [SetMulticast("eth0", frozenset({codec.solicited_node_mac(codec.ip_bytes(V6))}))]
    assert answered(m, V4, 0.49) and answered(m, V6, 0.49)
    assert not answered(m, V4, 0.5)  # exactly at the deadline, before any tick
    assert m.next_wakeup(0.3) == pytest.approx(0.0)  # the GARP round of the takeover is due
    m.feed(tick(0.0))
    cmds = m.feed(tick(0.5))
    assert of(cmds, StopAnswering) == [StopAnswering((V4, V6), "expired")]
    assert Count("expiries") in cmds and SetMulticast("eth0", frozenset()) in cmds
    assert any(isinstance(c, Log) and "expired" in c.message for c in cmds)
    assert m.status(0.5)["vips"] == [] and not m.answers(V4, "eth0", 0.5)


def test_renewal_moves_the_deadline_only_when_it_names_our_set() -> None:
    m = machine(bus=False)
    m.feed(links(link()))
    vs = vips((V4, 5))
    m.feed(assign(1, vs, 0.0, ttl_ms=500))
    assert Count("assignments", "renewed") in m.feed(renew(2, vs, 0.4, ttl_ms=500))
    assert answered(m, V4, 0.85)
    cmds = m.feed(renew(3, vips((V4, 6)), 0.85, ttl_ms=500))  # another set: not extended
    assert Count("assignments", "digest_mismatch") in cmds
    assert not answered(m, V4, 0.9)


def test_interfaces_only_answering_ones_and_only_allowed_vips() -> None:
    m = machine(bus=False)
    m.feed(links(link("eth0"), link("eth1", index=3, mac="02:00:00:00:01:02"), link("eth2", index=4, socket=False)))
    m.feed(assign(1, vips((V4, 1), ifaces=("eth1",)) + vips((V4B, 1)), 0.0, ttl_ms=10_000))
    assert answered(m, V4, 0.1, "eth1") and not answered(m, V4, 0.1, "eth0")
    assert answered(m, V4B, 0.1, "eth0") and not answered(m, V4B, 0.1, "eth2")  # no socket on eth2
    assert m.answering_interfaces == frozenset({"eth0", "eth1"})


# -- rule 2: the leases-outage grace --------------------------------------------------------------------
def _graced(**kw: object) -> tuple[AnnouncerMachine, float]:
    """A machine with a set valid until 0.5 s, heartbeats that work, leases silent after 0.0."""
    m = machine(**{"leases_outage_grace_ms": 2000, **kw})
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5)), 0.0, ttl_ms=500))
    for t in (0.0, 0.1, 0.2, 0.3, 0.4):
        beat_ok(m, t)
    return m, 0.5


def test_grace_keeps_answering_while_leases_is_silent_for_every_node() -> None:
    m, t = _graced()
    cmds = m.feed(tick(t))
    assert Gauge("leases_grace", 1) in cmds and not of(cmds, StopAnswering)
    assert any(isinstance(c, Log) and "leases service is down" in c.message for c in cmds)
    assert m.status(t)["leases_grace"]
    now = t
    while now < 2.4:  # heartbeats keep working, ticks every 100 ms: answering all along
        now = round(now + 0.1, 3)
        beat_ok(m, now - 0.05)
        assert not of(m.feed(tick(now)), StopAnswering)
        assert answered(m, V4, now + 0.05)
    # the grace is used up 2 s after it began (at 0.45: checked 50 ms ahead of the deadline)
    cmds = beat_ok(m, 2.5) + m.feed(tick(2.55)) + m.feed(tick(2.65))
    assert of(cmds, StopAnswering) == [StopAnswering((V4,), "expired")] and Gauge("leases_grace", 0) in cmds
    assert not answered(m, V4, 2.65)


@pytest.mark.parametrize("breaker", ["leases_alive", "redis_stale", "bus_not_ok", "link_went_down", "no_bus",
                                     "grace_off", "reads_overdue"])
def test_no_grace_unless_every_condition_holds(breaker: str) -> None:
    m, t = _graced(**({"bus": False} if breaker == "no_bus" else {}),
                   **({"leases_outage_grace_ms": 0} if breaker == "grace_off" else {}))
    bus_ok = True
    if breaker == "leases_alive":  # leases still renews another node: it is alive, just not for us
        m.feed(renew(7, vips(("198.51.100.99", 1)), 0.45, node="n2"))
    elif breaker == "redis_stale":  # no heartbeat round trip for 0.3 s
        t = 0.75
    elif breaker == "bus_not_ok":
        bus_ok = False
    elif breaker == "reads_overdue":  # our writes work but our stream read is stuck: we may be the deaf one
        cmds = m.feed(tick(t, True, False))
        assert of(cmds, StopAnswering) == [StopAnswering((V4,), "expired")] and not answered(m, V4, t)
        return
    elif breaker == "link_went_down":
        m.feed(links(link(up=False), now=0.42))
        m.feed(links(link(), now=0.44))
    cmds = m.feed(tick(t, bus_ok))
    assert of(cmds, StopAnswering) == [StopAnswering((V4,), "expired")]
    assert not answered(m, V4, t)


@pytest.mark.parametrize("last_word_at", [0.2, 0.7])
def test_leases_last_word_before_it_died_does_not_cost_the_grace(last_word_at: float) -> None:
    """Simulator S7: leases renewed us (0.0), published another node's changed set 0.2 s later, and died. Its
    last word is not "alive" at our deadline (0.95 s): nothing for longer than cp_silence_ms (0.5 s) -- grace.
    A message 0.25 s before the deadline is a leases that still speaks (to others, not to us): no grace."""
    m = machine(leases_outage_grace_ms=2000)
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5)), 0.0, ttl_ms=1000))
    t = 0.0
    while t < 0.9:
        beat_ok(m, t)
        if abs(t - last_word_at) < 1e-9:
            m.feed(assign(2, vips(("198.51.100.99", 7)), t, node="n2"))  # another node's changed set
        t = round(t + 0.1, 3)
    cmds = beat_ok(m, 0.95)
    kept = last_word_at < 0.5
    assert (Gauge("leases_grace", 1) in cmds) is kept
    m.feed(tick(1.05))
    assert answered(m, V4, 1.05) is kept


def test_grace_ends_when_leases_renews_us_again() -> None:
    m, t = _graced()
    m.feed(tick(t))
    cmds = m.feed(renew(2, vips((V4, 5)), 0.55, ttl_ms=500))
    assert Gauge("leases_grace", 0) in cmds and Count("assignments", "renewed") in cmds
    assert not m.status(0.55)["leases_grace"] and answered(m, V4, 1.0)


# -- rule 3: stop at once -----------------------------------------------------------------------------------
def test_a_newer_set_without_the_vip_stops_it_at_once() -> None:
    m = machine(bus=False)
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5), (V4B, 5)), 0.0, ttl_ms=10_000))
    cmds = m.feed(assign(2, vips((V4B, 5)), 0.1, ttl_ms=10_000))
    assert of(cmds, StopAnswering) == [StopAnswering((V4,), "reassigned")] and not of(cmds, StartAnswering)
    assert not answered(m, V4, 0.1) and answered(m, V4B, 0.1)
    cmds = m.feed(assign(3, vips((V4B, 6)), 0.2, ttl_ms=10_000))  # new epoch: a takeover of its own
    assert of(cmds, StopAnswering) == [StopAnswering((V4B,), "reassigned")]
    assert of(cmds, StartAnswering) == [StartAnswering(((V4B, 6),))]


def test_a_higher_epoch_elsewhere_stops_it_at_once() -> None:
    m = machine()
    m.feed(links(link()))
    vs = vips((V4, 5), (V6, 5))
    m.feed(assign(1, vs, 0.0, ttl_ms=10_000))
    # the same or a lower epoch elsewhere is older than ours: nothing happens
    assert not of(m.feed(assign(1, vips((V4, 5)), 0.1, node="n2")), StopAnswering)
    assert not of(m.feed(assign(2, vips((V4, 4)), 0.1, node="n2")), StopAnswering)
    assert answered(m, V4, 0.1)
    cmds = m.feed(assign(3, vips((V4, 6), ("198.51.100.77", 9)), 0.2, node="n2"))
    assert of(cmds, StopAnswering) == [StopAnswering((V4,), "superseded")]
    assert SetMulticast("eth0", frozenset({codec.solicited_node_mac(codec.ip_bytes(V6))})) in cmds
    assert not answered(m, V4, 0.2) and answered(m, V6, 0.2)
    assert m.status(0.2)["vips"][0]["ip"] == V6
    # the renewal of the set leases gave us no longer names what we hold: ask for the full set
    cmds = m.feed(renew(2, vs, 0.3, ttl_ms=10_000))
    assert Count("assignments", "digest_mismatch") in cmds and of(cmds, RequestSnapshot)


# -- rule 4: backlog ------------------------------------------------------------------------------------------
def test_backlog_by_redis_clock_and_by_sender_clock_is_ignored() -> None:
    m = machine()
    m.feed(links(link()))
    beat_ok(m, 10.0, entry_ms=5_000_000)  # Redis said 5_000_000 ms when our clock read 10.0
    # stored 1.2 s before Redis's "now" with a 1 s ttl: a replay of what we missed
    cmds = m.feed(assign(1, vips((V4, 5)), 10.5, entry_id="4999300-0"))
    assert cmds == [Count("assignments", "backlog")] and not answered(m, V4, 10.5)
    cmds = m.feed(assign(2, vips((V4, 5)), 10.5, entry_id="5000400-0"))  # 100 ms old: fine
    assert of(cmds, StartAnswering) and answered(m, V4, 10.5)
    # a sender clock 7 s behind (ttl 1 s + 5 s skew allowed): ignored, warned about once per 30 s
    old = assign(3, vips(), 11.0)
    stale = replace(old, msg=replace(old.msg, sent_at=WALL0 + 4.0))
    cmds = m.feed(stale)
    assert Count("assignments", "too_old") in cmds and of(cmds, Log) and answered(m, V4, 11.0)
    cmds = m.feed(replace(stale, now=20.0, wall=WALL0 + 20.0))
    assert Count("assignments", "too_old") in cmds and not of(cmds, Log)
    assert of(m.feed(replace(stale, now=42.0, wall=WALL0 + 42.0)), Log)


def test_a_message_read_late_is_valid_for_its_ttl_from_when_leases_sent_it() -> None:
    """bench/chaos --kinds loss (2026-12-06): node-1's reads stalled behind a lossy link's TCP retransmissions; a
    full set leases had sent 0.4 s earlier, still naming a VIP leases had since moved to node-3, arrived and was
    valid for a whole second from its reading: 1.9 s of dual answers. Validity runs from Redis's time of the
    entry (the age the backlog rule measures), so leases' move is safe once the old holder's last message
    has run out, whenever it was read."""
    m = machine()
    m.feed(links(link()))
    beat_ok(m, 10.0, entry_ms=5_000_000)
    m.feed(assign(1, vips((V4, 5)), 10.4, entry_id="5000000-0"))  # stored 0.4 s before we read it
    assert answered(m, V4, 10.95) and not answered(m, V4, 11.0)  # valid until 10.0 + 1 s, not 10.4 + 1 s
    m.feed(assign(2, vips((V4, 5)), 11.5, entry_id="5001500-0"))  # read at once: a full second
    m.feed(renew(3, vips((V4, 5)), 12.3, entry_id="5002000-0"))  # a renewal read 0.3 s late
    assert answered(m, V4, 12.95) and not answered(m, V4, 13.05)
    assert m.status(12.3)["vips"] and 0.69 <= m.status(12.3)["remaining_s"] <= 0.71


def test_static_assignments_skip_the_backlog_checks_and_leases_liveness() -> None:
    m = machine(bus=False)
    m.feed(links(link()))
    ev = assign(1, vips((V4, 1)), 5.0)
    heard = m.leases_heard_at
    cmds = m.feed(replace(ev, msg=replace(ev.msg, term=0, sent_at=0.0), source="file:/x.json"))
    assert of(cmds, StartAnswering) and m.leases_heard_at == heard


# -- rule 5: asking for the full set -----------------------------------------------------------------------
def test_unmatched_renewals_ask_for_the_full_set_at_most_once_per_second() -> None:
    m = machine()
    asks = []
    for i in range(25):
        now = i * 0.1
        cmds = m.feed(renew(i + 1, vips((V4, 5)), now))
        asks += [(now, c.reason) for c in of(cmds, RequestSnapshot)]
    assert [a for a, _ in asks] == pytest.approx([0.0, 1.0, 2.0]) and {r for _, r in asks} == {"digest_mismatch"}
    assert of(m.feed(Resync("stream_trimmed", 2.5)), RequestSnapshot) == [RequestSnapshot("stream_trimmed")]
    assert not of(machine(bus=False).feed(renew(1, vips((V4, 5)), 0.0)), RequestSnapshot)


def test_while_the_set_is_valid_but_runs_out_soon_the_full_set_is_asked_every_250_ms() -> None:
    """Simulator seed 26: a set whose renewals stopped matching (a peer's claim had stopped one of its VIPs)
    asked once, and expired before the once-per-second limit let it ask again: 6.5 s dark while leases was
    alive. While the set is valid and would expire within a second, asking every 250 ms; once expired, 1/s."""
    m = machine()
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5)), 0.0))  # valid until 1.0
    asks = []
    for i in range(1, 26):
        now = round(i * 0.1, 3)
        cmds = m.feed(renew(i + 1, vips((V4, 6)), now))  # another epoch: the digest does not match
        if of(cmds, RequestSnapshot):
            asks.append(now)
    assert asks == pytest.approx([0.1, 0.4, 0.7, 1.7])  # the set expired at 1.0: back to once per second


# -- rule 6: gratuitous announcements ---------------------------------------------------------------------
def test_garp_burst_schedule() -> None:
    m = machine(bus=False, garp_count=3, garp_interval_ms=1000)
    m.feed(links(link(), link("eth1", index=3, mac="02:00:00:00:01:02")))
    m.feed(assign(1, vips((V4, 5), (V6, 5)), 0.0, ttl_ms=100_000))
    rounds: list[tuple[float, str, list[str]]] = []
    t = 0.0
    while t < 6.0:
        for c in of(m.feed(tick(t)), SendFrames):
            rounds.append((t, c.iface, garp_targets(c.frames)))
        nxt = m.next_wakeup(t)
        assert nxt is not None
        t = max(round(nxt, 6), round(t + 0.25, 6)) if nxt <= t else round(nxt, 6)
    per_iface = {(when, iface): sorted(ts) for when, iface, ts in rounds}
    assert per_iface == {(float(r), i): sorted([V4, V4, V6]) for r in range(3) for i in ("eth0", "eth1")}
    # an interface that comes back up is announced on again (that interface only), a new epoch everywhere
    m.feed(links(link(), link("eth1", up=False, index=3), now=10.0))
    m.feed(links(link(), link("eth1", index=3, mac="02:00:00:00:01:02"), now=10.5))
    sent = of(m.feed(tick(10.5)), SendFrames)
    assert [c.iface for c in sent] == ["eth1"] and sorted(garp_targets(sent[0].frames)) == [V4, V4, V6]
    m.feed(tick(11.5))
    m.feed(tick(12.5))
    m.feed(assign(2, vips((V4, 6), (V6, 5)), 13.0, ttl_ms=100_000))
    sent = of(m.feed(tick(13.0)), SendFrames)
    assert {c.iface for c in sent} == {"eth0", "eth1"} and all(garp_targets(c.frames) == [V4, V4] for c in sent)


def test_no_garp_after_expiry_and_none_for_a_set_we_lost() -> None:
    m = machine(bus=False, garp_count=5, garp_interval_ms=1000)
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5)), 0.0, ttl_ms=1500))
    assert of(m.feed(tick(0.0)), SendFrames)
    assert of(m.feed(tick(1.0)), SendFrames)
    cmds = m.feed(tick(2.0))
    assert of(cmds, StopAnswering) and not of(cmds, SendFrames)
    assert m.next_wakeup(2.0) is None  # bus=False: no heartbeats either
    assert not of(m.feed(tick(3.0)), SendFrames)


# -- rule 7: conflicts -------------------------------------------------------------------------------------
def test_conflict_defended_at_most_once_per_10_s_and_reported() -> None:
    m = machine()
    m.feed(links(link()))
    m.feed(assign(1, vips((V4, 5), (V6, 5)), 0.0, ttl_ms=100_000))
    claim4 = codec.build_garp_request(OTHER, codec.ip_bytes(V4))
    claim6 = codec.build_unsolicited_na(OTHER, codec.ip_bytes(V6))
    got = []
    for t in (1.0, 2.0, 5.0, 10.99, 11.0, 15.0, 21.0):
        cmds = m.feed(Frames("eth0", (claim4, claim6), t))
        sends = of(cmds, SendFrames)
        got.append((t, sorted(garp_targets(sends[0].frames)) if sends else [],
                    sorted(c.conflict.ip for c in of(cmds, ReportConflict))))
    assert got == [
        (1.0, [V4, V4, V6], [V4, V6]), (2.0, [], []), (5.0, [], []), (10.99, [], []),
        (11.0, [V4, V4, V6], [V4, V6]), (15.0, [], []), (21.0, [V4, V4, V6], [V4, V6]),
    ]
    rep = of(m.feed(Frames("eth0", (claim4,), 31.5)), ReportConflict)[0].conflict
    assert (rep.node, rep.ip, rep.our_mac, rep.their_mac, rep.interface, rep.defended) == (
        "n1", V4, MAC, codec.mac_text(OTHER), "eth0", True)
    assert rep.at == pytest.approx(WALL0 + 31.5)  # wall time from the last event carrying both clocks
    # the conflicts ride on the next heartbeat, which is due at once
    assert m.next_wakeup(31.5) == float("-inf")
    pub = of(m.feed(tick(31.6)), PublishHeartbeat)[0]
    assert [c.ip for c in pub.conflicts] == [V4, V6, V4, V6, V4, V6, V4]
    # Redis took the first three, then failed: the rest go with the next heartbeat
    m.feed(Published(False, 31.7, "1000-0", conflicts_sent=3, error="down"))
    assert m.pending_conflicts == 4
    assert [c.ip for c in of(m.feed(tick(31.9)), PublishHeartbeat)[0].conflicts] == [V6, V4, V6, V4]


# -- rule 8: heartbeats ----------------------------------------------------------------------------------
def test_heartbeat_schedule_and_content() -> None:
    m = machine(heartbeat_interval_ms=100, labels={"zone": "a"})
    m.feed(links(link(), link("eth9", up=False, socket=False, index=9, mac="02:00:00:00:09:09")))
    m.feed(LabelsChanged({"zone": "k8s", "rack": "r1"}, 0.0))
    pub = of(m.feed(tick(0.0)), PublishHeartbeat)
    assert len(pub) == 1
    hb = pub[0].heartbeat
    assert (hb.node, hb.instance, hb.seq, hb.sent_at, hb.interval_ms) == ("n1", "test0001", 1, WALL0, 100)
    assert hb.labels == {"zone": "a", "rack": "r1"}  # --node-labels win over the Node's
    assert [(i.name, i.up) for i in hb.interfaces] == [("eth0", True), ("eth9", False)]
    assert m.next_wakeup(0.05) is None  # one outstanding at a time
    assert not of(m.feed(tick(0.2)), PublishHeartbeat)
    m.feed(assign(1, vips((V4, 5)), 0.25))  # a change while it is outstanding
    m.feed(Published(True, 0.3, "1000-0"))
    hb2 = of(m.feed(tick(0.3)), PublishHeartbeat)[0].heartbeat  # at once, not 100 ms later
    assert hb2.seq == 2 and hb2.serving == {V4: 5} and not hb2.serving_omitted
    m.feed(Published(True, 0.31, "1010-0"))
    assert m.next_wakeup(0.31) == pytest.approx(0.41)
    assert not of(m.feed(tick(0.4)), PublishHeartbeat)
    cmds = m.feed(Stop(0.5, WALL0 + 0.5))
    assert of(cmds, StopAnswering) == [StopAnswering((V4,), "stopping")]
    last = of(cmds, PublishHeartbeat)[0].heartbeat
    assert last.stopping and last.serving == {} and not answered(m, V4, 0.5)
    assert not of(m.feed(tick(0.7)), PublishHeartbeat)  # nothing after the last one


def test_no_bus_no_heartbeats() -> None:
    m = machine(bus=False)
    m.feed(links(link()))
    assert m.next_wakeup(0.0) is None and not of(m.feed(tick(0.0)), PublishHeartbeat)
    assert not of(m.feed(Stop(1.0, WALL0 + 1.0)), PublishHeartbeat)


def test_grace_leaves_no_gap_when_the_timer_runs_late() -> None:
    """Regression: the grace used to extend the set only once its deadline had passed, so requests that came
    between the deadline and the (late) timer run went unanswered, every 100 ms of the grace. Ticks here come
    5 ms after the machine asked for them; requests every 5 ms are all answered."""
    m, _ = _graced()
    t = 0.4
    next_tick = m.next_wakeup(t)
    misses = []
    while t < 2.0:
        t = round(t + 0.005, 3)
        if next_tick is not None and t >= next_tick + 0.005:
            beat_ok(m, t)  # heartbeats work all along
            m.feed(tick(t))
            next_tick = m.next_wakeup(t)
        if not answered(m, V4, t):
            misses.append(t)
    assert misses == []


def test_a_leases_whose_clock_is_behind_is_not_backlog_once_we_know_redis_clock() -> None:
    """Regression (simulator F3): a leases leader 30 s behind made every announcer with a correct clock drop
    its assignments (sent_at older than ttl + skew) -> the whole LAN dark. With Redis's clock known from our
    own heartbeats, the entry's age on Redis's clock decides alone."""
    m = machine()
    m.feed(links(link()))
    cmds = m.feed(replace(assign(1, vips((V4, 5)), 1.0), wall=WALL0 + 31.0))  # before any round trip: sender clock
    assert Count("assignments", "too_old") in cmds and not answered(m, V4, 1.0)
    beat_ok(m, 2.0, entry_ms=7_000_000)
    ev = assign(2, vips((V4, 5)), 2.1, entry_id="7000050-0")  # stored 50 ms ago on Redis's clock
    cmds = m.feed(replace(ev, msg=replace(ev.msg, sent_at=WALL0 + 2.1 - 30.0)))  # sender 30 s behind
    assert of(cmds, StartAnswering) and answered(m, V4, 2.1)
    # a real backlog entry is still refused, whatever its sender's clock says
    ev = assign(3, vips((V4B, 5)), 2.2, entry_id="6998000-0")
    assert m.feed(ev) == [Count("assignments", "backlog")]
