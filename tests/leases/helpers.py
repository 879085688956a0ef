"""Builders shared by the leases tests."""

from __future__ import annotations

from l2lb.core.messages import Allocation, Heartbeat, InterfaceInfo


def alloc(key: str, *ips: str, etp: str = "Cluster", labels: dict[str, str] | None = None,
          external: tuple[str, ...] = (), pools: dict[str, str] | None = None,
          pool_labels: dict[str, dict[str, str]] | None = None, seq: int = 1) -> Allocation:
    ns, name = key.split("/")
    return Allocation(key=key, namespace=ns, name=name, uid=f"uid-{key}", generation=1, seq=seq, term=1,
                      ips=tuple(ips), external_ips=external, external_traffic_policy=etp,
                      labels=labels or {}, ip_pools=pools or {}, pool_labels=pool_labels or {})


def hb(node: str, *, seq: int = 1, labels: dict[str, str] | None = None,
       ifaces: tuple[tuple[str, bool], ...] = (("eth0", True),), serving: dict[str, int] | None = None,
       stopping: bool = False, instance: str = "i1", interval_ms: int = 100) -> Heartbeat:
    return Heartbeat(
        node=node, instance=instance, seq=seq, sent_at=0.0, interval_ms=interval_ms,
        labels=labels or {"kubernetes.io/hostname": node},
        interfaces=tuple(InterfaceInfo(name=n, mac="02:00:00:00:00:01", up=up) for n, up in ifaces),
        serving=serving or {}, stopping=stopping,
    )


ALL_LB = {
    "apiVersion": "l2lb.io/v1alpha1", "kind": "L2AnnouncementPolicy",
    "metadata": {"name": "all"}, "spec": {},
}
