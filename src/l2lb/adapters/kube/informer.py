"""Informer: a local cache of one resource kept current by list + watch, with event handlers.

``run(stop)`` lists, then watches from the list's resourceVersion with bookmarks, resuming every
later watch from the last resourceVersion seen (event or bookmark) when the server ends a watch
normally. A 410 Gone (the server compacted past our version), a "too large resource version", a
resourceVersion going backwards (server lost its data), or a connection failure (the server may
have restarted) trigger a relist whose result is diffed against the cache, so handlers see
synthetic ADDED / MODIFIED / DELETED events only for what really changed while we were not
watching. Failures back off with jitter (0.5 s doubling to 30 s). There is no polling.

Handlers get ``(event, obj, old_obj)``: ADDED ``(obj, None)``, MODIFIED ``(new, previous)``,
DELETED ``(last known obj, previous cache entry or None)``. They run in event order, one at a
time; a handler that raises is logged and counted, never stops the informer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from l2lb.adapters.kube.client import KubeClient, KubeError, Resource
from l2lb.adapters.kube.ratelimit import Backoff
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["Handler", "Informer", "object_key"]

log = get_logger("l2lb.kube.informer")

Handler = Callable[[str, dict[str, Any], dict[str, Any] | None], Awaitable[None] | None]
T = TypeVar("T")

EVENTS = metrics.counter(
    "l2lb_kube_informer_events_total", "Events delivered to informer handlers", ("informer", "type")
)
RELISTS = metrics.counter("l2lb_kube_informer_lists_total", "Informer (re)lists by reason", ("informer", "reason"))
WATCHES = metrics.counter(
    "l2lb_kube_informer_watch_ends_total", "Informer watch streams ended, by reason", ("informer", "reason")
)
HANDLER_ERRORS = metrics.counter(
    "l2lb_kube_informer_handler_errors_total", "Informer handlers that raised", ("informer",)
)
OBJECTS = metrics.gauge("l2lb_kube_informer_objects", "Objects in the informer cache", ("informer",))


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = str(meta.get("name") or "")
    return f"{ns}/{name}" if ns else name


def _went_back(ours: str, theirs: str) -> bool:
    """resourceVersions are opaque, but every known server uses increasing integers."""
    return ours.isdigit() and theirs.isdigit() and int(theirs) < int(ours)


def _too_large(e: KubeError) -> bool:
    """kube-apiserver's answer to a watch from a version it has not reached (after a restore)."""
    return e.status == 504 and "too large resource version" in e.message.lower()


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


async def _until_stop(coro: Coroutine[Any, Any, T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Run ``coro`` until it finishes or ``stop`` is set; returns (finished, result)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    if task.cancelled():
        return False, None
    return True, task.result()


class Informer:
    def __init__(
        self,
        client: KubeClient,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        name: str | None = None,
        watch_timeout_s: int = 300,
    ):
        self.client = client
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.name = name or res.plural
        self.watch_timeout_s = watch_timeout_s
        self.cache: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.resource_version = ""
        self.lists = 0
        self.watches = 0
        self.last_error: str | None = None
        self._synced_event = asyncio.Event()
        self._handlers: list[Handler] = []
        self.backoff = Backoff(base=0.5, cap=30.0)

    def add_handler(self, fn: Handler) -> None:
        self._handlers.append(fn)

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the first list has been loaded (raises TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            await self._synced_event.wait()

    def readiness(self) -> tuple[bool, str]:
        if not self.synced:
            return False, f"informer {self.name}: not synced yet" + (
                f" (last error: {self.last_error})" if self.last_error else ""
            )
        return (
            True,
            f"informer {self.name}: {len(self.cache)} objects at resourceVersion {self.resource_version}",
        )

    def get(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key)

    # -- delivery ----------------------------------------------------------------------------------
    async def _emit(self, event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        EVENTS.labels(self.name, event).inc()
        for fn in list(self._handlers):
            try:
                r = fn(event, obj, old)
                if inspect.isawaitable(r):
                    await r
            except asyncio.CancelledError:
                raise
            except Exception:
                HANDLER_ERRORS.labels(self.name).inc()
                log.exception(
                    "informer handler raised",
                    extra={"informer": self.name, "event": event, "key": object_key(obj)},
                )

    async def _relist(self, reason: str) -> None:
        RELISTS.labels(self.name, reason).inc()
        lst = await self.client.list(self.res, self.namespace, label_selector=self.label_selector)
        self.lists += 1
        new: dict[str, dict[str, Any]] = {}
        for item in lst.get("items") or []:
            if isinstance(item, dict):
                # list items carry no kind/apiVersion; fill them in so handlers see whole objects
                item.setdefault("apiVersion", self.res.api_version)
                item.setdefault("kind", self.res.kind)
                new[object_key(item)] = item
        old = self.cache
        self.cache = new
        self.resource_version = str((lst.get("metadata") or {}).get("resourceVersion") or "")
        OBJECTS.labels(self.name).set(len(new))
        log.info(
            "informer listed",
            extra={"informer": self.name, "reason": reason, "objects": len(new), "rv": self.resource_version},
        )
        self.synced = True
        self._synced_event.set()
        for key, obj in new.items():
            prev = old.get(key)
            if prev is None:
                await self._emit("ADDED", obj, None)
            elif _rv(prev) != _rv(obj):
                await self._emit("MODIFIED", obj, prev)
        for key, prev in old.items():
            if key not in new:
                await self._emit("DELETED", prev, prev)

    async def _watch_once(self) -> int:
        """One watch stream until the server ends it; returns how many events it carried."""
        n = 0
        self.watches += 1
        stream = self.client.watch(
            self.res,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            timeout_s=self.watch_timeout_s + random.randint(0, max(self.watch_timeout_s // 5, 0)),
        )
        async with contextlib.aclosing(stream) as events:
            async for typ, obj in events:
                n += 1
                rv = _rv(obj)
                if rv:
                    if _went_back(self.resource_version, rv):
                        # a server never hands out smaller versions: it lost its data (restart
                        # without state, etcd restore) -- our cache may be wrong, relist
                        raise KubeError(
                            410, "ResourceVersionWentBack", f"server at {rv}, we were at {self.resource_version}"
                        )
                    self.resource_version = rv
                if typ == "BOOKMARK":
                    continue
                obj.setdefault("apiVersion", self.res.api_version)
                obj.setdefault("kind", self.res.kind)
                key = object_key(obj)
                prev = self.cache.get(key)
                if typ in ("ADDED", "MODIFIED"):
                    self.cache[key] = obj
                    OBJECTS.labels(self.name).set(len(self.cache))
                    await self._emit("ADDED" if prev is None else "MODIFIED", obj, prev)
                elif typ == "DELETED":
                    self.cache.pop(key, None)
                    OBJECTS.labels(self.name).set(len(self.cache))
                    await self._emit("DELETED", obj, prev)
                else:
                    log.warning("informer: unknown watch event type", extra={"informer": self.name, "type": typ})
        return n

    async def run(self, stop: asyncio.Event) -> None:
        """List + watch until ``stop`` is set; 410 -> relist, other errors -> backoff + resume.

        Calling ``run`` again after a stop resumes the watch from the cache's resourceVersion."""
        need_list = not (self.synced and self.resource_version)
        reason = "initial"
        while not stop.is_set():
            try:
                if need_list:
                    done, _ = await _until_stop(self._relist(reason), stop)
                    if not done:
                        return
                    need_list = False
                    self.last_error = None
                t0 = time.monotonic()
                done, n = await _until_stop(self._watch_once(), stop)
                if not done:
                    return
                WATCHES.labels(self.name, "closed").inc()
                if (n or 0) > 0 or time.monotonic() - t0 > 1.0:
                    self.backoff.reset()
                    continue
                delay = self.backoff.next()  # a watch that ends at once, again and again: slow down
                log.info(
                    "informer watch ended at once",
                    extra={"informer": self.name, "retry_in_s": round(delay, 2)},
                )
            except KubeError as e:
                self.last_error = str(e)
                if e.gone or _too_large(e):
                    WATCHES.labels(self.name, "gone").inc()
                    log.info(
                        "informer: resourceVersion not servable, relisting",
                        extra={"informer": self.name, "rv": self.resource_version, "why": e.reason},
                    )
                    need_list, reason = True, "gone"
                    continue
                WATCHES.labels(self.name, "error").inc()
                delay = self.backoff.next()
                if need_list:
                    reason = "retry"
                elif e.status == 0:
                    # the server was unreachable or the stream broke: it may have restarted with other
                    # data, so relist (diffed: handlers only see real changes) rather than resume
                    need_list, reason = True, "reconnect"
                log.warning(
                    "informer: list/watch failed, retrying",
                    extra={"informer": self.name, "error": str(e), "retry_in_s": round(delay, 2)},
                )
            except (TimeoutError, OSError) as e:
                self.last_error = repr(e)
                WATCHES.labels(self.name, "error").inc()
                delay = self.backoff.next()
                need_list, reason = True, "reconnect"
                log.warning(
                    "informer: list/watch failed, retrying",
                    extra={"informer": self.name, "error": repr(e), "retry_in_s": round(delay, 2)},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
