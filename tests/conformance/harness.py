"""Conformance harness: static scenarios taken from the anchors' own unit tests.

A :class:`Case` is a static cluster state (pools, namespaces, Services with whatever they already
carry in ``status.loadBalancer.ingress``) plus what the anchor does with it: which IPs each Service
ends up with, or that it is refused (and why, where the anchor says). Sequences of steps in the
anchors' tests become one case per step: the state before the step (earlier Services with the IPs
they hold, older by creationTimestamp) and the Service of the step.

Every case runs through :func:`l2lb.lab.allocate.run` on YAML files written to a temporary
directory: the code path of ``l2lb allocate`` and of the allocator service at takeover
(``parse_service`` + ``Allocator.restore``). Facts, not code: the anchors are read for behaviour,
nothing of theirs is copied. Addresses are moved into TEST-NET ranges (each case module says how).

Where l2lb deliberately differs, the case carries ``l2lb=`` (what l2lb does) and ``differs=`` (why);
docs/install.md lists the same differences. ``python -m tests.conformance.report`` counts how many
cases agree with the anchor.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

POOL_CREATED = "2022-10-16T12:00:00Z"  # the anchors' test pools share one creation time
SVC_T0 = 1_700_000_000  # Services without an explicit creationTimestamp: one second apart, in list order


# ---------------------------------------------------------------------------------------------------
# expectations


@dataclass(frozen=True)
class Want:
    """One Service's outcome. ``reason`` None: refused, the anchor names no reason (MetalLB has none)."""

    ips: tuple[str, ...] = ()
    reason: str | None = "satisfied"
    alt: tuple[tuple[str, ...], ...] = ()  # other IP sets the anchor may pick (it orders pools at random)

    def describe(self) -> str:
        ips = ",".join(self.ips) or "no IP"
        if self.reason == "satisfied":
            return ips + (" (or " + " / ".join(",".join(a) for a in self.alt) + ")" if self.alt else "")
        return f"{ips}, {self.reason or 'refused'}"


def got(*ips: str, alt: Sequence[Sequence[str]] = ()) -> Want:
    return Want(tuple(ips), "satisfied", tuple(tuple(a) for a in alt))


def refused(reason: str | None = None) -> Want:
    return Want((), reason)


def partial(reason: str, *ips: str) -> Want:
    """IPs given although the request is not fully satisfied (Cilium keeps what it could allocate)."""
    return Want(tuple(ips), reason)


def ignored() -> Want:
    return Want((), "not_handled")


@dataclass(frozen=True)
class PoolWant:
    total: int | None = None
    used: int | None = None
    state: str | None = None  # "ok" | "conflict" | "disabled"


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "<anchor test file> <TestName>: <step>"
    objects: tuple[Any, ...]
    want: Mapping[str, Want]  # anchor outcome per Service key "namespace/name"
    pools: Mapping[str, PoolWant] = field(default_factory=dict)
    l2lb: Mapping[str, Want] | None = None  # l2lb's outcome where it deliberately differs
    l2lb_pools: Mapping[str, PoolWant] | None = None
    differs: str = ""
    cilium_compat: bool = False
    reasons: bool = True  # False: the anchor has no reason codes (MetalLB), any refusal agrees with it

    def __post_init__(self) -> None:
        if bool(self.differs) != (self.l2lb is not None or self.l2lb_pools is not None):
            raise ValueError(f"{self.name}: give both l2lb=/l2lb_pools= and differs=, or neither")

    @property
    def deliberate(self) -> bool:
        return bool(self.differs)

    def expected(self, side: str) -> tuple[Mapping[str, Want], Mapping[str, PoolWant]]:
        if side == "anchor":
            return self.want, self.pools
        return ({**self.want, **(self.l2lb or {})}, {**self.pools, **(self.l2lb_pools or {})})


# ---------------------------------------------------------------------------------------------------
# objects


def _meta(name: str, namespace: str | None, created: str | None, labels: Mapping[str, str] | None,
          annotations: Mapping[str, str] | None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name}
    if namespace is not None:
        m["namespace"] = namespace
    if created:
        m["creationTimestamp"] = created
    if labels:
        m["labels"] = dict(labels)
    if annotations:
        m["annotations"] = dict(annotations)
    return m


def cpool(name: str, *blocks: str, created: str = POOL_CREATED, api: str = "cilium.io/v2alpha1",
          **spec: Any) -> dict[str, Any]:
    """CiliumLoadBalancerIPPool; a block is a CIDR or "start-stop"."""
    bl: list[dict[str, str]] = []
    for b in blocks:
        if "-" in b:
            lo, hi = b.split("-")
            bl.append({"start": lo, "stop": hi})
        else:
            bl.append({"cidr": b})
    return {"apiVersion": api, "kind": "CiliumLoadBalancerIPPool",
            "metadata": _meta(name, None, created, None, None), "spec": {"blocks": bl, **spec}}


def mpool(name: str, *addresses: str, created: str = POOL_CREATED, **spec: Any) -> dict[str, Any]:
    """MetalLB IPAddressPool (``serviceAllocation`` etc. as keyword arguments)."""
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": _meta(name, "metallb-system", created, None, None),
            "spec": {"addresses": list(addresses), **spec}}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None, None, labels, None)}


def svc(name: str, ns: str = "default", *, ann: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None, status: Iterable[str] = (), ports: Iterable[str | int] = (),
        created: str | None = None, type: str = "LoadBalancer", **spec: Any) -> dict[str, Any]:
    """A Service; ports as "TCP/80", "UDP/53" or 80 (TCP)."""
    body: dict[str, Any] = {"type": type}
    pl = []
    for p in ports:
        proto, _, num = str(p).rpartition("/")
        pl.append({"port": int(num), "protocol": proto or "TCP"})
    if pl:
        body["ports"] = pl
    body.update(spec)
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                           "metadata": _meta(name, ns, created, labels, ann), "spec": body}
    ips = list(status)
    if ips:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}
    return obj


def with_pool_kind(case: Case, api: str, kind: str) -> Case:
    """The same case with every Cilium pool rewritten to another Cilium-schema kind."""
    objs = []
    for o in case.objects:
        if isinstance(o, dict) and o.get("kind") == "CiliumLoadBalancerIPPool":
            objs.append({**o, "apiVersion": api, "kind": kind})
        else:
            objs.append(o)
    return replace(case, objects=tuple(objs))


# ---------------------------------------------------------------------------------------------------
# running


def _stamped(objects: Sequence[Any]) -> list[Any]:
    out = []
    n = 0
    for o in objects:
        if isinstance(o, dict) and o.get("kind") == "Service":
            meta = o["metadata"]
            n += 1
            if "creationTimestamp" not in meta:
                t = _dt.datetime.fromtimestamp(SVC_T0 + n, tz=_dt.UTC)
                out.append({**o, "metadata": {**meta, "creationTimestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ")}})
                continue
        out.append(o)
    return out


def write_case(case: Case, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "state.yaml"
    path.write_text(yaml.safe_dump_all(_stamped(case.objects), sort_keys=False))
    return path


def run_case(case: Case, directory: Path) -> dict[str, Any]:
    """Allocate the case's state the way ``l2lb allocate --json`` does; returns that report."""
    from l2lb.lab.allocate import run

    write_case(case, directory)
    report: dict[str, Any] = run([str(directory)], cilium_compat=case.cilium_compat)
    # a JSON round trip: exactly what --json prints, nothing richer
    return dict(json.loads(json.dumps(report)))


def _norm(ips: Iterable[str]) -> tuple[str, ...]:
    import ipaddress

    return tuple(sorted((str(ipaddress.ip_address(i)) for i in ips),
                        key=lambda s: (ipaddress.ip_address(s).version, ipaddress.ip_address(s))))


def mismatches(case: Case, report: Mapping[str, Any], side: str) -> list[str]:
    """What differs between ``report`` and the case's expectation for ``side`` ("anchor" or "l2lb")."""
    want_svcs, want_pools = case.expected(side)
    got_svcs = {s["service"]: s for s in report["services"]}
    out = []
    if report.get("errors"):
        out.append(f"input errors: {report['errors']}")
    for key, w in sorted(want_svcs.items()):
        g = got_svcs.get(key)
        if g is None:
            out.append(f"{key}: not in the report")
            continue
        ips = _norm(g["ips"])
        options = [_norm(w.ips), *(_norm(a) for a in w.alt)]
        if ips not in options:
            out.append(f"{key}: got {','.join(ips) or 'no IP'}, want {w.describe()}")
        reason = w.reason
        if side == "anchor" and not case.reasons and reason not in ("satisfied", "not_handled"):
            reason = None
        if reason is None:
            if g["reason"] in ("satisfied", "not_handled"):
                out.append(f"{key}: got {g['reason']}, want a refusal")
        elif g["reason"] != reason:
            out.append(f"{key}: got reason {g['reason']} ({g['message']}), want {reason}")
    got_pools = {p["name"]: p for p in report["pools"]}
    for name, pw in sorted(want_pools.items()):
        p = got_pools.get(name)
        if p is None:
            out.append(f"pool {name}: not in the report")
            continue
        if pw.total is not None and p["total"] != pw.total:
            out.append(f"pool {name}: total {p['total']}, want {pw.total}")
        if pw.used is not None and p["used"] != pw.used:
            out.append(f"pool {name}: used {p['used']}, want {pw.used}")
        if pw.state is not None:
            state = "conflict" if p["conflict"] else "disabled" if p["disabled"] else "ok"
            if state != pw.state:
                out.append(f"pool {name}: {state}, want {pw.state}")
    return out


def check_case(case: Case, directory: Path) -> None:
    """The test body shared by both anchors' suites."""
    report = run_case(case, directory)
    bad = mismatches(case, report, "l2lb")
    assert not bad, f"{case.name} ({case.source}):\n  " + "\n  ".join(bad)
    if case.deliberate:
        # a documented difference must be real: the anchor's outcome is not what l2lb does
        assert mismatches(case, report, "anchor"), f"{case.name}: marked as a difference but agrees with the anchor"


def ids(cases: Sequence[Case]) -> list[str]:
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate case names: {sorted(dup)}")
    return names
