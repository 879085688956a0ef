"""Fuzz the codec: random bytes and mutated valid frames must never raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2lb.core import codec
from l2lb.core.announce import AnnouncerState, Iface
from l2lb.core.codec import ArpFrame, DropReason, NaFrame, NsFrame
from l2lb.core.messages import NodeAssignments, VipAssignment

MAC = bytes.fromhex("020000000001")
ASKER = bytes.fromhex("020000000002")
V4 = codec.ip_bytes("198.51.100.10")
V6 = codec.ip_bytes("2001:db8::10")
ASKER_IP = codec.ip_bytes("198.51.100.2")

VALID = [
    codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=ASKER, sha=ASKER, spa=ASKER_IP,
                    tha=codec.ZERO_MAC, tpa=V4),
    codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=ASKER, sha=ASKER, spa=ASKER_IP,
                    tha=codec.ZERO_MAC, tpa=V4, vlan=10),
    codec.build_ns(eth_src=ASKER, src=codec.ip_bytes("2001:db8::2"), target=V6, slla=ASKER),
    codec.build_ns(eth_src=ASKER, src=b"\x00" * 16, target=V6),
    codec.build_unsolicited_na(ASKER, V6),
    codec.build_garp_reply(ASKER, V4, vlan=3),
]
TYPES = (ArpFrame, NsFrame, NaFrame, DropReason)


def _state() -> AnnouncerState:
    st_ = AnnouncerState("n1")
    st_.apply(NodeAssignments(node="n1", term=1, seq=1, ttl_ms=10_000, sent_at=0.0,
                              vips=(VipAssignment("198.51.100.10", 1), VipAssignment("2001:db8::10", 1))),
              0.0)
    return st_


IFACE = Iface("eth0", 2, MAC)


def test_valid_seeds_parse() -> None:
    for f in VALID:
        assert not isinstance(codec.parse(f), DropReason), f.hex()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(codec.parse(data), TYPES)
    v = _STATE.handle(data, IFACE, 1.0)
    assert isinstance(v.reason, str)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID),
       st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 120), st.binary(max_size=16))
def test_mutated_frames_never_raise(seed: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    raw = bytearray(seed)
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    data = bytes(raw[: max(0, len(raw) - cut)]) + tail
    p = codec.parse(data)
    assert isinstance(p, TYPES)
    v = _STATE.handle(data, IFACE, 1.0)
    # a reply is only ever produced for a frame that parses as a request
    if v.frames and v.reason == "answered":
        assert isinstance(p, ArpFrame | NsFrame)


_STATE = _state()
_STATE.reply_burst = 1e9


def _pair() -> tuple[AnnouncerState, AnnouncerState]:
    out = []
    for _ in range(2):
        s = AnnouncerState("n1", reply_rate=5.0, reply_burst=3.0)
        s.apply(NodeAssignments(node="n1", term=1, seq=1, ttl_ms=10_000, sent_at=0.0,
                                vips=(VipAssignment("198.51.100.10", 1), VipAssignment("198.51.100.2", 1),
                                      VipAssignment("198.51.100.12", 1, ("eth9",)))), 0.0)
        out.append(s)
    return out[0], out[1]


_FAST, _FULL = _pair()
_ARP_IPS = [codec.ip_bytes(f"198.51.100.{i}") for i in (2, 3, 10, 12)] + [b"\x00" * 4, b"\xe0\x00\x00\x01",
                                                                            b"\x7f\x00\x00\x01"]
_MACS = [ASKER, MAC, codec.ZERO_MAC, codec.BROADCAST_MAC, bytes.fromhex("010000000003")]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_MACS), st.sampled_from(_MACS), st.sampled_from(_ARP_IPS), st.sampled_from(_ARP_IPS),
       st.sampled_from([0.5, 2.0, 11.0]), st.lists(st.tuples(st.integers(12, 41), st.integers(0, 255)), max_size=2),
       st.booleans())
def test_arp_fast_path_agrees_with_full_path(esrc: bytes, sha: bytes, spa: bytes, tpa: bytes, now: float,
                                             flips: list[tuple[int, int]], vlan: bool) -> None:
    frame = bytearray(codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=esrc, sha=sha, spa=spa,
                                      tha=codec.ZERO_MAC, tpa=tpa, vlan=5 if vlan else None))
    for pos, val in flips:
        frame[pos] = val
    a = _FAST.handle(bytes(frame), IFACE, now)
    b = _FULL.handle_full(bytes(frame), IFACE, now)
    assert (a.reason, a.frames, a.conflict) == (b.reason, b.frames, b.conflict)
