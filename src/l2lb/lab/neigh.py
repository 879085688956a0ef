"""The client kernel's neighbour table as it changes: rtnetlink neighbour events, timestamped.

:class:`NeighWatcher` subscribes to ``RTMGRP_NEIGH`` in a namespace and records every new/changed
entry for one address (its link-layer address and NUD state), so a failover shows *when* the
client's own kernel moved to the new MAC (e.g. after an unsolicited NA with the override flag),
not only what ``ip neigh`` says afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass, field

from l2lb.lab.netns import entered

NETLINK_ROUTE = 0
RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NDA_DST = 1
NDA_LLADDR = 2
_NLMSG = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTA = struct.Struct("=HH")

NUD_STATES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
              0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT", 0x00: "NONE"}


@dataclass(frozen=True)
class NeighEvent:
    t: float  # monotonic seconds when read
    ip: str
    mac: str  # "" when the entry has no link-layer address (INCOMPLETE, FAILED) or was deleted
    state: str
    deleted: bool = False


def parse_neigh_messages(data: bytes, t: float) -> list[NeighEvent]:
    """Every RTM_NEWNEIGH/RTM_DELNEIGH in one netlink datagram (anything malformed is skipped)."""
    out: list[NeighEvent] = []
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > len(data):
            break
        body = data[off + _NLMSG.size:off + length]
        off += (length + 3) & ~3
        if mtype not in (RTM_NEWNEIGH, RTM_DELNEIGH) or len(body) < _NDMSG.size:
            continue
        _family, _ifindex, state, _nflags, _ntype = _NDMSG.unpack_from(body, 0)
        ip, mac = "", ""
        a = _NDMSG.size
        while a + _RTA.size <= len(body):
            rlen, rtype = _RTA.unpack_from(body, a)
            if rlen < _RTA.size or a + rlen > len(body):
                break
            val = body[a + _RTA.size:a + rlen]
            if rtype == NDA_DST and len(val) in (4, 16):
                ip = str(ipaddress.ip_address(val))
            elif rtype == NDA_LLADDR and len(val) == 6:
                mac = ":".join(f"{b:02x}" for b in val)
            a += (rlen + 3) & ~3
        if ip:
            out.append(NeighEvent(t, ip, mac, NUD_STATES.get(state, hex(state)), mtype == RTM_DELNEIGH))
    return out


@dataclass
class NeighWatcher:
    """Neighbour events for ``ip`` in namespace ``ns``; :meth:`poll` reads what is waiting (non-blocking)."""

    ns: str | None
    ip: str
    events: list[NeighEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ip = str(ipaddress.ip_address(self.ip))
        ctx = entered(self.ns) if self.ns else contextlib.nullcontext()
        with ctx:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, RTMGRP_NEIGH))
        self.sock.setblocking(False)

    def poll(self) -> list[NeighEvent]:
        new: list[NeighEvent] = []
        for _ in range(10_000):  # bounded: a burst of neighbour events is read in one go
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            new += [e for e in parse_neigh_messages(data, time.monotonic()) if e.ip == self.ip]
        self.events += new
        return new

    def attach(self) -> None:
        """Read events as they arrive (timestamps within the event loop's latency) on the running loop."""
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.poll)

    def detach(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.poll()

    def first_with_mac(self, mac: str, after: float) -> NeighEvent | None:
        """The first event at or after ``after`` (monotonic) whose entry carries ``mac``."""
        self.poll()
        return next((e for e in self.events if e.t >= after and e.mac == mac and not e.deleted), None)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.detach()
        self.sock.close()
