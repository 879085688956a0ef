"""LB-IPAM data model (pure): pools, Service requests, results.

Addresses are handled as integers ("address keys"): an IPv4 address is its 32-bit value, an IPv6
address is its 128-bit value plus ``V6`` (2**128), so both families live in one ordered key space
without collisions and a /64 is two integers, never 2**64 objects.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from l2lb.core.selectors import LabelSelector

__all__ = [
    "V6",
    "AllocationResult",
    "Block",
    "ParseError",
    "Pool",
    "PoolEvent",
    "PoolUpdate",
    "PoolUsage",
    "Reason",
    "ServiceAllocation",
    "ServiceRequest",
    "family_of",
    "key_of",
    "str_of",
]

V6 = 1 << 128


class ParseError(ValueError):
    """A resource (pool, selector, ...) that cannot be used; ``path`` names the bad field."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def key_of(ip: str) -> int:
    """Address key of an IP string; raises ValueError for anything that is not a plain IP."""
    parts = ip.split(".")
    if len(parts) == 4 and ":" not in ip:  # fast path for the common dotted quad
        k = 0
        for p in parts:
            if not (p.isdigit() and p.isascii()) or len(p) > 3 or (len(p) > 1 and p[0] == "0"):
                break
            v = int(p)
            if v > 255:
                break
            k = (k << 8) | v
        else:
            return k
    if "%" in ip or "/" in ip:
        raise ValueError(f"{ip!r} is not a plain IP address")
    a = ipaddress.ip_address(ip.strip())
    return int(a) if a.version == 4 else int(a) + V6


def family_of(key: int) -> int:
    return 6 if key >= V6 else 4


def str_of(key: int) -> str:
    if key < V6:
        return f"{key >> 24}.{(key >> 16) & 255}.{(key >> 8) & 255}.{key & 255}"
    n = key - V6
    h = [(n >> s) & 0xFFFF for s in range(112, -16, -16)]
    # RFC 5952: the longest run (>= 2) of zero groups becomes "::", the first one on ties
    best, best_len, i = -1, 1, 0
    while i < 8:
        if h[i] == 0:
            j = i
            while j < 8 and h[j] == 0:
                j += 1
            if j - i > best_len:
                best, best_len = i, j - i
            i = j
        else:
            i += 1
    if best < 0:
        return ":".join(f"{x:x}" for x in h)
    head = ":".join(f"{x:x}" for x in h[:best])
    tail = ":".join(f"{x:x}" for x in h[best + best_len:])
    return f"{head}::{tail}"


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a pool: a CIDR (``prefix`` set) or a start/stop range, as address keys."""

    first: int  # address key of the first address (network address of a CIDR)
    last: int  # address key of the last address (broadcast address of a CIDR), inclusive
    prefix: int | None = None  # CIDR prefix length; None for a start/stop range
    text: str = ""  # as written, for messages

    @property
    def family(self) -> int:
        return family_of(self.first)

    def usable(self, allow_first_last: bool) -> tuple[int, int] | None:
        """The allocatable range: a CIDR's first/last address is reserved unless allowed or the
        CIDR is a /31, /32, /127 or /128. None when nothing is left."""
        lo, hi = self.first, self.last
        if self.prefix is not None and not allow_first_last:
            small = self.prefix >= (31 if self.family == 4 else 127)
            if not small:
                lo, hi = lo + 1, hi - 1
        return (lo, hi) if lo <= hi else None

    @staticmethod
    def cidr(text: str) -> Block:
        n = ipaddress.ip_network(text.strip(), strict=False)
        off = 0 if n.version == 4 else V6
        return Block(int(n.network_address) + off, int(n.broadcast_address) + off, n.prefixlen, text.strip())

    @staticmethod
    def range(start: str, stop: str) -> Block:
        a, b = key_of(start), key_of(stop)
        if family_of(a) != family_of(b):
            raise ValueError(f"start {start} and stop {stop} are of different IP families")
        if a > b:
            raise ValueError(f"start {start} is after stop {stop}")
        return Block(a, b, None, f"{start.strip()}-{stop.strip()}")


@dataclass(frozen=True, slots=True)
class ServiceAllocation:
    """MetalLB ``serviceAllocation``: which Services may use a pool, and its priority."""

    priority: int = 0  # lower is preferred; 0 = unset (after pools with a priority)
    namespaces: tuple[str, ...] = ()
    namespace_selectors: tuple[LabelSelector, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    blocks: tuple[Block, ...]
    kind: str = "LoadBalancerIPPool"  # source kind: CiliumLoadBalancerIPPool, IPAddressPool, ...
    api_version: str = "l2lb.io/v1alpha1"
    created: str = ""  # metadata.creationTimestamp (RFC 3339); older pools win overlaps
    uid: str = ""
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False
    # Cilium >= 1.16: only an explicit allowFirstLastIPs: No reserves a CIDR's first and last address
    allow_first_last: bool = True
    service_selector: LabelSelector | None = None  # Cilium serviceSelector; None = every Service
    auto_assign: bool = True
    avoid_buggy_ips: bool = False  # skip x.x.x.0 and x.x.x.255 (IPv4)
    allocation: ServiceAllocation | None = None

    @property
    def metallb(self) -> bool:
        """A MetalLB IPAddressPool: Services it serves follow MetalLB's rules, others Cilium's."""
        return self.kind == "IPAddressPool"

    def ranges(self) -> list[tuple[int, int]]:
        out = []
        for b in self.blocks:
            r = b.usable(self.allow_first_last)
            if r is not None:
                out.append(r)
        return out


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """What the allocator needs to know of one Service (built by ``parse.parse_service``)."""

    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    created: str = ""  # creationTimestamp: on restore, older Services win contested IPs
    labels: Mapping[str, str] = field(default_factory=dict)
    requested_ips: tuple[str, ...] = ()  # normalised; spec.loadBalancerIP and the annotation, in that order
    spec_ips: tuple[str, ...] = ()  # from spec.loadBalancerIP
    annotation_ips: tuple[str, ...] = ()  # from the requested-IPs annotation (annotation_source)
    annotation_source: str = ""  # the annotation annotation_ips came from
    pool: str | None = None  # metallb.io/address-pool
    sharing_key: str | None = None
    share_namespaces: tuple[str, ...] = ()  # lbipam.cilium.io/sharing-cross-namespace ("*" = all)
    ip_families: tuple[int, ...] = ()  # (4,), (6,), (4, 6) ...; spec.ipFamilies, else of clusterIPs; () = unknown
    ip_family_policy: str = "SingleStack"  # SingleStack | PreferDualStack | RequireDualStack
    ports: tuple[tuple[str, int], ...] = ()  # (protocol, port)
    external_traffic_policy: str = "Cluster"
    selector: Mapping[str, str] = field(default_factory=dict)  # spec.selector (pods)
    external_ips: tuple[str, ...] = ()
    load_balancer_class: str = ""
    handled: bool = True  # False: not type LoadBalancer or another class -> released, ignored
    problems: tuple[str, ...] = ()  # invalid annotations etc. -> invalid_request
    notes: tuple[str, ...] = ()  # ignored inputs worth a word (an older annotation spelling overridden ...)
    namespace_labels: Mapping[str, str] | None = None  # for MetalLB namespaceSelectors
    key: str = field(init=False, compare=False, repr=False)  # "namespace/name"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")


class Reason(StrEnum):
    SATISFIED = "satisfied"
    NO_POOL = "no_pool"
    POOL_SELECTOR_MISMATCH = "pool_selector_mismatch"
    ALREADY_ALLOCATED = "already_allocated"
    ALREADY_ALLOCATED_INCOMPATIBLE = "already_allocated_incompatible_service"
    OUT_OF_IPS = "out_of_ips"
    INVALID_REQUEST = "invalid_request"
    POOL_CONFLICT = "pool_conflict"
    POOL_DISABLED = "pool_disabled"
    NOT_HANDLED = "not_handled"  # not ours (type/class); any IPs were released


@dataclass(frozen=True, slots=True)
class AllocationResult:
    key: str
    reason: Reason
    message: str
    ips: tuple[str, ...] = ()
    pools: Mapping[str, str] = field(default_factory=dict)  # ip -> pool name
    changed: bool = False  # the IP set differs from the one before this call
    released: tuple[str, ...] = ()  # IPs this Service gave up in this call
    invalid_existing: tuple[str, ...] = ()  # "ip: why" for existing IPs that could not be kept

    @property
    def ok(self) -> bool:
        return self.reason is Reason.SATISFIED


@dataclass(frozen=True, slots=True)
class PoolEvent:
    pool: str
    kind: str  # "conflict" | "conflict_resolved" | "added" | "removed" | "updated"
    message: str = ""


@dataclass(frozen=True, slots=True)
class PoolUpdate:
    events: tuple[PoolEvent, ...] = ()
    results: tuple[AllocationResult, ...] = ()  # Services whose allocation changed as a consequence


@dataclass(frozen=True, slots=True)
class PoolUsage:
    total: int  # allocatable addresses (may be huge for IPv6)
    used: int
    available: int
    disabled: bool = False
    conflict: bool = False
    conflict_message: str = ""
