"""The one way l2lb talks to the Kubernetes API: a rate-limited client on kubernetes-asyncio.

kubernetes-asyncio supplies the configuration (kubeconfig, in-cluster service account, exec/token
refresh) and its aiohttp-based REST client; requests are made on raw API paths with plain dicts.

Every request of the process waits on one token bucket (per ``(qps, burst)``; all services of a
process use the same flags, hence one bucket), is counted in ``l2lb_kube_requests_total``, and
runs against a deadline: the caller's (:meth:`KubeClient.deadline`) or ``request_timeout``.
429 responses are retried after ``Retry-After``; 5xx and connection errors are retried with
jittered exponential backoff; no retry or throttling wait ever goes past the deadline -- the
request then fails with a :class:`KubeError` saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from l2lb.adapters.kube.errors import KubeError
from l2lb.adapters.kube.ratelimit import RateLimitDeadline, TokenBucket, backoff_delay
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = [
    "RESOURCES",
    "KubeClient",
    "KubeError",
    "Resource",
    "add_kube_args",
    "client_from_args",
    "process_limiter",
]

log = get_logger("l2lb.kube")

REQUESTS = metrics.counter(
    "l2lb_kube_requests_total",
    "Kubernetes API requests by verb, resource and HTTP code ('error' = no response)",
    ("verb", "resource", "code"),
)
WAIT = metrics.histogram(
    "l2lb_kube_ratelimit_wait_seconds",
    "Time requests waited on the client-side rate limiter",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
TOKENS = metrics.gauge("l2lb_kube_ratelimit_tokens", "Tokens currently in the client-side rate limiter")
RETRIES = metrics.counter(
    "l2lb_kube_retries_total", "Kubernetes API requests retried, by cause", ("verb", "resource", "cause")
)

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def api_path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """URL path; ``namespace`` is ignored for cluster-scoped kinds (as Cilium ignores it)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


RESOURCES: dict[str, Resource] = {
    "services": Resource("", "v1", "services", "Service", True),
    "endpointslices": Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    "namespaces": Resource("", "v1", "namespaces", "Namespace", False),
    "nodes": Resource("", "v1", "nodes", "Node", False),
    "leases": Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    "events": Resource("", "v1", "events", "Event", True),
    "cilium_pools_v2alpha1": Resource(
        "cilium.io", "v2alpha1", "ciliumloadbalancerippools", "CiliumLoadBalancerIPPool", False
    ),
    "cilium_pools_v2": Resource("cilium.io", "v2", "ciliumloadbalancerippools", "CiliumLoadBalancerIPPool", False),
    "cilium_l2policies": Resource(
        "cilium.io", "v2alpha1", "ciliuml2announcementpolicies", "CiliumL2AnnouncementPolicy", False
    ),
    "metallb_pools": Resource("metallb.io", "v1beta1", "ipaddresspools", "IPAddressPool", True),
    "metallb_l2ads": Resource("metallb.io", "v1beta1", "l2advertisements", "L2Advertisement", True),
    "l2lb_pools": Resource("l2lb.io", "v1alpha1", "loadbalancerippools", "LoadBalancerIPPool", False),
    "l2lb_l2policies": Resource("l2lb.io", "v1alpha1", "l2announcementpolicies", "L2AnnouncementPolicy", False),
}


# -- process-wide limiter -----------------------------------------------------------------------
_BUCKETS: dict[tuple[float, int], TokenBucket] = {}


def process_limiter(qps: float, burst: int) -> TokenBucket:
    """The process's token bucket for these settings (created on first use, then shared)."""
    key = (float(qps), int(burst))
    b = _BUCKETS.get(key)
    if b is None:
        b = _BUCKETS[key] = TokenBucket(qps, burst)
        TOKENS.set_function(b.tokens)
    return b


Query = list[tuple[str, str]]
JsonList = list[Any]

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("l2lb_kube_deadline", default=None)


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP-date; the API server sends seconds


def _kverb(method: str, name: str | None, watch: bool) -> str:
    if watch:
        return "watch"
    return {
        "GET": "get" if name is not None else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method, method.lower())


class KubeClient:
    """Rate-limited Kubernetes API client working on plain dicts and :class:`Resource` paths."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        qps: float = 20.0,
        burst: int = 40,
        user_agent: str = "l2lb",
        limiter: TokenBucket | None = None,
        request_timeout: float = 60.0,
        throttle_log_threshold: float = 1.0,
        max_retries: int = 10,
    ):
        self.configuration = configuration
        self.api = ApiClient(configuration)
        self.api.user_agent = user_agent
        self.limiter = limiter if limiter is not None else process_limiter(qps, burst)
        self.request_timeout = request_timeout
        self.throttle_log_threshold = throttle_log_threshold
        self.max_retries = max_retries
        self.retry_base = 0.2
        self.retry_cap = 10.0

    @classmethod
    async def create(
        cls,
        kubeconfig: str | None = None,
        *,
        qps: float = 20.0,
        burst: int = 40,
        user_agent: str = "l2lb",
        limiter: TokenBucket | None = None,
        request_timeout: float = 60.0,
    ) -> KubeClient:
        """Load ``kubeconfig``; ``None`` -> in-cluster service account, then ``$KUBECONFIG``,
        then ``~/.kube/config``. Raises :class:`KubeError` (status 0, reason ``ConfigError``)."""
        cfg = Configuration()
        try:
            if kubeconfig:
                await load_kube_config(config_file=kubeconfig, client_configuration=cfg, persist_config=False)
            else:
                try:
                    load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                except ConfigException:
                    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
                    await load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
        except Exception as e:  # any malformed kubeconfig (YAML, keys, certs) is a config error
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config (no in-cluster config either)"
            raise KubeError(0, "ConfigError", f"cannot load Kubernetes client config from {where}: {e}") from e
        log.info(
            "kubernetes client configured",
            extra={"host": cfg.host, "qps": qps, "burst": burst, "kubeconfig": kubeconfig or "auto"},
        )
        return cls(cfg, qps=qps, burst=burst, user_agent=user_agent, limiter=limiter, request_timeout=request_timeout)

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    @contextlib.contextmanager
    def deadline(seconds: float) -> Iterator[None]:
        """Requests made inside this block (this task and tasks it starts) must finish within
        ``seconds``; nested blocks keep the earlier deadline."""
        new = time.monotonic() + seconds
        cur = _DEADLINE.get()
        token = _DEADLINE.set(new if cur is None else min(cur, new))
        try:
            yield
        finally:
            _DEADLINE.reset(token)

    # -- core request loop -----------------------------------------------------------------------
    async def _send(
        self,
        method: str,
        path: str,
        *,
        resource: str,
        verb: str,
        query: Query | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
        stream_read_timeout: float | None = None,
        retry_5xx: bool = True,
        accept: str = "application/json",
    ) -> aiohttp.ClientResponse | bytes:
        """Send one API request with throttling and retries. Returns the body, or for
        ``stream_read_timeout`` set (watch) the open 2xx response, which the caller must close."""
        now = time.monotonic()
        deadline = now + (timeout_s if timeout_s is not None else self.request_timeout)
        ctx = _DEADLINE.get()
        if ctx is not None:
            deadline = min(deadline, ctx)
        url = str(self.configuration.host or "").rstrip("/") + path
        attempt = 0
        while True:
            try:
                waited = await self.limiter.wait(deadline)
            except RateLimitDeadline as e:
                REQUESTS.labels(verb, resource, "ratelimit_deadline").inc()
                log.warning(
                    "client rate limiter Wait would exceed context deadline",
                    extra={
                        "request": f"{method}:{url}",
                        "wait_s": round(e.wait, 3),
                        "left_s": round(e.remaining, 3),
                    },
                )
                raise KubeError(0, "ClientRateLimiterDeadline", f"{e} for {method}:{url}") from None
            WAIT.observe(waited)
            if waited >= self.throttle_log_threshold:
                log.warning(
                    f"Waited for {waited:.2f}s due to client-side throttling, request: {method}:{url}",
                    extra={"wait_s": round(waited, 3), "verb": verb, "resource": resource},
                )
            headers: dict[str, str] = dict(self.api.default_headers)
            headers["Accept"] = accept
            headers["Content-Type"] = content_type
            q: list[tuple[str, str]] = list(query or [])
            await self.api.update_params_for_auth(headers, q, ["BearerToken"])
            left = deadline - time.monotonic()
            if stream_read_timeout is not None:
                rt = aiohttp.ClientTimeout(total=None, sock_connect=max(left, 0.001), sock_read=stream_read_timeout)
            else:
                rt = aiohttp.ClientTimeout(total=max(left, 0.001))
            resp: aiohttp.ClientResponse | None = None
            cause: str
            err: KubeError
            try:
                resp = await self.api.rest_client.request(
                    method,
                    url,
                    query_params=q or None,  # type: ignore[arg-type]  # urlencode takes pairs too
                    headers=headers,
                    body=body,
                    _preload_content=False,
                    _request_timeout=rt,
                )
                assert resp is not None
                status = resp.status
                if stream_read_timeout is not None and 200 <= status < 300:
                    REQUESTS.labels(verb, resource, str(status)).inc()
                    return resp
                data = await resp.read()
            except asyncio.CancelledError:
                if resp is not None:
                    resp.close()
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                if resp is not None:
                    resp.close()
                REQUESTS.labels(verb, resource, "error").inc()
                timed_out = isinstance(e, asyncio.TimeoutError) and time.monotonic() >= deadline - 0.001
                if timed_out:
                    raise KubeError(0, "Timeout", f"{method}:{url}: no response before the deadline") from None
                cause = "connection"
                err = KubeError(0, "ConnectionError", f"{method}:{url}: {type(e).__name__}: {e}")
                retry_after: float | None = None
                # never re-send a create that may have reached the server, except when it provably did not
                if method == "POST" and not isinstance(e, aiohttp.ClientConnectorError):
                    raise err from None
            else:
                resp.release()
                REQUESTS.labels(verb, resource, str(status)).inc()
                if 200 <= status < 300:
                    return data
                retry_after = _retry_after(resp.headers)
                err = KubeError.from_response(status, data, retry_after)
                if status == 429:
                    cause = "429"
                elif status >= 500 and retry_5xx and (method != "POST" or retry_after is not None):
                    cause = "5xx"
                else:
                    raise err
            # -- retry ---------------------------------------------------------------------------
            delay = (
                retry_after
                if retry_after is not None
                else backoff_delay(attempt, base=self.retry_base, cap=self.retry_cap)
            )
            attempt += 1
            left = deadline - time.monotonic()
            if attempt > self.max_retries:
                raise err
            if delay >= left:
                raise KubeError(
                    err.status,
                    err.reason,
                    f"{err.message} (giving up: retry in {delay:.2f}s would pass the request deadline)",
                    retry_after=err.retry_after,
                )
            RETRIES.labels(verb, resource, cause).inc()
            log.info(
                "kubernetes request failed, retrying",
                extra={
                    "request": f"{method}:{url}",
                    "status": err.status,
                    "reason": err.reason,
                    "retry_in_s": round(delay, 3),
                    "attempt": attempt,
                },
            )
            await asyncio.sleep(delay)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = None,
        content_type: str = "application/json",
        resource: str = "raw",
        verb: str | None = None,
        timeout_s: float | None = None,
        accept: str = "application/json",
    ) -> Any:
        """A raw API request (throttled, retried); returns the decoded JSON body (or None)."""
        data = await self._send(
            method,
            path,
            resource=resource,
            verb=verb or method.lower(),
            query=query,
            body=body,
            content_type=content_type,
            timeout_s=timeout_s,
            accept=accept,
        )
        assert isinstance(data, bytes)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as e:
            raise KubeError(0, "BadResponse", f"{method}:{path}: response is not JSON: {e}") from None

    async def _obj(
        self, method: str, res: Resource, path: str, name: str | None, sub: str | None, **kw: Any
    ) -> dict[str, Any]:
        label = res.plural + (f"/{sub}" if sub else "")
        out = await self.request(method, path, resource=label, verb=_kverb(method, name, False), **kw)
        if not isinstance(out, dict):
            raise KubeError(0, "BadResponse", f"{method}:{path}: expected a JSON object")
        return out

    # -- typed verbs -----------------------------------------------------------------------------
    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self._obj("GET", res, res.api_path(namespace, name), name, None)

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        page_size: int = 500,
    ) -> dict[str, Any]:
        """The full List object; paginates with limit/continue and joins the pages."""
        path = res.api_path(namespace)
        q: Query = [("limit", str(page_size))]
        if label_selector:
            q.append(("labelSelector", label_selector))
        first = await self._obj("GET", res, path, None, None, query=q)
        items: list[dict[str, Any]] = list(first.get("items") or [])
        cont = (first.get("metadata") or {}).get("continue")
        while cont:
            page = await self._obj("GET", res, path, None, None, query=[*q, ("continue", str(cont))])
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
        first["items"] = items
        meta = first.setdefault("metadata", {})
        meta.pop("continue", None)
        meta.pop("remainingItemCount", None)
        return first

    def _ns(self, res: Resource, obj: dict[str, Any], namespace: str | None) -> str | None:
        if not res.namespaced:
            return None
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        if not ns:
            raise KubeError(0, "BadRequest", f"a namespace is required to write a {res.kind}")
        return str(ns)

    async def create_object(self, res: Resource, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        body = {"apiVersion": res.api_version, "kind": res.kind, **obj}
        return await self._obj("POST", res, res.api_path(self._ns(res, obj, namespace)), None, None, body=body)

    async def replace(self, res: Resource, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise KubeError(0, "BadRequest", f"replace of a {res.kind} needs metadata.name")
        body = {"apiVersion": res.api_version, "kind": res.kind, **obj}
        path = res.api_path(self._ns(res, obj, namespace), str(name))
        return await self._obj("PUT", res, path, str(name), None, body=body)

    async def replace_status(self, res: Resource, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """PUT to the status subresource (optimistic concurrency on metadata.resourceVersion)."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        body = {"apiVersion": res.api_version, "kind": res.kind, **obj}
        path = res.api_path(self._ns(res, obj, namespace), name, "status")
        return await self._obj("PUT", res, path, name, "status", body=body)

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: dict[str, Any] | JsonList,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> dict[str, Any]:
        ct = PATCH_TYPES.get(patch_type)
        if ct is None:
            raise KubeError(0, "BadRequest", f"unknown patch_type {patch_type!r}: use one of {sorted(PATCH_TYPES)}")
        path = res.api_path(namespace, name, subresource)
        return await self._obj("PATCH", res, path, name, subresource, body=patch, content_type=ct)

    async def delete(self, res: Resource, name: str, namespace: str | None = None) -> None:
        await self.request("DELETE", res.api_path(namespace, name), resource=res.plural, verb="delete")

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_s: int = 300,
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """Stream ``(type, object)`` from ``resource_version`` with bookmarks, until the server
        ends the watch (``timeout_s``). A 410 Gone (start or in-stream ERROR) raises
        ``KubeError(status=410)``; use ``contextlib.aclosing`` when leaving early."""
        q: Query = [
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(int(timeout_s))),
        ]
        if resource_version:
            q.append(("resourceVersion", resource_version))
        if label_selector:
            q.append(("labelSelector", label_selector))
        resp = await self._send(
            "GET",
            res.api_path(namespace),
            resource=res.plural,
            verb="watch",
            query=q,
            stream_read_timeout=float(timeout_s) + 30.0,
        )
        assert isinstance(resp, aiohttp.ClientResponse)
        try:
            while True:
                try:
                    line = await resp.content.readline()
                except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                    raise KubeError(0, "WatchBroken", f"watch {res.plural}: {type(e).__name__}: {e}") from None
                if not line:
                    return
                line = line.strip()
                if not line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    raise KubeError(0, "BadResponse", f"watch {res.plural}: undecodable event line") from None
                typ = ev.get("type") if isinstance(ev, dict) else None
                obj = ev.get("object") if isinstance(ev, dict) else None
                if not isinstance(obj, dict) or not isinstance(typ, str):
                    raise KubeError(0, "BadResponse", f"watch {res.plural}: malformed event")
                if typ == "ERROR":
                    code = int(obj.get("code") or 500)
                    raise KubeError(code, str(obj.get("reason") or "Error"), str(obj.get("message") or ""))
                yield typ, obj
        finally:
            resp.close()


# -- argparse helpers ---------------------------------------------------------------------------
def add_kube_args(parser: argparse.ArgumentParser) -> None:
    """``--kubeconfig``, ``--kube-qps``, ``--kube-burst`` (env L2LB_KUBECONFIG, L2LB_KUBE_QPS,
    L2LB_KUBE_BURST)."""
    g = parser.add_argument_group("Kubernetes API")
    g.add_argument(
        "--kubeconfig",
        default=os.environ.get("L2LB_KUBECONFIG") or None,
        help="kubeconfig path (env L2LB_KUBECONFIG; default: in-cluster, then $KUBECONFIG, ~/.kube/config)",
    )
    g.add_argument(
        "--kube-qps",
        type=float,
        default=os.environ.get("L2LB_KUBE_QPS", "20"),
        help="client-side request limit, requests/s for the whole process (env L2LB_KUBE_QPS; default 20)",
    )
    g.add_argument(
        "--kube-burst",
        type=int,
        default=os.environ.get("L2LB_KUBE_BURST", "40"),
        help="client-side rate limiter burst (env L2LB_KUBE_BURST; default 40)",
    )


async def client_from_args(args: argparse.Namespace, *, user_agent: str = "l2lb") -> KubeClient:
    qps = float(args.kube_qps)
    burst = int(args.kube_burst)
    if burst < 1:
        raise KubeError(0, "ConfigError", f"--kube-burst must be >= 1, got {burst}")
    return await KubeClient.create(args.kubeconfig, qps=qps, burst=burst, user_agent=user_agent)
