"""A whole l2lb cluster on one virtual clock: the services' own state machines in simulated surroundings.

What is real (the code the services run): :class:`~l2lb.core.leases_machine.LeasesMachine`,
:class:`~l2lb.core.announcer_machine.AnnouncerMachine`, the allocator core, the election, message
schemas. What is modelled: Redis (:mod:`l2lb.sim.redis`), the Kubernetes API server and leader
election (:mod:`l2lb.sim.api`), the LAN and its client (:mod:`l2lb.sim.net`, :mod:`l2lb.sim.oracle`),
processes, their clocks and their deaths (:mod:`l2lb.sim.kernel`).

Each shell here does for its machine what ``services/<name>`` does for it in production: turn what
happens into the machine's events, carry out its commands. Placement follows k8s/base as the lab's
``--colocated`` mode does: Redis master (and with ``redis_ha`` its replicas and sentinels), the
leases and allocator replicas on nodes, the API server on the control-plane host.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from l2lb.core import announcer_machine as am
from l2lb.core import leases_machine as lm
from l2lb.core.messages import (
    AllocationSnapshot,
    Conflict,
    Heartbeat,
    Message,
    NodeAssignments,
    NodeRenewal,
    SnapshotRequest,
)
from l2lb.sim.api import Api, Elector, SimAllocator
from l2lb.sim.faults import Fault
from l2lb.sim.kernel import Kernel, Proc
from l2lb.sim.net import CLIENT, CTL, Lan
from l2lb.sim.oracle import Oracle, Violation
from l2lb.sim.redis import Data, Entry, Redis, Server, Sub

__all__ = ["World", "WorldConfig"]

WALL_BASE = 1_765_000_000.0  # unix seconds at sim time 0 (plus each process's clock offset)
LAN_IF = "enp0s25"
POOL_CIDR = "198.51.100.128/25"

S_ALLOC = "allocations"
S_HB = "heartbeats"
S_ASSIGN = "assignments"
S_CONTROL = "control"
K_ALLOC_SNAPSHOT = "snapshot:allocations"
K_EPOCHS = "epochs"


@dataclass(frozen=True)
class WorldConfig:
    nodes: int = 5
    services: int = 4
    redis_ha: bool = True  # master + 2 replicas + 3 sentinels on the first three nodes; else one Redis
    redis_persistent: bool = False
    leases_nodes: tuple[int, ...] = (1, 2)  # node numbers of the leases replicas (the first leads at start)
    allocator_nodes: tuple[int, ...] = (2, 3)
    ttl_ms: int = 1000
    renew_ms: int = 250
    heartbeat_ms: int = 100
    tick_ms: int = 50
    lease_duration: float = 6.0
    renew_deadline: float = 4.0
    retry: float = 2.0
    sentinel_down_after: float = 1.0
    dual_allowed: float = 1.0
    elide: bool = True  # skip steady stretches between faults (see Kernel.elide); False: simulate every ms
    observe_every: float = 0.05  # the observation grid (oracle checks, the fingerprint, elision); 1/it an integer
    steady_for: float = 0.05  # how long nothing may have changed before a stretch counts as steady (World.steady)
    peers: bool = True  # the announcers' LAN peer heartbeats (freeze, takeovers); False: the behaviour before them

    def node_names(self) -> list[str]:
        return [f"n{i + 1}" for i in range(self.nodes)]


def _entry_id(e: Entry) -> str:
    return f"{int((WALL_BASE + e.at) * 1000)}-{e.id}"


def _wall(p: Proc) -> float:
    return WALL_BASE + p.wall()


def service_obj(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "apps", "name": f"svc-{i}", "uid": f"uid-{i}", "labels": {"app": f"a{i}"},
                     "creationTimestamp": f"2026-01-01T00:00:{i % 60:02d}Z"},
        "spec": {"type": "LoadBalancer", "ports": [{"protocol": "TCP", "port": 80 + i}]},
        "status": {},
    }


POOL = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "lan", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"blocks": [{"cidr": POOL_CIDR}]}}
POLICY = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
          "metadata": {"name": "lan", "creationTimestamp": "2026-01-01T00:00:00Z"},
          "spec": {"interfaces": [f"^{LAN_IF}$"], "loadBalancerIPs": True}}


class AnnouncerShell:
    """What services/announcer does around its machine (sockets and netlink replaced by the LAN model)."""

    def __init__(self, world: World, node: str):
        self.w = world
        self.node = node
        self.proc = Proc(world.kernel, node, "announcer")
        self.index = world.cfg.node_names().index(node) + 1
        self.mac = f"02:00:00:00:00:{self.index:02x}"
        self.machine: am.AnnouncerMachine | None = None
        self.timer: Any = None
        self.sub: Sub | None = None  # its assignments stream subscription (Tick.reads_ok)
        self.bus_ok = True
        self.answering: dict[str, int] = {}
        self.garps = 0
        # what the shell does for each command type (by exact type: the machine's commands are final classes)
        self._do: dict[type, Callable[[Any], None]] = {
            am.SendPeerFrame: self._send_peer_frame, am.PublishHeartbeat: self._publish,
            am.StartAnswering: self._start_answering, am.StopAnswering: self._stop_answering,
            am.RequestSnapshot: self._request_snapshot, am.SendFrames: self._send_frames,
            am.ReportConflict: self._report_conflict}

    def start(self) -> None:
        w, p = self.w, self.proc
        inst = f"{self.node}-{p.incarnation}"
        cfg = w.cfg
        self.machine = am.AnnouncerMachine(am.MachineConfig(
            node=self.node, instance=inst, heartbeat_interval_ms=cfg.heartbeat_ms,
            peers=cfg.peers, peer_key=b"sim-peer-key-0123456789" if cfg.peers else None), now=p.mono())
        self.answering = {}
        self._feed(am.LinksChanged(self._links(), p.mono()))
        self.sub = w.redis.subscribe(p, S_ASSIGN, f"announcer:{self.node}", self._on_entry,
                                     lambda: self._feed(am.Resync("redis lost its data", p.mono())))
        self._feed(am.Tick(p.mono(), _wall(p), self.bus_ok, self.sub.reads_ok(p.mono())))

    def _links(self) -> tuple[am.LinkState, ...]:
        return (am.LinkState(LAN_IF, 2, self.mac, self.w.lan.link_up[self.node], True,
                             (f"203.0.113.{self.index}",)),)

    def sends_frames(self) -> bool:
        """Its peer frames go out (it runs and answers on its link: frames go on answering interfaces)."""
        p, m = self.proc, self.machine
        return p.alive and not p.paused and m is not None and bool(m.answering_interfaces)

    def peer_frame(self, frame: bytes) -> None:
        """A peer's LAN heartbeat reached this node (the kernel's receive time: now)."""
        p = self.proc
        now = p.kernel.now
        self._feed(am.PeerFrameReceived(LAN_IF, frame, now + p.mono_offset, WALL_BASE + (now + p.wall_offset)))

    def link_changed(self) -> None:
        if self.proc.alive:
            self.proc.deliver(lambda: self._feed(am.LinksChanged(self._links(), self.proc.mono())))

    def _on_entry(self, e: Entry) -> None:
        msg = e.payload
        p = self.proc
        if isinstance(msg, NodeAssignments):
            self._feed(am.Assignments(msg, p.mono(), _wall(p), _entry_id(e)))
        elif isinstance(msg, NodeRenewal):
            self._feed(am.Renewal(msg, p.mono(), _wall(p), _entry_id(e)))

    def _feed(self, ev: am.Event) -> None:
        m = self.machine
        if m is None or not self.proc.alive:
            return
        do = self._do
        for c in m.feed(ev):
            h = do.get(type(c))  # (Log, Count, Gauge, SetMulticast: nothing to do here)
            if h is not None:
                h(c)
        self._arm()

    def _arm(self) -> None:
        m = self.machine
        if m is None:
            return
        p = self.proc
        now = p.mono()
        t = m.next_wakeup(now)
        if t is not None:
            t = max(t, now + 0.001) - p.mono_offset  # on the kernel's clock
        if self.timer is not None:
            if t is not None and self.timer.t == t:
                return
            self.timer.cancel()
            self.timer = None
        if t is not None:
            self.timer = self.w.kernel.at(t, self._tick, p)  # (at t exactly: the check above holds)

    def _tick(self) -> None:
        self.timer = None
        now = self.proc.mono()
        self._feed(am.Tick(now, _wall(self.proc), self.bus_ok, self.sub is None or self.sub.reads_ok(now)))

    def _send_peer_frame(self, c: am.SendPeerFrame) -> None:
        self.w.peer_frame(self.node, c.frame)

    def _start_answering(self, c: am.StartAnswering) -> None:
        w = self.w
        self.answering.update(dict(c.vips))
        w.oracle.answering(self.node, self.answering, w.kernel.real())
        w.log(f"{self.node} answers " + " ".join(f"{ip}@{e}" for ip, e in c.vips))

    def _stop_answering(self, c: am.StopAnswering) -> None:
        w = self.w
        for ip in c.ips:
            self.answering.pop(ip, None)
        w.oracle.answering(self.node, self.answering, w.kernel.real())
        w.log(f"{self.node} stops {' '.join(c.ips)} ({c.reason})")
        if c.reason == "reassigned":
            w.check_sticky(self.node, c.ips)

    def _request_snapshot(self, c: am.RequestSnapshot) -> None:
        self.w.redis.xadd(self.proc, S_CONTROL, SnapshotRequest(topic="assignments",
                                                                 requester=f"announcer:{self.node}", reason=c.reason))

    def _send_frames(self, c: am.SendFrames) -> None:
        self.garps += len(c.frames)

    def _report_conflict(self, _c: am.ReportConflict) -> None:
        self.w.counters["conflicts_reported"] += 1

    def _publish(self, c: am.PublishHeartbeat) -> None:
        w, p = self.w, self.proc
        if not c.conflicts:  # the usual case: the heartbeat alone
            w.redis.xadd(p, S_HB, c.heartbeat, self._heartbeat_published)
            return
        msgs: list[Message] = [*c.conflicts, c.heartbeat]
        sent = [0]

        def one(i: int) -> None:
            if i == len(msgs):
                return

            def done(ok: bool, entry_id: Any) -> None:
                self.bus_ok = ok
                if not ok:
                    self._feed(am.Published(False, p.mono(), "", sent[0], "redis unreachable"))
                    return
                if i < len(msgs) - 1:
                    sent[0] += 1
                    one(i + 1)
                    return
                self._feed(am.Published(True, p.mono(), f"{int((WALL_BASE + w.kernel.now) * 1000)}-{entry_id}",
                                        sent[0]))

            w.redis.xadd(p, S_HB, msgs[i], done)

        one(0)

    def _heartbeat_published(self, ok: bool, entry_id: Any) -> None:
        """The XADD of a heartbeat without conflicts before it (what ``_publish``'s last ``done`` does)."""
        self.bus_ok = ok
        p = self.proc
        now = p.kernel.now  # Redis's clock (the entry id); ours runs mono_offset ahead
        if not ok:
            self._feed(am.Published(False, now + p.mono_offset, "", 0, "redis unreachable"))
            return
        self._feed(am.Published(True, now + p.mono_offset, f"{int((WALL_BASE + now) * 1000)}-{entry_id}", 0))

    def die(self) -> None:
        self.proc.kill()
        self.w.redis.unsubscribe_all(self.proc)
        self.machine = None
        self.timer = None
        if self.answering:
            self.answering = {}
            self.w.oracle.answering(self.node, {}, self.w.kernel.real())

    def restart(self) -> None:
        self.proc.restart()
        self.start()


# the leases machine's commands its shell carries out here (the others are logs, metrics, status, Kubernetes writes)
_LEASES_DONE_HERE = frozenset({lm.PublishAssignments, lm.PublishRenewal, lm.StoreEpochs, lm.LoadEpochs,
                               lm.RequestSnapshot})


class LeasesShell:
    """What services/leases does around its machine."""

    def __init__(self, world: World, node: str, idx: int):
        self.w = world
        self.node = node
        self.proc = Proc(world.kernel, node, f"leases-{idx}")
        self.machine: lm.LeasesMachine | None = None
        self.queue: deque[lm.Command] = deque()
        self.waiting = False
        self.elector: Elector | None = None

    def now(self) -> lm.Now:
        p = self.proc
        t = p.kernel.now
        return lm.Now(t, WALL_BASE + (t + p.wall_offset))  # (mono(), _wall(): the most frequent call here)

    def start(self) -> None:
        w, p, cfg = self.w, self.proc, self.w.cfg
        params = lm.LeasesParams(renew_ms=cfg.renew_ms, ttl_ms=cfg.ttl_ms, leader_election=True, kube=False,
                                 static_policies=(POLICY,))
        self.machine = lm.LeasesMachine(params, self.now())
        self.queue.clear()
        self.waiting = False

        def loaded(ok: bool, res: Any) -> None:
            snap, epochs = res if ok else (None, {})
            self._feed(lm.AllocationsLoaded(snap))
            self._feed(lm.EpochsLoaded(dict(epochs)))
            self._feed(lm.Started())
            self.elector = Elector(w.api, p, "l2lb-leases", self._on_leader, lease_duration=cfg.lease_duration,
                                   renew_deadline=cfg.renew_deadline, retry=cfg.retry)
            self._loop()

        # consumer groups first (at the streams' ends), then the stored state: nothing falls in between
        r = w.redis
        # a new group replays the (bounded) allocations stream, as services/leases does
        r.subscribe(p, S_ALLOC, f"leases:{p.name}", self._on_alloc, self._alloc_resync, from_start=True)
        r.subscribe(p, S_HB, f"leases:{p.name}", self._on_hb, lambda: self._feed(lm.HeartbeatsResynced("lost")))
        r.subscribe(p, S_CONTROL, f"snapshots:assignments:{p.name}", self._on_control, lambda: None)
        r.call(p, lambda d: (d.keys.get(K_ALLOC_SNAPSHOT), dict(d.hashes.get(K_EPOCHS, {}))), loaded)

    def _alloc_resync(self) -> None:
        """Redis lost the stream (services/leases: load the snapshot key, then the stored epochs to restore)."""
        def loaded(ok: bool, res: Any) -> None:
            snap, epochs = res if ok else (None, {})
            self._feed(lm.AllocationsLoaded(snap, reason="resync"))
            self._feed(lm.EpochsLoaded(dict(epochs), restore=True))

        self.w.redis.call(self.proc, lambda d: (d.keys.get(K_ALLOC_SNAPSHOT), dict(d.hashes.get(K_EPOCHS, {}))),
                          loaded)

    def _on_leader(self, leader: bool, term: int) -> None:
        self.w.log(f"{self.proc.node}/{self.proc.name} {'leads' if leader else 'lost leadership'} (term {term})")
        self._feed(lm.LeadershipChanged(leader, term))

    def _loop(self) -> None:
        if self.machine is None:
            return
        self._feed(lm.Tick(bus_ok=self.w.redis.usable(self.proc)))
        self.proc.after(self.w.cfg.tick_ms / 1000.0, self._loop)

    def _on_alloc(self, e: Entry) -> None:
        msg = e.payload
        if isinstance(msg, AllocationSnapshot):
            self._feed(lm.AllocationSnapshotReceived(msg))
        else:
            self._feed(lm.AllocationReceived(msg))

    def _on_hb(self, e: Entry) -> None:
        msg = e.payload
        if isinstance(msg, Heartbeat):
            self._feed(lm.HeartbeatReceived(msg, at=WALL_BASE + e.at))
        elif isinstance(msg, Conflict):
            self._feed(lm.ConflictReceived(msg))

    def _on_control(self, e: Entry) -> None:
        msg = e.payload
        if isinstance(msg, SnapshotRequest) and msg.topic == "assignments":
            self._feed(lm.SnapshotRequested(msg.requester, msg.reason))

    def _feed(self, ev: lm.Event) -> None:
        if self.machine is None or not self.proc.alive:
            return
        self.queue.extend(self.machine.handle(ev, self.now()))
        self._drain()

    def _drain(self) -> None:
        w, p = self.w, self.proc
        while self.queue and not self.waiting and self.machine is not None:
            c = self.queue.popleft()
            if type(c) not in _LEASES_DONE_HERE:
                continue  # logs, metrics, Kubernetes writes (kube=False), status: nothing to do here
            if isinstance(c, lm.PublishAssignments | lm.PublishRenewal):
                # as services/leases: the publishes that follow go out with it in one round trip (publish_many)
                batch: list[lm.Publish] = [c]
                while self.queue and isinstance(self.queue[0], lm.PublishAssignments | lm.PublishRenewal):
                    batch.append(self.queue.popleft())  # type: ignore[arg-type]
                self.waiting = True

                def done(ok: bool, entry_ids: Any, batch: list[lm.Publish] = batch) -> None:
                    self.waiting = False
                    if self.machine is None:
                        return
                    if ok:
                        for b, entry_id in zip(batch, entry_ids, strict=True):
                            w.published(b.msg, int(entry_id))
                            self.queue.extend(self.machine.handle(lm.Sent(b), self.now()))
                    else:
                        self.queue.clear()
                        self.queue.extend(self.machine.handle(lm.SendFailed(batch[0], "redis unreachable"),
                                                              self.now()))
                    self._drain()

                w.redis.xadd_many(p, S_ASSIGN, [b.msg for b in batch], done)
            elif isinstance(c, lm.StoreEpochs):
                # services/leases awaits the write; when it fails, the publishes after it are dropped
                self.waiting = True

                def stored(ok: bool, _res: Any) -> None:
                    self.waiting = False
                    if self.machine is None:
                        return
                    if not ok:
                        self.queue.clear()
                        self.queue.extend(self.machine.handle(lm.SendFailed(None, "cannot store epochs"), self.now()))
                    self._drain()

                w.redis.hset(p, K_EPOCHS, dict(c.epochs), stored)
            elif isinstance(c, lm.LoadEpochs):
                # services/leases awaits the read and carries out what EpochsLoaded gives before the rest
                self.waiting = True

                def loaded(ok: bool, res: Any) -> None:
                    self.waiting = False
                    if self.machine is None:
                        return
                    more = self.machine.handle(lm.EpochsLoaded(dict(res) if ok else {}), self.now())
                    self.queue.extendleft(reversed(more))
                    self._drain()

                w.redis.call(p, lambda d: dict(d.hashes.get(K_EPOCHS, {})), loaded)
            elif isinstance(c, lm.RequestSnapshot):
                w.redis.xadd(p, S_CONTROL, SnapshotRequest(topic=c.topic, requester=f"leases:{p.name}",
                                                            reason=c.reason))

    def die(self) -> None:
        self.proc.kill()
        self.w.redis.unsubscribe_all(self.proc)
        self.machine = None

    def restart(self) -> None:
        self.proc.restart()
        self.start()


class AllocShell:
    def __init__(self, world: World, node: str, idx: int):
        self.w = world
        self.node = node
        self.proc = Proc(world.kernel, node, f"allocator-{idx}")
        self.core: SimAllocator | None = None
        self.elector: Elector | None = None

    def start(self) -> None:
        w, cfg = self.w, self.w.cfg
        self.core = SimAllocator(self.proc, w.api, w.redis, S_ALLOC, K_ALLOC_SNAPSHOT)
        self.core.start(S_CONTROL)
        self.elector = Elector(w.api, self.proc, "l2lb-allocator", self.core.on_leadership,
                               lease_duration=cfg.lease_duration, renew_deadline=cfg.renew_deadline, retry=cfg.retry)

    def die(self) -> None:
        self.proc.kill()
        self.w.api.unwatch(self.proc)
        self.w.redis.unsubscribe_all(self.proc)
        if self.core is not None:
            self.core.leader = False  # the dead instance's callbacks must never act again
        self.core = None

    def restart(self) -> None:
        self.proc.restart()
        self.start()


@dataclass
class Report:
    seed: int
    sim_seconds: float
    steps: int
    faults: list[Fault]
    violations: list[Violation]
    outages: list[tuple[str, float, float]]  # vip, start, seconds
    duals: list[tuple[str, float, float]]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


class World:
    def __init__(self, cfg: WorldConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.kernel = Kernel(seed)
        names = cfg.node_names()
        self.lan = Lan(self.kernel, names)
        self.counters: Counter[str] = Counter()
        # a released IP stops being answered once leases acts on the release; while leases itself fails
        # over (the announcers keep their sets under the leases-outage grace) that takes up to the leader
        # election's takeover time
        self.oracle = Oracle(self._answers_client, dual_allowed=cfg.dual_allowed,
                             unassigned_grace=cfg.lease_duration + 2 * cfg.retry + 2.0)
        redis_nodes = names[:3] if cfg.redis_ha else names[:1]
        servers = [Server(Proc(self.kernel, n, "redis"), Data(1), persistent=cfg.redis_persistent)
                   for n in redis_nodes]
        self.redis = Redis(self.kernel, self.lan, servers, sentinel_nodes=redis_nodes if cfg.redis_ha else None,
                           down_after=cfg.sentinel_down_after)
        self.redis.on_promote = self._promoted
        self.issued_log: list[tuple[int, str, int, dict[str, int]]] = []  # assignments written: id, node, term
        self.issued_last: dict[str, tuple[int, dict[str, int]]] = {}  # node -> the last set issued (term, vips)
        self.issued_changes = 0
        self.api = Api(self.kernel, self.lan)
        self.api.pools["lan"] = POOL
        self.announcers = {n: AnnouncerShell(self, n) for n in names}
        self.leases = [LeasesShell(self, names[(n - 1) % len(names)], i) for i, n in enumerate(cfg.leases_nodes)]
        self.allocators = [AllocShell(self, names[(n - 1) % len(names)], i) for i, n in enumerate(cfg.allocator_nodes)]
        self.fault_log: list[tuple[float, str]] = []
        self.trace: list[str] = []  # what happened, for reproducers (capped)
        self.busy_until = 0.0  # real time until which a fault (or its aftermath) is in progress
        # what happens from outside (faults, and their ends: a node back, a link up) on the real clock, so an
        # elided steady stretch in between keeps each where the schedule put it: (real time, seq, action)
        self._outside: list[tuple[float, int, Callable[[], None]]] = []
        self._outside_seq = 0
        self.bound_real = 0.0  # elision may go up to this real time (the next outside event or the run's end)
        self.last_change = 0.0  # real time of the last change of anything World.steady watches
        self._fingerprint: tuple[Any, ...] = ()
        self._observed = 0
        self._per_second = round(1.0 / cfg.observe_every)
        self.hold_until = 0.0  # real time before which no stretch is steady (a fault with a longer quiet timer)
        self._api_seen = -1

    # -- observation hooks ---------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if len(self.trace) < 20_000:
            self.trace.append(f"t={self.kernel.real():9.3f} {text}")

    def _answers_client(self, node: str) -> bool:
        """The client gets ``node``'s answers: the link path exists and its announcer runs (a SIGSTOPped
        process answers nothing; on SIGCONT its overdue timers run before any frame is read)."""
        p = self.announcers[node].proc
        return p.alive and not p.paused and self.lan.reach(node, CLIENT)

    def published(self, msg: NodeAssignments | NodeRenewal, entry_id: int) -> None:
        if isinstance(msg, NodeAssignments):
            vips = {v.ip: v.epoch for v in msg.vips}
            self.issued_log.append((entry_id, msg.node, msg.term, vips))
            if self.issued_last.get(msg.node) != (msg.term, vips):  # not the periodic full set again
                self.issued_last[msg.node] = (msg.term, vips)
                self.issued_changes += 1
            self.oracle.issued(msg.node, msg.term, vips, self.kernel.real())

    def _promoted(self, srv: Server) -> None:
        """Sentinel promoted a replica: the old master's last writes that had not reached it are lost -- also
        what a cut-off leader decided into it. Epoch order is checked along the history that survived."""
        self.log(f"sentinel promotes the redis on {srv.node}")
        kept = {e.id for e in srv.data.entries(S_ASSIGN)}
        first = min(kept) if kept else 0
        survivors = [r for r in self.issued_log if r[0] in kept or r[0] < first]  # older ones: trimmed, not lost
        if len(survivors) != len(self.issued_log):
            self.log(f"{len(self.issued_log) - len(survivors)} assignment message(s) lost with the old master")
            self.issued_log = survivors
            self.oracle.rebuild_epochs([(node, term, vips) for _, node, term, vips in survivors])

    def start(self) -> None:
        shells: list[AnnouncerShell | LeasesShell | AllocShell] = [*self.announcers.values(), *self.leases,
                                                                     *self.allocators]
        for s in shells:
            s.start()
        for i in range(self.cfg.services):
            self.api.put_service(service_obj(i))
        self._observe()

    def _observe(self) -> None:
        """Every ``observe_every``: what Services hold (for the oracle), the time-based checks, and elision of
        steady stretches."""
        k = self.kernel
        now = k.real()
        self._observed += 1
        if self.api.changes != self._api_seen or self._observed % self._per_second == 0:
            # what Services hold changes only with them (answers and reachability reach the oracle as they
            # change); a full refresh every second all the same
            self._api_seen = self.api.changes
            self.oracle.set_assigned(self.api.assigned_ips(), now)
            self._check_duplicates()
        before = len(self.oracle.violations)
        self.oracle.check(now)
        for v in self.oracle.violations[before:]:
            self.log(f"VIOLATION {v.invariant}: {v.detail}")
        if self.cfg.elide:
            fp = self._state_fingerprint()
            if fp != self._fingerprint:
                self._fingerprint = fp
                self.last_change = now
            gap = self.bound_real - now
            grid = self.cfg.observe_every
            if gap >= grid and self.steady():
                # (or to where a timer that runs through steady time comes due: a leader election's, the grace's)
                gap = min(gap, self._elections()[1] - now, self._timers_due() - now)
                if gap >= grid:
                    # up to just before the next outside event: the rest of the gap is its part below the grid, so
                    # the event still falls at any phase of the processes' periodic timers and of this grid
                    dt = int(gap * self._per_second - 1e-6) / self._per_second
                    k.elide(dt)
                    self._elections(age=dt)
                    for a in self.announcers.values():
                        if a.machine is not None and a.proc.alive and not a.proc.paused:
                            a.machine.skipped(dt)
                    self.counters["elided_ms"] += int(dt * 1000)
        k.after(self.cfg.observe_every, self._observe)

    def _state_fingerprint(self) -> tuple[Any, ...]:
        """What changes when the cluster decides something (answers, assignments, statuses, leaders,
        Redis's master or dataset, a watcher falling behind); periodic traffic changes none of it."""
        lead = self._leader()
        return (self.oracle.last_change, self.issued_changes, self.api.writes, len(self.api.services),
                self.redis.promotions, self.redis.master.node, self.redis.master.data.incarnation,
                tuple((n, ls.holder, ls.transitions) for n, ls in sorted(self.api.leases.items())),
                tuple(s.machine is not None and s.machine.is_leader for s in self.leases),
                tuple((a.core.leader, a.core.seq) if a.core is not None else None for a in self.allocators),
                tuple(sorted(lead.machine.tracker.alive())) if lead is not None and lead.machine is not None else (),
                tuple(a.machine._keeping if a.machine is not None else "-" for a in self.announcers.values()),
                tuple(w.behind for w in self.api.watchers), self.counters["conflicts_reported"])

    def steady(self) -> bool:
        """Nothing can change until the next outside event (a fault or its end), so the stretch up to it can
        be elided (Kernel.elide). Degraded states count (a node dead, cut off, Redis promoted). Steady when the
        decisions (:meth:`_state_fingerprint`) have not changed for ``steady_for`` (one observation, 50 ms: the
        messages a change set off have landed, each within milliseconds) and nothing can change them by itself:

        * every machine is settled (``AnnouncerMachine.unsettled``, ``LeasesMachine.unsettled``: no timer of
          its own can change a decision while its periodic inputs go on) and those inputs do go on: an
          announcer with a valid set reads the assignments and a leases leader renews it (or the grace keeps
          it), it holds the set leases last sent it, its Redis round trips work and it hears the control plane
          exactly when it reaches the master and a leader's messages do, it hears exactly the peers that send
          frames and reach it; the leases leader counts alive exactly the announcers that
          can publish heartbeats (:meth:`_liveness_settled`);
        * no message fault is on (its losses are drawn per message: a random process). A SIGSTOPped process is
          left out of these checks: nothing of it runs until SIGCONT, which is an outside event, and then it
          perceives the elided stretch as having passed (Proc.resume); the others must have settled around it
          (its peers and leases count it silent, another candidate holds its leader election);
        * each leader election is settled: its holder leads and renews (alive, running, reaches the API
          server), or nobody renews the Lease and what is pending is one of client-go's timers -- a candidate
          that has seen the stale record takes over ``lease_duration`` after it first saw it, a holder cut off
          from the API server steps down ``renew_deadline`` after its last renewal -- which run through an
          elided stretch as they would have (:meth:`_elections`: the stretch ends before the first comes due,
          and what was elided is aged into them); a candidate that has not read the stale record yet, a free
          Lease, a process that thinks it leads while another holds the Lease: the stretch ends before their
          next try (unsettled while a request of theirs, or a renewal that fails, is on its way). The leases-outage
          grace is such a timer too (it keeps the sets while no leader renews them, up to 60 s:
          ``AnnouncerMachine.next_decision_at``/``skipped``);
        * Sentinel has no promotion pending (the master is up for a quorum, or no replica can be promoted);
        * the allocator leader has no request, retry or dirty Service on its way; no API watcher that can reach
          the API server is behind (it re-lists);
        * no announcer keeps its set past its validity by the Redis-down freeze or a LAN-held takeover;
        * the oracle has no dual answer and no answer for an unassigned IP in progress (its time-based
          checks would judge the elided stretch).

        Checked empirically as well (notes/h24Q.md): simulated every ms, no stretch this rule would elide
        ends in a change before the next outside event.
        """
        now = self.kernel.real()
        if now - self.last_change < self.cfg.steady_for or now < self.hold_until:
            return False
        return self.steady_conditions()

    def steady_conditions(self) -> bool:
        """:meth:`steady` but for the time since the last change."""
        o = self.oracle
        if self.lan.faulty or self.api.throttle or not self._elections_settled() or not (
                self._sentinel_settled()) or not self._liveness_settled():
            return False  # (message loss or duplication, 429s: a random process, never steady)
        if any(a.machine is not None and not a.proc.paused and a.machine._keeping not in (None, "grace")
               for a in self.announcers.values()):
            return False
        if not o.assigned:
            return False
        if not all(st.dual_since is None and st.unassigned_since is None for st in o.vips.values()):
            return False
        return self.unsettled() == ""

    def unsettled(self) -> str:
        """What can still change by itself without an outside event: a machine's own timers (its ``unsettled``),
        or an input that is not the periodic one its machine has been getting. "" when nothing can."""
        redis = self.redis
        ls = self._leader()
        lead = ls.machine if ls is not None and redis.usable(ls.proc) else None
        for node, a in self.announcers.items():
            m, p = a.machine, a.proc
            if m is None or not p.alive or p.paused:
                continue  # (a stopped process perceives the elided stretch on SIGCONT: Proc.resume)
            now = p.mono()
            why = m.unsettled(now)
            if why:
                return f"{node} announcer: {why}"
            usable = redis.usable(p)
            if m.state.vips and m.state.valid(now) and (not usable or lead is None) and m._keeping != "grace":
                return f"{node} announcer: its set runs out (nothing renews it)"
            if lead is not None and lead.tracker.is_alive(node):
                sent = lead.published.get(node)
                if sent is not None and (sent.digest() != m.state.digest or (
                        bool(sent.vips) and not m.state.valid(now))):
                    return f"{node} announcer: does not hold the set leases sent it"
            if m.redis_ok(now) != usable:
                return f"{node} announcer: its Redis round trips {'fail' if usable else 'work'} from now on"
            if m.control_plane_heard(now) != (usable and lead is not None):
                return f"{node} announcer: the control plane {'is heard' if lead else 'goes silent'} from now on"
            if m.peers is not None:
                heard = set(m.peers.alive(now))
                running = {n for n, b in self.announcers.items() if n != node and b.sends_frames()
                           and self.lan.reach(n, node)}
                if heard != running:
                    return f"{node} announcer: hears {sorted(heard)} of the peers {sorted(running)} that reach it"
                for n in heard:  # what it last heard from each is what that peer says now (flags, VIPs, claims)
                    f, pm, pp = m.peers.heard[n].frame, self.announcers[n].machine, self.announcers[n].proc
                    if pm is not None and ((f.redis_ok, f.cp_fresh) != pm.frame_flags(pp.mono()) or f.claims != tuple(
                            sorted(pm.held.items())) or f.held_count != len(pm.state.serving(pp.mono()))):
                        return f"{node} announcer: {n}'s next frame says something new"
        for s in self.leases:
            if s.machine is not None and s.proc.alive and not s.proc.paused:
                why = s.machine.unsettled(s.now())
                if why:
                    return f"{s.proc.node}/{s.proc.name}: {why}"
        for al in self.allocators:
            if al.core is not None and al.proc.alive and not al.proc.paused and not al.core.settled():
                return f"{al.proc.node}/{al.proc.name}: requests on their way"
        api = self.api
        for w in api.watchers:
            if w.behind and not api.outage and w.proc.alive and self.lan.reach(w.proc.node, CTL):
                return f"{w.proc.node}/{w.proc.name}: re-lists its watch"
        return ""

    def _timers_due(self) -> float:
        """Real time at which a settled announcer's decision changes by itself (the grace runs out), or inf."""
        now, due = self.kernel.real(), float("inf")
        for a in self.announcers.values():
            m, p = a.machine, a.proc
            if m is not None and p.alive and not p.paused:
                t = m.next_decision_at(p.mono())
                if t is not None:
                    due = min(due, now + t - p.mono())
        return due

    def _leader(self) -> LeasesShell | None:
        """The leases instance that leads and runs (a stopped one may still think it leads)."""
        return next((s for s in self.leases if s.machine is not None and s.machine.is_leader and s.proc.alive
                     and not s.proc.paused), None)

    def _liveness_settled(self) -> bool:
        """The leases leader counts a node alive exactly when its announcer runs and can publish heartbeats
        (so no expiry and no comeback is pending), and the leader itself reads the heartbeats."""
        s = self._leader()
        if s is None or s.machine is None:
            return True
        if not self.redis.usable(s.proc):
            return False
        alive = set(s.machine.tracker.alive())
        for node, a in self.announcers.items():
            beats = a.proc.alive and not a.proc.paused and a.machine is not None and self.redis.usable(a.proc)
            if beats != (node in alive):
                return False
        return True

    def _renews(self, p: Proc) -> bool:
        return p.alive and not p.paused and not self.api.outage and self.lan.reach(p.node, CTL)

    def _elections_settled(self) -> bool:
        return self._elections()[0]

    def _election_groups(self) -> list[tuple[str, list[tuple[Proc, Elector | None]]]]:
        return [("l2lb-leases", [(s.proc, s.elector) for s in self.leases]),
                ("l2lb-allocator", [(a.proc, a.elector) for a in self.allocators])]

    def _elections(self, age: float = 0.0) -> tuple[bool, float]:
        """(settled, real time by which an elided stretch must end). Each leader election is settled when its
        holder leads and renews, or -- while nobody renews the Lease -- until a timer of client-go's comes due:
        a candidate that reaches the API server and has seen the stale record takes over ``lease_duration``
        after it first saw it, a holder cut off from the API server steps down ``renew_deadline`` after its
        last renewal. Those timers run through an elided stretch as they would have (``age``: what was just
        elided is aged into them; see Elector.age), so an elided stretch ends before the first comes due.
        A process that thinks it leads while another holds the Lease, a candidate that has not seen the stale
        record yet, a free Lease: something changes at their next try, the stretch ends before it. Unsettled:
        a request of theirs on its way, a renewal request on its way that fails."""
        bound = float("inf")
        now = self.kernel.real()
        settled = True
        for name, members in self._election_groups():
            lease = self.api.leases.get(name)
            holder = lease.holder if lease is not None else ""
            record = (holder, lease.version if lease is not None else 0)
            renewing = ""
            for p, e in members:
                me = f"{p.node}/{p.name}/{p.incarnation}"
                if me == holder and e is not None and e.leader and p.alive and self._renews(p):
                    renewing = me
            for p, e in members:
                if e is None or not p.alive or p.paused:
                    continue  # (a stopped one perceives the stretch on SIGCONT: Proc.resume)
                me = f"{p.node}/{p.name}/{p.incarnation}"
                reaches = self._renews(p)
                if e.leader:
                    if me == renewing:
                        if e.failing_until > self.kernel.now:
                            settled = False
                        continue
                    if age:
                        e.age(age)
                    if reaches:
                        bound, settled = self._at_next_try(e, bound, settled)  # another holds the Lease: it finds out
                    else:
                        bound = min(bound, now + e.step_down_at() - p.mono())
                    continue
                if renewing:
                    continue
                if age:
                    e.age(age)
                if not reaches:
                    continue  # its tries fail until the API server is back (an outside event)
                if not holder or not e.has_seen(record):
                    bound, settled = self._at_next_try(e, bound, settled)  # it takes the Lease / sees the record then
                else:
                    bound = min(bound, now + e.takeover_at() - p.mono())
        return settled, bound

    def _at_next_try(self, e: Elector, bound: float, settled: bool) -> tuple[float, bool]:
        """Something changes at ``e``'s next try: the elided stretch ends before it (unsettled: a request is on its
        way)."""
        t = e.next_try()
        if t is None:
            return bound, False
        return min(bound, t + self.kernel.elided), settled

    def _sentinel_settled(self) -> bool:
        r = self.redis
        if not r.sentinel_nodes:
            return True
        m = r.master
        alive = [n for n in r.sentinel_nodes if self.lan.link_up.get(n, False)]
        down = [n for n in alive if not (m.up() and self.lan.reach(n, m.node))]
        if len(down) < len(r.sentinel_nodes) // 2 + 1:
            return r._down_since is None
        return not any(s is not m and s.up() and any(self.lan.reach(n, s.node) for n in down) for s in r.servers)

    def peer_frame(self, src: str, frame: bytes) -> None:
        """Multicast on the LAN: every other node's announcer the segment reaches, after the link delay
        (loss and duplication of an active message fault apply; a paused receiver reads it on SIGCONT)."""
        self.counters["peer_frames"] += 1
        lan = self.lan
        if not lan.faulty:
            # one event delivers the frame to every receiver (one delay draw: a multicast on one segment);
            # each receiver's incarnation as at the send (a restarted process never gets it), held if paused
            to = [(a, a.proc.incarnation) for node, a in self.announcers.items()
                  if node != src and a.proc.alive and lan.reach(src, node)]
            if to:
                self.kernel.after(lan.base_latency + self.kernel.rng.random() * lan.jitter,
                                  lambda: self._frame_arrives(to, frame))
            return
        for node, a in self.announcers.items():
            if node == src or not a.proc.alive:
                continue
            d = self.lan.delay(src, node)
            if d is None:
                continue
            a.proc.deliver(lambda a=a: a.peer_frame(frame), d)  # type: ignore[misc]
            if self.lan.faulty and self.lan.duplicated(src, node):
                a.proc.deliver(lambda a=a: a.peer_frame(frame), d * 2)  # type: ignore[misc]

    @staticmethod
    def _frame_arrives(to: list[tuple[AnnouncerShell, int]], frame: bytes) -> None:
        for a, inc in to:
            p = a.proc
            if not p.alive or p.incarnation != inc:
                continue
            if p.paused:
                p._held.append(lambda a=a: a.peer_frame(frame))  # type: ignore[misc]
                continue
            a.peer_frame(frame)

    def check_sticky(self, node: str, ips: tuple[str, ...]) -> None:
        """The election is sticky: a VIP stays where it is while its node is healthy. A move away from a
        live, reachable node while nothing is wrong (no fault or its aftermath in progress, the Service and
        the policy unchanged) is a violation (seen once in the real-cluster e2e: a VIP moved back ~35 s
        after an announcer restart)."""
        k = self.kernel
        if k.real() < self.busy_until or not self._answers_client(node) or not self.lan.link_up[node]:
            return
        still = [ip for ip in ips if ip in self.oracle.assigned]
        if still:
            self.oracle.violations.append(Violation(k.real(), "unstable_holder",
                                                    f"{', '.join(still)} moved away from healthy {node} "
                                                    "with no fault in progress"))

    def _check_duplicates(self) -> None:
        seen: dict[str, str] = {}
        for key, obj in sorted(self.api.services.items()):
            for ing in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                ip = ing.get("ip")
                if ip in seen:
                    self.oracle.violations.append(Violation(self.kernel.real(), "duplicate_ip",
                                                            f"{ip} held by {seen[ip]} and {key}"))
                seen[ip] = key

    # -- faults --------------------------------------------------------------------------------------
    def procs_on(self, node: str) -> list[AnnouncerShell | LeasesShell | AllocShell]:
        out: list[AnnouncerShell | LeasesShell | AllocShell] = [self.announcers[node]]
        out += [s for s in self.leases if s.node == node]
        out += [s for s in self.allocators if s.node == node]
        return out

    def redis_on(self, node: str) -> list[Server]:
        return [s for s in self.redis.servers if s.node == node]

    def _set_link(self, node: str, up: bool) -> None:
        self.lan.set_link(node, up)
        self.announcers[node].link_changed()
        self.oracle.reachability_changed(self.kernel.real())
        self.redis.kick()

    def resolve(self, target: str) -> str:
        """A fault's target: a node name, or what a node holds right now (scenarios):
        ``@redis-master``, ``@leases-leader``, ``@allocator-leader``, ``@holder`` (a node answering VIPs
        that runs nothing else)."""
        if target in self.announcers:
            return target
        names = self.cfg.node_names()
        if target == "@redis-master":
            return self.redis.master.node
        if target == "@leases-leader":
            return next((s.node for s in self.leases if s.machine is not None and s.machine.is_leader), names[0])
        if target == "@allocator-leader":
            return next((a.node for a in self.allocators if a.core is not None and a.core.leader), names[0])
        if target == "@holder":
            busy = {s.node for s in self.redis.servers} | {s.node for s in self.leases} | {
                a.node for a in self.allocators}
            return next((n for n in names if n not in busy and self.announcers[n].answering), "")
        return names[0]

    def apply(self, f: Fault) -> None:
        k = self.kernel
        node = self.resolve(f.target)
        if not node:
            self.log(f"SKIPPED {f.text()}: no such node now")
            self.counters["faults_skipped"] += 1
            return
        self.fault_log.append((k.real(), f.text()))
        self.log(f"FAULT {f.text()}")
        self.counters[f"fault_{f.kind}"] += 1
        back = max(f.duration, 0.05)
        self.busy_until = max(self.busy_until, k.real() + back + 5.0)  # the fault, and recovering from it
        self.last_change = k.real()
        later = self._later
        if f.kind == "node_death":
            for s in self.procs_on(node):
                s.die()
            for r in self.redis_on(node):
                r.proc.kill()
            self._set_link(node, False)

            def revive() -> None:
                self._set_link(node, True)
                for r in self.redis_on(node):
                    self.redis.rejoin(r)
                for s in self.procs_on(node):
                    s.restart()

            later(back, revive)
        elif f.kind == "announcer_kill":
            a = self.announcers[node]
            a.die()
            later(back, a.restart)
        elif f.kind == "pause":
            procs = [s.proc for s in self.procs_on(node)] + [r.proc for r in self.redis_on(node)]
            p = procs[int(f.extra * 1000) % len(procs)] if f.extra else procs[0]
            p.pause()
            self.oracle.reachability_changed(k.real())

            def resume() -> None:
                p.resume()
                self.oracle.reachability_changed(k.real())
                self.redis.kick()

            later(back, resume)
        elif f.kind == "link_down":
            self._set_link(node, False)
            later(back, lambda: self._set_link(node, True))
        elif f.kind == "partition":
            self.lan.partition([node])
            self.oracle.reachability_changed(k.real())
            self.redis.kick()

            def heal() -> None:
                self.lan.heal()
                self.oracle.reachability_changed(k.real())
                self.redis.kick()

            later(back, heal)
        elif f.kind == "redis_restart":
            m = self.redis.master
            m.persistent = bool(f.extra)
            m.proc.kill()  # SIGKILL; it starts again after `back` (Redis.restart on the outside clock)
            later(back, lambda: self.redis.rejoin(m))
        elif f.kind == "redis_stop":
            m = self.redis.master
            m.proc.pause()

            def cont() -> None:
                m.proc.resume()
                self.redis.kick()

            later(back, cont)
        elif f.kind == "leases_kill":
            self._kill_leader(self.leases, back)
        elif f.kind == "allocator_kill":
            self._kill_leader(self.allocators, back)
        elif f.kind == "msg_faults":
            self.lan.set_faults(node, loss=min(f.extra, 0.99))
            later(back, lambda: self.lan.set_faults(node))
        elif f.kind == "clock_step":
            for s in self.procs_on(node):
                s.proc.wall_offset += f.extra
            # (peers judge a stepped-back clock's frames stale for relearn_s: their machines say so, see steady)
        elif f.kind == "api_outage":
            self.api.outage = True
            later(back, self.api.recover)
        elif f.kind == "api_throttle":
            self.api.throttle = min(f.extra, 1.0)

            def unthrottle() -> None:
                self.api.throttle = 0.0

            later(back, unthrottle)
        elif f.kind == "watch_expired":
            self.api.expire_watches()
        elif f.kind == "create_service":
            self.api.put_service(service_obj(int(f.extra)))
        elif f.kind == "churn":
            if self.api.outage:  # the user's kubectl cannot reach the API server either: it retries
                later(1.0, lambda: self.apply(f))
                return
            i = int(f.extra) % (self.cfg.services + 4)
            key = f"apps/svc-{i}"
            if key in self.api.services and i >= 1:
                self.api.delete_service(key)
            else:
                self.api.put_service(service_obj(i))

    def _kill_leader(self, shells: list[LeasesShell] | list[AllocShell], back: float) -> None:
        for s in shells:
            if s.proc.alive:
                s.die()
                self._later(back, s.restart)
                return

    # -- running -------------------------------------------------------------------------------------
    def _later(self, dt: float, fn: Callable[[], None]) -> None:
        """An outside event ``dt`` seconds of real simulated time from now (elided stretches count)."""
        self._outside_seq += 1
        heapq.heappush(self._outside, (self.kernel.real() + dt, self._outside_seq, fn))

    def _run_to(self, end: float) -> None:
        """Simulate up to real time ``end``: the kernel's events and, at their times, the outside events."""
        k = self.kernel
        failed: Callable[[], bool] = lambda: bool(self.oracle.violations)  # noqa: E731
        while not failed():
            nxt = self._outside[0][0] if self._outside else end
            self.bound_real = target = min(nxt, end)
            k.run_until(lambda target=target: target - k.elided, stop_on=self.oracle.violations)  # type: ignore[misc]
            if failed() or not self._outside or nxt > end:
                return
            _, _, fn = heapq.heappop(self._outside)
            fn()
            self.last_change = k.real()

    def run(self, faults: list[Fault], seconds: float, *, settle: float = 20.0) -> Report:
        """Simulate ``seconds`` (real simulated time: elided steady stretches count) with ``faults``
        applied at their times, then ``settle`` seconds without faults and the convergence check."""
        k = self.kernel
        self.start()
        for f in sorted(faults, key=lambda f: f.t):
            if f.t < seconds:
                self._outside_seq += 1
                heapq.heappush(self._outside, (f.t, self._outside_seq, lambda f=f: self.apply(f)))  # type: ignore[misc]
        self._run_to(seconds)
        # what is left outside are the ends of the faults (a node back, a link up): they run in the final check
        if not self.oracle.violations:
            self._final_check(settle)
        self.oracle.close(k.real())
        self.counters.update(api_429=self.api.throttled, api_409=self.api.conflicts, api_410=self.api.gone)
        return Report(
            seed=self.seed, sim_seconds=k.real(), steps=k.steps, faults=list(faults),
            violations=list(self.oracle.violations),
            outages=[(e.vip, e.start + 0.0, e.seconds) for e in self.oracle.outages],
            duals=[(e.vip, e.start, e.seconds) for e in self.oracle.duals],
            counters=dict(self.counters),
        )

    def _final_check(self, settle: float) -> None:
        """After the last fault has healed: every Service has an IP and each IP one answering node."""
        k = self.kernel
        self._run_to(max(k.real(), self.busy_until) + settle)  # busy_until: 5 s after the last fault's end
        now = k.real()
        for key, obj in sorted(self.api.services.items()):
            ips = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if not ips:
                self.oracle.violations.append(Violation(now, "converge", f"{key} has no IP {settle:.0f} s after "
                                                                         "the faults"))
                continue
            for ing in ips:
                st = self.oracle.vips.get(ing["ip"])
                n = len(st.visible) if st else 0
                if n != 1:
                    self.oracle.violations.append(Violation(now, "converge", f"{ing['ip']} of {key} answered by "
                                                                             f"{n} nodes {settle:.0f} s after the "
                                                                             "faults"))
