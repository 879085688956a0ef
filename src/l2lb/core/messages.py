"""Versioned message schemas carried on the Redis bus (pure: no I/O).

Every message is a JSON object with a kind (``k``) and a schema version (``v``).
Encoding: compact JSON (``separators=(",", ":")``), UTF-8, stored in the single field
``m`` of a stream entry. Decoding rules:

* unknown *newer* fields are ignored (forward compatibility within a major version);
* a version newer than this code knows is accepted when its major part matches, i.e. every
  ``v`` in ``SUPPORTED[kind]`` or higher with the same major; here versions are plain ints and a
  version greater than the current one is read with the current reader (unknown fields ignored);
* an *older* version that is no longer supported (``v < MIN_VERSION[kind]``) or a malformed
  message raises :class:`MessageError`; the consumer logs it and dead-letters the entry.

The schemas are documented in ``docs/bus.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, TypeVar

__all__ = [
    "Allocation",
    "AllocationSnapshot",
    "Conflict",
    "Heartbeat",
    "HeartbeatEncoder",
    "InterfaceInfo",
    "MessageError",
    "NodeAssignments",
    "NodeRenewal",
    "PortSpec",
    "SnapshotRequest",
    "StandbyVip",
    "Successor",
    "VipAssignment",
    "assignments_digest",
    "decode",
    "encode",
    "serving_digest",
]


class MessageError(ValueError):
    """A bus message that cannot be read: malformed, wrong kind, or unsupported version."""


def _req(d: dict[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise MessageError(f"missing field {key!r}")
    val = d[key]
    if not isinstance(val, typ) or (isinstance(val, bool) and typ in (int, float, (int, float))):
        raise MessageError(f"field {key!r} has type {type(val).__name__}")
    return val


def _opt(d: dict[str, Any], key: str, typ: type | tuple[type, ...], default: Any) -> Any:
    if key not in d or d[key] is None:
        return default
    val = d[key]
    if not isinstance(val, typ):
        raise MessageError(f"field {key!r} has type {type(val).__name__}")
    return val


def _str_list(d: dict[str, Any], key: str) -> tuple[str, ...]:
    val = _opt(d, key, list, [])
    if not all(isinstance(x, str) for x in val):
        raise MessageError(f"field {key!r} must be a list of strings")
    return tuple(val)


def _str_dict(d: dict[str, Any], key: str) -> dict[str, str]:
    val = _opt(d, key, dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in val.items()):
        raise MessageError(f"field {key!r} must map strings to strings")
    return dict(val)


@dataclass(frozen=True, slots=True)
class PortSpec:
    protocol: str  # "TCP" | "UDP" | "SCTP"
    port: int

    @staticmethod
    def from_obj(o: Any) -> PortSpec:
        if not isinstance(o, dict):
            raise MessageError("port must be an object")
        return PortSpec(protocol=_req(o, "protocol", str), port=_req(o, "port", int))


@dataclass(frozen=True, slots=True)
class Allocation:
    """allocator -> leases: the current allocation of one Service (or its removal)."""

    KIND: ClassVar[str] = "allocation"
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    key: str  # "namespace/name"
    namespace: str
    name: str
    uid: str
    generation: int
    seq: int  # allocator's monotonically increasing sequence (per allocator term)
    term: int  # allocator leader term (fencing of an old leader)
    deleted: bool = False
    ips: tuple[str, ...] = ()  # allocated LoadBalancer IPs (status.loadBalancer.ingress)
    external_ips: tuple[str, ...] = ()  # spec.externalIPs
    ports: tuple[PortSpec, ...] = ()
    external_traffic_policy: str = "Cluster"
    labels: dict[str, str] = field(default_factory=dict)
    ip_pools: dict[str, str] = field(default_factory=dict)  # ip -> pool name
    pool_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # pool -> labels
    load_balancer_class: str = ""

    def to_dict(self) -> dict[str, Any]:
        # written out by hand: dataclasses.asdict deep-copies and costs ~5x more on snapshots
        return {
            "key": self.key, "namespace": self.namespace, "name": self.name, "uid": self.uid,
            "generation": self.generation, "seq": self.seq, "term": self.term, "deleted": self.deleted,
            "ips": list(self.ips), "external_ips": list(self.external_ips),
            "ports": [{"protocol": p.protocol, "port": p.port} for p in self.ports],
            "external_traffic_policy": self.external_traffic_policy, "labels": dict(self.labels),
            "ip_pools": dict(self.ip_pools), "pool_labels": {k: dict(v) for k, v in self.pool_labels.items()},
            "load_balancer_class": self.load_balancer_class,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Allocation:
        ports = _opt(d, "ports", list, [])
        pool_labels = _opt(d, "pool_labels", dict, {})
        if not all(isinstance(v, dict) for v in pool_labels.values()):
            raise MessageError("field 'pool_labels' must map pool names to label maps")
        return cls(
            key=_req(d, "key", str),
            namespace=_req(d, "namespace", str),
            name=_req(d, "name", str),
            uid=_opt(d, "uid", str, ""),
            generation=_opt(d, "generation", int, 0),
            seq=_req(d, "seq", int),
            term=_opt(d, "term", int, 0),
            deleted=_opt(d, "deleted", bool, False),
            ips=_str_list(d, "ips"),
            external_ips=_str_list(d, "external_ips"),
            ports=tuple(PortSpec.from_obj(p) for p in ports),
            external_traffic_policy=_opt(d, "external_traffic_policy", str, "Cluster"),
            labels=_str_dict(d, "labels"),
            ip_pools=_str_dict(d, "ip_pools"),
            pool_labels={k: _str_dict(pool_labels, k) for k in pool_labels},
            load_balancer_class=_opt(d, "load_balancer_class", str, ""),
        )


@dataclass(frozen=True, slots=True)
class AllocationSnapshot:
    """allocator -> leases: the full set of current allocations (resync)."""

    KIND: ClassVar[str] = "allocation_snapshot"
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    term: int
    seq: int
    allocations: tuple[Allocation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "seq": self.seq, "allocations": [a.to_dict() for a in self.allocations]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AllocationSnapshot:
        items = _opt(d, "allocations", list, [])
        allocs = []
        for it in items:
            if not isinstance(it, dict):
                raise MessageError("snapshot allocations must be objects")
            allocs.append(Allocation.from_dict(it))
        return cls(term=_req(d, "term", int), seq=_req(d, "seq", int), allocations=tuple(allocs))


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """any consumer -> a producer: please republish a full snapshot (reason for the logs)."""

    KIND: ClassVar[str] = "snapshot_request"
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    topic: str  # "allocations" | "assignments"
    requester: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotRequest:
        return cls(
            topic=_req(d, "topic", str), requester=_req(d, "requester", str), reason=_opt(d, "reason", str, "")
        )


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    name: str
    mac: str  # "aa:bb:cc:dd:ee:ff"
    up: bool
    addresses: tuple[str, ...] = ()  # "198.51.100.2/24", "2001:db8::2/64"
    ifindex: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mac": self.mac, "up": self.up, "addresses": list(self.addresses),
                "ifindex": self.ifindex}

    @staticmethod
    def from_obj(o: Any) -> InterfaceInfo:
        if not isinstance(o, dict):
            raise MessageError("interface must be an object")
        return InterfaceInfo(
            name=_req(o, "name", str), mac=_req(o, "mac", str), up=_req(o, "up", bool),
            addresses=_str_list(o, "addresses"), ifindex=_opt(o, "ifindex", int, 0),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """announcer -> leases: I am alive, these are my labels and interfaces."""

    KIND: ClassVar[str] = "heartbeat"
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    node: str
    instance: str  # random id of this announcer process (a restart is a new instance)
    seq: int  # strictly increasing per instance
    sent_at: float  # wall clock (s): lag metrics, which of two instances is older; liveness uses receipt time
    interval_ms: int
    labels: dict[str, str] = field(default_factory=dict)
    interfaces: tuple[InterfaceInfo, ...] = ()
    # VIPs this announcer is currently answering for, with their epochs: lets leases detect
    # dual announcement and resume after its own restart without moving anything.
    serving: dict[str, int] = field(default_factory=dict)
    stopping: bool = False  # graceful shutdown: hand over at once
    # Optional, added within v1 (written only when set; older readers ignore them):
    # ``serving_digest``: :func:`serving_digest` of the serving map this heartbeat stands for;
    # ``serving_omitted``: ``serving`` is left out on the wire ({} here) and means the map this
    # ``instance`` last sent in full with ``serving_digest`` (a reader without it knows the map is unknown).
    serving_digest: str = ""
    serving_omitted: bool = False
    # ``lan_heard``: the nodes whose LAN peer frames this announcer heard within its peer timeout when it
    # built this heartbeat (sorted); None: it has no LAN peers (--no-peers, or an older announcer). Leases
    # uses it only right after a reconnect, to tell a node whose Redis client is late from a dead one.
    lan_heard: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "node": self.node, "instance": self.instance, "seq": self.seq, "sent_at": self.sent_at,
            "interval_ms": self.interval_ms, "labels": dict(self.labels),
            "interfaces": [i.to_dict() for i in self.interfaces], "serving": dict(self.serving),
            "stopping": self.stopping,
        }
        if self.serving_digest:
            d["serving_digest"] = self.serving_digest
        if self.serving_omitted:
            d["serving_omitted"] = True
        if self.lan_heard is not None:
            d["lan_heard"] = list(self.lan_heard)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Heartbeat:
        serving = _opt(d, "serving", dict, {})
        if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in serving.items()):
            raise MessageError("field 'serving' must map IPs to epochs")
        digest = _opt(d, "serving_digest", str, "")
        omitted = _opt(d, "serving_omitted", bool, False)
        if omitted and (serving or not digest):
            raise MessageError("an omitted serving map needs an empty 'serving' and a 'serving_digest'")
        return cls(
            node=_req(d, "node", str), instance=_req(d, "instance", str), seq=_req(d, "seq", int),
            sent_at=float(_req(d, "sent_at", (int, float))), interval_ms=_req(d, "interval_ms", int),
            labels=_str_dict(d, "labels"),
            interfaces=tuple(InterfaceInfo.from_obj(i) for i in _opt(d, "interfaces", list, [])),
            serving=dict(serving), stopping=_opt(d, "stopping", bool, False),
            serving_digest=digest, serving_omitted=omitted,
            lan_heard=_str_list(d, "lan_heard") if "lan_heard" in d else None,
        )


def serving_digest(serving: Mapping[str, int]) -> str:
    """Digest of a heartbeat's serving map (32 hex chars): SHA-256 over the compact JSON of the sorted
    ``[ip, epoch]`` pairs. Order of the map does not matter."""
    rows = sorted(serving.items())
    raw = json.dumps(rows, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class HeartbeatEncoder:
    """``encode(heartbeat)``, byte for byte, without re-encoding an unchanged ``serving`` map.

    With thousands of VIPs the map dominates the message (10k VIPs: ~200 KB, ~7 ms of JSON per
    heartbeat, every 100 ms, on the loop that answers ARP). It is encoded once per change of the map
    (the announcer passes the same dict object while its set is unchanged) and spliced into the encoding
    of the rest. The splice point is unambiguous: inside JSON strings every quote is escaped, so
    ``"serving":{}`` can only be the field itself.
    """

    def __init__(self) -> None:
        self._src: dict[str, int] | None = None
        self._enc = b"{}"

    def __call__(self, hb: Heartbeat) -> bytes:
        if not hb.serving:  # omitted or empty: nothing to splice (and the cached map stays cached)
            return encode(hb)
        if hb.serving is not self._src:
            self._enc = json.dumps(hb.serving, separators=(",", ":")).encode()
            self._src = hb.serving
        small = encode(replace(hb, serving={}))
        return small.replace(b'"serving":{}', b'"serving":' + self._enc, 1)


@dataclass(frozen=True, slots=True)
class Successor:
    """A pre-authorised successor of a VIP's holder: the node that takes it over when the holder (and
    every successor ranked before it) falls silent, and the epoch it then answers with."""

    node: str
    epoch: int

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "epoch": self.epoch}

    @staticmethod
    def from_obj(o: Any) -> Successor:
        if not isinstance(o, dict):
            raise MessageError("successor must be an object")
        return Successor(node=_req(o, "node", str), epoch=_req(o, "epoch", int))


@dataclass(frozen=True, slots=True)
class VipAssignment:
    ip: str
    epoch: int  # fencing token, strictly increasing per IP
    interfaces: tuple[str, ...] = ()  # interface names on this node allowed to answer
    services: tuple[str, ...] = ()  # "ns/name" keys using this IP (for status and logs)
    # optional, added within v1 (written only when set): ranked successors (rank = position + 1)
    successors: tuple[Successor, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ip": self.ip, "epoch": self.epoch, "interfaces": list(self.interfaces),
                             "services": list(self.services)}
        if self.successors:
            d["successors"] = [s.to_dict() for s in self.successors]
        return d

    @staticmethod
    def from_obj(o: Any) -> VipAssignment:
        if not isinstance(o, dict):
            raise MessageError("vip must be an object")
        return VipAssignment(ip=_req(o, "ip", str), epoch=_req(o, "epoch", int),
                             interfaces=_str_list(o, "interfaces"), services=_str_list(o, "services"),
                             successors=tuple(Successor.from_obj(x) for x in _opt(o, "successors", list, [])))


@dataclass(frozen=True, slots=True)
class StandbyVip:
    """A VIP the receiving node is a successor for: it takes ``ip`` over by itself with ``epoch`` when
    ``holder`` and every successor of a lower ``rank`` are silent (the announcer's rules), answering on
    ``interfaces`` (this node's allowed ones; () = any)."""

    ip: str
    holder: str
    rank: int  # 1 = first successor
    epoch: int
    interfaces: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "holder": self.holder, "rank": self.rank, "epoch": self.epoch,
                "interfaces": list(self.interfaces), "services": list(self.services)}

    @staticmethod
    def from_obj(o: Any) -> StandbyVip:
        if not isinstance(o, dict):
            raise MessageError("standby entry must be an object")
        rank = _req(o, "rank", int)
        if rank < 1:
            raise MessageError(f"standby rank must be >= 1, got {rank}")
        return StandbyVip(ip=_req(o, "ip", str), holder=_req(o, "holder", str), rank=rank,
                          epoch=_req(o, "epoch", int), interfaces=_str_list(o, "interfaces"),
                          services=_str_list(o, "services"))


def assignments_digest(vips: Iterable[VipAssignment], standby: Iterable[StandbyVip] = (),
                       members: Iterable[str] = ()) -> str:
    """Digest of a node's set (32 hex chars): SHA-256 over the compact JSON of the sorted
    ``[ip, epoch, interfaces, services]`` entries (each with its ``[[node, epoch], ...]`` successors appended
    when it has any); with a standby list or members, over ``{"vips": those rows, "standby": sorted
    [ip, holder, rank, epoch, interfaces, services] rows, "members": members}`` instead. Order of the entries
    does not matter; order inside ``interfaces``/``services``/successors/members does (it is part of what
    equality means). A set without successors, standby and members has the digest it had before they
    existed."""
    rows = sorted((v.ip, v.epoch, tuple(v.interfaces), tuple(v.services))
                  + ((tuple((s.node, s.epoch) for s in v.successors),) if v.successors else ()) for v in vips)
    sb = sorted((s.ip, s.holder, s.rank, s.epoch, tuple(s.interfaces), tuple(s.services)) for s in standby)
    mem = list(members)
    body: Any = {"vips": rows, "standby": sb, "members": mem} if sb or mem else rows
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class NodeAssignments:
    """leases -> announcer of ``node``: the complete set of VIPs it must answer for.

    State-based and idempotent: each message replaces the previous set. ``ttl_ms`` is counted from
    receipt on the announcer's monotonic clock, so clock skew between nodes does not matter. Sent on
    every change of the set, on request, and as a periodic safety net; in between the set is kept
    valid by small :class:`NodeRenewal` messages naming its ``digest``
    (:func:`assignments_digest` of ``vips``; empty from senders that predate renewals).
    """

    KIND: ClassVar[str] = "node_assignments"
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    node: str
    term: int  # leases leader term; a message from a lower term than seen is stale
    seq: int  # strictly increasing within a term
    ttl_ms: int
    sent_at: float
    vips: tuple[VipAssignment, ...] = ()
    digest: str = ""  # optional (added within v1; older readers ignore it)
    # optional, added within v1 (written only when set; older readers ignore them): the VIPs this node is a
    # successor for, and the sorted member list (live nodes eligible for some VIP: the quorum's membership)
    standby: tuple[StandbyVip, ...] = ()
    members: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"node": self.node, "term": self.term, "seq": self.seq, "ttl_ms": self.ttl_ms,
                             "sent_at": self.sent_at, "vips": [v.to_dict() for v in self.vips]}
        if self.digest:
            d["digest"] = self.digest
        if self.standby:
            d["standby"] = [s.to_dict() for s in self.standby]
        if self.members:
            d["members"] = list(self.members)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeAssignments:
        return cls(
            node=_req(d, "node", str), term=_req(d, "term", int), seq=_req(d, "seq", int),
            ttl_ms=_req(d, "ttl_ms", int), sent_at=float(_req(d, "sent_at", (int, float))),
            vips=tuple(VipAssignment.from_obj(v) for v in _opt(d, "vips", list, [])),
            digest=_opt(d, "digest", str, ""),
            standby=tuple(StandbyVip.from_obj(x) for x in _opt(d, "standby", list, [])),
            members=_str_list(d, "members"),
        )


@dataclass(frozen=True, slots=True)
class NodeRenewal:
    """leases -> announcer of ``node``: "your set is still the one with this ``digest``; keep it
    valid for ``ttl_ms`` more". Fenced like NodeAssignments (same ``term``/``seq`` sequence). It never
    adds or changes VIPs: an announcer whose current set has another digest, or has expired,
    ignores it and asks for the full set (SnapshotRequest "assignments")."""

    KIND: ClassVar[str] = "node_renewal"
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    node: str
    term: int
    seq: int
    ttl_ms: int
    sent_at: float
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "term": self.term, "seq": self.seq, "ttl_ms": self.ttl_ms,
                "sent_at": self.sent_at, "digest": self.digest}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeRenewal:
        digest = _req(d, "digest", str)
        if not digest:
            raise MessageError("field 'digest' is empty")
        return cls(
            node=_req(d, "node", str), term=_req(d, "term", int), seq=_req(d, "seq", int),
            ttl_ms=_req(d, "ttl_ms", int), sent_at=float(_req(d, "sent_at", (int, float))), digest=digest,
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """announcer -> leases/status: another MAC claims a VIP this node owns (RFC 5227)."""

    KIND: ClassVar[str] = "conflict"
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1

    node: str
    ip: str
    our_mac: str
    their_mac: str
    interface: str
    at: float
    defended: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conflict:
        return cls(
            node=_req(d, "node", str), ip=_req(d, "ip", str), our_mac=_req(d, "our_mac", str),
            their_mac=_req(d, "their_mac", str), interface=_req(d, "interface", str),
            at=float(_req(d, "at", (int, float))), defended=_opt(d, "defended", bool, False),
        )


Message = (
    Allocation | AllocationSnapshot | SnapshotRequest | Heartbeat | NodeAssignments | NodeRenewal | Conflict
)
_KINDS: dict[str, type[Any]] = {
    c.KIND: c
    for c in (Allocation, AllocationSnapshot, SnapshotRequest, Heartbeat, NodeAssignments, NodeRenewal, Conflict)
}
M = TypeVar("M")


def encode(msg: Message) -> bytes:
    body = msg.to_dict()
    body["k"] = msg.KIND
    body["v"] = msg.VERSION
    return json.dumps(body, separators=(",", ":"), sort_keys=False).encode()


def decode(raw: bytes | str, expect: type[M] | None = None) -> M | Message:
    """Decode one message. Raises MessageError on anything unreadable (never other exceptions)."""
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise MessageError(f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise MessageError("message is not an object")
    kind = d.get("k")
    ver = d.get("v")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise MessageError(f"unknown message kind {kind!r}")
    if not isinstance(ver, int) or isinstance(ver, bool):
        raise MessageError("missing or non-integer version 'v'")
    cls = _KINDS[kind]
    if ver < cls.MIN_VERSION:
        raise MessageError(f"{kind} version {ver} is no longer supported (minimum {cls.MIN_VERSION})")
    if expect is not None and cls is not expect:
        raise MessageError(f"expected {expect.KIND} message, got {kind}")  # type: ignore[attr-defined]
    try:
        result: Message = cls.from_dict(d)
    except MessageError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise MessageError(f"malformed {kind}: {e}") from None
    return result
