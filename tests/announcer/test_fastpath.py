"""ReplyMemo (core/fastpath.py) must decide exactly like AnnouncerState.handle, frame by frame: same replies,
same counters, same rate limiting, no answer after the deadline or after the set changed."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core import codec
from l2lb.core.announce import AnnouncerState, Iface, Outcome
from l2lb.core.fastpath import ReplyMemo
from l2lb.core.messages import NodeAssignments, VipAssignment

MAC = codec.mac_bytes("02:00:00:00:01:01")
ETH0 = Iface("eth0", 2, MAC)
ETH1 = Iface("eth1", 3, codec.mac_bytes("02:00:00:00:01:02"))
ASKERS = [codec.mac_bytes(f"02:00:00:00:02:{i:02x}") for i in range(1, 4)]
TARGETS = ["198.51.100.10", "198.51.100.11", "198.51.100.12", "2001:db8::10", "2001:db8::11"]


def msg(seq: int, vips: list[str], ttl_ms: int = 1000, ifaces: tuple[str, ...] = ()) -> NodeAssignments:
    return NodeAssignments(node="n1", term=1, seq=seq, ttl_ms=ttl_ms, sent_at=0.0,
                           vips=tuple(VipAssignment(ip, 1, ifaces) for ip in vips))


def request(target: str, asker: int, variant: int) -> bytes:
    src = ASKERS[asker]
    if ":" in target:
        return codec.build_ns(eth_src=src, src=codec.ip_bytes(f"2001:db8::{2 + variant}"),
                              target=codec.ip_bytes(target), slla=src)
    return codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=src, sha=src,
                           spa=codec.ip_bytes(f"198.51.100.{2 + variant}"), tha=codec.ZERO_MAC,
                           tpa=codec.ip_bytes(target))


frame = st.one_of(
    st.builds(request, st.sampled_from(TARGETS), st.integers(0, len(ASKERS) - 1), st.integers(0, 2)),
    st.binary(max_size=80),  # garbage: dropped by both
    st.just(request("198.51.100.10", 0, 0)[:41]),  # truncated
)
event = st.one_of(
    st.tuples(st.just("frames"), st.lists(frame, min_size=1, max_size=12), st.sampled_from([ETH0, ETH1])),
    st.tuples(st.just("tick"), st.floats(0.0, 0.7)),
    st.tuples(st.just("apply"), st.lists(st.sampled_from(TARGETS), unique=True), st.sampled_from([(), ("eth0",)])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=25), st.floats(1.0, 50.0), st.floats(1.0, 5.0))
def test_memo_decides_like_handle(events: list[tuple[Any, ...]], rate: float, burst: float) -> None:
    plain = AnnouncerState("n1", reply_rate=rate, reply_burst=burst)
    fast = AnnouncerState("n1", reply_rate=rate, reply_burst=burst)
    memo = ReplyMemo(fast, max_entries=4)  # tiny: the eviction path runs too
    now, seq = 10.0, 0
    for ev in events:
        if ev[0] == "tick":
            now += ev[1]
        elif ev[0] == "apply":
            seq += 1
            for s in (plain, fast):
                s.apply(msg(seq, ev[1], ifaces=ev[2]), now)
        else:
            frames, iface = ev[1], ev[2]
            want = [f for fr in frames for f in plain.handle(fr, iface, now).frames]
            got, _ = memo.handle_batch(frames, iface, now)
            assert got == want
            assert fast.stats == plain.stats


def test_repeated_requests_hit_the_memo_and_stop_at_the_deadline() -> None:
    s = AnnouncerState("n1", reply_rate=1e9, reply_burst=1e9)
    s.apply(msg(1, ["198.51.100.10"], ttl_ms=500), 10.0)
    memo = ReplyMemo(s)
    req = request("198.51.100.10", 0, 0)
    out, _ = memo.handle_batch([req] * 5, ETH0, 10.1)
    assert len(out) == 5 and len(set(out)) == 1 and memo.hits == 4
    assert s.stats[Outcome.ANSWERED] == 5
    out, _ = memo.handle_batch([req], ETH0, 10.5)  # deadline reached: no answer even from the memo
    assert out == [] and s.stats[Outcome.EXPIRED] == 1
    s.apply(msg(2, ["198.51.100.11"]), 10.6)  # a new set: the old answer is forgotten
    out, _ = memo.handle_batch([req], ETH0, 10.7)
    assert out == [] and s.stats[Outcome.NOT_OWNED] == 1


def test_memo_keeps_rate_limiting_per_asker() -> None:
    s = AnnouncerState("n1", reply_rate=1.0, reply_burst=3.0)
    s.apply(msg(1, ["198.51.100.10"], ttl_ms=10_000), 0.0)
    memo = ReplyMemo(s)
    out, _ = memo.handle_batch([request("198.51.100.10", 0, 0)] * 10 + [request("198.51.100.10", 1, 0)], ETH0, 1.0)
    assert len(out) == 4  # burst of 3 for the first asker, 1 for the second
    assert s.stats[Outcome.RATE_LIMITED] == 7


def test_full_set_with_the_held_digest_keeps_the_set_and_the_memo() -> None:
    from l2lb.core.messages import assignments_digest

    vas = tuple(VipAssignment(ip, 1) for ip in ["198.51.100.10", "2001:db8::10"])
    s = AnnouncerState("n1", reply_rate=1e9, reply_burst=1e9)
    s.apply(NodeAssignments(node="n1", term=1, seq=1, ttl_ms=500, sent_at=0.0, vips=vas,
                            digest=assignments_digest(vas)), 10.0)
    held = s.vips
    memo = ReplyMemo(s)
    req = request("198.51.100.10", 0, 0)
    memo.handle_batch([req], ETH0, 10.1)
    assert len(memo) == 1
    # leases' periodic full set, unchanged: same dict object (the memo stays valid), deadline moved
    ch = s.apply(NodeAssignments(node="n1", term=1, seq=2, ttl_ms=500, sent_at=0.0, vips=vas,
                                 digest=assignments_digest(vas)), 10.4)
    assert ch.accepted and not ch.added and not ch.removed and s.vips is held and s.deadline == 10.9
    out, _ = memo.handle_batch([req], ETH0, 10.8)
    assert len(out) == 1 and len(memo) == 1 and memo.hits == 1
    # the same entries under another digest: rebuilt, but every parsed entry is reused
    ch = s.apply(NodeAssignments(node="n1", term=1, seq=3, ttl_ms=500, sent_at=0.0, vips=vas, digest="x" * 32), 10.8)
    assert ch.accepted and not ch.added and s.vips is not held
    assert all(s.vips[a] is held[a] for a in held)
    # an expired set is always rebuilt, even under the digest it had
    ch = s.apply(NodeAssignments(node="n1", term=1, seq=4, ttl_ms=500, sent_at=0.0, vips=vas, digest="x" * 32), 20.0)
    assert {v.ip for v in ch.added} == {"198.51.100.10", "2001:db8::10"}
