"""Ethernet / 802.1Q / ARP / IPv6 / ICMPv6 Neighbor Solicitation + Advertisement codec (pure).

Struct-based, no scapy on the hot path. :func:`parse` validates every field the announcer relies
on and returns either a parsed frame (:class:`ArpFrame`, :class:`NsFrame`, :class:`NaFrame`) or a
:class:`DropReason` -- it never raises, whatever bytes it is given. The ``build_*`` functions
produce complete frames (with the 802.1Q tag copied from the request when there was one, ICMPv6
checksums, and padding to the 60-byte Ethernet minimum).

Addresses are ``bytes`` (MAC 6, IPv4 4, IPv6 16) on the hot path; helpers convert to and from
text for logs and status.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ALL_NODES_IP6",
    "ALL_NODES_MAC",
    "BROADCAST_MAC",
    "ETH_P_8021AD",
    "ETH_P_8021Q",
    "ETH_P_ARP",
    "ETH_P_IPV6",
    "ZERO_MAC",
    "ArpFrame",
    "DropReason",
    "Frame",
    "NaFrame",
    "NsFrame",
    "build_arp",
    "build_arp_reply",
    "build_garp_reply",
    "build_garp_request",
    "build_na",
    "build_ns",
    "build_unsolicited_na",
    "checksum16",
    "icmpv6_checksum",
    "ip_bytes",
    "ip_text",
    "mac_bytes",
    "mac_text",
    "parse",
    "solicited_node_ip",
    "solicited_node_mac",
]

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ARP_REQUEST = 1
ARP_REPLY = 2
IPPROTO_ICMPV6 = 58
ICMPV6_NS = 135
ICMPV6_NA = 136
OPT_SLLA = 1
OPT_TLLA = 2
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ALL_NODES_IP6 = b"\xff\x02" + b"\x00" * 13 + b"\x01"
UNSPECIFIED_IP6 = b"\x00" * 16
_SOLICITED_PREFIX = b"\xff\x02" + b"\x00" * 9 + b"\x01\xff"  # ff02::1:ff00:0/104
ETH_MIN_FRAME = 60  # without FCS

_ETH = struct.Struct("!6s6sH")
_VLAN = struct.Struct("!HH")  # TCI, inner ethertype
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_ICMP_HDR = struct.Struct("!BBH")


class DropReason(StrEnum):
    """Why a frame was not usable. The value is the metrics label."""

    TRUNCATED = "truncated"
    UNSUPPORTED_ETHERTYPE = "unsupported_ethertype"
    BAD_VLAN = "bad_vlan"
    BAD_SOURCE_MAC = "bad_source_mac"
    BAD_ARP_HEADER = "bad_arp_header"
    BAD_ARP_OP = "bad_arp_op"
    BAD_ARP_SENDER = "bad_arp_sender"
    BAD_IP_VERSION = "bad_ip_version"
    BAD_IP_LENGTH = "bad_ip_length"
    UNSUPPORTED_NEXT_HEADER = "unsupported_next_header"
    BAD_HOP_LIMIT = "bad_hop_limit"
    BAD_SOURCE_IP = "bad_source_ip"
    BAD_CHECKSUM = "bad_checksum"
    BAD_ICMP_CODE = "bad_icmp_code"
    UNSUPPORTED_ICMP_TYPE = "unsupported_icmp_type"
    BAD_ICMP_LENGTH = "bad_icmp_length"
    BAD_TARGET = "bad_target"
    BAD_OPTION = "bad_option"
    BAD_DESTINATION = "bad_destination"
    BAD_DAD = "bad_dad_solicitation"


@dataclass(frozen=True, slots=True)
class ArpFrame:
    eth_dst: bytes
    eth_src: bytes
    vlan: int | None  # 802.1Q TCI when the frame carried a tag
    op: int  # 1 request, 2 reply
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


@dataclass(frozen=True, slots=True)
class NsFrame:
    eth_dst: bytes
    eth_src: bytes
    vlan: int | None
    src: bytes  # IPv6 source (all zero for DAD)
    dst: bytes
    target: bytes
    slla: bytes | None  # source link-layer address option


@dataclass(frozen=True, slots=True)
class NaFrame:
    eth_dst: bytes
    eth_src: bytes
    vlan: int | None
    src: bytes
    dst: bytes
    target: bytes
    flags: int  # R 0x80, S 0x40, O 0x20
    tlla: bytes | None  # target link-layer address option


Frame = ArpFrame | NsFrame | NaFrame


# -- text helpers -------------------------------------------------------------------------------
def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    """"aa:bb:cc:dd:ee:ff" (or with '-') -> 6 bytes; ValueError on anything else."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


def ip_bytes(text: str) -> bytes:
    """IPv4/IPv6 text -> packed bytes (4 or 16); ValueError on anything else."""
    return ipaddress.ip_address(text).packed


def ip_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def solicited_node_ip(addr: bytes) -> bytes:
    return _SOLICITED_PREFIX + addr[13:16]


def solicited_node_mac(addr: bytes) -> bytes:
    """33:33:ff:xx:xx:xx for the solicited-node multicast group of an IPv6 address."""
    return b"\x33\x33\xff" + addr[13:16]


# -- checksums ---------------------------------------------------------------------------------
def checksum16(data: bytes) -> int:
    """RFC 1071 Internet checksum of ``data`` (canonical: 0 only when the folded sum is 0xffff)."""
    if len(data) & 1:
        data += b"\x00"
    s = int.from_bytes(data, "big") % 0xFFFF  # 2**16 == 1 (mod 0xffff): sum of the 16-bit words
    return 0 if s == 0 else 0xFFFF - s


def icmpv6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """Checksum of an ICMPv6 message (its checksum field zeroed) over the IPv6 pseudo-header."""
    pseudo = src + dst + struct.pack("!IxxxB", len(icmp), IPPROTO_ICMPV6)
    return checksum16(pseudo + icmp)


def _checksum_ok(src: bytes, dst: bytes, icmp: bytes) -> bool:
    data = src + dst + struct.pack("!IxxxB", len(icmp), IPPROTO_ICMPV6) + icmp
    if len(data) & 1:
        data += b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF == 0


def _is_multicast_mac(mac: bytes) -> bool:
    return bool(mac[0] & 1)


# -- parsing -----------------------------------------------------------------------------------
def parse(frame: bytes) -> Frame | DropReason:
    """Parse one Ethernet frame. Never raises: anything unusable is a :class:`DropReason`."""
    try:
        return _parse(frame)
    except (struct.error, IndexError, ValueError, TypeError):  # pragma: no cover - defensive
        return DropReason.TRUNCATED


def _parse(frame: bytes) -> Frame | DropReason:
    n = len(frame)
    if n < 14:
        return DropReason.TRUNCATED
    eth_dst, eth_src, etype = _ETH.unpack_from(frame, 0)
    if _is_multicast_mac(eth_src) or eth_src == ZERO_MAC:
        return DropReason.BAD_SOURCE_MAC
    off = 14
    vlan: int | None = None
    if etype in (ETH_P_8021Q, ETH_P_8021AD):
        if n < 18:
            return DropReason.TRUNCATED
        vlan, etype = _VLAN.unpack_from(frame, 14)
        off = 18
        if etype in (ETH_P_8021Q, ETH_P_8021AD):  # stacked tags: not ours to answer
            return DropReason.BAD_VLAN
        if vlan & 0x0FFF == 0x0FFF:  # VID 4095 is reserved
            return DropReason.BAD_VLAN
    if etype == ETH_P_ARP:
        return _parse_arp(frame, off, eth_dst, eth_src, vlan)
    if etype == ETH_P_IPV6:
        return _parse_ndp(frame, off, eth_dst, eth_src, vlan)
    return DropReason.UNSUPPORTED_ETHERTYPE


def _parse_arp(frame: bytes, off: int, eth_dst: bytes, eth_src: bytes, vlan: int | None
               ) -> ArpFrame | DropReason:
    if len(frame) < off + 28:
        return DropReason.TRUNCATED
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, off)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        return DropReason.BAD_ARP_HEADER
    if op not in (ARP_REQUEST, ARP_REPLY):
        return DropReason.BAD_ARP_OP
    if _is_multicast_mac(sha) or sha == ZERO_MAC:
        return DropReason.BAD_ARP_SENDER
    s0 = spa[0]
    if s0 >= 224 or s0 == 127 or spa == b"\xff\xff\xff\xff":  # multicast/broadcast/loopback sender
        return DropReason.BAD_ARP_SENDER
    return ArpFrame(eth_dst, eth_src, vlan, op, sha, spa, tha, tpa)


def _parse_options(frame: bytes, off: int, end: int) -> dict[int, bytes] | DropReason:
    opts: dict[int, bytes] = {}
    while off < end:
        if off + 2 > end:
            return DropReason.BAD_OPTION
        otype = frame[off]
        olen = frame[off + 1] * 8
        if olen == 0 or off + olen > end:
            return DropReason.BAD_OPTION
        if otype in (OPT_SLLA, OPT_TLLA):
            if olen != 8:  # Ethernet: exactly one 8-octet unit
                return DropReason.BAD_OPTION
            if otype in opts:  # duplicated link-layer option
                return DropReason.BAD_OPTION
            mac = frame[off + 2:off + 8]
            if _is_multicast_mac(mac) or mac == ZERO_MAC:
                return DropReason.BAD_OPTION
            opts[otype] = mac
        off += olen  # unknown options are skipped (RFC 4861 section 4.6)
    return opts


def _parse_ndp(frame: bytes, off: int, eth_dst: bytes, eth_src: bytes, vlan: int | None
               ) -> NsFrame | NaFrame | DropReason:
    n = len(frame)
    if n < off + 40:
        return DropReason.TRUNCATED
    vtf, plen, nxt, hlim, src, dst = _IP6.unpack_from(frame, off)
    if vtf >> 28 != 6:
        return DropReason.BAD_IP_VERSION
    if nxt != IPPROTO_ICMPV6:
        return DropReason.UNSUPPORTED_NEXT_HEADER
    start = off + 40
    end = start + plen
    if end > n:
        return DropReason.BAD_IP_LENGTH
    if plen < 4:
        return DropReason.BAD_ICMP_LENGTH
    itype, code, _ = _ICMP_HDR.unpack_from(frame, start)
    if itype not in (ICMPV6_NS, ICMPV6_NA):
        return DropReason.UNSUPPORTED_ICMP_TYPE
    if hlim != 255:  # RFC 4861 7.1: off-link senders cannot forge NDP
        return DropReason.BAD_HOP_LIMIT
    if code != 0:
        return DropReason.BAD_ICMP_CODE
    if plen < 24:
        return DropReason.BAD_ICMP_LENGTH
    if src[0] == 0xFF:
        return DropReason.BAD_SOURCE_IP
    if not _checksum_ok(src, dst, frame[start:end]):
        return DropReason.BAD_CHECKSUM
    target = frame[start + 8:start + 24]
    if target[0] == 0xFF or target == UNSPECIFIED_IP6:
        return DropReason.BAD_TARGET
    opts = _parse_options(frame, start + 24, end)
    if isinstance(opts, DropReason):
        return opts
    if itype == ICMPV6_NS:
        slla = opts.get(OPT_SLLA)
        if dst[0] == 0xFF and dst != solicited_node_ip(target):
            return DropReason.BAD_DESTINATION
        if src == UNSPECIFIED_IP6 and (slla is not None or dst[0] != 0xFF):
            return DropReason.BAD_DAD  # RFC 4861 7.1.1: DAD goes to the solicited-node group, no SLLA
        return NsFrame(eth_dst, eth_src, vlan, src, dst, target, slla)
    flags = frame[start + 4]
    if dst[0] == 0xFF and flags & NA_FLAG_SOLICITED:
        return DropReason.BAD_DESTINATION  # RFC 4861 7.1.2
    if src == UNSPECIFIED_IP6:
        return DropReason.BAD_SOURCE_IP
    return NaFrame(eth_dst, eth_src, vlan, src, dst, target, flags, opts.get(OPT_TLLA))


# -- building ----------------------------------------------------------------------------------
def _eth(dst: bytes, src: bytes, etype: int, vlan: int | None) -> bytes:
    if vlan is None:
        return _ETH.pack(dst, src, etype)
    return _ETH.pack(dst, src, ETH_P_8021Q) + _VLAN.pack(vlan & 0xFFFF, etype)


def _pad(frame: bytes) -> bytes:
    return frame if len(frame) >= ETH_MIN_FRAME else frame + b"\x00" * (ETH_MIN_FRAME - len(frame))


def build_arp(op: int, *, eth_dst: bytes, eth_src: bytes, sha: bytes, spa: bytes, tha: bytes, tpa: bytes,
              vlan: int | None = None) -> bytes:
    return _pad(_eth(eth_dst, eth_src, ETH_P_ARP, vlan)
                + _ARP.pack(1, ETH_P_IP, 6, 4, op, sha, spa, tha, tpa))


def build_arp_reply(req: ArpFrame, mac: bytes) -> bytes:
    """Unicast reply to ``req`` (who-has VIP): VIP is-at ``mac``, sent to the asker's SHA."""
    return build_arp(ARP_REPLY, eth_dst=req.sha, eth_src=mac, sha=mac, spa=req.tpa, tha=req.sha, tpa=req.spa,
                     vlan=req.vlan)


def build_garp_request(mac: bytes, ip: bytes, vlan: int | None = None) -> bytes:
    """Gratuitous ARP request: broadcast, SPA = TPA = VIP, THA zero."""
    return build_arp(ARP_REQUEST, eth_dst=BROADCAST_MAC, eth_src=mac, sha=mac, spa=ip, tha=ZERO_MAC, tpa=ip,
                     vlan=vlan)


def build_garp_reply(mac: bytes, ip: bytes, vlan: int | None = None) -> bytes:
    """Gratuitous ARP reply: broadcast, SPA = TPA = VIP, THA = SHA (Linux ignores a broadcast THA)."""
    return build_arp(ARP_REPLY, eth_dst=BROADCAST_MAC, eth_src=mac, sha=mac, spa=ip, tha=mac, tpa=ip,
                     vlan=vlan)


def _ip6(icmp: bytes, *, src: bytes, dst: bytes, eth_dst: bytes, eth_src: bytes, vlan: int | None) -> bytes:
    csum = icmpv6_checksum(src, dst, icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = _IP6.pack(0x60000000, len(icmp), IPPROTO_ICMPV6, 255, src, dst)
    return _pad(_eth(eth_dst, eth_src, ETH_P_IPV6, vlan) + ip6 + icmp)


def build_na(*, eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes, target: bytes, solicited: bool,
             override: bool = True, router: bool = False, tlla: bytes | None = None,
             vlan: int | None = None) -> bytes:
    """Neighbor Advertisement with hop limit 255, the flags given and a target link-layer option."""
    flags = (NA_FLAG_ROUTER if router else 0) | (NA_FLAG_SOLICITED if solicited else 0) \
        | (NA_FLAG_OVERRIDE if override else 0)
    opt = b"" if tlla is None else bytes((OPT_TLLA, 1)) + tlla
    icmp = struct.pack("!BBHB3x16s", ICMPV6_NA, 0, 0, flags, target) + opt
    return _ip6(icmp, src=src, dst=dst, eth_dst=eth_dst, eth_src=eth_src, vlan=vlan)


def build_unsolicited_na(mac: bytes, target: bytes, vlan: int | None = None) -> bytes:
    """Unsolicited NA to ff02::1 announcing ``target`` at ``mac`` (S=0, O=1)."""
    return build_na(eth_dst=ALL_NODES_MAC, eth_src=mac, src=target, dst=ALL_NODES_IP6, target=target,
                    solicited=False, override=True, tlla=mac, vlan=vlan)


def build_ns(*, eth_src: bytes, src: bytes, target: bytes, eth_dst: bytes | None = None,
             dst: bytes | None = None, slla: bytes | None = None, vlan: int | None = None) -> bytes:
    """Neighbor Solicitation (for tests, benchmarks and probes); multicast to the solicited-node group
    unless ``dst``/``eth_dst`` are given."""
    if dst is None:
        dst = solicited_node_ip(target)
    if eth_dst is None:
        eth_dst = b"\x33\x33" + dst[12:16] if dst[0] == 0xFF else BROADCAST_MAC
    opt = b"" if slla is None else bytes((OPT_SLLA, 1)) + slla
    icmp = struct.pack("!BBH4x16s", ICMPV6_NS, 0, 0, target) + opt
    return _ip6(icmp, src=src, dst=dst, eth_dst=eth_dst, eth_src=eth_src, vlan=vlan)
