"""Small builders for core allocator tests."""

from __future__ import annotations

from typing import Any

from l2lb.core.models import Pool, ServiceRequest
from l2lb.core.parse import parse_pool, parse_service


def cpool(name: str, *blocks: str, created: str = "", **spec: Any) -> Pool:
    """A CiliumLoadBalancerIPPool; blocks are CIDRs or 'a-b' ranges."""
    bl: list[dict[str, str]] = []
    for b in blocks:
        if "-" in b:
            lo, hi = b.split("-")
            bl.append({"start": lo, "stop": hi})
        else:
            bl.append({"cidr": b})
    meta: dict[str, Any] = {"name": name}
    if created:
        meta["creationTimestamp"] = created
    return parse_pool({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                       "metadata": meta, "spec": {"blocks": bl, **spec}})


def mpool(name: str, *addresses: str, created: str = "", **spec: Any) -> Pool:
    meta: dict[str, Any] = {"name": name, "namespace": "metallb-system"}
    if created:
        meta["creationTimestamp"] = created
    return parse_pool({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                       "metadata": meta, "spec": {"addresses": list(addresses), **spec}})


def svc(name: str, ns: str = "default", *, ips: str | None = None, key: str | None = None,
        ports: tuple[tuple[str, int], ...] = (("TCP", 80),), labels: dict[str, str] | None = None,
        ann: dict[str, str] | None = None, created: str = "", **spec: Any) -> ServiceRequest:
    annotations = dict(ann or {})
    if ips is not None:
        annotations["lbipam.cilium.io/ips"] = ips
    if key is not None:
        annotations["lbipam.cilium.io/sharing-key"] = key
    meta: dict[str, Any] = {"name": name, "namespace": ns, "annotations": annotations,
                            "labels": labels or {}}
    if created:
        meta["creationTimestamp"] = created
    body: dict[str, Any] = {"type": "LoadBalancer",
                            "ports": [{"port": p, "protocol": proto} for proto, p in ports]}
    body.update(spec)
    return parse_service({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body})
