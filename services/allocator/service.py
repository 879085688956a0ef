"""The allocator service: Services and pools in (informers), IPs, conditions, Events and bus
messages out, around the pure :class:`l2lb.core.allocator.Allocator`.

Active/standby: every instance keeps its informer caches warm; only the leader allocates and
writes. On becoming leader (or at start without leader election) an instance builds a fresh
allocator from its caches -- pools first, then ``restore`` with every Service's status IPs, so no
Service changes IP across a restart or a leader change -- writes what differs, and publishes a full
AllocationSnapshot. After that it reacts to changes only: at rest it sends no request besides
watches and leader-election renewals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import StatusParts
from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError, Resource
from l2lb.adapters.kube.events import EventRecorder
from l2lb.adapters.kube.informer import Informer
from l2lb.adapters.kube.leader import LeaderElector
from l2lb.adapters.kube.writes import set_condition
from l2lb.core.allocator import Allocator
from l2lb.core.messages import Allocation, AllocationSnapshot, PortSpec, SnapshotRequest
from l2lb.core.models import AllocationResult, ParseError, Pool, PoolUsage, Reason, ServiceRequest
from l2lb.core.parse import CILIUM_BGP_CLASS, CILIUM_CLASSES, DEFAULT_CLASSES, parse_pool, parse_service, status_ips
from l2lb.core.view import pools_items, services_items, size_text
from l2lb.obs import metrics
from l2lb.obs.log import get_logger
from l2lb.runtime.run import run_until_stopped

log = get_logger("l2lb.allocator")

CONDITION = "l2lb.io/IPAllocated"
POOL_RESOURCES = {
    "l2lb": "l2lb_pools",
    "cilium": "cilium_pools_v2alpha1",
    "cilium-v2": "cilium_pools_v2",
    "metallb": "metallb_pools",
}
# pool kinds whose status carries Cilium-style counters and the conflict condition
_STATUS_KINDS = {"CiliumLoadBalancerIPPool": "cilium.io", "LoadBalancerIPPool": "l2lb.io"}

ALLOCATIONS = metrics.counter("l2lb_allocator_results_total", "Allocation outcomes by reason", ("reason",))
FAILING = metrics.gauge("l2lb_allocator_unsatisfied_services", "Services without the IPs they need, by reason",
                        ("reason",))
POOL_IPS = metrics.gauge("l2lb_allocator_pool_ips", "Pool addresses by state (total, used, available)",
                         ("pool", "state"))
RECONCILE = metrics.histogram("l2lb_allocator_reconcile_seconds", "Time to handle one Service change",
                              buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0))
WRITES = metrics.counter("l2lb_allocator_kube_writes_total", "Kubernetes writes by the allocator", ("what",))
PUBLISHED = metrics.counter("l2lb_allocator_published_total", "Bus messages published", ("kind",))
IS_LEADER = metrics.gauge("l2lb_allocator_leader", "1 while this instance is the active allocator")
RESTORE_SECONDS = metrics.gauge("l2lb_allocator_restore_seconds", "Duration of the last restore")


@dataclass
class AllocatorConfig:
    instance: str
    namespace: str = "l2lb-system"
    pool_kinds: tuple[str, ...] = ("l2lb", "cilium", "metallb")
    cilium_compat: bool = False
    leader_election: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    events: bool = True
    pool_status: bool = True
    pool_status_interval: float = 1.0
    sync_timeout_s: float = 60.0
    write_concurrency: int = 16


def invalid_reason(error: str) -> str:
    """The PoolInvalid condition's reason for a pool error (see ``_desired_pools``)."""
    head = error.split(":", 1)[0]
    if "already used by" in error:
        return "name_conflict"
    if head.endswith(".cidr") or "invalid CIDR" in error:
        return "invalid_cidr"
    if head.endswith((".start", ".stop")) or "range" in error:
        return "invalid_range"
    return "invalid_spec"


def _ns_name(key: str) -> tuple[str, str]:
    ns, _, name = key.partition("/")
    return ns, name


class AllocatorService:
    def __init__(self, cfg: AllocatorConfig, bus: Bus, kube: KubeClient,
                 *, clock: Callable[[], float] = time.monotonic, elector: Any | None = None):
        """``elector``: anything with ``on_change``, ``run``, ``status``, ``term`` and ``holder``
        (l2lb.adapters.bus.leader); default (leader election on) the Lease ``l2lb-allocator``."""
        self.cfg = cfg
        self.bus = bus
        self.kube = kube
        self.clock = clock
        self.classes = DEFAULT_CLASSES | CILIUM_CLASSES if cfg.cilium_compat else DEFAULT_CLASSES
        self.alloc = Allocator()
        self.services = Informer(kube, RESOURCES["services"], name="allocator-services")
        self.namespaces = Informer(kube, RESOURCES["namespaces"], name="allocator-namespaces")
        self.pool_informers = {k: Informer(kube, RESOURCES[POOL_RESOURCES[k]], name=f"allocator-pools-{k}")
                               for k in cfg.pool_kinds}
        self.recorder = EventRecorder(kube, "l2lb-allocator") if cfg.events else None
        self.elector: Any | None = elector
        self.is_leader = not cfg.leader_election
        self.leader_known = not cfg.leader_election
        self.term = 0
        self.seq = int(time.time() * 1000)
        self.published: dict[str, Allocation] = {}
        self.pool_errors: dict[str, str] = {}  # "kind/name" -> error
        self.pool_sources: dict[str, str] = {}  # pool name -> "kind/name" it came from
        self.pool_status_written: dict[str, tuple[int, int, int, str]] = {}
        self.pool_invalid_written: dict[str, str] = {}  # "kind/name" -> error its PoolInvalid condition says
        self._dirty: set[str] = set()
        self._pools_dirty = True
        self._takeover = self.is_leader
        self._wake = asyncio.Event()
        self.restores = 0
        self.last_restore_s = 0.0
        self.ready_since: float | None = None
        self._result_counters: dict[Reason, Any] = {}
        self.missing_kinds: list[str] = []
        self.parts: StatusParts | None = None  # cluster view parts in Redis (made in run())

        self.services.add_handler(self._on_service)
        self.namespaces.add_handler(self._on_namespace)
        for inf in self.pool_informers.values():
            inf.add_handler(self._on_pool)

    # -- informer handlers: only mark work ---------------------------------------------------------
    def _kick(self) -> None:
        self._wake.set()

    async def _on_service(self, _ev: str, obj: dict[str, Any], _old: dict[str, Any] | None) -> None:
        meta = obj.get("metadata") or {}
        self._dirty.add(f"{meta.get('namespace')}/{meta.get('name')}")
        self._kick()

    async def _on_pool(self, _ev: str, _obj: dict[str, Any], _old: dict[str, Any] | None) -> None:
        self._pools_dirty = True
        self._kick()

    async def _on_namespace(self, ev: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        # namespace labels matter for MetalLB namespaceSelectors only: re-check its Services
        if ev == "MODIFIED" and old is not None and (obj.get("metadata") or {}).get("labels") == (
                old.get("metadata") or {}).get("labels"):
            return
        ns = (obj.get("metadata") or {}).get("name")
        for key in self.services.cache:
            if key.startswith(f"{ns}/"):
                self._dirty.add(key)
        self._kick()

    # -- leadership --------------------------------------------------------------------------------
    async def _on_leader_change(self, leader: bool) -> None:
        self.leader_known = True
        if leader and not self.is_leader:
            self.term = int(getattr(self.elector, "term", 0) or 0)
            self.is_leader = True
            self._takeover = True
            log.info("became the allocator leader", extra={"term": self.term, "instance": self.cfg.instance})
            self._kick()
        elif not leader and self.is_leader:
            self.is_leader = False
            log.warning("lost the allocator leadership: writing nothing", extra={"instance": self.cfg.instance})
        IS_LEADER.set(1 if self.is_leader else 0)

    # -- building blocks ---------------------------------------------------------------------------
    def _request(self, obj: dict[str, Any]) -> ServiceRequest:
        ns = str((obj.get("metadata") or {}).get("namespace") or "default")
        nso = self.namespaces.cache.get(ns)
        labels = ((nso or {}).get("metadata") or {}).get("labels") or {}
        return parse_service(obj, classes=self.classes, namespace_labels={str(k): str(v) for k, v in labels.items()})

    def _desired_pools(self) -> dict[str, tuple[Pool, dict[str, Any]]]:
        out: dict[str, tuple[Pool, dict[str, Any]]] = {}
        errors: dict[str, str] = {}
        for inf in self.pool_informers.values():
            for obj in inf.cache.values():
                meta = obj.get("metadata") or {}
                src = f"{obj.get('kind')}/{meta.get('name')}"
                try:
                    pool = parse_pool(obj)
                except ParseError as e:
                    errors[src] = str(e)
                    continue
                if pool.name in out:
                    errors[src] = f"pool name {pool.name!r} is already used by {self.pool_sources.get(pool.name)}"
                    continue
                out[pool.name] = (pool, obj)
                self.pool_sources[pool.name] = src
        new_errors = {k: v for k, v in errors.items() if self.pool_errors.get(k) != v}
        for src, err in new_errors.items():
            log.warning("pool cannot be used", extra={"pool": src, "error": err})
        self.pool_errors = errors
        return out

    async def _sync_pools(self) -> list[AllocationResult]:
        desired = self._desired_pools()
        results: dict[str, AllocationResult] = {}
        for name in set(self.alloc.pools()) - set(desired):
            upd = self.alloc.remove_pool(name)
            results.update((r.key, r) for r in upd.results)
        for _name, (pool, obj) in sorted(desired.items()):
            upd = self.alloc.upsert_pool(pool)
            results.update((r.key, r) for r in upd.results)
            for ev in upd.events:
                if ev.kind == "conflict" and self.is_leader:
                    await self._event(obj, "Warning", "PoolConflict", ev.message)
                    if self.parts is not None:
                        self.parts.emit("pool_conflict", reason="cidr_overlap", message=f"{ev.pool}: {ev.message}")
        for src, err in self.pool_errors.items():
            kind, _, name = src.partition("/")
            bad = [o for inf in self.pool_informers.values() for o in inf.cache.values()
                   if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name]
            if bad and self.is_leader:
                await self._event(bad[0], "Warning", "InvalidPool", err)
        return list(results.values())

    def _allocation(self, key: str, req: ServiceRequest | None, res: AllocationResult | None,
                    obj: dict[str, Any] | None, seq: int = 0) -> Allocation:
        ns, name = _ns_name(key)
        meta = (obj or {}).get("metadata") or {}
        # io.cilium/bgp-control-plane Services get IPs (LB-IPAM) but no ARP/NDP: Cilium's BGP speaker
        # announces them, so leases never sees them
        if req is None or res is None or not res.ips or req.load_balancer_class == CILIUM_BGP_CLASS:
            return Allocation(key=key, namespace=ns, name=name, uid=str(meta.get("uid") or ""),
                              generation=int(meta.get("generation") or 0), seq=seq, term=self.term, deleted=True)
        pool_labels = {}
        for pname in set(res.pools.values()):
            pool = self.alloc.pool(pname)
            if pool is not None:
                pool_labels[pname] = dict(pool.labels)
        return Allocation(
            key=key, namespace=ns, name=name, uid=req.uid, generation=req.generation, seq=seq, term=self.term,
            ips=res.ips, external_ips=req.external_ips,
            ports=tuple(PortSpec(p, n) for p, n in req.ports),
            external_traffic_policy=req.external_traffic_policy, labels=dict(req.labels),
            ip_pools=dict(res.pools),
            pool_labels=pool_labels,
            load_balancer_class=req.load_balancer_class,
        )

    @staticmethod
    def _same(a: Allocation, b: Allocation) -> bool:
        return a.to_dict() | {"seq": 0, "term": 0} == b.to_dict() | {"seq": 0, "term": 0}

    async def _publish(self, alloc: Allocation) -> None:
        prev = self.published.get(alloc.key)
        if prev is not None and self._same(prev, alloc):
            return
        if prev is None and alloc.deleted:
            return
        self.seq += 1
        msg = replace(alloc, seq=self.seq, term=self.term)
        await self.bus.publish(self.bus.keys.allocations, msg)
        PUBLISHED.labels("allocation").inc()
        if msg.deleted:
            self.published.pop(alloc.key, None)
        else:
            self.published[alloc.key] = msg

    async def publish_snapshot(self, reason: str) -> None:
        self.seq += 1
        snap = AllocationSnapshot(term=self.term, seq=self.seq,
                                  allocations=tuple(self.published[k] for k in sorted(self.published)))
        await self.bus.publish(self.bus.keys.allocations, snap)
        await self.bus.store_snapshot("allocations", snap)
        PUBLISHED.labels("snapshot").inc()
        log.info("allocation snapshot published", extra={"services": len(snap.allocations), "reason": reason})

    async def _on_snapshot_request(self, req: SnapshotRequest) -> None:
        if self.is_leader and not self._takeover:
            await self.publish_snapshot(f"requested by {req.requester}: {req.reason}")

    async def _event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self.recorder is None:
            return
        try:
            await self.recorder.event(obj, type_, reason, message[:1000])
            WRITES.labels("event").inc()
        except KubeError as e:
            log.warning("cannot record an Event", extra={"reason": reason, "error": str(e)})

    async def _write_status(self, obj: dict[str, Any], req: ServiceRequest, res: AllocationResult) -> bool:
        """Make the Service's ingress and IPAllocated condition match ``res``; no request when they
        already do. Returns True when a patch was sent."""
        status = obj.get("status") or {}
        cur_ing = ((status.get("loadBalancer") or {}).get("ingress")) or []
        want_ing = [{"ip": ip, "ipMode": "VIP"} for ip in res.ips]
        cond_status = "True" if res.ok else "False"
        msg = res.message or ("allocated " + ", ".join(res.ips) if res.ok else res.reason.value)
        if res.invalid_existing:
            msg += "; not kept: " + "; ".join(res.invalid_existing)
        msg = msg[:1000]
        cur_cond = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
        same_cond = cur_cond is not None and (cur_cond.get("status"), cur_cond.get("reason"),
                                               cur_cond.get("message")) == (cond_status, res.reason.value, msg)
        same_ing = [(i.get("ip"), i.get("ipMode", "VIP")) for i in cur_ing] == [(i["ip"], "VIP") for i in want_ing]
        if same_cond and same_ing:
            return False
        conds = set_condition(status.get("conditions") or [], CONDITION, cond_status, res.reason.value, msg,
                              observed_generation=req.generation)
        cond = next(c for c in conds if c.get("type") == CONDITION)
        patch: dict[str, Any] = {"status": {"conditions": [cond]}}
        if not same_ing:
            patch["status"]["loadBalancer"] = {"ingress": want_ing}
        ns, name = req.namespace, req.name
        out = await self.kube.patch(RESOURCES["services"], name, patch, ns, subresource="status",
                                    patch_type="strategic")
        WRITES.labels("status").inc()
        # keep the cache's view current so a repeat is a no-op until the watch catches up
        if isinstance(out, dict) and out.get("status") is not None:
            obj["status"] = out["status"]
        return True

    async def _clear_status(self, obj: dict[str, Any]) -> None:
        """A Service we no longer handle: drop our condition and the ingress we wrote."""
        status = obj.get("status") or {}
        conds = status.get("conditions") or []
        if not any(c.get("type") == CONDITION for c in conds):
            return
        meta = obj.get("metadata") or {}
        patch = {"status": {"conditions": [c for c in conds if c.get("type") != CONDITION],
                            "loadBalancer": {"ingress": None}}}
        with contextlib.suppress(KubeError):
            await self.kube.patch(RESOURCES["services"], str(meta.get("name")), patch, meta.get("namespace"),
                                  subresource="status", patch_type="merge")
            WRITES.labels("status").inc()

    async def _apply(self, key: str, res: AllocationResult, *, restored: bool = False) -> None:
        """Write status, Events and the bus message for one result."""
        obj = self.services.cache.get(key)
        req = self.alloc.request(key)
        if obj is not None and res.reason is Reason.NOT_HANDLED:
            # no longer ours (type or class changed): the allocator already forgot it
            await self._clear_status(obj)
            await self._publish(self._allocation(key, None, None, obj))
            if res.released:
                await self._event(obj, "Normal", "IPReleased", "released " + ", ".join(res.released))
            return
        if obj is None or req is None:
            await self._publish(self._allocation(key, None, None, None))
            return
        child = self._result_counters.get(res.reason)
        if child is None:
            child = self._result_counters[res.reason] = ALLOCATIONS.labels(res.reason.value)
        child.inc()
        prev_cond = next((c for c in (obj.get("status") or {}).get("conditions") or []
                          if c.get("type") == CONDITION), None)
        wrote = await self._write_status(obj, req, res)
        first_ok = prev_cond is None or prev_cond.get("status") != "True"
        if wrote and res.ok and (res.changed or first_ok) and not (restored and not res.changed):
            await self._event(obj, "Normal", "IPAllocated", "allocated " + ", ".join(res.ips))
        if wrote and not res.ok:
            await self._event(obj, "Warning", "AllocationFailed", f"{res.reason.value}: {res.message}")
            if self.parts is not None:
                self.parts.emit("allocation_failed", service=key, reason=res.reason.value, message=res.message)
        if res.released and not res.ok:
            await self._event(obj, "Normal", "IPReleased", "released " + ", ".join(res.released))
        if restored:
            # takeover: the snapshot that follows carries everything (one message, not one per Service)
            alloc = self._allocation(key, req, res, obj, self.seq + 1)
            if not alloc.deleted:  # IPs to announce (not a BGP-class Service)
                self.seq += 1
                self.published[key] = alloc
            return
        await self._publish(self._allocation(key, req, res, obj))

    # -- the work loop -------------------------------------------------------------------------------
    async def takeover(self) -> None:
        """Fresh allocator from the caches: pools, then restore every Service, then write diffs."""
        t0 = time.perf_counter()
        # the informer caches are long-lived: keep them out of the collector's full passes, which
        # otherwise dominate a 10k-Service restore
        gc.freeze()
        self.alloc = Allocator()
        self.pool_status_written.clear()
        self.pool_invalid_written.clear()
        self._pools_dirty = False
        await self._sync_pools()
        t_pools = time.perf_counter()
        items = []
        for obj in list(self.services.cache.values()):
            try:
                req = self._request(obj)
            except ParseError as e:
                log.warning("Service cannot be read", extra={"error": str(e)})
                continue
            if req.handled:
                items.append((req, status_ips(obj)))
        results = self.alloc.restore(items)
        t_restore = time.perf_counter()
        self._dirty.clear()
        # the last published state is unknown after a leader change: republish everything
        self.published.clear()
        await self._apply_many([(r.key, r) for r in results], restored=True)
        t_apply = time.perf_counter()
        await self.publish_snapshot("leadership" if self.cfg.leader_election else "startup")
        self._update_parts()
        self._takeover = False
        self.restores += 1
        self.last_restore_s = time.perf_counter() - t0
        RESTORE_SECONDS.set(self.last_restore_s)
        if self.ready_since is None:
            self.ready_since = self.clock()
        log.info("restored allocations", extra={
            "services": len(results), "seconds": round(self.last_restore_s, 3),
            "unsatisfied": sum(1 for r in results if not r.ok), "pools_s": round(t_pools - t0, 3),
            "restore_s": round(t_restore - t_pools, 3), "writes_s": round(t_apply - t_restore, 3),
            "snapshot_s": round(t0 + self.last_restore_s - t_apply, 3)})

    async def reconcile_once(self) -> None:
        if self._takeover:
            await self.takeover()
            return
        changed: dict[str, AllocationResult] = {}
        pools_synced = self._pools_dirty
        if self._pools_dirty:
            self._pools_dirty = False
            for r in await self._sync_pools():
                changed[r.key] = r
        keys, self._dirty = sorted(self._dirty), set()
        released_any = False
        for key in keys:
            t0 = time.perf_counter()
            obj = self.services.cache.get(key)
            if obj is None:
                if self.alloc.release(key):
                    released_any = True
                await self._publish(self._allocation(key, None, None, None))
                changed.pop(key, None)
                continue
            try:
                req = self._request(obj)
            except ParseError as e:
                log.warning("Service cannot be read", extra={"service": key, "error": str(e)})
                continue
            if not req.handled and self.alloc.request(key) is None:
                continue  # never ours
            res = self.alloc.allocate(req, status_ips(obj))
            if res.released:
                released_any = True
            changed[key] = res
            RECONCILE.observe(time.perf_counter() - t0)
        if released_any:
            for r in self.alloc.retry():
                changed[r.key] = r
        await self._apply_many(sorted(changed.items()))
        if changed or keys or pools_synced:
            self._update_gauges()
            if changed or pools_synced:  # a pool added, changed or found invalid shows without a Service change
                self._update_parts()

    def _update_parts(self) -> None:
        """The cluster view's "services" and "pools" parts (coalesced writes to Redis)."""
        if self.parts is None or not self.is_leader:
            return
        self.parts.update("services", services_items(self.alloc.results(), self.alloc.request))
        self.parts.update("pools", pools_items(self.alloc.pools(), self.alloc.pool_usage(), self.pool_errors))

    async def _apply_many(self, items: list[tuple[str, AllocationResult]], *, restored: bool = False) -> None:
        """``_apply`` for many Services, up to ``write_concurrency`` Kubernetes writes in flight (the
        client's rate limiter still applies); failed writes are retried on the next round."""
        sem = asyncio.Semaphore(self.cfg.write_concurrency)

        async def one(key: str, res: AllocationResult) -> None:
            async with sem:
                try:
                    await self._apply(key, res, restored=restored)
                except KubeError as e:
                    if e.status != 404:
                        log.warning("status write failed; will retry", extra={"service": key, "error": str(e)})
                        self._dirty.add(key)
                        self._kick()

        await asyncio.gather(*(one(k, r) for k, r in items))

    def _update_gauges(self) -> None:
        fails: dict[str, int] = {}
        for r in self.alloc.results().values():
            if not r.ok and r.reason is not Reason.NOT_HANDLED:
                fails[r.reason.value] = fails.get(r.reason.value, 0) + 1
        for reason in Reason:
            if reason not in (Reason.SATISFIED, Reason.NOT_HANDLED):
                FAILING.labels(reason.value).set(fails.get(reason.value, 0))
        for name, u in self.alloc.pool_usage().items():
            POOL_IPS.labels(name, "total").set(float(u.total))
            POOL_IPS.labels(name, "used").set(u.used)
            POOL_IPS.labels(name, "available").set(float(u.available))

    async def _pool_status_loop(self, stop: asyncio.Event) -> None:
        """Cilium-style pool counters and conflict condition, written when they change (coalesced)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.pool_status_interval)
            if stop.is_set() or not self.is_leader or self._takeover:
                continue
            usage = self.alloc.pool_usage()
            for name, u in usage.items():
                src = self.pool_sources.get(name, "")
                kind, _, oname = src.partition("/")
                prefix = _STATUS_KINDS.get(kind)
                if prefix is None:
                    continue
                state = (u.total, u.used, u.available, u.conflict_message)
                if self.pool_status_written.get(name) == state:
                    continue
                try:
                    await self._write_pool_status(kind, oname, prefix, u)
                    self.pool_status_written[name] = state
                except KubeError as e:
                    log.warning("pool status write failed", extra={"pool": name, "error": str(e)})
            await self._write_invalid_pools()

    async def _write_invalid_pools(self) -> None:
        """Pools that cannot be used (a bad CIDR, a reversed range, a name used twice) get the condition
        ``<prefix>/PoolInvalid`` (True, the reason and the error) and zero counters, so ``kubectl get``
        and ``kubectl describe`` say why; once fixed, the condition turns False (``resolved``)."""
        for src, err in self.pool_errors.items():
            kind, _, name = src.partition("/")
            prefix = _STATUS_KINDS.get(kind)
            if prefix is None or self.pool_invalid_written.get(src) == err:
                continue
            try:
                await self._write_pool_status(kind, name, prefix, None, invalid=err)
                self.pool_invalid_written[src] = err
            except KubeError as e:
                log.warning("pool status write failed", extra={"pool": src, "error": str(e)})
        for src in [s for s in self.pool_invalid_written if s not in self.pool_errors]:
            del self.pool_invalid_written[src]  # fixed or deleted: its counters are written anew
            for pname in [n for n, s in self.pool_sources.items() if s == src]:
                self.pool_status_written.pop(pname, None)

    async def _write_pool_status(self, kind: str, name: str, prefix: str, u: PoolUsage | None,
                                 invalid: str = "") -> None:
        total, used, available = (u.total, u.used, u.available) if u else (0, 0, 0)
        conflict = u.conflict_message if u else ""
        res: Resource | None = None
        obj: dict[str, Any] | None = None
        for k, inf in self.pool_informers.items():
            r = RESOURCES[POOL_RESOURCES[k]]
            if r.kind == kind and name in inf.cache:
                res, obj = r, inf.cache[name]
                break
        if res is None or obj is None:
            return
        conds = (obj.get("status") or {}).get("conditions") or []
        gen = int((obj.get("metadata") or {}).get("generation") or 0)
        for typ, val in (("IPsTotal", total), ("IPsAvailable", available), ("IPsUsed", used)):
            # the number as Cilium writes it, except past 10^9: "2^64", "1.8e19" (kubectl get shows it)
            conds = set_condition(conds, f"{prefix}/{typ}", "Unknown", "noreason", size_text(val),
                                  observed_generation=gen)
        conds = set_condition(conds, f"{prefix}/PoolConflict", "True" if conflict else "False",
                              "cidr_overlap" if conflict else "resolved" if any(
                                  c.get("type") == f"{prefix}/PoolConflict" for c in conds) else "noreason",
                              conflict, observed_generation=gen)
        if invalid or any(c.get("type") == f"{prefix}/PoolInvalid" for c in conds):
            conds = set_condition(conds, f"{prefix}/PoolInvalid", "True" if invalid else "False",
                                  invalid_reason(invalid) if invalid else "resolved", invalid,
                                  observed_generation=gen)
        if conds == ((obj.get("status") or {}).get("conditions") or []):
            return
        await self.kube.patch(res, name, {"status": {"conditions": conds}}, subresource="status",
                              patch_type="merge")
        WRITES.labels("pool_status").inc()

    async def _work_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            if not self.is_leader:
                # a standby only keeps its caches: taking over rebuilds everything from them
                self._dirty.clear()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            if not (self._dirty or self._pools_dirty or self._takeover):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            if not self.synced():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
                continue
            try:
                await self.reconcile_once()
                failures = 0
            except Exception as e:
                # e.g. Redis unreachable mid-way: rebuild from the caches and republish everything,
                # backing off while it keeps failing
                failures += 1
                delay = min(10.0, 0.5 * 2 ** failures)
                if failures == 1:
                    log.exception("reconcile failed; full resync soon")
                else:
                    log.warning("reconcile failed again", extra={"error": repr(e), "retry_in_s": delay})
                self._takeover = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    # -- status ----------------------------------------------------------------------------------------
    def synced(self) -> bool:
        return self.services.synced and self.namespaces.synced and all(
            i.synced for i in self.pool_informers.values())

    def role(self) -> str:
        if self.is_leader:
            return "leader"
        holder = self.elector.holder if self.elector is not None else ""
        return "standby" if self.leader_known or (holder and holder != self.cfg.instance) else "unknown"

    def readiness(self) -> tuple[bool, str]:
        if not self.synced():
            missing = [i.name for i in (self.services, self.namespaces, *self.pool_informers.values()) if not i.synced]
            return False, "caches not synced: " + ", ".join(missing)
        ok, why = self.bus.readiness()
        if not ok:
            return False, f"bus: {why}"
        if self.role() == "unknown":
            return False, "leader/standby not known yet"
        if self.is_leader and self._takeover:
            return False, "leader: restoring allocations"
        return True, f"{self.role()}; bus: {why}"

    def status(self) -> dict[str, Any]:
        results = self.alloc.results() if self.is_leader else {}
        return {
            "instance": self.cfg.instance,
            "role": self.role(),
            "term": self.term,
            "leader": self.elector.status() if self.elector is not None else None,
            "restores": self.restores,
            "last_restore_seconds": round(self.last_restore_s, 4),
            "services": {k: {"ips": list(r.ips), "pools": dict(r.pools), "reason": r.reason.value,
                             "message": r.message} for k, r in sorted(results.items())
                         if r.reason is not Reason.NOT_HANDLED},
            "pools": {n: {"total": u.total, "used": u.used, "available": u.available, "disabled": u.disabled,
                          "conflict": u.conflict_message} for n, u in self.alloc.pool_usage().items()},
            "pool_errors": dict(self.pool_errors),
            "pool_kinds_not_served": list(self.missing_kinds),
            "informers": {i.name: i.readiness()[1] for i in (self.services, self.namespaces,
                                                              *self.pool_informers.values())},
        }

    # -- lifecycle -------------------------------------------------------------------------------------
    async def _drop_missing_kinds(self) -> None:
        """A pool kind whose CRD is not installed (404) is left out, so it cannot keep the allocator
        unready forever; installing the CRD later needs a restart (logged)."""
        for kind, inf in list(self.pool_informers.items()):
            try:
                await self.kube.list(inf.res)
            except KubeError as e:
                if e.status == 404:
                    log.warning("pool kind not served by the API server (CRD not installed?): not watched",
                                extra={"kind": kind, "resource": inf.res.api_path()})
                    del self.pool_informers[kind]
                    self.missing_kinds.append(kind)

    async def run(self, stop: asyncio.Event) -> None:
        IS_LEADER.set(1 if self.is_leader else 0)
        self.parts = StatusParts(self.bus, ("services", "pools"))
        with contextlib.suppress(KubeError, OSError):
            await self._drop_missing_kinds()
        snapshots = self.bus.serve_snapshots("allocations", f"allocator:{self.cfg.instance}",
                                             self._on_snapshot_request)
        tasks = [asyncio.create_task(i.run(stop), name=f"allocator-informer-{i.name}")
                 for i in (self.services, self.namespaces, *self.pool_informers.values())]
        tasks.append(asyncio.create_task(snapshots.run(stop), name="allocator-snapshots"))
        tasks.append(asyncio.create_task(self._work_loop(stop), name="allocator-work"))
        if self.cfg.pool_status:
            tasks.append(asyncio.create_task(self._pool_status_loop(stop), name="allocator-pool-status"))
        if self.cfg.leader_election:
            if self.elector is None:
                self.elector = LeaderElector(
                    self.kube, namespace=self.cfg.namespace, name="l2lb-allocator", identity=self.cfg.instance,
                    lease_duration=self.cfg.lease_duration, renew_deadline=self.cfg.renew_deadline,
                    retry_period=self.cfg.retry_period,
                )
            self.elector.on_change(self._on_leader_change)
            tasks.append(asyncio.create_task(self.elector.run(stop), name="allocator-elector"))
        try:
            await run_until_stopped(stop, tasks)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.parts.close(), 5.0)
