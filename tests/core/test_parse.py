from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.core.models import V6, ParseError, key_of
from l2lb.core.parse import (
    CILIUM_BGP_CLASS,
    CILIUM_CLASSES,
    CILIUM_L2_CLASS,
    DEFAULT_CLASSES,
    is_pool,
    is_service,
    parse_pool,
    parse_service,
    status_ips,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def docs(*names: str) -> list[dict[str, Any]]:
    out = []
    for n in names:
        out += [d for d in yaml.safe_load_all((FIX / n).read_text()) if d]
    return out


def test_seed_pool_parses_unchanged() -> None:
    (pool,) = [parse_pool(d) for d in docs("seed/ip-pool.yaml") if is_pool(d)]
    assert pool.name == "default-pool"
    assert pool.kind == "CiliumLoadBalancerIPPool"
    # Cilium >= 1.16: allowFirstLastIPs unset means Yes, the whole /25 is handed out
    assert pool.allow_first_last
    assert pool.ranges() == [(key_of("192.168.1.128"), key_of("192.168.1.255"))]
    assert pool.service_selector is None and not pool.disabled


def test_seed_services() -> None:
    reqs = {r.name: r for r in (parse_service(d) for d in docs("seed/pihole.yaml") if is_service(d))}
    assert set(reqs) == {"pihole-dns-tcp", "pihole-dns-udp", "pihole-web"}
    tcp = reqs["pihole-dns-tcp"]
    assert tcp.requested_ips == ("192.168.1.153",) and tcp.sharing_key == "pi-hole"
    assert tcp.ports == (("TCP", 53),) and tcp.handled and not tcp.problems
    assert reqs["pihole-dns-udp"].ports == (("UDP", 53),)
    assert reqs["pihole-web"].requested_ips == () and reqs["pihole-web"].sharing_key is None


def test_metallb_pool_and_annotations() -> None:
    ds = docs("metallb/pihole-metallb.yaml")
    (pool,) = [parse_pool(d) for d in ds if is_pool(d)]
    assert pool.kind == "IPAddressPool" and pool.allow_first_last and pool.auto_assign
    assert [b.text for b in pool.blocks] == ["192.168.1.128/25", "192.168.1.10-192.168.1.20"]
    assert sum(hi - lo + 1 for lo, hi in pool.ranges()) == 128 + 11
    reqs = [parse_service(d) for d in ds if is_service(d)]
    assert {r.requested_ips for r in reqs} == {("192.168.1.153",)}
    assert {r.sharing_key for r in reqs} == {"pi-hole"}


@pytest.mark.parametrize("api", ["cilium.io/v2alpha1", "cilium.io/v2"])
def test_cilium_versions_and_fields(api: str) -> None:
    p = parse_pool({
        "apiVersion": api, "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"a": "b"}},
        "spec": {"blocks": [{"cidr": "2001:db8::/64"}, {"start": "198.51.100.10", "stop": "198.51.100.20"},
                            {"start": "203.0.113.7"}],
                 "disabled": True, "allowFirstLastIPs": "Yes",
                 "serviceSelector": {"matchLabels": {"color": "blue"}}},
    })
    assert p.disabled and p.allow_first_last and p.created.startswith("2024") and p.labels == {"a": "b"}
    r = p.ranges()
    assert r[0] == (V6 + int(__import__("ipaddress").ip_address("2001:db8::")),
                    V6 + int(__import__("ipaddress").ip_address("2001:db8::ffff:ffff:ffff:ffff")))
    assert r[2] == (key_of("203.0.113.7"), key_of("203.0.113.7"))
    assert p.service_selector is not None and p.service_selector.matches({"color": "blue"})


def test_own_crd_and_v2alpha1_cidrs_alias() -> None:
    p = parse_pool({"apiVersion": "l2lb.io/v1alpha1", "kind": "LoadBalancerIPPool", "metadata": {"name": "x"},
                    "spec": {"blocks": [{"cidr": "198.51.100.0/30"}]}})
    # l2lb's own kind follows Cilium >= 1.16: the whole CIDR unless allowFirstLastIPs is No
    assert p.kind == "LoadBalancerIPPool" and p.ranges() == [(key_of("198.51.100.0"), key_of("198.51.100.3"))]
    p = parse_pool({"apiVersion": "l2lb.io/v1alpha1", "kind": "LoadBalancerIPPool", "metadata": {"name": "x"},
                    "spec": {"blocks": [{"cidr": "198.51.100.0/30"}], "allowFirstLastIPs": "No"}})
    assert p.ranges() == [(key_of("198.51.100.1"), key_of("198.51.100.2"))]
    q = parse_pool({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                    "metadata": {"name": "y"}, "spec": {"cidrs": [{"cidr": "198.51.100.0/31"}]}})
    assert q.ranges() == [(key_of("198.51.100.0"), key_of("198.51.100.1"))]  # /31: nothing reserved


@pytest.mark.parametrize(
    ("prefix", "allow", "want"),
    [("198.51.100.0/24", False, 254), ("198.51.100.0/24", True, 256), ("198.51.100.0/31", False, 2),
     ("198.51.100.0/32", False, 1), ("2001:db8::/126", False, 2), ("2001:db8::/127", False, 2),
     ("2001:db8::/128", False, 1)],
)
def test_first_last_reservation(prefix: str, allow: bool, want: int) -> None:
    p = parse_pool({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
                    "spec": {"blocks": [{"cidr": prefix}], "allowFirstLastIPs": "Yes" if allow else "No"}})
    assert sum(hi - lo + 1 for lo, hi in p.ranges()) == want


def test_metallb_service_allocation() -> None:
    p = parse_pool({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "m"},
                    "spec": {"addresses": ["198.51.100.0/24"], "autoAssign": False, "avoidBuggyIPs": True,
                             "serviceAllocation": {"priority": 5, "namespaces": ["a"],
                                                   "namespaceSelectors": [{"matchLabels": {"team": "x"}}],
                                                   "serviceSelectors": [{"matchLabels": {"app": "y"}}]}}})
    assert not p.auto_assign and p.avoid_buggy_ips and p.allocation is not None
    assert p.allocation.priority == 5 and p.allocation.namespaces == ("a",)
    assert p.allocation.namespace_selectors[0].matches({"team": "x"})


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, "kind"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "spec": {}}, "metadata"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {}}, "metadata.name"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"}}, "spec"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
          "spec": {"blocks": []}}, "spec.blocks"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
          "spec": {"blocks": [{"cidr": "10.0.0.0/8"}, {"cidr": "300.1.2.0/24"}]}}, "spec.blocks[1].cidr"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
          "spec": {"blocks": [{"start": "10.0.0.9", "stop": "10.0.0.1"}]}}, "spec.blocks[0].start"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
          "spec": {"blocks": [{"start": "10.0.0.1", "stop": "2001:db8::1"}]}}, "spec.blocks[0].start"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
          "spec": {"blocks": [{"cidr": "10.0.0.0/8", "start": "10.0.0.1"}]}}, "spec.blocks[0]"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
          "spec": {"blocks": [{"cidr": "10.0.0.0/8"}], "disabled": "maybe"}}, "spec.disabled"),
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "x"},
          "spec": {"blocks": [{"cidr": "10.0.0.0/8"}],
                   "serviceSelector": {"matchExpressions": [{"key": "a", "operator": "Bad"}]}}},
         "spec.serviceSelector.matchExpressions[0].operator"),
        ({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "x"},
          "spec": {"addresses": ["10.0.0.5-10.0.0.1"]}}, "spec.addresses[0]"),
        ({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "x"},
          "spec": {"addresses": ["10.0.0.0/24"], "serviceAllocation": {"priority": -1}}},
         "spec.serviceAllocation.priority"),
    ],
)
def test_pool_errors_name_the_field(obj: dict[str, Any], path: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse_pool(obj)
    assert ei.value.path == path
    assert path in str(ei.value)


def _svc(ann: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "n", "annotations": ann or {}},
            "spec": {"type": "LoadBalancer", **spec}}


@pytest.mark.parametrize(
    "ann",
    ["io.cilium/lb-ipam-ips", "lbipam.cilium.io/ips", "metallb.io/loadBalancerIPs",
     "metallb.universe.tf/loadBalancerIPs"],
)
def test_every_ip_annotation(ann: str) -> None:
    r = parse_service(_svc({ann: "198.51.100.7, 2001:db8:0::5"}))
    assert r.requested_ips == ("198.51.100.7", "2001:db8::5") and not r.problems


def test_load_balancer_ip_and_disagreement() -> None:
    assert parse_service(_svc(loadBalancerIP="198.51.100.9")).requested_ips == ("198.51.100.9",)
    # spec.loadBalancerIP and the annotation are kept apart: Cilium rules take both, MetalLB's refuse both
    r = parse_service(_svc({"lbipam.cilium.io/ips": "198.51.100.1"}, loadBalancerIP="198.51.100.2"))
    assert not r.problems and r.requested_ips == ("198.51.100.2", "198.51.100.1")
    assert r.spec_ips == ("198.51.100.2",) and r.annotation_ips == ("198.51.100.1",)
    assert r.annotation_source == "lbipam.cilium.io/ips"
    # the two vendors' annotations must agree ...
    r = parse_service(_svc({"lbipam.cilium.io/ips": "198.51.100.1", "metallb.io/loadBalancerIPs": "198.51.100.2"}))
    assert r.problems and "disagrees" in r.problems[0]
    # ... within one vendor the current spelling wins, with a note
    r = parse_service(_svc({"metallb.io/loadBalancerIPs": "198.51.100.1",
                            "metallb.universe.tf/loadBalancerIPs": "198.51.100.2"}))
    assert not r.problems and r.requested_ips == ("198.51.100.1",)
    assert r.notes == ("annotation metallb.universe.tf/loadBalancerIPs=198.51.100.2 ignored: "
                       "metallb.io/loadBalancerIPs=198.51.100.1 takes precedence",)
    r = parse_service(_svc({"lbipam.cilium.io/ips": "198.51.100.1", "io.cilium/lb-ipam-ips": "198.51.100.2"}))
    assert r.requested_ips == ("198.51.100.1",) and len(r.notes) == 1
    r = parse_service(_svc({"lbipam.cilium.io/ips": "198.51.100.1,nonsense"}))
    assert r.problems == ("annotation lbipam.cilium.io/ips: 'nonsense' is not an IP address",)
    r = parse_service(_svc({"lbipam.cilium.io/ips": "198.51.100.0/24"}))
    assert r.problems


@pytest.mark.parametrize(
    "ann",
    ["io.cilium/lb-ipam-sharing-key", "lbipam.cilium.io/sharing-key", "metallb.io/allow-shared-ip",
     "metallb.universe.tf/allow-shared-ip"],
)
def test_every_sharing_annotation(ann: str) -> None:
    assert parse_service(_svc({ann: "k1"})).sharing_key == "k1"


def test_sharing_cross_namespace_and_pool_annotation() -> None:
    r = parse_service(_svc({"lbipam.cilium.io/sharing-cross-namespace": "a, b", "metallb.io/address-pool": "p"}))
    assert r.share_namespaces == ("a", "b") and r.pool == "p"
    r = parse_service(_svc({"metallb.io/allow-shared-ip": "a", "lbipam.cilium.io/sharing-key": "b"}))
    assert r.problems and "sharing key" in r.problems[0]
    r = parse_service(_svc({"metallb.io/allow-shared-ip": "a", "metallb.universe.tf/allow-shared-ip": "b",
                            "metallb.io/address-pool": "p", "metallb.universe.tf/address-pool": "q"}))
    assert not r.problems and r.sharing_key == "a" and r.pool == "p" and len(r.notes) == 2
    r = parse_service(_svc({"lbipam.cilium.io/sharing-cross-namespace": "a",
                            "io.cilium/lb-ipam-sharing-cross-namespace": "b"}))
    assert r.share_namespaces == ("a",)  # Cilium reads the first spelling that is set


@pytest.mark.parametrize(
    ("spec", "handled"),
    [({}, True), ({"loadBalancerClass": "l2lb.io/l2"}, True), ({"loadBalancerClass": "other"}, False),
     ({"loadBalancerClass": CILIUM_L2_CLASS}, False), ({"type": "ClusterIP"}, False)],
)
def test_handled_classes(spec: dict[str, Any], handled: bool) -> None:
    assert parse_service(_svc(**spec)).handled is handled


def test_cilium_compat_class() -> None:
    r = parse_service(_svc(loadBalancerClass=CILIUM_L2_CLASS), classes=frozenset({"l2lb.io/l2", CILIUM_L2_CLASS}))
    assert r.handled
    for cls in (CILIUM_L2_CLASS, CILIUM_BGP_CLASS):
        assert parse_service(_svc(loadBalancerClass=cls), classes=DEFAULT_CLASSES | CILIUM_CLASSES).handled
        assert not parse_service(_svc(loadBalancerClass=cls)).handled


def test_families_from_cluster_ips_when_ip_families_missing() -> None:
    assert parse_service(_svc(clusterIPs=["fd00::1", "10.96.0.1"])).ip_families == (6, 4)
    assert parse_service(_svc(clusterIP="10.96.0.1")).ip_families == (4,)
    assert parse_service(_svc(clusterIP="None")).ip_families == ()
    assert parse_service(_svc(ipFamilies=["IPv4"], clusterIPs=["fd00::1"])).ip_families == (4,)


def test_families_ports_policy_and_status() -> None:
    r = parse_service(_svc(ipFamilies=["IPv6", "IPv4"], ipFamilyPolicy="PreferDualStack",
                           ports=[{"port": 53, "protocol": "UDP"}, {"port": 80}],
                           externalTrafficPolicy="Local", selector={"app": "x"}, externalIPs=["203.0.113.5"]))
    assert r.ip_families == (6, 4) and r.ip_family_policy == "PreferDualStack"
    assert r.ports == (("UDP", 53), ("TCP", 80)) and r.external_traffic_policy == "Local"
    assert r.selector == {"app": "x"} and r.external_ips == ("203.0.113.5",)
    bad = parse_service(_svc(ipFamilies=["IPv5"], ipFamilyPolicy="Sometimes"))
    assert len(bad.problems) == 2
    obj = _svc()
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.3"}, {"hostname": "x"}]}}
    assert status_ips(obj) == ["198.51.100.3"]
    assert status_ips({}) == []


def test_service_without_name_raises() -> None:
    with pytest.raises(ParseError) as ei:
        parse_service({"kind": "Service", "metadata": {"namespace": "x"}})
    assert ei.value.path == "metadata.name"
