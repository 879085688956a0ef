"""The cluster API and dashboard, mountable on any service's :class:`StatusServer`.

``mount_cluster_api(server, bus)`` adds:

=========================  ============================================================================
``GET /v1/services``       Services with IPs, pool, announcing node, epoch, since, moves; filters
                           ``namespace``, ``node``, ``pool``, ``ip``; pages with ``limit`` + ``continue``
``GET /v1/services/NS/N``  one Service (404 when the view has none of that name)
``GET /v1/pools``          pools with total/used/available, usage ratio, conflict
``GET /v1/nodes``          nodes with liveness, heartbeat age, interfaces and link state
``GET /v1/events``         recent moves/conflicts/allocation failures, newest first (``limit``, ``type``)
``GET /v1/cluster``        summary counts and the age/errors of each part
``GET /v1/timeline``       per VIP: which node held it when (``window`` seconds back) and every move with
                           its measured gap; VIPs that moved last first (``limit``)
``GET /v1/pools/history``  each pool's usage over the last ``window`` seconds (sampled by this process)
``GET /v1/openapi.json``   the OpenAPI 3.1 document of all of the above
``GET /v1/watch``          server-sent events: ``part`` (a part changed), ``event``, ``error``
``GET /``, ``/ui/...``     the dashboard (static files, no build step, no external network)
=========================  ============================================================================

Every JSON answer carries a weak ``ETag`` computed from the parts it was made of and the query;
a matching ``If-None-Match`` gets ``304``. Bad query parameters get ``400`` with
``{"error": "bad_request", "message": ...}``; Redis unreachable gets ``503``. The bearer token of the
StatusServer protects ``/v1/*``; the static page itself carries no data and is served without it
(the page asks for the token and sends it as ``Authorization`` header).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import ClusterSource
from l2lb.adapters.http.server import StatusServer
from l2lb.core.view import (
    EVENT_TYPES,
    MAX_EVENTS,
    MAX_LIMIT,
    MAX_TIMELINE_VIPS,
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    PARTS,
    PoolHistory,
    QueryError,
    cluster_summary,
    etag_of,
    node_rows,
    parse_events_query,
    parse_query,
    parse_timeline_query,
    pool_rows,
    vip_timeline,
)
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["OPENAPI", "STATIC_DIR", "ClusterAPI", "mount_cluster_api"]

log = get_logger("l2lb.http.cluster")

STATIC_DIR = Path(__file__).with_name("static")
_STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
KEEPALIVE_S = 15.0

_requests = metrics.counter("l2lb_status_api_requests_total", "Cluster API requests", ("route", "code"))
_latency = metrics.histogram(
    "l2lb_status_api_seconds", "Cluster API request time", ("route",),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
_watchers = metrics.gauge("l2lb_status_watchers", "Open /v1/watch streams")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- OpenAPI -------------------------------------------------------------------------------------------
def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props)}


_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STRS = {"type": "array", "items": _STR}
_ERROR = _obj({"error": _STR, "message": _STR})
_SIZE_TEXTS = {f"{k}_text": {**_STR, "description": f"{k} as a person reads it: exact below 10^9, else "
                             "2^N or 1.8e19 (JSON numbers above 2^53 lose digits in browsers)"}
               for k in ("total", "used", "available")}

_SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "ServiceIP": _obj({
        "ip": {**_STR, "description": "allocated LoadBalancer IP"},
        "pool": {**_STR, "description": "pool the IP came from"},
        "node": {**_STR, "description": "node answering ARP/NDP for the IP; empty when none"},
        "epoch": {**_INT, "description": "fencing token of the current assignment"},
        "since": {**_NUM_OR_NULL, "description": "unix time the node took the IP"},
        "moves": {**_INT, "description": "how many times the IP moved to another node"},
    }),
    "Port": _obj({"protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"]}, "port": _INT}),
    "Service": _obj({
        "key": {**_STR, "description": "namespace/name"},
        "namespace": _STR, "name": _STR,
        "ips": {"type": "array", "items": {"$ref": "#/components/schemas/ServiceIP"}},
        "nodes": {**_STRS, "description": "distinct announcing nodes"},
        "ports": {"type": "array", "items": {"$ref": "#/components/schemas/Port"}},
        "external_traffic_policy": {"type": "string", "enum": ["Cluster", "Local"]},
        "ready": {"type": "boolean", "description": "has IPs and no failure reason"},
        "reason": {**_STR, "description": "why allocation failed (no_pool, out_of_ips, ...); empty when fine"},
        "message": _STR,
    }),
    "ServiceList": _obj({
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
        "continue": {"type": ["string", "null"], "description": "pass as ?continue= for the next page"},
        "total": {**_INT, "description": "Services matching the filters (all pages)"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    }),
    "Pool": _obj({
        "name": _STR, "kind": {**_STR, "description": "resource kind the pool came from"},
        "cidrs": _STRS, "total": _INT, "used": _INT, "available": _INT, **_SIZE_TEXTS,
        "usage": {"type": "number", "minimum": 0, "description": "used / total"},
        "conflict": {"type": "boolean", "description": "overlaps an older pool (disabled)"},
        "disabled": {"type": "boolean"}, "message": _STR,
        "invalid": {**_STR, "description": "why the pool cannot be used (bad CIDR, range, name); empty when fine"},
    }),
    "PoolList": _obj({"items": {"type": "array", "items": {"$ref": "#/components/schemas/Pool"}}}),
    "Interface": _obj({"name": _STR, "mac": _STR, "up": {"type": "boolean", "description": "link state"},
                       "addresses": _STRS}),
    "Node": _obj({
        "node": _STR, "alive": {"type": "boolean", "description": "heartbeats arrive in time"},
        "reason": {**_STR, "description": "why alive/dead: heartbeat, timeout, stopping, interfaces_down"},
        "heartbeat_at": _NUM_OR_NULL,
        "heartbeat_age_s": {**_NUM_OR_NULL, "description": "seconds since the last heartbeat (at response time)"},
        "interfaces": {"type": "array", "items": {"$ref": "#/components/schemas/Interface"}},
        "links_up": _INT, "assignments": {**_INT, "description": "IPs this node answers for"},
    }),
    "NodeList": _obj({"items": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}),
    "Event": _obj({
        "id": {**_STR, "description": "stream id (monotonic)"}, "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "at": {"type": "number"}, "ip": _STR, "service": _STR, "node": _STR, "from": _STR, "to": _STR,
        "reason": _STR, "message": _STR,
        "gap_ms": {"type": "number", "description": "moves: how long the old holder had been silent when the "
                                                     "new one was named (absent when unknown)"},
    }, ["id", "type", "at", "ip", "service", "node", "from", "to", "reason", "message"]),
    "EventList": _obj({"items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}),
    "Timeline": _obj({
        "from": {"type": "number", "description": "unix time the window starts"}, "to": {"type": "number"},
        "nodes": {**_STRS, "description": "every node that held an IP in the window"},
        "total": {**_INT, "description": "VIPs known (the answer holds at most limit)"},
        "items": {"type": "array", "items": _obj({
            "ip": _STR, "node": {**_STR, "description": "holder now; empty = nobody"}, "services": _STRS,
            "segments": {"type": "array", "items": _obj({"node": _STR, "from": {"type": "number"},
                                                         "to": {"type": "number"}})},
            "moves": {"type": "array", "items": _obj({
                "at": {"type": "number"}, "from": _STR, "to": _STR, "reason": _STR,
                "gap_ms": {**_NUM_OR_NULL, "description": "how long the old holder had been silent when the "
                                                          "new one was named (null: unknown)"}})}})},
    }),
    "PoolHistory": _obj({
        "from": {"type": "number"}, "to": {"type": "number"},
        "items": {"type": "array", "items": _obj({"pool": _STR, "points": {"type": "array", "items": _obj({
            "at": {"type": "number"}, "used": _INT, "total": _INT, "usage": {"type": "number"}})}})}}),
    "PartInfo": _obj({"present": {"type": "boolean"}, "etag": _STR, "age_s": _NUM_OR_NULL, "errors": _STRS}),
    "Cluster": _obj({
        "services": _obj({"total": _INT, "ready": _INT, "failing": _INT}),
        "ips": _obj({"allocated": _INT, "announced": _INT, "moves": _INT}),
        "pools": _obj({"count": _INT, "total": _INT, "used": _INT, "available": _INT, **_SIZE_TEXTS,
                       "conflicts": _INT, "invalid": _INT}),
        "nodes": _obj({"total": _INT, "alive": _INT, "announcing": _INT}),
        "parts": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/PartInfo"},
                  "required": list(PARTS)},
    }),
}


def _param(name: str, desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": schema}


def _json_op(summary: str, ref: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "headers": {"ETag": {"schema": _STR}},
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}},
        "304": {"description": "Not modified (If-None-Match matched the ETag)"},
        "401": {"description": "missing or wrong bearer token",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "Redis unreachable",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    }
    if params:
        responses["400"] = {"description": "bad query parameter (message says which)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    return {"get": op}


def _service_op() -> dict[str, Any]:
    op = _json_op("One Service", "Service")
    get = op["get"]
    get["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                         for n in ("namespace", "name")]
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    get["responses"]["400"] = {"description": "malformed namespace or name", **err}
    get["responses"]["404"] = {"description": "no such Service in the cluster view", **err}
    return op


_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_WINDOW = _param("window", f"seconds back from now (default 3600, {MIN_WINDOW_S}..{MAX_WINDOW_S})",
                 {"type": "integer", "minimum": MIN_WINDOW_S, "maximum": MAX_WINDOW_S})
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "l2lb cluster API", "version": "1",
             "description": "Services, their LoadBalancer IPs and announcing nodes, pools and nodes, assembled "
                            "from status parts in Redis. JSON answers carry a weak ETag; send If-None-Match "
                            "for 304. Unknown or malformed query parameters are answered with 400."},
    "components": {"schemas": _SCHEMAS,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "only when the server has a token file"}}},
    "security": [{}, {"bearer": []}],
    "paths": {
        "/v1/services": _json_op("Services with IPs and announcing nodes, sorted by namespace/name (pages are "
                                 "keyset-based: a Service added or removed between two pages never makes another "
                                 "one repeat or vanish)", "ServiceList", [
            _param("namespace", "only this namespace", {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                                                        "maxLength": 63}),
            _param("node", "only Services with an IP announced by this node", _NAME),
            _param("pool", "only Services with an IP from this pool", _NAME),
            _param("ip", "only the Service(s) holding this IP", {"type": "string"}),
            _param("limit", f"page size (default 500, at most {MAX_LIMIT})",
                   {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
            _param("continue", "token from the previous page's 'continue'", {"type": "string"}),
        ]),
        "/v1/services/{namespace}/{name}": _service_op(),
        "/v1/pools": _json_op("Pools with usage and conflicts", "PoolList"),
        "/v1/nodes": _json_op("Nodes with heartbeat age and link state", "NodeList"),
        "/v1/events": _json_op("Recent events, newest first", "EventList", [
            _param("limit", f"how many (default 100, at most {MAX_EVENTS})",
                   {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS}),
            _param("type", "only this event type", {"type": "string", "enum": list(EVENT_TYPES)}),
        ]),
        "/v1/cluster": _json_op("Summary counts and the freshness of each part", "Cluster"),
        "/v1/timeline": _json_op("Per VIP: its holders over time and each move with its measured gap",
                                 "Timeline", [_WINDOW, _param(
                                     "limit", f"VIPs (default 50, at most {MAX_TIMELINE_VIPS})",
                                     {"type": "integer", "minimum": 1, "maximum": MAX_TIMELINE_VIPS})]),
        "/v1/pools/history": _json_op("Pool usage over time, as sampled by this server (every 30 s and on "
                                      "change; kept while it runs)", "PoolHistory", [_WINDOW]),
        "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}},
        "/v1/watch": {"get": {
            "summary": "Server-sent events of changes",
            "description": "Events: 'hello' (data: {parts: {name: etag}}) once, 'part' (data: {part, etag}) "
                           "when a part changed (re-fetch the affected resources), 'event' (data: an Event), "
                           "'error' (data: {message}; empty message = recovered), 'overflow' (reconnect). "
                           "A comment line is sent every 15 s as keep-alive.",
            "responses": {"200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                          "401": {"description": "missing or wrong bearer token"}}}},
    },
}


# -- handlers ------------------------------------------------------------------------------------------
def _bad(msg: str) -> web.Response:
    return web.json_response({"error": "bad_request", "message": msg}, status=400)


def _unavailable(err: BaseException) -> web.Response:
    return web.json_response({"error": "unavailable", "message": f"cannot read the cluster view from redis: "
                                                                 f"{type(err).__name__}: {err}"}, status=503)


def _dumps(o: Any) -> str:
    return json.dumps(o, separators=(",", ":"), default=str)


BODY_CACHE = 256


def _conditional(request: web.Request, etag: str, body: Callable[[], Any],
                 cache: OrderedDict[str, bytes] | None = None) -> web.Response:
    """200 with ``body()`` as JSON, or 304 when If-None-Match names ``etag``.

    With ``cache``, the encoded body is kept per etag (only for answers that depend on nothing but
    the etag's inputs).
    """
    inm = request.headers.get("If-None-Match", "")
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return web.Response(status=304, headers=headers)
    data = cache.get(etag) if cache is not None else None
    if data is None:
        data = _dumps(body()).encode()
        if cache is not None:
            cache[etag] = data
            if len(cache) > BODY_CACHE:
                cache.popitem(last=False)
    elif cache is not None:
        cache.move_to_end(etag)
    return web.Response(body=data, content_type="application/json", headers=headers)


class ClusterAPI:
    def __init__(self, source: ClusterSource, *, clock: Callable[[], float] = time.time):
        self.source = source
        self._clock = clock
        self._stopping = asyncio.Event()
        self._openapi_text = _dumps(OPENAPI)
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self.pool_history = PoolHistory()
        self.sample_interval_s = 30.0
        self._sampler: asyncio.Task[None] | None = None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/services", self._timed("services", self.services)),
            web.get("/v1/services/{namespace}/{name}", self._timed("service", self.service)),
            web.get("/v1/pools", self._timed("pools", self.pools)),
            web.get("/v1/nodes", self._timed("nodes", self.nodes)),
            web.get("/v1/events", self._timed("events", self.events)),
            web.get("/v1/cluster", self._timed("cluster", self.cluster)),
            web.get("/v1/timeline", self._timed("timeline", self.timeline)),
            web.get("/v1/pools/history", self._timed("pools_history", self.pools_history)),
            web.get("/v1/openapi.json", self.openapi),
            web.get("/v1/watch", self.watch),
        ]

    def _timed(self, route: str, h: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            t0 = time.perf_counter()
            try:
                resp = await h(request)
            except QueryError as e:
                resp = _bad(str(e))
            except (RedisError, OSError) as e:
                resp = _unavailable(e)
            _latency.labels(route).observe(time.perf_counter() - t0)
            _requests.labels(route, str(resp.status)).inc()
            return resp
        return wrapped

    @staticmethod
    def _no_params(request: web.Request) -> None:
        for k in request.query:
            raise QueryError(f"unknown query parameter {k!r} (this resource takes none)")

    async def services(self, request: web.Request) -> web.StreamResponse:
        q = parse_query(request.query.items())
        parts = await self.source.current()
        tag = etag_of("services", parts["services"].etag, parts["assignments"].etag, q.canonical())

        def body() -> dict[str, Any]:
            items, token, total = self.source.service_index().page(q)
            return {"items": items, "continue": token, "total": total, "limit": q.limit}
        return _conditional(request, tag, body, self._bodies)

    async def service(self, request: web.Request) -> web.StreamResponse:
        self._no_params(request)
        ns, name = request.match_info["namespace"], request.match_info["name"]
        parse_query({"namespace": ns})  # 400 for a malformed namespace
        if not name or len(name) > 253:
            raise QueryError("name: not a Kubernetes object name")
        parts = await self.source.current()
        row = self.source.service_index().get(f"{ns}/{name}")
        if row is None:
            return web.json_response({"error": "not_found", "message": f"no Service {ns}/{name} in the cluster view"},
                                     status=404)
        tag = etag_of("service", parts["services"].etag, parts["assignments"].etag, ns, name)
        return _conditional(request, tag, lambda: row)

    async def pools(self, request: web.Request) -> web.StreamResponse:
        self._no_params(request)
        parts = await self.source.current()
        self.pool_history.add(self._clock(), pool_rows(parts["pools"]))
        return _conditional(request, etag_of("pools", parts["pools"].etag),
                            lambda: {"items": pool_rows(parts["pools"])}, self._bodies)

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        self._no_params(request)
        parts = await self.source.current()
        return _conditional(request, etag_of("nodes", parts["nodes"].etag),
                            lambda: {"items": node_rows(parts["nodes"], self._clock())})

    async def events(self, request: web.Request) -> web.StreamResponse:
        limit, typ = parse_events_query(request.query.items())
        items = await self.source.events(limit, typ)
        tag = etag_of("events", items[0]["id"] if items else "", str(limit), typ or "")
        return _conditional(request, tag, lambda: {"items": items})

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        self._no_params(request)
        parts = await self.source.current()
        tag = etag_of("cluster", *(parts[p].etag for p in PARTS))
        return _conditional(request, tag,
                            lambda: cluster_summary(self.source.service_index(), parts, self._clock()))

    async def timeline(self, request: web.Request) -> web.StreamResponse:
        window, limit = parse_timeline_query(request.query.items())
        parts = await self.source.current()
        events = await self.source.events(MAX_EVENTS)
        now = self._clock()
        tag = etag_of("timeline", parts["assignments"].etag, events[0]["id"] if events else "", str(window),
                      str(limit), str(int(now)))
        return _conditional(request, tag, lambda: vip_timeline(events, parts["assignments"], now, window, limit))

    async def pools_history(self, request: web.Request) -> web.StreamResponse:
        for k in request.query:
            if k != "window":
                raise QueryError(f"unknown query parameter {k!r} (this resource takes: window)")
        window, _ = parse_timeline_query(request.query.items())
        parts = await self.source.current()
        now = self._clock()
        self.pool_history.add(now, pool_rows(parts["pools"]))
        return web.json_response(self.pool_history.items(now, window), headers={"Cache-Control": "no-cache"})

    async def sample_pools(self) -> None:
        """Record pool usage every ``sample_interval_s`` (the history of /v1/pools/history) until shutdown."""
        while not self._stopping.is_set():
            try:
                parts = await self.source.current()
                self.pool_history.add(self._clock(), pool_rows(parts["pools"]))
            except (RedisError, OSError) as e:
                log.debug("pool usage sample skipped", extra={"error": f"{type(e).__name__}: {e}"})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.sample_interval_s)

    async def start_sampler(self, _app: web.Application | None = None) -> None:
        if self._sampler is None:
            self._sampler = asyncio.ensure_future(self.sample_pools())

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return _conditional(request, etag_of("openapi", self._openapi_text), lambda: OPENAPI, self._bodies)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        try:
            self._no_params(request)
            await self.source.current()
        except QueryError as e:
            return _bad(str(e))
        except (RedisError, OSError) as e:
            return _unavailable(e)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q = self.source.subscribe()
        _watchers.inc()
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            hello = {"parts": {p: self.source.parts[p].etag for p in PARTS}}
            await resp.write(f"retry: 2000\nevent: hello\ndata: {_dumps(hello)}\n\n".encode())
            while not self._stopping.is_set():
                get = asyncio.ensure_future(q.get())
                done, _ = await asyncio.wait({get, stop}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    if stop in done:
                        break
                    await resp.write(b": keep-alive\n\n")
                    continue
                msg = get.result()
                kind = msg.pop("kind")
                data = msg.get("event", msg) if kind == "event" else msg
                await resp.write(f"event: {kind}\ndata: {_dumps(data)}\n\n".encode())
                if kind == "overflow":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            stop.cancel()
            self.source.unsubscribe(q)
            _watchers.dec()
        return resp

    async def shutdown(self, _app: web.Application | None = None) -> None:
        self._stopping.set()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None


# the page loads nothing but itself and talks to nothing but this server
_STATIC_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static_middleware() -> Any:
    files = {name: (STATIC_DIR / name) for name in _STATIC}

    @web.middleware
    async def static_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if request.method == "GET" and path in ("/", "/ui"):
            raise web.HTTPFound("/ui/")
        if request.method == "GET" and path.startswith("/ui/"):
            name = path[len("/ui/"):] or "index.html"
            f = files.get(name)
            if f is None or not f.is_file():
                return web.Response(status=404, text="not found\n")
            return web.Response(body=f.read_bytes(), content_type=_STATIC[name], headers=_STATIC_HEADERS)
        return await handler(request)
    return static_mw


def mount_cluster_api(server: StatusServer, bus: Bus, *, source: ClusterSource | None = None) -> ClusterAPI:
    """Add the cluster API routes and the dashboard to ``server`` (before ``server.start()``).

    The dashboard's static files are served ahead of the bearer-token check (they hold no data); the
    page sends the token (asked once, kept in the browser's sessionStorage) with every API call.
    """
    api = ClusterAPI(source or ClusterSource(bus))
    server.app.router.add_routes(api.routes())
    server.app.middlewares.insert(0, _static_middleware())
    server.app.on_startup.append(api.start_sampler)
    server.app.on_shutdown.append(api.shutdown)

    async def _close(_app: web.Application) -> None:
        await api.source.close()
    server.app.on_cleanup.append(_close)
    return api
