"""Which node answers for which IP: a pure, deterministic election.

Input: the current allocations, the announcement policies, the live nodes (their latest heartbeat:
labels and interfaces), EndpointSlice readiness per Service (nodes with a ready local endpoint, used
for ``externalTrafficPolicy: Local``), the current holders (ip -> node, epoch) and the last epochs
handed out (from Redis). Output: one :class:`IpAssignment` per announceable IP, the moves, a reason
for every IP that cannot be announced and an announcement state per Service.

Rules

* An IP is announced for the Services that use it (``ips``, and ``external_ips`` when a policy
  asks for them). A Service takes part when at least one policy selects it for that IP; when none
  does, it does not constrain the IP (it rides along on an IP shared with a selected Service).
* Eligible nodes of a Service for an IP: the union over its selecting policies of the nodes they
  select that have at least one allowed interface up (a node that reports no interfaces at all is
  eligible only through policies without an interface restriction); with ETP ``Local``, only nodes
  with a ready local endpoint. Eligible nodes of an IP: the intersection over its taking-part
  Services; allowed interfaces likewise intersected.
* Sticky: an IP stays on its holder while that node is alive and eligible (no rebalancing, ever).
* Otherwise it goes to the first of its pre-authorised successors (``preferred``) that is eligible, and
  when none is (or it has none), to the eligible node with the fewest IPs, ties broken by a stable hash
  of (ip, node); IPs are placed in address order, so the result does not depend on input order.
* Epochs: a holder keeps its epoch; a new holder gets ``max(last + 1, now_ms)`` where ``last`` is
  the highest of the stored last epoch and the current holder's epoch — strictly increasing per IP
  across restarts of leases and of Redis (the wall-clock part), given a clock that does not jump
  back by more than the time between two moves.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from l2lb.core.messages import Allocation, Heartbeat, VipAssignment
from l2lb.core.policy import L2Policy

__all__ = [
    "ElectionResult",
    "Holder",
    "IpAssignment",
    "Move",
    "ServiceState",
    "elect",
    "holders_from_serving",
    "normalize_ip",
    "stable_hash",
]

NO_POLICY = "no_policy"
NO_ELIGIBLE_NODE = "no_eligible_node"
INVALID_IP = "invalid_ip"


@dataclass(frozen=True, slots=True)
class Holder:
    node: str
    epoch: int


@dataclass(frozen=True, slots=True)
class IpAssignment:
    ip: str
    node: str
    epoch: int
    interfaces: tuple[str, ...] = ()  # allowed interface names; () = any (node reported none)
    services: tuple[str, ...] = ()

    def vip(self) -> VipAssignment:
        return VipAssignment(ip=self.ip, epoch=self.epoch, interfaces=self.interfaces, services=self.services)


@dataclass(frozen=True, slots=True)
class Move:
    ip: str
    old: str | None  # previous holder (None: newly announced)
    new: str | None  # new holder (None: no longer announced)
    epoch: int  # the new epoch (0 when new is None)
    reason: str  # new | holder_dead | holder_ineligible | no_policy | no_eligible_node | removed
    services: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceState:
    key: str
    announced: bool
    reason: str  # "announced" | NO_POLICY | NO_ELIGIBLE_NODE
    message: str
    nodes: tuple[str, ...] = ()  # nodes answering for this Service's IPs


@dataclass
class ElectionResult:
    assignments: dict[str, IpAssignment] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)
    unassigned: dict[str, str] = field(default_factory=dict)  # ip -> reason
    services: dict[str, ServiceState] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # epochs handed out in this run
    # assigned ip -> every eligible node -> its allowed interfaces (() = any): who could take the IP over
    eligible: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def by_node(self) -> dict[str, tuple[IpAssignment, ...]]:
        out: dict[str, list[IpAssignment]] = {}
        for a in self.assignments.values():
            out.setdefault(a.node, []).append(a)
        return {n: tuple(sorted(v, key=lambda a: _ip_sort_key(a.ip))) for n, v in sorted(out.items())}

    def holders(self) -> dict[str, Holder]:
        return {ip: Holder(a.node, a.epoch) for ip, a in self.assignments.items()}


@functools.lru_cache(maxsize=65536)
def normalize_ip(ip: str) -> str | None:
    try:
        return ipaddress.ip_address(ip.strip()).compressed
    except ValueError:
        return None


@functools.lru_cache(maxsize=65536)
def _ip_sort_key(ip: str) -> tuple[int, int, str]:
    try:
        a = ipaddress.ip_address(ip)
        return (a.version, int(a), ip)
    except ValueError:
        return (99, 0, ip)


def stable_hash(ip: str, node: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{ip}\x00{node}".encode()).digest()[:8], "big")


def holders_from_serving(heartbeats: Iterable[Heartbeat]) -> dict[str, Holder]:
    """Current holders as the announcers report them (highest epoch wins; ties by node name)."""
    out: dict[str, Holder] = {}
    for hb in sorted(heartbeats, key=lambda h: h.node):
        for raw, epoch in hb.serving.items():
            ip = normalize_ip(raw)
            if ip is None:
                continue
            cur = out.get(ip)
            if cur is None or epoch > cur.epoch:
                out[ip] = Holder(hb.node, epoch)
    return out


# Allowed interfaces on one node: a frozenset of names, or None for "any" (node reported none).
_Ifaces = frozenset[str] | None


def _node_ifaces(policy: L2Policy, hb: Heartbeat) -> tuple[bool, _Ifaces]:
    """(eligible, allowed interfaces) of one node under one policy (node selector already passed)."""
    if not hb.interfaces:
        return (not policy.restricts_interfaces(), None)
    names = frozenset(i.name for i in hb.interfaces if i.up and policy.interface_allowed(i.name))
    return (bool(names), names)


def _union(a: _Ifaces, b: _Ifaces) -> _Ifaces:
    if a is None or b is None:
        return None
    return a | b


def _intersect(a: _Ifaces, b: _Ifaces) -> _Ifaces:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


@dataclass
class _IpUse:
    services: list[Allocation] = field(default_factory=list)
    external: dict[str, bool] = field(default_factory=dict)  # service key -> used as external IP only


def elect(
    allocations: Iterable[Allocation],
    policies: Sequence[L2Policy],
    nodes: Mapping[str, Heartbeat],
    current: Mapping[str, Holder],
    *,
    now_ms: int,
    endpoints: Mapping[str, Collection[str]] | None = None,
    last_epochs: Mapping[str, int] | None = None,
    preferred: Mapping[str, Sequence[str]] | None = None,
) -> ElectionResult:
    """Run the election; see the module docstring. ``nodes`` holds live nodes only. ``preferred``: per IP,
    the nodes (in order) it goes to when its current holder can no longer keep it -- the first of them that
    is eligible -- instead of the least-loaded node (pre-authorised successors)."""
    endpoints = endpoints or {}
    last_epochs = last_epochs or {}
    preferred = preferred or {}
    res = ElectionResult()

    # 1. which Services use which IP
    uses: dict[str, _IpUse] = {}
    svc_ips: dict[str, list[str]] = {}
    for alloc in sorted(allocations, key=lambda a: a.key):
        if alloc.deleted:
            continue
        lb = {normalize_ip(i) for i in alloc.ips}
        ext = {normalize_ip(i) for i in alloc.external_ips}
        for ip in sorted(x for x in lb | ext if x is not None):
            u = uses.setdefault(ip, _IpUse())
            u.services.append(alloc)
            u.external[alloc.key] = ip not in lb
            svc_ips.setdefault(alloc.key, []).append(ip)
        if None in lb:
            bad = [i for i in alloc.ips if normalize_ip(i) is None]
            for b in bad:
                res.unassigned[b] = INVALID_IP

    # 2. eligible nodes (with interfaces) per IP; per-policy and per-Service work done once
    node_pol: list[dict[str, _Ifaces]] = []  # policy index -> nodes it selects that can announce
    for p in policies:
        m: dict[str, _Ifaces] = {}
        for name in sorted(nodes):
            hb = nodes[name]
            if p.selects_node(hb.labels):
                ok, ifs = _node_ifaces(p, hb)
                if ok:
                    m[name] = ifs
        node_pol.append(m)
    svc_pol: dict[str, tuple[int, ...]] = {}  # service key -> policies selecting the Service
    memo: dict[tuple[tuple[int, ...], frozenset[str] | None], dict[str, _Ifaces]] = {}
    eligible: dict[str, dict[str, _Ifaces]] = {}
    for ip, u in uses.items():
        ip_nodes: dict[str, _Ifaces] | None = None  # None: not constrained yet
        for alloc in u.services:
            external = u.external[alloc.key]
            pool = alloc.ip_pools.get(ip)
            pool_labels = alloc.pool_labels.get(pool) if pool is not None else None
            if alloc.key not in svc_pol:
                svc_pol[alloc.key] = tuple(
                    i for i, p in enumerate(policies) if p.selects_service(alloc.namespace, alloc.name, alloc.labels)
                )
            pols = tuple(
                i for i in svc_pol[alloc.key]
                if policies[i].selects_ip_kind(external) and policies[i].selects_pool(pool, pool_labels)
            )
            if not pols:
                continue
            local: frozenset[str] | None = None
            if alloc.external_traffic_policy == "Local":
                local = frozenset(endpoints.get(alloc.key, ()))
            svc_nodes = memo.get((pols, local))
            if svc_nodes is None:
                svc_nodes = {}
                for i in pols:
                    for name, ifs in node_pol[i].items():
                        if local is not None and name not in local:
                            continue
                        svc_nodes[name] = _union(svc_nodes[name], ifs) if name in svc_nodes else ifs
                memo[(pols, local)] = svc_nodes
            if ip_nodes is None:
                ip_nodes = svc_nodes
            else:
                merged: dict[str, _Ifaces] = {}
                for n, ifs in ip_nodes.items():
                    if n in svc_nodes:
                        both = _intersect(ifs, svc_nodes[n])
                        if both is None or both:
                            merged[n] = both
                ip_nodes = merged
        if ip_nodes is None:
            res.unassigned[ip] = NO_POLICY
        elif not ip_nodes:
            res.unassigned[ip] = NO_ELIGIBLE_NODE
        else:
            eligible[ip] = ip_nodes

    def _services(ip: str) -> tuple[str, ...]:
        return tuple(a.key for a in uses[ip].services)

    def _ifaces(ifs: _Ifaces) -> tuple[str, ...]:
        return () if ifs is None else tuple(sorted(ifs))

    # 3. sticky pass
    load: dict[str, int] = dict.fromkeys(nodes, 0)
    pending: list[str] = []
    for ip in sorted(eligible, key=_ip_sort_key):
        cur = current.get(ip)
        if cur is not None and cur.node in eligible[ip]:
            res.assignments[ip] = IpAssignment(ip, cur.node, cur.epoch, _ifaces(eligible[ip][cur.node]),
                                               _services(ip))
            load[cur.node] += 1
        else:
            pending.append(ip)

    # 4. place the rest: least-loaded eligible node, ties by stable hash
    for ip in pending:
        cands = eligible[ip]
        cur = current.get(ip)
        node = next((n for n in preferred.get(ip, ()) if n in cands), None) if cur is not None else None
        if node is None:
            node = min(cands, key=lambda n: (load[n], stable_hash(ip, n), n))
        load[node] += 1
        last = max(last_epochs.get(ip, 0), cur.epoch if cur is not None else 0)
        epoch = max(last + 1, now_ms)
        res.epochs[ip] = epoch
        res.assignments[ip] = IpAssignment(ip, node, epoch, _ifaces(cands[node]), _services(ip))
        if cur is None:
            reason = "new"
        elif cur.node in nodes:
            reason = "holder_ineligible"
        else:
            reason = "holder_dead"
        res.moves.append(Move(ip, cur.node if cur else None, node, epoch, reason, _services(ip)))

    for ip in res.assignments:
        res.eligible[ip] = {n: _ifaces(ifs) for n, ifs in eligible[ip].items()}

    # 5. holders that lost their IP altogether
    for ip in sorted(current, key=_ip_sort_key):
        if ip in res.assignments:
            continue
        why = res.unassigned.get(ip, "removed")
        res.moves.append(Move(ip, current[ip].node, None, 0, why, _services(ip) if ip in uses else ()))

    # 6. per-Service announcement state
    for key, ips in sorted(svc_ips.items()):
        states = {
            ip: ("assigned" if ip in res.assignments else res.unassigned.get(ip, NO_POLICY)) for ip in ips
        }
        alloc_ext = {ip for ip in ips if uses[ip].external[key]}
        considered = [ip for ip in ips if ip not in alloc_ext or states[ip] != NO_POLICY]
        held = sorted({res.assignments[ip].node for ip in considered if ip in res.assignments})
        if considered and all(states[ip] == "assigned" for ip in considered):
            msg = f"announced: {', '.join(considered)}"  # no node names: a move is not a condition change
            res.services[key] = ServiceState(key, True, "announced", msg, tuple(held))
        elif any(states[ip] == NO_ELIGIBLE_NODE for ip in considered):
            bad = [ip for ip in considered if states[ip] == NO_ELIGIBLE_NODE]
            res.services[key] = ServiceState(
                key, False, NO_ELIGIBLE_NODE,
                f"no live node is eligible to announce {', '.join(bad)} (policy node/interface selection"
                " or, with externalTrafficPolicy Local, no ready local endpoint)", tuple(held))
        else:
            bad = [ip for ip in (considered or ips) if states[ip] != "assigned"]
            res.services[key] = ServiceState(
                key, False, NO_POLICY, f"no L2 announcement policy selects this Service for {', '.join(bad)}",
                tuple(held))
    return res
