"""Every decision of the leases service as a pure, I/O-free state machine.

The service (``services/leases``) reads the bus and the Kubernetes API, turns what it reads into
*events*, feeds them to :class:`LeasesMachine` and carries out the *commands* it gets back. Nothing
in here reads a clock, a socket or Redis: the caller passes the time with every event, so the same
events with the same times give the same commands (dicts and sets are walked in an explicit order).
A deterministic simulator drives the same interface.

API::

    m = LeasesMachine(LeasesParams(...), now)      # now = Now(mono=..., wall=...)
    commands = m.handle(event, now)                # a list, to be carried out in order

Clock (:class:`Now`): ``mono`` is seconds on the caller's monotonic clock (schedules: startup grace,
renewal rounds, the full-set safety net, liveness when no heartbeat arrives); ``wall`` is unix time
in seconds (epochs are ``max(last + 1, wall ms)``, ``sent_at`` of messages, the term of a single
instance without leader election). Heartbeats carry their own time: the Redis stream time of their
entry (``HeartbeatReceived.at``), so liveness ages every node on one clock, not ours.

Events in:

==========================  ==========================================================================
``Started``                 loading is done (allocation snapshot, epochs): grace periods count from now
``AllocationReceived``      an Allocation from the allocations stream
``AllocationSnapshotReceived`` an AllocationSnapshot from the stream (merged: newer entries win)
``AllocationsLoaded``       what the snapshot key held at startup/resync (None: nothing stored)
``HeartbeatReceived``       an announcer Heartbeat with its stream time (``at``, seconds; None = now.wall)
``ConflictReceived``        an announcer's Conflict report (RFC 5227)
``HeartbeatsResynced``      the heartbeat stream was re-read from scratch (Redis lost it, or we lagged)
``SnapshotRequested``       a SnapshotRequest("assignments"): an announcer (or "bus") wants full sets
``PoliciesChanged``         the watched policy objects now (static ones come with the params)
``EndpointSliceChanged``    one EndpointSlice added/changed/deleted
``LeadershipChanged``       this instance became leader (with the term) or lost it
``EpochsLoaded``            the stored epochs (``restore``: Redis lost its data, put ours back)
``Tick``                    the periodic step (``--tick-ms``) with the bus and informer states
``Sent`` / ``SendFailed``   the outcome of a Publish* command (exactly one per command, in order)
``KubeWritten``             a WriteCondition/WriteLease was written or found already right
==========================  ==========================================================================

Commands out:

=====================  ===============================================================================
``PublishAssignments`` a full NodeAssignments on the assignments stream (acknowledge: Sent/SendFailed)
``PublishRenewal``     a NodeRenewal naming the digest of the node's last full set (acknowledge)
``StoreEpochs``        write these epochs to the epoch store before the publishes after it; when the write
                      fails feed ``SendFailed(None, error)`` and drop the rest (never publish an epoch
                      that is not stored: the next leader starts from the store)
``RequestSnapshot``    ask the producer of ``topic`` for a snapshot (best effort)
``WriteCondition``     the ``l2lb.io/Announced`` condition of a Service (coalesced per Service)
``WriteLease``         the mirror Lease of a Service (holder "" = delete it)
``ServiceEvent``       a Kubernetes Event on a Service (a move, an announcement stopped)
``PolicyEvent``        a Warning Event on a policy object that cannot be used
``StatusEvent``        an event of the cluster view (move, unassigned, conflict)
``StatusPart``         the cluster view part ("assignments" | "nodes") is to be rebuilt from the state
``Log`` / ``Metric``   facts for the log and for Prometheus
=====================  ===============================================================================

Executor contract: carry the commands out in order; after each Publish* feed back ``Sent(cmd)`` or
``SendFailed(cmd, error)`` and carry out what that returns after the rest of the list; after a
``SendFailed`` drop the rest of the list (the machine retries on the next tick, epochs whose store
failed first). A tick publishes in
stages (changed sets, losers first; then the renewal round; then requested full sets): a stage is
computed when every publish of the one before was acknowledged, from the state those sends left.
Only ``Tick`` and ``Sent`` produce Publish* commands. Kubernetes commands are idempotent intents:
the executor may coalesce them per :attr:`slot` (the newest wins), retry them, and drops them when
the instance is no longer leader.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from l2lb.core.election import ElectionResult, Holder, Move, ServiceState, elect, holders_from_serving
from l2lb.core.messages import (
    Allocation,
    AllocationSnapshot,
    Conflict,
    Heartbeat,
    Message,
    NodeAssignments,
    NodeRenewal,
    StandbyVip,
    Successor,
    VipAssignment,
    assignments_digest,
)
from l2lb.core.nodes import NodeTracker
from l2lb.core.policy import L2Policy, PolicyError, parse_policies, parse_policy
from l2lb.core.succession import Succession, plan_successions

__all__ = [
    "AllocationReceived", "AllocationSnapshotReceived", "AllocationsLoaded", "Command", "ConflictReceived",
    "EndpointSliceChanged", "EpochsLoaded", "Event", "HeartbeatReceived", "HeartbeatsResynced", "InformerState",
    "KubeWritten", "LeadershipChanged", "LeasesMachine", "LeasesParams", "LoadEpochs", "Log", "Metric", "NodeSet",
    "Now", "PoliciesChanged",
    "PolicyEvent", "PublishAssignments", "PublishRenewal", "RequestSnapshot", "SendFailed", "Sent", "ServiceEvent",
    "SnapshotRequested", "Started", "StatusEvent", "StatusPart", "StoreEpochs", "Tick", "WriteCondition",
    "WriteLease", "endpoint_nodes",
]


@dataclass(frozen=True, slots=True)
class Now:
    mono: float  # seconds, the caller's monotonic clock
    wall: float  # seconds, unix time


@dataclass(frozen=True, slots=True)
class LeasesParams:
    renew_ms: int = 250
    ttl_ms: int = 1000
    full_every_ms: int = 30000  # full set at least this often per node; 0 = every renewal is full
    missed: int = 3
    startup_grace_ms: int = 500
    # after the bus came back, the Redis master changed or every node was silent at once, a node not heard
    # since then is timed out this much later (its client may still wait for a socket time-out on the old
    # master; see NodeTracker.reconnected and docs/ARCHITECTURE.md "Liveness clock")
    reconnect_grace_ms: int = 2000
    lag_tolerance_ms: int = 2000
    heartbeat_full_every_ms: int = 2000  # the announcers' setting: how long unknown serving maps are waited for
    sync_timeout_s: float = 30.0
    leader_election: bool = True
    kube: bool = False  # a Kubernetes API is there (conditions, mirrors, events can be written)
    conditions: bool = True
    mirror_leases: bool = False
    events: bool = True
    static_policies: tuple[Mapping[str, Any], ...] = ()
    successors: int = 2  # pre-authorised successors per VIP (0: none, no standby lists, no members)


# -- events -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Started:
    pass


@dataclass(frozen=True, slots=True)
class AllocationReceived:
    alloc: Allocation


@dataclass(frozen=True, slots=True)
class AllocationSnapshotReceived:
    snapshot: AllocationSnapshot


@dataclass(frozen=True, slots=True)
class AllocationsLoaded:
    snapshot: Message | None  # what the snapshot key held (None: nothing, or unreadable)
    reason: str = "startup"


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    hb: Heartbeat
    at: float | None = None  # Redis stream time of the entry (seconds); None: now.wall


@dataclass(frozen=True, slots=True)
class ConflictReceived:
    conflict: Conflict


@dataclass(frozen=True, slots=True)
class HeartbeatsResynced:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotRequested:
    requester: str  # "announcer:<node>" asks for that node's set; anything else ("bus") for every set
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PoliciesChanged:
    watched: tuple[Mapping[str, Any], ...]  # every watched policy object now (kinds in --policy-kinds order)
    changed: Mapping[str, Any] | None = None  # the object added/updated (checked for a Warning Event)


@dataclass(frozen=True, slots=True)
class EndpointSliceChanged:
    obj: Mapping[str, Any]
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class LeadershipChanged:
    leader: bool
    term: int = 0


@dataclass(frozen=True, slots=True)
class EpochsLoaded:
    epochs: Mapping[str, int]
    restore: bool = False  # Redis lost its data: store back every epoch we know


@dataclass(frozen=True, slots=True)
class InformerState:
    name: str
    synced: bool
    error: str = ""  # last list/watch error ("404 ...", "403 ...": the kind is absent / not allowed)


@dataclass(frozen=True, slots=True)
class Tick:
    bus_ok: bool = True
    informers: tuple[InformerState, ...] = ()
    bus_generation: int = 0  # changes when the bus moved to another Redis master (Sentinel named a new one)


# -- commands ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PublishAssignments:
    msg: NodeAssignments
    why: str  # change | renew | snapshot (the metric label)
    requested: bool = False  # answers SnapshotRequests outside a renewal round


@dataclass(frozen=True, slots=True)
class PublishRenewal:
    msg: NodeRenewal


@dataclass(frozen=True, slots=True)
class StoreEpochs:
    epochs: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class LoadEpochs:
    """Read the epoch store and feed back EpochsLoaded (also when the read fails: with what was read)."""


@dataclass(frozen=True, slots=True)
class RequestSnapshot:
    topic: str
    reason: str


@dataclass(frozen=True, slots=True)
class WriteCondition:
    service: str
    state: ServiceState

    @property
    def slot(self) -> tuple[str, str]:
        return ("condition", self.service)


@dataclass(frozen=True, slots=True)
class WriteLease:
    service: str
    holder: str  # "" = delete the mirror
    duration_s: int = 1

    @property
    def slot(self) -> tuple[str, str]:
        return ("lease", self.service)


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    service: str
    uid: str
    type: str  # Normal | Warning
    reason: str
    message: str
    key: str  # what the Event is about (ip:epoch:node): one slot per move

    @property
    def slot(self) -> tuple[str, str]:
        return (f"event:{self.key}", self.service)


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    obj: Mapping[str, Any]
    message: str
    key: str

    @property
    def slot(self) -> tuple[str, str]:
        return ("policy-event", self.key)


@dataclass(frozen=True, slots=True)
class StatusEvent:
    kind: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StatusPart:
    part: str


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # debug | info | warning | error
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: float = 1.0
    labels: tuple[str, ...] = ()
    op: str = "inc"  # inc | set | clear (every labelled child)


_METRICS: dict[tuple[Any, ...], Metric] = {}  # see LeasesMachine._metric

Publish = PublishAssignments | PublishRenewal
Command = (Publish | StoreEpochs | LoadEpochs | RequestSnapshot | WriteCondition | WriteLease | ServiceEvent
           | PolicyEvent | StatusEvent | StatusPart | Log | Metric)


@dataclass(frozen=True, slots=True)
class Sent:
    command: Publish


@dataclass(frozen=True, slots=True)
class SendFailed:
    command: Publish | None  # None: the step failed before any publish (logged, retried)
    error: str


@dataclass(frozen=True, slots=True)
class KubeWritten:
    command: WriteCondition | WriteLease


Event = (Started | AllocationReceived | AllocationSnapshotReceived | AllocationsLoaded | HeartbeatReceived
         | ConflictReceived | HeartbeatsResynced | SnapshotRequested | PoliciesChanged | EndpointSliceChanged
         | LeadershipChanged | EpochsLoaded | Tick | Sent | SendFailed | KubeWritten)


@dataclass(frozen=True, slots=True)
class NodeSet:
    """What one node is told in a full NodeAssignments: its VIPs (with their successors), the VIPs it is a
    successor for, and the member list."""

    vips: tuple[VipAssignment, ...] = ()
    standby: tuple[StandbyVip, ...] = ()
    members: tuple[str, ...] = ()

    def holds_any(self) -> bool:
        return bool(self.vips or self.standby)

    def digest(self) -> str:
        return assignments_digest(self.vips, self.standby, self.members)


EMPTY = NodeSet()


def endpoint_nodes(slice_obj: Mapping[str, Any]) -> set[str]:
    """Nodes with a ready endpoint in one EndpointSlice (ready unset counts as ready)."""
    out: set[str] = set()
    for ep in slice_obj.get("endpoints") or []:
        if not isinstance(ep, dict):
            continue
        cond = ep.get("conditions") or {}
        ready = cond.get("ready") if isinstance(cond, dict) else None
        node = ep.get("nodeName")
        if isinstance(node, str) and node and ready is not False:
            out.add(node)
    return out


class LeasesMachine:
    """See the module docstring. Attributes are readable state (status pages, tests, the simulator);
    change them only through :meth:`handle`."""

    def __init__(self, params: LeasesParams, now: Now):
        self.p = params
        self.tracker = NodeTracker(missed=params.missed)
        self.allocations: dict[str, Allocation] = {}
        self.alloc_order: dict[str, tuple[int, int]] = {}  # key -> (term, seq) applied
        self.policies: list[L2Policy] = []
        self.policy_errors: list[tuple[str, str]] = []
        self.watched_policies: tuple[Mapping[str, Any], ...] = ()
        self.endpoints: dict[str, set[str]] = {}  # service key -> nodes with ready endpoints
        self._slices: dict[str, tuple[str, set[str]]] = {}  # slice key -> (service key, nodes)
        self.holders: dict[str, Holder] = {}
        self.seen_serving: dict[str, Holder] = {}  # ip -> highest-epoch holder reported in heartbeats
        self.orphans: dict[str, Holder] = {}  # IPs without an eligible node: last holder, for stickiness
        self.last_epochs: dict[str, int] = {}
        self.result: ElectionResult | None = None
        self.successions: dict[str, Succession] = {}  # ip -> its successors as last planned (and published)
        self.members: tuple[str, ...] = ()
        self._takeovers: dict[str, Holder] = {}  # LAN takeovers seen in heartbeats, adopted on the next tick
        self.epochs_pending = False  # a new leader waits for the epoch store before adopting
        self.published: dict[str, NodeSet] = {}  # node -> last FULL set sent
        self.full_sent: dict[str, tuple[str, int, float]] = {}  # node -> (digest, term, mono) of it
        self.want_full: set[str] = set()  # nodes that asked for their full set (SnapshotRequest)
        self._sets_cache: tuple[ElectionResult | None, frozenset[str], dict[str, NodeSet]] | None = None
        self.is_leader = False
        self.term = 0
        self.seq = int(now.wall * 1000)
        self.leader_known = not params.leader_election
        self.leader_since = 0.0
        self.started = now.mono
        self.resumed = float("-inf")  # when the bus came back after a stall (heartbeats can be read again)
        self.snapshot_loaded = False
        self.dirty = True
        self.adopt_pending = False
        self.next_renew = 0.0
        self.recent_moves: deque[dict[str, Any]] = deque(maxlen=100)
        self.moves_total = 0
        self.elections = 0
        self.conflicts: deque[dict[str, Any]] = deque(maxlen=20)
        self.hb_clock = 0.0
        self.hb_clock_mono = now.mono
        self._rebase = False
        self._stalled = False
        self._silent = False
        self._reconnect_pending = ""  # why the next heartbeat read starts a reconnect grace ("" = none pending)
        self._bus_generation: int | None = None
        self.reconnects = 0
        self.dual: list[str] = []
        # Heartbeats without the serving map (serving_omitted): per node the last full map with the
        # (instance, digest) it came with; nodes whose current map we do not know (omitted, no match);
        # per node the serving dict last walked into seen_serving (an unchanged map is not walked again)
        self.full_maps: dict[str, tuple[str, str, dict[str, int]]] = {}
        self.map_unknown: set[str] = set()
        self._walked: dict[str, dict[str, int]] = {}
        self.informers: tuple[InformerState, ...] = ()
        self._absent: set[str] = set()
        self.service_state: dict[str, ServiceState] = {}  # as written to the API (conditions)
        self.mirror_holder: dict[str, str] = {}  # as written to the API (mirror Leases)
        # a tick's publishing stages: the next one is computed once the sends of the current one are in
        self._stages: deque[Callable[[Now], None]] = deque()
        self._inflight: list[Publish] = []
        self._storing: dict[str, int] = {}  # epochs in StoreEpochs not yet followed by an acknowledged publish
        self._unstored: dict[str, int] = {}  # epochs whose store failed: stored again before the next publish
        self._pending_prune: dict[str, NodeSet] | None = None
        self._out: list[Command] = []
        if params.static_policies:
            self.policies, self.policy_errors = parse_policies(params.static_policies)
        if not params.leader_election:
            self.is_leader = True
            self.term = int(now.wall)  # no elector: a restart still gets a higher term
            self.leader_since = now.mono
            self.adopt_pending = True

    # -- entry point --------------------------------------------------------------------------------
    def handle(self, event: Event, now: Now) -> list[Command]:
        out: list[Command] = []
        self._out = out
        _HANDLERS[type(event)](self, event, now)
        self._out = []
        return out

    def _log(self, level: str, message: str, **fields: Any) -> None:
        self._out.append(Log(level, message, fields))

    def _metric(self, name: str, value: float = 1.0, *labels: str, op: str = "inc") -> None:
        key = (name, value, type(value), labels, op)
        m = _METRICS.get(key)  # (several per heartbeat and per tick; a Metric is immutable: one per value)
        if m is None:
            if len(_METRICS) >= 256:
                _METRICS.clear()
            m = _METRICS[key] = Metric(name, value, labels, op)
        self._out.append(m)

    # -- clocks -------------------------------------------------------------------------------------
    def hb_now(self, now: Now) -> float:
        """The liveness clock: Redis stream time (heartbeat entry ids), so our own processing lag
        ages every node alike and clocks of other hosts never matter. When no heartbeat arrives
        at all it runs on with our monotonic clock after ``lag_tolerance_ms`` (a lone node that
        stops is still found dead)."""
        idle = now.mono - self.hb_clock_mono - self.p.lag_tolerance_ms / 1000.0
        return self.hb_clock + max(0.0, idle)

    # -- allocations --------------------------------------------------------------------------------
    def _on_started(self, _ev: Started, now: Now) -> None:
        self.started = now.mono
        self._metric("l2lb_leases_leader", 1 if self.is_leader else 0, op="set")

    def _on_allocation(self, ev: AllocationReceived, _now: Now) -> None:
        a = ev.alloc
        order = (a.term, a.seq)
        if order < self.alloc_order.get(a.key, (-1, -1)):
            return  # an older allocator leader or a replayed entry
        self.alloc_order[a.key] = order
        if a.deleted:
            changed = self.allocations.pop(a.key, None) is not None
        else:
            changed = self.allocations.get(a.key) != a
            self.allocations[a.key] = a
        if changed:
            self.dirty = True

    def _on_alloc_snapshot(self, ev: AllocationSnapshotReceived, _now: Now) -> None:
        """Merge a full snapshot: entries newer than the snapshot (applied from the stream after it
        was taken) win; keys missing from it are dropped unless we saw them after it."""
        snap = ev.snapshot
        at = (snap.term, snap.seq)
        new: dict[str, Allocation] = {}
        order: dict[str, tuple[int, int]] = {}
        in_snap = {a.key for a in snap.allocations}
        for a in snap.allocations:
            mine = self.alloc_order.get(a.key)
            if mine is not None and mine > (a.term, a.seq):
                if a.key in self.allocations:
                    new[a.key] = self.allocations[a.key]
                order[a.key] = mine
            else:
                if not a.deleted:
                    new[a.key] = a
                order[a.key] = (a.term, a.seq)
        for key, mine in self.alloc_order.items():
            if key not in in_snap and mine > at:
                order[key] = mine
                if key in self.allocations:
                    new[key] = self.allocations[key]
        if new != self.allocations:
            self.dirty = True
        self.allocations = new
        self.alloc_order = order
        self.snapshot_loaded = True
        self._log("info", "allocation snapshot applied", services=len(new), term=snap.term, seq=snap.seq)

    def _on_allocs_loaded(self, ev: AllocationsLoaded, now: Now) -> None:
        if isinstance(ev.snapshot, AllocationSnapshot):
            self._on_alloc_snapshot(AllocationSnapshotReceived(ev.snapshot), now)
        self._out.append(RequestSnapshot("allocations", ev.reason))
        if ev.snapshot is None:
            self.snapshot_loaded = True  # nothing stored: go on with what the stream brings

    # -- heartbeats ---------------------------------------------------------------------------------
    def _on_heartbeat(self, ev: HeartbeatReceived, now: Now) -> None:
        at = now.wall if ev.at is None else ev.at
        prev = self.hb_clock  # the newest stream time before this heartbeat: when a silence began
        if self._rebase:  # a new Redis dataset (maybe another host's clock): keep relative ages
            delta = at - self.hb_now(now)
            self.tracker.shift(delta)
            prev += delta
            self.hb_clock = at
            self.hb_clock_mono = now.mono
            self._rebase = False
        if at > self.hb_clock:
            gap = at - self.hb_clock if self.hb_clock > 0 else 0.0
            self.hb_clock = at
            self.hb_clock_mono = now.mono
            if (gap > 0.0 and not self._reconnect_pending
                    and gap > self.tracker.timeout_floor_s and gap > self._all_silent_after()):  # (floor: cheap first)
                self._reconnect_pending = f"no heartbeat from any node for {gap * 1000:.0f} ms"
        if self._reconnect_pending:
            self._start_reconnect_grace(self._reconnect_pending, prev)
        hb, kind = self._with_serving(ev.hb)
        if self.tracker.observe(hb, at):
            self.dirty = True
        st = self.tracker.nodes.get(hb.node)
        if st is None or st.heartbeat is not hb:
            return  # stale (older seq or an old instance): nothing learned
        self._metric("l2lb_leases_heartbeat_serving_total", 1, kind)
        if kind == "unknown":
            self.map_unknown.add(hb.node)
            return
        self.map_unknown.discard(hb.node)
        if kind == "full" and hb.serving_digest:
            self.full_maps[hb.node] = (hb.instance, hb.serving_digest, hb.serving)
        if hb.serving is self._walked.get(hb.node):
            return  # the same map (an omitted one resolved to the stored dict): already walked
        self._walked[hb.node] = hb.serving
        for ip, h in holders_from_serving([hb]).items():
            cur = self.seen_serving.get(ip)
            if cur is None or h.epoch >= cur.epoch:
                self.seen_serving[ip] = h
            held = self.holders.get(ip)
            if held is not None and h.epoch > held.epoch and self.is_leader and (plan := self.successions.get(ip)) \
                    and (h.node, h.epoch) in zip(plan.nodes, plan.epochs, strict=True):
                self._takeovers[ip] = h  # a successor took it over on the LAN with the epoch reserved for it
                self.dirty = True

    def _all_silent_after(self) -> float:
        """A gap in the heartbeat stream longer than this (every live node's timeout) means every node was
        silent at once: Redis or the way to it stalled, not the nodes (inf: no live node)."""
        return min((self.tracker.timeout_s(st.heartbeat) for st in self.tracker.nodes.values() if st.alive),
                   default=float("inf"))

    def _start_reconnect_grace(self, why: str, since: float) -> None:
        """Heartbeats flow again from the stream time just read on (``hb_clock``): the nodes not heard since then
        count their silence from it, plus the reconnect grace (their clients may still be finding Redis)."""
        self._reconnect_pending = ""
        self.tracker.reconnected(self.hb_clock, self.p.reconnect_grace_ms / 1000.0, since if since > 0 else None)
        self.reconnects += 1
        self._metric("l2lb_leases_reconnect_graces_total")
        self._log("info", "heartbeats flow again: nodes not heard since get the reconnect grace", why=why,
                  grace_ms=self.p.reconnect_grace_ms)

    def _with_serving(self, hb: Heartbeat) -> tuple[Heartbeat, str]:
        """A heartbeat whose serving map was omitted becomes one carrying the map this node's instance
        last sent in full with that digest (the same dict, not a copy), before anything looks at it.
        Without a match it stays as it is (serving {}: liveness only) and the map is "unknown"."""
        if not hb.serving_omitted:
            return hb, "full"
        known = self.full_maps.get(hb.node)
        if known is None or known[0] != hb.instance or known[1] != hb.serving_digest:
            return hb, "unknown"
        return dataclasses.replace(hb, serving=known[2]), "omitted"

    def _on_conflict(self, ev: ConflictReceived, _now: Now) -> None:
        c = ev.conflict
        self.conflicts.append({"node": c.node, "ip": c.ip, "their_mac": c.their_mac, "interface": c.interface,
                               "at": c.at, "defended": c.defended})
        if self.is_leader:  # every instance reads heartbeats; one reports
            self._out.append(StatusEvent("conflict", {
                "ip": c.ip, "node": c.node, "reason": "defended" if c.defended else "",
                "message": f"MAC {c.their_mac} on {c.interface} claims it"}))
        self._log("warning", "announcer reports an address conflict", node=c.node, ip=c.ip, their_mac=c.their_mac)

    def _on_hb_resync(self, ev: HeartbeatsResynced, now: Now) -> None:
        self._log("info", "heartbeats stream resync", reason=ev.reason)
        self._refresh_liveness(now)
        if self.hb_clock > 0:
            self._rebase = True
        self._reconnect_pending = f"heartbeats stream resync ({ev.reason})"

    def _refresh_liveness(self, now: Now) -> None:
        """Give every live node a fresh timeout (after we could not read heartbeats for a while)."""
        t = self.hb_now(now)
        for st in self.tracker.nodes.values():
            if st.alive:
                st.last_seen = max(st.last_seen, t)

    # -- requests, policies, endpoints, leadership, epochs ------------------------------------------
    def _on_snapshot_request(self, ev: SnapshotRequested, _now: Now) -> None:
        """An announcer (``announcer:<node>``) lost or could not match its set: send it the full set on the
        next tick. Any other requester (Redis lost its data: ``bus``) gets every node's full set."""
        if not self.is_leader:
            return
        who, _, node = ev.requester.partition(":")
        if who == "announcer" and node:
            self.want_full.add(node)
        else:
            self.full_sent.clear()
            self.next_renew = 0.0
        self._log("info", "assignments snapshot requested", requester=ev.requester, reason=ev.reason)

    def _on_policies(self, ev: PoliciesChanged, _now: Now) -> None:
        self.watched_policies = ev.watched
        pols, bad = parse_policies([*self.p.static_policies, *ev.watched])
        for name, err in bad:
            if (name, err) not in self.policy_errors:
                self._log("warning", "announcement policy ignored", policy=name, error=err)
        self._metric("l2lb_leases_policy_errors", len(bad), op="set")
        if pols != self.policies:
            self.dirty = True
            self._log("info", "announcement policies changed", policies=[p.name for p in pols])
        self.policies, self.policy_errors = pols, bad
        if ev.changed is not None:
            self._policy_event(ev.changed)

    def _policy_event(self, obj: Mapping[str, Any]) -> None:
        """A Warning Event on a policy we cannot use (as leader; the recorder de-duplicates)."""
        if not (self.is_leader and self.p.kube and self.p.events):
            return
        try:
            parse_policy(obj)
        except PolicyError as e:
            meta = obj.get("metadata") or {}
            key = f"{obj.get('kind')}/{meta.get('namespace') or ''}/{meta.get('name')}"
            self._out.append(PolicyEvent(obj, f"policy ignored: {e}"[:1000], key))

    def _on_slice(self, ev: EndpointSliceChanged, _now: Now) -> None:
        meta = ev.obj.get("metadata") or {}
        ns = meta.get("namespace") or ""
        skey = f"{ns}/{meta.get('name')}"
        svc_name = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        affected: set[str] = set()
        prev = self._slices.pop(skey, None)
        if prev is not None:
            affected.add(prev[0])
        if not ev.deleted and isinstance(svc_name, str) and svc_name:
            svc = f"{ns}/{svc_name}"
            self._slices[skey] = (svc, endpoint_nodes(ev.obj))
            affected.add(svc)
        for svc in sorted(affected):
            nodes: set[str] = set()
            for s, ns_ in self._slices.values():
                if s == svc:
                    nodes |= ns_
            old = self.endpoints.get(svc)
            if nodes:
                self.endpoints[svc] = nodes
            else:
                self.endpoints.pop(svc, None)
            if old != self.endpoints.get(svc):
                a = self.allocations.get(svc)
                if a is None or a.external_traffic_policy == "Local":
                    self.dirty = True

    def _on_leadership(self, ev: LeadershipChanged, now: Now) -> None:
        self.leader_known = True
        # epochs of a term we no longer lead are never stored again (another leader may have stored higher ones)
        self._unstored.clear()
        self._storing.clear()
        if ev.leader and not self.is_leader:
            self.term = ev.term
            self.is_leader = True
            self.leader_since = now.mono
            self.adopt_pending = True
            self.dirty = True
            self.next_renew = 0.0
            self.epochs_pending = True  # what the last leader stored (reserved successor epochs too)
            self._out.append(LoadEpochs())
            self._log("info", "became the leases leader", term=self.term)
            for obj in self.watched_policies:
                self._policy_event(obj)
        elif not ev.leader and self.is_leader:
            self.is_leader = False
            self.published.clear()
            self.full_sent.clear()
            # what we decided is history once another leader decides: if we lead again, the holders are
            # adopted from what the announcers serve then (kept, they would bring back old epochs: sim F2)
            self.holders = {}
            self.orphans = {}
            self._log("warning", "lost the leases leadership: publishing nothing")
        self._metric("l2lb_leases_leader", 1 if self.is_leader else 0, op="set")

    def _on_epochs(self, ev: EpochsLoaded, _now: Now) -> None:
        self.epochs_pending = False
        for ip, ep in sorted(ev.epochs.items()):
            self.last_epochs[ip] = max(self.last_epochs.get(ip, 0), ep)
        if ev.restore:  # after Redis lost its data: put back what we know
            known = dict(self.last_epochs)
            for ip, h in self.holders.items():
                known[ip] = max(known.get(ip, 0), h.epoch)
            if known:
                self._store(known)

    def _on_kube_written(self, ev: KubeWritten, _now: Now) -> None:
        c = ev.command
        if isinstance(c, WriteCondition):
            self.service_state[c.service] = c.state
        elif c.holder:
            self.mirror_holder[c.service] = c.holder
        else:
            self.mirror_holder.pop(c.service, None)

    # -- the tick -----------------------------------------------------------------------------------
    def _on_tick(self, ev: Tick, now: Now) -> None:
        self.informers = ev.informers
        self._liveness_tick(ev.bus_ok, ev.bus_generation, now)
        if self._stages or self._inflight:
            return  # the previous tick's sends are not all acknowledged yet
        if self.is_leader and self.snapshot_loaded:
            for inf in ev.informers:
                if not inf.synced and inf.error.startswith(("404", "403")) and inf.name not in self._absent:
                    self._absent.add(inf.name)
                    self._log("warning", "informer cannot list; going on without it", informer=inf.name,
                              error=inf.error)
        if not self.ready_to_elect(now):
            return
        if self.adopt_pending:
            self._adopt(now)
            self.adopt_pending = False
            self.dirty = True
        if self._unstored:  # a store failed last time: these epochs go first, whatever else this tick sends
            unstored, self._unstored = self._unstored, {}
            self._store(unstored)
        if self.dirty:
            self.dirty = False
            self._run_election(now, self._adopt_takeovers())
            self._stages.append(self._publish_changes)
            self._stages.append(self._after_changes)
        tick = now.mono

        def renew(now: Now) -> None:
            if tick >= self.next_renew:
                self.next_renew = tick + self.p.renew_ms / 1000.0
                self._renew(now)
                self._out.append(StatusPart("nodes"))  # after the sends (dropped if one fails)

        self._stages.append(renew)
        self._stages.append(self._send_requested)
        self._continue(now)

    def _continue(self, now: Now) -> None:
        while self._stages and not self._inflight:
            self._stages.popleft()(now)

    def _liveness_tick(self, bus_ok: bool, ev_generation: int, now: Now) -> None:
        t = self.hb_now(now)
        if not bus_ok:
            if not self._stalled:
                self._log("warning", "bus not ready: node timeouts suspended")
            self._stalled = True
            return
        if self._stalled:
            self._stalled = False
            self._refresh_liveness(now)
            # what the nodes serve now is known only from their next heartbeats: no election before them
            # (ready_to_elect waits startup_grace_ms, and a leader not yet adopted reads the epochs it could
            # not read while the bus was down)
            self.resumed = now.mono
            if self.is_leader and self.adopt_pending:
                self.epochs_pending = True
                self._out.append(LoadEpochs())
            self._log("info", "bus ready again: node timeouts resumed")
            # the nodes' clients reconnect too, each at its own pace: timeouts count from the first heartbeat
            # read now on (until then from now on our clock), plus the reconnect grace
            self.tracker.reconnected(self.hb_now(now), self.p.reconnect_grace_ms / 1000.0, self.hb_clock or None)
            self._reconnect_pending = "bus ready again"
        if ev_generation != self._bus_generation:
            if self._bus_generation is not None:
                self._log("info", "the bus moved to another Redis master", generation=ev_generation)
                self._reconnect_pending = "another redis master"
                # replication is asynchronous: what reached the old master last (an Allocation, a snapshot)
                # may be missing on the new one, and nothing else would ever send it again (co-located
                # chaos run: a Service's IP never announced after a Sentinel failover)
                self._out.append(RequestSnapshot("allocations", "redis master moved"))
            self._bus_generation = ev_generation
        alive = [st for st in self.tracker.nodes.values() if st.alive]
        expiring = [st for st in alive if t > self.tracker.deadline(st)]
        if len(alive) >= 2 and len(expiring) == len(alive):
            # Every node silent at once: far likelier our heartbeat reader stalled than the whole
            # cluster died (and with every node dead there is nowhere to move IPs to anyway).
            if not self._silent:
                self._log("warning", "no heartbeat from any node: suspecting the bus, not the nodes",
                          nodes=len(alive))
            self._silent = True
            return
        if self._silent:
            self._silent = False
            self._refresh_liveness(now)  # heartbeats flow again: every node gets a fresh timeout
            self._log("info", "heartbeats flow again: node timeouts resumed")
            return
        changed = self.tracker.tick(t)
        if changed:
            self.dirty = True
            for n in sorted(changed):
                self._log("warning", "node is dead", node=n, reason=self.tracker.nodes[n].reason)
        self._metric("l2lb_leases_nodes_alive", sum(1 for st in self.tracker.nodes.values() if st.alive), op="set")
        claims: dict[str, int] = {}
        for st in self.tracker.nodes.values():
            if st.alive:
                for ip in st.heartbeat.serving:
                    claims[ip] = claims.get(ip, 0) + 1
        dual = sorted(ip for ip, n in claims.items() if n > 1)
        self._metric("l2lb_leases_dual_announced_ips", len(dual), op="set")
        if dual and dual != self.dual:
            self._log("warning", "several nodes report serving the same IP", ips=dual[:20])
        self.dual = dual
        self.tracker.prune(t, after_s=3600)
        if len(self.full_maps) > len(self.tracker.nodes) or len(self._walked) > len(self.tracker.nodes):
            for d in (self.full_maps, self._walked):
                for n in [n for n in d if n not in self.tracker.nodes]:
                    del d[n]
            self.map_unknown &= set(self.tracker.nodes)

    def informers_synced(self) -> bool:
        """Every informer listed -- one whose kind is not installed (404) or not allowed (403) counts as
        empty (as of the last tick)."""
        return all(inf.synced or inf.error.startswith(("404", "403")) for inf in self.informers)

    def ready_to_elect(self, now: Now) -> bool:
        """Leader with the allocations, the informers and (to adopt) the epoch store and the nodes' maps, past
        the startup grace -- and not while the bus is down, nor within the startup grace after it came back:
        a leader that took over meanwhile knows nothing the nodes serve (their heartbeats could not be read;
        they may all have expired one tick after the other), and the first heartbeats read from the stream
        can be a dead node's backlog. Electing then moves VIPs the living nodes kept answering."""
        if not self.is_leader or not self.snapshot_loaded or self._stalled:
            return False
        if not self.informers_synced() and now.mono - self.started < self.p.sync_timeout_s:
            return False
        if self.adopt_pending and (self.epochs_pending or self.maps_missing(now)):
            return False
        return now.mono - max(self.started, self.resumed) >= self.p.startup_grace_ms / 1000.0

    def unsettled(self, now: Now) -> str:
        """Why a decision of this instance (who holds which IP, what each node is told, which nodes are alive)
        may still change by itself at a later time, or "" when none can -- provided the periodic inputs go on
        as they are (each live node's heartbeats at its interval, ticks): a change of those is news, and news
        is the caller's to watch. A simulator skips a stretch of time only while every machine is settled.

        A standby decides nothing (it elects once it leads: news). A leader is unsettled while it publishes,
        has an election or adoption pending (also one that waits for the startup grace, the epoch store, the
        nodes' maps), owes a node its full set, has LAN takeovers to adopt or a reconnect grace to start, while
        a live node has missed a heartbeat and is not timed out yet, or while no heartbeat at all was read for
        longer than the nodes' interval (the liveness clock runs on without them after lag_tolerance_ms); and
        within the startup grace after a start or the bus coming back (an election that a fault makes due
        then waits for it: rest would have left that behind)."""
        if not self.is_leader:
            return ""
        if self._inflight or self._stages:
            return "publishing"
        if self.dirty or self.adopt_pending:
            return "an election is pending"
        if self.want_full:
            return "full sets requested"
        if self._takeovers:
            return "LAN takeovers to adopt"
        if self.epochs_pending:
            return "waiting for the epoch store"
        if self._reconnect_pending:
            return "a reconnect grace is pending"
        if self._stalled or self._silent:
            return ""  # every liveness decision waits for the bus / the heartbeats to come back (news)
        if now.mono - max(self.started, self.resumed) < self.p.startup_grace_ms / 1000.0:
            return "within the startup grace (an election now would wait for it)"
        alive = [st for st in self.tracker.nodes.values() if st.alive]
        if not alive:
            return ""
        interval = max(self.tracker.timeout_s(st.heartbeat) for st in alive) / self.tracker.missed
        if now.mono - self.hb_clock_mono > 1.5 * interval:
            return f"no heartbeat read for {now.mono - self.hb_clock_mono:.3f} s"
        t = self.hb_now(now)
        for st in alive:
            if t - st.last_seen > 1.5 * self.tracker.timeout_s(st.heartbeat) / self.tracker.missed:
                return f"node {st.node} missed heartbeats: it times out at {self.tracker.deadline(st):.3f}"
        return ""

    def settled(self, now: Now) -> bool:
        """No decision of this instance changes by itself (see :meth:`unsettled`)."""
        return not self.unsettled(now)

    def maps_missing(self, now: Now) -> list[str]:
        """Live nodes whose serving map we do not know yet (they send only its digest and we have not
        seen the full map), while that is worth waiting for: adopting holders without them could move
        their VIPs. Announcers send the full map at least every --heartbeat-full-every-ms, so the wait
        ends that long + 1 s after start (or after becoming leader) at the latest."""
        if not self.map_unknown:
            return []
        since = max(self.started, self.leader_since, self.resumed)
        if now.mono - since >= (self.p.heartbeat_full_every_ms + 1000) / 1000.0:
            return []
        alive = self.tracker.alive()
        return sorted(n for n in self.map_unknown if n in alive)

    def _adopt(self, now: Now) -> None:
        """Become leader without moving anything: hold every IP where the announcers serve it now.

        Fencing: epochs only grow. Every epoch any announcer reported (also nodes that are gone now) is
        known as issued; a holder is adopted with its own epoch only while no other node reported a higher
        one for the IP. A holder recalled from earlier heartbeats (its set ran out while nobody led) keeps the
        IP but under a NEW epoch: its old one may be below an epoch another leader issued meanwhile into a
        Redis that failed over without it (found by the simulator: seeds 18 and partition-holder)."""
        alive = self.tracker.alive()
        reported = holders_from_serving(alive.values())
        seen_max: dict[str, Holder] = {}  # ip -> the highest epoch any announcer reported, and by whom
        for st in sorted(self.tracker.nodes.values(), key=lambda st: st.node):
            for ip, e in st.heartbeat.serving.items():
                if ip not in seen_max or e > seen_max[ip].epoch:
                    seen_max[ip] = Holder(st.node, e)
        for ip, h in self.seen_serving.items():
            if ip not in seen_max or h.epoch > seen_max[ip].epoch:
                seen_max[ip] = h
        for ip, h in seen_max.items():
            self.last_epochs[ip] = max(self.last_epochs.get(ip, 0), h.epoch)
        fresh = int(now.wall * 1000)

        def renewed(ip: str, node: str, old: int) -> Holder:
            epoch = max(self.last_epochs.get(ip, 0) + 1, old + 1, fresh)
            self.last_epochs[ip] = epoch
            self._store({ip: epoch})
            return Holder(node, epoch)

        for ip, h in list(reported.items()):
            top = seen_max.get(ip)
            if top is not None and top.epoch > h.epoch and top.node != h.node:
                reported[ip] = renewed(ip, h.node, h.epoch)  # someone else was given it later
        for ip, h in self.seen_serving.items():
            if h.node in alive and ip not in reported:
                reported[ip] = renewed(ip, h.node, h.epoch)  # recalled: its set ran out while nobody led
        self.seen_serving = {}
        self._walked.clear()  # walk every node's next map again into the fresh seen_serving
        merged = dict(self.orphans)
        merged.update(self.holders)
        for ip, h in reported.items():
            cur = merged.get(ip)
            if cur is None or h.epoch > cur.epoch:
                merged[ip] = h
        self.holders = merged
        self.orphans = {}
        self._takeovers = {}
        self.published.clear()
        self.full_sent.clear()
        for ip, h in merged.items():
            self.last_epochs[ip] = max(self.last_epochs.get(ip, 0), h.epoch)
        self._log("info", "adopted current holders", ips=len(merged), reported=len(reported))

    def _adopt_takeovers(self) -> list[Move]:
        """A successor that took a VIP over on the LAN (while it could not hear us) with the epoch we reserved
        for it becomes its holder: nothing moves, the election keeps it there."""
        moves = []
        for ip, h in sorted(self._takeovers.items()):
            cur = self.holders.get(ip)
            if cur is None or h.epoch <= cur.epoch or not self.tracker.is_alive(h.node):
                continue
            self.holders[ip] = h
            self.last_epochs[ip] = max(self.last_epochs.get(ip, 0), h.epoch)
            a = self.result.assignments.get(ip) if self.result is not None else None
            moves.append(Move(ip, cur.node, h.node, h.epoch, "lan_takeover", a.services if a else ()))
        self._takeovers = {}
        return moves

    def _run_election(self, now: Now, takeovers: list[Move]) -> None:
        current = dict(self.orphans)
        current.update(self.holders)
        res = elect(self.allocations.values(), self.policies, self.tracker.alive(), current,
                    now_ms=int(now.wall * 1000), endpoints=self.endpoints, last_epochs=self.last_epochs,
                    preferred={ip: p.nodes for ip, p in self.successions.items()})
        self.elections += 1
        self.last_epochs.update(res.epochs)
        self.successions, reserved = plan_successions(res, self.successions, self.p.successors, self.last_epochs)
        if self.p.successors > 0:
            # the nodes eligible now, and the members of before that the tracker still knows (dead for less
            # than its prune time, not forgotten): a member that dies stays one, so the quorum the
            # announcers count on the LAN does not shrink to the few nodes alive during a burst of faults
            # (simulator, seed 0 at 6 faults/min: a 2-member list left 4 heard nodes without a quorum).
            # A larger list only makes the quorum harder to reach: never less safe.
            now_eligible = {n for e in res.eligible.values() for n in e}
            kept = {n for n in self.members if n in self.tracker.nodes}
            self.members = tuple(sorted(now_eligible | kept))
        else:
            self.members = ()
        stored = dict(res.epochs)
        for ip, e in reserved.items():
            self.last_epochs[ip] = max(self.last_epochs.get(ip, 0), e)
            stored[ip] = self.last_epochs[ip]
        if stored:
            self._store(stored)  # stored before anything names them
        orphans: dict[str, Holder] = {}
        for m in res.moves:
            if m.new is None and m.reason == "no_eligible_node" and m.old is not None:
                orphans[m.ip] = current[m.ip]
        for ip, h in current.items():  # still unassignable, still remembered
            if res.unassigned.get(ip) == "no_eligible_node" and ip not in orphans:
                orphans[ip] = h
        moves = takeovers + [m for m in res.moves if not (m.new is None and m.ip in self.orphans)]
        self.orphans = orphans
        self.holders = res.holders()
        self.result = res
        for m in moves:
            self._record_move(m, now)
        reasons: dict[str, int] = {}
        for r in res.unassigned.values():
            reasons[r] = reasons.get(r, 0) + 1
        for r in ("no_policy", "no_eligible_node", "invalid_ip"):
            self._metric("l2lb_leases_unassigned_ips", reasons.get(r, 0), r, op="set")
        self._kube_updates(res, moves)

    def _record_move(self, m: Move, now: Now) -> None:
        self._metric("l2lb_leases_moves_total", 1, m.reason)
        self.moves_total += 1
        entry = {"ip": m.ip, "from": m.old, "to": m.new, "epoch": m.epoch, "reason": m.reason,
                 "services": list(m.services), "at": round(now.wall, 3)}
        self.recent_moves.append(entry)
        if m.old is not None and m.reason != "removed":  # first placement / deleted Service: not a move
            # the measured part of the outage: how long the old holder had been silent when we named the
            # new one (its last heartbeat, on the liveness clock); the status page draws it per move
            old = self.tracker.nodes.get(m.old)
            gap_ms = round(max(0.0, self.hb_now(now) - old.last_seen) * 1000, 1) if old is not None else None
            self._out.append(StatusEvent("move" if m.new else "unassigned", {
                "ip": m.ip, "service": ",".join(m.services), "reason": m.reason, "from": m.old,
                "to": m.new or "", "gap_ms": gap_ms}))
        self._log("info", "ip holder changed", **entry)

    def _kube_updates(self, res: ElectionResult, moves: Iterable[Move]) -> None:
        if not self.p.kube or not self.is_leader:
            return
        for key, st in res.services.items():
            prev = self.service_state.get(key)
            if self.p.conditions and (prev is None or (prev.announced, prev.reason, prev.message)
                                      != (st.announced, st.reason, st.message)):
                self._out.append(WriteCondition(key, st))
            if self.p.mirror_leases:
                holder = ",".join(st.nodes) if st.announced else ""  # dual-stack IPs may sit on two nodes
                if self.mirror_holder.get(key) != holder:
                    self._out.append(WriteLease(key, holder, max(1, self.p.ttl_ms // 1000)))
        for key in list(self.service_state):
            if key not in res.services:
                self.service_state.pop(key, None)
                if self.p.mirror_leases:
                    self._out.append(WriteLease(key, "", max(1, self.p.ttl_ms // 1000)))
        if not self.p.events:
            return
        for m in moves:
            if m.old is None:
                continue  # first placement is not a move (and would flood Events at startup)
            for svc in m.services:
                a = self.allocations.get(svc)
                if m.new is None:
                    typ, reason, msg = "Warning", "AnnouncementStopped", f"{m.ip} no longer announced ({m.reason})"
                else:
                    typ, reason, msg = "Normal", "AnnouncerMoved", f"{m.ip} moved from node {m.old} to {m.new} " \
                                                                   f"({m.reason})"
                self._out.append(ServiceEvent(svc, a.uid if a else "", typ, reason, msg, f"{m.ip}:{m.epoch}:{m.new}"))

    # -- publishing stages --------------------------------------------------------------------------
    def node_sets(self) -> dict[str, NodeSet]:
        """node -> what it is told (every live node, possibly nothing). Rebuilt only when the election result
        or the set of live nodes changed: the same objects come back, so "unchanged" is cheap to test."""
        alive = frozenset(self.tracker.alive())
        cached = self._sets_cache
        if cached is not None and cached[0] is self.result and cached[1] == alive:
            return dict(cached[2])
        vips: dict[str, list[VipAssignment]] = {}
        standby: dict[str, list[StandbyVip]] = {}
        res = self.result
        if res is not None:
            for node, assigns in res.by_node().items():
                for a in assigns:
                    plan = self.successions.get(a.ip)
                    succ = tuple(Successor(n, e) for n, e in zip(plan.nodes, plan.epochs, strict=True)) if plan else ()
                    vips.setdefault(node, []).append(VipAssignment(a.ip, a.epoch, a.interfaces, a.services, succ))
                    for rank, (n, e) in enumerate(zip(plan.nodes, plan.epochs, strict=True) if plan else (), 1):
                        standby.setdefault(n, []).append(StandbyVip(a.ip, node, rank, e, res.eligible[a.ip].get(n, ()),
                                                                    a.services))
        sets = {n: NodeSet(tuple(vips.get(n, ())), tuple(standby.get(n, ())), self.members) for n in sorted(alive)}
        for n in sorted(set(vips) - alive):  # elected before it died: still its set until the next election
            sets[n] = NodeSet(tuple(vips[n]), tuple(standby.get(n, ())), self.members)
        self._sets_cache = (res, alive, sets)
        return dict(sets)

    def _store(self, epochs: Mapping[str, int]) -> None:
        self._storing.update(epochs)
        self._out.append(StoreEpochs(dict(epochs)))

    def _send(self, c: Publish) -> None:
        self._inflight.append(c)
        self._out.append(c)

    def _full(self, node: str, ns: NodeSet, why: str, now: Now, requested: bool = False) -> None:
        """The full set of ``node`` (with its digest); remembered as the set renewals name once sent."""
        self.seq += 1
        msg = NodeAssignments(node=node, term=self.term, seq=self.seq, ttl_ms=self.p.ttl_ms, sent_at=now.wall,
                              vips=ns.vips, digest=ns.digest(),
                              standby=ns.standby, members=ns.members)
        self._send(PublishAssignments(msg, why, requested))

    def _publish_changes(self, now: Now) -> None:
        """Changed node sets, in an order where no VIP is ever in two nodes' sets: nodes that lose a VIP first
        (by name), then the others; a node that gains a VIP another node still holds gets its set after every
        loser -- and when it loses one itself, first its set without those gains (a swap needs that)."""
        new = self.node_sets()
        for node, old in self.published.items():
            if old.holds_any() and node not in new:
                new[node] = NodeSet(members=self.members)  # lost every VIP (dead or gone): say so once
        changed = [n for n in sorted(new) if self.published.get(n) != new[n]]
        held_by = {v.ip: n for n in changed for v in self.published.get(n, EMPTY).vips}

        def loses(n: str) -> bool:
            have = {v.ip for v in new[n].vips}
            return any(v.ip not in have for v in self.published.get(n, EMPTY).vips)

        later = []
        for n in sorted(changed, key=lambda n: (not loses(n), n)):
            taken = {v.ip for v in new[n].vips if held_by.get(v.ip, n) != n}  # still held by another node
            if not taken:
                self._full(n, new[n], "change", now)
                continue
            if loses(n):
                self._full(n, dataclasses.replace(new[n], vips=tuple(v for v in new[n].vips if v.ip not in taken)),
                           "change", now)
            later.append(n)
        for n in later:
            self._full(n, new[n], "change", now)
        self._pending_prune = new
        self._metric("l2lb_leases_assignments", 0, op="clear")
        for n, ns in new.items():
            self._metric("l2lb_leases_assignments", len(ns.vips), n, op="set")

    def _after_changes(self, _now: Now) -> None:
        new, self._pending_prune = self._pending_prune or {}, None
        alive = self.tracker.alive()
        for n in [n for n in self.published if n not in new or (not new[n].holds_any() and n not in alive)]:
            self.published.pop(n, None)
            self.full_sent.pop(n, None)
        self._out.append(StatusPart("assignments"))

    def _renewable(self, node: str, ns: NodeSet, now: Now) -> str | None:
        """The digest a NodeRenewal for ``node`` may name, or None when the full set must go out: the set
        differs from the last full one sent, that was in another term, is older than --full-every-ms,
        or the node asked for it."""
        every = self.p.full_every_ms / 1000.0
        sent = self.full_sent.get(node)
        prev = self.published.get(node)
        if every <= 0 or sent is None or prev is None or node in self.want_full:
            return None
        digest, term, at = sent
        if term != self.term or now.mono - at >= every:
            return None
        if prev is not ns and prev != ns:
            return None
        return digest

    def _renew(self, now: Now) -> None:
        """One renewal round: a NodeRenewal per node whose set is unchanged since its last full message
        (same term, within --full-every-ms), the full set for the others."""
        # Compatibility contract: only leases versions that understand heartbeats with an omitted serving
        # map (Heartbeat.serving_omitted, resolved in _with_serving) send NodeRenewal. An announcer omits its
        # map only while it accepts NodeRenewals, so an older leases (full sets only) always gets full maps.
        for n, ns in sorted(self.node_sets().items()):
            digest = self._renewable(n, ns, now)
            if digest is not None:
                self.seq += 1
                self._send(PublishRenewal(NodeRenewal(node=n, term=self.term, seq=self.seq, ttl_ms=self.p.ttl_ms,
                                                      sent_at=now.wall, digest=digest)))
            else:
                self._full(n, ns, "snapshot" if n in self.want_full else "renew", now)

    def _send_requested(self, now: Now) -> None:
        """The full set, now, to every node that asked for it (SnapshotRequest) since the last tick."""
        if not self.want_full:
            return
        want, self.want_full = self.want_full, set()
        sets = self.node_sets()
        for n in sorted(want):
            if n in sets:  # else not a live node (yet): it gets its set when leases sees it alive
                self._full(n, sets[n], "snapshot", now, requested=True)

    def _on_sent(self, ev: Sent, now: Now) -> None:
        self._storing.clear()  # the executor goes on only after a store worked: every one before this is in
        c = ev.command
        self._inflight = [x for x in self._inflight if x is not c]
        if isinstance(c, PublishAssignments):
            self.published[c.msg.node] = NodeSet(c.msg.vips, c.msg.standby, c.msg.members)
            self.full_sent[c.msg.node] = (c.msg.digest, c.msg.term, now.mono)
            self._metric("l2lb_leases_published_total", 1, c.why)
        else:
            self._metric("l2lb_leases_published_total", 1, "renew_digest")
        if isinstance(c, PublishAssignments) and not c.requested:
            # a full set went out anyway (a change): it answers a request. A renewal never does (it names a
            # digest the node could not use: the request must stay until its full set goes out)
            self.want_full.discard(c.msg.node)
        self._continue(now)

    def _on_send_failed(self, ev: SendFailed, _now: Now) -> None:
        """A publish failed (Redis hiccup): the rest of this tick is dropped and retried next tick."""
        unsent, self._inflight = self._inflight, []
        if self.is_leader:
            self._unstored.update(self._storing)
        self._storing.clear()
        for c in unsent:
            if isinstance(c, PublishAssignments) and c.requested:
                self.want_full.add(c.msg.node)  # still wanted
        self._stages.clear()
        self._pending_prune = None
        self.dirty = True
        self._log("warning", "leases tick failed; retrying", error=ev.error)

    # -- status -------------------------------------------------------------------------------------
    def role(self, leader_seen: bool = False) -> str:
        """leader | standby | unknown (``leader_seen``: the elector knows who leads)."""
        if self.is_leader:
            return "leader"
        return "standby" if self.leader_known or leader_seen else "unknown"

    def status(self, now: Now, role: str) -> dict[str, Any]:
        res = self.result
        assignments: list[dict[str, Any]] = []
        if res is not None and self.is_leader:
            for a in res.assignments.values():
                plan = self.successions.get(a.ip)
                succ = [{"node": n, "epoch": e} for n, e in zip(plan.nodes, plan.epochs, strict=True)] if plan else []
                assignments.append({"ip": a.ip, "node": a.node, "epoch": a.epoch, "interfaces": list(a.interfaces),
                                    "services": list(a.services), "successors": succ})
        return {
            "role": role,
            "term": self.term,
            "members": list(self.members),
            "assignments": assignments,
            "unassigned": dict(res.unassigned) if res is not None else {},
            "services": {k: {"announced": s.announced, "reason": s.reason, "message": s.message}
                         for k, s in (res.services.items() if res is not None else ())},
            "nodes": self.tracker.status(self.hb_now(now)),
            "recent_moves": list(self.recent_moves),
            "moves_total": self.moves_total,
            "elections": self.elections,
            "policies": [p.name for p in self.policies],
            "policy_errors": [{"policy": n, "error": e} for n, e in self.policy_errors],
            "allocations": len(self.allocations),
            "conflicts": list(self.conflicts),
        }


_HANDLERS: dict[type, Callable[[LeasesMachine, Any, Now], None]] = {
    Started: LeasesMachine._on_started,
    AllocationReceived: LeasesMachine._on_allocation,
    AllocationSnapshotReceived: LeasesMachine._on_alloc_snapshot,
    AllocationsLoaded: LeasesMachine._on_allocs_loaded,
    HeartbeatReceived: LeasesMachine._on_heartbeat,
    ConflictReceived: LeasesMachine._on_conflict,
    HeartbeatsResynced: LeasesMachine._on_hb_resync,
    SnapshotRequested: LeasesMachine._on_snapshot_request,
    PoliciesChanged: LeasesMachine._on_policies,
    EndpointSliceChanged: LeasesMachine._on_slice,
    LeadershipChanged: LeasesMachine._on_leadership,
    EpochsLoaded: LeasesMachine._on_epochs,
    Tick: LeasesMachine._on_tick,
    Sent: LeasesMachine._on_sent,
    SendFailed: LeasesMachine._on_send_failed,
    KubeWritten: LeasesMachine._on_kube_written,
}
