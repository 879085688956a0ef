"""The announcers' LAN peer heartbeats on one interface: a raw AF_PACKET socket for EtherType 0x88b5
(:mod:`l2lb.core.peers` encodes, authenticates and judges the frames; this module only moves them).

Why a socket of its own and not the ARP socket: the ARP/NDP socket's PACKET_MMAP ring has 256-byte slots (a
peer frame with claims is up to ~1.1 KB) and its hot path stays exactly as it is -- no peer frame ever
reaches it (its BPF filter admits ARP/NDP only). This socket is bound to EtherType 0x88b5, joins the peers'
multicast group (``PACKET_ADD_MEMBERSHIP``, so a NIC's filter lets the group in), and its own classic BPF
filter admits exactly: frames received (not sent) by this host, without an offloaded VLAN tag (those belong
to a VLAN sub-interface), with EtherType 0x88b5, sent to the peers' group MAC. Each frame is read with its
kernel receive time (``SO_TIMESTAMPNS``): a frame that waited in the socket while the process was stopped
is old evidence, and the announcer's machine is told so. Ten frames a second per peer: one ``recvmsg`` per
frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import struct
import time
from collections.abc import Callable

from l2lb.adapters.net.rawsock import (
    _JEQ_K,
    _LD_H_ABS,
    _LD_W_ABS,
    _RET_K,
    _SKF_AD_OFF,
    _SKF_AD_PKTTYPE,
    _SKF_AD_VLAN_TAG_PRESENT,
    PACKET_ADD_MEMBERSHIP,
    PACKET_IGNORE_OUTGOING,
    PACKET_MR_MULTICAST,
    PACKET_OUTGOING,
    SO_ATTACH_FILTER,
    SOL_PACKET,
    RawSocketError,
    _Ins,
    assemble_filter,
)
from l2lb.core.peers import ETH_P_L2LB, GROUP_MAC
from l2lb.obs.log import get_logger

__all__ = ["PEER_BPF_PROGRAM", "PeerPort"]

log = get_logger("l2lb.net.peers")

SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")

PEER_BPF_PROGRAM: list[tuple[str | None, _Ins]] = [
    (None, (_LD_W_ABS, (_SKF_AD_OFF + _SKF_AD_PKTTYPE) & 0xFFFFFFFF, None, None)),
    (None, (_JEQ_K, PACKET_OUTGOING, "drop", None)),
    (None, (_LD_W_ABS, (_SKF_AD_OFF + _SKF_AD_VLAN_TAG_PRESENT) & 0xFFFFFFFF, None, None)),
    (None, (_JEQ_K, 0, None, "drop")),
    (None, (_LD_H_ABS, 12, None, None)),
    (None, (_JEQ_K, ETH_P_L2LB, None, "drop")),
    # to the peers' group only (a NIC filters multicast by the groups joined; a veth or bridge port does not)
    (None, (_LD_W_ABS, 0, None, None)),
    (None, (_JEQ_K, int.from_bytes(GROUP_MAC[:4], "big"), None, "drop")),
    (None, (_LD_H_ABS, 4, None, None)),
    (None, (_JEQ_K, int.from_bytes(GROUP_MAC[4:], "big"), "accept", "drop")),
    ("accept", (_RET_K, 0x40000, None, None)),
    ("drop", (_RET_K, 0, None, None)),
]

# (frame, receive time on the monotonic clock, receive time on the wall clock)
PeerHandler = Callable[["PeerPort", bytes, float, float], None]


class PeerPort:
    """A socket for the peers' frames on one interface."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError as e:
            raise RawSocketError(e.errno, f"no interface {ifname!r}: {e.strerror}") from None
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise RawSocketError(1, "opening an AF_PACKET socket needs CAP_NET_RAW") from None
        try:
            code = assemble_filter(PEER_BPF_PROGRAM)
            buf = ctypes.create_string_buffer(code)
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(code) // 8,
                                                                             ctypes.addressof(buf)))
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((ifname, ETH_P_L2LB))
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                            struct.pack("iHH8s", self.ifindex, PACKET_MR_MULTICAST, 6, GROUP_MAC))
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise RawSocketError(e.errno or 0, f"peer socket on {ifname}: {e.strerror or e}") from None
        self.sock = sock

    def send(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame)
        except OSError as e:
            self.send_errors += 1
            log.debug("peer frame not sent", extra={"interface": self.ifname, "error": str(e)})
            return False
        self.sent += 1
        return True

    def _read(self, handler: PeerHandler) -> None:
        for _ in range(64):
            try:
                data, anc, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(_TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ENETDOWN while the link flaps
                log.debug("peer recv failed", extra={"interface": self.ifname, "error": str(e)})
                return
            mono, wall = time.monotonic(), time.time()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    arrived = sec + nsec / 1e9
                    mono -= max(0.0, wall - arrived)  # how long it waited in the socket
                    wall = arrived
            self.received += 1
            handler(self, data, mono, wall)

    def start(self, loop: asyncio.AbstractEventLoop, handler: PeerHandler) -> None:
        def readable() -> None:
            try:
                self._read(handler)
            except Exception:  # one bad frame must never stop the port
                log.exception("peer frame handler failed", extra={"interface": self.ifname})

        self._loop = loop
        loop.add_reader(self.sock.fileno(), readable)

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()
