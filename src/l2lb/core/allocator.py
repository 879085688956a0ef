"""The LB-IPAM allocator (pure, no I/O).

Memory is O(allocated addresses), never O(pool size): each usable range of a pool keeps only a
*frontier* (every address below it was handed out at least once) and a heap of addresses below the
frontier that were released since; allocation always takes the lowest free address of the first
eligible range. Which Service uses which address lives in one dict keyed by address key (see
:mod:`l2lb.core.models`).

Rules (Cilium LB-IPAM + MetalLB, see docs/ARCHITECTURE.md and DESIGN.md):

* pools overlap -> the later created one (creationTimestamp, then name) is in conflict and neither
  allocates nor holds addresses; a disabled pool keeps existing allocations but hands out no new one;
* requested IPs (annotations, spec.loadBalancerIP) must all be satisfied, each from a pool that
  selects the Service; otherwise the Service gets no IP and a reason;
* families follow ipFamilies/ipFamilyPolicy (SingleStack: one family, IPv4 unless told;
  PreferDualStack: both if possible, one is enough; RequireDualStack: both);
* an address is shared only by Services with the same sharing key, in the same namespace unless both
  allow each other's namespace, with no (protocol, port) in common, the same externalTrafficPolicy
  and, for ``Local``, identical pod selectors;
* restore adopts every valid existing address (in order of Service creation, so the outcome does
  not depend on arrival order) before anything new is allocated.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

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


def _allows(svc: ServiceRequest, namespace: str) -> bool:
    return "*" in svc.share_namespaces or namespace in svc.share_namespaces


def incompatibility(a: ServiceRequest, b: ServiceRequest) -> str | None:
    """Why ``a`` may not share an IP with ``b`` (None: they may)."""
    if not a.sharing_key or a.sharing_key != b.sharing_key:
        if not a.sharing_key:
            return f"used by {b.key} and this Service has no sharing key"
        return f"used by {b.key}, which has sharing key {b.sharing_key or '<none>'!r}, not {a.sharing_key!r}"
    if a.namespace != b.namespace and not (_allows(a, b.namespace) and _allows(b, a.namespace)):
        return (f"used by {b.key} in another namespace; both Services must allow each other's namespace "
                "with lbipam.cilium.io/sharing-cross-namespace")
    common = sorted(set(a.ports) & set(b.ports))
    if common:
        pp = ", ".join(f"{p}/{n}" for p, n in common)
        return f"used by {b.key} with the same port(s) {pp}"
    if a.external_traffic_policy != b.external_traffic_policy:
        return (f"used by {b.key} with externalTrafficPolicy {b.external_traffic_policy}, "
                f"this Service has {a.external_traffic_policy}")
    if a.external_traffic_policy == "Local" and dict(a.selector) != dict(b.selector):
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
        if (st is None and not existing and not svc.problems and not svc.requested_ips
                and not svc.sharing_key and svc.pool is None and not self._selective):
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
        """The common case (new Service, nothing requested, no sharing, no selective pools) without
        the general machinery; same outcome as ``_run``. None: take the general path."""
        fams, _ = self._families(svc, [])
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
    # internals
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

    def _adopt(self, st: _Svc, keep: list[int], invalid: list[str]) -> None:
        req = st.req
        labels = service_labels(req.namespace, req.name, req.labels)
        requested = self._requested(req)
        fams, _ = self._families(req, requested)
        req_set = set(requested)
        for k in keep:
            why, rng = self._check_keep(req, labels, k, fams=fams, req_set=req_set, chosen=st.ips)
            if why is not None or rng is None:
                invalid.append(f"{str_of(k)}: {why}")
            else:
                self._attach(k, req.key, rng)
                st.ips.append(k)

    def _requested(self, req: ServiceRequest) -> list[int]:
        out: list[int] = []
        for ip in req.requested_ips:
            try:
                k = key_of(ip)
            except ValueError:
                continue  # parse_service reported it as a problem
            if k not in out:
                out.append(k)
        return out

    def _families(self, req: ServiceRequest, requested: list[int]) -> tuple[list[int], int]:
        """Families wanted and how many of them must be satisfied."""
        pol = req.ip_family_policy
        if pol == "RequireDualStack":
            return [4, 6], 2
        if pol == "PreferDualStack":
            return [4, 6], 1
        if req.ip_families:
            return [req.ip_families[0]], 1
        if requested:
            fams = sorted({family_of(k) for k in requested})
            return fams, len(fams)
        return [4], 1

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

    def _share_problem(self, req: ServiceRequest, k: int) -> tuple[Reason, str] | None:
        if k not in self._used:
            return None
        same_key = False
        for u in self._users(k):
            other = self._svcs[u].req
            why = incompatibility(req, other)
            if why is not None:
                if req.sharing_key and req.sharing_key == other.sharing_key:
                    same_key = True
                reason = Reason.ALREADY_ALLOCATED_INCOMPATIBLE if same_key else Reason.ALREADY_ALLOCATED
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
                    raise _Fail(Reason.NO_POOL, f"IP {ip} is reserved in pool {ps.name!r} (first/last "
                                                "address of a CIDR; set allowFirstLastIPs to use it)")
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
        f = family_of(k)
        if f not in fams:
            return f"the Service does not ask for an {_FAM[f]} address", None
        if req_set:
            if k not in req_set:
                return "not among the requested IPs", None
        elif any(family_of(c) == f for c in chosen):
            return f"the Service already has an {_FAM[f]} address", None
        try:
            rng = self._locate(req, labels, k, new=False)
        except _Fail as e:
            return e.message, None
        prob = self._share_problem(req, k)
        if prob is not None:
            return prob[1], None
        return None, rng

    def _auto(self, req: ServiceRequest, labels: Mapping[str, str], f: int,
              chosen: list[int]) -> tuple[int, _Range]:
        if req.sharing_key:
            cands: list[int] = []
            for other in self._share.get(req.sharing_key, ()):
                if other != req.key:
                    cands.extend(k for k in self._svcs[other].ips if family_of(k) == f)
            for k in sorted(set(cands)):
                if k in chosen:
                    continue
                rng = self._find(k) if k in self._used else None
                if rng is None:
                    continue
                ps = self._ps[rng.pool]
                if ps.pool.disabled or self._mismatch(ps, req, labels) is not None:
                    continue
                if self._share_problem(req, k) is None:
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
            if req.pool is not None:
                ps0 = self._ps.get(req.pool)
                if ps0 is not None and ps0.conflict:
                    raise _Fail(Reason.POOL_CONFLICT, f"pool {req.pool!r} is in conflict: {ps0.conflict}")
                if ps0 is not None and ps0.pool.disabled:
                    raise _Fail(Reason.POOL_DISABLED, f"pool {req.pool!r} is disabled")
                if ps0 is not None and f in ps0.families:
                    why = self._mismatch(ps0, req, labels)
                    raise _Fail(Reason.POOL_SELECTOR_MISMATCH, why or f"pool {req.pool!r} does not match")
            raise _Fail(Reason.NO_POOL, f"no enabled pool with {_FAM[f]} addresses matches this Service")
        raise _Fail(Reason.OUT_OF_IPS, f"every matching pool is out of {_FAM[f]} addresses")

    def _run(self, st: _Svc, keep: list[int], old: list[int], invalid: list[str]) -> AllocationResult:
        """Detach the Service's IPs, then give it its IPs: kept ones first, then requested, then
        automatic ones. All-or-nothing for what is required."""
        req = st.req
        key = req.key
        for k in st.ips:
            self._detach(k, key)
        st.ips = []
        chosen = st.ips
        reason, message = Reason.SATISFIED, ""
        notes: list[str] = []
        try:
            if req.problems:
                raise _Fail(Reason.INVALID_REQUEST, "; ".join(req.problems))
            labels = (service_labels(req.namespace, req.name, req.labels) if self._selective
                      else req.labels)
            requested = self._requested(req) if req.requested_ips else []
            fams, need = self._families(req, requested)
            for k in requested:
                if family_of(k) not in fams:
                    raise _Fail(Reason.INVALID_REQUEST,
                                f"requested IP {str_of(k)} is {_FAM[family_of(k)]} but the Service's "
                                f"ipFamilies/ipFamilyPolicy allow {'+'.join(_FAM[x] for x in fams)}")
            req_set = set(requested) if requested else set()
            for k in keep:
                why, rng = self._check_keep(req, labels, k, fams=fams, req_set=req_set, chosen=chosen)
                if why is not None or rng is None:
                    invalid.append(f"{str_of(k)}: {why}")
                    continue
                self._attach(k, key, rng)
                chosen.append(k)
            for k in requested:
                if k in chosen:
                    continue
                rng = self._locate(req, labels, k, new=True)
                prob = self._share_problem(req, k)
                if prob is not None:
                    raise _Fail(*prob)
                self._attach(k, key, rng)
                chosen.append(k)
            have = [family_of(k) for k in chosen] if chosen else []
            first_fail: _Fail | None = None
            for f in fams:
                if f in have:
                    continue
                try:
                    k, rng = self._auto(req, labels, f, chosen)
                except _Fail as e:
                    first_fail = first_fail or e
                    notes.append(f"no {_FAM[f]} address: {e.message}")
                    continue
                if k in self._used:
                    self._more.setdefault(k, []).append(key)
                else:
                    self._used[k] = key
                    rng.used += 1
                chosen.append(k)
                have.append(f)
            if first_fail is not None and len(set(have)) < need:
                raise first_fail
        except _Fail as e:
            for k in chosen:
                self._detach(k, key)
            chosen.clear()
            reason, message = e.reason, e.message
        if notes and reason is Reason.SATISFIED:
            message = "; ".join(notes)
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
