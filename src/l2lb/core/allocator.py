"""The LB-IPAM allocator (pure, no I/O).

Memory is O(allocated addresses), never O(pool size): each usable range of a pool keeps only a
*frontier* (every address below it was handed out at least once) and a heap of addresses below the
frontier that were released since; allocation takes the lowest free address of a range. Which Service
uses which address lives in one dict keyed by address key (see :mod:`l2lb.core.models`).

A Service gets what the anchor whose pool serves it would give it (docs/install.md, "Compatibility"):

* the *flavor* of a Service is the kind of that pool: the pool of its first requested IP, else of its
  first IP in status, else the pool it names (``metallb.io/address-pool``), else the first pool that
  would serve it; MetalLB ``IPAddressPool`` -> MetalLB rules, any other kind (Cilium's, l2lb's own) ->
  Cilium >= 1.16 rules;
* Cilium rules: requested IPs are spec.loadBalancerIP plus the annotation, each from whatever pool
  holds it; without requested IPs each wanted family comes from the first pool that has one; what can be
  given is given even when something else cannot (the reason then says what is missing);
* MetalLB rules: spec.loadBalancerIP and the annotation together are refused; at most one requested IP
  per family, all in one pool, of exactly the Service's families; a dual-stack Service takes both
  families from one pool (pools with a serviceAllocation that matches first, by priority); an existing
  set of IPs is kept whole or replaced whole; all or nothing;
* pools overlap -> the later created one (creationTimestamp, then name) is in conflict and neither
  allocates nor holds addresses; a disabled pool keeps existing allocations but hands out no new one;
* an address is shared only by Services with the same sharing key, no (protocol, port) in common and
  the same backends: Cilium rules also want the same namespace unless both allow each other's and, for
  ``externalTrafficPolicy: Local``, equal non-empty pod selectors; MetalLB rules share across
  namespaces and compare the selectors of ``Local`` Services;
* restore adopts every valid existing address (in order of Service creation, so the outcome does
  not depend on arrival order) before anything new is allocated.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from l2lb.core.models import (
    V6,
    AllocationResult,
    Pool,
    PoolEvent,
    PoolUpdate,
    PoolUsage,
    Reason,
    ServiceRequest,
    family_of,
    key_of,
    str_of,
)
from l2lb.core.selectors import service_labels

__all__ = ["Allocator", "incompatibility"]

_FAM = {4: "IPv4", 6: "IPv6"}


def _buggy(k: int) -> bool:
    return k < V6 and (k & 255) in (0, 255)


def _count_residue(lo: int, hi: int, r: int, m: int) -> int:
    """How many x in [lo, hi] have x % m == r."""
    return (hi - r) // m - (lo - 1 - r) // m


class _Range:
    __slots__ = ("buggy", "family", "free", "frontier", "hi", "lo", "pool", "total", "used")

    def __init__(self, pool: str, lo: int, hi: int, avoid_buggy: bool):
        self.pool = pool
        self.lo = lo
        self.hi = hi
        self.family = family_of(lo)
        self.buggy = avoid_buggy and self.family == 4
        self.frontier = lo
        self.free: list[int] = []
        self.used = 0
        n = hi - lo + 1
        if self.buggy:
            n -= _count_residue(lo, hi, 0, 256) + _count_residue(lo, hi, 255, 256)
        self.total = n

    def allowed(self, k: int) -> bool:
        return self.lo <= k <= self.hi and not (self.buggy and _buggy(k))

    def take_lowest(self, used: Mapping[int, object]) -> int | None:
        free = self.free
        while free:
            k = heapq.heappop(free)
            if k not in used:
                return k
        k = self.frontier
        hi = self.hi
        buggy = self.buggy
        while k <= hi:
            if k in used or (buggy and (k & 255) in (0, 255)):
                k += 1
                continue
            self.frontier = k + 1
            return k
        self.frontier = k
        return None

    def peek_lowest(self, used: Mapping[int, object]) -> int | None:
        """The address ``take_lowest`` would return, without taking it."""
        free = self.free
        while free and free[0] in used:
            heapq.heappop(free)
        if free:
            return free[0]
        k = self.frontier
        hi = self.hi
        while k <= hi and (k in used or (self.buggy and (k & 255) in (0, 255))):
            k += 1
        self.frontier = k  # everything skipped is in use (handed out) or never allocatable
        return k if k <= hi else None


class _PoolState:
    __slots__ = ("conflict", "families", "name", "pool", "ranges")

    def __init__(self, pool: Pool, conflict: str | None):
        self.pool = pool
        self.name = pool.name
        self.conflict = conflict
        self.ranges = [_Range(pool.name, lo, hi, pool.avoid_buggy_ips) for lo, hi in pool.ranges()]
        self.families = {r.family for r in self.ranges}


class _Svc:
    __slots__ = ("invalid", "ips", "req", "result")

    def __init__(self, req: ServiceRequest):
        self.req = req
        self.ips: list[int] = []
        self.result: AllocationResult | None = None
        self.invalid: list[str] = []


class _Fail(Exception):
    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class _Want:
    """The families a Service asks for: ``fams`` in order of preference, ``need`` of them required."""

    fams: list[int]
    need: int
    known: bool  # spec.ipFamilies (or clusterIPs) said so; False: guessed from the policy
    prefer: bool  # PreferDualStack


def _allows(svc: ServiceRequest, namespace: str) -> bool:
    return "*" in svc.share_namespaces or namespace in svc.share_namespaces


def _backend(svc: ServiceRequest) -> str:
    """MetalLB's backend key: the pod selector of a ``Local`` Service, nothing for ``Cluster``."""
    if svc.external_traffic_policy != "Local":
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(svc.selector.items()))


def incompatibility(a: ServiceRequest, b: ServiceRequest, *, metallb: bool = False) -> str | None:
    """Why ``a`` may not share an IP with ``b`` (None: they may); ``metallb``: the IP is in a MetalLB pool."""
    if not a.sharing_key or a.sharing_key != b.sharing_key:
        if not a.sharing_key:
            return f"used by {b.key} and this Service has no sharing key"
        return f"used by {b.key}, which has sharing key {b.sharing_key or '<none>'!r}, not {a.sharing_key!r}"
    if not metallb and a.namespace != b.namespace and not (_allows(a, b.namespace) and _allows(b, a.namespace)):
        return (f"used by {b.key} in another namespace; both Services must allow each other's namespace "
                "with lbipam.cilium.io/sharing-cross-namespace")
    common = sorted(set(a.ports) & set(b.ports))
    if common:
        pp = ", ".join(f"{p}/{n}" for p, n in common)
        return f"used by {b.key} with the same port(s) {pp}"
    if metallb:
        if _backend(a) != _backend(b):
            return (f"used by {b.key} with other backends (externalTrafficPolicy {b.external_traffic_policy}"
                    f"{', selector ' + _backend(b) if _backend(b) else ''}); this Service has "
                    f"{a.external_traffic_policy}{', selector ' + _backend(a) if _backend(a) else ''}")
        return None
    if a.external_traffic_policy != b.external_traffic_policy:
        return (f"used by {b.key} with externalTrafficPolicy {b.external_traffic_policy}, "
                f"this Service has {a.external_traffic_policy}")
    if a.external_traffic_policy == "Local":
        if not a.selector or not b.selector:
            return f"used by {b.key} with externalTrafficPolicy Local, and a Service without a pod selector"
        if dict(a.selector) != dict(b.selector):
            return f"used by {b.key} with externalTrafficPolicy Local and a different pod selector"
    return None


def _order_key(req: ServiceRequest) -> tuple[str, str]:
    return (req.created, req.key)


class Allocator:
    """Pools and Service allocations. Not thread-safe; every call is synchronous and cheap.

    Typical use by the allocator service: ``upsert_pool`` for every pool, ``restore`` with every
    Service and the IPs in its status, then ``allocate``/``release`` per Service change and
    ``retry`` after releases or pool changes (pool calls already re-run what they affect).
    """

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}
        self._ps: dict[str, _PoolState] = {}
        self._starts: list[int] = []  # lo of every range of non-conflicting pools, sorted
        self._ranges: list[_Range] = []  # same order
        self._auto_order: list[_PoolState] = []  # non-conflicting, enabled pools in auto-assign order
        # address key -> first user; further users of shared IPs in _more. Plain str values keep
        # these dicts out of the garbage collector's way (100k Services = 100k entries).
        self._used: dict[int, str] = {}
        self._more: dict[int, list[str]] = {}
        self._svcs: dict[str, _Svc] = {}
        self._share: dict[str, set[str]] = {}
        self._selective = False  # some pool selects Services (labels with meta-labels needed)
        self._kinds = (False, False)  # (some MetalLB pool, some other pool)
        self._fam_cache: dict[tuple[str, tuple[int, ...]], list[int]] = {}  # _fast_new: families per shape

    # ------------------------------------------------------------------------------------------
    # pools
    def upsert_pool(self, pool: Pool) -> PoolUpdate:
        old = self._pools.get(pool.name)
        if old == pool:
            return PoolUpdate()
        self._pools[pool.name] = pool
        return self._pools_changed(PoolEvent(pool.name, "added" if old is None else "updated"))

    def remove_pool(self, name: str) -> PoolUpdate:
        if name not in self._pools:
            return PoolUpdate()
        del self._pools[name]
        return self._pools_changed(PoolEvent(name, "removed"))

    def pools(self) -> dict[str, Pool]:
        return dict(self._pools)

    def pool(self, name: str) -> Pool | None:
        return self._pools.get(name)

    def pool_conflict(self, name: str) -> str | None:
        ps = self._ps.get(name)
        return ps.conflict if ps else None

    def pool_usage(self) -> dict[str, PoolUsage]:
        out = {}
        for name, ps in self._ps.items():
            total = sum(r.total for r in ps.ranges)
            used = 0 if ps.conflict else sum(r.used for r in ps.ranges)
            out[name] = PoolUsage(total=total, used=used, available=max(total - used, 0),
                                  disabled=ps.pool.disabled, conflict=ps.conflict is not None,
                                  conflict_message=ps.conflict or "")
        return out

    def _pools_changed(self, first: PoolEvent) -> PoolUpdate:
        before = {n: ps.conflict for n, ps in self._ps.items()}
        self._build_pools()
        events = [first]
        for n, ps in sorted(self._ps.items()):
            was = before.get(n)
            if ps.conflict and ps.conflict != was:
                events.append(PoolEvent(n, "conflict", ps.conflict))
            elif was and not ps.conflict:
                events.append(PoolEvent(n, "conflict_resolved", ""))
        # every Service is re-checked: its current IPs are kept where still valid (same pool
        # range, still selected), everything else is released and allocated again.
        results = self._reconcile({k: list(s.ips) for k, s in self._svcs.items()}, report_all=False)
        return PoolUpdate(tuple(events), tuple(results))

    def _build_pools(self) -> None:
        accepted: list[tuple[int, int, str, str]] = []
        self._ps = {}
        for p in sorted(self._pools.values(), key=lambda p: (p.created, p.name)):
            conflict = None
            exts = sorted((b.first, b.last, b.text) for b in p.blocks)
            if not exts:
                conflict = "Pool has no blocks"
            for i in range(1, len(exts)):
                if exts[i][0] <= exts[i - 1][1]:
                    conflict = f"Pool's block '{exts[i][2]}' overlaps its own block '{exts[i - 1][2]}'"
                    break
            if conflict is None:
                for lo, hi, text in exts:
                    for alo, ahi, aname, atext in accepted:
                        if lo <= ahi and alo <= hi:
                            conflict = (f"Pool conflicts since CIDR '{text}' overlaps CIDR '{atext}' "
                                        f"from IP Pool '{aname}'")
                            break
                    if conflict:
                        break
            if conflict is None:
                accepted.extend((lo, hi, p.name, text) for lo, hi, text in exts)
            self._ps[p.name] = _PoolState(p, conflict)
        self._selective = any(p.service_selector is not None or p.allocation is not None
                              for p in self._pools.values())
        self._kinds = (any(p.metallb for p in self._pools.values()),
                       any(not p.metallb for p in self._pools.values()))
        ranges = sorted((r for ps in self._ps.values() if ps.conflict is None for r in ps.ranges),
                        key=lambda r: r.lo)
        self._ranges = ranges
        self._starts = [r.lo for r in ranges]

        def auto_key(ps: _PoolState) -> tuple[int, int, str]:
            a = ps.pool.allocation
            if a is None:
                return (2, 0, ps.name)
            return (0, a.priority, ps.name) if a.priority > 0 else (1, 0, ps.name)

        enabled = (ps for ps in self._ps.values() if ps.conflict is None and not ps.pool.disabled)
        self._auto_order = sorted(enabled, key=auto_key)
        # the old ranges are gone: usage is rebuilt by _reconcile from the Services' IPs
        self._used = {}
        self._more = {}

    def _find(self, k: int) -> _Range | None:
        i = bisect_right(self._starts, k) - 1
        if i >= 0:
            r = self._ranges[i]
            if k <= r.hi:
                return r
        return None

    def _pool_of(self, k: int) -> Pool | None:
        """The pool whose blocks contain ``k`` (usable range first, then any pool, conflicting or not)."""
        rng = self._find(k)
        if rng is not None:
            return self._ps[rng.pool].pool
        for ps in self._ps.values():
            if any(b.first <= k <= b.last for b in ps.pool.blocks):
                return ps.pool
        return None

    def _conflicting_pool_of(self, k: int) -> str | None:
        for ps in self._ps.values():
            if ps.conflict and any(b.first <= k <= b.last for b in ps.pool.blocks):
                return ps.name
        return None

    # ------------------------------------------------------------------------------------------
    # services
    def allocate(self, svc: ServiceRequest, existing: Sequence[str] = ()) -> AllocationResult:
        """Allocate (or re-check) one Service. Idempotent: the same request keeps its IPs.

        ``existing``: IPs found in the Service's status, adopted when the allocator does not know
        the Service yet (e.g. it appeared after ``restore``)."""
        st = self._svcs.get(svc.key)
        if not svc.handled:
            return self._drop(svc.key, Reason.NOT_HANDLED,
                              "not handled: not type LoadBalancer or another loadBalancerClass")
        if st is not None and st.req == svc and st.result is not None and st.result.ok:
            return replace(st.result, changed=False, released=(), invalid_existing=())
        if (st is None and not existing and not svc.problems and not svc.requested_ips and not svc.notes
                and not svc.sharing_key and svc.pool is None and not self._selective and not self._kinds[0]):
            fast = self._fast_new(svc)
            if fast is not None:
                return fast
        invalid: list[str] = []
        if st is None:
            st = _Svc(svc)
            keep = self._parse_existing(existing, invalid)
        else:
            keep = list(st.ips)
        old = list(st.ips)
        self._record(st, svc)
        res = self._run(st, keep, old, invalid)
        return res

    def _fast_new(self, svc: ServiceRequest) -> AllocationResult | None:
        """The common case (new Service, nothing requested, no sharing, no selective pools, Cilium rules)
        without the general machinery; same outcome as ``_run``. None: take the general path."""
        shape = (svc.ip_family_policy, svc.ip_families)
        fams = self._fam_cache.get(shape)
        if fams is None:  # a handful of shapes exist: compute each once
            fams = self._fam_cache[shape] = self._want(svc, [], metallb=False).fams
        used = self._used
        key = svc.key
        got: list[tuple[int, _Range]] = []
        for f in fams:
            for ps in self._auto_order:
                if f in ps.families and ps.pool.auto_assign:
                    for rng in ps.ranges:
                        if rng.family == f:
                            k = rng.take_lowest(used)
                            if k is not None:
                                used[k] = key
                                rng.used += 1
                                got.append((k, rng))
                                break
                    else:
                        continue
                    break
        if len(got) < len(fams):  # something missing: undo, let _run explain
            for k, _rng in got:
                self._detach(k, key)
            return None
        if len(got) > 1:
            got.sort(key=lambda t: t[0])
        st = _Svc(svc)
        st.ips = [k for k, _ in got]
        self._svcs[key] = st
        pools = {str_of(k): rng.pool for k, rng in got}
        res = AllocationResult(key, Reason.SATISFIED, "", tuple(pools), pools, True, (), ())
        st.result = res
        return res

    def release(self, key: str) -> list[str]:
        """Forget a Service; returns the IPs it held (an IP still shared stays with the others)."""
        st = self._svcs.pop(key, None)
        if st is None:
            return []
        self._unshare(st)
        ips = [str_of(k) for k in st.ips]
        for k in st.ips:
            self._detach(k, key)
        return ips

    def retry(self) -> list[AllocationResult]:
        """Re-run every Service that is not satisfied (e.g. after a release); returns the results
        that changed."""
        out = []
        for st in sorted(self._svcs.values(), key=lambda s: _order_key(s.req)):
            if st.result is not None and not st.result.ok and st.req.handled:
                before = (st.result.reason, st.result.ips)
                res = self._run(st, list(st.ips), list(st.ips), [])
                if (res.reason, res.ips) != before:
                    out.append(res)
        return out

    def restore(self, services: Iterable[tuple[ServiceRequest, Sequence[str]]]) -> list[AllocationResult]:
        """Adopt existing IPs of many Services, then allocate what is missing.

        Every valid existing IP is adopted before anything new is allocated; contested IPs go to
        the older Service (creationTimestamp, then key), so the outcome does not depend on the
        order of ``services``. Invalid existing IPs are listed in ``invalid_existing``. Returns
        one result per given Service, sorted by key."""
        keep: dict[str, list[int]] = {}
        invalid: dict[str, list[str]] = {}
        given: list[str] = []
        for req, existing in services:
            if req.key not in keep:
                given.append(req.key)
            bad: list[str] = []
            parsed = self._parse_existing(existing, bad)
            st = self._svcs.get(req.key)
            if st is None:
                st = _Svc(req)
            cur = list(st.ips)
            self._record(st, req)
            keep[req.key] = cur + [k for k in parsed if k not in cur]
            invalid[req.key] = bad
        for k, st in self._svcs.items():
            keep.setdefault(k, list(st.ips))
        res = self._reconcile(keep, report_all=True, invalid=invalid)
        by_key = {r.key: r for r in res}
        return [by_key[k] for k in sorted(set(given))]

    def result(self, key: str) -> AllocationResult | None:
        st = self._svcs.get(key)
        return st.result if st else None

    def results(self) -> dict[str, AllocationResult]:
        return {k: st.result for k, st in self._svcs.items() if st.result is not None}

    def request(self, key: str) -> ServiceRequest | None:
        st = self._svcs.get(key)
        return st.req if st else None

    def users_of(self, ip: str) -> tuple[str, ...]:
        try:
            k = key_of(ip)
        except ValueError:
            return ()
        return self._users(k)

    def _users(self, k: int) -> tuple[str, ...]:
        first = self._used.get(k)
        if first is None:
            return ()
        more = self._more.get(k)
        return (first, *more) if more else (first,)

    # ------------------------------------------------------------------------------------------
    # internals: bookkeeping
    def _parse_existing(self, existing: Sequence[str], invalid: list[str]) -> list[int]:
        out: list[int] = []
        for ip in existing:
            try:
                k = key_of(ip)
            except ValueError:
                invalid.append(f"{ip}: not an IP address")
                continue
            if k not in out:
                out.append(k)
        return out

    def _record(self, st: _Svc, req: ServiceRequest) -> None:
        self._unshare(st)
        st.req = req
        self._svcs[req.key] = st
        if req.sharing_key:
            self._share.setdefault(req.sharing_key, set()).add(req.key)

    def _unshare(self, st: _Svc) -> None:
        sk = st.req.sharing_key
        if sk and sk in self._share:
            s = self._share[sk]
            s.discard(st.req.key)
            if not s:
                del self._share[sk]

    def _drop(self, key: str, reason: Reason, message: str) -> AllocationResult:
        released = self.release(key)
        return AllocationResult(key, reason, message, changed=bool(released), released=tuple(released))

    def _attach(self, k: int, key: str, rng: _Range) -> None:
        if k not in self._used:
            self._used[k] = key
            rng.used += 1
        else:
            self._more.setdefault(k, []).append(key)

    def _detach(self, k: int, key: str) -> None:
        first = self._used.get(k)
        if first is None:
            return
        more = self._more.get(k)
        if first != key:
            if more and key in more:
                more.remove(key)
                if not more:
                    del self._more[k]
            return
        if more:
            self._used[k] = more.pop(0)
            if not more:
                del self._more[k]
            return
        del self._used[k]
        rng = self._find(k)
        if rng is not None:
            rng.used -= 1
            if k < rng.frontier:
                heapq.heappush(rng.free, k)

    def _reconcile(self, keep: dict[str, list[int]], *, report_all: bool,
                   invalid: Mapping[str, list[str]] | None = None) -> list[AllocationResult]:
        """Re-run every Service: phase 1 adopts valid kept IPs (oldest Service first), phase 2
        allocates the rest. Returns results (all, or only the changed ones)."""
        order = sorted(self._svcs.values(), key=lambda s: _order_key(s.req))
        before = {st.req.key: (st.result.reason, st.result.ips) if st.result else None for st in order}
        old_ips = {st.req.key: list(st.ips) for st in order}
        for st in order:
            for k in st.ips:
                self._detach(k, st.req.key)
            st.ips = []
        inv = {k: list(v) for k, v in (invalid or {}).items()}
        for st in order:
            if st.req.handled and not st.req.problems:
                self._adopt(st, keep.get(st.req.key, []), inv.setdefault(st.req.key, []))
        out = []
        for st in order:
            key = st.req.key
            if not st.req.handled:  # not ours: forgotten (its IPs were detached above)
                res = AllocationResult(key, Reason.NOT_HANDLED, "not handled",
                                       released=tuple(str_of(k) for k in old_ips[key]),
                                       changed=bool(old_ips[key]))
                self._unshare(st)
                del self._svcs[key]
            else:
                res = self._run(st, list(st.ips), old_ips[key], inv.get(key, []))
            if report_all or before[key] != (res.reason, res.ips):
                out.append(res)
        return out

    # ------------------------------------------------------------------------------------------
    # internals: what a Service asks for
    def _labels(self, req: ServiceRequest) -> Mapping[str, str]:
        return service_labels(req.namespace, req.name, req.labels) if self._selective else req.labels

    def _flavor(self, req: ServiceRequest, labels: Mapping[str, str], keep: Sequence[int]) -> bool:
        """True: MetalLB rules (the pool serving the Service is an IPAddressPool)."""
        some_metallb, some_other = self._kinds
        if not some_metallb or not some_other:
            return some_metallb
        for k in (*self._keys(req.requested_ips), *keep):
            p = self._pool_of(k)
            if p is not None:
                return p.metallb
        if req.pool is not None and req.pool in self._pools:
            return self._pools[req.pool].metallb
        for ps in self._auto_order:
            if ps.pool.auto_assign and self._mismatch(ps, req, labels) is None:
                return ps.pool.metallb
        return False

    @staticmethod
    def _keys(ips: Sequence[str]) -> list[int]:
        out: list[int] = []
        for ip in ips:
            try:
                k = key_of(ip)
            except ValueError:
                continue  # parse_service reported it as a problem
            if k not in out:
                out.append(k)
        return out

    def _requested(self, req: ServiceRequest, metallb: bool) -> list[int]:
        if not metallb:
            return self._keys(req.requested_ips)  # Cilium: spec.loadBalancerIP and the annotation
        if req.spec_ips and req.annotation_ips:
            raise _Fail(Reason.INVALID_REQUEST,
                        f"spec.loadBalancerIP and annotation {req.annotation_source} are both set; MetalLB "
                        "refuses a Service with both: keep the annotation")
        return self._keys(req.annotation_ips or req.spec_ips)

    def _want(self, req: ServiceRequest, requested: list[int], *, metallb: bool) -> _Want:
        """Families wanted: spec.ipFamilies (or clusterIPs) and ipFamilyPolicy; without families,
        IPv4 (or the requested IPs' families) for single stack, both for dual stack."""
        pol = req.ip_family_policy
        known = bool(req.ip_families)
        listed = list(dict.fromkeys(req.ip_families))
        if pol == "RequireDualStack":
            fams = listed + [f for f in (4, 6) if f not in listed]
            return _Want(fams, 2, known, False)
        if pol == "PreferDualStack":
            if known:  # the cluster's families: Cilium wants each of them, MetalLB is content with one
                return _Want(listed, 1 if metallb else len(listed), True, True)
            return _Want([4, 6], 1, False, True)
        if known:
            # SingleStack: the first family; MetalLB goes by the families the Service has
            fams = listed if metallb else listed[:1]
            return _Want(fams, len(fams), True, False)
        if requested:
            fams = sorted({family_of(k) for k in requested})
            return _Want(fams, len(fams), False, False)
        return _Want([4], 1, False, False)

    # ------------------------------------------------------------------------------------------
    # internals: checks
    def _mismatch(self, ps: _PoolState, req: ServiceRequest, labels: Mapping[str, str]) -> str | None:
        p = ps.pool
        if req.pool is not None and req.pool != p.name:
            return f"the Service asks for pool {req.pool!r}, the IP is in pool {p.name!r}"
        if p.service_selector is not None and not p.service_selector.matches(labels):
            return f"pool {p.name!r} serviceSelector ({p.service_selector}) does not match the Service"
        a = p.allocation
        if a is not None:
            if a.namespaces or a.namespace_selectors:
                nsl = req.namespace_labels or {}
                if req.namespace not in a.namespaces and not any(
                        s.matches(nsl) for s in a.namespace_selectors):
                    return f"pool {p.name!r} serviceAllocation does not include namespace {req.namespace!r}"
            if a.service_selectors and not any(s.matches(labels) for s in a.service_selectors):
                return f"pool {p.name!r} serviceAllocation.serviceSelectors do not match the Service"
        return None

    def _share_problem(self, req: ServiceRequest, k: int, rng: _Range | None = None) -> tuple[Reason, str] | None:
        """Why ``req`` may not use ``k`` next to its current users (by the rules of k's pool)."""
        if k not in self._used:
            return None
        rng = rng or self._find(k)
        metallb = rng is not None and self._ps[rng.pool].pool.metallb
        for u in self._users(k):
            why = incompatibility(req, self._svcs[u].req, metallb=metallb)
            if why is not None:
                # a Service with a sharing key that cannot join is "incompatible", one without is refused
                reason = Reason.ALREADY_ALLOCATED_INCOMPATIBLE if req.sharing_key else Reason.ALREADY_ALLOCATED
                return reason, f"IP {str_of(k)} is {why}"
        return None

    def _locate(self, req: ServiceRequest, labels: Mapping[str, str], k: int,
                new: bool) -> _Range:
        """The range that may give ``k`` to ``req``, or _Fail with the reason."""
        ip = str_of(k)
        rng = self._find(k)
        if rng is None:
            cp = self._conflicting_pool_of(k)
            if cp is not None:
                raise _Fail(Reason.POOL_CONFLICT, f"IP {ip} is in pool {cp!r}, which is in conflict: "
                                                  f"{self._ps[cp].conflict}")
            for ps in self._ps.values():
                if any(b.first <= k <= b.last for b in ps.pool.blocks):
                    # Cilium: the reserved first/last address counts as allocated
                    raise _Fail(Reason.ALREADY_ALLOCATED,
                                f"IP {ip} is reserved in pool {ps.name!r}: the first and last address of a "
                                "CIDR are not handed out while allowFirstLastIPs is No")
            raise _Fail(Reason.NO_POOL, f"no pool contains IP {ip}")
        ps = self._ps[rng.pool]
        if not rng.allowed(k):
            raise _Fail(Reason.NO_POOL, f"IP {ip} ends in .0 or .255 and pool {ps.name!r} has avoidBuggyIPs")
        why = self._mismatch(ps, req, labels)
        if why is not None:
            raise _Fail(Reason.POOL_SELECTOR_MISMATCH, f"IP {ip}: {why}")
        if new and ps.pool.disabled and k not in self._used:
            raise _Fail(Reason.POOL_DISABLED, f"IP {ip} is in pool {ps.name!r}, which is disabled")
        return rng

    def _check_keep(self, req: ServiceRequest, labels: Mapping[str, str], k: int, *, fams: list[int],
                    req_set: set[int], chosen: list[int]) -> tuple[str | None, _Range | None]:
        """Cilium rules: may ``req`` keep the existing IP ``k`` (each IP on its own)?"""
        f = family_of(k)
        if req_set:
            if k not in req_set:
                return "not among the requested IPs", None
        elif f not in fams:
            return f"the Service does not ask for an {_FAM[f]} address", None
        elif any(family_of(c) == f for c in chosen):
            return f"the Service already has an {_FAM[f]} address", None
        try:
            rng = self._locate(req, labels, k, new=False)
        except _Fail as e:
            return e.message, None
        prob = self._share_problem(req, k, rng)
        if prob is not None:
            return prob[1], None
        return None, rng

    def _keep_metallb(self, req: ServiceRequest, labels: Mapping[str, str], keep: list[int], *, want: _Want,
                      requested: list[int], invalid: list[str]) -> list[tuple[int, _Range]]:
        """MetalLB rules: the existing IPs are kept together or not at all."""
        if not keep:
            return []

        def reject(why: str) -> list[tuple[int, _Range]]:
            invalid.extend(f"{str_of(k)}: {why}" for k in keep)
            return []

        fams = [family_of(k) for k in keep]
        if requested and set(keep) != set(requested):
            return reject("the Service asks for " + ", ".join(str_of(k) for k in requested))
        if len(keep) > 2 or len(set(fams)) != len(fams):
            return reject("a Service holds at most one IP per family")
        if want.known or want.need == 2:
            ok = set(fams) == set(want.fams) or (want.prefer and len(keep) == 1 and fams[0] in want.fams)
        else:
            ok = set(fams) <= set(want.fams)
        if not ok:
            return reject(f"the Service's IP families are {'+'.join(_FAM[f] for f in want.fams)}")
        out: list[tuple[int, _Range]] = []
        pools = set()
        for k in keep:
            try:
                rng = self._locate(req, labels, k, new=False)
            except _Fail as e:
                return reject(e.message)
            prob = self._share_problem(req, k, rng)
            if prob is not None:
                return reject(prob[1])
            pools.add(rng.pool)
            out.append((k, rng))
        if len(pools) > 1:
            return reject("the IPs are in different pools (" + ", ".join(sorted(pools)) + ")")
        return out

    # ------------------------------------------------------------------------------------------
    # internals: picking new addresses
    def _adopt(self, st: _Svc, keep: list[int], invalid: list[str]) -> None:
        """Restore, phase 1: take back the Service's valid existing IPs."""
        req = st.req
        labels = service_labels(req.namespace, req.name, req.labels)
        metallb = self._flavor(req, labels, keep)
        try:
            requested = self._requested(req, metallb)
        except _Fail:
            return  # phase 2 reports it
        want = self._want(req, requested, metallb=metallb)
        if metallb:
            for k, r in self._keep_metallb(req, labels, keep, want=want, requested=requested, invalid=invalid):
                self._attach(k, req.key, r)
                st.ips.append(k)
            return
        req_set = set(requested)
        for k in keep:
            why, rng = self._check_keep(req, labels, k, fams=want.fams, req_set=req_set, chosen=st.ips)
            if why is not None or rng is None:
                invalid.append(f"{str_of(k)}: {why}")
            else:
                self._attach(k, req.key, rng)
                st.ips.append(k)

    def _shared_candidates(self, req: ServiceRequest, f: int) -> list[int]:
        """IPs of family ``f`` held by other Services with the same sharing key, oldest holder first."""
        if not req.sharing_key:
            return []
        holders = sorted((self._svcs[o] for o in self._share.get(req.sharing_key, ()) if o != req.key),
                         key=lambda s: _order_key(s.req))
        out: list[int] = []
        for h in holders:
            out.extend(k for k in sorted(h.ips) if family_of(k) == f and k not in out)
        return out

    def _auto(self, req: ServiceRequest, labels: Mapping[str, str], f: int,
              chosen: list[int]) -> tuple[int, _Range]:
        """Cilium rules: one new address of family ``f`` (sharing first, then the first pool with one)."""
        for k in self._shared_candidates(req, f):
            if k in chosen:
                continue
            rng = self._find(k) if k in self._used else None
            if rng is None:
                continue
            ps = self._ps[rng.pool]
            if ps.pool.disabled or self._mismatch(ps, req, labels) is not None:
                continue
            if self._share_problem(req, k, rng) is None:
                return k, rng
        if req.pool is not None and req.pool not in self._pools:
            raise _Fail(Reason.NO_POOL, f"pool {req.pool!r} (metallb.io/address-pool) does not exist")
        matched = False
        for ps in self._auto_order:
            if f not in ps.families:
                continue
            if (self._selective or req.pool is not None) and self._mismatch(ps, req, labels) is not None:
                continue
            if not ps.pool.auto_assign and req.pool != ps.name:
                continue
            matched = True
            for rng in ps.ranges:
                if rng.family == f:
                    got = rng.take_lowest(self._used)
                    if got is not None:
                        return got, rng
        if not matched:
            self._explain_pool(req, labels, f)
            raise _Fail(Reason.NO_POOL, f"no enabled pool with {_FAM[f]} addresses matches this Service")
        raise _Fail(Reason.OUT_OF_IPS, f"every matching pool is out of {_FAM[f]} addresses")

    def _explain_pool(self, req: ServiceRequest, labels: Mapping[str, str], f: int | None) -> None:
        """Raise the reason why the pool the Service names cannot serve it (if it names one)."""
        if req.pool is None:
            return
        ps0 = self._ps.get(req.pool)
        if ps0 is None:
            raise _Fail(Reason.NO_POOL, f"pool {req.pool!r} (metallb.io/address-pool) does not exist")
        if ps0.conflict:
            raise _Fail(Reason.POOL_CONFLICT, f"pool {req.pool!r} is in conflict: {ps0.conflict}")
        if ps0.pool.disabled:
            raise _Fail(Reason.POOL_DISABLED, f"pool {req.pool!r} is disabled")
        if f is None or f in ps0.families:
            why = self._mismatch(ps0, req, labels)
            if why is not None:
                raise _Fail(Reason.POOL_SELECTOR_MISMATCH, why)

    def _first_acceptable(self, req: ServiceRequest, ps: _PoolState, f: int) -> tuple[int, _Range] | None:
        """MetalLB rules: the lowest address of family ``f`` in ``ps`` (blocks in their written order)
        that is free or that ``req`` may share."""
        shared = [k for k in self._shared_candidates(req, f) if k in self._used]
        for rng in ps.ranges:
            if rng.family != f:
                continue
            best = rng.peek_lowest(self._used)
            for k in shared:
                if rng.allowed(k) and (best is None or k < best) and self._share_problem(req, k, rng) is None:
                    best = k
            if best is not None:
                return best, rng
        return None

    def _pick_metallb(self, req: ServiceRequest, ps: _PoolState, want: _Want,
                      ) -> tuple[list[tuple[int, _Range]], bool]:
        """MetalLB rules: what ``ps`` can give: (addresses, complete). Complete: every family needed."""
        got = {f: self._first_acceptable(req, ps, f) for f in want.fams if f in ps.families}
        picked = [c for f in want.fams if (c := got.get(f)) is not None]
        return picked, len(picked) == len(want.fams)

    def _auto_metallb(self, req: ServiceRequest, labels: Mapping[str, str], want: _Want) -> list[tuple[int, _Range]]:
        """MetalLB rules: every wanted family from one pool: the named pool, else pools with a matching
        serviceAllocation (by priority), else the others; a pool with all families wins, PreferDualStack
        settles for the first pool with the first family (then the second)."""
        if req.pool is not None:
            self._explain_pool(req, labels, None)
            tiers = [[self._ps[req.pool]]]
        else:
            pinned = [ps for ps in self._auto_order if ps.pool.allocation is not None]
            others = [ps for ps in self._auto_order if ps.pool.allocation is None]
            tiers = [pinned, others]
        seen_family = False
        for tier in tiers:
            partial: list[list[tuple[int, _Range]]] = []
            for ps in tier:
                if req.pool is None and not ps.pool.auto_assign:
                    continue
                if self._mismatch(ps, req, labels) is not None:
                    continue
                if not ps.families & set(want.fams):
                    continue
                seen_family = seen_family or ps.families >= set(want.fams[:want.need])
                picked, complete = self._pick_metallb(req, ps, want)
                if complete:
                    return picked
                if picked and want.need < len(want.fams):
                    partial.append(picked)
            if partial:
                for f in want.fams:  # the first family first (PreferDualStack)
                    for picked in partial:
                        if any(family_of(k) == f for k, _ in picked):
                            return picked
        fams = "+".join(_FAM[f] for f in want.fams[:max(want.need, 1)])
        if req.pool is not None:
            ps0 = self._ps[req.pool]
            if not ps0.families & set(want.fams) or (want.need == 2 and not ps0.families >= set(want.fams)):
                raise _Fail(Reason.NO_POOL, f"pool {req.pool!r} has no {fams} addresses")
            raise _Fail(Reason.OUT_OF_IPS, f"pool {req.pool!r} is out of {fams} addresses")
        if seen_family:
            raise _Fail(Reason.OUT_OF_IPS, f"every matching pool is out of {fams} addresses"
                        + (" (MetalLB takes both families from one pool)" if want.need == 2 else ""))
        raise _Fail(Reason.NO_POOL, f"no enabled pool with {fams} addresses matches this Service"
                    + (" (MetalLB takes both families from one pool)" if want.need == 2 else ""))

    # ------------------------------------------------------------------------------------------
    # internals: one Service
    def _run(self, st: _Svc, keep: list[int], old: list[int], invalid: list[str]) -> AllocationResult:
        """Detach the Service's IPs, then give it its IPs by the rules of its flavor."""
        req = st.req
        key = req.key
        for k in st.ips:
            self._detach(k, key)
        st.ips = []
        chosen = st.ips
        notes = list(req.notes)
        fail: _Fail | None = None
        try:
            if req.problems:
                raise _Fail(Reason.INVALID_REQUEST, "; ".join(req.problems))
            labels = self._labels(req)
            metallb = self._flavor(req, labels, keep)
            requested = self._requested(req, metallb)
            want = self._want(req, requested, metallb=metallb)
            if metallb:
                self._run_metallb(req, labels, want, requested=requested, keep=keep, chosen=chosen,
                                  invalid=invalid, notes=notes)
            else:
                fail = self._run_cilium(req, labels, want, requested=requested, keep=keep, chosen=chosen,
                                        invalid=invalid, notes=notes)
        except _Fail as e:
            for k in chosen:
                self._detach(k, key)
            chosen.clear()
            fail = e
        if fail is not None:
            reason, message = fail.reason, fail.message
        else:
            reason, message = Reason.SATISFIED, "; ".join(notes)
        if len(chosen) > 1:
            chosen.sort()
        find = self._find
        pools = {str_of(k): find(k).pool for k in chosen}  # type: ignore[union-attr]
        if old:
            released = tuple(str_of(k) for k in old if k not in chosen)
            changed = set(old) != set(chosen)
        else:
            released, changed = (), bool(chosen)
        res = AllocationResult(key, reason, message, tuple(pools), pools, changed,
                               released, tuple(invalid))
        st.result = res
        st.invalid = invalid
        return res

    def _run_cilium(self, req: ServiceRequest, labels: Mapping[str, str], want: _Want, *, requested: list[int],
                    keep: list[int], chosen: list[int], invalid: list[str], notes: list[str]) -> _Fail | None:
        """Cilium rules. What can be given is given; returns the first reason something could not."""
        key = req.key
        for k in requested:
            if family_of(k) not in want.fams:
                raise _Fail(Reason.INVALID_REQUEST,
                            f"requested IP {str_of(k)} is {_FAM[family_of(k)]} but the Service's "
                            f"ipFamilies/ipFamilyPolicy allow {'+'.join(_FAM[x] for x in want.fams)}")
        req_set = set(requested)
        for k in keep:
            why, rng = self._check_keep(req, labels, k, fams=want.fams, req_set=req_set, chosen=chosen)
            if why is not None or rng is None:
                invalid.append(f"{str_of(k)}: {why}")
                continue
            self._attach(k, key, rng)
            chosen.append(k)
        first: _Fail | None = None
        if requested:  # Cilium gives exactly the requested IPs: no other family is added
            for k in requested:
                if k in chosen:
                    continue
                try:
                    rng = self._locate(req, labels, k, new=True)
                    prob = self._share_problem(req, k, rng)
                    if prob is not None:
                        raise _Fail(*prob)
                except _Fail as e:
                    first = first or e
                    continue
                self._attach(k, key, rng)
                chosen.append(k)
            return first
        have = {family_of(k) for k in chosen}
        for f in want.fams:
            if f in have:
                continue
            try:
                k, rng = self._auto(req, labels, f, chosen)
            except _Fail as e:
                first = first or e
                notes.append(f"no {_FAM[f]} address: {e.message}")
                continue
            self._attach(k, key, rng)
            chosen.append(k)
            have.add(f)
        if first is not None and len(have) < want.need:
            return first
        return None

    def _run_metallb(self, req: ServiceRequest, labels: Mapping[str, str], want: _Want, *, requested: list[int],
                     keep: list[int], chosen: list[int], invalid: list[str], notes: list[str]) -> None:
        """MetalLB rules: all or nothing (raises _Fail)."""
        key = req.key
        if want.known and want.need == 2 and len(req.ip_families) < 2:
            raise _Fail(Reason.INVALID_REQUEST, "ipFamilyPolicy RequireDualStack but the Service has one IP family "
                                                "(clusterIPs): MetalLB refuses it")
        if requested:
            fams = [family_of(k) for k in requested]
            if len(requested) > 2 or len(set(fams)) != len(fams):
                raise _Fail(Reason.INVALID_REQUEST, "at most one requested IP per family (MetalLB): "
                            + ", ".join(str_of(k) for k in requested))
            if want.known or want.need == 2:
                ok = set(fams) == set(want.fams[:len(want.fams) if want.known else 2])
            else:
                ok = set(fams) <= set(want.fams)
            if not ok:
                raise _Fail(Reason.INVALID_REQUEST,
                            f"requested IP(s) {', '.join(str_of(k) for k in requested)} do not match the Service's "
                            f"IP families ({'+'.join(_FAM[f] for f in want.fams)})")
            placed: list[tuple[int, _Range]] = []
            for k in requested:
                rng = self._locate(req, labels, k, new=True)
                prob = self._share_problem(req, k, rng)
                if prob is not None:
                    raise _Fail(*prob)
                placed.append((k, rng))
            pools = sorted({rng.pool for _, rng in placed})
            if len(pools) > 1:
                raise _Fail(Reason.NO_POOL, f"requested IPs {', '.join(str_of(k) for k in requested)} are in "
                                            f"different pools ({', '.join(pools)}); MetalLB takes a Service's "
                                            "IPs from one pool")
            for k, rng in placed:
                self._attach(k, key, rng)
                chosen.append(k)
            return
        kept = self._keep_metallb(req, labels, keep, want=want, requested=requested, invalid=invalid)
        for k, rng in kept:
            self._attach(k, key, rng)
            chosen.append(k)
        if kept:
            if len(kept) == 1 and want.prefer and len(want.fams) == 2:
                # PreferDualStack holding one family: the other one from the same pool, if it has one
                ps = self._ps[kept[0][1].pool]
                other = next(f for f in want.fams if f != family_of(kept[0][0]))
                c = self._first_acceptable(req, ps, other) if other in ps.families else None
                if c is None:
                    notes.append(f"no {_FAM[other]} address: pool {ps.name!r} has none free")
                else:
                    self._attach(c[0], key, c[1])
                    chosen.append(c[0])
            return
        for k, rng in self._auto_metallb(req, labels, want):
            self._attach(k, key, rng)
            chosen.append(k)
        if len(chosen) < len(want.fams):
            missing = [f for f in want.fams if f not in {family_of(k) for k in chosen}]
            notes.append("no " + "+".join(_FAM[f] for f in missing) + " address: MetalLB takes both families "
                         "from one pool and none with both was free")
