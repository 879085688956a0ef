"""Table-driven tests of the allocator rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from l2lb.core.allocator import Allocator
from l2lb.core.models import PoolUpdate, Reason
from l2lb.core.parse import is_pool, is_service, parse_pool, parse_service
from tests.core.helpers import cpool, mpool, svc

FIX = Path(__file__).resolve().parents[1] / "fixtures"
R = Reason


def alloc_with(*pools: object) -> Allocator:
    a = Allocator()
    for p in pools:
        a.upsert_pool(p)  # type: ignore[arg-type]
    return a


@pytest.mark.parametrize("fixture", ["seed", "metallb"])
def test_seed_pihole_shares_153(fixture: str) -> None:
    docs = [d for f in sorted((FIX / fixture).glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    a = Allocator()
    for d in docs:
        if is_pool(d):
            a.upsert_pool(parse_pool(d))
    res = {r.key: r for r in a.restore((parse_service(d), []) for d in docs if is_service(d))}
    for name in ("pihole/pihole-dns-tcp", "pihole/pihole-dns-udp"):
        assert res[name].ok, res[name]
        assert res[name].ips == ("192.168.1.153",)
    assert a.users_of("192.168.1.153") == ("pihole/pihole-dns-tcp", "pihole/pihole-dns-udp")
    if "pihole/pihole-web" in res:
        assert res["pihole/pihole-web"].ips == ("192.168.1.128",)  # Cilium >= 1.16: .128 is usable


POOL = cpool("p", "198.51.100.0/24")
IP = "198.51.100.50"


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        # TCP/53 + UDP/53 with one key share
        (svc("a", ips=IP, key="k", ports=(("TCP", 53),)), svc("b", ips=IP, key="k", ports=(("UDP", 53),)),
         R.SATISFIED),
        # same (protocol, port) never
        (svc("a", ips=IP, key="k", ports=(("TCP", 53),)), svc("b", ips=IP, key="k", ports=(("TCP", 53),)),
         R.ALREADY_ALLOCATED_INCOMPATIBLE),
        # no key, or different keys
        (svc("a", ips=IP), svc("b", ips=IP, ports=(("TCP", 81),)), R.ALREADY_ALLOCATED),
        # a Service with a sharing key that cannot join is "incompatible" (Cilium's reason)
        (svc("a", ips=IP, key="k1"), svc("b", ips=IP, key="k2", ports=(("TCP", 81),)),
         R.ALREADY_ALLOCATED_INCOMPATIBLE),
        # other namespace: both must opt in
        (svc("a", "n1", ips=IP, key="k"), svc("b", "n2", ips=IP, key="k", ports=(("TCP", 81),)),
         R.ALREADY_ALLOCATED_INCOMPATIBLE),
        (svc("a", "n1", ips=IP, key="k", ann={"lbipam.cilium.io/sharing-cross-namespace": "n2"}),
         svc("b", "n2", ips=IP, key="k", ports=(("TCP", 81),)), R.ALREADY_ALLOCATED_INCOMPATIBLE),
        (svc("a", "n1", ips=IP, key="k", ann={"lbipam.cilium.io/sharing-cross-namespace": "n2"}),
         svc("b", "n2", ips=IP, key="k", ports=(("TCP", 81),),
             ann={"lbipam.cilium.io/sharing-cross-namespace": "n1"}), R.SATISFIED),
        (svc("a", "n1", ips=IP, key="k", ann={"lbipam.cilium.io/sharing-cross-namespace": "*"}),
         svc("b", "n2", ips=IP, key="k", ports=(("TCP", 81),),
             ann={"lbipam.cilium.io/sharing-cross-namespace": "*"}), R.SATISFIED),
        # externalTrafficPolicy must match; Local needs identical selectors
        (svc("a", ips=IP, key="k"), svc("b", ips=IP, key="k", ports=(("TCP", 81),), externalTrafficPolicy="Local"),
         R.ALREADY_ALLOCATED_INCOMPATIBLE),
        (svc("a", ips=IP, key="k", externalTrafficPolicy="Local", selector={"app": "x"}),
         svc("b", ips=IP, key="k", ports=(("TCP", 81),), externalTrafficPolicy="Local", selector={"app": "y"}),
         R.ALREADY_ALLOCATED_INCOMPATIBLE),
        (svc("a", ips=IP, key="k", externalTrafficPolicy="Local", selector={"app": "x"}),
         svc("b", ips=IP, key="k", ports=(("TCP", 81),), externalTrafficPolicy="Local", selector={"app": "x"}),
         R.SATISFIED),
    ],
)
def test_sharing_rules(first: object, second: object, reason: Reason) -> None:
    a = alloc_with(POOL)
    r1 = a.allocate(first)  # type: ignore[arg-type]
    assert r1.ok and r1.ips == (IP,)
    r2 = a.allocate(second)  # type: ignore[arg-type]
    assert r2.reason is reason, r2
    assert r2.ips == ((IP,) if reason is R.SATISFIED else ())
    assert r2.message if reason is not R.SATISFIED else True


def test_auto_sharing_reuses_key_ip_and_splits_on_port_clash() -> None:
    a = alloc_with(POOL)
    r1 = a.allocate(svc("a", key="k", ports=(("TCP", 53),)))
    r2 = a.allocate(svc("b", key="k", ports=(("UDP", 53),)))
    r3 = a.allocate(svc("c", key="k", ports=(("TCP", 53),)))
    assert r1.ips == r2.ips == ("198.51.100.0",)
    assert r3.ok and r3.ips == ("198.51.100.1",)


@pytest.mark.parametrize(
    ("pools", "service", "reason", "fragment"),
    [
        ([POOL], svc("a", ips="203.0.113.9"), R.NO_POOL, "no pool contains"),
        # allowFirstLastIPs: No reserves the first/last address; Cilium counts them as allocated
        ([cpool("p", "198.51.100.0/24", allowFirstLastIPs="No")], svc("a", ips="198.51.100.0"),
         R.ALREADY_ALLOCATED, "reserved"),
        ([cpool("p", "198.51.100.0/24", allowFirstLastIPs="No")], svc("a", ips="198.51.100.255"),
         R.ALREADY_ALLOCATED, "reserved"),
        ([cpool("p", "198.51.100.0/24", serviceSelector={"matchLabels": {"color": "blue"}})],
         svc("a", ips=IP, labels={"color": "red"}), R.POOL_SELECTOR_MISMATCH, "serviceSelector"),
        ([cpool("p", "198.51.100.0/24", serviceSelector={"matchLabels": {"color": "blue"}})],
         svc("a", labels={"color": "red"}), R.NO_POOL, "no enabled pool"),
        ([cpool("p", "198.51.100.0/24", disabled=True)], svc("a", ips=IP), R.POOL_DISABLED, "disabled"),
        ([cpool("p", "198.51.100.0/24", disabled=True)], svc("a"), R.NO_POOL, "no enabled pool"),
        ([cpool("p", "198.51.100.0/24", created="2024-01-01T00:00:00Z"),
          cpool("q", "198.51.100.0/25", created="2024-02-01T00:00:00Z")],
         svc("a", ann={"metallb.io/address-pool": "q"}), R.POOL_CONFLICT, "overlaps"),
        ([POOL], svc("a", ann={"metallb.io/address-pool": "zzz"}), R.NO_POOL, "does not exist"),
        ([POOL], svc("a", ips="2001:db8::5", ipFamilies=["IPv4"]), R.INVALID_REQUEST, "IPv6"),
        ([POOL], svc("a", ips="bogus"), R.INVALID_REQUEST, "not an IP"),
        ([POOL], svc("a", ipFamilies=["IPv6"]), R.NO_POOL, "IPv6"),
        ([mpool("m", "198.51.100.0/24")], svc("a", ipFamilyPolicy="RequireDualStack"), R.NO_POOL, "IPv6"),
        ([mpool("m", "198.51.100.0/24", autoAssign=False)], svc("a"), R.NO_POOL, "no enabled pool"),
        ([mpool("m", "198.51.100.0/24", serviceAllocation={"namespaces": ["other"]})],
         svc("a", ips=IP), R.POOL_SELECTOR_MISMATCH, "namespace"),
        ([mpool("m", "198.51.100.0/24", avoidBuggyIPs=True)], svc("a", ips="198.51.100.255"), R.NO_POOL,
         "avoidBuggyIPs"),
    ],
)
def test_failure_reasons(pools: list[object], service: object, reason: Reason, fragment: str) -> None:
    a = alloc_with(*pools)
    r = a.allocate(service)  # type: ignore[arg-type]
    assert r.reason is reason, r
    assert fragment in r.message, r.message
    assert r.ips == () and not r.ok


def test_out_of_ips_then_release_and_retry() -> None:
    a = alloc_with(cpool("small", "198.51.100.0/30", allowFirstLastIPs="No"))  # .1 and .2
    assert a.allocate(svc("a")).ips == ("198.51.100.1",)
    assert a.allocate(svc("b")).ips == ("198.51.100.2",)
    r = a.allocate(svc("c"))
    assert r.reason is R.OUT_OF_IPS
    assert a.release("default/a") == ["198.51.100.1"]
    changed = a.retry()
    assert [(c.key, c.ips) for c in changed] == [("default/c", ("198.51.100.1",))]
    usage = a.pool_usage()["small"]
    assert (usage.total, usage.used, usage.available) == (2, 2, 0)


def test_pool_grown_satisfies_pending() -> None:
    a = alloc_with(cpool("p", "198.51.100.1-198.51.100.1"))
    a.allocate(svc("a"))
    assert a.allocate(svc("b")).reason is R.OUT_OF_IPS
    upd = a.upsert_pool(cpool("p", "198.51.100.1-198.51.100.2"))
    assert [(r.key, r.ips) for r in upd.results] == [("default/b", ("198.51.100.2",))]
    assert a.result("default/a").ips == ("198.51.100.1",)  # type: ignore[union-attr]


def test_overlap_conflict_later_pool_loses_and_recovers() -> None:
    old = cpool("old", "198.51.100.0/24", created="2024-01-01T00:00:00Z")
    new = cpool("new", "198.51.100.128/25", created="2024-06-01T00:00:00Z")
    a = alloc_with(new)
    r = a.allocate(svc("a"))
    assert r.pools == {"198.51.100.128": "new"}
    upd = a.upsert_pool(old)  # older pool arrives later: "new" is now the one in conflict
    assert [(e.pool, e.kind) for e in upd.events] == [("old", "added"), ("new", "conflict")]
    assert "overlaps CIDR '198.51.100.0/24' from IP Pool 'old'" in a.pool_usage()["new"].conflict_message
    # the Service keeps its IP: it is also in the winning pool
    assert a.result("default/a").pools == {"198.51.100.128": "old"}  # type: ignore[union-attr]
    assert a.pool_usage()["new"].conflict and a.pool_usage()["old"].used == 1
    upd = a.remove_pool("old")
    assert ("new", "conflict_resolved") in [(e.pool, e.kind) for e in upd.events]
    assert a.result("default/a").pools == {"198.51.100.128": "new"}  # type: ignore[union-attr]


def test_pool_removed_moves_or_fails_services() -> None:
    a = alloc_with(cpool("p", "198.51.100.0/24"))
    a.allocate(svc("a"))
    upd = a.remove_pool("p")
    assert [(r.key, r.reason, r.released) for r in upd.results] == [
        ("default/a", R.NO_POOL, ("198.51.100.0",))]
    assert a.users_of("198.51.100.0") == ()


def test_disabled_pool_keeps_existing() -> None:
    a = alloc_with(cpool("p", "198.51.100.0/24"))
    a.allocate(svc("a"))
    a.upsert_pool(cpool("p", "198.51.100.0/24", disabled=True))
    assert a.result("default/a").ips == ("198.51.100.0",)  # type: ignore[union-attr]
    assert a.allocate(svc("b")).reason is R.NO_POOL
    assert a.pool_usage()["p"].disabled


def test_auto_assign_false_only_on_request() -> None:
    a = alloc_with(mpool("cheap", "198.51.100.0/24"), mpool("pricey", "203.0.113.0/24", autoAssign=False))
    assert a.allocate(svc("a")).pools == {"198.51.100.0": "cheap"}  # MetalLB: CIDR fully usable
    assert a.allocate(svc("b", ann={"metallb.io/address-pool": "pricey"})).ips == ("203.0.113.0",)
    assert a.allocate(svc("c", ips="203.0.113.9")).ok


def test_avoid_buggy_ips_skips_0_and_255() -> None:
    a = alloc_with(mpool("m", "198.51.100.254-198.51.101.1", avoidBuggyIPs=True))
    got = [a.allocate(svc(f"s{i}")).ips for i in range(3)]
    assert got == [("198.51.100.254",), ("198.51.101.1",), ()]
    assert a.pool_usage()["m"].total == 2


def test_priority_and_namespaces() -> None:
    a = alloc_with(
        mpool("a-plain", "198.51.100.0/28"),
        mpool("b-low", "198.51.100.16/28", serviceAllocation={"priority": 20}),
        mpool("c-high", "198.51.100.32/28", serviceAllocation={"priority": 10, "namespaces": ["prod"]}),
        mpool("d-sel", "198.51.100.48/28",
              serviceAllocation={"namespaceSelectors": [{"matchLabels": {"team": "x"}}]}),
    )
    assert a.allocate(svc("s", "prod")).pools == {"198.51.100.32": "c-high"}
    assert a.allocate(svc("s", "dev")).pools == {"198.51.100.16": "b-low"}
    r = a.allocate(parse_service({"kind": "Service", "metadata": {"name": "t", "namespace": "teamx"},
                                  "spec": {"type": "LoadBalancer", "ports": [{"port": 1}]}},
                                 namespace_labels={"team": "x"}))
    assert r.pools == {"198.51.100.17": "b-low"}  # priority pools first; then allocation without priority


def test_meta_label_selector() -> None:
    a = alloc_with(cpool("ns-pool", "198.51.100.0/24",
                         serviceSelector={"matchLabels": {"io.kubernetes.service.namespace": "pihole"}}))
    assert a.allocate(svc("x", "pihole")).ok
    assert a.allocate(svc("x", "other")).reason is R.NO_POOL


def test_families() -> None:
    a = alloc_with(cpool("v4", "198.51.100.0/24"), cpool("v6", "2001:db8::/64"))
    assert a.allocate(svc("single")).ips == ("198.51.100.0",)
    assert a.allocate(svc("six", ipFamilies=["IPv6"])).ips == ("2001:db8::",)
    r = a.allocate(svc("dual", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv6", "IPv4"]))
    assert r.ips == ("198.51.100.1", "2001:db8::1")  # Cilium rules: each family from its first pool
    r = a.allocate(svc("req", ips="198.51.100.77,2001:db8::77"))
    assert r.ips == ("198.51.100.77", "2001:db8::77")
    b = alloc_with(cpool("v4", "198.51.100.0/24"))
    # PreferDualStack without ipFamilies: one family is enough
    r = b.allocate(svc("prefer", ipFamilyPolicy="PreferDualStack"))
    assert r.ok and r.ips == ("198.51.100.0",) and "IPv6" in r.message
    # Cilium keeps what it could allocate and says what is missing
    r = b.allocate(svc("req", ipFamilyPolicy="RequireDualStack"))
    assert r.ips == ("198.51.100.1",) and r.reason is R.NO_POOL and "IPv6" in r.message
    r = b.allocate(svc("listed", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4", "IPv6"]))
    assert r.ips == ("198.51.100.2",) and r.reason is R.NO_POOL
    # MetalLB rules: all or nothing
    m = alloc_with(mpool("v4", "198.51.100.0/24"))
    r = m.allocate(svc("req", ipFamilyPolicy="RequireDualStack"))
    assert r.ips == () and r.reason is R.NO_POOL


def test_idempotent_and_changes() -> None:
    a = alloc_with(POOL)
    s = svc("a", key="k")
    r1 = a.allocate(s)
    r2 = a.allocate(s)
    assert r1.changed and not r2.changed and r1.ips == r2.ips
    r3 = a.allocate(svc("a", key="k", ips="198.51.100.99"))
    assert r3.ips == ("198.51.100.99",) and r3.released == r1.ips and r3.changed
    r4 = a.allocate(svc("a", key="k", ips="198.51.100.99", labels={"x": "y"}))
    assert r4.ips == r3.ips and not r4.changed


def test_release_shared_ip_frees_with_last_user() -> None:
    a = alloc_with(POOL)
    a.allocate(svc("a", ips=IP, key="k", ports=(("TCP", 53),)))
    a.allocate(svc("b", ips=IP, key="k", ports=(("UDP", 53),)))
    assert a.release("default/a") == [IP]
    assert a.users_of(IP) == ("default/b",)
    assert a.pool_usage()["p"].used == 1
    a.release("default/b")
    assert a.users_of(IP) == () and a.pool_usage()["p"].used == 0
    assert a.allocate(svc("c", ips=IP)).ok
    assert a.release("default/none") == []


def test_not_handled_and_invalid_release() -> None:
    a = alloc_with(POOL)
    a.allocate(svc("a"))
    r = a.allocate(svc("a", type="ClusterIP"))
    assert r.reason is R.NOT_HANDLED and r.released == ("198.51.100.0",)
    a.allocate(svc("b"))
    r = a.allocate(svc("b", ips="nope"))
    assert r.reason is R.INVALID_REQUEST and r.ips == () and r.released == ("198.51.100.0",)


def test_restore_adopts_before_allocating() -> None:
    a = alloc_with(POOL)
    # "new" sorts first but must not take .0, which "old" holds in its status
    res = a.restore([(svc("new"), []), (svc("old"), ["198.51.100.0"])])
    got = {r.key: r.ips for r in res}
    assert got == {"default/new": ("198.51.100.1",), "default/old": ("198.51.100.0",)}


def test_restore_reports_invalid_existing() -> None:
    a = alloc_with(POOL)
    res = a.restore([
        (svc("a", created="2024-01-01T00:00:00Z"), ["198.51.100.5"]),
        (svc("b", created="2024-02-01T00:00:00Z"), ["198.51.100.5"]),  # duplicate: older Service wins
        (svc("c"), ["203.0.113.1", "garbage"]),
    ])
    by = {r.key: r for r in res}
    assert by["default/a"].ips == ("198.51.100.5",) and by["default/a"].invalid_existing == ()
    assert by["default/c"].ips == ("198.51.100.0",)  # no creationTimestamp sorts first
    assert by["default/b"].ips == ("198.51.100.1",)
    assert "used by default/a" in by["default/b"].invalid_existing[0]
    assert by["default/c"].invalid_existing == (
        "garbage: not an IP address", "203.0.113.1: no pool contains IP 203.0.113.1")
    assert by["default/c"].ok


def test_allocate_adopts_existing_for_unknown_service() -> None:
    a = alloc_with(POOL)
    r = a.allocate(svc("a"), existing=["198.51.100.200"])
    assert r.ips == ("198.51.100.200",)


def test_ipv6_64_counts() -> None:
    a = alloc_with(cpool("v6", "2001:db8::/64", allowFirstLastIPs="No"), mpool("m6", "2001:db8:1::/64"))
    u = a.pool_usage()
    assert u["v6"].total == 2**64 - 2 and u["m6"].total == 2**64
    assert a.allocate(svc("a", ipFamilies=["IPv6"])).pools == {"2001:db8:1::": "m6"}  # by name
    assert a.pool_usage()["m6"].available == 2**64 - 1


def test_pool_with_overlapping_blocks_is_in_conflict() -> None:
    a = Allocator()
    upd = a.upsert_pool(cpool("self", "198.51.100.0/24", "198.51.100.10-198.51.100.20"))
    assert ("self", "conflict") in [(e.pool, e.kind) for e in upd.events]
    assert "overlaps its own block" in a.pool_usage()["self"].conflict_message
    assert a.allocate(svc("a")).reason is R.NO_POOL
    assert a.upsert_pool(cpool("self", "198.51.100.0/24", "198.51.100.10-198.51.100.20")) == PoolUpdate()


def test_restore_of_unhandled_service_releases_it() -> None:
    a = alloc_with(POOL)
    a.allocate(svc("a"))
    (res,) = a.restore([(svc("a", type="NodePort"), ["198.51.100.0"])])
    assert res.reason is R.NOT_HANDLED and res.ips == () and res.released == ("198.51.100.0",)
    assert a.users_of("198.51.100.0") == () and a.result("default/a") is None
    assert a.allocate(svc("b")).ips == ("198.51.100.0",)
