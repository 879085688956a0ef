"""Peer heartbeats on the LAN: the announcers' evidence about each other that does not go through Redis
(pure: codec, authentication, replay protection, who is alive, quorum, succession claims).

Why: when Redis is down *for everybody*, nobody can move a VIP, so the safe and available choice is to keep
the current assignment; only a node that is cut off from the others must stop. Announcers share the L2
segment of their VIPs, so each one says "I am alive" there directly, and a node can tell "Redis is gone for
all of us" (it still hears a quorum of its peers) from "I am alone" (it does not).

Wire format (one Ethernet frame, no IP: no address, port or firewall rule is needed, kube-proxy never sees
it)::

    dst  0f:6c:32:6c:62:01   locally administered multicast ("l2lb" + 01); the socket joins it
    src  the interface's MAC
    type 0x88b5              IEEE 802 "local experimental" EtherType
    payload:
      "L2PB" | version u8 | flags u8 | counter u64 | wall_ms u64 | term u64 | held_count u32 |
      held_digest 8 bytes | str8 cluster | str8 node | str8 instance | claims u8 |
      claims x (family u8 (4|6) | address 4|16 | epoch u64) |
      mac 16 bytes = HMAC-SHA256(key, everything before it)[:16]  (zeros without a key, flag UNSIGNED)

``flags``: REDIS_OK (the sender's last Redis round trip succeeded recently), CP_FRESH (it heard from the
leases service recently), UNSIGNED (sent without a key), STOPPING (graceful shutdown: forget me now).
``claims`` are the VIPs the sender answers for by *succession* (taken over on the LAN, not given by
leases), each with its epoch: a peer that answers one of them with a lower epoch stops.

Receiving (:class:`PeerView`): a frame counts only if it parses, is for our cluster, carries a valid MAC
(or, without a key, is unsigned: both sides unsigned), its counter is above the last one seen from the
same (node, instance), and its wall-clock *offset* to ours stays where that instance's stream has it.

Clocks: nodes' wall clocks need not agree (a Raspberry Pi without RTC can be days off until NTP syncs;
comparing absolute clocks would make such a node unheard by all its peers). Each instance's offset (its wall
clock minus our *monotonic* clock, so that a step of our own wall clock moves nothing: every peer's frames
would look stale to us for ``relearn_s``) is learned from its frames: it may move forward freely (a forward
step, or the first frame we learnt it from was a replay), a frame whose offset is more than
``replay_window_s`` *behind* the learned one is old -- a replay -- and does not count. A stream that keeps
arriving with new counters at a consistently lower offset for ``relearn_s`` (the sender's clock stepped back)
is adopted again. The offsets are exposed (:meth:`PeerView.clock_offsets`) so a skewed node can be reported.
The announcer stamps its frames with its wall clock *at start* moved on by its monotonic clock, so its own NTP
steps never make it unheard (the stepped-back rule is for senders that stamp their raw wall clock). Residual
risk: frames of an instance recorded before we first heard it could be replayed to us in order; HMAC keeps
them from being forged, and the first genuine frame moves the learned offset past them.
Evidence is kept with the receiver's monotonic time; a node is *heard* while its last good frame is
younger than ``timeout_s``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CP_FRESH",
    "ETH_P_L2LB",
    "GROUP_MAC",
    "REDIS_OK",
    "STOPPING",
    "UNSIGNED",
    "PeerError",
    "PeerFrame",
    "PeerView",
    "decode",
    "encode",
    "held_digest",
    "quorum_size",
]

ETH_P_L2LB = 0x88B5
GROUP_MAC = bytes.fromhex("0f6c326c6201")
MAGIC = b"L2PB"
VERSION = 1
MAC_LEN = 16
MAX_CLAIMS = 40  # 40 x 25 bytes + header stays well inside a 1500-byte frame

REDIS_OK = 0x01
CP_FRESH = 0x02
UNSIGNED = 0x04
STOPPING = 0x08

_HEAD = struct.Struct("!4sBBQQQI8s")


class PeerError(ValueError):
    """A frame that does not count, with the reason (the metric label)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PeerFrame:
    cluster: str
    node: str
    instance: str
    counter: int
    wall_ms: int
    flags: int = 0
    term: int = 0  # the leases term the sender last saw
    held_count: int = 0  # VIPs the sender answers for (all of them)
    held_digest: bytes = b"\0" * 8  # see :func:`held_digest`
    claims: tuple[tuple[str, int], ...] = ()  # (vip, epoch) held by succession

    @property
    def redis_ok(self) -> bool:
        return bool(self.flags & REDIS_OK)

    @property
    def cp_fresh(self) -> bool:
        return bool(self.flags & CP_FRESH)

    @property
    def stopping(self) -> bool:
        return bool(self.flags & STOPPING)


def held_digest(held: Mapping[str, int]) -> bytes:
    """8 bytes naming the set of (vip, epoch) a node answers for (order-independent)."""
    h = hashlib.sha256()
    for ip, epoch in sorted(held.items()):
        h.update(f"{ip}={epoch};".encode())
    return h.digest()[:8]


def _str8(s: str, what: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise PeerError("too_long", f"{what} longer than 255 bytes")
    return bytes([len(b)]) + b


_ETHERTYPE = struct.pack("!H", ETH_P_L2LB)
_NAMES: dict[tuple[str, str, str], bytes] = {}  # (cluster, node, instance) -> their str8 fields (a sender's
_NAMES_MAX = 64  # are the same in every frame it sends)


def _names(cluster: str, node: str, instance: str) -> bytes:
    k = (cluster, node, instance)
    b = _NAMES.get(k)
    if b is None:
        b = _str8(cluster, "cluster") + _str8(node, "node") + _str8(instance, "instance")
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[k] = b
    return b


_KEYED: dict[bytes, hmac.HMAC] = {}  # key -> HMAC-SHA256 state after the key (copied for each frame)


def _mac(key: bytes, body: bytes) -> bytes:
    """HMAC-SHA256(key, body)[:MAC_LEN] (the key's inner and outer state are computed once per key)."""
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= 8:
            _KEYED.clear()
        keyed = _KEYED[key] = hmac.new(key, digestmod=hashlib.sha256)
    h = keyed.copy()
    h.update(body)
    return h.digest()[:MAC_LEN]


def encode(frame: PeerFrame, key: bytes | None, src_mac: bytes) -> bytes:
    """The whole Ethernet frame. At most :data:`MAX_CLAIMS` claims (the highest epochs) are carried."""
    if len(src_mac) != 6:
        raise PeerError("bad_mac", "source MAC must be 6 bytes")
    flags = frame.flags | (0 if key else UNSIGNED)
    if key:
        flags &= ~UNSIGNED
    body = _HEAD.pack(MAGIC, VERSION, flags, frame.counter, frame.wall_ms, frame.term, frame.held_count,
                      frame.held_digest) + _names(frame.cluster, frame.node, frame.instance)
    if frame.claims:
        claims = sorted(frame.claims, key=lambda c: (-c[1], c[0]))[:MAX_CLAIMS]
        tail = bytearray([len(claims)])
        for ip, epoch in claims:
            addr = ipaddress.ip_address(ip)
            tail.append(addr.version)
            tail += addr.packed
            tail += struct.pack("!Q", epoch)
        body += tail
    else:
        body += b"\0"  # no claims
    mac = _mac(key, body) if key else b"\0" * MAC_LEN
    return b"".join((GROUP_MAC, src_mac, _ETHERTYPE, body, mac))


def decode(raw: bytes, key: bytes | None) -> PeerFrame:
    """Parse and authenticate one frame; :class:`PeerError` with a reason for anything else."""
    if len(raw) < 14 + _HEAD.size + 4 + MAC_LEN:
        raise PeerError("short")
    if raw[12:14] != _ETHERTYPE:
        raise PeerError("not_l2lb")
    body, mac = raw[14:-MAC_LEN], raw[-MAC_LEN:]
    # Ethernet padding: frames shorter than 60 bytes are padded; ours are always longer (header alone is 42)
    magic, version, flags, counter, wall_ms, term, held_count, digest = _HEAD.unpack_from(body, 0)
    if magic != MAGIC:
        raise PeerError("not_l2lb")
    if version != VERSION:
        raise PeerError("version", f"version {version}")
    if key:
        if flags & UNSIGNED:
            raise PeerError("unsigned", "an unsigned frame, and we have a key")
        if not hmac.compare_digest(mac, _mac(key, body)):
            raise PeerError("bad_mac")
    elif not flags & UNSIGNED:
        raise PeerError("signed", "a signed frame, and we have no key (set the same peer key on every node)")
    off = _HEAD.size
    strings = []
    for _ in range(3):
        if off >= len(body):
            raise PeerError("malformed", "truncated string")
        n = body[off]
        off += 1
        if off + n > len(body):
            raise PeerError("malformed", "truncated string")
        try:
            strings.append(body[off:off + n].decode())
        except UnicodeDecodeError as e:
            raise PeerError("malformed", "string not UTF-8") from e
        off += n
    if off >= len(body):
        raise PeerError("malformed", "no claim count")
    count = body[off]
    off += 1
    claims = []
    for _ in range(count):
        if off >= len(body):
            raise PeerError("malformed", "truncated claim")
        fam = body[off]
        size = 4 if fam == 4 else 16 if fam == 6 else 0
        if not size or off + 1 + size + 8 > len(body):
            raise PeerError("malformed", "bad claim")
        ip = str(ipaddress.ip_address(body[off + 1:off + 1 + size]))
        (epoch,) = struct.unpack_from("!Q", body, off + 1 + size)
        claims.append((ip, epoch))
        off += 1 + size + 8
    if off != len(body):
        raise PeerError("malformed", "trailing bytes")
    cluster, node, instance = strings
    if not node or not instance:
        raise PeerError("malformed", "empty node or instance")
    return PeerFrame(cluster, node, instance, counter, wall_ms, flags, term, held_count, bytes(digest),
                     tuple(claims))


_DECODED: dict[tuple[bytes, bytes | None], PeerFrame] = {}
_DECODED_MAX = 64


def _decode_memo(raw: bytes, key: bytes | None) -> PeerFrame:
    """:func:`decode` with a small memo of the last good frames (pure: the same bytes and key always give
    the same immutable frame; errors are not memoised). One multicast frame reaches every receiver of a
    process that runs several views -- the deterministic simulator -- with the very same bytes."""
    k = (raw, key)
    f = _DECODED.get(k)
    if f is None:
        f = decode(raw, key)
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[k] = f
    return f


def quorum_size(members: int) -> int:
    """Nodes (counting oneself) that must hear each other for a majority of ``members``."""
    return members // 2 + 1


@dataclass(slots=True)
class _Heard:
    frame: PeerFrame
    at: float  # receiver's monotonic time of the last good frame


@dataclass
class PeerView:
    """What one announcer knows about its peers from their frames (pure; the caller passes its clocks)."""

    node: str
    cluster: str = "l2lb"
    key: bytes | None = None
    timeout_s: float = 0.35
    replay_window_s: float = 2.0
    relearn_s: float = 3.0
    heard: dict[str, _Heard] = field(default_factory=dict)
    last_counter: dict[tuple[str, str], int] = field(default_factory=dict)
    offset: dict[tuple[str, str], float] = field(default_factory=dict)  # sender's wall - our monotonic, seconds
    _own: float = 0.0  # our wall - our monotonic at the last frame (for clock_offsets)
    _behind: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # since, offset
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count (metrics)
    last_rejected: str = ""  # why the last frame that did not count did not
    _alive: tuple[float, dict[str, PeerFrame]] | None = field(default=None, repr=False, compare=False)

    def receive(self, raw: bytes, now: float, wall: float) -> PeerFrame | None:
        """Take one received frame; the frame when it counts, else None (the reason is counted)."""
        try:
            f = _decode_memo(raw, self.key)
        except PeerError as e:
            self._reject(e.reason)
            return None
        if f.cluster != self.cluster:
            self._reject("other_cluster")
            return None
        if f.node == self.node:
            self._reject("own")  # our own frame looped back (or a node name used twice: see the log)
            return None
        k = (f.node, f.instance)
        if f.counter <= self.last_counter.get(k, -1):
            self._reject("replay")
            return None
        off = f.wall_ms / 1000.0 - now
        self._own = wall - now
        learned = self.offset.get(k)
        if learned is not None and off < learned - self.replay_window_s:
            since, first = self._behind.get(k, (now, off))
            if abs(off - first) > self.replay_window_s:
                since, first = now, off
            self._behind[k] = (since, first)
            if now - since < self.relearn_s:
                self._reject("stale")  # older than the stream we know: a replay, or the sender's clock stepped
                return None
            learned = None  # a steady stream with new counters at the lower offset: its clock stepped back
        if self._behind:
            self._behind.pop(k, None)
        self.offset[k] = off if learned is None or off > learned else learned
        self.last_counter[k] = f.counter
        n = len(self.last_counter)
        if n > 64 and n > 4 * len(self.heard):  # old instances of restarted peers (4 x max(heard, 16))
            live = {(h.frame.node, h.frame.instance) for h in self.heard.values()}
            self.last_counter = {kk: v for kk, v in self.last_counter.items() if kk in live or kk == k}
            self.offset = {kk: v for kk, v in self.offset.items() if kk in self.last_counter}
        if f.flags & STOPPING:
            self.heard.pop(f.node, None)
        else:
            h = self.heard.get(f.node)
            if h is None:
                self.heard[f.node] = _Heard(f, now)
            else:
                h.frame, h.at = f, now
        self._alive = None
        return f

    def relearning(self, now: float) -> bool:
        """A peer's frames are judged stale now and its clock offset is relearnt within ``relearn_s`` (its
        clock stepped back, or a replay): who we hear changes when that is over."""
        return any(now - since < self.relearn_s for since, _ in self._behind.values())

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.last_rejected = reason

    def alive(self, now: float) -> dict[str, PeerFrame]:
        """Peers heard within ``timeout_s`` (evidence older than that never counts). Built once per frame
        received and time asked (a tick asks several times); callers must not modify it."""
        memo = self._alive
        if memo is not None and memo[0] == now:
            return memo[1]
        alive = {n: h.frame for n, h in sorted(self.heard.items()) if 0 <= now - h.at <= self.timeout_s}
        self._alive = (now, alive)
        return alive

    def clock_offsets(self, now: float) -> dict[str, float]:
        """Live peers' wall-clock offsets to ours (seconds; positive: theirs is ahead)."""
        alive = self.alive(now)
        return {n: round(self.offset.get((f.node, f.instance), self._own) - self._own, 3) for n, f in alive.items()}

    def heard_at(self, node: str) -> float | None:
        h = self.heard.get(node)
        return None if h is None else h.at

    def quorum(self, members: Iterable[str], now: float) -> bool:
        """Do I (a member or not) and the members I hear make a majority of ``members``?"""
        ms = set(members)
        if not ms:
            return False
        alive = self.alive(now)
        have = sum(1 for m in ms if m in alive) + (1 if self.node in ms else 0)
        return have >= quorum_size(len(ms))

    def someone_has_control_plane(self, now: float) -> bool:
        """A peer I hear still reaches Redis AND hears leases: Redis is not down for everybody."""
        return any(f.redis_ok and f.cp_fresh for f in self.alive(now).values())

    def claims(self, now: float) -> dict[str, tuple[str, int]]:
        """vip -> (node, epoch) of the highest claim among live peers."""
        out: dict[str, tuple[str, int]] = {}
        for n, f in self.alive(now).items():
            for ip, epoch in f.claims:
                cur = out.get(ip)
                if cur is None or (epoch, n) > (cur[1], cur[0]):
                    out[ip] = (n, epoch)
        return out
