"""The announcer's state machine (pure: the caller gives frames, interfaces and a monotonic clock).

* :meth:`AnnouncerState.apply` takes a :class:`~l2lb.core.messages.NodeAssignments`; a message is
  used only when it is for this node and newer in (term, seq) than the last one used. It replaces
  the whole VIP set; the set is valid until ``now + ttl_ms`` (receipt time on the caller's
  monotonic clock) and is dropped entirely at that deadline unless a newer message renews it.
* :meth:`AnnouncerState.renew` takes a :class:`~l2lb.core.messages.NodeRenewal`: same fencing as
  ``apply``; it moves the deadline only when its digest names the set currently applied and that
  set has not expired. It never changes the set: a set it cannot match needs a full message.
* :meth:`AnnouncerState.handle` decides what to do with one received frame: a reply (ARP reply /
  solicited NA), a defence (gratuitous ARP / unsolicited NA after a conflict, at most once per
  ``defend_interval`` per VIP), or a drop with a reason (the metrics label).
* Gratuitous announcements are scheduled on every takeover (VIP added or epoch changed) and when
  an interface comes back up: ``garp_count`` rounds, ``garp_interval`` apart.
* Replies are limited per source MAC with a token bucket (``reply_rate``/s, ``reply_burst``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from l2lb.core import codec
from l2lb.core.codec import ArpFrame, DropReason, NaFrame, NsFrame
from l2lb.core.messages import NodeAssignments, NodeRenewal

__all__ = ["AnnouncerState", "ConflictSeen", "Iface", "Outcome", "Verdict", "Vip"]


@dataclass(frozen=True, slots=True)
class Iface:
    """An interface the announcer serves (name, ifindex, MAC)."""

    name: str
    index: int
    mac: bytes


_ALL_IFACES: frozenset[str] = frozenset()


def _iface_set(names: tuple[str, ...]) -> frozenset[str]:
    """One shared empty set for the common case (every interface): 10k VIPs, not 10k empty frozensets."""
    return frozenset(names) if names else _ALL_IFACES


@dataclass(slots=True)
class Vip:
    ip: str
    addr: bytes  # packed, 4 or 16 bytes
    epoch: int
    interfaces: frozenset[str]  # empty: every interface the announcer serves
    services: tuple[str, ...]
    since: float  # monotonic time it was (re)taken

    @property
    def v6(self) -> bool:
        return len(self.addr) == 16

    def allowed_on(self, ifname: str) -> bool:
        return not self.interfaces or ifname in self.interfaces


@dataclass(frozen=True, slots=True)
class ConflictSeen:
    ip: str
    interface: str
    our_mac: str
    their_mac: str
    defended: bool


class Outcome:
    """Reasons :meth:`AnnouncerState.handle` gives besides the codec's :class:`DropReason`."""

    ANSWERED = "answered"  # a reply was built
    NOT_OWNED = "not_owned"  # the target is not a VIP of this node
    EXPIRED = "expired"  # the VIP set's validity ran out
    WRONG_INTERFACE = "wrong_interface"  # VIP not allowed on the interface it was asked on
    RATE_LIMITED = "rate_limited"  # the asker exceeded its token bucket
    NOT_REQUEST = "not_request"  # ARP reply / NA about an address we do not own
    OWN_FRAME = "own_frame"  # our own MAC as sender (looped back)
    CONFLICT = "conflict"  # another MAC claims a VIP we own (defended or within the hold-off)
    GRATUITOUS = "gratuitous"  # someone announcing an address we do not own


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str
    frames: tuple[bytes, ...] = ()
    conflict: ConflictSeen | None = None


_RATE_LIMITED = Verdict(Outcome.RATE_LIMITED)
# ethertype ARP + htype 1, ptype IPv4, hlen 6, plen 4, op request
_ARP_REQUEST_HEAD = b"\x08\x06\x00\x01\x08\x00\x06\x04\x00\x01"
_ARP_REPLY_HEAD = b"\x08\x06\x00\x01\x08\x00\x06\x04\x00\x02"
_ZERO_MAC = b"\x00" * 6
_PAD18 = b"\x00" * 18  # 42-byte ARP frame padded to the 60-byte Ethernet minimum


@dataclass(frozen=True, slots=True)
class Change:
    accepted: bool
    # apply: "applied", "term_reset", "other_node", "stale", "bad_ttl";
    # renew: "renewed", "other_node", "stale", "stale_term", "bad_ttl", "expired", "digest_mismatch"
    reason: str
    added: tuple[Vip, ...] = ()
    removed: tuple[Vip, ...] = ()
    invalid: tuple[str, ...] = ()  # IPs in the message that are not IP addresses


@dataclass(slots=True)
class _Garp:
    remaining: int
    next_at: float
    only: str | None = None  # a single interface (link came back) or None for all


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float


@dataclass
class AnnouncerState:
    node: str
    garp_count: int = 5
    garp_interval: float = 1.0
    reply_rate: float = 100.0  # replies per second per source MAC
    reply_burst: float = 50.0
    defend_interval: float = 10.0
    max_sources: int = 65536
    vips: dict[bytes, Vip] = field(default_factory=dict)
    deadline: float | None = None  # monotonic; None until the first accepted message
    last_order: tuple[int, int] | None = None
    last_applied_at: float | None = None  # last accepted NodeAssignments or NodeRenewal
    digest: str = ""  # digest the leases service gave the current set ("" = none: renewals cannot match)
    stats: dict[str, int] = field(default_factory=dict)
    _garps: dict[bytes, _Garp] = field(default_factory=dict)
    _buckets: dict[bytes, _Bucket] = field(default_factory=dict)
    _defended: dict[bytes, float] = field(default_factory=dict)
    _serving: dict[str, int] | None = None
    _regress_since: float | None = None
    _by_text: dict[str, Vip] = field(default_factory=dict)  # the assignment's ip text -> its parsed entry
    _serving_of: dict[bytes, Vip] | None = None

    # -- assignments -------------------------------------------------------------------------
    def apply(self, msg: NodeAssignments, now: float, age_s: float = 0.0) -> Change:
        if msg.node != self.node:
            return Change(False, "other_node")
        order = (msg.term, msg.seq)
        if msg.ttl_ms <= 0:
            return Change(False, "bad_ttl")
        reason = "applied"
        if self.last_order is not None and order <= self.last_order:
            # Fencing: an older (term, seq) never overrides. One exception keeps a node from going
            # deaf forever when the leases term really went backwards (its election Lease object was
            # deleted and recreated): once our own set has expired and only lower-term messages have
            # arrived for twice their ttl, the lower term is accepted.
            if self.valid(now) or msg.term >= self.last_order[0]:
                self._regress_since = None
                return Change(False, "stale")
            if self._regress_since is None:
                self._regress_since = now
            if now - self._regress_since < max(1.0, 2 * msg.ttl_ms / 1000.0):
                return Change(False, "stale")
            reason = "term_reset"
        self._regress_since = None
        self.last_order = order
        self.last_applied_at = now
        same = bool(msg.digest) and msg.digest == self.digest
        self.digest = msg.digest
        expired = self.deadline is not None and now >= self.deadline
        self.deadline = _valid_until(msg.ttl_ms, now, age_s)
        if same and not expired:
            # the set we hold, re-sent in full (leases' periodic safety net): nothing to rebuild, and the
            # same dict object keeps the hot path's memo of answers valid
            return Change(True, reason)
        new: dict[bytes, Vip] = {}
        invalid: list[str] = []
        # full sets repeat mostly unchanged sets: reuse the parsed entries of unchanged VIPs
        by_text = {} if expired else self._by_text
        new_by_text: dict[str, Vip] = {}
        for va in msg.vips:
            known = by_text.get(va.ip)
            if (known is not None and known.epoch == va.epoch and known.services == va.services
                    and known.interfaces == _iface_set(va.interfaces)):
                new[known.addr] = known
                new_by_text[va.ip] = known
                continue
            try:
                parsed = ipaddress.ip_address(va.ip)
            except ValueError:
                invalid.append(va.ip)
                continue
            addr = parsed.packed
            if parsed.is_multicast or parsed.is_unspecified or (len(addr) == 4 and addr == b"\xff" * 4):
                invalid.append(va.ip)
                continue
            text = str(parsed)
            vip = Vip(ip=va.ip if text == va.ip else text, addr=addr, epoch=va.epoch,
                      interfaces=_iface_set(va.interfaces), services=va.services, since=now)
            new[addr] = vip
            new_by_text[va.ip] = vip
        self._by_text = new_by_text
        added: list[Vip] = []
        removed: list[Vip] = []
        old = {} if expired else self.vips
        for addr, vip in new.items():
            prev = old.get(addr)
            if prev is vip:
                continue
            if prev is None or prev.epoch != vip.epoch:
                added.append(vip)
                self._schedule(addr, now)
            else:
                vip.since = prev.since
                if prev.interfaces != vip.interfaces and vip.interfaces - prev.interfaces:
                    self._schedule(addr, now)
        for addr, vip in self.vips.items():
            if addr not in new or new[addr].epoch != vip.epoch:
                removed.append(vip)
        for addr in list(self._garps):
            if addr not in new:
                del self._garps[addr]
        for addr in list(self._defended):
            if addr not in new:
                del self._defended[addr]
        if not added and not removed and self._serving_of is self.vips:
            self._serving_of = new  # same (ip, epoch) set: the cached serving map stays right
        self.vips = new
        return Change(True, reason, tuple(added), tuple(removed), tuple(invalid))

    def renew(self, msg: NodeRenewal, now: float, age_s: float = 0.0) -> Change:
        """Keep the current set valid for ``msg.ttl_ms`` more from ``now``, when ``msg`` is newer in
        (term, seq) than anything used so far and names the digest of the set applied last, which
        must still be valid. Never adds, removes or changes a VIP.

        Rejections: ``stale`` (not newer), ``stale_term`` (older term while our set has expired:
        the leases term may have gone backwards, only full messages can reset it),
        ``expired`` (our set ran out: only a full message re-establishes it), ``digest_mismatch``
        (we hold another set, or none). The last three mean: ask for the full set."""
        if msg.node != self.node:
            return Change(False, "other_node")
        if msg.ttl_ms <= 0:
            return Change(False, "bad_ttl")
        order = (msg.term, msg.seq)
        if self.last_order is not None and order <= self.last_order:
            if msg.term < self.last_order[0] and not self.valid(now):
                return Change(False, "stale_term")
            return Change(False, "stale")
        if self.deadline is None:
            return Change(False, "digest_mismatch")  # nothing applied yet
        if now >= self.deadline:
            return Change(False, "expired")
        if not self.digest or msg.digest != self.digest:
            return Change(False, "digest_mismatch")
        self._regress_since = None
        self.last_order = order
        self.last_applied_at = now
        self.deadline = _valid_until(msg.ttl_ms, now, age_s)
        return Change(True, "renewed")

    def expire(self, now: float) -> tuple[Vip, ...]:
        """Drop every VIP when the validity deadline has passed; returns what was dropped."""
        if self.deadline is None or now < self.deadline:
            return ()
        self.digest = ""  # an expired set is re-established by a full message only
        if not self.vips:
            return ()
        gone = tuple(self.vips.values())
        self.vips = {}
        self._by_text = {}
        self._garps.clear()
        self._defended.clear()
        return gone

    def take_over_many(self, entries: Iterable[tuple[str, int, tuple[str, ...], tuple[str, ...]]], *, now: float,
                       valid_for: float) -> list[Vip]:
        """Start answering each (ip, epoch, interfaces, services) without a message from leases (a successor's
        takeover on the LAN), valid at least ``valid_for`` from ``now``; schedules their gratuitous
        announcements. The rest of the set, its order fence and its digest are unchanged (an expired set is
        dropped first, as :meth:`expire` would). Skips IPs that are not usable unicast addresses or are already
        answered with that epoch or a higher one. Returns what was taken."""
        valid = self.valid(now)
        if not valid:  # our own set ran out: only a full message re-establishes it
            self.digest = ""
            self._garps.clear()
        new = dict(self.vips) if valid else {}
        by_text = {t: v for t, v in self._by_text.items() if v.addr in new}
        taken: list[Vip] = []
        for ip, epoch, interfaces, services in entries:
            try:
                parsed = ipaddress.ip_address(ip)
            except ValueError:
                continue
            addr = parsed.packed
            if parsed.is_multicast or parsed.is_unspecified:
                continue
            cur = new.get(addr)
            if cur is not None and cur.epoch >= epoch:
                continue
            vip = Vip(ip=str(parsed), addr=addr, epoch=epoch, interfaces=_iface_set(interfaces), services=services,
                      since=now)
            if cur is not None:
                by_text = {t: v for t, v in by_text.items() if v.addr != addr}
            new[addr] = vip
            by_text[vip.ip] = vip
            self._defended.pop(addr, None)
            self._schedule(addr, now)
            taken.append(vip)
        if not taken:
            return []
        self._by_text = by_text
        self.vips = new  # a new object: the hot path's memo of answers notices the change
        self.deadline = now + valid_for if self.deadline is None else max(self.deadline, now + valid_for)
        return taken

    def drop_superseded(self, claims: Iterable[tuple[str, int]]) -> tuple[Vip, ...]:
        """Stop answering every VIP of ours that ``claims`` ((ip, epoch) given to another node) names with a
        higher epoch: the epoch is the fencing token, so that is a later decision than ours. The digest is
        forgotten (a renewal can no longer name what we hold: the next one asks for the full set). Returns
        what was dropped."""
        by_text = self._by_text
        gone = [v for ip, epoch in claims if (v := by_text.get(ip)) is not None and epoch > v.epoch
                and self.vips.get(v.addr) is v]
        if not gone:
            return ()
        new = dict(self.vips)  # a new object: the hot path's memo of answers notices the change
        for v in gone:
            del new[v.addr]
            self._garps.pop(v.addr, None)
            self._defended.pop(v.addr, None)
        self._by_text = {ip: v for ip, v in by_text.items() if v.addr in new}
        self.vips = new
        self.digest = ""
        return tuple(gone)

    def extend(self, until: float) -> bool:
        """Keep the current set valid until ``until`` (monotonic) without a renewal message.

        Used only for a *leases outage*: the caller has seen no assignments for any node since our
        last renewal while its own Redis connection stayed healthy, so nobody can have been given
        our VIPs. Returns False (and does nothing) when there is nothing to keep."""
        if not self.vips or self.deadline is None:
            return False
        self.deadline = max(self.deadline, until)
        return True

    def valid(self, now: float) -> bool:
        return self.deadline is not None and now < self.deadline

    def serving(self, now: float) -> dict[str, int]:
        """VIP -> epoch currently answered for (empty once expired). Built once per change of the set
        (heartbeats ask every 100 ms); callers must not modify it."""
        if not self.valid(now):
            return {}
        if self._serving is None or self._serving_of is not self.vips:
            self._serving = {v.ip: v.epoch for v in self.vips.values()}
            self._serving_of = self.vips
        return self._serving

    def serving_count(self, now: float) -> int:
        return len(self.vips) if self.valid(now) else 0

    def multicast_macs(self, ifname: str) -> set[bytes]:
        """Solicited-node multicast MACs the socket on ``ifname`` must receive."""
        return {codec.solicited_node_mac(v.addr) for v in self.vips.values() if v.v6 and v.allowed_on(ifname)}

    def status(self, now: float) -> dict[str, object]:
        remaining = None if self.deadline is None else max(0.0, self.deadline - now)
        return {
            "node": self.node,
            "valid": self.valid(now),
            "remaining_s": None if remaining is None else round(remaining, 3),
            "term": None if self.last_order is None else self.last_order[0],
            "seq": None if self.last_order is None else self.last_order[1],
            "vips": [
                {"ip": v.ip, "epoch": v.epoch, "interfaces": sorted(v.interfaces),
                 "services": list(v.services),
                 "since_s": round(now - v.since, 3),
                 "remaining_s": None if remaining is None else round(remaining, 3),
                 "announcing": v.addr in self._garps}
                for v in sorted(self.vips.values(), key=lambda v: (len(v.addr), v.addr))
            ],
        }

    # -- gratuitous announcements ----------------------------------------------------------------
    def announce_frames(self, vip: Vip, iface: Iface) -> list[bytes]:
        if vip.v6:
            return [codec.build_unsolicited_na(iface.mac, vip.addr)]
        return [codec.build_garp_request(iface.mac, vip.addr), codec.build_garp_reply(iface.mac, vip.addr)]

    def _schedule(self, addr: bytes, now: float, only: str | None = None) -> None:
        if self.garp_count > 0:
            self._garps[addr] = _Garp(self.garp_count, now, only)

    def kick(self, ifname: str, now: float) -> None:
        """An interface came (back) up: announce every VIP allowed on it again."""
        for addr, vip in self.vips.items():
            if vip.allowed_on(ifname) and addr not in self._garps:
                self._schedule(addr, now, ifname)

    def announcements_due(self, now: float, ifaces: Iterable[Iface]) -> list[tuple[str, bytes]]:
        """(interface name, frame) pairs to send now; advances the schedule."""
        if not self._garps or not self.valid(now):
            return []
        out: list[tuple[str, bytes]] = []
        ifl = list(ifaces)
        for addr, g in list(self._garps.items()):
            if g.next_at > now:
                continue
            vip = self.vips.get(addr)
            if vip is None:
                del self._garps[addr]
                continue
            for iface in ifl:
                if vip.allowed_on(iface.name) and (g.only is None or g.only == iface.name):
                    out.extend((iface.name, f) for f in self.announce_frames(vip, iface))
            g.remaining -= 1
            if g.remaining <= 0:
                del self._garps[addr]
            else:
                g.next_at = now + self.garp_interval
        self._count("garp_frames", len(out))
        return out

    def next_event(self, now: float) -> float | None:
        """Monotonic time of the next GARP round or expiry, if any."""
        t = self.deadline if self.vips else None
        for g in self._garps.values():
            if t is None or g.next_at < t:
                t = g.next_at
        return t

    # -- frames ----------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _allow(self, src: bytes, now: float) -> bool:
        b = self._buckets.get(src)
        if b is None:
            if len(self._buckets) >= self.max_sources:
                self._prune(now)
            self._buckets[src] = _Bucket(self.reply_burst - 1.0, now)
            return True
        b.tokens = min(self.reply_burst, b.tokens + (now - b.last) * self.reply_rate)
        b.last = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False

    def _prune(self, now: float) -> None:
        full = self.reply_burst / self.reply_rate if self.reply_rate > 0 else float("inf")
        for k in [k for k, b in self._buckets.items() if now - b.last >= full]:
            del self._buckets[k]
        if len(self._buckets) >= self.max_sources:  # still full: forget the oldest half
            for k, _ in sorted(self._buckets.items(), key=lambda kv: kv[1].last)[: len(self._buckets) // 2]:
                del self._buckets[k]

    def _defend(self, vip: Vip, iface: Iface, their: bytes, now: float) -> Verdict:
        last = self._defended.get(vip.addr)
        if last is not None and now - last < self.defend_interval:
            return Verdict(Outcome.CONFLICT)
        self._defended[vip.addr] = now
        c = ConflictSeen(vip.ip, iface.name, codec.mac_text(iface.mac), codec.mac_text(their), True)
        self._count("conflicts_defended")
        return Verdict(Outcome.CONFLICT, tuple(self.announce_frames(vip, iface)), c)

    def _owned(self, addr: bytes, iface: Iface, now: float) -> Vip | str:
        vip = self.vips.get(addr)
        if vip is None:
            return Outcome.NOT_OWNED
        if self.deadline is None or now >= self.deadline:
            return Outcome.EXPIRED
        if not vip.allowed_on(iface.name):
            return Outcome.WRONG_INTERFACE
        return vip

    def handle(self, frame: bytes, iface: Iface, now: float) -> Verdict:
        """Decide about one frame received on ``iface``. Never raises.

        Untagged ARP requests for an owned VIP that pass every check take a fast path (same checks,
        no intermediate objects); everything else goes through :meth:`handle_full`. A property test
        checks that both give the same verdicts.
        """
        if len(frame) >= 42 and frame[12:22] == _ARP_REQUEST_HEAD:
            tpa = frame[38:42]
            vip = self.vips.get(tpa)
            if vip is not None:
                sha = frame[22:28]
                spa = frame[28:32]
                esrc = frame[6:12]
                mac = iface.mac
                deadline = self.deadline
                if (not esrc[0] & 1 and not sha[0] & 1 and _ZERO_MAC not in (esrc, sha)
                        and mac not in (sha, esrc) and spa != tpa and spa[0] < 224 and spa[0] != 127
                        and spa not in self.vips and deadline is not None and now < deadline
                        and (not vip.interfaces or iface.name in vip.interfaces)):
                    if not self._allow(sha, now):
                        self.stats[Outcome.RATE_LIMITED] = self.stats.get(Outcome.RATE_LIMITED, 0) + 1
                        return _RATE_LIMITED
                    self.stats[Outcome.ANSWERED] = self.stats.get(Outcome.ANSWERED, 0) + 1
                    return Verdict(Outcome.ANSWERED, (sha + mac + _ARP_REPLY_HEAD + mac + tpa + sha + spa + _PAD18,))
        return self.handle_full(frame, iface, now)

    def handle_full(self, frame: bytes, iface: Iface, now: float) -> Verdict:
        """:meth:`handle` without the fast path."""
        parsed = codec.parse(frame)
        if isinstance(parsed, DropReason):
            v = Verdict(parsed.value)
        elif isinstance(parsed, ArpFrame):
            v = self._arp(parsed, iface, now)
        elif isinstance(parsed, NsFrame):
            v = self._ns(parsed, iface, now)
        else:
            v = self._na(parsed, iface, now)
        self.stats[v.reason] = self.stats.get(v.reason, 0) + 1
        return v

    def _arp(self, p: ArpFrame, iface: Iface, now: float) -> Verdict:
        if iface.mac in (p.sha, p.eth_src):
            return Verdict(Outcome.OWN_FRAME)
        sender = self.vips.get(p.spa)
        if sender is not None:  # someone else uses one of our VIPs as its address
            owned = self._owned(p.spa, iface, now)
            if isinstance(owned, Vip):
                return self._defend(owned, iface, p.sha, now)
        if p.op != codec.ARP_REQUEST:
            return Verdict(Outcome.NOT_REQUEST)
        if p.spa == p.tpa:
            return Verdict(Outcome.GRATUITOUS)
        owned = self._owned(p.tpa, iface, now)
        if not isinstance(owned, Vip):
            return Verdict(owned)
        if not self._allow(p.sha, now):
            return Verdict(Outcome.RATE_LIMITED)
        return Verdict(Outcome.ANSWERED, (codec.build_arp_reply(p, iface.mac),))

    def _ns(self, p: NsFrame, iface: Iface, now: float) -> Verdict:
        if p.eth_src == iface.mac:
            return Verdict(Outcome.OWN_FRAME)
        if p.src in self.vips:  # someone else sends from one of our VIPs
            owned = self._owned(p.src, iface, now)
            if isinstance(owned, Vip):
                return self._defend(owned, iface, p.slla or p.eth_src, now)
        owned = self._owned(p.target, iface, now)
        if not isinstance(owned, Vip):
            return Verdict(owned)
        asker = p.slla or p.eth_src
        if not self._allow(asker, now):
            return Verdict(Outcome.RATE_LIMITED)
        if p.src == codec.UNSPECIFIED_IP6:  # DAD probe for our VIP: defend on all-nodes (RFC 4861 7.2.4)
            na = codec.build_na(eth_dst=codec.ALL_NODES_MAC, eth_src=iface.mac, src=p.target,
                                dst=codec.ALL_NODES_IP6, target=p.target, solicited=False, override=True,
                                tlla=iface.mac, vlan=p.vlan)
        else:
            na = codec.build_na(eth_dst=asker, eth_src=iface.mac, src=p.target, dst=p.src, target=p.target,
                                solicited=True, override=True, tlla=iface.mac, vlan=p.vlan)
        return Verdict(Outcome.ANSWERED, (na,))

    def _na(self, p: NaFrame, iface: Iface, now: float) -> Verdict:
        their = p.tlla or p.eth_src
        if iface.mac in (their, p.eth_src):
            return Verdict(Outcome.OWN_FRAME)
        owned = self._owned(p.target, iface, now)
        if isinstance(owned, Vip):
            return self._defend(owned, iface, their, now)
        return Verdict(Outcome.NOT_REQUEST)


def _valid_until(ttl_ms: int, now: float, age_s: float) -> float:
    """A message is valid for its ttl from when leases sent it (``age_s`` ago, by Redis's clock when known), not
    from when we read it: a message that waited in a slow read (a lossy link's TCP retransmissions) must not
    keep a VIP past the moment leases counts on when it gives that VIP to another node."""
    return now + ttl_ms / 1000.0 - min(max(age_s, 0.0), ttl_ms / 1000.0)


def stream_entry_age_ms(entry_id: str, redis_clock: tuple[int, float] | None, now: float) -> float | None:
    """How long ago Redis stored a stream entry, on Redis's own clock (no host clock skew involved).

    ``entry_id`` is the entry's id ("<ms>-<seq>": Redis's time when it was added); ``redis_clock`` is
    ``(ms, monotonic)``: the id time of an entry *we* added (a heartbeat) and our monotonic time when
    Redis answered. None when either is unknown or malformed."""
    if redis_clock is None:
        return None
    head, _, _ = entry_id.partition("-")
    if not head.isdigit():
        return None
    redis_now_ms = redis_clock[0] + (now - redis_clock[1]) * 1000.0
    return redis_now_ms - int(head)
