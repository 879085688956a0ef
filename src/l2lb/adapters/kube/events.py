"""EventRecorder: core/v1 Events with client-go's correlation rules (re-implemented).

* **dedup**: an event identical to an earlier one (same source, object, type, reason, message)
  is not created again; the existing Event's ``count`` and ``lastTimestamp`` are patched.
* **aggregation**: more than ``aggregate_max`` (10) *different* messages for the same
  (object, type, reason) within ``aggregate_window`` (10 min) collapse into one Event whose
  message starts with "(combined from similar events): ", counted as above.
* **spam filter**: per involved object a token bucket (burst 25, one token per 5 min) drops
  events beyond it (logged at debug level and counted in ``l2lb_kube_events_total``).

Recording is best effort: API failures are logged and counted, never raised to the caller, and
every write runs under a short deadline so a throttled client cannot stall a reconcile loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError
from l2lb.adapters.kube.ratelimit import TokenBucket
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["EventRecorder"]

log = get_logger("l2lb.kube.events")

EVENTS = metrics.counter(
    "l2lb_kube_events_total",
    "Events recorded: created, counted (dedup patch), dropped_spam, failed",
    ("type", "result"),
)

EVENT_RES = RESOURCES["events"]


def _ts(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first: str


@dataclass
class _Agg:
    started: float
    messages: set[str] = field(default_factory=set)


class EventRecorder:
    def __init__(
        self,
        client: KubeClient,
        component: str,
        *,
        host: str | None = None,
        cache_size: int = 4096,
        spam_burst: int = 25,
        spam_qps: float = 1.0 / 300.0,
        aggregate_max: int = 10,
        aggregate_window: float = 600.0,
        write_timeout: float = 10.0,
    ):
        self.client = client
        self.component = component
        self.host = host if host is not None else socket.gethostname()
        self.cache_size = cache_size
        self.spam_burst = spam_burst
        self.spam_qps = spam_qps
        self.aggregate_max = aggregate_max
        self.aggregate_window = aggregate_window
        self.write_timeout = write_timeout
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._aggs: OrderedDict[tuple[str, ...], _Agg] = OrderedDict()
        self._spam: OrderedDict[tuple[str, ...], TokenBucket] = OrderedDict()
        self._lock = asyncio.Lock()

    @staticmethod
    def _involved(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        ref = {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        return {k: v for k, v in ref.items() if v}

    def _lru_put(self, d: OrderedDict[tuple[str, ...], Any], key: tuple[str, ...], val: Any) -> None:
        d[key] = val
        d.move_to_end(key)
        while len(d) > self.cache_size:
            d.popitem(last=False)

    async def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an Event about ``obj`` (``type_`` "Normal" or "Warning")."""
        if type_ not in ("Normal", "Warning"):
            log.warning("event type must be Normal or Warning; recording as Warning", extra={"type": type_})
            type_ = "Warning"
        ref = self._involved(obj)
        if not ref.get("name") or not ref.get("kind"):
            log.warning("event about an object without kind/name dropped", extra={"reason": reason})
            EVENTS.labels(type_, "invalid").inc()
            return
        obj_key = (ref.get("kind", ""), ref.get("namespace", ""), ref.get("name", ""), ref.get("uid", ""))
        async with self._lock:
            # spam filter per object
            bucket = self._spam.get(obj_key)
            if bucket is None:
                bucket = TokenBucket(self.spam_qps, self.spam_burst)
            self._lru_put(self._spam, obj_key, bucket)
            if bucket.tokens() < 1.0:
                EVENTS.labels(type_, "dropped_spam").inc()
                log.debug("event dropped by spam filter", extra={"object": obj_key, "reason": reason})
                return
            bucket.reserve()
            # aggregation of similar events (same object/type/reason, differing messages)
            now = time.monotonic()
            agg_key = (self.component, *obj_key, type_, reason)
            agg = self._aggs.get(agg_key)
            if agg is None or now - agg.started > self.aggregate_window:
                agg = _Agg(now)
            agg.messages.add(message)
            self._lru_put(self._aggs, agg_key, agg)
            if len(agg.messages) > self.aggregate_max:
                message = f"(combined from similar events): {message}"
                dedup_key = (*agg_key, "(combined)")
            else:
                dedup_key = (*agg_key, message)
            try:
                with KubeClient.deadline(self.write_timeout):
                    await self._write(dedup_key, ref, type_, reason, message)
            except KubeError as e:
                EVENTS.labels(type_, "failed").inc()
                log.warning(
                    "could not record event",
                    extra={"object": "/".join(obj_key[1:3]), "reason": reason, "error": str(e)},
                )

    async def _write(self, key: tuple[str, ...], ref: dict[str, Any], type_: str, reason: str, message: str) -> None:
        now = _ts()
        seen = self._seen.get(key)
        if seen is not None:
            patch = {"count": seen.count + 1, "lastTimestamp": now, "message": message}
            try:
                await self.client.patch(EVENT_RES, seen.name, patch, seen.namespace)
            except KubeError as e:
                if not e.not_found:
                    raise
                # the Event expired (TTL) or was deleted: start over with a new one
            else:
                seen.count += 1
                self._lru_put(self._seen, key, seen)
                EVENTS.labels(type_, "counted").inc()
                return
        namespace = ref.get("namespace") or "default"
        name = f"{str(ref['name'])[:200]}.{time.time_ns():x}"
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        await self.client.create_object(EVENT_RES, body, namespace)
        self._lru_put(self._seen, key, _Seen(name, namespace, 1, now))
        EVENTS.labels(type_, "created").inc()
