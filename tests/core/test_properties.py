"""Property tests of the allocator (hypothesis)."""

from __future__ import annotations

import itertools
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2lb.core.allocator import Allocator, incompatibility
from l2lb.core.models import ServiceRequest, key_of
from tests.core.helpers import cpool, svc

POOLS = [cpool("a", "198.51.100.0/29"), cpool("b", "198.51.100.8-198.51.100.11"), cpool("c", "2001:db8::/126")]
IPS = ["198.51.100.1", "198.51.100.2", "198.51.100.9", "203.0.113.1", "2001:db8::1"]

services = st.builds(
    lambda name, ns, ip, key, proto, port, etp, cross: svc(
        name, ns, ips=ip, key=key, ports=((proto, port),), externalTrafficPolicy=etp,
        ann={"lbipam.cilium.io/sharing-cross-namespace": "*"} if cross else None,
        ipFamilyPolicy="PreferDualStack" if ip is None and port == 81 else "SingleStack",
    ),
    name=st.sampled_from(["s1", "s2", "s3", "s4", "s5", "s6"]),
    ns=st.sampled_from(["n1", "n2"]),
    ip=st.one_of(st.none(), st.sampled_from(IPS)),
    key=st.one_of(st.none(), st.sampled_from(["k1", "k2"])),
    proto=st.sampled_from(["TCP", "UDP"]),
    port=st.sampled_from([53, 80, 81]),
    etp=st.sampled_from(["Cluster", "Local"]),
    cross=st.booleans(),
)
ops = st.lists(st.tuples(st.sampled_from(["alloc", "alloc", "release", "retry"]), services), max_size=30)


def check_invariants(a: Allocator) -> None:
    usage = a.pool_usage()
    holders: dict[str, list[str]] = {}
    for key, res in a.results().items():
        if res.ok:
            assert res.ips, res
        for ip in res.ips:
            holders.setdefault(ip, []).append(key)
            assert res.pools[ip] in usage
    used_by_pool: dict[str, int] = {}
    for ip, keys in holders.items():
        assert sorted(a.users_of(ip)) == sorted(keys)
        pool = a.results()[keys[0]].pools[ip]
        used_by_pool[pool] = used_by_pool.get(pool, 0) + 1
        reqs = [a.request(k) for k in keys]
        for x, y in itertools.permutations(reqs, 2):
            assert x is not None and y is not None
            assert incompatibility(x, y) is None, (ip, x.key, y.key)
    for name, u in usage.items():
        assert u.used == used_by_pool.get(name, 0), name
        assert u.available == u.total - u.used


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_no_ip_to_two_incompatible_services(seq: list[tuple[str, ServiceRequest]]) -> None:
    a = Allocator()
    for p in POOLS:
        a.upsert_pool(p)
    for op, s in seq:
        if op == "alloc":
            a.allocate(s)
        elif op == "release":
            a.release(s.key)
        else:
            a.retry()
        check_invariants(a)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(services, st.lists(st.sampled_from(IPS), max_size=2)), min_size=1, max_size=4,
                unique_by=lambda t: t[0].key))
def test_restore_is_order_independent(items: list[tuple[ServiceRequest, list[str]]]) -> None:
    outcomes: set[object] = set()
    for perm in itertools.permutations(items):
        a = Allocator()
        for p in reversed(POOLS) if len(outcomes) % 2 else POOLS:
            a.upsert_pool(p)
        res = a.restore(perm)
        outcomes.add(tuple((r.key, r.reason, r.ips, r.invalid_existing) for r in res))
        check_invariants(a)
    assert len(outcomes) == 1, outcomes


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=5)), st.integers(min_value=0, max_value=3))
def test_freed_ips_are_reusable(freed: set[int], extra: int) -> None:
    a = Allocator()
    a.upsert_pool(cpool("p", "198.51.100.0/29", allowFirstLastIPs="No"))  # 6 usable
    got = [a.allocate(svc(f"s{i}")).ips for i in range(6)]
    assert all(g for g in got) and len(set(got)) == 6
    assert not a.allocate(svc("overflow")).ok
    a.release("default/overflow")
    released: set[str] = set()
    for i in freed:
        released.update(a.release(f"default/s{i}"))
    again: set[str] = set()
    for j in range(len(freed) + extra):
        r = a.allocate(svc(f"new{j}"))
        if j < len(freed):
            assert r.ok
            again.update(r.ips)
        else:
            assert not r.ok
    assert again == released


def test_ipv6_64_is_cheap() -> None:
    tracemalloc.start()
    a = Allocator()
    a.upsert_pool(cpool("big", "2001:db8:5::/64"))
    a.upsert_pool(cpool("huge", "2001:db8:8000::/33"))
    _, after_pools = tracemalloc.get_traced_memory()
    for i in range(2000):
        assert a.allocate(svc(f"s{i}", ipFamilies=["IPv6"])).ok
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after_pools < 64 * 1024  # pools cost nothing per address
    assert peak < 4 * 1024 * 1024  # ~2 KiB per Service at most
    u = a.pool_usage()
    assert u["big"].total == 2**64 and u["huge"].total == 2**95  # Cilium >= 1.16: whole CIDRs
    assert u["big"].used == 2000 and key_of(a.result("default/s1999").ips[0]) > key_of("2001:db8:5::")  # type: ignore[union-attr]
