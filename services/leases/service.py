"""The leases service: a shell around :class:`l2lb.core.leases_machine.LeasesMachine`, which makes every
decision (liveness, adoption, election, epochs, renewals, what to write to Kubernetes). This module reads
the bus (allocations, heartbeats, snapshot requests), the API (policies, EndpointSlices, leadership),
feeds the machine and carries out its commands: publish on the assignments stream, store epochs, write
conditions/mirror Leases/Events (``l2lb.adapters.kube.leases_writes``), log, count, update the view.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import StatusParts
from l2lb.adapters.kube.leases_writes import LeasesWriter, WriteQueue
from l2lb.core import leases_machine as lm
from l2lb.core.messages import Allocation, AllocationSnapshot, Conflict, Heartbeat, Message
from l2lb.core.view import AssignmentHistory, nodes_items
from l2lb.obs import metrics
from l2lb.obs.log import get_logger
from l2lb.runtime.run import run_until_stopped

log = get_logger("l2lb.leases")

ELECTION_SECONDS = metrics.histogram(
    "l2lb_leases_election_seconds", "Time one election run takes (with the commands that follow from it)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
METRICS: dict[str, Any] = {name: kind(name, doc, labels) for kind, name, doc, labels in (  # by name, for Metric
    (metrics.counter, "l2lb_leases_moves_total", "IP holder changes, by reason", ("reason",)),
    (metrics.gauge, "l2lb_leases_nodes_alive", "Nodes with live heartbeats", ()),
    (metrics.gauge, "l2lb_leases_assignments", "IPs assigned per node", ("node",)),
    (metrics.counter, "l2lb_leases_published_total", "Assignment messages published: full NodeAssignments "
     "(why=change|renew|snapshot) or NodeRenewal (why=renew_digest)", ("why",)),
    (metrics.gauge, "l2lb_leases_leader", "1 while this instance is the active leases leader", ()),
    (metrics.gauge, "l2lb_leases_unassigned_ips", "IPs that cannot be announced, by reason", ("reason",)),
    (metrics.gauge, "l2lb_leases_dual_announced_ips", "IPs that more than one live node reports serving (should "
     "be 0)", ()),
    (metrics.counter, "l2lb_leases_heartbeat_serving_total", "Heartbeats read, by their serving map: full, omitted "
     "(digest matched the last full map), unknown (omitted, but no full map with that digest seen from that "
     "instance yet)", ("serving",)),
    (metrics.gauge, "l2lb_leases_policy_errors", "Announcement policies that cannot be used", ()),
    (metrics.counter, "l2lb_leases_reconnect_graces_total", "Times heartbeats flowed again after the bus came back, "
     "the Redis master changed or no node was heard at all (nodes not heard since get --reconnect-grace-ms)", ()),
)}
POLICY_RESOURCES = {"cilium": "cilium_l2policies", "metallb": "metallb_l2ads", "l2lb": "l2lb_l2policies"}


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
    reconnect_grace_ms: int = 2000
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
    heartbeat_full_every_ms: int = 2000  # the announcers' --heartbeat-full-every-ms
    successors: int = 2  # pre-authorised successors per VIP (0: none)
    static_policies: list[dict[str, Any]] = field(default_factory=list)


class LeasesService:
    """``elector``: anything with ``on_change(cb(leader: bool))``, ``term``, ``holder`` and ``run(stop)``;
    default (leader election on, a Kubernetes API) the Lease ``l2lb-leases`` in ``cfg.namespace``."""

    def __init__(self, cfg: LeasesConfig, bus: Bus, kube: Any | None = None, *, elector: Any | None = None,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.cfg, self.bus, self.kube, self.elector = cfg, bus, kube, elector
        self.mono, self.wall = monotonic, wall
        self.m = lm.LeasesMachine(lm.LeasesParams(
            renew_ms=cfg.renew_ms, ttl_ms=cfg.ttl_ms, full_every_ms=cfg.full_every_ms, missed=cfg.missed,
            startup_grace_ms=cfg.startup_grace_ms, reconnect_grace_ms=cfg.reconnect_grace_ms,
            lag_tolerance_ms=cfg.lag_tolerance_ms,
            heartbeat_full_every_ms=cfg.heartbeat_full_every_ms, sync_timeout_s=cfg.sync_timeout_s,
            leader_election=cfg.leader_election, kube=kube is not None, conditions=cfg.conditions,
            mirror_leases=cfg.mirror_leases, events=cfg.events, static_policies=tuple(cfg.static_policies),
            successors=cfg.successors), self.now())
        self.informers: dict[str, Any] = {}
        self.writer = LeasesWriter(kube, cfg.namespace, self.informers, None, self._written)
        self.writes = WriteQueue(self.writer, lambda: self.m.is_leader)
        self.status_parts = StatusParts(bus, ("assignments", "nodes"))  # the cluster view's parts (leader only)
        self.history = AssignmentHistory()

    def now(self) -> lm.Now:
        return lm.Now(self.mono(), self.wall())

    async def feed(self, event: lm.Event) -> None:
        await self.do(self.m.handle(event, self.now()))

    # -- commands ----------------------------------------------------------------------------------
    async def do(self, commands: Iterable[lm.Command]) -> None:
        """Carry out the machine's commands in order (see the executor contract in its module)."""
        q = deque(commands)
        while q:
            c = q.popleft()
            if isinstance(c, lm.PublishAssignments | lm.PublishRenewal):
                # the publishes that follow in the list go out with it in one round trip (a renewal round
                # is one per node); Sent/SendFailed are fed in order, as if sent one by one
                batch: list[lm.PublishAssignments | lm.PublishRenewal] = [c]
                while q and isinstance(q[0], lm.PublishAssignments | lm.PublishRenewal):
                    nxt = q.popleft()
                    assert isinstance(nxt, lm.PublishAssignments | lm.PublishRenewal)
                    batch.append(nxt)
                results: list[str | BaseException]
                if len(batch) == 1:
                    try:
                        results = [await self.bus.publish(self.bus.keys.assignments, c.msg)]
                    except Exception as e:  # Redis hiccup: the machine retries on the next tick
                        results = [e]
                else:
                    results = list(await self.bus.publish_many(self.bus.keys.assignments, [b.msg for b in batch]))
                for b, r in zip(batch, results, strict=True):
                    if isinstance(r, BaseException):  # the rest of the list is dropped: retried next tick
                        q = deque(self.m.handle(lm.SendFailed(b, repr(r)), self.now()))
                        break
                    q.extend(self.m.handle(lm.Sent(b), self.now()))
                continue
            elif isinstance(c, lm.Log):
                getattr(log, c.level)(c.message, extra=dict(c.fields))
            elif isinstance(c, lm.Metric):
                m = METRICS[c.name]
                if c.op == "clear":
                    m.clear()
                elif c.op == "inc":
                    (m.labels(*c.labels) if c.labels else m).inc(c.value)
                else:
                    (m.labels(*c.labels) if c.labels else m).set(c.value)
            elif isinstance(c, lm.StatusPart) and c.part == "nodes":
                self.status_parts.update("nodes", lambda: nodes_items(
                    self.m.tracker.nodes, self.m.result, self.m.hb_now(self.now()), self.wall()))
            elif isinstance(c, lm.StatusPart):
                self.status_parts.update(c.part, lambda: self.history.items(self.m.result, self.wall()))
            elif isinstance(c, lm.StatusEvent):
                self.status_parts.emit(c.kind, **c.fields)
            elif isinstance(c, lm.StoreEpochs):
                try:
                    await self.bus.redis.hset(self.bus.keys.epochs, mapping={k: str(v) for k, v in c.epochs.items()})
                except Exception as e:  # nothing naming these epochs goes out: the machine stores them first next tick
                    log.warning("cannot store epochs; this tick's publishes wait for them",
                                extra={"error": repr(e), "ips": len(c.epochs)})
                    q = deque(self.m.handle(lm.SendFailed(None, f"cannot store epochs: {e!r}"), self.now()))
            elif isinstance(c, lm.LoadEpochs):
                await self.load_epochs()
            elif isinstance(c, lm.RequestSnapshot):
                try:
                    await self.bus.request_snapshot(c.topic, f"leases:{self.cfg.instance}", c.reason)
                except Exception as e:
                    log.warning(f"cannot request an {c.topic} snapshot", extra={"error": repr(e)})
            elif self.kube is not None:
                self.writes.put(c)

    def _written(self, c: lm.WriteCondition | lm.WriteLease) -> None:
        self.m.handle(lm.KubeWritten(c), self.now())  # nothing follows from it

    # -- bus and API input -------------------------------------------------------------------------
    async def _on_heartbeat(self, msg: Message, eid: str) -> None:
        if isinstance(msg, Heartbeat):
            try:
                at: float | None = int(eid.split("-", 1)[0]) / 1000.0  # when Redis stored it
            except ValueError:
                at = None
            await self.feed(lm.HeartbeatReceived(msg, at))
        elif isinstance(msg, Conflict):
            await self.feed(lm.ConflictReceived(msg))

    async def _on_allocation(self, msg: Message, _id: str) -> None:
        if isinstance(msg, Allocation):
            await self.feed(lm.AllocationReceived(msg))
        elif isinstance(msg, AllocationSnapshot):
            await self.feed(lm.AllocationSnapshotReceived(msg))

    async def _on_alloc_resync(self, reason: str) -> None:
        log.info("allocations stream resync", extra={"reason": reason})
        await self.load_allocations(reason)
        await self.load_epochs(restore=True)

    async def load_allocations(self, reason: str) -> None:
        try:
            snap = await self.bus.load_snapshot("allocations")
        except Exception as e:
            log.warning("cannot load the allocations snapshot", extra={"error": repr(e)})
            snap = None
        await self.feed(lm.AllocationsLoaded(snap, reason))

    async def load_epochs(self, restore: bool = False) -> None:
        epochs: dict[str, int] = {}
        try:
            raw = await self.bus.redis.hgetall(self.bus.keys.epochs)
        except Exception as e:
            log.warning("cannot read stored epochs", extra={"error": repr(e)})
            raw = {}
        for k, v in raw.items():
            with contextlib.suppress(TypeError, ValueError):
                epochs[k.decode() if isinstance(k, bytes) else str(k)] = int(v)
        await self.feed(lm.EpochsLoaded(epochs, restore))

    async def _on_policy(self, ev: str, obj: dict[str, Any], _old: dict[str, Any] | None) -> None:
        watched = tuple(o for k in self.cfg.policy_kinds if (inf := self.informers.get(f"policy:{k}"))
                        for o in inf.cache.values())
        await self.feed(lm.PoliciesChanged(watched, None if ev == "DELETED" else obj))

    def _setup_kube(self) -> None:
        from l2lb.adapters.kube.client import RESOURCES
        from l2lb.adapters.kube.informer import Informer
        from l2lb.adapters.kube.leases_writes import MANAGED_BY, MANAGER

        kube = self.kube
        assert kube is not None
        for kind in self.cfg.policy_kinds:
            self.informers[f"policy:{kind}"] = inf = Informer(kube, RESOURCES[POLICY_RESOURCES[kind]],
                                                              name=f"leases-policy-{kind}")
            inf.add_handler(self._on_policy)
        self.informers["endpointslices"] = eps = Informer(
            kube, RESOURCES["endpointslices"], label_selector="kubernetes.io/service-name",
            name="leases-endpointslices")
        eps.add_handler(lambda ev, obj, _old: self.feed(lm.EndpointSliceChanged(obj, ev == "DELETED")))
        if self.cfg.conditions:
            self.informers["services"] = Informer(kube, RESOURCES["services"], name="leases-services")
        if self.cfg.mirror_leases:
            self.informers["leases"] = Informer(kube, RESOURCES["leases"], self.cfg.namespace,
                                                label_selector=f"{MANAGED_BY}={MANAGER}", name="leases-mirrors")
        if self.cfg.events:
            from l2lb.adapters.kube.events import EventRecorder

            self.writer.recorder = EventRecorder(kube, "l2lb-leases")
        if self.cfg.leader_election and self.elector is None:
            from l2lb.adapters.kube.leader import LeaderElector

            self.elector = LeaderElector(
                kube, namespace=self.cfg.namespace, name="l2lb-leases", identity=self.cfg.instance,
                lease_duration=self.cfg.lease_duration, renew_deadline=self.cfg.renew_deadline,
                retry_period=self.cfg.retry_period)

    # -- the tick ----------------------------------------------------------------------------------
    async def _tick_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            elections, t0 = self.m.elections, time.perf_counter()
            try:
                infs = tuple(lm.InformerState(n, i.synced, str(i.last_error or "")) for n, i in self.informers.items())
                cmds = self.m.handle(lm.Tick(self.bus.readiness()[0], infs, self.bus.master_moves), self.now())
                if self.m.elections != elections:
                    ELECTION_SECONDS.observe(time.perf_counter() - t0)
                await self.do(cmds)
            except Exception as e:  # never let one step stop the loop: the machine retries next tick
                await self.feed(lm.SendFailed(None, repr(e)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.tick_ms / 1000.0):  # no task per tick (wait_for makes one)
                    await stop.wait()

    # -- status ------------------------------------------------------------------------------------
    def role(self) -> str:
        return self.m.role(bool(getattr(self.elector, "holder", "")))

    def readiness(self) -> tuple[bool, str]:
        ok, why = self.bus.readiness()
        if not ok:
            return False, f"bus: {why}"
        if self.role() == "unknown":
            return False, "leader/standby not known yet"
        return True, f"{self.role()}; bus: {why}"

    def status(self) -> dict[str, Any]:
        return {"instance": self.cfg.instance, **self.m.status(self.now(), self.role()),
                "informers": {k: inf.readiness()[1] for k, inf in self.informers.items()}}

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        group, keys = f"leases:{self.cfg.instance}", self.bus.keys
        consumers = {
            # NOACK: a heartbeat is superseded 100 ms later and the group is ours alone (removed at stop),
            # so nothing is gained by acknowledging each one (30 XACKs/s with 3 nodes)
            "heartbeats": self.bus.consumer(keys.heartbeats, group, self.cfg.instance, self._on_heartbeat,
                                            on_resync=lambda why: self.feed(lm.HeartbeatsResynced(why)),
                                            noack=True),
            # a new group replays the (bounded) stream: allocations are idempotent
            "allocations": self.bus.consumer(keys.allocations, group, self.cfg.instance, self._on_allocation,
                                             on_resync=self._on_alloc_resync, from_start=True),
            "snapshot-requests": self.bus.serve_snapshots(
                "assignments", group, lambda r: self.feed(lm.SnapshotRequested(r.requester, r.reason)), block_ms=500),
        }
        if self.kube is not None:
            self._setup_kube()
        if self.elector is not None:
            self.elector.on_change(lambda leader: self.feed(lm.LeadershipChanged(
                leader, int(getattr(self.elector, "term", 0) or 0))))
        await self.load_allocations("startup")
        await self.load_epochs()
        await self.feed(lm.Started())
        tasks = [asyncio.create_task(c.run(stop), name=f"leases-{n}") for n, c in consumers.items()]
        tasks.append(asyncio.create_task(self._tick_loop(stop), name="leases-tick"))
        tasks += [asyncio.create_task(inf.run(stop), name=f"leases-informer-{n}") for n, inf in self.informers.items()]
        if self.kube is not None:
            tasks.append(asyncio.create_task(self.writes.run(stop), name="leases-kube-writer"))
        if self.elector is not None:
            tasks.append(asyncio.create_task(self.elector.run(stop), name="leases-elector"))
        try:
            await run_until_stopped(stop, tasks)
        finally:
            await self.status_parts.close()
            # per-instance broadcast groups: remove ours so restarts do not pile them up in Redis
            for stream, g in ((keys.heartbeats, group), (keys.allocations, group),
                              (keys.control, f"snapshots:assignments:{group}")):
                with contextlib.suppress(Exception):
                    await self.bus.redis.xgroup_destroy(stream, g)
