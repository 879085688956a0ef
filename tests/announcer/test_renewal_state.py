"""AnnouncerState.renew: digest renewals extend a matching, still valid set and never change it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.announce import AnnouncerState
from l2lb.core.messages import NodeAssignments, NodeRenewal, VipAssignment, assignments_digest

V4 = "198.51.100.10"
V6 = "2001:db8::10"


def full(seq: int, vips: list[tuple[str, int]], *, term: int = 1, ttl_ms: int = 1000, node: str = "n1",
         digest: str | None = None) -> NodeAssignments:
    vs = tuple(VipAssignment(ip, ep) for ip, ep in vips)
    return NodeAssignments(node=node, term=term, seq=seq, ttl_ms=ttl_ms, sent_at=0.0, vips=vs,
                           digest=assignments_digest(vs) if digest is None else digest)


def ren(seq: int, digest: str, *, term: int = 1, ttl_ms: int = 1000, node: str = "n1") -> NodeRenewal:
    return NodeRenewal(node=node, term=term, seq=seq, ttl_ms=ttl_ms, sent_at=0.0, digest=digest)


def test_matching_renewal_extends_validity() -> None:
    s = AnnouncerState("n1")
    m = full(1, [(V4, 1), (V6, 1)])
    assert s.apply(m, 10.0).accepted and s.digest == m.digest
    ch = s.renew(ren(2, m.digest), 10.9)
    assert ch.accepted and ch.reason == "renewed" and not ch.added and not ch.removed
    assert s.deadline == 10.9 + 1.0 and s.last_order == (1, 2) and s.last_applied_at == 10.9
    assert s.serving(11.5) == {V4: 1, V6: 1}  # past the first message's ttl, still valid
    assert s.expire(11.5) == ()
    assert s.serving(12.0) == {}  # renewals extend by ttl_ms from receipt, no more


def test_wrong_digest_does_not_extend_and_vips_expire() -> None:
    s = AnnouncerState("n1")
    m = full(1, [(V4, 1)])
    s.apply(m, 0.0)
    other = assignments_digest((VipAssignment(V4, 2),))  # same IP, another epoch: another set
    for i, t in enumerate((0.3, 0.6, 0.9)):
        assert s.renew(ren(2 + i, other), t).reason == "digest_mismatch"
    assert s.deadline == 1.0 and s.last_order == (1, 1)
    assert [v.ip for v in s.expire(1.0)] == [V4] and s.serving(1.0) == {}


def test_expired_set_is_not_resurrected() -> None:
    s = AnnouncerState("n1")
    m = full(1, [(V4, 1)], ttl_ms=500)
    s.apply(m, 0.0)
    # past the deadline, before expire() ran: still refused
    assert s.renew(ren(2, m.digest), 0.5).reason == "expired"
    assert not s.valid(0.5)
    s.expire(0.6)
    assert s.renew(ren(3, m.digest), 0.7).reason in ("expired", "digest_mismatch")
    assert s.serving(0.7) == {} and not s.vips
    # a full message brings it back
    assert s.apply(full(4, [(V4, 1)]), 0.8).accepted and s.serving(0.8) == {V4: 1}
    assert s.renew(ren(5, m.digest), 0.9).accepted


def test_fencing_node_and_ttl() -> None:
    s = AnnouncerState("n1")
    m = full(5, [(V4, 1)], term=2)
    s.apply(m, 0.0)
    assert s.renew(ren(6, m.digest, node="n2", term=2), 0.1).reason == "other_node"
    assert s.renew(ren(5, m.digest, term=2), 0.1).reason == "stale"  # same (term, seq)
    assert s.renew(ren(99, m.digest, term=1), 0.1).reason == "stale"  # older term
    assert s.renew(ren(6, m.digest, term=2, ttl_ms=0), 0.1).reason == "bad_ttl"
    assert s.deadline == 1.0
    assert s.renew(ren(6, m.digest, term=2), 0.2).accepted
    assert s.renew(ren(6, m.digest, term=2), 0.3).reason == "stale"  # a replayed renewal
    # an older full message after the renewal is stale too: the renewal advanced the order
    assert s.apply(full(6, [], term=2), 0.4).reason == "stale"
    # after our set expired, renewals of an older term say so (only a full message resets the term)
    assert s.renew(ren(100, m.digest, term=1), 5.0).reason == "stale_term"


def test_nothing_applied_or_no_digest_never_matches() -> None:
    s = AnnouncerState("n1")
    assert s.renew(ren(1, assignments_digest(())), 0.0).reason == "digest_mismatch"
    assert s.deadline is None and s.serving(0.0) == {}
    s.apply(full(1, [(V4, 1)], digest=""), 0.0)  # a leases from before renewals
    assert s.renew(ren(2, assignments_digest((VipAssignment(V4, 1),))), 0.1).reason == "digest_mismatch"


def test_renewal_keeps_garp_schedule_and_reply_state() -> None:
    s = AnnouncerState("n1", garp_count=3, garp_interval=1.0)
    m = full(1, [(V4, 1)], ttl_ms=10_000)
    s.apply(m, 0.0)
    before = dict(s.vips)
    s.renew(ren(2, m.digest, ttl_ms=10_000), 0.5)
    assert s.vips == before and all(s.vips[k] is before[k] for k in before)
    assert s.next_event(0.5) == 0.0  # the takeover announcements are still due, not rescheduled


_ip = st.sampled_from([f"198.51.100.{i}" for i in range(1, 6)] + ["2001:db8::1", "2001:db8::2"])
_set = st.lists(st.tuples(_ip, st.integers(1, 3)), max_size=5, unique_by=lambda t: t[0])
_op = st.one_of(
    st.tuples(st.just("full"), _set, st.integers(1, 2), st.integers(100, 2000), st.floats(0.0, 1.5)),
    st.tuples(st.just("renew"), _set, st.integers(1, 2), st.integers(100, 2000), st.floats(0.0, 1.5)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, min_size=1, max_size=25))
def test_renewals_never_change_the_set_nor_extend_a_set_they_do_not_name(ops: list[tuple[object, ...]]) -> None:
    s = AnnouncerState("n1", garp_count=0)
    now = 0.0
    seq = 0
    for kind, vips, term, ttl, dt in ops:
        assert isinstance(vips, list) and isinstance(term, int) and isinstance(ttl, int) and isinstance(dt, float)
        now += dt
        seq += 1
        vs = tuple(VipAssignment(ip, ep) for ip, ep in vips)
        if kind == "full":
            s.apply(NodeAssignments("n1", term, seq, ttl, 0.0, vs, assignments_digest(vs)), now)
            continue
        s.expire(now)
        before_vips = {v.ip: v.epoch for v in s.vips.values()}
        before_serving = dict(s.serving(now))
        before_deadline, before_digest = s.deadline, s.digest
        held = assignments_digest(tuple(VipAssignment(ip, ep) for ip, ep in before_vips.items()))
        was_valid = s.valid(now)
        ch = s.renew(ren(seq, assignments_digest(vs), term=term, ttl_ms=ttl), now)
        # never adds, removes or changes a VIP
        assert {v.ip: v.epoch for v in s.vips.values()} == before_vips
        assert not ch.added and not ch.removed and s.digest == before_digest
        if ch.accepted:
            # only a valid set whose digest is the one renewed, and it is served unchanged
            assert was_valid and held == assignments_digest(vs)
            assert s.deadline == now + ttl / 1000.0
            assert s.serving(now) == before_serving
        else:
            assert s.deadline == before_deadline  # a refused renewal extends nothing
        if not was_valid:
            assert not ch.accepted and s.serving(now) == {}
