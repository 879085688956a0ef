"""Every decision of the announcer, as one pure state machine: events in, commands out, clock passed in.

The service (``services/announcer/main.py``) is a shell around it: its raw sockets, Redis consumer, link
monitor and timers turn what happens into :data:`Event` values, it feeds them to :meth:`AnnouncerMachine.feed`
and carries out the :data:`Command` values that come back, in order. A deterministic simulator drives the
same interface with a virtual clock. Nothing here reads a clock, a socket, a file or a random source: the
same events with the same times always give the same commands.

API::

    m = AnnouncerMachine(MachineConfig(node="n1", instance="7f3a09c2e1b4"), now=0.0)
    cmds = m.feed(Tick(now=0.0, wall=1.7e9))        # any event -> list of commands, in order
    replies, cmds = m.on_frames("eth0", frames, now)  # the hot path: same decisions as feed(Frames(...)),
                                                      # replies as a plain list, no command objects for them
    m.next_wakeup(now)       # monotonic time of the next Tick the machine needs (None: nothing timed)
    m.answers(ip, "eth0", now)   # read-only: would a request for ``ip`` on eth0 be answered now
    m.status(now)            # read-only view for /v1/status

Clocks: every event carries ``now``, the caller's monotonic clock in seconds; events that produce messages
for others also carry ``wall`` (Unix seconds, used only for ``sent_at``/``at`` fields and the backlog check
of ``NodeAssignments.sent_at``). Conflict records made on the hot path get their wall time from the offset
between the two clocks seen at the last event that carried both.

Events (frozen dataclasses):

* :class:`Tick` -- time passes; runs the timers (grace, expiry, GARP rounds, heartbeat due). ``bus_ok`` is
  the bus client's own view of Redis (False while a command to Redis is failing).
* :class:`Assignments` / :class:`Renewal` -- a ``NodeAssignments`` / ``NodeRenewal`` read from the bus (for
  any node: messages for other nodes are the evidence that leases is alive, and a VIP given elsewhere with a
  higher epoch stops ours at once), with its stream entry id; or a full set from ``--static-assignments``
  (``source="file:..."``: no backlog checks).
* :class:`Resync` -- the assignments consumer lost its position (stream trimmed, group recreated).
* :class:`Published` -- the outcome of a :class:`PublishHeartbeat`: the Redis round trip (ok/failed, the
  entry id Redis gave, how many of the queued conflicts went out before the heartbeat).
* :class:`LinksChanged` -- every interface the link monitor allows, with link state and whether the shell
  holds an open raw socket on it (an interface is *answering* when it is up with a socket).
* :class:`LabelsChanged` -- the Node's labels from Kubernetes (merged under ``--node-labels``).
* :class:`Frames` -- frames received on an answering interface (the simulator's form of :meth:`on_frames`).
* :class:`Stop` -- graceful shutdown: stop answering, tell leases (a last heartbeat with ``stopping``).

Commands (frozen dataclasses):

* :class:`SendFrames` -- transmit frames on an interface (replies, GARP / unsolicited NA rounds, defences).
* :class:`SetMulticast` -- the exact set of multicast MACs the socket on an interface must receive
  (solicited-node groups of the IPv6 VIPs allowed there).
* :class:`StartAnswering` / :class:`StopAnswering` -- the answered VIP set changed (the shell checks that
  the kernel does not own an added VIP; a simulator records who answers what).
* :class:`PublishHeartbeat` -- publish the queued conflicts, then the heartbeat, then feed back
  :class:`Published`. At most one is outstanding (besides the last one of :class:`Stop`).
* :class:`RequestSnapshot` -- ask leases for this node's full set.
* :class:`ReportConflict` -- another MAC claimed a VIP we answer for, and we defended it (log it; the
  conflict also rides on the next :class:`PublishHeartbeat`).
* :class:`Log`, :class:`Count`, :class:`Gauge` -- facts for the log and the metrics (``l2lb_announcer_*``).

Rules (each has a unit test in tests/announcer/test_machine*.py):

1. The VIP set is the last ``NodeAssignments`` for this node that is newer in (term, seq) than anything
   used before (:class:`~l2lb.core.announce.AnnouncerState`); it is answered for until ``now + ttl_ms`` of
   the last accepted full set or matching ``NodeRenewal``, then dropped entirely -- unless a grace rule holds.
2. Grace (leases outage): past the deadline the set is kept, 100 ms at a time (checked 50 ms ahead of
   the deadline, so a late timer leaves no gap), while Redis round trips
   succeed (a heartbeat published within max(300 ms, 3 heartbeat intervals), the bus client sees Redis),
   no ``NodeAssignments``/``NodeRenewal`` for *any* node arrived after our last renewal's burst (leases is
   down, so nobody was given our VIPs), no answering interface went down since that renewal, and the grace
   began less than ``leases_outage_grace_ms`` ago. Anything else expires strictly.
3. A VIP stops at once when a newer set for this node drops it or changes its epoch, or when a set for
   another node names it with a higher epoch (the epoch is the fencing token: higher is a later decision).
4. Messages stored in Redis longer ago than their ttl (Redis's clock, from our own entries' ids) are backlog
   and ignored; only while Redis's clock is unknown to us, those sent longer ago than ttl +
   ``max_clock_skew_ms`` by the sender's wall clock (a sender with a skewed clock darkens nobody).
5. A renewal that cannot be matched (another digest, an expired set, an older term) asks for the full set,
   at most once per second.
6. Gratuitous ARP (request + reply) / unsolicited NA: ``garp_count`` rounds ``garp_interval_ms`` apart on
   every takeover (new VIP or new epoch), for newly allowed interfaces, and on an interface that comes (back)
   up; none once the set expired.
7. Conflicts (RFC 5227): defended at most once per ``defend_interval_ms`` per VIP; each defence is reported.
8. Heartbeats every ``heartbeat_interval_ms`` and at once after any change of what is answered, of the
   interfaces or labels, or a conflict; the serving map is left out (digest only) while it is unchanged,
   was sent in full in this leases term less than ``heartbeat_full_every_ms`` ago, and leases renewed by
   digest within min(5 s, ttl/2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from l2lb.core import codec, peers
from l2lb.core.announce import AnnouncerState, ConflictSeen, Iface, stream_entry_age_ms
from l2lb.core.fastpath import ReplyMemo
from l2lb.core.messages import (
    Conflict,
    Heartbeat,
    InterfaceInfo,
    NodeAssignments,
    NodeRenewal,
    StandbyVip,
    serving_digest,
)

__all__ = [
    "AnnouncerMachine",
    "Assignments",
    "Command",
    "Count",
    "Event",
    "Frames",
    "Gauge",
    "LabelsChanged",
    "LinkState",
    "LinksChanged",
    "Log",
    "MachineConfig",
    "PeerFrameReceived",
    "PublishHeartbeat",
    "Published",
    "Renewal",
    "ReportConflict",
    "RequestSnapshot",
    "Resync",
    "SendFrames",
    "SendPeerFrame",
    "SetMulticast",
    "StartAnswering",
    "Stop",
    "StopAnswering",
    "Tick",
    "is_backlog",
]

SNAPSHOT_REQUEST_INTERVAL_S = 1.0  # at most one SnapshotRequest per this interval after unmatched renewals
SNAPSHOT_URGENT_INTERVAL_S = 0.25  # ... or per this one while our set is valid but would expire within it
SAME_BURST_S = 0.1  # leases sends every node's set in one burst: messages this close to ours are that burst
GRACE_STEP_S = 0.1  # the grace keeps the set this much longer per check
# ... and checks this long before the deadline, so a timer that runs a little late never leaves a gap in
# which requests go unanswered (the hot path checks the deadline per frame)
GRACE_LEAD_S = 0.05
# Omit the serving map only while a leases service that understands it is renewing us: only leases
# versions that know omitted maps send NodeRenewal, so an accepted one within this window says so. The
# window is also at most half the renewal's ttl: when leases goes silent (crash, failover) the next one
# gets full maps within about ttl/2, while our VIPs are still valid, so it can adopt them.
RENEWAL_FRESH_S = 5.0
OLD_WARNING_EVERY_S = 30.0
REDIS_OK_S = 0.3  # the REDIS_OK flag of our peer frames: a Redis round trip worked this recently
CP_FRESH_S = 0.5  # the CP_FRESH flag: a leases message arrived this recently
PEER_REPLAY_WINDOW_S = 2.0
LOG_VIPS = 20  # VIPs listed by name in a log line (the rest are counted)
MAX_PENDING_CONFLICTS = 100  # conflicts kept for publication while Redis is down (the newest)
RECENT_CONFLICTS = 20


# -- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MachineConfig:
    node: str
    instance: str  # random per process start (the shell draws it): part of every heartbeat
    labels: Mapping[str, str] = field(default_factory=dict)  # --node-labels (win over the Node's labels)
    bus: bool = True  # False: --no-bus (no heartbeats, no snapshot requests, no grace)
    heartbeat_interval_ms: int = 100
    heartbeat_full_every_ms: int = 2000
    garp_count: int = 5
    garp_interval_ms: int = 1000
    reply_rate: float = 100.0
    reply_burst: float = 50.0
    defend_interval_ms: int = 10_000
    max_clock_skew_ms: int = 5000
    leases_outage_grace_ms: int = 60_000
    # LAN peer heartbeats (l2lb.core.peers), the Redis-down freeze and succession takeovers
    peers: bool = False
    cluster: str = "l2lb"
    peer_key: bytes | None = None  # None: frames go unsigned (lab/dev only)
    peer_interval_ms: int = 100
    peer_timeout_ms: int = 350
    takeover_after_ms: int = 300  # a successor of rank r waits this + (r - 1) x takeover_rank_step_ms
    takeover_rank_step_ms: int = 150
    cp_silence_ms: int = 500  # no leases message for this long: the control plane is silent for us


# -- events ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tick:
    now: float
    wall: float
    bus_ok: bool = True
    # our reads of the assignments stream complete (False: a read is overdue -- blocked far past its block time,
    # e.g. TCP retransmissions on a lossy link: silence from leases may then be ours, not leases')
    reads_ok: bool = True


@dataclass(frozen=True, slots=True)
class Assignments:
    msg: NodeAssignments
    now: float
    wall: float
    entry_id: str | None = None  # the stream entry's id ("<ms>-<seq>", Redis's clock); None: not from Redis
    source: str = "bus"  # "bus" or "file:<path>" (static assignments: no backlog checks)


@dataclass(frozen=True, slots=True)
class Renewal:
    msg: NodeRenewal
    now: float
    wall: float
    entry_id: str | None = None


@dataclass(frozen=True, slots=True)
class Resync:
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class Published:
    ok: bool  # the heartbeat reached Redis
    now: float
    entry_id: str = ""  # id Redis gave our last successful XADD of this command (its clock)
    conflicts_sent: int = 0  # how many of the command's conflicts reached Redis (in order)
    error: str = ""


@dataclass(frozen=True, slots=True)
class LinkState:
    name: str
    index: int
    mac: str  # "02:00:00:00:00:01"
    up: bool  # administratively up with carrier
    socket: bool  # the shell holds an open raw socket on it
    addresses: tuple[str, ...] = ()
    oper: str = ""

    @property
    def answering(self) -> bool:
        return self.up and self.socket


@dataclass(frozen=True, slots=True)
class LinksChanged:
    links: tuple[LinkState, ...]
    now: float


@dataclass(frozen=True, slots=True)
class LabelsChanged:
    labels: Mapping[str, str]
    now: float


@dataclass(frozen=True, slots=True)
class Frames:
    iface: str
    frames: tuple[bytes, ...]
    now: float


@dataclass(frozen=True, slots=True)
class PeerFrameReceived:
    iface: str
    frame: bytes  # the whole Ethernet frame (EtherType 0x88b5)
    now: float  # when it arrived (the kernel's receive time, on our monotonic clock: a frame that waited in
    wall: float  # the socket while we were stopped is old evidence), and the same instant on the wall clock


@dataclass(frozen=True, slots=True)
class Stop:
    now: float
    wall: float


Event = (Tick | Assignments | Renewal | Resync | Published | LinksChanged | LabelsChanged | Frames
         | PeerFrameReceived | Stop)


# -- commands --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendFrames:
    iface: str
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SendPeerFrame:
    iface: str
    frame: bytes  # on the peer socket of the interface (EtherType 0x88b5, to peers.GROUP_MAC)


@dataclass(frozen=True, slots=True)
class SetMulticast:
    iface: str
    macs: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class StartAnswering:
    vips: tuple[tuple[str, int], ...]  # (ip, epoch)


@dataclass(frozen=True, slots=True)
class StopAnswering:
    ips: tuple[str, ...]
    # "reassigned" (a newer set), "expired", "superseded" (higher epoch elsewhere), "peer_claim" (a peer took it
    # over with a higher epoch), "stopping"
    reason: str


@dataclass(frozen=True, slots=True)
class PublishHeartbeat:
    heartbeat: Heartbeat
    conflicts: tuple[Conflict, ...] = ()  # publish these first, in order; stop at the first failure


@dataclass(frozen=True, slots=True)
class RequestSnapshot:
    reason: str


@dataclass(frozen=True, slots=True)
class ReportConflict:
    conflict: Conflict


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # "debug" | "info" | "warning" | "error"
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Count:
    # "assignments" (label: result), "expiries", "heartbeats" (label: full|omitted), "peer_frames" (label:
    # accepted or why not), "takeovers"
    name: str
    label: str = ""
    n: int = 1


@dataclass(frozen=True, slots=True)
class Gauge:
    name: str  # "leases_grace", "vips", "interfaces_up", "peers_heard", "peers_quorum", "peers_frozen", "peers_held"
    value: float


Command = (SendFrames | SendPeerFrame | SetMulticast | StartAnswering | StopAnswering | PublishHeartbeat
           | RequestSnapshot | ReportConflict | Log | Count | Gauge)

_NO_COMMANDS: tuple[Command, ...] = ()
_PEER_FRAME_ACCEPTED = Count("peer_frames", "accepted")  # (immutable: one for every accepted frame)


def is_backlog(msg: NodeAssignments | NodeRenewal, wall_now: float, skew_s: float) -> bool:
    """Sent longer ago than its ttl plus the allowed clock skew (``skew_s`` <= 0: never)."""
    return skew_s > 0 and wall_now - msg.sent_at > msg.ttl_ms / 1000.0 + skew_s


@dataclass(slots=True)
class _Outgoing:
    heartbeat: Heartbeat
    term: int | None  # leases term when it was built
    conflicts: tuple[Conflict, ...]


class AnnouncerMachine:
    """See the module docstring."""

    def __init__(self, config: MachineConfig, now: float):
        self.config = config
        self.node = config.node
        self.state = AnnouncerState(
            config.node,
            garp_count=config.garp_count,
            garp_interval=config.garp_interval_ms / 1000.0,
            reply_rate=config.reply_rate,
            reply_burst=config.reply_burst,
            defend_interval=config.defend_interval_ms / 1000.0,
        )
        self._hb_interval = config.heartbeat_interval_ms / 1000.0
        self._hb_full_every = config.heartbeat_full_every_ms / 1000.0
        self._grace_s = config.leases_outage_grace_ms / 1000.0
        self._cp_silence_s = config.cp_silence_ms / 1000.0
        self._wall_offset = 0.0  # wall - monotonic, from the last event carrying both
        self._bus_ok = False
        self._stopped = False
        # interfaces: every link the monitor allows (heartbeat content), and the answering ones with the
        # memo of answers of each (the hot path)
        self._links: dict[str, LinkState] = {}
        self._answering: dict[str, tuple[Iface, ReplyMemo]] = {}
        self._retired_memo_hits = 0
        self._link_down_at: float | None = None  # last time an answering interface went down
        self._kube_labels: dict[str, str] = {}
        # leases liveness and the outage grace
        self._last_any_assignments = now
        self._grace_since: float | None = None
        self._last_snapshot_request: float | None = None
        self._unmatched_since: float | None = None  # a renewal we could not use since our last accepted full set
        self._last_old_warning: float | None = None
        # Redis round trips: the last that worked (monotonic) and Redis's clock from our own entry's id
        self._last_publish_ok: float | None = None
        self._redis_clock: tuple[int, float] | None = None
        # heartbeats
        self._hb_seq = 0
        self._hb_due = now  # the first one at once
        self._hb_again = False  # a change happened while one was outstanding: the next one at once
        self._outgoing: _Outgoing | None = None
        # the heartbeat's interfaces and labels, and what they were built from (see _heartbeat)
        self._hb_parts: tuple[object, object, object, tuple[InterfaceInfo, ...], dict[str, str]] = (
            None, None, None, (), {})
        self._digest_of: tuple[dict[str, int] | None, str] = (None, "")
        self._full_sent: tuple[dict[str, int], str, float, int | None] | None = None
        self._renewal_fresh_until: float | None = None
        # conflicts: waiting for publication (oldest first) and the recent ones for the status API
        self._pending: list[Conflict] = []
        self.recent_conflicts: list[dict[str, Any]] = []
        # LAN peers: what we hear (PeerView), the quorum membership and the standby list from our last full
        # set, the VIPs we took over on the LAN (LAN-held: our claims), which rule keeps the set past its
        # deadline, and when our next peer frame is due
        self.peers = (peers.PeerView(config.node, config.cluster, config.peer_key, config.peer_timeout_ms / 1000.0,
                                     PEER_REPLAY_WINDOW_S) if config.peers else None)
        self._members: tuple[str, ...] = ()
        self._standby: dict[str, StandbyVip] = {}
        self._standby_term = -1  # the leases term that made the standby list
        self._standby_waits: tuple[tuple[str, float], ...] = ()  # (holder, silence before a takeover) pairs
        self._check_soon = False  # a peer frame may have made a takeover due: tick at once
        self.held: dict[str, int] = {}
        self._keeping: str | None = None  # "grace" | "freeze" | "lan_held" while one keeps the set past D
        # when the freeze began keeping the set (until leases renews us or the set expires): leases messages
        # from before it do not say leases is alive once Redis is back (the freeze judged them already)
        self._freeze_since: float | None = None
        self._last_leases_msg: float | None = None  # any NodeAssignments/NodeRenewal (CP_FRESH, cp silence)
        self._peer_due = now
        self._peer_counter = 0
        self._held_digest_of: tuple[dict[str, int] | None, bytes] = (None, b"")
        self._gone: set[str] = set()  # peers that said they were stopping (silent at once)
        # when each peer (which instance of it) was last heard answering for at least one VIP: a holder that
        # restarted (node blip, pod recreated) is heard again at once but serves nothing until the control plane
        # gives it its set
        self._serving_heard: dict[str, tuple[str, float]] = {}
        # every live claim heard (vip -> node, epoch, when): a peer's claims span several frames (pages of
        # peers.MAX_CLAIMS), PeerView keeps only its last frame
        self._peer_claims: dict[str, tuple[str, int, float]] = {}
        self._reads_ok = True  # Tick.reads_ok
        self._frame_clock: float | None = None  # our peer frames' clock - monotonic (see _peer_frames)
        self._why_logged: float | None = None

    # -- the interface -------------------------------------------------------------------------------
    def feed(self, ev: Event) -> list[Command]:
        """Apply one event; the commands to carry out, in order."""
        handler = _HANDLERS.get(type(ev))
        if handler is None:
            raise TypeError(f"not an announcer event: {ev!r}")
        return handler(self, ev)

    def _on_frames_event(self, ev: Frames) -> list[Command]:
        replies, cmds = self.on_frames(ev.iface, list(ev.frames), ev.now)
        out: list[Command] = [SendFrames(ev.iface, tuple(replies))] if replies else []
        out.extend(cmds)
        return out

    def _on_assignments_event(self, ev: Assignments) -> list[Command]:
        self._wall_offset = ev.wall - ev.now
        return self._on_assignments(ev)

    def _on_renewal_event(self, ev: Renewal) -> list[Command]:
        self._wall_offset = ev.wall - ev.now
        return self._on_renewal(ev)

    def _on_labels(self, ev: LabelsChanged) -> list[Command]:
        self._kube_labels = dict(ev.labels)
        self._heartbeat_soon()
        return []

    def on_frames(self, ifname: str, frames: list[bytes], now: float) -> tuple[list[bytes], Sequence[Command]]:
        """The hot path: decide about ``frames`` received on ``ifname``; (replies to send there, commands)."""
        entry = self._answering.get(ifname)
        if entry is None:
            return [], _NO_COMMANDS
        replies, conflicts = entry[1].handle_batch(frames, entry[0], now)
        if conflicts:
            return replies, self._conflicts(conflicts, now)
        return replies, _NO_COMMANDS

    def next_wakeup(self, now: float) -> float | None:
        """Monotonic time of the next :class:`Tick` this machine needs (a GARP round, the validity
        deadline, the next heartbeat), or None."""
        t = self.state.next_event(now)
        deadline = self.state.deadline
        if t is not None and t == deadline and self._grace_s > 0 and self.config.bus and now < t - GRACE_LEAD_S:
            t -= GRACE_LEAD_S  # the grace, if it holds, extends the set before it runs out
        if self.config.bus and self._outgoing is None and not self._stopped and (t is None or self._hb_due < t):
            t = self._hb_due
        if self.peers is not None and not self._stopped:  # our frames; takeovers are checked with them
            if t is None or self._peer_due < t:
                t = self._peer_due
            if self._standby_waits:
                tk = self._takeover_wakeup(now)
                if tk is not None and tk < t:
                    t = tk
        return t

    def unsettled(self, now: float) -> str:
        """Why one of this machine's decisions (what it answers, a takeover, keeping the set past its deadline)
        may still change by itself at a later time, or "" when none can -- provided the periodic inputs go on
        as they are (renewals of the set, the same peers' frames, our heartbeats' round trips): a change of
        those is news, and news is the caller's to watch. A simulator skips a stretch of time only while
        every machine is settled; the timers counted here are the ones that would otherwise be cut short.

        Unsettled: a takeover check is due; the set is kept past its deadline by the freeze or a LAN-held takeover
        (the leases-outage grace is settled: see :meth:`next_decision_at`); renewals do not match the set (a full
        set is asked for); the set is not renewed (no accepted renewal for half its ttl: it runs out at the
        deadline); the control plane is silent for us (or our Redis round trips are not fresh) while we are a
        successor of a holder we do not hear (a takeover comes due); a peer we heard has missed its frames and is
        not timed out yet (quorum and takeover rules change when it is). (A successor whose control plane is silent
        is settled while it hears every holder it stands by for, or while the LAN would not let it take over: no
        quorum, or a peer with a control plane.) Also while recent history that the rules read differs from what the
        periodic inputs leave behind (a fault arriving now would meet a state that rest would have overwritten):
        leases spoke after our last renewal's burst, a lower term is being waited out, a full set was asked for
        within the request interval, a peer's clock offset is being relearnt, a peer's takeover claim is recent."""
        if self._stopped:
            return ""
        if self._check_soon:
            return "a takeover check is due"
        grace = self._keeping == "grace"
        if self._keeping is not None and not grace:
            return f"the set is kept past its deadline ({self._keeping})"
        if self._unmatched_since is not None:
            return "renewals do not match our set: waiting for the full set"
        st = self.state
        if st.vips and st.deadline is not None and not grace:
            last = st.last_applied_at
            if last is None or now - last > (st.deadline - last) / 2.0:
                return f"the set is not renewed: it runs out in {st.deadline - now:.3f} s"
            if self._last_any_assignments > last + SAME_BURST_S:
                # leases spoke after our last renewal's burst: were it silent from now on, the grace would not
                # hold (until our next renewal: at rest every node is renewed in one burst)
                return "leases spoke after our last renewal"
        if st._regress_since is not None:
            return "a lower leases term is waited out"
        last_req = self._last_snapshot_request
        if last_req is not None and now - last_req < SNAPSHOT_REQUEST_INTERVAL_S:
            return "a full set was asked for just now (the next request waits)"
        pv = self.peers
        if pv is not None:
            if pv.relearning(now):
                return "a peer's clock offset is being relearnt"
            timeout = self.config.peer_timeout_ms / 1000.0
            if any(now - at <= timeout for _, _, at in self._peer_claims.values()):
                return "a peer's takeover claim is recent"
            cp_silent = self._cp_silent(now)
            missed = 1.5 * self.config.peer_interval_ms / 1000.0
            if self._standby and (cp_silent or not self._redis_ok(now)) and self._lan_ok(now):
                # the control plane is silent for us and the LAN would let us take over: a holder we do not hear
                # (any more) is taken over once its silence is long enough
                for ip, sb in self._standby.items():
                    if sb.holder != self.node and ip not in self.held and self._quiet_for(sb.holder, now) > missed:
                        return f"the control plane is silent for us and holder {sb.holder} too: a takeover may come due"
            for node, h in pv.heard.items():
                if missed < now - h.at <= pv.timeout_s:
                    return f"peer {node} missed its frames: it times out in {pv.timeout_s - (now - h.at):.3f} s"
        return ""

    def settled(self, now: float) -> bool:
        """No decision of this machine changes by itself (see :meth:`unsettled`)."""
        return not self.unsettled(now)

    def redis_ok(self, now: float) -> bool:
        """A Redis round trip of ours worked within REDIS_OK_S (the REDIS_OK flag of our peer frames)."""
        return self._redis_ok(now)

    def frame_flags(self, now: float) -> tuple[bool, bool]:
        """(REDIS_OK, CP_FRESH) as our next peer frame would carry them."""
        last = self._last_leases_msg
        return self._redis_ok(now), last is not None and now - last <= CP_FRESH_S

    def control_plane_heard(self, now: float) -> bool:
        """A leases message (for any node) arrived within cp_silence_ms: the control plane is not silent for us."""
        return not self._cp_silent(now)

    def _cp_silent(self, now: float) -> bool:
        """No leases message (for any node) within cp_silence_ms: the control plane is silent for us."""
        last = self._last_leases_msg
        return last is None or now - last >= self._cp_silence_s

    def next_decision_at(self, now: float) -> float | None:
        """When a decision of a settled machine changes by itself all the same (monotonic), or None: the end of
        the leases-outage grace while it keeps the set (with leases silent and Redis reachable nothing else
        changes until then)."""
        if self._keeping == "grace" and self._grace_since is not None:
            return self._grace_since + self._grace_s
        return None

    def skipped(self, dt: float) -> None:
        """``dt`` of settled time passed that this machine did not perceive (a simulator skipped it; the clock it
        is fed did not move): what measures a stretch of time across it counts it -- the leases-outage grace.
        (Everything else it times is refreshed by its periodic inputs, which is what settled means.)"""
        if self._grace_since is not None:
            self._grace_since -= dt

    def _takeover_wakeup(self, now: float) -> float | None:
        """The next moment a takeover condition changes by itself (a holder silent long enough, the control
        plane silent, our Redis round trips too old), so a takeover happens then and not only with the next
        peer frame; only moments still ahead (conditions that hold already are checked on every event, see
        ``_check_soon``). At rest all of them lie beyond the next peer frame: no extra wakeups."""
        if self._check_soon:
            return now
        assert self.peers is not None
        best: float | None = None
        last = self._last_leases_msg
        cp_silent = self._cp_silent(now)
        ok = self._last_publish_ok
        redis_ok = ok is not None and now - ok <= REDIS_OK_S
        if not cp_silent and redis_ok:
            assert last is not None and ok is not None
            best = min(last + self._cp_silence_s, ok + REDIS_OK_S)
            if best <= now:
                best = None
        else:
            heard = self.peers.heard_at
            for holder, wait in self._standby_waits:
                at = heard(holder)
                if at is None:
                    continue
                due = at + wait + 1e-6  # just past it: _maybe_take_over compares the silence with >=
                if due > now and (best is None or due < best):
                    best = due
        return best

    def answers(self, ip: str, ifname: str, now: float) -> bool:
        """Would a valid request for ``ip`` on ``ifname`` be answered at ``now`` (rate limits aside)?"""
        if ifname not in self._answering or not self.state.valid(now):
            return False
        vip = self.state._by_text.get(ip)
        return vip is not None and vip.addr in self.state.vips and vip.allowed_on(ifname)

    @property
    def answering_interfaces(self) -> frozenset[str]:
        return frozenset(self._answering)

    @property
    def memo_hits(self) -> int:
        """Requests answered from the memo since start (all interfaces, also closed ones)."""
        return self._retired_memo_hits + sum(m.hits for _, m in self._answering.values())

    def lan_quorum(self, now: float) -> bool:
        """We and the members we hear on the LAN make a majority of the members leases named."""
        return self.peers is not None and self.peers.quorum(self._members, now)

    @property
    def leases_heard_at(self) -> float:
        """When the last (non-backlog) NodeAssignments/NodeRenewal for any node arrived (monotonic)."""
        return self._last_any_assignments

    @property
    def pending_conflicts(self) -> int:
        return len(self._pending)

    def effective_labels(self) -> dict[str, str]:
        return {**self._kube_labels, **self.config.labels}

    def status(self, now: float) -> dict[str, Any]:
        st = self.state.status(now)
        st["instance"] = self.config.instance
        st["labels"] = self.effective_labels()
        st["counters"] = dict(sorted(self.state.stats.items()))
        st["conflicts"] = list(self.recent_conflicts)
        st["leases_grace"] = self._grace_since is not None
        st["keeping"] = self._keeping
        if self.peers is not None:
            pv = self.peers
            st["peers"] = {
                "cluster": self.config.cluster, "signed": self.config.peer_key is not None,
                "heard": {n: {"age_s": round(now - (pv.heard_at(n) or now), 3), "redis_ok": f.redis_ok,
                              "cp_fresh": f.cp_fresh, "term": f.term, "vips": f.held_count,
                              "claims": dict(f.claims)} for n, f in pv.alive(now).items()},
                "members": list(self._members), "quorum": pv.quorum(self._members, now),
                "someone_has_control_plane": pv.someone_has_control_plane(now),
                "held": dict(self.held), "standby": len(self._standby), "rejected": dict(pv.rejected),
            }
        return st

    # -- timers --------------------------------------------------------------------------------------
    def _tick(self, ev: Tick) -> list[Command]:
        now = ev.now
        self._wall_offset = ev.wall - now
        self._bus_ok = ev.bus_ok
        self._reads_ok = ev.reads_ok
        out: list[Command] = []
        self._maybe_keep(now, out)
        gone = self.state.expire(now)
        if gone:
            self._grace_since = None
            self._keeping = None
            self._freeze_since = None
            self.held.clear()
            out.append(Gauge("leases_grace", 0))
            out.append(Gauge("peers_frozen", 0))
            out.append(Count("expiries"))
            out.append(Log("warning", "assignments expired without renewal: stopped answering",
                           {"vips": [v.ip for v in gone[:LOG_VIPS]], "count": len(gone)}))
            out.append(StopAnswering(tuple(v.ip for v in gone), "expired"))
            self._multicast(out)
            self._heartbeat_soon()
            out.append(Gauge("vips", 0))
        if self.peers is not None and not self._stopped:
            self._check_soon = False
            self._maybe_take_over(now, out)
        if self.state._garps:
            frames = self.state.announcements_due(now, [i for i, _ in self._answering.values()])
            self._send_grouped(frames, out)
        if self.peers is not None and not self._stopped and now >= self._peer_due:
            self._peer_due = now + self.config.peer_interval_ms / 1000.0
            if self._peer_claims:
                old = now - 2 * self.config.peer_timeout_ms / 1000.0
                self._peer_claims = {ip: c for ip, c in self._peer_claims.items() if c[2] >= old}
            self._peer_frames(now, ev.wall, 0, out)
        if (self.config.bus and not self._stopped and self._outgoing is None and now >= self._hb_due):
            out.append(self._publish(now, ev.wall))
        return out

    @staticmethod
    def _send_grouped(frames: list[tuple[str, bytes]], out: list[Command]) -> None:
        """(interface, frame) pairs -> one SendFrames per interface (the order on each kept)."""
        by_iface: dict[str, list[bytes]] = {}
        for ifname, frame in frames:
            by_iface.setdefault(ifname, []).append(frame)
        out.extend(SendFrames(ifname, tuple(fs)) for ifname, fs in by_iface.items())

    # -- validity and the leases-outage grace ----------------------------------------------------------
    def _maybe_keep(self, now: float, out: list[Command]) -> None:
        """At the validity deadline (50 ms ahead), keep the set 100 ms longer when a rule allows it: the
        leases-outage grace (rule 2), the Redis-down freeze or a LAN-held takeover (rule 9)."""
        deadline = self.state.deadline
        if deadline is None or now < deadline - GRACE_LEAD_S or not self.state.vips:
            return
        rule = ("grace" if self._leases_silent(now) and self._no_takeover_elsewhere(now)
                else "freeze" if self._freeze_holds(now)
                else "lan_held" if self.held and self._lan_ok(now) else None)
        if rule is None:
            if self.peers is not None and self._why_logged != deadline:  # once per deadline: why not kept
                self._why_logged = deadline
                pv = self.peers
                out.append(Log("info", "validity deadline reached and no rule keeps the set", {
                    "in_s": round(deadline - now, 3), "redis_ok": self._redis_ok(now), "bus_ok": self._bus_ok,
                    "members": len(self._members), "heard": sorted(pv.alive(now)),
                    "quorum": pv.quorum(self._members, now), "answering": bool(self._answering),
                    "someone_has_control_plane": pv.someone_has_control_plane(now)}))
            return
        if not self.state.extend(now + GRACE_STEP_S):
            return
        if rule == "grace" and self._grace_since is None:
            self._grace_since = now
            out.append(Gauge("leases_grace", 1))
            out.append(Log("warning", "no assignments for any node since our last renewal while Redis is reachable: "
                           "the leases service is down; keeping our VIPs (grace up to "
                           f"{self.config.leases_outage_grace_ms} ms; see --leases-outage-grace-ms)",
                           {"vips": len(self.state.vips)}))
        if rule == "freeze" and self._freeze_since is None:
            self._freeze_since = now
        if rule != self._keeping:
            if rule == "freeze":
                out.append(Gauge("peers_frozen", 1))
                out.append(Log("warning", "Redis is unreachable for us and for the peers we hear (a quorum of "
                               "the members): keeping our VIPs until it is back or a peer says otherwise",
                               {"vips": len(self.state.vips), "members": len(self._members)}))
            elif self._keeping == "freeze":
                out.append(Gauge("peers_frozen", 0))
            self._keeping = rule

    def _no_takeover_elsewhere(self, now: float) -> bool:
        """The grace's premise -- with leases silent nobody can be given our VIPs -- no longer holds once
        successors take VIPs over on the LAN by themselves: they do when they hear a majority of the members
        and not us. So with peers on, the grace needs the majority on our side (we hear it), or members so
        few that the others cannot make one without us (1 or 2 members: nobody takes over, as before). A node
        cut off from its peers while its own Redis still works (it runs the Redis master) then expires at its
        deadline instead of answering beside its successor (co-located chaos run, seed 20261206: 2.75 s).
        A node that never heard a peer keeps the grace: then no frame flows on this LAN for anyone."""
        pv = self.peers
        members = self._members
        if pv is None or not members or not pv.heard:
            # no peer frame ever reached us (frames blocked on this LAN, keys that differ): nobody hears
            # anybody, so nobody takes over on the LAN either -- the grace is as safe as without peers
            return True
        others = len(members) - (1 if self.config.node in members else 0)
        if others < peers.quorum_size(len(members)):
            return True
        return pv.quorum(members, now)

    def _leases_silent(self, now: float) -> bool:
        """True when it is safe to keep serving past the validity deadline: grace is enabled and not used
        up, our own Redis round trips work, and no assignments for *any* node arrived since our last
        renewal -- the leases service is down, so no other node can have been given our VIPs. A node cut
        off from Redis never keeps its VIPs: that is the partition case."""
        if self._grace_s <= 0 or not self.config.bus or not self._bus_ok or not self._reads_ok:
            return False  # (reads overdue: we may be the one who cannot hear leases -- bench/chaos --kinds loss)
        # the bus client's view lags a partition (a dead TCP path looks healthy until something times out,
        # e.g. our own link went down): require a Redis round trip -- a heartbeat -- that completed just now
        fresh = max(0.3, 3 * self._hb_interval)
        if self._last_publish_ok is None or now - self._last_publish_ok > fresh:
            return False
        last = self.state.last_applied_at
        # our link went down since the last renewal: we cannot know what we missed (a partition, not a
        # leases outage), and assignments may still be on their way once it is back
        if last is not None and self._link_down_at is not None and self._link_down_at >= last:
            return False
        # leases sends every node's set in one burst per renew interval: messages for other nodes within
        # SAME_BURST_S of ours belong to that last burst; anything later means leases is alive -- unless it came
        # before a freeze kept our set (Redis was down for everybody: nobody could move a VIP; a burst stretched
        # by a loaded leases must not darken us when Redis is back and leases has not spoken yet)
        since = last + SAME_BURST_S if last is not None else None
        if since is not None and self._freeze_since is not None:
            since = max(since, self._freeze_since)
        if since is None:
            return False
        # ... and is still speaking: a live leases sends every renew interval (250 ms), so a last message older than
        # cp_silence_ms was its last word. Simulator S7: the leader published other nodes' changed sets 100 ms
        # after a renewal round and died; the nodes renewed in that round took the burst for "alive" and went
        # dark until the next leader (6.8 s). A message that gave one of our VIPs away already took it (rule 3).
        if self._last_any_assignments > since and self.control_plane_heard(now):
            return False
        started = self._grace_since if self._grace_since is not None else now
        return now - started < self._grace_s

    def _leases_alive(self, out: list[Command], now: float) -> None:
        self._freeze_since = None
        if self._keeping == "freeze":
            out.append(Gauge("peers_frozen", 0))
            out.append(Log("info", "leases renews us again: the freeze is over", {}))
        self._keeping = None
        if self._grace_since is not None:
            out.append(Log("info", "leases service is back: assignments renewed after a grace period",
                           {"grace_s": round(now - self._grace_since, 3)}))
            self._grace_since = None
            out.append(Gauge("leases_grace", 0))

    # -- assignments -------------------------------------------------------------------------------------
    def _entry_age(self, msg: NodeAssignments | NodeRenewal, ev: Assignments | Renewal,
                   out: list[Command]) -> float | None:
        """Rule 4: None for a backlog entry (by Redis's clock (ttl) when we know it, else by the sender's clock
        (ttl + skew)); else how long ago Redis stored it, in seconds (0 when Redis's clock is unknown)."""
        # An entry Redis stored longer ago than its own ttl (measured on Redis's clock, so exact whatever the
        # host clocks say) is a backlog replay -- after a link flap or reconnect we read what we missed, in
        # order. Applying it could re-add a VIP that has moved meanwhile and GARP for it.
        age = None if ev.entry_id is None else stream_entry_age_ms(ev.entry_id, self._redis_clock, ev.now)
        if age is not None:
            if age <= msg.ttl_ms:
                return max(0.0, age / 1000.0)
            out.append(Count("assignments", "backlog"))
            return None
        # Redis's clock unknown (before our first round trip): the sender's clock. Only then -- a leases leader
        # whose clock is behind ours by more than the skew would otherwise darken every node (simulator F3).
        if is_backlog(msg, ev.wall, self.config.max_clock_skew_ms / 1000.0):
            out.append(Count("assignments", "too_old"))
            last = self._last_old_warning
            if last is None or ev.now - last > OLD_WARNING_EVERY_S:
                self._last_old_warning = ev.now
                out.append(Log("warning", "ignoring assignments older than their validity (backlog, or clocks out "
                               "of sync: check NTP or raise --max-clock-skew-ms)",
                               {"age_s": round(ev.wall - msg.sent_at, 3), "ttl_ms": msg.ttl_ms, "seq": msg.seq}))
            return None
        return 0.0

    def _on_assignments(self, ev: Assignments) -> list[Command]:
        out: list[Command] = []
        msg = ev.msg
        age = 0.0
        if ev.source == "bus":
            entry_age = self._entry_age(msg, ev, out)
            if entry_age is None:
                return out
            age = entry_age
            # leases is alive (the outage grace relies on this): renewals count as much as full sets
            self._last_any_assignments = self._last_leases_msg = ev.now
            if msg.node != self.node:
                self._superseded(msg, ev.now, out)
                return out
            self._leases_alive(out, ev.now)
        self._apply(msg, ev.source, ev.now, out, age)
        return out

    def _apply(self, msg: NodeAssignments, source: str, now: float, out: list[Command], age_s: float = 0.0) -> None:
        ch = self.state.apply(msg, now, age_s)
        out.append(Count("assignments", ch.reason))
        if not ch.accepted:
            if ch.reason not in ("other_node", "stale"):
                out.append(Log("warning", "assignments rejected", {"reason": ch.reason, "term": msg.term,
                                                                   "seq": msg.seq}))
            return
        self._unmatched_since = None
        self._members = msg.members
        self._standby = {sb.ip: sb for sb in msg.standby}
        self._standby_term = msg.term
        self._standby_waits = tuple(sorted({
            (sb.holder, (self.config.takeover_after_ms + (sb.rank - 1) * self.config.takeover_rank_step_ms) / 1000.0)
            for sb in msg.standby if sb.holder != self.node}))
        if self.held:  # an authoritative set: what it names stays (now given by leases), the rest is gone
            out.append(Log("info", "leases decided about the VIPs we took over on the LAN",
                           {"kept": sorted(ip for ip in self.held if self.state._by_text.get(ip) is not None),
                            "dropped": sorted(ip for ip in self.held if self.state._by_text.get(ip) is None)}))
            self.held.clear()
            out.append(Gauge("peers_held", 0))
        if ch.reason == "term_reset":
            out.append(Log("warning", "the leases term went backwards (election Lease recreated?); accepting it "
                           "after our set expired and nothing newer came", {"term": msg.term, "seq": msg.seq}))
        for ip in ch.invalid:
            out.append(Log("warning", "ignoring an assigned VIP that is not a usable unicast IP", {"ip": ip}))
        if ch.added or ch.removed:
            out.append(Log("info", "VIP set changed", {
                "source": source, "term": msg.term, "seq": msg.seq, "ttl_ms": msg.ttl_ms,
                # a log line stays readable with 10k VIPs: the first few, then the counts
                "added": [f"{v.ip}@{v.epoch}" for v in ch.added[:LOG_VIPS]],
                "removed": [v.ip for v in ch.removed[:LOG_VIPS]],
                "added_count": len(ch.added), "removed_count": len(ch.removed), "total": len(self.state.vips),
            }))
            if ch.removed:
                out.append(StopAnswering(tuple(v.ip for v in ch.removed), "reassigned"))
            if ch.added:
                out.append(StartAnswering(tuple((v.ip, v.epoch) for v in ch.added)))
            self._multicast(out)
            self._heartbeat_soon()
        out.append(Gauge("vips", len(self.state.vips)))

    def _superseded(self, msg: NodeAssignments, now: float, out: list[Command]) -> None:
        """Rule 3: another node was given one of our VIPs with a higher epoch: stop answering it now."""
        if not self.state.vips or not msg.vips:
            return
        gone = self.state.drop_superseded((v.ip, v.epoch) for v in msg.vips)
        if not gone:
            return
        out.append(Log("warning", "another node was given a VIP we answer for, with a higher epoch: stopped "
                       "answering it", {"node": msg.node, "vips": [f"{v.ip}@{v.epoch}" for v in gone[:LOG_VIPS]],
                                        "count": len(gone)}))
        out.append(Count("assignments", "superseded", len(gone)))
        out.append(StopAnswering(tuple(v.ip for v in gone), "superseded"))
        self._multicast(out)
        self._heartbeat_soon()
        out.append(Gauge("vips", len(self.state.vips)))

    def _on_renewal(self, ev: Renewal) -> list[Command]:
        out: list[Command] = []
        msg = ev.msg
        age = self._entry_age(msg, ev, out)
        if age is None:
            return out
        self._last_any_assignments = self._last_leases_msg = ev.now
        if msg.node != self.node:
            return out
        self._leases_alive(out, ev.now)
        ch = self.state.renew(msg, ev.now, age)
        out.append(Count("assignments", ch.reason))
        if ch.accepted:
            self._renewal_fresh_until = ev.now + min(RENEWAL_FRESH_S, msg.ttl_ms / 2000.0)
            if self.held:  # leases is back: it decides about our takeovers in a full set
                self._request_full_set("lan_takeover", ev.now, out)
        elif ch.reason in ("digest_mismatch", "expired", "stale_term"):
            if self._unmatched_since is None:
                self._unmatched_since = ev.now
            self._request_full_set(ch.reason, ev.now, out)
        elif ch.reason not in ("other_node", "stale"):
            out.append(Log("warning", "renewal rejected", {"reason": ch.reason, "term": msg.term, "seq": msg.seq}))
        return out

    def _request_full_set(self, reason: str, now: float, out: list[Command]) -> None:
        """Rule 5: ask leases for our full set, at most once per SNAPSHOT_REQUEST_INTERVAL_S -- or per
        SNAPSHOT_URGENT_INTERVAL_S once our set would expire before the next regular request: a lost request
        or an answer that still did not match must not let the set run out while leases is alive (simulator
        seed 26: a set that a peer's claim had changed expired 6.5 s before its full set came)."""
        last = self._last_snapshot_request
        interval = SNAPSHOT_REQUEST_INTERVAL_S
        deadline = self.state.deadline
        if deadline is not None and now < deadline and deadline - now < interval:
            interval = SNAPSHOT_URGENT_INTERVAL_S
        if not self.config.bus or (last is not None and now - last < interval):
            return
        self._last_snapshot_request = now
        out.append(Count("assignments", "snapshot_requested"))
        out.append(Log("info", "cannot use a renewal: asking leases for our full set", {"reason": reason}))
        out.append(RequestSnapshot(reason))

    def _on_resync(self, ev: Resync) -> list[Command]:
        out: list[Command] = [Log("info", "assignments stream resync; asking leases for a snapshot",
                                  {"reason": ev.reason})]
        if self.config.bus:
            out.append(RequestSnapshot(ev.reason))
        return out

    # -- interfaces --------------------------------------------------------------------------------------
    def _on_links(self, ev: LinksChanged) -> list[Command]:
        now = ev.now
        out: list[Command] = []
        old = self._links
        new = {link.name: link for link in ev.links}
        for link in ev.links:
            if not link.up and link.name in self._answering:
                self._link_down_at = now
                out.append(Log("warning", "interface down: not answering on it",
                               {"interface": link.name, "oper": link.oper}))
        answering: dict[str, tuple[Iface, ReplyMemo]] = {}
        for link in ev.links:
            if not link.answering:
                continue
            mac = codec.mac_bytes(link.mac)
            prev = self._answering.get(link.name)
            if prev is not None and prev[0].index == link.index and prev[0].mac == mac:
                answering[link.name] = prev
                continue
            answering[link.name] = (Iface(link.name, link.index, mac), ReplyMemo(self.state))
            if link.name in old:
                out.append(Log("info", "interface up: announcing again", {"interface": link.name, "mac": link.mac}))
            self.state.kick(link.name, now)
        for name, (_, memo) in self._answering.items():
            if answering.get(name, (None, None))[1] is not memo:
                self._retired_memo_hits += memo.hits
        self._answering = answering
        self._links = new
        self._multicast(out)
        out.append(Gauge("interfaces_up", len(answering)))
        self._heartbeat_soon()
        return out

    def _multicast(self, out: list[Command]) -> None:
        for name in self._answering:
            out.append(SetMulticast(name, frozenset(self.state.multicast_macs(name))))

    # -- LAN peers: freeze, takeovers, claims (rule 9) ----------------------------------------------------
    def _redis_ok(self, now: float) -> bool:
        """A Redis round trip of ours worked within REDIS_OK_S."""
        return self._last_publish_ok is not None and now - self._last_publish_ok <= REDIS_OK_S

    def _lan_ok(self, now: float) -> bool:
        """We answer on an interface, we and the members we hear make a quorum, and none of them still reaches
        Redis *and* hears leases (if one did, we would be the one cut off)."""
        pv = self.peers
        return (pv is not None and bool(self._answering) and pv.quorum(self._members, now)
                and not pv.someone_has_control_plane(now))

    def _freeze_holds(self, now: float) -> bool:
        """Redis is down for everybody: our round trips fail (the bus fails now, or none worked within
        REDIS_OK_S), and the quorum we hear says the same. The bus failing counts at once: a master that starts
        refusing writes (NOREPLICAS) while the grace keeps us must hand over to the freeze at the next
        deadline, not drop the set while our last round trip still looks fresh (5 nodes, two dead: 12.8 s dark)."""
        return self.config.bus and (not self._bus_ok or not self._redis_ok(now)) and self._lan_ok(now)

    def _quiet_for(self, node: str, now: float) -> float:
        """How long ``node`` has been silent on the LAN: 0 for a node we never heard since we started (it may
        simply not send peer frames: never taken over from), infinite for one that said it was stopping."""
        assert self.peers is not None
        at = self.peers.heard_at(node)
        if at is None:
            return float("inf") if node in self._gone else 0.0
        quiet = now - at
        frame = self.peers.heard[node].frame
        served = self._serving_heard.get(node)
        if frame.held_count == 0 and served is not None and served[0] != frame.instance:
            # a new instance answering for nothing (restarted without its set) since the old one was last heard
            # serving: as silent as a dead one for its VIPs. The same instance serving nothing had its VIPs
            # moved by the control plane (our standby list may be stale): not silent. One never heard serving
            # is never taken over from (it may be starting).
            quiet = max(quiet, now - served[1])
        return quiet

    def _maybe_take_over(self, now: float, out: list[Command]) -> None:
        """A successor takes a VIP over when its holder (and every successor ranked before it, which would
        have claimed it by now) has been silent for takeover_after_ms (+ rank steps), the control plane is
        silent for us, and the LAN gives a quorum that nobody with a live control plane is in."""
        if not self._standby:
            return
        cp_silent = self._cp_silent(now) or not self._redis_ok(now)
        if not cp_silent or not self._lan_ok(now):  # (the cheap test first: at rest leases speaks)
            return
        assert self.peers is not None
        quiet: dict[str, float] = {}
        timeout = self.config.peer_timeout_ms / 1000.0
        due: list[StandbyVip] = []
        for ip, sb in self._standby.items():
            if sb.holder == self.node or ip in self.held:
                continue
            q = quiet.get(sb.holder)
            if q is None:
                q = quiet[sb.holder] = self._quiet_for(sb.holder, now)
            if q * 1000.0 < self.config.takeover_after_ms + (sb.rank - 1) * self.config.takeover_rank_step_ms:
                continue
            cur = self.state._by_text.get(ip)
            if cur is not None and cur.epoch >= sb.epoch and self.state.vips.get(cur.addr) is cur:
                continue
            claim = self._peer_claims.get(ip)
            if claim is not None and claim[0] != sb.holder and now - claim[2] <= timeout:
                continue  # a successor (ranked before us: it waited less) has it already
            if sb.interfaces and not any(n in self._answering for n in sb.interfaces):
                continue
            due.append(sb)
        if not due:
            return
        taken = self.state.take_over_many([(sb.ip, sb.epoch, sb.interfaces, sb.services) for sb in due],
                                          now=now, valid_for=GRACE_STEP_S)
        if not taken:
            return
        by_ip = {sb.ip: sb for sb in due}
        for vip in taken:
            self.held[vip.ip] = vip.epoch
        first = [by_ip[v.ip] for v in taken[:LOG_VIPS] if v.ip in by_ip]
        out.append(Log("warning", "took VIPs over on the LAN: their holder and the control plane are silent",
                       {"vips": [f"{v.ip}@{v.epoch}" for v in taken[:LOG_VIPS]], "count": len(taken),
                        "holders": sorted({sb.holder for sb in first}), "ranks": sorted({sb.rank for sb in first})}))
        out.append(Count("takeovers", n=len(taken)))
        out.append(StartAnswering(tuple((v.ip, v.epoch) for v in taken)))
        out.append(Gauge("peers_held", len(self.held)))
        self._keeping = self._keeping or "lan_held"
        self._peer_due = now  # our claims go out with the next frames (this tick)
        self._multicast(out)
        self._heartbeat_soon()

    def _peer_frames(self, now: float, wall: float, extra_flags: int, out: list[Command]) -> None:
        """Our peer frame on every answering interface (each with its own counter)."""
        serving = self.state.serving(now) if not extra_flags & peers.STOPPING else {}
        src, digest = self._held_digest_of
        if src is not serving:
            digest = peers.held_digest(serving)
            self._held_digest_of = (serving, digest)
        flags = extra_flags | (peers.REDIS_OK if self._redis_ok(now) else 0)
        last = self._last_leases_msg
        if last is not None and now - last <= CP_FRESH_S:
            flags |= peers.CP_FRESH
        order = self.state.last_order
        term = order[0] if order is not None and order[0] >= 0 else 0
        held = sorted(self._claims(serving, now).items())
        if self._frame_clock is None:
            self._frame_clock = wall - now
        # our frames' clock: the wall clock when we started, moved on by the monotonic clock. Peers tell replays
        # by it, so it must never step back: an NTP step of our wall clock would make us unheard for relearn_s
        # and our successors would take our VIPs over while we answer them (simulator seed 14: 1.03 s dual)
        stamp = int((now + self._frame_clock) * 1000)
        # every claim in every interval (pages of MAX_CLAIMS): a holder that hears only some would keep the rest
        pages = [tuple(held[i:i + peers.MAX_CLAIMS]) for i in range(0, len(held), peers.MAX_CLAIMS)] or [()]
        for name, (iface, _) in self._answering.items():
            for claims in pages:
                self._peer_counter += 1
                frame = peers.PeerFrame(self.config.cluster, self.node, self.config.instance, self._peer_counter,
                                        stamp, flags, term, len(serving), digest, claims)
                out.append(SendPeerFrame(name, peers.encode(frame, self.config.peer_key, iface.mac)))

    def _claims(self, serving: dict[str, int], now: float) -> dict[str, int]:
        """What our peer frames claim: the VIPs we took over on the LAN, and every VIP we answer that a live peer
        still claims with a lower epoch. The second kind is a peer's takeover that leases has since decided
        otherwise: that peer stops on our higher epoch (rule 3) even when it misses leases' messages for it."""
        if not self._peer_claims or not serving:
            return self.held
        timeout = self.config.peer_timeout_ms / 1000.0
        claims = self.held
        for ip, (_node, epoch, at) in self._peer_claims.items():  # (never ours: PeerView drops our own frames)
            ours = serving.get(ip)
            if ours is not None and ours > epoch and now - at <= timeout and ip not in claims:
                if claims is self.held:
                    claims = dict(self.held)
                claims[ip] = ours
        return claims

    def _on_peer_frame(self, ev: PeerFrameReceived) -> list[Command]:
        pv = self.peers
        if pv is None:
            return []
        f = pv.receive(ev.frame, ev.now, ev.wall)
        if f is None:
            return [Count("peer_frames", pv.last_rejected)]
        out: list[Command] = [_PEER_FRAME_ACCEPTED]
        if self._standby_waits and not self._check_soon and (self._cp_silent(ev.now) or not self._redis_ok(ev.now)):
            self._check_soon = True  # the control plane is silent: this frame may complete a takeover's quorum
        if f.stopping:
            self._gone.add(f.node)
        else:
            self._gone.discard(f.node)
            if f.held_count > 0:
                self._serving_heard[f.node] = (f.instance, ev.now)
        stale: list[str] = []
        for ip, epoch in f.claims:
            cur = self._peer_claims.get(ip)
            if cur is None or epoch >= cur[1] or ev.now - cur[2] > self.config.peer_timeout_ms / 1000.0:
                self._peer_claims[ip] = (f.node, epoch, ev.now)
            sb = self._standby.get(ip)
            if sb is not None and sb.epoch <= epoch and f.term > self._standby_term:
                # a leader of a later term has decided about it (a fellow successor of our own plan claims with
                # an epoch of the same term): never take it over with that plan
                stale.append(ip)
        if stale:
            for ip in stale:
                del self._standby[ip]
            out.append(Count("standby", "superseded", len(stale)))
        if f.claims and self.state.vips:
            # rule 3: a peer took a VIP over with a higher epoch than ours: it is the later decision
            gone = self.state.drop_superseded(f.claims)
            if gone:
                for v in gone:
                    self.held.pop(v.ip, None)
                out.append(Log("warning", "a peer took over a VIP we answer for, with a higher epoch: stopped "
                               "answering it", {"node": f.node, "vips": [f"{v.ip}@{v.epoch}" for v in gone[:LOG_VIPS]],
                                                "count": len(gone)}))
                out.append(StopAnswering(tuple(v.ip for v in gone), "peer_claim"))
                self._multicast(out)
                self._heartbeat_soon()
                out.append(Gauge("vips", len(self.state.vips)))
        return out

    # -- conflicts (RFC 5227) ------------------------------------------------------------------------------
    def _conflicts(self, seen: list[ConflictSeen], now: float) -> list[Command]:
        out: list[Command] = []
        for c in seen:
            msg = Conflict(node=self.node, ip=c.ip, our_mac=c.our_mac, their_mac=c.their_mac, interface=c.interface,
                           at=now + self._wall_offset, defended=c.defended)
            self._pending.append(msg)
            del self._pending[:-MAX_PENDING_CONFLICTS]
            self.recent_conflicts = [msg.to_dict(), *self.recent_conflicts][:RECENT_CONFLICTS]
            out.append(ReportConflict(msg))
        self._heartbeat_soon()
        return out

    # -- heartbeats ----------------------------------------------------------------------------------------
    def _heartbeat_soon(self) -> None:
        if self._outgoing is not None:
            self._hb_again = True
        else:
            self._hb_due = float("-inf")

    def _publish(self, now: float, wall: float) -> PublishHeartbeat:
        hb, term = self._heartbeat(now, wall, stopping=False)
        conflicts = tuple(self._pending)
        self._pending = []
        self._outgoing = _Outgoing(hb, term, conflicts)
        self._hb_again = False
        return PublishHeartbeat(hb, conflicts)

    def _heartbeat(self, now: float, wall: float, *, stopping: bool) -> tuple[Heartbeat, int | None]:
        self._hb_seq += 1
        links, answering, kube_labels, ifs, labels = self._hb_parts
        if links is not self._links or answering is not self._answering or kube_labels is not self._kube_labels:
            # rebuilt only when the links, the answering interfaces or the labels were replaced (each is replaced,
            # never changed in place); the heartbeats in between share these immutable parts
            ifs = tuple(
                InterfaceInfo(name=link.name, mac=link.mac, up=link.up and link.name in self._answering,
                              addresses=link.addresses, ifindex=link.index)
                for link in self._links.values()
            )
            labels = self.effective_labels()
            self._hb_parts = (self._links, self._answering, self._kube_labels, ifs, labels)
        serving = {} if stopping else self.state.serving(now)
        src, digest = self._digest_of
        if src is not serving:
            digest = serving_digest(serving)
            self._digest_of = (serving, digest)
        order = self.state.last_order
        term = None if order is None else order[0]
        omit = self._may_omit(serving, digest, now, stopping, term)
        hb = Heartbeat(node=self.node, instance=self.config.instance, seq=self._hb_seq, sent_at=wall,
                       interval_ms=self.config.heartbeat_interval_ms, labels=labels, interfaces=ifs,
                       serving={} if omit else serving, stopping=stopping, serving_digest=digest,
                       serving_omitted=omit,
                       lan_heard=None if self.peers is None else tuple(self.peers.alive(now)))
        return hb, term

    def _may_omit(self, serving: dict[str, int], digest: str, now: float, stopping: bool, term: int | None) -> bool:
        """Rule 8: the heartbeat may carry only the digest of ``serving``: leases renewed us within
        min(RENEWAL_FRESH_S, ttl / 2) (it understands omitted maps), the map is the one last sent in full,
        less than heartbeat_full_every_ms ago, in the same leases term (a new leader gets full maps at once),
        and we are not stopping. An empty map always goes in full (it costs nothing)."""
        if stopping or not serving or self._hb_full_every <= 0:
            return False
        fresh = self._renewal_fresh_until
        sent = self._full_sent
        if fresh is None or now >= fresh or sent is None:
            return False
        src, sent_digest, at, sent_term = sent
        if src is not serving and sent_digest != digest:
            return False
        return now - at < self._hb_full_every and sent_term == term

    def _on_published(self, ev: Published) -> list[Command]:
        now = ev.now
        out: list[Command] = []
        if ev.ok or ev.conflicts_sent:
            self._last_publish_ok = now
            head = ev.entry_id.partition("-")[0]
            if head.isdigit():
                self._redis_clock = (int(head), now)
        sent = self._outgoing
        self._outgoing = None
        if sent is None:  # the stopping heartbeat's outcome, or a stray one: nothing outstanding
            return out
        unsent = list(sent.conflicts[ev.conflicts_sent:])
        if unsent:
            self._pending = [*unsent, *self._pending][-MAX_PENDING_CONFLICTS:]
        if ev.ok:
            hb = sent.heartbeat
            if not hb.serving_omitted:
                self._full_sent = (hb.serving, hb.serving_digest, now, sent.term)
            out.append(Count("heartbeats", "omitted" if hb.serving_omitted else "full"))
        elif ev.error:
            out.append(Log("debug", "publish failed", {"error": ev.error}))
        self._hb_due = now if self._hb_again else self._next_heartbeat(now)
        self._hb_again = False
        return out

    def _next_heartbeat(self, now: float) -> float:
        """An interval after the last one completed; with peer frames, the next peer frame when that is due
        between a tenth of an interval and an interval from now (never later than without peers), so one
        wakeup sends both: at rest heartbeat and peer frame share every tick."""
        due = now + self._hb_interval
        if self.peers is not None and now + self._hb_interval / 10.0 <= self._peer_due <= due:
            return self._peer_due
        return due

    # -- shutdown ----------------------------------------------------------------------------------------
    def _on_stop(self, ev: Stop) -> list[Command]:
        out: list[Command] = []
        if self.peers is not None and not self._stopped:
            self._peer_frames(ev.now, ev.wall, peers.STOPPING, out)  # peers forget us at once
        self._stopped = True
        serving = self.state.serving(ev.now)
        if serving:
            out.append(StopAnswering(tuple(serving), "stopping"))
        for _, memo in self._answering.values():
            self._retired_memo_hits += memo.hits
        self._answering = {}
        if self.config.bus:
            hb, _ = self._heartbeat(ev.now, ev.wall, stopping=True)
            self._outgoing = None
            out.append(PublishHeartbeat(hb))
        return out


# each event type's handler (by exact type: events are final classes)
_HANDLERS: dict[type, Callable[[AnnouncerMachine, Any], list[Command]]] = {
    Tick: AnnouncerMachine._tick,
    PeerFrameReceived: AnnouncerMachine._on_peer_frame,
    Published: AnnouncerMachine._on_published,
    Renewal: AnnouncerMachine._on_renewal_event,
    Assignments: AnnouncerMachine._on_assignments_event,
    Frames: AnnouncerMachine._on_frames_event,
    LinksChanged: AnnouncerMachine._on_links,
    LabelsChanged: AnnouncerMachine._on_labels,
    Resync: AnnouncerMachine._on_resync,
    Stop: AnnouncerMachine._on_stop,
}
