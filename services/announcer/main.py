"""``l2lb announcer``: answers ARP / NDP for the VIPs assigned to this node, from raw sockets.

Wiring:

* reads ``NodeAssignments`` from the assignments stream in its own consumer group
  ``announcer:<node>`` and keeps only the messages for its node; each newer (term, seq) message
  replaces the VIP set, which is valid for ``ttl_ms`` from receipt and dropped at expiry;
  a ``NodeRenewal`` naming the digest of the current set extends it; one it cannot match (another
  set, none, or an expired one) makes it ask leases for the full set (at most once per second);
* one AF_PACKET socket per allowed interface (``--interfaces``), driven by the event loop
  (uvloop, installed by ``run_service``);
* publishes a ``Heartbeat`` every ``--heartbeat-interval-ms`` and at once on a link change or a
  change of what it serves, and a ``Conflict`` whenever it defends a VIP; while what it serves is
  unchanged and leases renews by digest, heartbeats carry only the digest of the serving map (the full
  map every ``--heartbeat-full-every-ms``, and at once on a change or a new leases term; docs/bus.md);
* keeps answering through Redis / leases / Kubernetes outages until the validity deadline.

Test/dev input without the leases service: ``--static-assignments FILE`` with
``{"vips": [{"ip": "198.51.100.10", "epoch": 1, "interfaces": ["eth0"]}], "ttl_ms": 5000}``, read at
start and on SIGHUP (``ttl_ms`` counts from each load; omitted = no expiry). It uses term 0, so any
message from a leases leader supersedes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import re
import secrets
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from l2lb.adapters.bus.client import Bus, BusError, add_redis_args, bus_from_args
from l2lb.adapters.http.server import StatusServer
from l2lb.adapters.net.links import Link, LinkMonitor, read_links, vips_configured
from l2lb.adapters.net.rawsock import RawPort, RawSocketError
from l2lb.core import codec
from l2lb.core.announce import AnnouncerState, ConflictSeen, Iface, stream_entry_age_ms
from l2lb.core.fastpath import ReplyMemo
from l2lb.core.messages import (
    Conflict,
    Heartbeat,
    InterfaceInfo,
    Message,
    MessageError,
    NodeAssignments,
    NodeRenewal,
    VipAssignment,
    encode,
    serving_digest,
)
from l2lb.obs import metrics
from l2lb.obs.log import get_logger
from l2lb.runtime.args import add_http_log_args, env_int
from l2lb.runtime.config import parse_with_config
from l2lb.runtime.memory import pin_mmap_threshold
from l2lb.runtime.run import run_service

if TYPE_CHECKING:
    from l2lb.adapters.kube.client import KubeClient

log = get_logger("l2lb.announcer")

# Virtual interfaces that must never answer for LoadBalancer IPs (CNI, bridges, kube-proxy's dummy).
DEFAULT_EXCLUDE = (
    "lxc",
    "veth",
    "cali",
    "cilium",
    "docker",
    "cni",
    "flannel",
    "kube-",
    "vxlan",
    "genev",
    "tunl",
    "weave",
    "br-",
    "virbr",
    "nodelocaldns",
    "dummy",
    "nerdctl",
    "podman",
)

_frames = metrics.counter(
    "l2lb_announcer_frames_total",
    "Frames seen by the announcer's raw sockets, by outcome (answered or drop reason)",
    ("reason",),
)
_requests = metrics.counter(
    "l2lb_announcer_requests_total", "ARP requests and NDP solicitations/adverts seen"
)
_replies = metrics.counter("l2lb_announcer_replies_total", "ARP replies / solicited NAs sent")
_garps = metrics.counter("l2lb_announcer_garps_total", "Gratuitous ARP / unsolicited NA frames sent")
_conflicts = metrics.counter(
    "l2lb_announcer_conflicts_total", "Frames from another MAC claiming an owned VIP"
)
_defences = metrics.counter("l2lb_announcer_defences_total", "Conflicts answered with a defence")
_send_errors = metrics.counter("l2lb_announcer_send_errors_total", "Frames the kernel refused to send")
_memo_hits = metrics.counter(
    "l2lb_announcer_memo_hits_total",
    "Requests decided from the memo of earlier answers (same frame, same VIP set): the hot path's fast case",
)
_kernel_drops = metrics.counter(
    "l2lb_announcer_kernel_drops_total",
    "Frames dropped by the kernel before the announcer read them (socket buffer full)",
)
_assign = metrics.counter(
    "l2lb_announcer_assignments_total",
    "NodeAssignments / NodeRenewal messages for this node by result (applied, renewed, digest_mismatch, "
    "expired, stale, ...; snapshot_requested: full set asked for)",
    ("result",),
)
SNAPSHOT_REQUEST_INTERVAL_S = 1.0  # at most one SnapshotRequest per this interval after unmatched renewals
SAME_BURST_S = 0.1
LOG_VIPS = 20  # VIPs listed by name in a log line (the rest are counted)
_grace = metrics.gauge(
    "l2lb_announcer_leases_grace", "1 while VIPs are kept past their validity because the leases service is silent"
)
_expiries = metrics.counter("l2lb_announcer_expiries_total", "Times the VIP set expired without renewal")
_heartbeats = metrics.counter(
    "l2lb_announcer_heartbeats_total",
    "Heartbeats published, by how the serving map went (full: in the message; omitted: only its digest)",
    ("serving",),
)
# Omit the serving map only while a leases service that understands it is renewing us: only leases
# versions that know omitted maps send NodeRenewal, so an accepted one within this window says so. The
# window is also at most half the renewal's ttl: when leases goes silent (crash, failover) the next one
# gets full maps within about ttl/2, while our VIPs are still valid, so it can adopt them.
RENEWAL_FRESH_S = 5.0
_vips = metrics.gauge("l2lb_announcer_vips", "VIPs currently answered for")
_valid = metrics.gauge("l2lb_announcer_assignment_remaining_seconds", "Validity left of the current VIP set")
_links_up = metrics.gauge(
    "l2lb_announcer_interfaces_up", "Allowed interfaces that are up with an open socket"
)


def _parse_labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"--node-labels: {part!r} is not key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def interface_pattern(specs: list[str] | None) -> re.Pattern[str]:
    """Regexes (each a full match) -> one pattern; default: every interface not named like a virtual one."""
    regs = [r for r in (specs or []) if r.strip()]
    if not regs:
        return re.compile(r"(?!(" + "|".join(re.escape(p) for p in DEFAULT_EXCLUDE) + r")).+")
    for r in regs:
        try:
            re.compile(r)  # raises re.error with the culprit
        except (OverflowError, RecursionError) as e:  # huge repeat counts overflow
            raise ValueError(f"--interfaces {r!r}: {e}") from None
    return re.compile("|".join(f"(?:{r})" for r in regs))


def load_static(path: str, node: str, seq: int) -> NodeAssignments:
    """Read a ``--static-assignments`` file; ValueError with a clear message when it is wrong."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("vips", []), list):
        raise ValueError(f"{path}: expected an object with a 'vips' list")
    ttl = data.get("ttl_ms") or 10 * 365 * 86400 * 1000
    if not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(f"{path}: ttl_ms must be a positive integer")
    vips = []
    for i, v in enumerate(data.get("vips", [])):
        if not isinstance(v, dict):
            raise ValueError(f"{path}: vips[{i}] must be an object")
        try:
            vips.append(VipAssignment.from_obj({"epoch": 1, **v}))
        except MessageError as e:
            raise ValueError(f"{path}: vips[{i}]: {e}") from None
    return NodeAssignments(node=node, term=0, seq=seq, ttl_ms=ttl, sent_at=time.time(), vips=tuple(vips))


def is_backlog(msg: NodeAssignments | NodeRenewal, wall_now: float, skew_s: float) -> bool:
    """Sent longer ago than its ttl plus the allowed clock skew (``skew_s`` <= 0: never)."""
    return skew_s > 0 and wall_now - msg.sent_at > msg.ttl_ms / 1000.0 + skew_s


class HeartbeatEncoder:
    """``encode(heartbeat)``, byte for byte, without re-encoding an unchanged ``serving`` map.

    With thousands of VIPs the map dominates the message (10k VIPs: ~200 KB, ~7 ms of JSON per
    heartbeat, every 100 ms, on the loop that answers ARP). It is encoded once per change of the map
    (:meth:`AnnouncerState.serving` returns the same object while the set is unchanged) and spliced
    into the encoding of the rest. The splice point is unambiguous: inside JSON strings every quote
    is escaped, so ``"serving":{}`` can only be the field itself.
    """

    def __init__(self) -> None:
        self._src: dict[str, int] | None = None
        self._enc = b"{}"

    def __call__(self, hb: Heartbeat) -> bytes:
        if not hb.serving:  # omitted or empty: nothing to splice (and the cached map stays cached)
            return encode(hb)
        if hb.serving is not self._src:
            self._enc = json.dumps(hb.serving, separators=(",", ":")).encode()
            self._src = hb.serving
        small = encode(dataclasses.replace(hb, serving={}))
        return small.replace(b'"serving":{}', b'"serving":' + self._enc, 1)


class AnnouncerService:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.node: str = args.node
        self.allow = interface_pattern(args.interfaces)
        self.state = AnnouncerState(
            args.node,
            garp_count=args.garp_count,
            garp_interval=args.garp_interval_ms / 1000.0,
            reply_rate=args.reply_rate,
            reply_burst=args.reply_burst,
            defend_interval=args.defend_interval_ms / 1000.0,
        )
        self.instance = secrets.token_hex(6)
        self.labels: dict[str, str] = _parse_labels(args.node_labels or "")
        self.kube_labels: dict[str, str] = {}
        self.ports: dict[str, RawPort] = {}
        self.ifaces: dict[str, Iface] = {}  # up interfaces with an open socket
        self.memos: dict[str, ReplyMemo] = {}  # per interface: answers to repeated requests
        self.port_errors: dict[str, str] = {}
        self.bus: Bus | None = None
        self.hb_seq = 0
        self.static_seq = 0
        self.last_static_error = ""
        self.recent_conflicts: list[dict[str, Any]] = []
        self._pending_conflicts: list[Conflict] = []
        self._wake = asyncio.Event()
        self._hb_now = asyncio.Event()
        self._synced: dict[str, int] = {}
        self._retired: dict[str, int] = {}  # counters of sockets closed since start (link flaps)
        self._encode_hb = HeartbeatEncoder()
        # heartbeats without the serving map (see _may_omit): the digest of the current map (computed once
        # per map object), the last full map that reached Redis (map, digest, monotonic, leases term), the
        # last accepted NodeRenewal (monotonic), and the leases term when the heartbeat being sent was built
        self._hb_full_every = args.heartbeat_full_every_ms / 1000.0
        self._digest_of: tuple[dict[str, int] | None, str] = (None, "")
        self._full_sent: tuple[dict[str, int], str, float, int | None] | None = None
        self._renewal_fresh_until: float | None = None  # monotonic: accepted NodeRenewal + its window
        self._hb_term: int | None = None
        self._last_old_warning = 0.0
        # leases-outage grace: when the last NodeAssignments for *any* node arrived, and since when
        # we have been keeping our set without renewal
        self._last_any_assignments = time.monotonic()
        self._last_publish_ok: float | None = None  # last Redis round trip that worked (a heartbeat)
        self._redis_clock: tuple[int, float] | None = None  # (Redis id ms of our last entry, monotonic then)
        self._link_down_at: float | None = None  # last time an answering interface went down
        self._grace_since: float | None = None
        self._last_snapshot_request: float | None = None  # monotonic; rate limit of unmatched renewals
        self.monitor = LinkMonitor(
            self.allow,
            self._on_links,
            poll_interval=args.link_poll_ms / 1000.0,
            use_netlink=not args.no_netlink,
        )
        self.server = StatusServer(
            "announcer", args.http_host, args.http_port, token_file=args.http_token_file
        )
        self.server.add_ready_check("interfaces", self._ready_ifaces)
        self.server.add_status("announcer", self.status)

    # -- readiness / status ----------------------------------------------------------------------
    def _ready_ifaces(self) -> tuple[bool, str]:
        if self.ifaces:
            return True, f"answering on {', '.join(sorted(self.ifaces))}"
        if self.port_errors:
            return False, "; ".join(f"{k}: {v}" for k, v in sorted(self.port_errors.items()))
        return False, f"no interface matching {self.allow.pattern!r} is up"

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        st = self.state.status(now)
        st["instance"] = self.instance
        st["labels"] = self.effective_labels()
        st["interfaces"] = [
            {
                "name": link.name,
                "mac": link.mac,
                "up": link.up,
                "oper": link.oper,
                "addresses": list(link.addresses),
                "socket": link.name in self.ports,
                "io": self.ports[link.name].mode if link.name in self.ports else None,
                "answering": link.name in self.ifaces,
                "multicast_groups": sorted(codec.mac_text(m) for m in self.ports[link.name].groups)
                if link.name in self.ports
                else [],
                "error": self.port_errors.get(link.name),
            }
            for link in self.monitor.links.values()
        ]
        st["link_monitor"] = self.monitor.mode
        st["counters"] = dict(sorted(self.state.stats.items()))
        st["conflicts"] = list(self.recent_conflicts)
        st["bus"] = "disabled" if self.bus is None else self.bus.readiness()[1]
        if self.args.static_assignments:
            st["static_assignments"] = {
                "file": self.args.static_assignments,
                "loads": self.static_seq,
                "error": self.last_static_error or None,
            }
        return st

    def effective_labels(self) -> dict[str, str]:
        return {**self.kube_labels, **self.labels}

    # -- frames (hot path) -----------------------------------------------------------------------
    def _on_frames(self, port: RawPort, frames: list[bytes]) -> None:
        iface = self.ifaces.get(port.ifname)
        memo = self.memos.get(port.ifname)
        if iface is None or memo is None:
            return
        # one clock read per batch (a batch of up to 256 frames is handled within a millisecond)
        replies, conflicts = memo.handle_batch(frames, iface, time.monotonic())
        if replies:
            port.send_many(replies)
        for c in conflicts:
            self._conflict(c)

    def _conflict(self, c: ConflictSeen) -> None:
        log.warning(
            "another MAC claims a VIP we announce; defended",
            extra={"ip": c.ip, "interface": c.interface, "their_mac": c.their_mac, "our_mac": c.our_mac},
        )
        msg = Conflict(
            node=self.node,
            ip=c.ip,
            our_mac=c.our_mac,
            their_mac=c.their_mac,
            interface=c.interface,
            at=time.time(),
            defended=c.defended,
        )
        self._pending_conflicts.append(msg)
        self.recent_conflicts = ([msg.to_dict(), *self.recent_conflicts])[:20]
        self._hb_now.set()

    # -- interfaces ------------------------------------------------------------------------------
    def _on_links(self, old: dict[str, Link], new: dict[str, Link]) -> None:
        now = time.monotonic()
        for name in list(self.ports):
            if name not in new:
                log.warning("interface disappeared", extra={"interface": name})
                self._close_port(name)
        for name, link in new.items():
            prev = old.get(name)
            if name in self.ports and self.ports[name].ifindex != link.index:
                log.warning("interface was re-created: reopening its socket", extra={"interface": name})
                self._close_port(name)
            if not link.up:
                # A packet socket of an interface that goes down (or is bound while down) gets ENETDOWN;
                # libuv (uvloop) then stops watching its fd for good and no frame is read after the link
                # comes back. Close it now, open a fresh one when the link is up again.
                if name in self.ifaces:
                    self._link_down_at = now
                    log.warning(
                        "interface down: not answering on it", extra={"interface": name, "oper": link.oper}
                    )
                self._close_port(name)
                continue
            if name not in self.ports:
                self._open_port(link)
            if name not in self.ports:
                continue
            was = self.ifaces.get(name)
            self.ifaces[name] = Iface(name, link.index, link.mac_bytes)
            if was is None or was.mac != link.mac_bytes:
                if prev is not None:
                    log.info("interface up: announcing again", extra={"interface": name, "mac": link.mac})
                self.state.kick(name, now)
                self._wake.set()
        _links_up.set(len(self.ifaces))
        self._hb_now.set()

    def _open_port(self, link: Link) -> None:
        try:
            port = RawPort(link.name, rcvbuf=self.args.rcvbuf, ring=not self.args.no_packet_ring)
        except RawSocketError as e:
            if self.port_errors.get(link.name) != str(e):
                log.error("cannot open raw socket", extra={"interface": link.name, "error": str(e)})
            self.port_errors[link.name] = str(e)
            return
        self.port_errors.pop(link.name, None)
        self.ports[link.name] = port
        self.memos[link.name] = ReplyMemo(self.state)
        port.set_multicast(self.state.multicast_macs(link.name))
        port.start(asyncio.get_running_loop(), self._on_frames)
        log.info(
            "listening",
            extra={"interface": link.name, "ifindex": port.ifindex, "mac": link.mac, "rcvbuf": port.rcvbuf,
                   "io": port.mode},
        )

    def _close_port(self, name: str) -> None:
        port = self.ports.pop(name, None)
        self.ifaces.pop(name, None)
        memo = self.memos.pop(name, None)
        # per-socket counters of a closed socket stay counted (the metrics are cumulative)
        if memo is not None:
            self._retired["_memo_hits"] = self._retired.get("_memo_hits", 0) + memo.hits
        if port is not None:
            self._retired["_send_errors"] = self._retired.get("_send_errors", 0) + port.send_errors
            port.close()

    def _sync_groups(self) -> None:
        for name, port in self.ports.items():
            port.set_multicast(self.state.multicast_macs(name))

    # -- assignments -----------------------------------------------------------------------------
    def apply(self, msg: NodeAssignments, source: str) -> None:
        ch = self.state.apply(msg, time.monotonic())
        _assign.labels(ch.reason).inc()
        if not ch.accepted:
            if ch.reason not in ("other_node", "stale"):
                log.warning(
                    "assignments rejected", extra={"reason": ch.reason, "term": msg.term, "seq": msg.seq}
                )
            return
        if ch.reason == "term_reset":
            log.warning("the leases term went backwards (election Lease recreated?); accepting it after "
                        "our set expired and nothing newer came", extra={"term": msg.term, "seq": msg.seq})
        for ip in ch.invalid:
            log.warning("ignoring an assigned VIP that is not a usable unicast IP", extra={"ip": ip})
        if ch.added or ch.removed:
            log.info(
                "VIP set changed",
                extra={
                    "source": source,
                    "term": msg.term,
                    "seq": msg.seq,
                    "ttl_ms": msg.ttl_ms,
                    # a log line stays readable with 10k VIPs: the first few, then the counts
                    "added": [f"{v.ip}@{v.epoch}" for v in ch.added[:LOG_VIPS]],
                    "removed": [v.ip for v in ch.removed[:LOG_VIPS]],
                    "added_count": len(ch.added),
                    "removed_count": len(ch.removed),
                    "total": len(self.state.vips),
                },
            )
            self._sync_groups()
            self._hb_now.set()
            self._wake.set()
        if ch.added:
            self._check_kernel_owned([v.ip for v in ch.added])
            # the VIP set is long-lived: keep it out of the cyclic GC's full collections (tail latency)
            gc.freeze()
        _vips.set(len(self.state.vips))

    def _check_kernel_owned(self, ips: list[str]) -> None:
        for ip, ifname in vips_configured(read_links(None).values(), ips):
            log.warning(
                "VIP is configured as an address on this host: the kernel answers ARP/NDP for it too "
                "(remove it; with kube-proxy IPVS set strictARP so kube-ipvs0 does not answer)",
                extra={"ip": ip, "interface": ifname},
            )

    def renew(self, msg: NodeRenewal) -> str | None:
        """Apply a renewal; returns why the full set should be asked for (we cannot match it), or None."""
        ch = self.state.renew(msg, time.monotonic())
        _assign.labels(ch.reason).inc()
        if ch.accepted:
            self._renewal_fresh_until = time.monotonic() + min(RENEWAL_FRESH_S, msg.ttl_ms / 2000.0)
            return None
        if ch.reason in ("digest_mismatch", "expired", "stale_term"):
            return ch.reason
        if ch.reason not in ("other_node", "stale"):
            log.warning("renewal rejected", extra={"reason": ch.reason, "term": msg.term, "seq": msg.seq})
        return None

    async def request_full_set(self, reason: str) -> None:
        """Ask leases for our full set (rate-limited to one request per SNAPSHOT_REQUEST_INTERVAL_S)."""
        now = time.monotonic()
        last = self._last_snapshot_request
        if self.bus is None or (last is not None and now - last < SNAPSHOT_REQUEST_INTERVAL_S):
            return
        self._last_snapshot_request = now
        _assign.labels("snapshot_requested").inc()
        log.info("cannot use a renewal: asking leases for our full set", extra={"reason": reason})
        with contextlib.suppress(BusError):
            await self.bus.request_snapshot("assignments", f"announcer:{self.node}", reason)

    async def _on_message(self, msg: Message, eid: str) -> None:
        if isinstance(msg, NodeAssignments | NodeRenewal):
            if self.too_old(msg, time.time()) or self.backlog(msg, eid):
                return
            # leases is alive (the outage grace relies on this): renewals count as much as full sets
            self._last_any_assignments = time.monotonic()
            if msg.node == self.node:
                if self._grace_since is not None:
                    log.info("leases service is back: assignments renewed after a grace period",
                             extra={"grace_s": round(time.monotonic() - self._grace_since, 3)})
                    self._grace_since = None
                    _grace.set(0)
                if isinstance(msg, NodeAssignments):
                    self.apply(msg, "bus")
                else:
                    why = self.renew(msg)
                    if why is not None:
                        await self.request_full_set(why)

    def _maybe_grace(self, now: float) -> None:
        """At the validity deadline, keep the set a little longer when the leases service is silent."""
        deadline = self.state.deadline
        if deadline is None or now < deadline or not self.leases_silent(now) or not self.state.extend(now + 0.1):
            return
        if self._grace_since is None:
            self._grace_since = now
            _grace.set(1)
            log.warning("no assignments for any node since our last renewal while Redis is reachable: the leases "
                        f"service is down; keeping our VIPs (grace up to {self.args.leases_outage_grace_ms} ms; "
                        "see --leases-outage-grace-ms)", extra={"vips": len(self.state.vips)})

    def leases_silent(self, now: float) -> bool:
        """True when it is safe to keep serving past the validity deadline: grace is enabled and not
        used up, our own Redis connection is healthy, and no assignments for *any* node arrived since
        our last renewal -- the leases service is down, so no other node can have been given our VIPs.
        A node cut off from Redis (bus not ready) never keeps its VIPs: that is the partition case."""
        grace = float(self.args.leases_outage_grace_ms) / 1000.0
        if grace <= 0 or self.bus is None or not self.bus.readiness()[0]:
            return False
        # bus readiness lags a partition (a dead TCP path looks healthy until something times out, e.g.
        # our own link went down): require a Redis round trip -- a heartbeat -- that completed just now
        fresh = max(0.3, 3 * self.args.heartbeat_interval_ms / 1000.0)
        if self._last_publish_ok is None or now - self._last_publish_ok > fresh:
            return False
        last = self.state.last_applied_at
        # our link went down since the last renewal: we cannot know what we missed (a partition, not a
        # leases outage), and assignments may still be on their way once it is back
        if last is not None and self._link_down_at is not None and self._link_down_at >= last:
            return False
        # leases sends every node's set in one burst per renew interval: messages for other nodes within
        # SAME_BURST_S of ours belong to that last burst; anything later means leases is alive
        if last is None or self._last_any_assignments > last + SAME_BURST_S:
            return False
        started = self._grace_since if self._grace_since is not None else now
        return now - started < grace

    def backlog(self, msg: NodeAssignments | NodeRenewal, eid: str) -> bool:
        """An entry Redis stored longer ago than its own ttl (measured on Redis's clock, so exact even
        with skewed host clocks) is a backlog replay -- after a link flap or reconnect we read what we
        missed, in order. Applying it could re-add a VIP that has moved meanwhile and GARP for it."""
        age = stream_entry_age_ms(eid, self._redis_clock, time.monotonic())
        if age is None or age <= msg.ttl_ms:
            return False
        _assign.labels("backlog").inc()
        return True

    def too_old(self, msg: NodeAssignments | NodeRenewal, wall_now: float) -> bool:
        """A backlog entry (announcer restarted behind its group position, Redis came back) must not
        be applied -- it could name VIPs that moved meanwhile and trigger GARPs for them. An entry sent
        longer ago than its ttl plus ``--max-clock-skew-ms`` is dropped (0 disables the check)."""
        if not is_backlog(msg, wall_now, self.args.max_clock_skew_ms / 1000.0):
            return False
        age = wall_now - msg.sent_at
        _assign.labels("too_old").inc()
        if wall_now - self._last_old_warning > 30:
            self._last_old_warning = wall_now
            log.warning("ignoring assignments older than their validity (backlog, or clocks out of sync: "
                        "check NTP or raise --max-clock-skew-ms)",
                        extra={"age_s": round(age, 3), "ttl_ms": msg.ttl_ms, "seq": msg.seq})
        return True

    async def _on_resync(self, reason: str) -> None:
        log.info("assignments stream resync; asking leases for a snapshot", extra={"reason": reason})
        if self.bus is not None:
            with contextlib.suppress(BusError):
                await self.bus.request_snapshot("assignments", f"announcer:{self.node}", reason)

    def reload_static(self) -> None:
        path = self.args.static_assignments
        self.static_seq += 1
        try:
            msg = load_static(path, self.node, self.static_seq)
        except ValueError as e:
            self.last_static_error = str(e)
            log.error("static assignments not loaded; keeping the current set", extra={"error": str(e)})
            return
        self.last_static_error = ""
        self.apply(msg, f"file:{path}")

    # -- loops -----------------------------------------------------------------------------------
    async def _housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            self._maybe_grace(now)
            gone = self.state.expire(now)
            if gone:
                self._grace_since = None
                _grace.set(0)
                _expiries.inc()
                log.warning(
                    "assignments expired without renewal: stopped answering",
                    extra={"vips": [v.ip for v in gone[:LOG_VIPS]], "count": len(gone)},
                )
                self._sync_groups()
                self._hb_now.set()
                _vips.set(0)
            for ifname, frame in self.state.announcements_due(now, list(self.ifaces.values())):
                port = self.ports.get(ifname)
                if port is not None:
                    port.send(frame)
            nxt = self.state.next_event(now)
            timeout = 1.0 if nxt is None else min(1.0, max(0.0, nxt - time.monotonic()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    def heartbeat(self, stopping: bool = False) -> Heartbeat:
        self.hb_seq += 1
        ifs = tuple(
            InterfaceInfo(
                name=link.name,
                mac=link.mac,
                up=link.up and link.name in self.ifaces,
                addresses=link.addresses,
                ifindex=link.index,
            )
            for link in self.monitor.links.values()
        )
        now = time.monotonic()
        serving = {} if stopping else self.state.serving(now)
        src, digest = self._digest_of
        if src is not serving:
            digest = serving_digest(serving)
            self._digest_of = (serving, digest)
        self._hb_term = self._leases_term()
        omit = self._may_omit(serving, digest, now, stopping)
        return Heartbeat(
            node=self.node,
            instance=self.instance,
            seq=self.hb_seq,
            sent_at=time.time(),
            interval_ms=self.args.heartbeat_interval_ms,
            labels=self.effective_labels(),
            interfaces=ifs,
            serving={} if omit else serving,
            stopping=stopping,
            serving_digest=digest,
            serving_omitted=omit,
        )

    def _leases_term(self) -> int | None:
        order = self.state.last_order
        return None if order is None else order[0]

    def _may_omit(self, serving: dict[str, int], digest: str, now: float, stopping: bool) -> bool:
        """True when the heartbeat may carry only the digest of ``serving``: the leases service renewed
        us within min(RENEWAL_FRESH_S, ttl / 2) (it understands omitted maps), the map is the one last sent in full,
        less than --heartbeat-full-every-ms ago, in the same leases term (a new leader gets full maps at
        once), and we are not stopping. An empty map always goes in full (it costs nothing)."""
        if stopping or not serving or self._hb_full_every <= 0:
            return False
        fresh = self._renewal_fresh_until
        sent = self._full_sent
        if fresh is None or now >= fresh or sent is None:
            return False
        src, sent_digest, at, term = sent
        if src is not serving and sent_digest != digest:
            return False
        return now - at < self._hb_full_every and term == self._hb_term

    async def _publish(self, msg: Heartbeat | Conflict) -> bool:
        if self.bus is None:
            return False
        try:
            if isinstance(msg, Heartbeat):
                term = self._hb_term
                eid = await self.bus.publish_raw(self.bus.keys.heartbeats, self._encode_hb(msg))
                if not msg.serving_omitted:
                    self._full_sent = (msg.serving, msg.serving_digest, time.monotonic(), term)
                _heartbeats.labels("omitted" if msg.serving_omitted else "full").inc()
            else:
                eid = await self.bus.publish(self.bus.keys.heartbeats, msg)
            self._last_publish_ok = time.monotonic()
            head = str(eid).partition("-")[0]
            if head.isdigit():
                self._redis_clock = (int(head), self._last_publish_ok)
            return True
        except BusError as e:
            log.debug("publish failed", extra={"error": str(e)})
            return False

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        interval = self.args.heartbeat_interval_ms / 1000.0
        next_metrics = 0.0
        while not stop.is_set():
            self._hb_now.clear()
            while self._pending_conflicts:
                c = self._pending_conflicts[0]
                if not await self._publish(c):
                    break
                self._pending_conflicts.pop(0)
            del self._pending_conflicts[:-100]  # bounded while the bus is down
            if self.bus is not None:
                await self._publish(self.heartbeat())
            if time.monotonic() >= next_metrics:
                self.sync_metrics()
                next_metrics = time.monotonic() + 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hb_now.wait(), timeout=interval)

    def sync_metrics(self) -> None:
        stats = dict(self.state.stats)
        stats.update(self._retired)
        for port in self.ports.values():
            with contextlib.suppress(OSError):
                _, drops = port.kernel_stats()
                if drops:
                    _kernel_drops.inc(drops)
            stats["_send_errors"] = stats.get("_send_errors", 0) + port.send_errors
        for memo in self.memos.values():
            stats["_memo_hits"] = stats.get("_memo_hits", 0) + memo.hits
        for key, val in stats.items():
            delta = val - self._synced.get(key, 0)
            if delta <= 0:
                continue
            self._synced[key] = val
            if key == "garp_frames":
                _garps.inc(delta)
            elif key == "conflicts_defended":
                _defences.inc(delta)
            elif key == "_send_errors":
                _send_errors.inc(delta)
            elif key == "_memo_hits":
                _memo_hits.inc(delta)
            else:
                _frames.labels(key).inc(delta)
                _requests.inc(delta)
                if key == "answered":
                    _replies.inc(delta)
                elif key == "conflict":
                    _conflicts.inc(delta)
        now = time.monotonic()
        _valid.set(max(0.0, self.state.deadline - now) if self.state.deadline is not None else 0.0)
        _vips.set(self.state.serving_count(now))

    async def _kube_labels(self, stop: asyncio.Event) -> None:
        # imported here: the Kubernetes client costs ~40 MiB of RSS and is optional for the announcer
        from l2lb.adapters.kube.client import RESOURCES, KubeError, client_from_args

        client: KubeClient | None = None
        try:
            while not stop.is_set():
                try:
                    if client is None:
                        client = await client_from_args(self.args, user_agent="l2lb-announcer")
                    node = await client.get(RESOURCES["nodes"], self.node)
                    labels = node.get("metadata", {}).get("labels") or {}
                    new = {str(k): str(v) for k, v in labels.items()}
                    if new != self.kube_labels:
                        self.kube_labels = new
                        self._hb_now.set()
                except (TimeoutError, KubeError, OSError) as e:
                    log.warning(
                        "cannot read this node's labels from Kubernetes; keeping the last ones",
                        extra={"node": self.node, "error": str(e)},
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=60.0)
        finally:
            if client is not None:
                await client.close()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self.server.start()
        except OSError as e:
            log.error("cannot serve the status API (another process on the port? use --http-port)",
                      extra={"addr": f"{self.args.http_host}:{self.args.http_port}", "error": str(e)})
            raise SystemExit(1) from None
        self._on_links({}, self.monitor.links)
        if not self.monitor.links:
            log.warning("no interface matches --interfaces", extra={"pattern": self.allow.pattern})
        if self.args.static_assignments:
            self.reload_static()
            loop.add_signal_handler(signal.SIGHUP, self.reload_static)
        tasks = [
            asyncio.create_task(self.monitor.run(stop), name="links"),
            asyncio.create_task(self._housekeeping(stop), name="housekeeping"),
        ]
        consumer = None
        if not self.args.no_bus:
            try:
                self.bus = await bus_from_args(self.args, client_name=f"l2lb-announcer-{self.node}")
            except (BusError, ValueError) as e:  # bad DSN, refused credentials (unreachable is not an error)
                log.error("cannot use the Redis bus", extra={"error": str(e)})
                await self.server.stop()
                raise SystemExit(2) from None
            self.server.add_ready_check("bus", self.bus.readiness)
            consumer = self.bus.consumer(
                self.bus.keys.assignments,
                f"announcer:{self.node}",
                self.instance,
                self._on_message,
                on_resync=self._on_resync,
                block_ms=500,
            )
            tasks.append(asyncio.create_task(consumer.run(stop), name="assignments"))
        tasks.append(asyncio.create_task(self._heartbeats(stop), name="heartbeats"))
        if self.args.kubeconfig:
            tasks.append(asyncio.create_task(self._kube_labels(stop), name="kube-labels"))
        log.info(
            "announcer running",
            extra={
                "node": self.node,
                "instance": self.instance,
                "interfaces": sorted(self.ports),
                "bus": not self.args.no_bus,
            },
        )
        try:
            await stop.wait()
        finally:
            log.info("stopping: no longer answering, telling leases to hand over")
            for name in list(self.ports):
                self._close_port(name)
            self._wake.set()
            self._hb_now.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(t, timeout=3.0)
            if self.bus is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._publish(self.heartbeat(stopping=True)), timeout=1.0)
                await self.bus.close()
            await self.server.stop()


def _add_kube_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``l2lb.adapters.kube.client.add_kube_args`` (same names, envs and defaults), declared
    here so the announcer does not import the Kubernetes client unless ``--kubeconfig`` is given."""
    env = os.environ.get
    g = p.add_argument_group("Kubernetes API (optional: only to read this node's labels)")
    g.add_argument("--kubeconfig", default=env("L2LB_KUBECONFIG") or None,
                   help="kubeconfig path (env L2LB_KUBECONFIG); when set, the Node's labels are reported")
    g.add_argument("--kube-qps", type=float, default=env("L2LB_KUBE_QPS", "20"))
    g.add_argument("--kube-burst", type=int, default=env("L2LB_KUBE_BURST", "40"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="l2lb announcer", description="Answer ARP/NDP for this node's LoadBalancer IPs."
    )
    env = os.environ.get
    p.add_argument(
        "--node",
        default=env("L2LB_NODE") or env("NODE_NAME") or socket.gethostname(),
        help="this node's name (env L2LB_NODE / NODE_NAME; default: hostname)",
    )
    p.add_argument(
        "--interfaces",
        action="extend",
        nargs="+",
        metavar="REGEX",
        help="interfaces allowed to answer (full-match regexes; default: all Ethernet interfaces except "
        "CNI/bridge/virtual ones)",
    )
    p.add_argument(
        "--node-labels",
        default=env("L2LB_NODE_LABELS", ""),
        help="labels to report, k=v,k2=v2 (merged over the Node's labels when --kubeconfig is given)",
    )
    p.add_argument("--heartbeat-interval-ms", type=int, default=100)
    p.add_argument(
        "--heartbeat-full-every-ms", type=int, default=env_int("L2LB_HEARTBEAT_FULL_EVERY_MS", 2000),
        help="while the served VIPs are unchanged and the leases service renews by digest, heartbeats carry "
        "only the digest of the serving map, and the full map at least this often; 0 = always the full map "
        "(env L2LB_HEARTBEAT_FULL_EVERY_MS, default 2000)",
    )
    p.add_argument("--garp-count", type=int, default=5, help="gratuitous announcements per takeover")
    p.add_argument("--garp-interval-ms", type=int, default=1000)
    p.add_argument("--reply-rate", type=float, default=100.0, help="replies per second per source MAC")
    p.add_argument("--reply-burst", type=float, default=50.0, help="token bucket size per source MAC")
    p.add_argument(
        "--defend-interval-ms", type=int, default=10_000, help="at most one defence per VIP per interval"
    )
    p.add_argument("--max-clock-skew-ms", type=int, default=5000,
                   help="bus assignments sent longer ago than ttl + this are backlog and ignored (0: never)")
    p.add_argument(
        "--leases-outage-grace-ms", type=int, default=env_int("L2LB_LEASES_OUTAGE_GRACE_MS", 60000),
        help="keep answering this long past the validity deadline when the leases service sends nothing "
        "to any node while Redis stays reachable (a leases crash/failover); 0 = strict expiry (default 60000)",
    )
    p.add_argument("--rcvbuf", type=int, default=2 << 20,
                   help="receive ring per interface in bytes, mapped into the process (256-byte slots: 8192 "
                   "frames for the default 2 MiB, 55 ms at 150k requests/s)")
    p.add_argument("--no-packet-ring", action="store_true",
                   help="recv/send one frame per system call instead of PACKET_MMAP rings (slower; for debugging)")
    p.add_argument("--link-poll-ms", type=int, default=50, help="/sys polling interval without rtnetlink")
    p.add_argument("--no-netlink", action="store_true", help="poll /sys for link state instead of rtnetlink")
    p.add_argument(
        "--static-assignments",
        metavar="FILE",
        help="test/dev: JSON {vips:[{ip,epoch,interfaces}], ttl_ms} read at start and on SIGHUP",
    )
    p.add_argument(
        "--no-bus", action="store_true", help="test/dev: run without Redis (static assignments only)"
    )
    add_http_log_args(p, http_port=9473)
    add_redis_args(p)
    _add_kube_args(p)
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parse_with_config(parser, argv, "announcer")
    try:
        interface_pattern(args.interfaces)
        _parse_labels(args.node_labels or "")
    except (re.error, ValueError) as e:
        parser.error(str(e))
    for name in ("heartbeat_interval_ms", "garp_interval_ms", "link_poll_ms", "defend_interval_ms"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.heartbeat_full_every_ms < 0:
        parser.error("--heartbeat-full-every-ms must be >= 0")
    if args.garp_count < 0 or args.reply_rate <= 0 or args.reply_burst < 1:
        parser.error("--garp-count must be >= 0, --reply-rate > 0 and --reply-burst >= 1")

    async def _main(stop: asyncio.Event) -> None:
        # the hot path allocates short-lived objects only: collect young generations less often
        gc.set_threshold(20_000, 20, 20)
        pin_mmap_threshold()  # large heartbeat buffers go back to the system (see l2lb.runtime.memory)
        await AnnouncerService(args).run(stop)

    return run_service("announcer", _main, log_level=args.log_level, log_format=args.log_format)
