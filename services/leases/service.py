"""The leases service: consumes allocations, heartbeats, policies and EndpointSlices, runs the pure
election and publishes one NodeAssignments per node (state-based) whenever a node's set changes.
Every --renew-ms each node's set is renewed: by a small NodeRenewal naming the digest of the last
full set sent to it in this term, or by the full set again after a term change, on a SnapshotRequest
("assignments") and at least every --full-every-ms (0: always full).

Active/standby: every instance consumes everything (warm); only the leader publishes. On becoming
leader an instance first adopts the holders the announcers report in their heartbeats' ``serving``
maps, so a leases failover moves no IP. Heartbeats that carry only the digest of an unchanged serving
map get the node's last full map back (``_with_serving``); until every live node's map is known (or
--heartbeat-full-every-ms + 1 s) holders are not adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import StatusParts
from l2lb.core.election import ElectionResult, Holder, Move, ServiceState, elect, holders_from_serving
from l2lb.core.messages import (
    Allocation,
    AllocationSnapshot,
    Conflict,
    Heartbeat,
    Message,
    NodeAssignments,
    NodeRenewal,
    SnapshotRequest,
    VipAssignment,
    assignments_digest,
)
from l2lb.core.nodes import NodeTracker
from l2lb.core.policy import L2Policy, PolicyError, parse_policies, parse_policy
from l2lb.core.view import AssignmentHistory, nodes_items
from l2lb.obs import metrics
from l2lb.obs.log import get_logger
from l2lb.runtime.run import run_until_stopped

log = get_logger("l2lb.leases")

MOVES = metrics.counter("l2lb_leases_moves_total", "IP holder changes, by reason", ("reason",))
ELECTION_SECONDS = metrics.histogram(
    "l2lb_leases_election_seconds",
    "Time one election run takes",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
NODES_ALIVE = metrics.gauge("l2lb_leases_nodes_alive", "Nodes with live heartbeats")
ASSIGNMENTS = metrics.gauge("l2lb_leases_assignments", "IPs assigned per node", ("node",))
PUBLISHED = metrics.counter(
    "l2lb_leases_published_total",
    "Assignment messages published: full NodeAssignments (why=change|renew|snapshot) or NodeRenewal "
    "(why=renew_digest)",
    ("why",),
)
IS_LEADER = metrics.gauge("l2lb_leases_leader", "1 while this instance is the active leases leader")
UNASSIGNED = metrics.gauge("l2lb_leases_unassigned_ips", "IPs that cannot be announced, by reason", ("reason",))
KUBE_WRITES = metrics.counter(
    "l2lb_leases_kube_writes_total",
    "Kubernetes writes made by leases (mirrors, conditions, events)",
    ("what",),
)
DUAL = metrics.gauge("l2lb_leases_dual_announced_ips", "IPs that more than one live node reports serving (should be 0)")
HB_SERVING = metrics.counter(
    "l2lb_leases_heartbeat_serving_total",
    "Heartbeats read, by their serving map: full, omitted (digest matched the last full map), unknown "
    "(omitted, but no full map with that digest seen from that instance yet)",
    ("serving",),
)
POLICY_ERRORS = metrics.gauge("l2lb_leases_policy_errors", "Announcement policies that cannot be used")

POLICY_RESOURCES = {"cilium": "cilium_l2policies", "metallb": "metallb_l2ads", "l2lb": "l2lb_l2policies"}
CONDITION = "l2lb.io/Announced"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "l2lb-leases"


@dataclass
class LeasesConfig:
    instance: str
    namespace: str = "l2lb-system"
    tick_ms: int = 50
    renew_ms: int = 250
    ttl_ms: int = 1000
    full_every_ms: int = 30000  # full set at least this often per node; 0 = every renewal is full
    missed: int = 3
    startup_grace_ms: int = 500
    policy_kinds: tuple[str, ...] = ("cilium", "metallb", "l2lb")
    leader_election: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    mirror_leases: bool = False
    conditions: bool = True
    events: bool = True
    sync_timeout_s: float = 30.0
    lag_tolerance_ms: int = 2000
    # the announcers' --heartbeat-full-every-ms: a leases started after their last full serving map
    # waits this long + 1 s for the maps before adopting holders
    heartbeat_full_every_ms: int = 2000
    static_policies: list[dict[str, Any]] = field(default_factory=list)


def _ep_nodes(slice_obj: dict[str, Any]) -> set[str]:
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


class LeasesService:
    def __init__(
        self,
        cfg: LeasesConfig,
        bus: Bus,
        kube: Any | None = None,  # KubeClient; Any keeps this importable for kube-less runs
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.cfg = cfg
        self.bus = bus
        self.kube = kube
        self.mono = monotonic
        self.wall = wall
        self.tracker = NodeTracker(missed=cfg.missed)
        self.allocations: dict[str, Allocation] = {}
        self.alloc_order: dict[str, tuple[int, int]] = {}  # key -> (term, seq) applied
        self.policies: list[L2Policy] = []
        self.policy_errors: list[tuple[str, str]] = []
        self.endpoints: dict[str, set[str]] = {}  # service key -> nodes with ready endpoints
        self._slices: dict[str, tuple[str, set[str]]] = {}  # slice key -> (service key, nodes)
        self.holders: dict[str, Holder] = {}
        self.seen_serving: dict[str, Holder] = {}  # ip -> highest-epoch holder reported in heartbeats
        self.orphans: dict[str, Holder] = {}  # IPs without an eligible node: last holder, for stickiness
        self.last_epochs: dict[str, int] = {}
        self.result: ElectionResult | None = None
        self.published: dict[str, tuple[VipAssignment, ...]] = {}  # node -> last FULL set sent
        self.full_sent: dict[str, tuple[str, int, float]] = {}  # node -> (digest, term, monotonic) of it
        self.want_full: set[str] = set()  # nodes that asked for their full set (SnapshotRequest)
        self._sets_cache: tuple[ElectionResult | None, frozenset[str], dict[str, tuple[VipAssignment, ...]]] | None \
            = None
        self.snap_consumer: Any | None = None
        self.is_leader = False
        self.term = 0
        self.seq = int(wall() * 1000)
        self.leader_known = not cfg.leader_election
        self.leader_since = 0.0
        self.started = monotonic()
        self.snapshot_loaded = False
        self.dirty = True
        self.adopt_pending = False
        self.next_renew = 0.0
        self.recent_moves: deque[dict[str, Any]] = deque(maxlen=100)
        self.moves_total = 0
        self.elections = 0
        self.conflicts: deque[dict[str, Any]] = deque(maxlen=20)
        self.last_hb_any = 0.0
        self.hb_clock = 0.0
        self.hb_clock_mono = monotonic()
        self._rebase = False
        self._stalled = False
        self._silent = False
        self._dual: list[str] = []
        # Heartbeats without the serving map (serving_omitted): per node the last full map with the
        # (instance, digest) it came with; nodes whose current map we do not know (omitted, no match);
        # per node the serving dict last walked into seen_serving (an unchanged map is not walked again)
        self.full_maps: dict[str, tuple[str, str, dict[str, int]]] = {}
        self.map_unknown: set[str] = set()
        self._walked: dict[str, dict[str, int]] = {}
        self._absent: set[str] = set()
        self.informers: dict[str, Any] = {}
        self.elector: Any | None = None
        self.recorder: Any | None = None
        self._kube_queue: dict[tuple[str, str], Callable[[], Coroutine[Any, Any, None]]] = {}
        self._kube_wake = asyncio.Event()
        self._kube_failures: dict[tuple[str, str], int] = {}
        self._service_state: dict[str, ServiceState] = {}
        self._mirror_holder: dict[str, str] = {}
        self.hb_consumer: Any | None = None
        self.status_parts = StatusParts(bus, ("assignments", "nodes"))  # the cluster view's parts (leader only)
        self.status_history = AssignmentHistory()
        self.alloc_consumer: Any | None = None
        if cfg.static_policies:
            self.policies, self.policy_errors = parse_policies(cfg.static_policies)
        if not cfg.leader_election:
            self.is_leader = True
            self.term = int(wall())  # no elector: a restart still gets a higher term
            self.leader_since = monotonic()
            self.adopt_pending = True

    # -- bus handlers ------------------------------------------------------------------------------
    def apply_allocation(self, a: Allocation) -> bool:
        order = (a.term, a.seq)
        if order < self.alloc_order.get(a.key, (-1, -1)):
            return False  # an older allocator leader or a replayed entry
        self.alloc_order[a.key] = order
        if a.deleted:
            changed = self.allocations.pop(a.key, None) is not None
        else:
            changed = self.allocations.get(a.key) != a
            self.allocations[a.key] = a
        if changed:
            self.dirty = True
        return changed

    def apply_snapshot(self, snap: AllocationSnapshot) -> None:
        """Merge a full snapshot: entries newer than the snapshot (applied from the stream after it
        was taken) win; keys missing from it are dropped unless we saw them after it."""
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
        log.info("allocation snapshot applied", extra={"services": len(new), "term": snap.term, "seq": snap.seq})

    async def _on_allocation(self, msg: Message, _id: str) -> None:
        if isinstance(msg, Allocation):
            self.apply_allocation(msg)
        elif isinstance(msg, AllocationSnapshot):
            self.apply_snapshot(msg)

    def hb_now(self) -> float:
        """The liveness clock: Redis stream time (heartbeat entry ids), so our own processing lag
        ages every node alike and clocks of other hosts never matter. When no heartbeat arrives
        at all it runs on with our monotonic clock after ``lag_tolerance_ms`` (a lone node that
        stops is still found dead)."""
        idle = self.mono() - self.hb_clock_mono - self.cfg.lag_tolerance_ms / 1000.0
        return self.hb_clock + max(0.0, idle)

    def apply_heartbeat(self, hb: Heartbeat, at: float | None = None) -> None:
        """``at``: when Redis stored the heartbeat (stream entry id time, seconds); default now."""
        now = self.wall() if at is None else at
        if self._rebase:  # a new Redis dataset (maybe another host's clock): keep relative ages
            delta = now - self.hb_now()
            for ns in self.tracker.nodes.values():
                ns.last_seen += delta
                ns.since += delta
            self.hb_clock = now
            self.hb_clock_mono = self.mono()
            self._rebase = False
        if now > self.hb_clock:
            self.hb_clock = now
            self.hb_clock_mono = self.mono()
        self.last_hb_any = now
        hb, kind = self._with_serving(hb)
        if self.tracker.observe(hb, now):
            self.dirty = True
        st = self.tracker.nodes.get(hb.node)
        if st is None or st.heartbeat is not hb:
            return  # stale (older seq or an old instance): nothing learned
        HB_SERVING.labels(kind).inc()
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

    async def _on_heartbeat(self, msg: Message, eid: str) -> None:
        if isinstance(msg, Heartbeat):
            try:
                at: float | None = int(eid.split("-", 1)[0]) / 1000.0
            except ValueError:
                at = None
            self.apply_heartbeat(msg, at)
        elif isinstance(msg, Conflict):
            self.conflicts.append(
                {
                    "node": msg.node,
                    "ip": msg.ip,
                    "their_mac": msg.their_mac,
                    "interface": msg.interface,
                    "at": msg.at,
                    "defended": msg.defended,
                }
            )
            if self.is_leader:  # every instance reads heartbeats; one reports
                self.status_parts.emit("conflict", ip=msg.ip, node=msg.node, reason="defended" if msg.defended else "",
                                       message=f"MAC {msg.their_mac} on {msg.interface} claims it")
            log.warning(
                "announcer reports an address conflict",
                extra={"node": msg.node, "ip": msg.ip, "their_mac": msg.their_mac},
            )

    async def _on_alloc_resync(self, reason: str) -> None:
        log.info("allocations stream resync", extra={"reason": reason})
        await self.load_allocations(reason)
        await self._restore_epochs()

    async def _on_hb_resync(self, reason: str) -> None:
        log.info("heartbeats stream resync", extra={"reason": reason})
        self._refresh_liveness()
        if self.hb_clock > 0:
            self._rebase = True

    async def load_allocations(self, reason: str) -> None:
        try:
            snap = await self.bus.load_snapshot("allocations")
        except Exception as e:
            log.warning("cannot load the allocations snapshot", extra={"error": repr(e)})
            snap = None
        if isinstance(snap, AllocationSnapshot):
            self.apply_snapshot(snap)
        try:
            await self.bus.request_snapshot("allocations", f"leases:{self.cfg.instance}", reason)
        except Exception as e:
            log.warning("cannot request an allocations snapshot", extra={"error": repr(e)})
        if snap is None:
            self.snapshot_loaded = True  # nothing stored: go on with what the stream brings

    # -- epochs in Redis ---------------------------------------------------------------------------
    def _redis(self) -> Any:
        return getattr(self.bus, "redis", None)

    async def _load_epochs(self) -> None:
        r = self._redis()
        if r is None:
            return
        try:
            raw = await r.hgetall(self.bus.keys.epochs)
        except Exception as e:
            log.warning("cannot read stored epochs", extra={"error": repr(e)})
            return
        for k, v in raw.items():
            ip = k.decode() if isinstance(k, bytes) else str(k)
            try:
                ep = int(v)
            except (TypeError, ValueError):
                continue
            self.last_epochs[ip] = max(self.last_epochs.get(ip, 0), ep)

    async def _store_epochs(self, epochs: dict[str, int]) -> None:
        r = self._redis()
        if r is None or not epochs:
            return
        try:
            await r.hset(self.bus.keys.epochs, mapping={k: str(v) for k, v in epochs.items()})
        except Exception as e:  # the wall-clock part keeps epochs increasing without Redis
            log.warning("cannot store epochs", extra={"error": repr(e), "ips": len(epochs)})

    async def _restore_epochs(self) -> None:
        """After Redis lost its data: put back what we know."""
        await self._load_epochs()
        known = dict(self.last_epochs)
        for ip, h in self.holders.items():
            known[ip] = max(known.get(ip, 0), h.epoch)
        await self._store_epochs(known)

    # -- kube side ---------------------------------------------------------------------------------
    def _reparse_policies(self) -> None:
        objs: list[dict[str, Any]] = list(self.cfg.static_policies)
        for kind in self.cfg.policy_kinds:
            inf = self.informers.get(f"policy:{kind}")
            if inf is not None:
                objs.extend(inf.cache.values())
        pols, bad = parse_policies(objs)
        for name, err in bad:
            if (name, err) not in self.policy_errors:
                log.warning("announcement policy ignored", extra={"policy": name, "error": err})
        POLICY_ERRORS.set(len(bad))
        if pols != self.policies:
            self.dirty = True
            log.info("announcement policies changed", extra={"policies": [p.name for p in pols]})
        self.policies, self.policy_errors = pols, bad

    async def _on_policy(self, ev: str, obj: dict[str, Any], _old: dict[str, Any] | None) -> None:
        self._reparse_policies()
        if ev != "DELETED":
            self._policy_event(obj)

    def _policy_event(self, obj: dict[str, Any]) -> None:
        """A Warning Event on a policy we cannot use (as leader; the recorder de-duplicates)."""
        if not self.is_leader or self.recorder is None:
            return
        try:
            parse_policy(obj)
        except PolicyError as e:
            meta = obj.get("metadata") or {}
            key = f"{obj.get('kind')}/{meta.get('namespace') or ''}/{meta.get('name')}"
            msg = f"policy ignored: {e}"
            recorder = self.recorder

            async def write() -> None:
                await recorder.event(obj, "Warning", "InvalidPolicy", msg[:1000])
                KUBE_WRITES.labels("event").inc()

            self._queue("policy-event", key, write)

    def _policy_events_all(self) -> None:
        for kind in self.cfg.policy_kinds:
            inf = self.informers.get(f"policy:{kind}")
            for obj in list(inf.cache.values()) if inf is not None else []:
                self._policy_event(obj)

    async def _on_slice(self, ev: str, obj: dict[str, Any], _old: dict[str, Any] | None) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or ""
        skey = f"{ns}/{meta.get('name')}"
        svc_name = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        affected: set[str] = set()
        prev = self._slices.pop(skey, None)
        if prev is not None:
            affected.add(prev[0])
        if ev != "DELETED" and isinstance(svc_name, str) and svc_name:
            svc = f"{ns}/{svc_name}"
            self._slices[skey] = (svc, _ep_nodes(obj))
            affected.add(svc)
        for svc in affected:
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

    def _setup_kube(self) -> None:
        from l2lb.adapters.kube.client import RESOURCES
        from l2lb.adapters.kube.informer import Informer

        assert self.kube is not None
        for kind in self.cfg.policy_kinds:
            inf = Informer(self.kube, RESOURCES[POLICY_RESOURCES[kind]], name=f"leases-policy-{kind}")
            inf.add_handler(self._on_policy)
            self.informers[f"policy:{kind}"] = inf
        eps = Informer(
            self.kube,
            RESOURCES["endpointslices"],
            label_selector="kubernetes.io/service-name",
            name="leases-endpointslices",
        )
        eps.add_handler(self._on_slice)
        self.informers["endpointslices"] = eps
        if self.cfg.conditions:
            self.informers["services"] = Informer(self.kube, RESOURCES["services"], name="leases-services")
        if self.cfg.mirror_leases:
            self.informers["leases"] = Informer(
                self.kube,
                RESOURCES["leases"],
                self.cfg.namespace,
                label_selector=f"{MANAGED_BY}={MANAGER}",
                name="leases-mirrors",
            )
        if self.cfg.events:
            from l2lb.adapters.kube.events import EventRecorder

            self.recorder = EventRecorder(self.kube, "l2lb-leases")
        if self.cfg.leader_election:
            from l2lb.adapters.kube.leader import LeaderElector

            self.elector = LeaderElector(
                self.kube,
                namespace=self.cfg.namespace,
                name="l2lb-leases",
                identity=self.cfg.instance,
                lease_duration=self.cfg.lease_duration,
                renew_deadline=self.cfg.renew_deadline,
                retry_period=self.cfg.retry_period,
            )
            self.elector.on_change(self._on_leader_change)

    async def _on_leader_change(self, leader: bool) -> None:
        self.leader_known = True
        if leader and not self.is_leader:
            self.term = int(getattr(self.elector, "term", 0) or 0)
            self.is_leader = True
            self.leader_since = self.mono()
            self.adopt_pending = True
            self.dirty = True
            self.next_renew = 0.0
            log.info("became the leases leader", extra={"term": self.term, "instance": self.cfg.instance})
            self._policy_events_all()
        elif not leader and self.is_leader:
            self.is_leader = False
            self.published.clear()
            self.full_sent.clear()
            log.warning("lost the leases leadership: publishing nothing", extra={"instance": self.cfg.instance})
        IS_LEADER.set(1 if self.is_leader else 0)

    def informers_synced(self) -> bool:
        """Every informer listed -- one whose kind is not installed (404) or not allowed (403) counts
        as empty (logged once)."""
        ok = True
        for name, inf in self.informers.items():
            err = str(inf.last_error or "")
            if inf.synced:
                continue
            if err.startswith(("404", "403")):  # CRD not installed / not allowed: nothing to read
                if name not in self._absent:
                    self._absent.add(name)
                    log.warning("informer cannot list; going on without it", extra={"informer": name, "error": err})
                continue
            ok = False
        return ok

    # -- the tick ----------------------------------------------------------------------------------
    def _refresh_liveness(self) -> None:
        """Give every live node a fresh timeout (after we could not read heartbeats for a while)."""
        now = self.hb_now()
        for st in self.tracker.nodes.values():
            if st.alive:
                st.last_seen = max(st.last_seen, now)

    def _liveness_tick(self) -> None:
        now = self.hb_now()
        ok, _ = self.bus.readiness()
        if not ok:
            if not self._stalled:
                log.warning("bus not ready: node timeouts suspended")
            self._stalled = True
            return
        if self._stalled:
            self._stalled = False
            self._refresh_liveness()
            log.info("bus ready again: node timeouts resumed")
        alive = [st for st in self.tracker.nodes.values() if st.alive]
        expiring = [st for st in alive if now - st.last_seen > self.tracker.timeout_s(st.heartbeat)]
        if len(alive) >= 2 and len(expiring) == len(alive):
            # Every node silent at once: far likelier our heartbeat reader stalled than the whole
            # cluster died (and with every node dead there is nowhere to move IPs to anyway).
            if not self._silent:
                log.warning(
                    "no heartbeat from any node: suspecting the bus, not the nodes",
                    extra={"nodes": len(alive)},
                )
            self._silent = True
            return
        if self._silent:
            self._silent = False
            self._refresh_liveness()  # heartbeats flow again: every node gets a fresh timeout
            log.info("heartbeats flow again: node timeouts resumed")
            return
        changed = self.tracker.tick(now)
        if changed:
            self.dirty = True
            for n in sorted(changed):
                log.warning("node is dead", extra={"node": n, "reason": self.tracker.nodes[n].reason})
        NODES_ALIVE.set(sum(1 for st in self.tracker.nodes.values() if st.alive))
        claims: dict[str, int] = {}
        for hb in self.tracker.alive().values():
            for ip in hb.serving:
                claims[ip] = claims.get(ip, 0) + 1
        dual = sorted(ip for ip, n in claims.items() if n > 1)
        DUAL.set(len(dual))
        if dual and dual != self._dual:
            log.warning("several nodes report serving the same IP", extra={"ips": dual[:20]})
        self._dual = dual
        self.tracker.prune(now, after_s=3600)
        if len(self.full_maps) > len(self.tracker.nodes) or len(self._walked) > len(self.tracker.nodes):
            for d in (self.full_maps, self._walked):
                for n in [n for n in d if n not in self.tracker.nodes]:
                    del d[n]
            self.map_unknown &= set(self.tracker.nodes)

    def ready_to_elect(self) -> bool:
        if not self.is_leader or not self.snapshot_loaded:
            return False
        if not self.informers_synced() and self.mono() - self.started < self.cfg.sync_timeout_s:
            return False
        if self.adopt_pending and self.maps_missing():
            return False
        return self.mono() - self.started >= self.cfg.startup_grace_ms / 1000.0

    def maps_missing(self) -> list[str]:
        """Live nodes whose serving map we do not know yet (they send only its digest and we have not
        seen the full map), while that is worth waiting for: adopting holders without them could move
        their VIPs. Announcers send the full map at least every --heartbeat-full-every-ms, so the wait
        ends that long + 1 s after start (or after becoming leader) at the latest."""
        if not self.map_unknown:
            return []
        since = max(self.started, self.leader_since)
        if self.mono() - since >= (self.cfg.heartbeat_full_every_ms + 1000) / 1000.0:
            return []
        alive = self.tracker.alive()
        return sorted(n for n in self.map_unknown if n in alive)

    def _adopt(self) -> None:
        alive = self.tracker.alive()
        reported = holders_from_serving(alive.values())
        # what announcers served recently, even if their assignments ran out while we took over
        for ip, h in self.seen_serving.items():
            cur = reported.get(ip)
            if h.node in alive and (cur is None or h.epoch > cur.epoch):
                reported[ip] = h
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
        self.published.clear()
        self.full_sent.clear()
        for ip, h in merged.items():
            self.last_epochs[ip] = max(self.last_epochs.get(ip, 0), h.epoch)
        log.info("adopted current holders", extra={"ips": len(merged), "reported": len(reported)})

    async def run_election(self) -> ElectionResult:
        current = dict(self.orphans)
        current.update(self.holders)
        t0 = time.perf_counter()
        res = elect(
            self.allocations.values(),
            self.policies,
            self.tracker.alive(),
            current,
            now_ms=int(self.wall() * 1000),
            endpoints=self.endpoints,
            last_epochs=self.last_epochs,
        )
        ELECTION_SECONDS.observe(time.perf_counter() - t0)
        self.elections += 1
        if res.epochs:
            self.last_epochs.update(res.epochs)
            await self._store_epochs(res.epochs)
        orphans: dict[str, Holder] = {}
        for m in res.moves:
            if m.new is None and m.reason == "no_eligible_node" and m.old is not None:
                orphans[m.ip] = current[m.ip]
        for ip, h in current.items():  # still unassignable, still remembered
            if res.unassigned.get(ip) == "no_eligible_node" and ip not in orphans:
                orphans[ip] = h
        moves = [m for m in res.moves if not (m.new is None and m.ip in self.orphans)]
        self.orphans = orphans
        self.holders = res.holders()
        self.result = res
        for m in moves:
            self._record_move(m)
        reasons: dict[str, int] = {}
        for r in res.unassigned.values():
            reasons[r] = reasons.get(r, 0) + 1
        for r in ("no_policy", "no_eligible_node", "invalid_ip"):
            UNASSIGNED.labels(r).set(reasons.get(r, 0))
        self._queue_kube_updates(res, moves)
        return res

    def _record_move(self, m: Move) -> None:
        MOVES.labels(m.reason).inc()
        self.moves_total += 1
        entry = {
            "ip": m.ip,
            "from": m.old,
            "to": m.new,
            "epoch": m.epoch,
            "reason": m.reason,
            "services": list(m.services),
            "at": round(self.wall(), 3),
        }
        self.recent_moves.append(entry)
        if m.old is not None and m.reason != "removed":  # first placement / deleted Service: not a move
            self.status_parts.emit("move" if m.new else "unassigned", ip=m.ip, service=",".join(m.services),
                                   reason=m.reason, **{"from": m.old, "to": m.new or ""})
        log.info("ip holder changed", extra=entry)

    def node_sets(self) -> dict[str, tuple[VipAssignment, ...]]:
        """node -> its VIP set (every live node, possibly empty). Rebuilt only when the election result
        or the set of live nodes changed: the same tuples come back, so "unchanged" is cheap to test."""
        alive = frozenset(self.tracker.alive())
        cached = self._sets_cache
        if cached is not None and cached[0] is self.result and cached[1] == alive:
            return dict(cached[2])
        sets: dict[str, tuple[VipAssignment, ...]] = dict.fromkeys(sorted(alive), ())
        if self.result is not None:
            for node, assigns in self.result.by_node().items():
                sets[node] = tuple(a.vip() for a in assigns)
        self._sets_cache = (self.result, alive, sets)
        return dict(sets)

    async def _publish(self, node: str, vips: tuple[VipAssignment, ...], why: str) -> None:
        """Publish the full set of ``node`` (with its digest) and remember it as the set renewals name."""
        self.seq += 1
        digest = assignments_digest(vips)
        msg = NodeAssignments(
            node=node, term=self.term, seq=self.seq, ttl_ms=self.cfg.ttl_ms, sent_at=self.wall(), vips=vips,
            digest=digest,
        )
        await self.bus.publish(self.bus.keys.assignments, msg)
        self.published[node] = vips
        self.full_sent[node] = (digest, self.term, self.mono())
        PUBLISHED.labels(why).inc()

    def _renewable(self, node: str, vips: tuple[VipAssignment, ...], now: float) -> str | None:
        """The digest a NodeRenewal for ``node`` may name, or None when the full set must go out: the set
        differs from the last full one sent, that was in another term, is older than --full-every-ms,
        or the node asked for it."""
        every = self.cfg.full_every_ms / 1000.0
        sent = self.full_sent.get(node)
        prev = self.published.get(node)
        if every <= 0 or sent is None or prev is None or node in self.want_full:
            return None
        digest, term, at = sent
        if term != self.term or now - at >= every:
            return None
        if prev is not vips and prev != vips:
            return None
        return digest

    async def _renew_digest(self, node: str, digest: str) -> None:
        # Compatibility contract: only leases versions that understand heartbeats with an omitted serving
        # map (Heartbeat.serving_omitted, resolved in _with_serving) send NodeRenewal. An announcer omits its
        # map only while it accepts NodeRenewals, so an older leases (full sets only) always gets full maps.
        self.seq += 1
        msg = NodeRenewal(node=node, term=self.term, seq=self.seq, ttl_ms=self.cfg.ttl_ms, sent_at=self.wall(),
                          digest=digest)
        await self.bus.publish(self.bus.keys.assignments, msg)
        PUBLISHED.labels("renew_digest").inc()

    async def _on_snapshot_request(self, req: SnapshotRequest) -> None:
        """An announcer (``announcer:<node>``) lost or could not match its set: send it the full set on the
        next tick. Any other requester (Redis lost its data: ``bus``) gets every node's full set."""
        if not self.is_leader:
            return
        who, _, node = req.requester.partition(":")
        if who == "announcer" and node:
            self.want_full.add(node)
        else:
            self.full_sent.clear()
            self.next_renew = 0.0
        log.info("assignments snapshot requested", extra={"requester": req.requester, "reason": req.reason})

    async def publish_changes(self) -> None:
        new = self.node_sets()
        for node, old in self.published.items():
            if old and node not in new:
                new[node] = ()  # lost every VIP (dead or gone): say so once
        changed = [n for n in sorted(new) if self.published.get(n) != new[n]]

        # move ordering: nodes that lose a VIP first, then nodes that gain
        def loses(n: str) -> bool:
            have = {v.ip for v in new[n]}
            return any(v.ip not in have for v in self.published.get(n, ()))

        for n in sorted(changed, key=lambda n: (not loses(n), n)):
            await self._publish(n, new[n], "change")
            self.want_full.discard(n)
        for n in [n for n in self.published if n not in new or (not new[n] and n not in self.tracker.alive())]:
            self.published.pop(n, None)
            self.full_sent.pop(n, None)
        ASSIGNMENTS.clear()
        for n, vips in new.items():
            ASSIGNMENTS.labels(n).set(len(vips))

    async def renew(self) -> None:
        """One renewal round: a NodeRenewal per node whose set is unchanged since its last full message
        (same term, within --full-every-ms), the full set for the others."""
        now = self.mono()
        for n, vips in sorted(self.node_sets().items()):
            digest = self._renewable(n, vips, now)
            if digest is not None:
                await self._renew_digest(n, digest)
            else:
                await self._publish(n, vips, "snapshot" if n in self.want_full else "renew")
            self.want_full.discard(n)

    async def send_requested(self) -> None:
        """The full set, now, to every node that asked for it (SnapshotRequest) since the last tick."""
        want, self.want_full = self.want_full, set()
        sets = self.node_sets()
        for i, n in enumerate(sorted(want)):
            if n not in sets:
                continue  # not a live node (yet): it gets its set when leases sees it alive
            try:
                await self._publish(n, sets[n], "snapshot")
            except Exception:
                self.want_full.update(sorted(want)[i:])
                raise

    async def tick(self) -> None:
        self._liveness_tick()
        if not self.ready_to_elect():
            return
        if self.adopt_pending:
            self._adopt()
            self.adopt_pending = False
            self.dirty = True
        now = self.mono()
        if self.dirty:
            self.dirty = False
            await self.run_election()
            await self.publish_changes()
            self.status_parts.update("assignments", lambda: self.status_history.items(self.result, self.wall()))
        if now >= self.next_renew:
            self.next_renew = now + self.cfg.renew_ms / 1000.0
            await self.renew()
            self.status_parts.update(
                "nodes", lambda: nodes_items(self.tracker.nodes, self.result, self.hb_now(), self.wall()))
        if self.want_full:
            await self.send_requested()

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        interval = self.cfg.tick_ms / 1000.0
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as e:  # Redis hiccup while publishing: retry next tick
                self.dirty = True
                log.warning("leases tick failed; retrying", extra={"error": repr(e)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    # -- kube writes (mirrors, conditions, events): coalesced, one at a time ------------------------
    def _queue(self, kind: str, key: str, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self.kube is None:
            return
        self._kube_queue[(kind, key)] = fn
        self._kube_wake.set()

    def _queue_kube_updates(self, res: ElectionResult, moves: Iterable[Move]) -> None:
        if self.kube is None or not self.is_leader:
            return
        for key, st in res.services.items():
            prev = self._service_state.get(key)
            if self.cfg.conditions and (
                prev is None or prev.announced != st.announced or prev.reason != st.reason or prev.message != st.message
            ):
                self._queue("condition", key, self._condition_writer(key, st))
            if self.cfg.mirror_leases:
                holder = ",".join(st.nodes) if st.announced else ""  # dual-stack IPs may sit on two nodes
                if self._mirror_holder.get(key) != holder:
                    self._queue("lease", key, self._lease_writer(key, holder))
        for key in list(self._service_state):
            if key not in res.services:
                self._service_state.pop(key, None)
                if self.cfg.mirror_leases:
                    self._queue("lease", key, self._lease_writer(key, ""))
        if self.cfg.events and self.recorder is not None:
            for m in moves:
                if m.old is None:
                    continue  # first placement is not a move (and would flood Events at startup)
                for svc in m.services:
                    self._queue(f"event:{m.ip}:{m.epoch}:{m.new}", svc, self._event_writer(svc, m))

    def _condition_writer(self, key: str, st: ServiceState) -> Callable[[], Coroutine[Any, Any, None]]:
        async def write() -> None:
            from l2lb.adapters.kube.client import RESOURCES

            ns, name = key.split("/", 1)
            inf = self.informers.get("services")
            obj = inf.cache.get(key) if inf is not None else None
            if inf is not None and inf.synced and obj is None:
                self._service_state[key] = st
                return  # the Service is gone
            status = "True" if st.announced else "False"
            reason = "Announced" if st.announced else st.reason
            if obj is not None:
                for c in (obj.get("status") or {}).get("conditions") or []:
                    if (
                        c.get("type") == CONDITION
                        and c.get("status") == status
                        and c.get("reason") == reason
                        and c.get("message") == st.message
                    ):
                        self._service_state[key] = st
                        return  # already says so: no write
            from l2lb.adapters.kube.writes import set_condition

            prev = ((obj or {}).get("status") or {}).get("conditions") or []
            gen = int(((obj or {}).get("metadata") or {}).get("generation") or 0)
            conds = set_condition(prev, CONDITION, status, reason, st.message[:1000], observed_generation=gen)
            cond = next(c for c in conds if c.get("type") == CONDITION)
            assert self.kube is not None
            await self.kube.patch(
                RESOURCES["services"],
                name,
                {"status": {"conditions": [cond]}},
                ns,
                subresource="status",
                patch_type="strategic",
            )
            KUBE_WRITES.labels("condition").inc()
            self._service_state[key] = st

        return write

    def _lease_writer(self, key: str, holder: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def write() -> None:
            from l2lb.adapters.kube.client import RESOURCES, KubeError

            ns, name = key.split("/", 1)
            lname = f"l2lb-announce-{ns}-{name}"[:253]
            res = RESOURCES["leases"]
            inf = self.informers.get("leases")
            cur = inf.cache.get(f"{self.cfg.namespace}/{lname}") if inf is not None else None
            assert self.kube is not None
            if not holder:
                if cur is not None or inf is None:
                    try:
                        await self.kube.delete(res, lname, self.cfg.namespace)
                        KUBE_WRITES.labels("lease").inc()
                    except KubeError as e:
                        if e.status != 404:
                            raise
                self._mirror_holder.pop(key, None)
                return
            if cur is not None and (cur.get("spec") or {}).get("holderIdentity") == holder:
                self._mirror_holder[key] = holder
                return
            now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(self.wall()))
            spec = {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, self.cfg.ttl_ms // 1000),
                "acquireTime": now,
                "renewTime": now,
            }
            meta: dict[str, Any] = {
                "name": lname,
                "namespace": self.cfg.namespace,
                "labels": {MANAGED_BY: MANAGER},
                "annotations": {"l2lb.io/service": key},
            }
            if cur is None:
                try:
                    await self.kube.create_object(res, {"metadata": meta, "spec": spec}, self.cfg.namespace)
                    KUBE_WRITES.labels("lease").inc()
                    self._mirror_holder[key] = holder
                    return
                except KubeError as e:
                    if e.status != 409:
                        raise
                    cur = await self.kube.get(res, lname, self.cfg.namespace)
            spec["leaseTransitions"] = int((cur.get("spec") or {}).get("leaseTransitions") or 0) + 1
            meta["resourceVersion"] = (cur.get("metadata") or {}).get("resourceVersion")
            await self.kube.replace(res, {"metadata": meta, "spec": spec}, self.cfg.namespace)
            KUBE_WRITES.labels("lease").inc()
            self._mirror_holder[key] = holder

        return write

    def _event_writer(self, svc: str, m: Move) -> Callable[[], Coroutine[Any, Any, None]]:
        async def write() -> None:
            a = self.allocations.get(svc)
            ns, name = svc.split("/", 1)
            ref = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"namespace": ns, "name": name, "uid": a.uid if a else ""},
            }
            if m.new is None:
                msg, typ, reason = (
                    f"{m.ip} no longer announced ({m.reason})",
                    "Warning",
                    "AnnouncementStopped",
                )
            elif m.old is None:
                msg, typ, reason = f"{m.ip} announced by node {m.new}", "Normal", "Announced"
            else:
                msg, typ, reason = (
                    f"{m.ip} moved from node {m.old} to {m.new} ({m.reason})",
                    "Normal",
                    "AnnouncerMoved",
                )
            assert self.recorder is not None
            await self.recorder.event(ref, typ, reason, msg)
            KUBE_WRITES.labels("event").inc()

        return write

    async def _kube_writer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._kube_queue:
                self._kube_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kube_wake.wait(), 1.0)
                continue
            if not self.is_leader:
                self._kube_queue.clear()
                continue
            k, fn = next(iter(self._kube_queue.items()))
            del self._kube_queue[k]
            try:
                await fn()
                self._kube_failures.pop(k, None)
            except Exception as e:
                n = self._kube_failures.get(k, 0) + 1
                status = int(getattr(e, "status", 0) or 0)
                if n >= 8 or (status in (400, 403, 404, 422) and n >= 2):
                    self._kube_failures.pop(k, None)
                    KUBE_WRITES.labels("dropped").inc()
                    log.error(
                        "kubernetes write failed repeatedly; giving up on it",
                        extra={"what": k[0], "key": k[1], "attempts": n, "error": repr(e)},
                    )
                else:
                    self._kube_failures[k] = n
                    log.warning(
                        "kubernetes write failed; will retry",
                        extra={"what": k[0], "key": k[1], "attempt": n, "error": repr(e)},
                    )
                    self._kube_queue.setdefault(k, fn)  # unless a newer write for it was queued meanwhile
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.25 * 2**n, 5.0))

    # -- status ------------------------------------------------------------------------------------
    def role(self) -> str:
        if self.is_leader:
            return "leader"
        if self.leader_known or (self.elector is not None and bool(getattr(self.elector, "holder", ""))):
            return "standby"
        return "unknown"

    def readiness(self) -> tuple[bool, str]:
        ok, why = self.bus.readiness()
        if not ok:
            return False, f"bus: {why}"
        if self.role() == "unknown":
            return False, "leader/standby not known yet"
        role = self.role()
        return True, f"{role}; bus: {why}"

    def status(self) -> dict[str, Any]:
        now = self.hb_now()
        res = self.result
        assignments = []
        if res is not None and self.is_leader:
            assignments = [
                {
                    "ip": a.ip,
                    "node": a.node,
                    "epoch": a.epoch,
                    "interfaces": list(a.interfaces),
                    "services": list(a.services),
                }
                for a in res.assignments.values()
            ]
        return {
            "instance": self.cfg.instance,
            "role": self.role(),
            "term": self.term,
            "assignments": assignments,
            "unassigned": dict(res.unassigned) if res is not None else {},
            "services": {
                k: {"announced": s.announced, "reason": s.reason, "message": s.message}
                for k, s in (res.services.items() if res is not None else ())
            },
            "nodes": self.tracker.status(now),
            "recent_moves": list(self.recent_moves),
            "moves_total": self.moves_total,
            "elections": self.elections,
            "policies": [p.name for p in self.policies],
            "policy_errors": [{"policy": n, "error": e} for n, e in self.policy_errors],
            "allocations": len(self.allocations),
            "conflicts": list(self.conflicts),
            "informers": {k: inf.readiness()[1] for k, inf in self.informers.items()},
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        group = f"leases:{self.cfg.instance}"
        self.hb_consumer = self.bus.consumer(
            self.bus.keys.heartbeats,
            group,
            self.cfg.instance,
            self._on_heartbeat,
            on_resync=self._on_hb_resync,
        )
        self.alloc_consumer = self.bus.consumer(
            self.bus.keys.allocations,
            group,
            self.cfg.instance,
            self._on_allocation,
            on_resync=self._on_alloc_resync,
            from_start=True,  # a new group replays the (bounded) stream: allocations are idempotent
        )
        self.snap_consumer = self.bus.serve_snapshots(
            "assignments", f"leases:{self.cfg.instance}", self._on_snapshot_request, block_ms=500
        )
        if self.kube is not None:
            self._setup_kube()
        await self.load_allocations("startup")
        await self._load_epochs()
        self.started = self.mono()
        IS_LEADER.set(1 if self.is_leader else 0)
        tasks = [
            asyncio.create_task(self.hb_consumer.run(stop), name="leases-heartbeats"),
            asyncio.create_task(self.alloc_consumer.run(stop), name="leases-allocations"),
            asyncio.create_task(self._tick_loop(stop), name="leases-tick"),
            asyncio.create_task(self.snap_consumer.run(stop), name="leases-snapshot-requests"),
        ]
        for name, inf in self.informers.items():
            tasks.append(asyncio.create_task(inf.run(stop), name=f"leases-informer-{name}"))
        if self.kube is not None:
            tasks.append(asyncio.create_task(self._kube_writer(stop), name="leases-kube-writer"))
        if self.elector is not None:
            tasks.append(asyncio.create_task(self.elector.run(stop), name="leases-elector"))
        try:
            await run_until_stopped(stop, tasks)
        finally:
            await self.status_parts.close()
            # per-instance broadcast groups: remove ours so restarts do not pile them up in Redis
            for stream, g in ((self.bus.keys.heartbeats, group), (self.bus.keys.allocations, group),
                              (self.bus.keys.control, f"snapshots:assignments:leases:{self.cfg.instance}")):
                with contextlib.suppress(Exception):
                    await self.bus.redis.xgroup_destroy(stream, g)
