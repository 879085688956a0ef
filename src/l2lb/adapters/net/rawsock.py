"""Raw AF_PACKET sockets for the announcer: one per interface, BPF-filtered, memory-mapped rings.

The socket is created with protocol 0 (it receives nothing), gets its classic BPF filter, and is
only then bound to ``ETH_P_ALL`` on its interface, so no unfiltered frame is ever queued. The
filter passes, and only passes, frames received (not sent) by this host that carry no offloaded
VLAN tag and are:

* ARP (any operation: requests are answered; replies and announcements reveal conflicts), or
* IPv6 with next header ICMPv6 and type 135 (NS) or 136 (NA: conflicts),

each optionally inside one in-line 802.1Q tag.

Frames move through ``PACKET_MMAP`` rings (TPACKET_V2) shared with the kernel: received frames are
read straight from the RX ring (no ``recv`` system call per frame) and replies are written into the
TX ring and handed to the kernel with one ``send`` per batch. The RX ring is the receive buffer
(``rcvbuf`` bytes of 256-byte slots: 8192 frames for 2 MiB); the classic socket path
(``recv``/``send`` per frame, ``SO_RCVBUF``) is used when the kernel refuses the rings, or with
``ring=False``. :meth:`RawPort.start` registers the socket with the running loop (``loop.add_reader``;
uvloop in production) and hands each wake-up's frames to the handler as one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import mmap
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


class _RingRefused(Exception):
    pass


BatchHandler = Callable[["RawPort", list[bytes]], None]

# PACKET_MMAP (TPACKET_V2), see Documentation/networking/packet_mmap.rst
PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_QDISC_BYPASS = 20
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4
_TX_BUSY = TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING
_TX_DATA = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where a TX frame's bytes start in its slot
_PAGE = 4096
_HDR = struct.Struct("=IIIHH")  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net (struct tpacket2_hdr)
_SEND_REQ = struct.Struct("=III")  # tp_status, tp_len, tp_snaplen


class _Ring:
    """The RX and TX rings of one socket, mapped into this process (RX first, then TX)."""

    def __init__(self, sock: socket.socket, rx_bytes: int, tx_frames: int, frame: int):
        per_block = _PAGE // frame
        rx_blocks = max(1, rx_bytes // _PAGE)
        tx_blocks = max(1, -(-tx_frames // per_block))
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(SOL_PACKET, PACKET_LOSS, 1)  # a frame the kernel cannot send is skipped, not retried forever
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("IIII", _PAGE, rx_blocks, frame, rx_blocks * per_block))
        sock.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack("IIII", _PAGE, tx_blocks, frame, tx_blocks * per_block))
        self.frame = frame
        self.rx_n = rx_blocks * per_block
        self.tx_n = tx_blocks * per_block
        self.tx_base = rx_blocks * _PAGE
        self.size = (rx_blocks + tx_blocks) * _PAGE
        self.mm = mmap.mmap(sock.fileno(), self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.rx_i = 0
        self.tx_i = 0

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()


class RawPort:
    """An AF_PACKET socket bound to one interface.

    ``rcvbuf`` sizes the RX ring (or the socket buffer without rings); ``tx_frames`` the TX ring.
    ``ring=False`` forces the classic per-frame ``recv``/``send`` path."""

    def __init__(self, ifname: str, *, rcvbuf: int = 2 << 20, batch: int = 256, snaplen: int = 2048,
                 ring: bool = True, tx_frames: int = 1024, frame_size: int = 256, flush_every: int = 32):
        self.ifname = ifname
        # within a batch, replies leave every ``flush_every`` frames (and at its end): one system call for
        # many frames, without the first reply of a long batch waiting for the last one
        self.flush_every = flush_every
        self.batch = batch
        self.snaplen = snaplen
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self.tx_full = 0
        self._groups: set[bytes] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ring: _Ring | None = None
        self._pending = 0
        self._batching = False
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError as e:
            raise RawSocketError(e.errno, f"no interface {ifname!r}: {e.strerror}") from None
        if ring:
            try:
                self.sock, self._ring = self._open(rcvbuf, tx_frames, frame_size)
            except _RingRefused as e:
                log.warning("packet rings refused by the kernel; using recv/send per frame (slower)",
                            extra={"interface": ifname, "error": str(e.__cause__)})
        if self._ring is None:
            self.sock, _ = self._open(rcvbuf, 0, 0)
            self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        else:
            self.rcvbuf = self._ring.rx_n * frame_size

    def _open(self, rcvbuf: int, tx_frames: int, frame_size: int) -> tuple[socket.socket, _Ring | None]:
        """A filtered socket bound to the interface; with rings when ``frame_size`` is non-zero."""
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise RawSocketError(1, "opening an AF_PACKET socket needs CAP_NET_RAW") from None
        ring: _Ring | None = None
        try:
            code = assemble_filter(BPF_PROGRAM)
            buf = ctypes.create_string_buffer(code)
            fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            with contextlib.suppress(OSError):  # Linux >= 4.20; the filter drops outgoing anyway
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            with contextlib.suppress(OSError):  # replies skip the qdisc layer (Linux >= 3.14)
                sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            if frame_size:
                try:
                    ring = _Ring(sock, rcvbuf, tx_frames, frame_size)
                except OSError as e:
                    raise _RingRefused() from e
            else:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((self.ifname, ETH_P_ALL))
            sock.setblocking(False)
        except _RingRefused:
            sock.close()
            raise
        except OSError as e:
            if ring is not None:
                ring.close()
            sock.close()
            raise RawSocketError(e.errno or 0, f"raw socket on {self.ifname}: {e.strerror or e}") from None
        return sock, ring

    @property
    def mode(self) -> str:
        """``"ring"`` (PACKET_MMAP) or ``"socket"`` (recv/send per frame)."""
        return "ring" if self._ring is not None else "socket"

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
        """Up to ``limit`` (default ``batch``) frames waiting now; never blocks."""
        out: list[bytes] = []
        n = limit or self.batch
        r = self._ring
        if r is not None:
            mm = r.mm
            unpack = _HDR.unpack_from
            i = r.rx_i
            size = r.frame
            count = r.rx_n
            while len(out) < n:
                off = i * size
                if not mm[off] & TP_STATUS_USER:
                    break
                _, _, snap, mac, _ = unpack(mm, off)
                out.append(mm[off + mac:off + mac + snap])
                mm[off:off + 4] = b"\0\0\0\0"  # TP_STATUS_KERNEL: the slot is the kernel's again
                i = i + 1 if i + 1 < count else 0
            r.rx_i = i
        else:
            recv = self.sock.recv
            snaplen = self.snaplen
            for _ in range(n):
                try:
                    out.append(recv(snaplen))
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:  # e.g. ENETDOWN while the link flaps
                    log.debug("recv failed", extra={"interface": self.ifname, "error": str(e)})
                    break
        self.received += len(out)
        return out

    def send(self, frame: bytes) -> bool:
        """Transmit one frame. With rings it is queued in the TX ring and handed to the kernel at the end
        of the current receive batch (or at once outside of one)."""
        r = self._ring
        if r is None:
            try:
                self.sock.send(frame)
            except OSError as e:
                self.send_errors += 1
                log.debug("send failed", extra={"interface": self.ifname, "error": str(e)})
                return False
            self.sent += 1
            return True
        n = len(frame)
        if n > r.frame - _TX_DATA:
            self.send_errors += 1
            log.debug("frame too long for the TX ring", extra={"interface": self.ifname, "length": n})
            return False
        mm = r.mm
        off = r.tx_base + r.tx_i * r.frame
        status = mm[off]
        if status & _TX_BUSY:  # the kernel still holds this slot (its frame is being sent)
            self.flush()
            off = r.tx_base + r.tx_i * r.frame  # flush may have moved the index back to the kernel's head
            status = mm[off]
            if status & _TX_BUSY:
                self.tx_full += 1
                self.send_errors += 1
                return False
        if status & TP_STATUS_WRONG_FORMAT:
            self.send_errors += 1
        mm[off + _TX_DATA:off + _TX_DATA + n] = frame
        _SEND_REQ.pack_into(mm, off, TP_STATUS_SEND_REQUEST, n, n)
        r.tx_i = r.tx_i + 1 if r.tx_i + 1 < r.tx_n else 0
        self._pending += 1
        if not self._batching or self._pending >= self.flush_every:
            self.flush()
        return True

    def send_many(self, frames: list[bytes]) -> None:
        """:meth:`send` for several frames (the hot path's replies): same result, fewer lookups per frame."""
        r = self._ring
        if r is None or self._pending or not self._batching:
            for f in frames:
                self.send(f)
            return
        mm = r.mm
        size = r.frame
        base = r.tx_base
        count = r.tx_n
        cap = size - _TX_DATA
        every = self.flush_every
        pack = _SEND_REQ.pack_into
        i = r.tx_i
        pending = 0
        for f in frames:
            off = base + i * size
            n = len(f)
            if mm[off] & _TX_BUSY or n > cap or pending >= every:
                # slot still in use, odd frame, or time to flush: the careful path
                r.tx_i = i
                self._pending = pending
                self.send(f)
                pending = self._pending
                i = r.tx_i
                continue
            mm[off + _TX_DATA:off + _TX_DATA + n] = f
            pack(mm, off, TP_STATUS_SEND_REQUEST, n, n)
            i = i + 1 if i + 1 < count else 0
            pending += 1
        r.tx_i = i
        self._pending = pending

    def flush(self) -> None:
        """Hand every queued TX-ring frame to the kernel (one system call).

        A frame the kernel did not take in this call (socket send buffer full: EAGAIN; link going down) is
        dropped and counted in ``send_errors``, never left queued: sent later, an ARP reply or a
        gratuitous ARP could claim an address this node has given up meanwhile."""
        if not self._pending:
            return
        queued, self._pending = self._pending, 0
        failed: OSError | None = None
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            failed = e
        r = self._ring
        assert r is not None
        mm = r.mm
        # The kernel sends ring frames in order from its own head and stops at the first it cannot send, so
        # what it left is the tail of what was queued: withdraw it and move our index back to the kernel's
        # head (the next frame must go where the kernel will look first).
        left = 0
        i = r.tx_i
        for _ in range(queued):
            j = i - 1 if i else r.tx_n - 1
            off = r.tx_base + j * r.frame
            if not mm[off] & TP_STATUS_SEND_REQUEST:
                break
            mm[off:off + 4] = b"\0\0\0\0"
            left += 1
            i = j
        r.tx_i = i
        if left or failed is not None:
            log.debug("send failed", extra={"interface": self.ifname, "dropped": left,
                                            "error": str(failed) if failed else "kernel took only part of the ring"})
        self.send_errors += left
        self.sent += queued - left

    def kernel_stats(self) -> tuple[int, int]:
        """(packets, drops) counted by the kernel since the last call (PACKET_STATISTICS resets)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        return packets, drops

    def start(self, loop: asyncio.AbstractEventLoop, handler: BatchHandler) -> None:
        """Call ``handler(port, frames)`` with up to ``batch`` frames per call whenever frames wait; replies
        sent from the handler leave in one TX-ring flush after it returns."""

        recv_batch = self.recv_batch

        def on_readable() -> None:
            frames = recv_batch()
            if not frames:
                return
            self._batching = True
            try:
                handler(self, frames)
            except Exception:  # one bad frame must never stop the port
                log.exception("frame handler failed", extra={"interface": self.ifname})
            finally:
                self._batching = False
                if self._pending:
                    self.flush()

        self._loop = loop
        loop.add_reader(self.sock.fileno(), on_readable)

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        if self._ring is not None:
            self._ring.close()
        self.sock.close()
