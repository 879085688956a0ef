"""aiohttp application of the embedded Kubernetes-compatible API server.

Serves discovery, CRUD/patch/watch for built-in types and installed CRDs, and test hooks under
``/l2lb-debug/``: request log, fault injection (429/5xx/latency/dropped watches), compaction, reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from l2lb.apiserver.store import ApiError, Event, Store, bad_request
from l2lb.apiserver.table import TABLE_CONTENT_TYPE, table, wants_table
from l2lb.apiserver.types import ResourceType
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["ApiServer", "Fault"]

log = get_logger("l2lb.apiserver")
_REQS = metrics.counter(
    "l2lb_apiserver_requests_total",
    "requests served by the embedded API server",
    ("verb", "resource", "code"),
)
_WATCHES = metrics.gauge("l2lb_apiserver_watches", "open watch streams of the embedded API server")
Obj = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-l2lb",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


def _version_key(v: str) -> tuple[int, int, int]:
    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", v)
    if not m:
        return (0, 0, 0)
    stab = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (stab, int(m.group(1)), int(m.group(3) or 0))


@dataclass
class Fault:
    status: int | None = None
    retry_after: float | None = None
    count: int | None = None  # None: until cleared
    latency_ms: float = 0.0
    match: str = ""
    verb: str | None = None
    drop_watches: bool = False
    id: int = 0
    fired: int = 0

    def matches(self, path_qs: str, verb: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.match in path_qs and (self.verb is None or self.verb == verb)

    def to_json(self) -> Obj:
        return {
            "id": self.id,
            "status": self.status,
            "retry_after": self.retry_after,
            "count": self.count,
            "latency_ms": self.latency_ms,
            "match": self.match,
            "verb": self.verb,
            "drop_watches": self.drop_watches,
            "fired": self.fired,
        }


@dataclass
class _Target:
    rt: ResourceType
    ns: str | None
    name: str | None
    sub: str | None
    legacy_watch: bool = False


def _new_queue() -> asyncio.Queue[Event | None]:
    return asyncio.Queue()


@dataclass(eq=False)
class _Watch:
    path_qs: str
    queue: asyncio.Queue[Event | None] = field(default_factory=_new_queue)
    dropped: bool = False
    limit: int = 10000  # events queued for a client that does not read: then the watch is closed

    def drop(self) -> None:
        if not self.dropped:
            self.dropped = True
            self.queue.put_nowait(None)

    def push(self, ev: Event | None) -> None:
        if ev is None or self.queue.qsize() >= self.limit:
            if ev is not None:
                log.warning("closing a watch whose client does not keep up", extra={"path": self.path_qs})
            self.drop()
        elif not self.dropped:
            self.queue.put_nowait(ev)


def _status_response(err: ApiError) -> web.Response:
    resp = web.json_response(err.status(), status=err.code)
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp


class ApiServer:
    def __init__(
        self,
        store: Store | None = None,
        *,
        bookmark_interval: float = 60.0,
        state_file: str | None = None,
        max_log: int = 200_000,
        watch_timeout: float = 1800.0,
    ):
        self.store = store or Store()
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.requests: deque[Obj] = deque(maxlen=max_log)
        self.faults: list[Fault] = []
        self._fault_ids = 0
        self.watches: set[_Watch] = set()
        self.state_file = Path(state_file) if state_file else None
        self._dirty = False
        self._flush_task: asyncio.Task[None] | None = None
        if self.state_file is not None:
            if self.state_file.exists():
                try:
                    self.store.load(json.loads(self.state_file.read_text()))
                    log.info("state loaded", extra={"file": str(self.state_file), "rv": self.store.rv})
                except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
                    aside = self.state_file.with_name(f"{self.state_file.name}.corrupt-{int(time.time())}")
                    with contextlib.suppress(OSError):
                        os.replace(self.state_file, aside)
                    self.store = Store(window=self.store.window)
                    log.error(
                        "state file unreadable; moved aside, starting empty",
                        extra={"file": str(self.state_file), "moved_to": str(aside), "error": str(e)},
                    )
            self._write_state(clean=False)
            self.store.on_change = self._mark_dirty
        self.app = web.Application(middlewares=[self._mw], client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/l2lb-debug/{what}", self._debug)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.app.on_shutdown.append(self._on_shutdown)

    # -- persistence ----------------------------------------------------------------------------
    def _write_state(self, clean: bool) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(self.store.dump(clean), separators=(",", ":")))
        os.replace(tmp, self.state_file)
        self._dirty = False

    def _mark_dirty(self) -> None:
        self._dirty = True
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0.2)
        if self._dirty:
            try:
                self._write_state(clean=False)
            except OSError as e:
                log.error("cannot write state file", extra={"file": str(self.state_file), "error": str(e)})

    async def _on_shutdown(self, _: web.Application) -> None:
        for w in list(self.watches):
            w.drop()
        if self.state_file is not None:
            if self._flush_task is not None:
                self._flush_task.cancel()
            self._write_state(clean=True)

    # -- middleware: request log + faults -------------------------------------------------------
    def _classify(self, request: web.Request) -> Obj:
        parts = [p for p in request.path.split("/") if p]
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            request.method, request.method.lower()
        )
        entry: Obj = {
            "verb": verb,
            "path": request.path,
            "resource": "",
            "subresource": "",
            "namespace": "",
            "name": "",
            "code": 0,
            "t": time.time(),
            "ua": request.headers.get("User-Agent", ""),
        }
        try:
            tgt = self._target(parts)
        except ApiError:
            tgt = None
        if isinstance(tgt, _Target):
            entry.update(
                resource=tgt.rt.plural,
                subresource=tgt.sub or "",
                namespace=tgt.ns or "",
                name=tgt.name or "",
                group=tgt.rt.group,
            )
            watch = tgt.legacy_watch or request.query.get("watch") in ("1", "true", "True")
            if request.method == "GET" and tgt.name is None:
                verb = "watch" if watch else "list"
            elif request.method == "GET" and watch:
                verb = "watch"
            elif request.method == "DELETE" and tgt.name is None:
                verb = "deletecollection"
            entry["verb"] = verb
        return entry

    def _log(self, entry: Obj, code: int) -> None:
        if entry.get("logged"):
            return
        entry["code"] = code
        entry["logged"] = True
        entry["ms"] = round((time.time() - entry["t"]) * 1000, 3)
        self.requests.append(entry)
        _REQS.labels(entry["verb"], entry["resource"] or "-", str(code)).inc()

    @web.middleware
    async def _mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/l2lb-debug/"):
            try:
                return await handler(request)
            except ApiError as e:
                return _status_response(e)
            except (TypeError, ValueError, KeyError) as e:
                return _status_response(bad_request(f"bad debug request: {e}"))
        entry = self._classify(request)
        request["entry"] = entry
        for f in self.faults:
            if f.drop_watches or not f.matches(request.path_qs, entry["verb"]):
                continue
            f.fired += 1
            if f.count is not None:
                f.count -= 1
            if f.latency_ms:
                await asyncio.sleep(f.latency_ms / 1000)
            if f.status:
                err = self._fault_error(f.status, f.retry_after)
                self._log(entry, err.code)
                entry["fault"] = f.id
                return _status_response(err)
            break
        try:
            resp = await handler(request)
        except ApiError as e:
            resp = _status_response(e)
        except web.HTTPException:
            raise
        except Exception as e:  # never a bare 500 page: a Status, and a log line
            log.exception("internal error", extra={"path": request.path_qs})
            resp = _status_response(ApiError(500, "InternalError", f"an error on the server: {e!r}"))
        self._log(entry, resp.status)
        return resp

    @staticmethod
    def _fault_error(status: int, retry_after: float | None) -> ApiError:
        headers: dict[str, str] = {}
        details: Obj | None = None
        if retry_after is not None:
            headers["Retry-After"] = str(max(0, round(retry_after)) if retry_after >= 1 else retry_after)
            details = {"retryAfterSeconds": max(1, round(retry_after))}
        reason = {
            429: "TooManyRequests",
            500: "InternalError",
            503: "ServiceUnavailable",
            504: "Timeout",
            409: "Conflict",
            403: "Forbidden",
            401: "Unauthorized",
            404: "NotFound",
        }.get(status, "Unknown")
        msg = "Too many requests, please try again later." if status == 429 else f"injected fault ({status})"
        return ApiError(status, reason, msg, details=details, headers=headers)

    # -- routing --------------------------------------------------------------------------------
    def _target(self, parts: list[str]) -> _Target | tuple[str, ...] | None:
        """Resource target, or a discovery tuple, or None (not an API path)."""
        if not parts or parts[0] not in ("api", "apis"):
            return None
        if parts[0] == "api":
            if len(parts) == 1:
                return ("api",)
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return ("apis",)
            if len(parts) == 2:
                return ("group", parts[1])
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return ("resources", group, version)
        legacy_watch = False
        if rest[0] == "watch":
            legacy_watch, rest = True, rest[1:]
        if not rest:
            raise self._nf()
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            rt = self.store.lookup(group, version, rest[2])
            if rt is not None and rt.namespaced:
                ns, rest = rest[1], rest[2:]
        rt = self.store.lookup(group, version, rest[0])
        if rt is None or len(rest) > 3 or (ns is None and len(rest) > 1 and rt.namespaced):
            raise self._nf()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and rt.status_subresource):
            raise self._nf()
        return _Target(rt, ns, name, sub, legacy_watch)

    @staticmethod
    def _nf() -> ApiError:
        return ApiError(
            404,
            "NotFound",
            "the server could not find the requested resource",
            details={"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path in ("/version", "/version/"):
            return web.json_response(VERSION)
        if request.path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if request.path == "/metrics" and request.method == "GET":
            resp = web.Response(body=metrics.render())
            resp.headers["Content-Type"] = metrics.CONTENT_TYPE
            return resp
        if parts[:2] == ["openapi", "v3"] and request.method == "GET":
            return web.json_response(self._openapi_v3("/".join(parts[2:])))
        tgt = self._target(parts)
        if tgt is None:
            raise self._nf()
        if not isinstance(tgt, _Target):
            if request.method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", f"{request.method} is not supported on discovery paths"
                )
            return web.json_response(self._discovery(tgt))
        return await self._resource(request, tgt)

    # -- discovery ------------------------------------------------------------------------------
    def _discovery(self, what: tuple[str, ...]) -> Obj:
        groups = self.store.groups()
        if what[0] == "api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
            }
        if what[0] == "apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group(g, vs) for g, vs in sorted(groups.items()) if g],
            }
        if what[0] == "group":
            if what[1] not in groups or not what[1]:
                raise self._nf()
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group(what[1], groups[what[1]])}
        group, version = what[1], what[2]
        rts = self.store.resources(group, version)
        if not rts:
            raise self._nf()
        res: list[Obj] = []
        for rt in sorted(rts, key=lambda r: r.plural):
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            r: Obj = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            }
            if rt.short_names:
                r["shortNames"] = list(rt.short_names)
            if rt.categories:
                r["categories"] = list(rt.categories)
            res.append(r)
            if rt.status_subresource:
                res.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": res,
        }

    def _openapi_v3(self, gv_path: str) -> Obj:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself
        (``fieldValidation``) so it skips its client-side schema check; no schemas are published."""
        gvs = [("", v) if not g else (g, v) for g, vs in self.store.groups().items() for v in vs]

        def path_of(g: str, v: str) -> str:
            return f"apis/{g}/{v}" if g else f"api/{v}"

        if not gv_path:
            out: Obj = {}
            for g, v in gvs:
                digest = hashlib.sha256(
                    json.dumps(
                        sorted((r.plural, r.kind, r.namespaced) for r in self.store.resources(g, v))
                    ).encode()
                ).hexdigest()[:32]
                out[path_of(g, v)] = {"serverRelativeURL": f"/openapi/v3/{path_of(g, v)}?hash={digest}"}
            return {"paths": out}
        match = [(g, v) for g, v in gvs if path_of(g, v) == gv_path]
        if not match:
            raise self._nf()
        g, v = match[0]
        paths: Obj = {}
        param = [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
        ]
        for rt in self.store.resources(g, v):
            base = "/" + path_of(g, v) + ("/namespaces/{namespace}" if rt.namespaced else "")
            gvk = {"group": g, "version": v, "kind": rt.kind}
            paths[f"{base}/{rt.plural}/{{name}}"] = {
                "patch": {
                    "operationId": f"patch{rt.kind}",
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": param,
                    "responses": {"200": {"description": "OK"}},
                },
                "put": {
                    "operationId": f"replace{rt.kind}",
                    "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": param,
                    "responses": {"200": {"description": "OK"}},
                },
            }
            paths[f"{base}/{rt.plural}"] = {
                "post": {
                    "operationId": f"create{rt.kind}",
                    "x-kubernetes-action": "post",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": param,
                    "responses": {"201": {"description": "Created"}},
                },
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (l2lb embedded)", "version": VERSION["gitVersion"]},
            "paths": paths,
            "components": {"schemas": {}},
        }

    @staticmethod
    def _group(g: str, versions: list[str]) -> Obj:
        vs = sorted(versions, key=_version_key, reverse=True)
        gvs = [{"groupVersion": f"{g}/{v}", "version": v} for v in vs]
        return {"name": g, "versions": gvs, "preferredVersion": gvs[0]}

    # -- resources ------------------------------------------------------------------------------
    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            raise bad_request("the request body is empty")
        ctype = request.content_type
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"couldn't get version/kind; json parse error: {e}") from None

    async def _opt_body(self, request: web.Request) -> Any:
        raw = await request.read()
        return await self._body(request) if raw.strip() else None

    async def _resource(self, request: web.Request, t: _Target) -> web.StreamResponse:
        q = request.query
        st = self.store
        rt = t.rt
        strict = q.get("fieldValidation") == "Strict"
        dry = q.get("dryRun") == "All"
        watch = t.legacy_watch or q.get("watch") in ("1", "true", "True")
        m = request.method
        if t.name is None:
            if m == "GET":
                if watch:
                    return await self._watch(request, t)
                items = st.list_objects(rt, t.ns, q.get("labelSelector"), q.get("fieldSelector"))
                if wants_table(request.headers.get("Accept", "")):
                    return self._table([st.view(rt, o) for o in items], t, request)
                return web.json_response(
                    {
                        "kind": rt.list_kind,
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(st.rv)},
                        "items": [st.view(rt, o) for o in items],
                    }
                )
            if m == "POST":
                if rt.namespaced and t.ns is None:
                    raise self._nf()
                obj = st.create(rt, t.ns, await self._body(request), strict=strict, dry_run=dry)
                return web.json_response(st.view(rt, obj), status=201)
            if m == "DELETE":
                items = st.list_objects(rt, t.ns, q.get("labelSelector"), q.get("fieldSelector"))
                gone = []
                for o in items:
                    md = o["metadata"]
                    with contextlib.suppress(ApiError):
                        gone.append(st.view(rt, st.delete(rt, md.get("namespace"), md["name"], dry_run=dry)))
                return web.json_response(
                    {
                        "kind": rt.list_kind,
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(st.rv)},
                        "items": gone,
                    }
                )
            raise ApiError(405, "MethodNotAllowed", f"{m} is not supported on a collection")
        name = t.name
        if m == "GET":
            if watch:
                return await self._watch(request, t)
            got = st.view(rt, st.get(rt, t.ns, name))
            if wants_table(request.headers.get("Accept", "")) and t.sub is None:
                return self._table([got], t, request)
            return web.json_response(got)
        if m == "PUT":
            obj = st.update(
                rt, t.ns, name, await self._body(request), subresource=t.sub, strict=strict, dry_run=dry
            )
            return web.json_response(st.view(rt, obj))
        if m == "PATCH":
            ptype = _PATCH_TYPES.get(request.content_type)
            if ptype is None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({request.content_type}) - "
                    "accepted media types include: application/json-patch+json, "
                    "application/merge-patch+json, application/strategic-merge-patch+json",
                )
            obj = st.patch(
                rt,
                t.ns,
                name,
                ptype,
                await self._body(request),
                subresource=t.sub,
                strict=strict,
                dry_run=dry,
            )
            return web.json_response(st.view(rt, obj))
        if m == "DELETE":
            if t.sub is not None:
                raise ApiError(405, "MethodNotAllowed", "DELETE is not supported on a subresource")
            pre: Obj | None = None
            raw = await request.read()
            if raw.strip():
                try:
                    opts = json.loads(raw)
                except ValueError as e:
                    raise bad_request(f"invalid DeleteOptions: {e}") from None
                if not isinstance(opts, dict):
                    raise bad_request("DeleteOptions must be a JSON object")
                p = opts.get("preconditions")
                pre = p if isinstance(p, dict) else None
            obj = st.delete(rt, t.ns, name, pre, dry_run=dry)
            return web.json_response(st.view(rt, obj))
        raise ApiError(405, "MethodNotAllowed", f"{m} is not supported")

    def _table(self, objs: list[Obj], t: _Target, request: web.Request) -> web.Response:
        tab = table(t.rt, objs, str(self.store.rv), request.query.get("includeObject", "Metadata"))
        resp = web.json_response(tab)
        resp.content_type = "application/json"
        resp.headers["Content-Type"] = TABLE_CONTENT_TYPE
        return resp

    # -- watch ----------------------------------------------------------------------------------
    def _translate(self, t: _Target, ev: Event, lreqs: Any, freqs: Any) -> tuple[str, Obj] | None:
        md = ev.obj.get("metadata") or {}
        if t.rt.namespaced and t.ns and md.get("namespace") != t.ns:
            return None
        if t.name is not None and md.get("name") != t.name:
            return None
        now_ok = Store.selected(ev.obj, lreqs, freqs)
        old_ok = ev.old is not None and Store.selected(ev.old, lreqs, freqs)
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if now_ok else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if (now_ok or old_ok) else None
        if now_ok and old_ok:
            return ("MODIFIED", ev.obj)
        if now_ok:
            return ("ADDED", ev.obj)
        if old_ok and ev.old is not None:
            gone = dict(ev.old)
            gone["metadata"] = {**(ev.old.get("metadata") or {}), "resourceVersion": str(ev.rv)}
            return ("DELETED", gone)
        return None

    async def _watch(self, request: web.Request, t: _Target) -> web.StreamResponse:
        q = request.query
        st = self.store
        rt = t.rt
        lsel, fsel = q.get("labelSelector"), q.get("fieldSelector")
        if t.name is not None:
            fsel = ",".join(x for x in (fsel, f"metadata.name={t.name}") if x)
        lreqs, freqs = st.parse_selectors(lsel, fsel)
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true", "True")
        try:
            timeout = float(q.get("timeoutSeconds") or self.watch_timeout)
        except ValueError:
            raise bad_request(f"invalid timeoutSeconds {q.get('timeoutSeconds')!r}") from None
        rv_param = q.get("resourceVersion") or ""
        initial: list[tuple[str, Obj]] = []
        backlog: list[Event] = []
        expired: ApiError | None = None
        if rv_param in ("", "0"):
            initial = [("ADDED", o) for o in st.list_objects(rt, t.ns, lsel, fsel)]
        else:
            try:
                n = int(rv_param)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {rv_param!r}") from None
            try:
                backlog = st.events_since(rt.gk, n)
            except ApiError as e:
                expired = e
        w = _Watch(request.path_qs)
        drop_now = False
        for f in self.faults:
            if f.drop_watches and f.count is not None and f.matches(request.path_qs, "watch"):
                f.count -= 1
                f.fired += 1
                drop_now = True
                break
        if expired is None:
            st.subscribe(rt.gk, w.push)
            self.watches.add(w)
        _WATCHES.set(len(self.watches))
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            self._log(request["entry"], 200)

            as_table = wants_table(request.headers.get("Accept", ""))
            include = q.get("includeObject", "Metadata")

            async def send(type_: str, obj: Obj) -> None:
                if as_table and type_ in ("ADDED", "MODIFIED", "DELETED"):
                    obj = table(rt, [obj], obj["metadata"].get("resourceVersion", ""), include)
                line = json.dumps({"type": type_, "object": obj}, separators=(",", ":")) + "\n"
                await resp.write(line.encode())

            if expired is not None:
                await send("ERROR", expired.status())
                return resp
            if drop_now:
                return resp
            for type_, obj in initial:
                await send(type_, st.view(rt, obj))
            for old_ev in backlog:
                tr = self._translate(t, old_ev, lreqs, freqs)
                if tr is not None:
                    await send(tr[0], st.view(rt, tr[1]))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bm = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wait = min(deadline, next_bm if bookmarks else deadline, now + 5.0) - now
                try:
                    ev: Event | None = await asyncio.wait_for(w.queue.get(), max(wait, 0.001))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if bookmarks and loop.time() >= next_bm and w.queue.empty():
                        await send(
                            "BOOKMARK",
                            {
                                "kind": rt.kind,
                                "apiVersion": rt.api_version,
                                "metadata": {"resourceVersion": str(st.rv)},
                            },
                        )
                        next_bm = loop.time() + self.bookmark_interval
                    continue
                if ev is None:
                    break
                tr = self._translate(t, ev, lreqs, freqs)
                if tr is not None:
                    await send(tr[0], st.view(rt, tr[1]))
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError) as e:
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            st.unsubscribe(rt.gk, w.push)
            self.watches.discard(w)
            _WATCHES.set(len(self.watches))
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # -- debug ----------------------------------------------------------------------------------
    async def _debug(self, request: web.Request) -> web.StreamResponse:
        what = request.match_info["what"]
        m = request.method
        if what == "requests":
            if m == "GET":
                since = float(request.query.get("since", "0") or 0)
                return web.json_response(
                    [{k: v for k, v in e.items() if k != "logged"} for e in self.requests if e["t"] >= since]
                )
            if m == "DELETE":
                self.requests.clear()
                return web.json_response({"cleared": True})
        elif what == "faults":
            if m == "GET":
                return web.json_response([f.to_json() for f in self.faults])
            if m == "DELETE":
                self.faults.clear()
                return web.json_response({"cleared": True})
            if m == "POST":
                return web.json_response(self._add_fault(await self._body(request)), status=201)
        elif what == "compact" and m == "POST":
            upto = None
            body = await self._opt_body(request)
            if isinstance(body, dict) and body.get("rv") is not None:
                upto = int(body["rv"])
            return web.json_response({"compacted_rv": self.store.compact(upto), "rv": self.store.rv})
        elif what == "reset" and m == "POST":
            body = await self._opt_body(request)
            keep = not (isinstance(body, dict) and body.get("keep_crds") is False)
            n = self.store.reset(keep_crds=keep)
            return web.json_response({"deleted": n, "rv": self.store.rv})
        elif what == "config":
            if m == "POST":
                body = await self._body(request)
                if not isinstance(body, dict):
                    raise bad_request("config must be a JSON object")
                if "bookmark_interval" in body:
                    self.bookmark_interval = float(body["bookmark_interval"])
                if "watch_window" in body:
                    self.store.window = max(1, int(body["watch_window"]))
                    while len(self.store.history) > self.store.window:
                        self.store.compacted_rv = self.store.history.popleft().rv
            if m in ("GET", "POST"):
                return web.json_response(
                    {"bookmark_interval": self.bookmark_interval, "watch_window": self.store.window}
                )
        elif what == "state" and m == "GET":
            st = self.store
            return web.json_response(
                {
                    "rv": st.rv,
                    "compacted_rv": st.compacted_rv,
                    "history": len(st.history),
                    "watches": len(self.watches),
                    "objects": st.count(),
                }
            )
        raise ApiError(404, "NotFound", f"no debug endpoint {m} /l2lb-debug/{what}")

    def _add_fault(self, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("a fault must be a JSON object")
        known = {"status", "retry_after", "count", "latency_ms", "match", "verb", "drop_watches"}
        extra = set(body) - known
        if extra:
            raise bad_request(f"unknown fault fields {sorted(extra)}; known: {sorted(known)}")
        try:
            f = Fault(
                status=int(body["status"]) if body.get("status") is not None else None,
                retry_after=float(body["retry_after"]) if body.get("retry_after") is not None else None,
                count=int(body["count"]) if body.get("count") is not None else None,
                latency_ms=float(body.get("latency_ms") or 0),
                match=str(body.get("match") or ""),
                verb=str(body["verb"]) if body.get("verb") else None,
                drop_watches=bool(body.get("drop_watches", False)),
            )
        except (TypeError, ValueError) as e:
            raise bad_request(f"invalid fault: {e}") from None
        if f.status is not None and not 400 <= f.status <= 599:
            raise bad_request("fault status must be a 4xx or 5xx code")
        self._fault_ids += 1
        f.id = self._fault_ids
        dropped = 0
        if f.drop_watches:
            for w in list(self.watches):
                if f.match in w.path_qs:
                    w.drop()
                    dropped += 1
            if f.count is None:
                f.count = 0  # one-shot: only the open watches
        if f.status is not None or f.latency_ms or (f.drop_watches and f.count):
            self.faults.append(f)
        log.info("fault injected", extra={"fault": f.to_json(), "dropped_watches": dropped})
        return {**f.to_json(), "dropped_watches": dropped}
