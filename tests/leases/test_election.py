"""The pure election: table cases and hypothesis properties."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.election import Holder, elect, holders_from_serving, stable_hash
from l2lb.core.messages import Allocation, Heartbeat
from l2lb.core.policy import L2Policy, parse_policy
from tests.leases.helpers import ALL_LB, alloc, hb

NOW = 1_700_000_000_000
ALL = [parse_policy(ALL_LB)]


def pol(spec: dict[str, Any], name: str = "p") -> L2Policy:
    return parse_policy({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
                         "metadata": {"name": name}, "spec": spec})


def nodes(*names: str, **kw: Any) -> dict[str, Heartbeat]:
    return {n: hb(n, **kw) for n in names}


def test_new_ips_balanced_and_epochs_from_clock() -> None:
    allocs = [alloc(f"ns/s{i}", f"198.51.100.{10 + i}") for i in range(6)]
    r = elect(allocs, ALL, nodes("a", "b", "c"), {}, now_ms=NOW)
    assert len(r.assignments) == 6
    assert sorted(Counter(a.node for a in r.assignments.values()).values()) == [2, 2, 2]
    assert all(a.epoch == NOW for a in r.assignments.values())
    assert {m.reason for m in r.moves} == {"new"}
    assert all(s.announced for s in r.services.values())


def test_sticky_and_epoch_kept() -> None:
    allocs = [alloc("ns/a", "198.51.100.1"), alloc("ns/b", "198.51.100.2")]
    cur = {"198.51.100.1": Holder("a", 5), "198.51.100.2": Holder("a", 7)}
    r = elect(allocs, ALL, nodes("a", "b"), cur, now_ms=NOW)
    assert r.holders() == cur  # unbalanced, but no rebalancing while the holder is fine
    assert r.moves == [] and r.epochs == {}


def test_holder_dead_moves_with_higher_epoch() -> None:
    cur = {"198.51.100.1": Holder("a", NOW + 10)}  # epoch ahead of the clock: still increases
    r = elect([alloc("ns/a", "198.51.100.1")], ALL, nodes("b"), cur, now_ms=NOW,
              last_epochs={"198.51.100.1": 3})
    a = r.assignments["198.51.100.1"]
    assert a.node == "b" and a.epoch == NOW + 11
    assert r.moves[0].reason == "holder_dead" and r.moves[0].old == "a"
    r2 = elect([alloc("ns/a", "198.51.100.1")], ALL, nodes("b"), {}, now_ms=5,
               last_epochs={"198.51.100.1": 900})
    assert r2.assignments["198.51.100.1"].epoch == 901  # clock behind the stored epoch


def test_interface_down_makes_node_ineligible() -> None:
    p = pol({"interfaces": ["eth0"], "loadBalancerIPs": True})
    ns = {"a": hb("a", ifaces=(("eth0", False), ("eth1", True))), "b": hb("b")}
    r = elect([alloc("ns/a", "198.51.100.1")], [p], ns, {"198.51.100.1": Holder("a", 1)}, now_ms=NOW)
    assert r.assignments["198.51.100.1"].node == "b"
    assert r.assignments["198.51.100.1"].interfaces == ("eth0",)
    assert r.moves[0].reason == "holder_ineligible"


def test_no_policy_and_no_eligible_node_reasons() -> None:
    p = pol({"serviceSelector": {"matchLabels": {"announce": "yes"}}, "nodeSelector":
             {"matchLabels": {"zone": "x"}}, "loadBalancerIPs": True})
    allocs = [alloc("ns/plain", "198.51.100.1"), alloc("ns/sel", "198.51.100.2", labels={"announce": "yes"})]
    r = elect(allocs, [p], nodes("a"), {"198.51.100.1": Holder("a", 1)}, now_ms=NOW)
    assert r.assignments == {}
    assert r.unassigned == {"198.51.100.1": "no_policy", "198.51.100.2": "no_eligible_node"}
    assert r.services["ns/plain"].reason == "no_policy" and not r.services["ns/plain"].announced
    assert r.services["ns/sel"].reason == "no_eligible_node"
    assert [(m.ip, m.old, m.new, m.reason) for m in r.moves] == [("198.51.100.1", "a", None, "no_policy")]


def test_etp_local_follows_endpoints() -> None:
    allocs = [alloc("ns/web", "198.51.100.9", etp="Local")]
    ns = nodes("a", "b", "c")
    r = elect(allocs, ALL, ns, {}, now_ms=NOW, endpoints={"ns/web": {"c"}})
    assert r.assignments["198.51.100.9"].node == "c"
    r2 = elect(allocs, ALL, ns, r.holders(), now_ms=NOW + 1, endpoints={"ns/web": {"a"}})
    assert r2.assignments["198.51.100.9"].node == "a" and r2.moves[0].reason == "holder_ineligible"
    r3 = elect(allocs, ALL, ns, r2.holders(), now_ms=NOW + 2, endpoints={})
    assert r3.unassigned == {"198.51.100.9": "no_eligible_node"}


def test_shared_ip_elected_once_with_intersection() -> None:
    tcp = alloc("dns/tcp", "198.51.100.53", labels={"app": "dns", "proto": "tcp"})
    udp = alloc("dns/udp", "198.51.100.53", labels={"app": "dns", "proto": "udp"})
    p1 = pol({"serviceSelector": {"matchLabels": {"proto": "tcp"}},
              "nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
              "loadBalancerIPs": True}, "p1")
    p2 = pol({"serviceSelector": {"matchLabels": {"proto": "udp"}},
              "nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b", "c"]}]},
              "loadBalancerIPs": True}, "p2")
    ns = {n: hb(n, labels={"zone": n}) for n in ("a", "b", "c")}
    r = elect([tcp, udp], [p1, p2], ns, {}, now_ms=NOW)
    a = r.assignments["198.51.100.53"]
    assert a.node == "b" and a.services == ("dns/tcp", "dns/udp")
    assert len(r.moves) == 1


def test_shared_ip_unselected_service_rides_along() -> None:
    tcp = alloc("dns/tcp", "198.51.100.53", labels={"proto": "tcp"})
    udp = alloc("dns/udp", "198.51.100.53", labels={"proto": "udp"})
    p1 = pol({"serviceSelector": {"matchLabels": {"proto": "tcp"}}, "loadBalancerIPs": True})
    r = elect([tcp, udp], [p1], nodes("a"), {}, now_ms=NOW)
    assert r.assignments["198.51.100.53"].node == "a"
    assert r.services["dns/udp"].announced


def test_external_ips_only_when_policy_asks() -> None:
    a = alloc("ns/x", "198.51.100.1", external=("203.0.113.7",))
    r = elect([a], [pol({"loadBalancerIPs": True})], nodes("n"), {}, now_ms=NOW)
    assert set(r.assignments) == {"198.51.100.1"} and r.services["ns/x"].announced
    r2 = elect([a], [pol({"loadBalancerIPs": True, "externalIPs": True})], nodes("n"), {}, now_ms=NOW)
    assert set(r2.assignments) == {"198.51.100.1", "203.0.113.7"}


def test_metallb_pool_matching() -> None:
    l2 = parse_policy({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                       "metadata": {"name": "l2", "namespace": "metallb-system"},
                       "spec": {"ipAddressPoolSelectors": [{"matchLabels": {"l2": "on"}}]}})
    a1 = alloc("ns/a", "198.51.100.1", pools={"198.51.100.1": "p1"}, pool_labels={"p1": {"l2": "on"}})
    a2 = alloc("ns/b", "198.51.100.2", pools={"198.51.100.2": "p2"}, pool_labels={"p2": {}})
    r = elect([a1, a2], [l2], nodes("n"), {}, now_ms=NOW)
    assert set(r.assignments) == {"198.51.100.1"} and r.unassigned == {"198.51.100.2": "no_policy"}


def test_node_without_interface_info_only_for_unrestricted_policies() -> None:
    ns = {"a": hb("a", ifaces=())}
    r = elect([alloc("ns/a", "198.51.100.1")], ALL, ns, {}, now_ms=NOW)
    assert r.assignments["198.51.100.1"].interfaces == ()
    eth0 = pol({"interfaces": ["eth0"], "loadBalancerIPs": True})
    r2 = elect([alloc("ns/a", "198.51.100.1")], [eth0], ns, {}, now_ms=NOW)
    assert r2.unassigned == {"198.51.100.1": "no_eligible_node"}


def test_removed_ip_is_reported() -> None:
    r = elect([], ALL, nodes("a"), {"198.51.100.1": Holder("a", 3)}, now_ms=NOW)
    assert [(m.new, m.reason) for m in r.moves] == [(None, "removed")]


def test_ipv6_normalised() -> None:
    r = elect([alloc("ns/v6", "2001:DB8:0::1")], ALL, nodes("a"), {"2001:db8::1": Holder("a", 4)}, now_ms=NOW)
    assert r.assignments["2001:db8::1"].epoch == 4 and r.moves == []


def test_holders_from_serving() -> None:
    hs = [hb("a", serving={"198.51.100.1": 5, "198.51.100.2": 9}), hb("b", serving={"198.51.100.1": 7})]
    assert holders_from_serving(hs) == {"198.51.100.1": Holder("b", 7), "198.51.100.2": Holder("a", 9)}


# -- properties -------------------------------------------------------------------------------------
NODE_NAMES = [f"n{i}" for i in range(6)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Allocation], dict[str, Heartbeat], dict[str, Holder],
                                         dict[str, set[str]], list[L2Policy]]:
    n_nodes = draw(st.integers(0, 6))
    names = NODE_NAMES[:n_nodes]
    ns = {}
    for n in names:
        zone = draw(st.sampled_from(["a", "b"]))
        up0 = draw(st.booleans())
        ns[n] = hb(n, labels={"zone": zone}, ifaces=(("eth0", up0), ("eth1", True)))
    n_svc = draw(st.integers(0, 12))
    allocs = []
    for i in range(n_svc):
        ip = f"198.51.100.{draw(st.integers(1, 8))}"
        etp = draw(st.sampled_from(["Cluster", "Local"]))
        allocs.append(alloc(f"ns/s{i}", ip, etp=etp, labels={"tier": draw(st.sampled_from(["web", "db"]))}))
    endpoints = {a.key: set(draw(st.lists(st.sampled_from(NODE_NAMES), max_size=3))) for a in allocs}
    current = {}
    for ip in {f"198.51.100.{i}" for i in range(1, 9)}:
        if draw(st.booleans()):
            current[ip] = Holder(draw(st.sampled_from(NODE_NAMES)), draw(st.integers(1, 10)))
    policies = draw(st.lists(st.sampled_from([
        pol({"loadBalancerIPs": True}, "all"),
        pol({"interfaces": ["eth0"], "loadBalancerIPs": True,
             "serviceSelector": {"matchLabels": {"tier": "db"}}}, "db-eth0"),
        pol({"nodeSelector": {"matchLabels": {"zone": "a"}}, "loadBalancerIPs": True,
             "serviceSelector": {"matchLabels": {"tier": "web"}}}, "web-a"),
    ]), max_size=3, unique_by=lambda p: p.name))
    return allocs, ns, current, endpoints, policies


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_properties(sc: Any, rnd: random.Random) -> None:
    allocs, ns, current, endpoints, policies = sc
    r = elect(allocs, policies, ns, current, now_ms=NOW, endpoints=endpoints)
    ips = {ip for a in allocs for ip in a.ips}
    # every IP is either assigned (to exactly one live node) or has a reason
    assert set(r.assignments) | set(r.unassigned) == ips
    assert not set(r.assignments) & set(r.unassigned)
    for ip, a in r.assignments.items():
        assert a.node in ns and a.ip == ip
        # minimal movement: a held IP whose holder is still live and eligible stays, epoch unchanged
        cur = current.get(ip)
        if cur is not None and cur.node == a.node:
            assert a.epoch == cur.epoch
        else:
            assert a.epoch > (cur.epoch if cur else 0)
    # every assignable IP assigned: an unassigned IP has no eligible node even when nothing is held
    fresh = elect(allocs, policies, ns, {}, now_ms=NOW, endpoints=endpoints)
    assert set(fresh.assignments) == set(r.assignments)
    # sticky: re-running with the result as current state moves nothing
    again = elect(allocs, policies, ns, r.holders(), now_ms=NOW + 1, endpoints=endpoints)
    assert again.moves == [] and again.holders() == r.holders()
    # permutation stability
    shuffled_allocs = list(allocs)
    rnd.shuffle(shuffled_allocs)
    shuffled_pols = list(policies)
    rnd.shuffle(shuffled_pols)
    node_items = list(ns.items())
    rnd.shuffle(node_items)
    r2 = elect(shuffled_allocs, shuffled_pols, dict(node_items), dict(reversed(list(current.items()))),
               now_ms=NOW, endpoints=endpoints)
    assert r2.assignments == r.assignments and r2.unassigned == r.unassigned
    assert r2.services == r.services


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6))
def test_balanced_when_unconstrained(n_ips: int, n_nodes: int) -> None:
    allocs = [alloc(f"ns/s{i}", f"203.0.113.{i + 1}") for i in range(n_ips)]
    r = elect(allocs, ALL, nodes(*NODE_NAMES[:n_nodes]), {}, now_ms=NOW)
    counts = Counter(a.node for a in r.assignments.values())
    loads = [counts.get(n, 0) for n in NODE_NAMES[:n_nodes]]
    assert max(loads) - min(loads) <= 1


def test_stable_hash_is_stable() -> None:
    assert stable_hash("198.51.100.1", "a") == stable_hash("198.51.100.1", "a")
    assert stable_hash("198.51.100.1", "a") != stable_hash("198.51.100.1", "b")
