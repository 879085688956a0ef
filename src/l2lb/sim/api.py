"""A simulated Kubernetes API server (as far as l2lb's control plane uses it), leader election on its
Leases (client-go's algorithm), and the allocator around the pure :class:`~l2lb.core.allocator.Allocator`.

The API server lives on the control-plane host (``CTL``): a process on a node reaches it when the LAN connects
the two and no API outage is on. Requests take one round trip; during an outage they fail after ``timeout``.
While the server throttles (API Priority and Fairness), a share of requests is answered 429 with
``Retry-After``: the client waits and sends it again, as l2lb's KubeClient does, and the request fails only
when that outlasts its deadline. A compaction (``expire_watches``) answers every watch 410 Gone: the informers
list again. Lease writes are optimistic (409 Conflict on a stale ``resourceVersion``): two candidates that
both find the Lease expired race, and one of them loses. Watches deliver every change to every watcher after
the network delay. A watcher that misses a change (its node unreachable, an API outage) re-lists when it can
again, as an informer does: it is sent every object as it is then, and a deletion for each object it knew that
is gone.

The allocator model does what ``services/allocator`` does with the pure allocator: on becoming
leader it restores every Service's IPs from ``status.loadBalancer.ingress`` before it allocates
anything new, publishes a snapshot, then reconciles each changed Service: allocate, write the
status, publish the Allocation (every decision is the core's; the I/O is simulated).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from l2lb.core.allocator import Allocator
from l2lb.core.messages import Allocation, AllocationSnapshot, PortSpec, SnapshotRequest
from l2lb.core.models import AllocationResult, ParseError, ServiceRequest
from l2lb.core.parse import parse_pool, parse_service, status_ips
from l2lb.sim.kernel import Handle, Kernel, Proc
from l2lb.sim.net import CTL, Lan
from l2lb.sim.redis import Redis

__all__ = ["Api", "Elector", "SimAllocator"]

Obj = dict[str, Any]

RETRY_AFTER = 1.0  # seconds a 429 asks the client to wait (kube-apiserver's default Retry-After is 1)


@dataclass
class _Watch:
    proc: Proc
    fn: Callable[[str, Obj | None], None]
    known: set[str] = field(default_factory=set)  # keys this watcher was last sent as existing
    behind: bool = False  # it missed a change: re-list when it can
    polling: bool = False
    last_due: float = 0.0  # when its latest event arrives (events on one connection arrive in order)


@dataclass
class _Lease:
    holder: str = ""
    transitions: int = 0
    version: int = 0  # bumped on every write: what a candidate watches to see the holder is alive


class Api:
    def __init__(self, kernel: Kernel, lan: Lan, *, timeout: float = 1.0):
        self.kernel = kernel
        self.lan = lan
        self.timeout = timeout
        self.outage = False
        self.services: dict[str, Obj] = {}
        self.pools: dict[str, Obj] = {}
        self.leases: dict[str, _Lease] = {}
        self.watchers: list[_Watch] = []
        self.writes = 0
        self.changes = 0  # every create, update, deletion or status write of a Service
        self.throttle = 0.0  # share of requests answered 429 (an api_throttle fault)
        self.throttled = 0  # 429s answered
        self.conflicts = 0  # 409s answered (Lease writes on a stale resourceVersion)
        self.gone = 0  # watches answered 410 Gone

    def _rtt(self, p: Proc) -> float | None:
        if self.outage or not p.alive:
            return None
        return self.lan.rtt(p.node, CTL, self.timeout)

    def request(self, p: Proc, fn: Callable[[], Any], done: Callable[[bool, Any], None],
                deadline: float | None = None) -> bool:
        """One request; False when it is certain to fail (``done(False, None)`` at the deadline)."""
        now = self.kernel.now
        if deadline is None:
            deadline = now + self.timeout
        rtt = self._rtt(p)
        if rtt is None:
            p.after(max(0.0, deadline - now), lambda: done(False, None))
            return False
        if self.throttle and self.kernel.rng.random() < self.throttle:
            # 429 Too Many Requests: the client sends it again after Retry-After, within its deadline
            self.throttled += 1
            if now + rtt + RETRY_AFTER >= deadline:
                p.after(max(rtt, deadline - now), lambda: done(False, None))
                return False

            def again() -> None:
                self.request(p, fn, done, deadline)

            p.after(rtt + RETRY_AFTER, again)
            return True
        # the server applies the request half-way through the round trip
        res: list[Any] = []

        def at_server() -> None:
            if self.outage:
                return
            res.append(fn())

        self.kernel.after(rtt / 2, at_server)
        p.after(rtt, lambda: done(bool(res), res[0] if res else None))
        return True

    # -- Services ----------------------------------------------------------------------------------
    def put_service(self, obj: Obj) -> None:
        """A user's create/update (kubectl): always succeeds (the user retries until it does)."""
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        old = self.services.get(key)
        if old is not None:
            obj = {**obj, "status": old.get("status", {})}
        self.services[key] = obj
        self.changes += 1
        self._notify(key, obj)

    def delete_service(self, key: str) -> None:
        if self.services.pop(key, None) is not None:
            self.changes += 1
            self._notify(key, None)

    def write_status(self, key: str, ips: list[str]) -> bool:
        obj = self.services.get(key)
        if obj is None:
            return False
        ingress = [{"ip": ip, "ipMode": "VIP"} for ip in ips]
        if (obj.get("status") or {}).get("loadBalancer", {}).get("ingress") == ingress:
            return True
        new = copy.deepcopy(obj)
        new["status"] = {"loadBalancer": {"ingress": ingress} if ingress else {}}
        self.services[key] = new
        self.writes += 1
        self.changes += 1
        self._notify(key, new)
        return True

    def watch(self, p: Proc, fn: Callable[[str, Obj | None], None]) -> None:
        self.watchers.append(_Watch(p, fn))

    def unwatch(self, p: Proc) -> None:
        self.watchers = [w for w in self.watchers if w.proc is not p]

    def _send(self, w: _Watch, key: str, obj: Obj | None, d: float) -> None:
        if obj is None:
            w.known.discard(key)
        else:
            w.known.add(key)
        # one connection per watch: an event delayed by a retransmission holds back the ones after it
        due = max(self.kernel.now + d, w.last_due)
        w.last_due = due
        w.proc.deliver(lambda: w.fn(key, obj), due - self.kernel.now)

    def _notify(self, key: str, obj: Obj | None) -> None:
        for w in self.watchers:
            d = None if self.outage else self.lan.stream_delay(CTL, w.proc.node, self.timeout)
            if d is not None and not w.behind:
                self._send(w, key, obj, d)
            else:
                self._fell_behind(w)

    def _fell_behind(self, w: _Watch) -> None:
        w.behind = True
        if not w.polling:
            w.polling = True
            self.kernel.after(0.5, lambda: self._relist(w))

    def _relist(self, w: _Watch) -> None:
        """The watcher's informer lists again once it reaches the API server: every object as it is now,
        and a deletion for every object it knew that is gone."""
        w.polling = False
        if w not in self.watchers:
            return
        d = None if self.outage else self.lan.stream_delay(CTL, w.proc.node, self.timeout)
        if d is None:
            self._fell_behind(w)
            return
        w.behind = False
        for key in sorted(w.known - set(self.services)):
            self._send(w, key, None, d)
        for key, obj in sorted(self.services.items()):
            self._send(w, key, obj, d)

    def expire_watches(self) -> None:
        """The server compacted its history past every watch (410 Gone): each informer lists again."""
        for w in self.watchers:
            self.gone += 1
            self._fell_behind(w)

    def recover(self) -> None:
        """The outage ends: every watch is re-established with a fresh list (what an informer does after
        its watch broke: list, then watch again)."""
        self.outage = False
        for w in self.watchers:
            self._relist(w)

    def assigned_ips(self) -> set[str]:
        return {ip for obj in self.services.values() for ip in status_ips(obj)}


class Elector:
    """client-go's leader election on one Lease, per candidate process, as l2lb's LeaderElector does it: the
    leader renews with a PUT from its last write (fast path); otherwise a GET, then -- when the Lease is ours,
    free, or expired by our clock -- a PUT with the resourceVersion read (409 when someone wrote in between)."""

    def __init__(self, api: Api, proc: Proc, name: str, on_change: Callable[[bool, int], None], *,
                 lease_duration: float = 6.0, renew_deadline: float = 4.0, retry: float = 2.0):
        self.api, self.proc, self.name, self.on_change = api, proc, name, on_change
        self.lease_duration, self.renew_deadline, self.retry = lease_duration, renew_deadline, retry
        self.leader = False
        self.term = 0
        self._seen: tuple[str, int] | None = None  # (holder, version) last observed
        self._seen_at = 0.0
        self._renewed_at = 0.0
        self._wrote: int | None = None  # the version of our last successful write
        self.failing_until = float("-inf")  # kernel time at which a request that cannot succeed fails
        self._next: Handle | None = None  # the next try
        self.proc.after(0.0, self._try)

    def _request(self, fn: Callable[[], Any], done: Callable[[bool, Any], None]) -> None:
        if not self.api.request(self.proc, fn, done):
            self.failing_until = self.api.kernel.now + self.api.timeout

    def _me(self) -> str:
        return f"{self.proc.node}/{self.proc.name}/{self.proc.incarnation}"

    # -- for the simulator's elision (World._elections): client-go's timers on this process's clock
    def has_seen(self, record: tuple[str, int]) -> bool:
        """The Lease record (holder, version) is the one this candidate last read."""
        return self._seen == record

    def takeover_at(self) -> float:
        """When the record it last read counts as expired (its clock): its next try after that takes over."""
        return self._seen_at + self.lease_duration

    def step_down_at(self) -> float:
        """When a leader that cannot renew steps down at its next failed try (its clock)."""
        return self._renewed_at + self.renew_deadline

    def next_try(self) -> float | None:
        """Kernel time of its next try (None: a request is on its way)."""
        h = self._next
        return h.t if h is not None and not h.cancelled and h.t >= self.api.kernel.now else None

    def age(self, dt: float) -> None:
        """``dt`` elided while nobody renewed the Lease: the record it read and its last renewal are that much
        older, and its tries went on every retry period through it (a running process perceives no elided
        stretch; these timers would have run through it): the next try comes where that grid puts it."""
        self._seen_at -= dt
        self._renewed_at -= dt
        h = self._next
        if h is not None and not h.cancelled and h.t >= self.api.kernel.now:
            h.cancel()
            self._next = self.proc.after((h.t - self.api.kernel.now - dt) % self._interval(), self._try)

    def _put(self, expect: int) -> tuple[int, int] | None:
        """At the server: take or renew the Lease if it is still at ``expect`` (else 409: None)."""
        lease = self.api.leases.setdefault(self.name, _Lease())
        if lease.version != expect:
            self.api.conflicts += 1
            return None
        if lease.holder != self._me():
            lease.holder = self._me()
            lease.transitions += 1
        lease.version += 1
        return lease.transitions, lease.version

    def _try(self) -> None:
        if self.leader and self._wrote is not None:
            expect = self._wrote

            def renewed(ok: bool, res: Any) -> None:
                if ok and res is not None:
                    self._won(res)
                elif ok:
                    self._get()  # 409: someone wrote the Lease; read it (the adapter falls back the same way)
                else:
                    self._failed()

            self._request(lambda: self._put(expect), renewed)
            return
        self._get()

    def _get(self) -> None:
        def read() -> tuple[str, int]:
            lease = self.api.leases.setdefault(self.name, _Lease())
            return lease.holder, lease.version

        def got(ok: bool, res: Any) -> None:
            if not ok:
                self._failed()
                return
            holder, version = res
            now = self.proc.mono()
            if res != self._seen:
                self._seen, self._seen_at = res, now
            # expired as *this candidate* observed it (its own clock, since it first saw that record)
            if holder and holder != self._me() and now - self._seen_at < self.lease_duration:
                self._wrote = None
                if self.leader:
                    self._lose()
                self._again()
                return

            def put(ok: bool, res: Any) -> None:
                if ok and res is not None:
                    self._won(res)
                elif ok:  # 409: another candidate won the race
                    self._wrote = None
                    if self.leader:
                        self._lose()
                    self._again()
                else:
                    self._failed()

            self._request(lambda: self._put(version), put)

        self._request(read, got)

    def _won(self, res: tuple[int, int]) -> None:
        term, version = res
        now = self.proc.mono()
        self._wrote = version
        self._seen, self._seen_at = (self._me(), version), now
        self._renewed_at = now
        if not self.leader:
            self.leader, self.term = True, term
            self.on_change(True, term)
        self._again()

    def _failed(self) -> None:
        if self.leader and self.proc.mono() - self._renewed_at >= self.renew_deadline:
            self._wrote = None
            self._lose()
        self._again()

    def _again(self) -> None:
        self._next = self.proc.after(self._interval(), self._try)

    def _interval(self) -> float:
        return self.retry if not self.leader else self.retry / 2

    def _lose(self) -> None:
        self.leader = False
        self.on_change(False, self.term)


def allocation_of(alloc: Allocator, key: str, req: ServiceRequest | None, res: AllocationResult | None,
                  term: int) -> Allocation:
    ns, _, name = key.partition("/")
    if req is None or res is None or not res.ips:
        return Allocation(key=key, namespace=ns, name=name, uid="", generation=0, seq=0, term=term, deleted=True)
    pool_labels = {p: dict(pool.labels) for p in sorted(set(res.pools.values())) if (pool := alloc.pool(p))}
    return Allocation(key=key, namespace=ns, name=name, uid=req.uid, generation=req.generation, seq=0, term=term,
                      ips=res.ips, external_ips=req.external_ips, ports=tuple(PortSpec(p, n) for p, n in req.ports),
                      external_traffic_policy=req.external_traffic_policy, labels=dict(req.labels),
                      ip_pools=dict(res.pools), pool_labels=pool_labels,
                      load_balancer_class=req.load_balancer_class)


@dataclass(eq=False)
class SimAllocator:
    proc: Proc
    api: Api
    redis: Redis
    stream: str
    snapshot_key: str
    leader: bool = False
    term: int = 0
    seq: int = 0
    alloc: Allocator = field(default_factory=Allocator)
    published: dict[str, Allocation] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    _busy: bool = False
    outstanding: int = 0  # requests (status writes, publishes) and retries not finished: see World.steady

    def settled(self) -> bool:
        """Nothing of this allocator is on its way (a request, a retry, a reconcile of dirty Services)."""
        return not self.leader or (not self.outstanding and not self.dirty)

    def start(self, control_stream: str) -> None:
        self.api.watch(self.proc, self._on_service)
        self.redis.subscribe(self.proc, control_stream, f"snapshots:allocations:{self.proc.name}",
                             self._on_control, self._resynced)

    def _on_control(self, e: Any) -> None:
        msg = e.payload
        if self.leader and isinstance(msg, SnapshotRequest) and msg.topic == "allocations":
            self._snapshot()

    def _resynced(self) -> None:
        """Redis lost its data: the stored snapshot and the stream are gone; publish them again."""
        if self.leader:
            self._snapshot()

    def on_leadership(self, leader: bool, term: int) -> None:
        self.leader, self.term = leader, term
        if leader:
            self._later(0.0, self._takeover)

    def _later(self, dt: float, fn: Callable[[], None]) -> None:
        self.outstanding += 1

        def run() -> None:
            self.outstanding -= 1
            fn()

        self.proc.after(dt, run)

    def _on_service(self, key: str, _obj: Obj | None) -> None:
        self.dirty.add(key)
        if self.leader and not self._busy:
            self._later(0.0, self._reconcile)

    def _request(self, obj: Obj) -> ServiceRequest | None:
        try:
            return parse_service(obj)
        except ParseError:
            return None

    def _takeover(self) -> None:
        if not self.leader:
            return
        self.alloc = Allocator()
        for pobj in sorted(self.api.pools.values(), key=lambda o: str(o["metadata"]["name"])):
            self.alloc.upsert_pool(parse_pool(pobj))
        items = []
        for _key, obj in sorted(self.api.services.items()):
            req = self._request(obj)
            if req is not None and req.handled:
                items.append((req, status_ips(obj)))
        results = self.alloc.restore(items)
        self.published.clear()
        self.dirty.clear()
        for r in results:
            self._apply(r.key, r)
        self._snapshot()

    def _snapshot(self) -> None:
        self.seq += 1
        snap = AllocationSnapshot(term=self.term, seq=self.seq,
                                  allocations=tuple(self.published[k] for k in sorted(self.published)))
        self.redis.xadd(self.proc, self.stream, snap)
        self.redis.set_key(self.proc, self.snapshot_key, snap)

    def _reconcile(self) -> None:
        if not self.leader:
            return
        keys, self.dirty = sorted(self.dirty), set()
        released = False
        for key in keys:
            obj = self.api.services.get(key)
            if obj is None:
                if self.alloc.release(key):
                    released = True
                self._publish(allocation_of(self.alloc, key, None, None, self.term))
                continue
            req = self._request(obj)
            if req is None or (not req.handled and self.alloc.request(key) is None):
                continue
            res = self.alloc.allocate(req, status_ips(obj))
            released = released or bool(res.released)
            self._apply(key, res)
        if released:
            for r in self.alloc.retry():
                self._apply(r.key, r)

    def _apply(self, key: str, res: AllocationResult) -> None:
        req = self.alloc.request(key)
        ips = list(res.ips) if res.ok else []

        def written(ok: bool, _r: Any) -> None:
            self.outstanding -= 1
            # services/allocator retries a failed status write (the Service is dirty again, next round)
            if not ok and self.leader and key in self.api.services:
                self.dirty.add(key)
                self._later(0.5, self._reconcile)

        self.outstanding += 1
        self.api.request(self.proc, lambda: self.api.write_status(key, ips), written)
        self._publish(allocation_of(self.alloc, key, req, res, self.term))

    def _publish(self, a: Allocation) -> None:
        prev = self.published.get(a.key)
        if prev is not None and prev.to_dict() | {"seq": 0, "term": 0} == a.to_dict() | {"seq": 0, "term": 0}:
            return
        if prev is None and a.deleted:
            return
        self.seq += 1
        msg = replace(a, seq=self.seq, term=self.term)
        if msg.deleted:
            self.published.pop(a.key, None)
        else:
            self.published[a.key] = msg
        self._send(msg)

    def _send(self, msg: Allocation) -> None:
        """The bus publish of services/allocator waits until Redis takes the message: sent again until it
        does, while this instance leads and the message is still the latest for its Service."""
        def done(ok: bool, _r: Any) -> None:
            self.outstanding -= 1
            latest = self.published.get(msg.key)
            if not ok and self.leader and (latest is msg or (msg.deleted and latest is None)):
                self._later(0.5, lambda: self._send(msg))

        self.outstanding += 1
        self.redis.xadd(self.proc, self.stream, msg, done)
