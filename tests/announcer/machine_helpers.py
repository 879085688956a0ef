"""Builders for driving AnnouncerMachine in tests: no sockets, no Redis, no asyncio, a clock we set."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from l2lb.core import codec, peers
from l2lb.core.announcer_machine import (
    AnnouncerMachine,
    Assignments,
    Command,
    LinksChanged,
    LinkState,
    MachineConfig,
    PeerFrameReceived,
    Renewal,
)
from l2lb.core.messages import NodeAssignments, NodeRenewal, StandbyVip, VipAssignment, assignments_digest

NODE = "n1"
MAC = "02:00:00:00:01:01"
OTHER = codec.mac_bytes("02:00:00:00:02:02")
V4 = "198.51.100.10"
V4B = "198.51.100.11"
V6 = "2001:db8::10"
WALL0 = 1_800_000_000.0  # wall clock = WALL0 + monotonic in these tests

C = TypeVar("C")
_askers = itertools.count(1)


def machine(**kw: Any) -> AnnouncerMachine:
    cfg: dict[str, Any] = {"node": NODE, "instance": "test0001"}
    cfg.update(kw)
    return AnnouncerMachine(MachineConfig(**cfg), 0.0)


def link(name: str = "eth0", *, up: bool = True, socket: bool = True, index: int = 2, mac: str = MAC) -> LinkState:
    return LinkState(name, index, mac, up, socket, ("198.51.100.2/24",), "up" if up else "down")


def links(*ls: LinkState, now: float = 0.0) -> LinksChanged:
    return LinksChanged(tuple(ls), now)


def vips(*pairs: tuple[str, int], ifaces: tuple[str, ...] = ()) -> tuple[VipAssignment, ...]:
    return tuple(VipAssignment(ip, ep, ifaces) for ip, ep in pairs)


def assign(seq: int, vs: tuple[VipAssignment, ...], now: float, *, node: str = NODE, term: int = 1,
           ttl_ms: int = 1000, entry_id: str | None = None, standby: tuple[StandbyVip, ...] = (),
           members: tuple[str, ...] = ()) -> Assignments:
    msg = NodeAssignments(node, term, seq, ttl_ms, WALL0 + now, vs, assignments_digest(vs, standby, members),
                          standby=standby, members=members)
    return Assignments(msg, now, WALL0 + now, entry_id)


KEY = b"0123456789abcdef0123"
_peer_counters: dict[str, int] = {}


def peer(node: str, now: float, *, flags: int = 0, claims: tuple[tuple[str, int], ...] = (), key: bytes | None = KEY,
         mac: bytes = OTHER, cluster: str = "l2lb", instance: str = "i-1", arrived: float | None = None,
         wall_ms: int | None = None, held: int = 0, term: int = 1) -> PeerFrameReceived:
    """A frame from peer ``node`` sent at ``now`` (arriving at ``arrived``, default the same instant)."""
    n = _peer_counters[node] = _peer_counters.get(node, 0) + 1
    at = now if arrived is None else arrived
    raw = peers.encode(peers.PeerFrame(cluster, node, instance, n, int((WALL0 + now) * 1000) if wall_ms is None
                                       else wall_ms, flags, term, held, b"\0" * 8, claims), key, mac)
    return PeerFrameReceived("eth0", raw, at, WALL0 + at)


def renew(seq: int, vs: tuple[VipAssignment, ...], now: float, *, node: str = NODE, term: int = 1,
          ttl_ms: int = 1000, digest: str | None = None, entry_id: str | None = None) -> Renewal:
    msg = NodeRenewal(node, term, seq, ttl_ms, WALL0 + now, assignments_digest(vs) if digest is None else digest)
    return Renewal(msg, now, WALL0 + now, entry_id)


def who_has(ip: str, asker: bytes | None = None) -> bytes:
    src = asker or fresh_mac()
    return codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=src, sha=src, spa=codec.ip_bytes("198.51.100.2"),
                           tha=codec.ZERO_MAC, tpa=codec.ip_bytes(ip))


def ns(ip: str, asker: bytes | None = None) -> bytes:
    src = asker or fresh_mac()
    return codec.build_ns(eth_src=src, src=codec.ip_bytes("2001:db8::2"), target=codec.ip_bytes(ip), slla=src)


def fresh_mac() -> bytes:
    """A new asker each time (a fresh token bucket: probes are never rate-limited)."""
    n = next(_askers)
    return bytes([0x02, 0x10, (n >> 16) & 255, (n >> 8) & 255, n & 255, 1])


def answered(m: AnnouncerMachine, ip: str, now: float, iface: str = "eth0") -> bool:
    """Ask the machine on the wire: one request frame through its hot path."""
    frame = ns(ip) if ":" in ip else who_has(ip)
    replies, _ = m.on_frames(iface, [frame], now)
    return bool(replies)


def of(cmds: Iterable[Command], kind: type[C]) -> list[C]:
    return [c for c in cmds if isinstance(c, kind)]


def garp_targets(frames: Sequence[bytes]) -> list[str]:
    """The addresses announced by gratuitous ARP (request or reply) / unsolicited NA frames."""
    out = []
    for f in frames:
        p = codec.parse(f)
        if isinstance(p, codec.ArpFrame) and p.spa == p.tpa:
            out.append(codec.ip_text(p.spa))
        elif isinstance(p, codec.NaFrame) and not p.flags & 0x40:  # S=0: unsolicited
            out.append(codec.ip_text(p.target))
    return out
