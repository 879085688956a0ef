"""The cluster view (pure): parts -> Services/pools/nodes/summary, filtering, pagination, ETags.

The view is assembled from *parts*, each one JSON document written by the service that owns the
data (see ``l2lb.adapters.bus.status``)::

    {"v": 1, "part": "<name>", "at": <unix seconds written>, "items": [ ... ]}

=============  =========  ==========================================================================
part           writer     item fields
=============  =========  ==========================================================================
services       allocator  key, namespace, name, ips[], pools{ip: pool}, ports[{protocol, port}],
                          external_traffic_policy, reason, message
pools          allocator  name, kind, cidrs[], total, used, available, conflict, disabled, message,
                          invalid (why the pool cannot be used; empty when fine)
assignments    leases     ip, node ("" = nobody), epoch, since (unix s), moves, services[]
nodes          leases     node, alive, reason, heartbeat_at (unix s), interfaces[{name, mac, up,
                          addresses[]}], assignments
=============  =========  ==========================================================================

Everything here is tolerant: a malformed part or item is dropped and counted (``Part.errors``),
never an exception. Query parameters, in contrast, are strict: :func:`parse_query` raises
:class:`QueryError` with a message meant for a 400 answer.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from l2lb.core.election import ElectionResult
from l2lb.core.models import AllocationResult, Pool, PoolUsage, Reason, ServiceRequest
from l2lb.core.nodes import NodeState

__all__ = [
    "EVENT_TYPES",
    "PARTS",
    "AssignmentHistory",
    "Part",
    "PoolHistory",
    "Query",
    "QueryError",
    "ServiceIndex",
    "cluster_summary",
    "decode_event",
    "encode_event",
    "etag_of",
    "make_event",
    "node_rows",
    "nodes_items",
    "parse_events_query",
    "parse_part",
    "parse_query",
    "parse_timeline_query",
    "part_doc",
    "part_etag",
    "pool_rows",
    "pools_items",
    "services_items",
    "size_text",
    "vip_timeline",
]

PARTS = ("services", "pools", "assignments", "nodes")
PART_VERSION = 1
EVENT_TYPES = ("move", "conflict", "allocation_failed", "pool_conflict", "unassigned")

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
DEFAULT_EVENTS = 100
MAX_EVENTS = 1000

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class QueryError(ValueError):
    """A bad query parameter; the message says which and why (HTTP 400)."""


# -- parts ------------------------------------------------------------------------------------------
def part_doc(part: str, items: list[dict[str, Any]], at: float) -> dict[str, Any]:
    """The document a publisher stores for ``part``."""
    return {"v": PART_VERSION, "part": part, "at": at, "items": items}


def part_etag(raw: bytes) -> str:
    """Validator of one stored part (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Part:
    name: str
    etag: str = ""  # "" = the part is missing
    at: float | None = None  # when its writer stored it
    items: tuple[dict[str, Any], ...] = ()
    errors: tuple[str, ...] = ()


def _s(d: Mapping[str, Any], k: str, default: str = "") -> str:
    v = d.get(k, default)
    return v if isinstance(v, str) else default


def _i(d: Mapping[str, Any], k: str, default: int = 0) -> int:
    v = d.get(k, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _f(d: Mapping[str, Any], k: str) -> float | None:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _b(d: Mapping[str, Any], k: str, default: bool = False) -> bool:
    v = d.get(k, default)
    return v if isinstance(v, bool) else default


def _strs(d: Mapping[str, Any], k: str) -> list[str]:
    v = d.get(k)
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def _norm_service(o: Mapping[str, Any]) -> dict[str, Any] | None:
    key = _s(o, "key")
    ns, name = _s(o, "namespace"), _s(o, "name")
    if not key and ns and name:
        key = f"{ns}/{name}"
    if not key:
        return None
    if not ns or not name:
        ns, _, name = key.partition("/")
    pools_in = o.get("pools")
    pools = {k: v for k, v in pools_in.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(pools_in, dict) else {}
    ports_in = o.get("ports")
    ports = [{"protocol": _s(p, "protocol", "TCP"), "port": _i(p, "port")}
             for p in (ports_in if isinstance(ports_in, list) else []) if isinstance(p, dict)]
    return {
        "key": key, "namespace": ns, "name": name, "ips": _strs(o, "ips"), "pools": pools, "ports": ports,
        "external_traffic_policy": _s(o, "external_traffic_policy", "Cluster"),
        "reason": _s(o, "reason"), "message": _s(o, "message"),
    }


def _norm_pool(o: Mapping[str, Any]) -> dict[str, Any] | None:
    name = _s(o, "name")
    if not name:
        return None
    total, used = max(0, _i(o, "total")), max(0, _i(o, "used"))
    avail = _i(o, "available", max(0, total - used))
    return {"name": name, "kind": _s(o, "kind"), "cidrs": _strs(o, "cidrs"), "total": total, "used": used,
            "available": max(0, avail), "conflict": _b(o, "conflict"), "disabled": _b(o, "disabled"),
            "message": _s(o, "message"), "invalid": _s(o, "invalid")}


EXACT_BELOW = 10**9


def size_text(n: int) -> str:
    """A count of addresses a person can read: exact below 10^9 ("126", "16777216"), then a power
    of two as such ("2^64" for a /64) and anything else with two significant digits ("1.8e19")."""
    if n < EXACT_BELOW:
        return str(max(0, n))
    if n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    mant, _, exp = f"{n:.1e}".partition("e")
    return f"{mant}e{int(exp)}"


def _with_texts(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with ``total_text``, ``used_text`` and ``available_text`` beside its counts (JSON readers
    such as browsers lose digits above 2^53: they show the texts)."""
    for k in ("total", "used", "available"):
        d[f"{k}_text"] = size_text(int(d[k]))
    return d


def _norm_assignment(o: Mapping[str, Any]) -> dict[str, Any] | None:
    ip = _s(o, "ip")
    if not ip:
        return None
    return {"ip": ip, "node": _s(o, "node"), "epoch": _i(o, "epoch"), "since": _f(o, "since"),
            "moves": max(0, _i(o, "moves")), "services": _strs(o, "services")}


def _norm_node(o: Mapping[str, Any]) -> dict[str, Any] | None:
    node = _s(o, "node")
    if not node:
        return None
    ifs_in = o.get("interfaces")
    ifs = [{"name": _s(i, "name"), "mac": _s(i, "mac"), "up": _b(i, "up"), "addresses": _strs(i, "addresses")}
           for i in (ifs_in if isinstance(ifs_in, list) else []) if isinstance(i, dict)]
    return {"node": node, "alive": _b(o, "alive"), "reason": _s(o, "reason"), "heartbeat_at": _f(o, "heartbeat_at"),
            "interfaces": ifs,
            "assignments": max(0, _i(o, "assignments"))}


_NORM = {"services": _norm_service, "pools": _norm_pool, "assignments": _norm_assignment, "nodes": _norm_node}


def parse_part(name: str, raw: bytes | str | None, etag: str | None = None) -> Part:
    """Read one stored part; anything malformed becomes an error string, never an exception."""
    if name not in _NORM:
        return Part(name, errors=(f"unknown part {name!r}",))
    if raw is None:
        return Part(name)
    data = raw.encode() if isinstance(raw, str) else raw
    tag = etag or part_etag(data)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return Part(name, etag=tag, errors=(f"part {name}: not JSON: {e}",))
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        return Part(name, etag=tag, errors=(f"part {name}: not an object with an 'items' list",))
    v = doc.get("v")
    if not isinstance(v, int) or v < 1:
        return Part(name, etag=tag, errors=(f"part {name}: missing or bad version 'v'",))
    norm = _NORM[name]
    items: list[dict[str, Any]] = []
    bad = 0
    for it in doc["items"]:
        n = norm(it) if isinstance(it, dict) else None
        if n is None:
            bad += 1
        else:
            items.append(n)
    errors = (f"part {name}: {bad} malformed item(s) dropped",) if bad else ()
    return Part(name, etag=tag, at=_f(doc, "at"), items=tuple(items), errors=errors)


# -- query parameters ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    namespace: str | None = None
    node: str | None = None
    pool: str | None = None
    ip: str | None = None
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # decoded continue token: last key of the previous page

    def filters(self) -> dict[str, str]:
        return {k: v for k, v in (("namespace", self.namespace), ("node", self.node), ("pool", self.pool),
                                  ("ip", self.ip)) if v is not None}

    def canonical(self) -> str:
        f = self.filters()
        return json.dumps({"f": f, "l": self.limit, "a": self.after}, sort_keys=True, separators=(",", ":"))


def _filter_hash(filters: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(filters), sort_keys=True).encode()).hexdigest()[:8]


def encode_continue(after: str, filters: Mapping[str, str]) -> str:
    raw = json.dumps({"a": after, "f": _filter_hash(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str, filters: Mapping[str, str]) -> str:
    if not token or len(token) > 1024 or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise QueryError("continue: not a token this server issued (use the 'continue' value of a previous page)")
    try:
        d = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise QueryError("continue: not a token this server issued "
                         "(use the 'continue' value of a previous page)") from None
    if not isinstance(d, dict) or not isinstance(d.get("a"), str) or not isinstance(d.get("f"), str):
        raise QueryError("continue: not a token this server issued (use the 'continue' value of a previous page)")
    if d["f"] != _filter_hash(filters):
        raise QueryError("continue: the token belongs to a query with other filters; repeat the same "
                         "namespace/node/pool/ip parameters")
    return str(d["a"])


def _single(params: Mapping[str, Any] | Iterable[tuple[str, str]], allowed: Iterable[str]) -> dict[str, str]:
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    allow = tuple(allowed)
    out: dict[str, str] = {}
    for k, v in pairs:
        if k not in allow:
            raise QueryError(f"unknown query parameter {k!r} (allowed: {', '.join(allow)})")
        if k in out:
            raise QueryError(f"query parameter {k!r} given more than once")
        out[k] = str(v)
    return out


def _limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise QueryError(f"limit: {raw[:40]!r} is not a whole number (1..{maximum})")
    n = int(raw)
    if not 1 <= n <= maximum:
        raise QueryError(f"limit: {n} is out of range (1..{maximum})")
    return n


def _name(param: str, raw: str | None, *, label: bool) -> str | None:
    if raw is None:
        return None
    pat, maxlen, what = (_LABEL, 63, "a DNS label") if label else (_SUBDOMAIN, 253, "a DNS subdomain name")
    if not raw or len(raw) > maxlen or not pat.fullmatch(raw):
        raise QueryError(f"{param}: {raw[:80]!r} is not {what} (lower case letters, digits, '-'"
                         f"{'' if label else ', .'}; at most {maxlen} characters)")
    return raw


SERVICE_PARAMS = ("namespace", "node", "pool", "ip", "limit", "continue")
EVENT_PARAMS = ("limit", "type")
TIMELINE_PARAMS = ("window", "limit")
DEFAULT_WINDOW_S = 3600
MIN_WINDOW_S, MAX_WINDOW_S = 60, 7 * 86400
DEFAULT_TIMELINE_VIPS, MAX_TIMELINE_VIPS = 50, 500


def parse_query(params: Mapping[str, Any] | Iterable[tuple[str, str]]) -> Query:
    """Validate the query of ``/v1/services``. Raises :class:`QueryError`."""
    p = _single(params, SERVICE_PARAMS)
    ip = p.get("ip")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise QueryError(f"ip: {ip[:60]!r} is not an IPv4 or IPv6 address") from None
    q = Query(namespace=_name("namespace", p.get("namespace"), label=True),
              node=_name("node", p.get("node"), label=False),
              pool=_name("pool", p.get("pool"), label=False), ip=ip,
              limit=_limit(p.get("limit"), DEFAULT_LIMIT, MAX_LIMIT))
    if "continue" in p:
        q = Query(q.namespace, q.node, q.pool, q.ip, q.limit, _decode_continue(p["continue"], q.filters()))
    return q


def parse_events_query(params: Mapping[str, Any] | Iterable[tuple[str, str]]) -> tuple[int, str | None]:
    """Validate the query of ``/v1/events``: (limit, type or None)."""
    p = _single(params, EVENT_PARAMS)
    typ = p.get("type")
    if typ is not None and typ not in EVENT_TYPES:
        raise QueryError(f"type: {typ[:40]!r} is not one of {', '.join(EVENT_TYPES)}")
    return _limit(p.get("limit"), DEFAULT_EVENTS, MAX_EVENTS), typ


def parse_timeline_query(params: Mapping[str, Any] | Iterable[tuple[str, str]]) -> tuple[int, int]:
    """Validate the query of ``/v1/timeline`` and ``/v1/pools/history``: (window seconds, VIP limit)."""
    p = _single(params, TIMELINE_PARAMS)
    raw = p.get("window")
    window = DEFAULT_WINDOW_S
    if raw is not None:
        if not re.fullmatch(r"[0-9]{1,9}", raw):
            raise QueryError(f"window: {raw[:40]!r} is not a whole number of seconds ({MIN_WINDOW_S}..{MAX_WINDOW_S})")
        window = int(raw)
        if not MIN_WINDOW_S <= window <= MAX_WINDOW_S:
            raise QueryError(f"window: {window} s is out of range ({MIN_WINDOW_S}..{MAX_WINDOW_S})")
    return window, _limit(p.get("limit"), DEFAULT_TIMELINE_VIPS, MAX_TIMELINE_VIPS)


# -- assembled views ----------------------------------------------------------------------------------
@dataclass
class ServiceIndex:
    """Services joined with their IPs' assignments, sorted by key (built once per parts version)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    # filters (canonical JSON) -> positions of the matching rows; small LRU-ish cache
    _matches: dict[str, list[int]] = field(default_factory=dict)
    _summary: dict[str, Any] | None = None

    @classmethod
    def build(cls, services: Part, assignments: Part) -> ServiceIndex:
        by_ip = {a["ip"]: a for a in assignments.items}
        rows = []
        for s in sorted(services.items, key=lambda x: str(x["key"])):
            ips = []
            for ip in s["ips"]:
                a = by_ip.get(ip)
                ips.append({"ip": ip, "pool": s["pools"].get(ip, ""), "node": a["node"] if a else "",
                            "epoch": a["epoch"] if a else 0, "since": a["since"] if a else None,
                            "moves": a["moves"] if a else 0})
            nodes = sorted({i["node"] for i in ips if i["node"]})
            rows.append({
                "key": s["key"], "namespace": s["namespace"], "name": s["name"], "ips": ips, "nodes": nodes,
                "ports": s["ports"], "external_traffic_policy": s["external_traffic_policy"],
                "ready": bool(ips) and not s["reason"], "reason": s["reason"], "message": s["message"],
            })
        return cls(rows=rows, keys=[r["key"] for r in rows])

    def get(self, key: str) -> dict[str, Any] | None:
        i = bisect.bisect_left(self.keys, key)
        return self.rows[i] if i < len(self.keys) and self.keys[i] == key else None

    def page(self, q: Query) -> tuple[list[dict[str, Any]], str | None, int]:
        """(items, continue token or None, number of matching Services)."""
        start = bisect.bisect_right(self.keys, q.after) if q.after is not None else 0
        filters = q.filters()
        if not filters:
            items = self.rows[start:start + q.limit]
            more = start + q.limit < len(self.rows)
            total = len(self.rows)
        else:
            def match(r: dict[str, Any]) -> bool:
                if q.namespace is not None and r["namespace"] != q.namespace:
                    return False
                if q.node is not None and q.node not in r["nodes"]:
                    return False
                if q.pool is not None and all(i["pool"] != q.pool for i in r["ips"]):
                    return False
                return q.ip is None or any(_same_ip(i["ip"], q.ip) for i in r["ips"])

            fkey = json.dumps(filters, sort_keys=True)
            matching_or_none = self._matches.get(fkey)
            if matching_or_none is None:
                matching_or_none = [i for i, r in enumerate(self.rows) if match(r)]
                if len(self._matches) >= 64:
                    self._matches.pop(next(iter(self._matches)))
                self._matches[fkey] = matching_or_none
            matching = matching_or_none
            total = len(matching)
            pos = bisect.bisect_left(matching, start)
            sel = matching[pos:pos + q.limit]
            items = [self.rows[i] for i in sel]
            more = pos + q.limit < len(matching)
        token = encode_continue(items[-1]["key"], filters) if more and items else None
        return items, token, total


def _same_ip(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def pool_rows(pools: Part) -> list[dict[str, Any]]:
    rows = []
    for p in sorted(pools.items, key=lambda x: str(x["name"])):
        r = _with_texts(dict(p))
        r["usage"] = round(p["used"] / p["total"], 4) if p["total"] else 0.0
        rows.append(r)
    return rows


def node_rows(nodes: Part, now: float) -> list[dict[str, Any]]:
    """Nodes with ``heartbeat_age_s`` computed against ``now`` (unix seconds)."""
    rows = []
    for n in sorted(nodes.items, key=lambda x: str(x["node"])):
        r = dict(n)
        hb = n["heartbeat_at"]
        r["heartbeat_age_s"] = round(max(0.0, now - hb), 3) if hb is not None else None
        r["links_up"] = sum(1 for i in n["interfaces"] if i["up"])
        rows.append(r)
    return rows


def cluster_summary(index: ServiceIndex, parts: Mapping[str, Part], now: float) -> dict[str, Any]:
    """Counts over the parts (cached per parts version) plus the freshness of each part at ``now``."""
    tag = "|".join(parts[p].etag for p in PARTS if p in parts)
    cached = index._summary
    if cached is None or cached.get("_tag") != tag:
        cached = {"_tag": tag, **_counts(index, parts)}
        index._summary = cached
    out = {k: v for k, v in cached.items() if k != "_tag"}
    out["parts"] = {name: {"present": bool(p.etag), "etag": p.etag,
                           "age_s": round(max(0.0, now - p.at), 3) if p.at is not None else None,
                           "errors": list(p.errors)} for name, p in parts.items()}
    return out


def _counts(index: ServiceIndex, parts: Mapping[str, Part]) -> dict[str, Any]:
    pools = parts["pools"].items
    nodes = parts["nodes"].items
    assigned = [a for a in parts["assignments"].items if a["node"]]
    ips = {i["ip"] for r in index.rows for i in r["ips"]}
    return {
        "services": {"total": len(index.rows), "ready": sum(1 for r in index.rows if r["ready"]),
                     "failing": sum(1 for r in index.rows if not r["ready"])},
        "ips": {"allocated": len(ips), "announced": len({i["ip"] for r in index.rows for i in r["ips"] if i["node"]}),
                "moves": sum(a["moves"] for a in parts["assignments"].items)},
        "pools": _with_texts({"count": len(pools), "total": sum(p["total"] for p in pools),
                              "used": sum(p["used"] for p in pools), "available": sum(p["available"] for p in pools),
                              "conflicts": sum(1 for p in pools if p["conflict"]),
                              "invalid": sum(1 for p in pools if p["invalid"])}),
        "nodes": {"total": len(nodes), "alive": sum(1 for n in nodes if n["alive"]),
                  "announcing": len({a["node"] for a in assigned})},
    }


def etag_of(*tags: str) -> str:
    """A weak HTTP validator over the part etags and the canonical query that produced an answer."""
    return 'W/"' + hashlib.sha256("|".join(tags).encode()).hexdigest()[:20] + '"'


# -- events --------------------------------------------------------------------------------------------
def make_event(type_: str, at: float, **fields: Any) -> dict[str, Any]:
    """An event document (``type`` one of EVENT_TYPES; fields: ip, service, node, from, to, reason, message;
    ``gap_ms`` on moves: how long the old holder had been silent -- its last heartbeat -- when the leases
    service named the new one, i.e. the measured part of the IP's outage; absent when unknown)."""
    ev: dict[str, Any] = {"type": type_, "at": at}
    for k in ("ip", "service", "node", "from", "to", "reason", "message"):
        v = fields.get(k)
        ev[k] = v if isinstance(v, str) else ("" if v is None else str(v))
    gap = fields.get("gap_ms")
    if isinstance(gap, int | float) and not isinstance(gap, bool) and 0 <= gap < 1e9:
        ev["gap_ms"] = round(float(gap), 1)
    return ev


def encode_event(ev: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(ev), separators=(",", ":")).encode()


def decode_event(eid: str, raw: bytes | str | None) -> dict[str, Any] | None:
    """One stored event with its stream id, or None when unreadable."""
    if raw is None:
        return None
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        return None
    at = _f(d, "at")
    ev = make_event(d["type"], at if at is not None else 0.0, **{k: v for k, v in d.items() if k not in ("type", "at")})
    ev["id"] = eid
    return ev


# -- part builders for the writers (allocator, leases) ------------------------------------------------
def services_items(results: Mapping[str, AllocationResult], request: Callable[[str], ServiceRequest | None]
                   ) -> list[dict[str, Any]]:
    """The allocator's "services" part from its results (Services it does not handle are left out)."""
    out = []
    for key in sorted(results):
        r = results[key]
        if r.reason is Reason.NOT_HANDLED:
            continue
        req = request(key)
        ns, _, name = key.partition("/")
        out.append({
            "key": key, "namespace": req.namespace if req else ns, "name": req.name if req else name,
            "ips": list(r.ips), "pools": dict(r.pools),
            "ports": [{"protocol": p, "port": n} for p, n in (req.ports if req else ())],
            "external_traffic_policy": req.external_traffic_policy if req else "Cluster",
            "reason": "" if r.ok else r.reason.value, "message": "" if r.ok else r.message,
        })
    return out


def pools_items(pools: Mapping[str, Pool], usage: Mapping[str, PoolUsage],
                invalid: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The allocator's "pools" part; ``invalid`` ("Kind/name" -> error) adds the pools it cannot use."""
    out = []
    for name in sorted(pools):
        p, u = pools[name], usage.get(name)
        out.append({
            "name": name, "kind": p.kind, "cidrs": [b.text for b in p.blocks],
            "total": u.total if u else 0, "used": u.used if u else 0, "available": u.available if u else 0,
            "conflict": bool(u and u.conflict), "disabled": bool(p.disabled or (u and u.disabled)),
            "message": u.conflict_message if u else "", "invalid": "",
        })
    for src in sorted(invalid or {}):
        kind, _, name = src.partition("/")
        out.append({"name": name or src, "kind": kind, "cidrs": [], "total": 0, "used": 0, "available": 0,
                    "conflict": False, "disabled": True, "message": "", "invalid": (invalid or {})[src]})
    return out


class AssignmentHistory:
    """Remembers, per IP, since when its current node holds it and how often it moved between nodes
    (as seen by this process), to build the leases' "assignments" part."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[str, float, int]] = {}  # ip -> (node, since, moves)

    def items(self, result: ElectionResult | None, now: float) -> list[dict[str, Any]]:
        current: dict[str, tuple[str, int, tuple[str, ...]]] = {}
        if result is not None:
            for ip in result.unassigned:
                current[ip] = ("", 0, ())
            for ip, a in result.assignments.items():
                current[ip] = (a.node, a.epoch, a.services)
        state: dict[str, tuple[str, float, int]] = {}
        out = []
        for ip in sorted(current):
            node, epoch, services = current[ip]
            prev = self._state.get(ip)
            if prev is None:
                st = (node, now, 0)
            elif prev[0] != node:
                st = (node, now, prev[2] + (1 if prev[0] and node else 0))
            else:
                st = prev
            state[ip] = st
            out.append({"ip": ip, "node": node, "epoch": epoch, "since": round(st[1], 3), "moves": st[2],
                        "services": list(services)})
        self._state = state
        return out


def nodes_items(nodes: Mapping[str, NodeState], result: ElectionResult | None, mono_now: float,
                wall_now: float) -> list[dict[str, Any]]:
    """The leases' "nodes" part from its NodeTracker; ``mono_now`` is "now" on the clock of ``last_seen``
    (whatever liveness clock the tracker is fed with), ``wall_now`` the local unix time."""
    counts: dict[str, int] = {}
    if result is not None:
        for a in result.assignments.values():
            counts[a.node] = counts.get(a.node, 0) + 1
    out = []
    for name in sorted(nodes):
        st = nodes[name]
        out.append({
            "node": name, "alive": st.alive, "reason": st.reason,
            "heartbeat_at": round(wall_now - max(0.0, mono_now - st.last_seen), 1),
            "interfaces": [{"name": i.name, "mac": i.mac, "up": i.up, "addresses": list(i.addresses)}
                           for i in st.heartbeat.interfaces],
            "assignments": counts.get(name, 0),
        })
    return out


# -- pictures: who held each VIP over time, pool usage over time --------------------------------------
def vip_timeline(events: Iterable[Mapping[str, Any]], assignments: Part, now: float, window_s: float,
                 limit: int = DEFAULT_TIMELINE_VIPS) -> dict[str, Any]:
    """Per VIP, which node held it when over the last ``window_s`` seconds, and each move with its gap.

    Built from the move/unassigned events (any order) and the current assignments: walking back from
    now, the holder before a move is its ``from``. ``segments``: [{node ("" = nobody), from, to}],
    contiguous, covering the window from the first time the VIP is known; ``moves``: [{at, from, to,
    reason, gap_ms}] oldest first. VIPs with the most recent move come first.
    """
    t0 = now - window_s
    current: dict[str, Mapping[str, Any]] = {str(a["ip"]): a for a in assignments.items}
    moves: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        if ev.get("type") not in ("move", "unassigned") or not ev.get("ip"):
            continue
        at = _f(ev, "at")
        if at is None or at < t0 or at > now:
            continue
        m: dict[str, Any] = {"at": at, "from": _s(ev, "from"), "to": _s(ev, "to"), "reason": _s(ev, "reason"),
                             "gap_ms": _f(ev, "gap_ms")}
        moves.setdefault(str(ev["ip"]), []).append(m)
    rows: list[dict[str, Any]] = []
    for ip in set(current) | set(moves):
        ms = sorted(moves.get(ip, []), key=lambda m: m["at"])
        a = current.get(ip)
        holder_now = _s(a, "node") if a else (ms[-1]["to"] if ms else "")
        since = _f(a, "since") if a else None
        segs: list[dict[str, Any]] = []
        if ms:
            begin: float = t0
            holder: str = ms[0]["from"]
            for m in ms:
                if m["at"] > begin:
                    segs.append({"node": holder, "from": round(begin, 3), "to": round(m["at"], 3)})
                begin, holder = m["at"], m["to"]
            segs.append({"node": holder_now if a else holder, "from": round(begin, 3), "to": round(now, 3)})
        else:
            begin = max(t0, since) if since is not None else t0
            segs.append({"node": holder_now, "from": round(begin, 3), "to": round(now, 3)})
        rows.append({"ip": ip, "node": holder_now, "services": _strs(a, "services") if a else [],
                     "segments": segs, "moves": [{**m, "at": round(m["at"], 3)} for m in ms]})
    def order(r: dict[str, Any]) -> tuple[float, tuple[int, int, str]]:
        last: float = r["moves"][-1]["at"] if r["moves"] else -1.0
        return (-last, _ip_key(str(r["ip"])))
    rows.sort(key=order)
    nodes = sorted({s["node"] for r in rows for s in r["segments"] if s["node"]})
    return {"from": round(t0, 3), "to": round(now, 3), "nodes": nodes, "total": len(rows), "items": rows[:limit]}


def _ip_key(ip: str) -> tuple[int, int, str]:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0, ip)
    return (a.version, int(a), ip)


class PoolHistory:
    """Pool usage over time, sampled by whoever serves the cluster view: a point per pool at most every
    ``spacing_s`` seconds unless the usage changed (then at once), at most ``max_points`` per pool."""

    def __init__(self, spacing_s: float = 30.0, max_points: int = 2880) -> None:
        self.spacing_s = spacing_s
        self.max_points = max_points
        self._points: dict[str, list[tuple[float, int, int]]] = {}

    def add(self, at: float, pools: Iterable[Mapping[str, Any]]) -> None:
        seen = set()
        for p in pools:
            name = _s(p, "name")
            if not name:
                continue
            seen.add(name)
            used, total = _i(p, "used"), _i(p, "total")
            pts = self._points.setdefault(name, [])
            if pts and pts[-1][1:] == (used, total) and at - pts[-1][0] < self.spacing_s:
                continue
            if pts and at < pts[-1][0]:
                continue  # clock went back: keep the series ordered
            pts.append((round(at, 3), used, total))
            if len(pts) > self.max_points:
                del pts[: len(pts) - self.max_points]
        for gone in set(self._points) - seen:
            del self._points[gone]

    def items(self, now: float, window_s: float) -> dict[str, Any]:
        t0 = now - window_s
        out = []
        for name in sorted(self._points):
            pts = self._points[name]
            i = bisect.bisect_left([p[0] for p in pts], t0)
            keep = pts[max(0, i - 1):]  # the point before the window gives the usage at its start
            out.append({"pool": name, "points": [{"at": at, "used": u, "total": t,
                                                  "usage": (u / t) if t else 0.0} for at, u, t in keep]})
        return {"from": round(t0, 3), "to": round(now, 3), "items": out}
