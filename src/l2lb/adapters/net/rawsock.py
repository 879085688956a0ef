"""Raw AF_PACKET sockets for the announcer: one per interface, BPF-filtered, drained in batches.

The socket is created with protocol 0 (it receives nothing), gets its classic BPF filter, and is
only then bound to ``ETH_P_ALL`` on its interface, so no unfiltered frame is ever queued. The
filter passes, and only passes, frames received (not sent) by this host that carry no offloaded
VLAN tag and are:

* ARP (any operation: requests are answered; replies and announcements reveal conflicts), or
* IPv6 with next header ICMPv6 and type 135 (NS) or 136 (NA: conflicts),

each optionally inside one in-line 802.1Q tag. The receive buffer is 4 MiB (SO_RCVBUFFORCE when
allowed, else SO_RCVBUF). :meth:`RawPort.start` registers the socket with the running loop
(``loop.add_reader``; uvloop in production) and drains up to ``batch`` frames per wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import struct
from collections.abc import Callable

from l2lb.obs.log import get_logger

__all__ = ["BPF_PROGRAM", "RawPort", "RawSocketError", "assemble_filter"]

log = get_logger("l2lb.net.rawsock")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_MULTICAST = 0
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4

# classic BPF opcodes
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_JEQ_K = 0x15
_RET_K = 0x06
_SKF_AD_OFF = -0x1000
_SKF_AD_PKTTYPE = 4
_SKF_AD_VLAN_TAG_PRESENT = 48

# (opcode, k, jump-if-true label, jump-if-false label); labels resolved by assemble_filter
_Ins = tuple[int, int, str | None, str | None]


def _ndp_block(off: int, label: str) -> list[tuple[str | None, _Ins]]:
    """IPv6 at ``off``: next header 58 and ICMPv6 type 135/136 (no extension headers)."""
    return [
        (label, (_LD_B_ABS, off + 6, None, None)),
        (None, (_JEQ_K, 58, None, "drop")),
        (None, (_LD_B_ABS, off + 40, None, None)),
        (None, (_JEQ_K, 135, "accept", None)),
        (None, (_JEQ_K, 136, "accept", "drop")),
    ]


BPF_PROGRAM: list[tuple[str | None, _Ins]] = [
    (None, (_LD_W_ABS, (_SKF_AD_OFF + _SKF_AD_PKTTYPE) & 0xFFFFFFFF, None, None)),
    (None, (_JEQ_K, PACKET_OUTGOING, "drop", None)),
    (None, (_LD_W_ABS, (_SKF_AD_OFF + _SKF_AD_VLAN_TAG_PRESENT) & 0xFFFFFFFF, None, None)),
    (None, (_JEQ_K, 0, None, "drop")),  # tag offloaded: the frame belongs to a VLAN sub-interface
    (None, (_LD_H_ABS, 12, None, None)),
    (None, (_JEQ_K, 0x0806, "accept", None)),
    (None, (_JEQ_K, 0x86DD, "ip6", None)),
    (None, (_JEQ_K, 0x8100, None, "drop")),
    (None, (_LD_H_ABS, 16, None, None)),
    (None, (_JEQ_K, 0x0806, "accept", None)),
    (None, (_JEQ_K, 0x86DD, "ip6q", "drop")),
    *_ndp_block(14, "ip6"),
    *_ndp_block(18, "ip6q"),
    ("accept", (_RET_K, 0x40000, None, None)),
    ("drop", (_RET_K, 0, None, None)),
]


def assemble_filter(prog: list[tuple[str | None, _Ins]]) -> bytes:
    """Resolve labels and pack into an array of ``struct sock_filter`` (u16 code, u8 jt, u8 jf, u32 k)."""
    where = {label: i for i, (label, _) in enumerate(prog) if label}
    out = []
    for i, (_, (code, k, jt, jf)) in enumerate(prog):
        t = 0 if jt is None else where[jt] - i - 1
        f = 0 if jf is None else where[jf] - i - 1
        if not (0 <= t < 256 and 0 <= f < 256):
            raise ValueError(f"BPF jump out of range at {i}")
        out.append(struct.pack("HBBI", code, t, f, k))
    return b"".join(out)


class RawSocketError(OSError):
    pass


FrameHandler = Callable[["RawPort", bytes], None]


class RawPort:
    """An AF_PACKET socket bound to one interface."""

    def __init__(self, ifname: str, *, rcvbuf: int = 4 << 20, batch: int = 256, snaplen: int = 2048):
        self.ifname = ifname
        self.batch = batch
        self.snaplen = snaplen
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self._groups: set[bytes] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError as e:
            raise RawSocketError(e.errno, f"no interface {ifname!r}: {e.strerror}") from None
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise RawSocketError(1, "opening an AF_PACKET socket needs CAP_NET_RAW") from None
        self.sock = sock
        try:
            code = assemble_filter(BPF_PROGRAM)
            buf = ctypes.create_string_buffer(code)
            fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            with contextlib.suppress(OSError):  # Linux >= 4.20; the filter drops outgoing anyway
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise RawSocketError(e.errno or 0, f"raw socket on {ifname}: {e.strerror or e}") from None
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- multicast -------------------------------------------------------------------------------
    def _membership(self, op: int, mac: bytes) -> None:
        mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_MULTICAST, 6, mac)
        self.sock.setsockopt(SOL_PACKET, op, mreq)

    def set_multicast(self, macs: set[bytes]) -> None:
        """Receive exactly these multicast MACs (besides broadcast): join new ones, leave old ones."""
        for mac in sorted(macs - self._groups):
            try:
                self._membership(PACKET_ADD_MEMBERSHIP, mac)
                self._groups.add(mac)
            except OSError as e:
                log.warning("cannot join multicast group",
                            extra={"interface": self.ifname, "mac": mac.hex(":"), "error": str(e)})
        for mac in sorted(self._groups - macs):
            with contextlib.suppress(OSError):
                self._membership(PACKET_DROP_MEMBERSHIP, mac)
            self._groups.discard(mac)

    @property
    def groups(self) -> frozenset[bytes]:
        return frozenset(self._groups)

    # -- I/O -------------------------------------------------------------------------------------
    def recv_batch(self, limit: int | None = None) -> list[bytes]:
        out: list[bytes] = []
        recv = self.sock.recv
        n = self.snaplen
        for _ in range(limit or self.batch):
            try:
                out.append(recv(n))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ENETDOWN while the link flaps
                log.debug("recv failed", extra={"interface": self.ifname, "error": str(e)})
                break
        self.received += len(out)
        return out

    def send(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame)
        except OSError as e:
            self.send_errors += 1
            log.debug("send failed", extra={"interface": self.ifname, "error": str(e)})
            return False
        self.sent += 1
        return True

    def kernel_stats(self) -> tuple[int, int]:
        """(packets, drops) counted by the kernel since the last call (PACKET_STATISTICS resets)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        return packets, drops

    def start(self, loop: asyncio.AbstractEventLoop, handler: FrameHandler) -> None:
        """Call ``handler(port, frame)`` for every received frame, draining up to ``batch`` per wake-up."""
        recv = self.sock.recv
        n = self.snaplen
        batch = self.batch

        def on_readable() -> None:
            got = 0
            for _ in range(batch):
                try:
                    frame = recv(n)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    log.debug("recv failed", extra={"interface": self.ifname, "error": str(e)})
                    break
                got += 1
                try:
                    handler(self, frame)
                except Exception:  # one bad frame must never stop the port
                    log.exception("frame handler failed", extra={"interface": self.ifname})
            self.received += got

        self._loop = loop
        loop.add_reader(self.sock.fileno(), on_readable)

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()
