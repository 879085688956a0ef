"""The pure ARP/NDP codec, cross-checked against scapy (independent implementation)."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether

from l2lb.core import codec
from l2lb.core.codec import ArpFrame, DropReason, NaFrame, NsFrame

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
V4 = "198.51.100.10"
V6 = "2001:db8::10"
ASKER6 = "2001:db8::99"


def test_parse_scapy_arp_request_with_and_without_vlan() -> None:
    for vlan in (None, 42):
        pkt = Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff")
        if vlan is not None:
            pkt = pkt / Dot1Q(vlan=vlan, prio=3)
        pkt = pkt / ARP(op=1, hwsrc=MAC_B, psrc="198.51.100.99", pdst=V4)
        p = codec.parse(bytes(pkt))
        assert isinstance(p, ArpFrame), p
        assert p.op == 1
        assert p.sha == codec.mac_bytes(MAC_B)
        assert p.spa == codec.ip_bytes("198.51.100.99")
        assert p.tpa == codec.ip_bytes(V4)
        assert p.vlan == (None if vlan is None else (3 << 13) | vlan)


def test_arp_reply_fields_checked_by_scapy() -> None:
    req = codec.parse(bytes(Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=7)
                            / ARP(op=1, hwsrc=MAC_B, psrc="198.51.100.99", pdst=V4)))
    assert isinstance(req, ArpFrame)
    out = Ether(codec.build_arp_reply(req, codec.mac_bytes(MAC_A)))
    assert out.dst == MAC_B and out.src == MAC_A
    assert out[Dot1Q].vlan == 7
    a = out[ARP]
    assert (a.op, a.hwtype, a.ptype, a.hwlen, a.plen) == (2, 1, 0x0800, 6, 4)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == (MAC_A, V4, MAC_B, "198.51.100.99")


def test_garp_request_and_reply() -> None:
    mac = codec.mac_bytes(MAC_A)
    ip = codec.ip_bytes(V4)
    rq = Ether(codec.build_garp_request(mac, ip))
    rp = Ether(codec.build_garp_reply(mac, ip))
    assert len(bytes(rq)) == 60
    assert rq.dst == rp.dst == "ff:ff:ff:ff:ff:ff"
    assert (rq[ARP].op, rq[ARP].psrc, rq[ARP].pdst, rq[ARP].hwdst) == (1, V4, V4, "00:00:00:00:00:00")
    assert (rp[ARP].op, rp[ARP].psrc, rp[ARP].pdst, rp[ARP].hwdst, rp[ARP].hwsrc) == (2, V4, V4, MAC_A, MAC_A)


def _scapy_ns(src: str = ASKER6, dst: str | None = None, *, slla: bool = True, hlim: int = 255,
              target: str = V6) -> bytes:
    dst = dst or "ff02::1:ff00:10"
    pkt = (Ether(src=MAC_B, dst="33:33:ff:00:00:10") / IPv6(src=src, dst=dst, hlim=hlim)
           / ICMPv6ND_NS(tgt=target))
    if slla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B)
    return bytes(pkt)


def test_parse_scapy_ns() -> None:
    p = codec.parse(_scapy_ns())
    assert isinstance(p, NsFrame), p
    assert p.target == codec.ip_bytes(V6)
    assert p.src == codec.ip_bytes(ASKER6)
    assert p.slla == codec.mac_bytes(MAC_B)


def test_ns_validation_drops() -> None:
    assert codec.parse(_scapy_ns(hlim=64)) is DropReason.BAD_HOP_LIMIT
    raw = bytearray(_scapy_ns())
    raw[14 + 40 + 2] ^= 0x55  # checksum
    assert codec.parse(bytes(raw)) is DropReason.BAD_CHECKSUM
    # DAD (unspecified source) with a source link-layer option is invalid
    assert codec.parse(_scapy_ns(src="::", slla=True)) is DropReason.BAD_DAD
    dad = codec.parse(_scapy_ns(src="::", slla=False))
    assert isinstance(dad, NsFrame) and dad.slla is None
    # multicast target
    assert codec.parse(_scapy_ns(target="ff02::1")) is DropReason.BAD_TARGET
    # multicast destination that is not the target's solicited-node group
    assert codec.parse(_scapy_ns(dst="ff02::1")) is DropReason.BAD_DESTINATION
    # zero-length option
    raw = bytearray(_scapy_ns())
    raw[14 + 40 + 24 + 1] = 0
    # fix checksum so the option check is what fails
    icmp = bytes(raw[54:]); icmp = icmp[:2] + b"\0\0" + icmp[4:]  # noqa: E702
    cs = codec.icmpv6_checksum(bytes(raw[22:38]), bytes(raw[38:54]), icmp)
    raw[56:58] = struct.pack("!H", cs)
    assert codec.parse(bytes(raw)) is DropReason.BAD_OPTION


def test_na_built_matches_scapy_every_field() -> None:
    mac_a = codec.mac_bytes(MAC_A)
    frame = codec.build_na(eth_dst=codec.mac_bytes(MAC_B), eth_src=mac_a, src=codec.ip_bytes(V6),
                           dst=codec.ip_bytes(ASKER6), target=codec.ip_bytes(V6), solicited=True,
                           override=True, tlla=mac_a, vlan=5)
    pkt = Ether(frame)
    assert pkt.dst == MAC_B and pkt.src == MAC_A and pkt[Dot1Q].vlan == 5
    ip6 = pkt[IPv6]
    assert (ip6.hlim, ip6.src, ip6.dst, ip6.nh) == (255, V6, ASKER6, 58)
    na = pkt[ICMPv6ND_NA]
    assert (na.R, na.S, na.O, na.tgt, na.code) == (0, 1, 1, V6, 0)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == MAC_A
    got = na.cksum
    del pkt[ICMPv6ND_NA].cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NA].cksum == got
    back = codec.parse(frame)
    assert isinstance(back, NaFrame) and back.tlla == mac_a and back.flags == 0x60


def test_unsolicited_na() -> None:
    mac = codec.mac_bytes(MAC_A)
    pkt = Ether(codec.build_unsolicited_na(mac, codec.ip_bytes(V6)))
    assert pkt.dst == "33:33:00:00:00:01"
    assert pkt[IPv6].dst == "ff02::1" and pkt[IPv6].hlim == 255
    na = pkt[ICMPv6ND_NA]
    assert (na.S, na.O, na.R) == (0, 1, 0)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == MAC_A


def test_built_ns_is_valid_for_scapy_and_us() -> None:
    frame = codec.build_ns(eth_src=codec.mac_bytes(MAC_B), src=codec.ip_bytes(ASKER6),
                           target=codec.ip_bytes(V6), slla=codec.mac_bytes(MAC_B))
    pkt = Ether(frame)
    assert pkt.dst == "33:33:ff:00:00:10" and pkt[IPv6].dst == "ff02::1:ff00:10"
    got = pkt[ICMPv6ND_NS].cksum
    del pkt[ICMPv6ND_NS].cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NS].cksum == got
    assert isinstance(codec.parse(frame), NsFrame)


SRC = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01"


@pytest.mark.parametrize("data,reason", [
    (b"", DropReason.TRUNCATED),
    (b"\x02" * 13, DropReason.TRUNCATED),
    (b"\xff" * 6 + b"\x01\x00\x00\x00\x00\x01" + b"\x08\x06" + b"\x00" * 28, DropReason.BAD_SOURCE_MAC),
    (SRC + b"\x08\x00" + b"\x00" * 28, DropReason.UNSUPPORTED_ETHERTYPE),
    (SRC + b"\x08\x06" + b"\x00" * 10, DropReason.TRUNCATED),
    (SRC + b"\x81\x00\x00\x05\x81\x00" + b"\x00" * 30, DropReason.BAD_VLAN),
])
def test_malformed_frames_have_reasons(data: bytes, reason: DropReason) -> None:
    assert codec.parse(data) is reason


def test_arp_header_and_sender_checks() -> None:
    good = bytes(Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=MAC_B, psrc="198.51.100.99", pdst=V4))
    assert isinstance(codec.parse(good), ArpFrame)
    bad = bytearray(good); bad[14 + 4] = 8  # hlen  # noqa: E702
    assert codec.parse(bytes(bad)) is DropReason.BAD_ARP_HEADER
    bad = bytearray(good); bad[14 + 7] = 3  # op  # noqa: E702
    assert codec.parse(bytes(bad)) is DropReason.BAD_ARP_OP
    bad = bytearray(good); bad[14 + 8] = 0x01  # multicast sender hardware address  # noqa: E702
    assert codec.parse(bytes(bad)) is DropReason.BAD_ARP_SENDER


def test_checksum16_known_vector() -> None:
    # RFC 1071 example words 0001 f203 f4f5 f6f7 -> sum ddf2 (one's complement), checksum 220d
    assert codec.checksum16(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert codec.solicited_node_mac(codec.ip_bytes("2001:db8::1:2345")) == bytes.fromhex("3333ff012345")
