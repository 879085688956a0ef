"""The pure announcer state machine: ordering, ttl, replies, GARP schedule, rate limit, conflicts."""

from __future__ import annotations

from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from l2lb.core import codec
from l2lb.core.announce import AnnouncerState, Iface, Outcome
from l2lb.core.messages import NodeAssignments, VipAssignment

MAC = codec.mac_bytes("02:00:00:00:01:01")
OTHER = codec.mac_bytes("02:00:00:00:02:02")
ETH0 = Iface("eth0", 2, MAC)
ETH1 = Iface("eth1", 3, codec.mac_bytes("02:00:00:00:01:02"))
V4 = "198.51.100.10"
V6 = "2001:db8::10"


def msg(seq: int, vips: list[tuple[str, int]] | None = None, *, term: int = 1, ttl_ms: int = 1000,
        node: str = "n1", ifaces: tuple[str, ...] = ()) -> NodeAssignments:
    vs = tuple(VipAssignment(ip, ep, ifaces) for ip, ep in (vips if vips is not None else [(V4, 1), (V6, 1)]))
    return NodeAssignments(node=node, term=term, seq=seq, ttl_ms=ttl_ms, sent_at=0.0, vips=vs)


def who_has(ip: str, src: bytes = OTHER, spa: str = "198.51.100.2") -> bytes:
    return codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=src, sha=src, spa=codec.ip_bytes(spa),
                           tha=codec.ZERO_MAC, tpa=codec.ip_bytes(ip))


def ns(ip: str, src: bytes = OTHER, src_ip: str = "2001:db8::2") -> bytes:
    return codec.build_ns(eth_src=src, src=codec.ip_bytes(src_ip), target=codec.ip_bytes(ip), slla=src)


def test_ordering_and_node_filter() -> None:
    s = AnnouncerState("n1")
    assert s.apply(msg(5, node="n2"), 0.0).reason == "other_node"
    ch = s.apply(msg(5), 0.0)
    assert ch.accepted and {v.ip for v in ch.added} == {V4, V6}
    assert s.apply(msg(5), 0.1).reason == "stale"
    assert s.apply(msg(4, []), 0.1).reason == "stale"
    assert s.serving(0.1) == {V4: 1, V6: 1}
    # a new term restarts seq numbering and is newer
    ch = s.apply(msg(1, [(V4, 2)], term=2), 0.2)
    assert ch.accepted and {v.ip for v in ch.removed} == {V4, V6}
    assert s.serving(0.2) == {V4: 2}
    assert s.apply(msg(100, [], term=1), 0.3).reason == "stale"
    assert s.apply(msg(2, [(V4, 2)], term=2, ttl_ms=0), 0.3).reason == "bad_ttl"


def test_reply_and_ttl_expiry() -> None:
    s = AnnouncerState("n1")
    s.apply(msg(1, ttl_ms=500), 10.0)
    v = s.handle(who_has(V4), ETH0, 10.1)
    assert v.reason == Outcome.ANSWERED
    rep = Ether(v.frames[0])
    assert rep.dst == codec.mac_text(OTHER) and rep[ARP].op == 2 and rep[ARP].psrc == V4
    assert rep[ARP].hwsrc == codec.mac_text(MAC) and rep[ARP].pdst == "198.51.100.2"
    assert s.handle(who_has("198.51.100.11"), ETH0, 10.1).reason == Outcome.NOT_OWNED
    # expiry: replies stop exactly at the deadline, even before expire() runs
    assert s.handle(who_has(V4), ETH0, 10.5).reason == Outcome.EXPIRED
    assert s.serving(10.5) == {}
    assert {v.ip for v in s.expire(10.5)} == {V4, V6}
    assert s.handle(who_has(V4), ETH0, 10.6).reason == Outcome.NOT_OWNED
    # renewal before expiry keeps answering
    s.apply(msg(2, ttl_ms=500), 11.0)
    s.apply(msg(3, ttl_ms=500), 11.4)
    assert s.handle(who_has(V4), ETH0, 11.8).reason == Outcome.ANSWERED


def test_newer_message_without_vip_stops_at_once() -> None:
    s = AnnouncerState("n1")
    s.apply(msg(1), 0.0)
    assert s.handle(who_has(V4), ETH0, 0.1).reason == Outcome.ANSWERED
    s.apply(msg(2, [(V6, 1)]), 0.2)
    assert s.handle(who_has(V4), ETH0, 0.2).reason == Outcome.NOT_OWNED


def test_interfaces_restriction() -> None:
    s = AnnouncerState("n1")
    s.apply(msg(1, [(V4, 1)], ifaces=("eth1",)), 0.0)
    assert s.handle(who_has(V4), ETH0, 0.1).reason == Outcome.WRONG_INTERFACE
    assert s.handle(who_has(V4), ETH1, 0.1).reason == Outcome.ANSWERED


def test_ns_reply_fields_and_dad() -> None:
    s = AnnouncerState("n1")
    s.apply(msg(1), 0.0)
    v = s.handle(ns(V6), ETH0, 0.1)
    assert v.reason == Outcome.ANSWERED
    p = Ether(v.frames[0])
    assert p.dst == codec.mac_text(OTHER) and p[IPv6].dst == "2001:db8::2" and p[IPv6].hlim == 255
    assert p[IPv6].src == V6
    na = p[ICMPv6ND_NA]
    assert (na.S, na.O, na.R, na.tgt) == (1, 1, 0, V6)
    assert p[ICMPv6NDOptDstLLAddr].lladdr == codec.mac_text(MAC)
    dad = codec.build_ns(eth_src=OTHER, src=b"\x00" * 16, target=codec.ip_bytes(V6))
    v = s.handle(dad, ETH0, 0.2)
    p = Ether(v.frames[0])
    assert p[IPv6].dst == "ff02::1" and p[ICMPv6ND_NA].S == 0 and p[ICMPv6ND_NA].O == 1
    assert s.multicast_macs("eth0") == {codec.solicited_node_mac(codec.ip_bytes(V6))}


def test_rate_limit_per_source() -> None:
    s = AnnouncerState("n1", reply_rate=10.0, reply_burst=5.0)
    s.apply(msg(1, ttl_ms=100_000), 0.0)
    got = [s.handle(who_has(V4), ETH0, 1.0).reason for _ in range(8)]
    assert got.count(Outcome.ANSWERED) == 5 and got.count(Outcome.RATE_LIMITED) == 3
    # another source has its own bucket
    third = codec.mac_bytes("02:00:00:00:03:03")
    assert s.handle(who_has(V4, src=third), ETH0, 1.0).reason == Outcome.ANSWERED
    # refills at the rate: 0.25 s -> 2 more tokens
    got = [s.handle(who_has(V4), ETH0, 1.25).reason for _ in range(3)]
    assert got.count(Outcome.ANSWERED) == 2


def test_garp_schedule_on_takeover_and_link_up() -> None:
    s = AnnouncerState("n1", garp_count=3, garp_interval=1.0)
    s.apply(msg(1, ttl_ms=100_000), 0.0)
    first = s.announcements_due(0.0, [ETH0])
    kinds = sorted((Ether(f)[ARP].op if Ether(f).haslayer(ARP) else 136) for _, f in first)
    assert kinds == [1, 2, 136]
    assert s.announcements_due(0.5, [ETH0]) == []
    assert s.next_event(0.5) == 1.0
    assert len(s.announcements_due(1.0, [ETH0])) == 3
    assert len(s.announcements_due(2.0, [ETH0])) == 3
    assert s.announcements_due(3.0, [ETH0]) == []
    # same epoch again: no new announcements; a new epoch is a takeover
    s.apply(msg(2, ttl_ms=100_000), 3.0)
    assert s.announcements_due(3.0, [ETH0]) == []
    s.apply(msg(3, [(V4, 2), (V6, 1)], ttl_ms=100_000), 3.0)
    assert len(s.announcements_due(3.0, [ETH0])) == 2
    assert len(s.announcements_due(4.0, [ETH0])) == 2
    assert len(s.announcements_due(5.0, [ETH0])) == 2
    assert s.next_event(5.0) == 100_000 / 1000 + 3.0  # only the expiry remains
    s.kick("eth1", 10.0)
    out = s.announcements_due(10.0, [ETH0, ETH1])
    assert out and {n for n, _ in out} == {"eth1"}


def test_conflict_defended_at_most_once_per_interval() -> None:
    s = AnnouncerState("n1", defend_interval=10.0)
    s.apply(msg(1, ttl_ms=100_000), 0.0)
    garp_other = codec.build_garp_request(OTHER, codec.ip_bytes(V4))
    v = s.handle(garp_other, ETH0, 1.0)
    assert v.reason == Outcome.CONFLICT and v.conflict is not None and v.conflict.defended
    assert v.conflict.their_mac == codec.mac_text(OTHER) and len(v.frames) == 2
    v = s.handle(garp_other, ETH0, 5.0)
    assert v.reason == Outcome.CONFLICT and v.conflict is None and v.frames == ()
    assert s.handle(garp_other, ETH0, 11.0).conflict is not None
    na_other = codec.build_unsolicited_na(OTHER, codec.ip_bytes(V6))
    v = s.handle(na_other, ETH0, 1.0)
    assert v.conflict is not None and len(v.frames) == 1
    # our own announcements coming back are not conflicts
    assert s.handle(codec.build_garp_request(MAC, codec.ip_bytes(V4)), ETH0, 20.0).reason == Outcome.OWN_FRAME
    # not-owned GARPs are just counted
    assert s.handle(codec.build_garp_request(OTHER, codec.ip_bytes("198.51.100.50")), ETH0, 20.0).reason \
        == Outcome.GRATUITOUS
    assert s.stats["conflict"] == 4


def test_invalid_ips_reported_not_fatal() -> None:
    s = AnnouncerState("n1")
    ch = s.apply(msg(1, [("not-an-ip", 1), ("224.0.0.1", 1), (V4, 1)]), 0.0)
    assert ch.accepted and set(ch.invalid) == {"not-an-ip", "224.0.0.1"} and s.serving(0.0) == {V4: 1}


def test_serving_map_cached_but_follows_changes() -> None:
    s = AnnouncerState("n1")
    s.apply(msg(1, ttl_ms=1000), 0.0)
    first = s.serving(0.1)
    assert first == {V4: 1, V6: 1}
    s.apply(msg(2, ttl_ms=1000), 0.2)  # same set renewed
    assert s.serving(0.3) is first
    s.apply(msg(3, [(V4, 2)], ttl_ms=1000), 0.4)
    assert s.serving(0.5) == {V4: 2} and s.serving_count(0.5) == 1
    assert s.serving(1.5) == {} and s.serving_count(1.5) == 0


def test_lower_term_accepted_only_after_expiry_and_a_hold_off() -> None:
    s = AnnouncerState("n1")
    s.apply(msg(10, [(V4, 1)], term=5, ttl_ms=1000), 0.0)
    # while the set is valid a lower term is always stale
    assert s.apply(msg(1, [(V6, 1)], term=0, ttl_ms=1000), 0.5).reason == "stale"
    assert s.serving(0.5) == {V4: 1}
    # expired at 1.0; lower-term messages keep coming: accepted only after 2 x ttl of them
    assert s.apply(msg(2, [(V6, 1)], term=0, ttl_ms=1000), 1.2).reason == "stale"
    assert s.apply(msg(3, [(V6, 1)], term=0, ttl_ms=1000), 2.5).reason == "stale"
    ch = s.apply(msg(4, [(V6, 1)], term=0, ttl_ms=1000), 3.3)
    assert ch.accepted and ch.reason == "term_reset" and s.serving(3.3) == {V6: 1}
    assert s.apply(msg(3, [], term=0, ttl_ms=1000), 3.4).reason == "stale"
