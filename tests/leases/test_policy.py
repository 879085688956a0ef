"""L2 announcement policies: parsing the three kinds unchanged, matching, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.core.policy import CILIUM, L2LB, METALLB, PolicyError, parse_policies, parse_policy, parse_selector

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _docs(path: Path, kind: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]


def test_seed_cilium_policy_read_unchanged() -> None:
    (obj,) = _docs(FIX / "seed" / "announce.yaml", "CiliumL2AnnouncementPolicy")
    p = parse_policy(obj)
    assert p.source == CILIUM
    assert p.name == "cilium/default-l2-announcement-policy"  # cluster-scoped: namespace ignored
    assert p.load_balancer_ips and p.external_ips
    assert p.interface_allowed("enp0s25")
    assert p.interface_allowed("enp0s25.10")  # unanchored like Cilium (Go regexp MatchString)
    anchored = parse_policy({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
                             "metadata": {"name": "a"}, "spec": {"interfaces": ["^enp0s25$"]}})
    assert anchored.interface_allowed("enp0s25") and not anchored.interface_allowed("enp0s25.10")
    assert not p.interface_allowed("eth0")
    assert p.selects_service("pihole", "dns", {})  # nil serviceSelector: every Service
    assert p.selects_node({"anything": "x"})


def test_seed_metallb_l2advertisement() -> None:
    (obj,) = _docs(FIX / "metallb" / "pihole-metallb.yaml", "L2Advertisement")
    p = parse_policy(obj)
    assert p.source == METALLB and p.name == "metallb/metallb-system/homelab"
    assert p.selects_pool("homelab", {})
    assert not p.selects_pool("other", {})
    assert not p.selects_pool(None, None)
    assert p.selects_ip_kind(external=False) and not p.selects_ip_kind(external=True)
    assert p.interface_allowed("anything")


def test_metallb_pool_selectors_node_selectors_interfaces() -> None:
    p = parse_policy({
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "a", "namespace": "metallb-system"},
        "spec": {"ipAddressPoolSelectors": [{"matchLabels": {"tier": "dmz"}}],
                 "nodeSelectors": [{"matchLabels": {"zone": "a"}}, {"matchLabels": {"zone": "b"}}],
                 "interfaces": ["eth0"]},
    })
    assert p.selects_pool("p1", {"tier": "dmz"}) and not p.selects_pool("p1", {"tier": "lan"})
    assert p.selects_node({"zone": "a"}) and p.selects_node({"zone": "b"})
    assert not p.selects_node({"zone": "c"})
    assert p.interface_allowed("eth0") and not p.interface_allowed("eth")  # exact names
    assert not p.interface_allowed("eth01")


def test_cilium_selectors_and_meta_labels() -> None:
    p = parse_policy({
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy", "metadata": {"name": "p"},
        "spec": {
            "serviceSelector": {"matchLabels": {"io.kubernetes.service.namespace": "pihole"},
                                "matchExpressions": [
                                    {"key": "tier", "operator": "NotIn", "values": ["dev"]}]},
            "nodeSelector": {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane",
                                                   "operator": "DoesNotExist"}]},
            "interfaces": ["^eth[0-9]+", "bond.*"],
            "loadBalancerIPs": True,
        },
    })
    assert p.selects_service("pihole", "dns", {"tier": "prod"})
    assert not p.selects_service("pihole", "dns", {"tier": "dev"})
    assert not p.selects_service("other", "dns", {})
    assert p.selects_node({}) and not p.selects_node({"node-role.kubernetes.io/control-plane": ""})
    assert p.interface_allowed("eth1") and p.interface_allowed("bond0") and not p.interface_allowed("veth1")
    assert not p.external_ips  # Cilium default false


def test_cilium_defaults_announce_nothing_own_kind_defaults_lb() -> None:
    c = parse_policy({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
                      "metadata": {"name": "p"}, "spec": {}})
    assert not c.selects_ip_kind(external=False) and not c.selects_ip_kind(external=True)
    o = parse_policy({"apiVersion": "l2lb.io/v1alpha1", "kind": "L2AnnouncementPolicy",
                      "metadata": {"name": "p"}, "spec": {"ipPools": ["a"],
                                                          "ipPoolSelector": {"matchLabels": {"x": "y"}}}})
    assert o.source == L2LB and o.selects_ip_kind(external=False) and not o.selects_ip_kind(external=True)
    assert o.selects_pool("a", {}) and o.selects_pool("b", {"x": "y"}) and not o.selects_pool("b", {})


@pytest.mark.parametrize(("spec", "needle"), [
    ({"interfaces": ["eth[0-"]}, "not a valid regex"),
    ({"interfaces": "eth0"}, "list of strings"),
    ({"loadBalancerIPs": "yes"}, "true or false"),
    ({"serviceSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}, "operator"),
    ({"serviceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "at least one value"),
    ({"nodeSelector": ["x"]}, "must be an object"),
])
def test_bad_policies_raise_clear_errors(spec: dict[str, Any], needle: str) -> None:
    obj = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
           "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(PolicyError, match=needle):
        parse_policy(obj)
    good, bad = parse_policies([obj, {"apiVersion": "l2lb.io/v1alpha1", "kind": "L2AnnouncementPolicy",
                                      "metadata": {"name": "ok"}}])
    assert [p.name for p in good] == ["l2lb/ok"]
    assert bad[0][0] == "bad" and needle in bad[0][1]


def test_unsupported_kind() -> None:
    with pytest.raises(PolicyError, match="unsupported"):
        parse_policy({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}})


def test_selector_semantics() -> None:
    s = parse_selector({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]},
                                             {"key": "b", "operator": "Exists"}]}, "sel")
    assert s.matches({"a": "1", "b": ""})
    assert not s.matches({"a": "3", "b": ""})
    assert not s.matches({"a": "1"})
    assert parse_selector({}, "sel").matches({})
