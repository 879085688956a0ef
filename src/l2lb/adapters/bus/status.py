"""Status parts in Redis: the writers' helper (:class:`StatusPublisher`, :func:`publish_event`) and the
readers' cache (:class:`ClusterSource`) used by the HTTP cluster API and ``l2lb status --redis``.

Layout (names from :class:`l2lb.adapters.bus.keys.Keys`):

* ``keys.status(part)``: the part as one JSON document (``l2lb.core.view.part_doc``);
* ``keys.status_index``: hash part -> etag of the part's items, written in the same pipeline, so a
  reader polls one small hash and fetches only the parts that changed;
* ``keys.events``: a capped stream (MAXLEN ~ ``EVENTS_MAXLEN``) of events (field ``e``, JSON).

A publisher writes at most every ``min_interval`` (500 ms) and only when the items changed; a
failed write (Redis down) is retried on the next update or after ``retry_after`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import NoPermissionError, RedisError

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.keys import Keys
from l2lb.core.view import (
    PARTS,
    Part,
    ServiceIndex,
    decode_event,
    encode_event,
    make_event,
    parse_part,
    part_etag,
)
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["EVENTS_MAXLEN", "ClusterSource", "EventSink", "StatusParts", "StatusPublisher", "publish_event",
           "status_acl_selectors"]

log = get_logger("l2lb.status")

EVENTS_MAXLEN = 1000
EVENT_FIELD = b"e"

_writes = metrics.counter("l2lb_status_part_writes_total", "Status parts written to Redis", ("part",))
_write_errors = metrics.counter("l2lb_status_part_write_errors_total", "Failed status part writes", ("part",))
_coalesced = metrics.counter(
    "l2lb_status_part_updates_coalesced_total", "Status updates replaced by a newer one before being written",
    ("part",))
_events = metrics.counter("l2lb_status_events_total", "Events published on the status events stream", ("type",))
_events_dropped = metrics.counter("l2lb_status_events_dropped_total",
                                 "Events dropped because too many were waiting to be sent")
_read_errors = metrics.counter("l2lb_status_read_errors_total", "Failed reads of status parts from Redis")


def status_acl_selectors(keys: Keys) -> list[str]:
    """Redis ACL selectors a service needs to write and read the cluster view (status parts + events).

    Meant to be appended to the allocator's and leases' rules in ``l2lb.adapters.bus.acl`` (and to any
    user that only serves or reads the view, e.g. ``l2lb status --redis``).
    """
    return [f"(~{keys.status_pattern()} +get +mget +hgetall +set +hset)",
            f"(~{keys.events} +xadd +xrange +xrevrange)"]


def _b(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class StatusPublisher:
    """Keeps one status part in Redis up to date: ``update(doc)`` is cheap and may be called often.

    ``doc`` is ``{"items": [...]}`` (other top-level fields are ignored). Must be used inside a running
    event loop; ``await close()`` writes the last pending update and stops.
    """

    def __init__(self, bus: Bus, part: str, *, min_interval: float = 0.5, retry_after: float = 2.0,
                 clock: Callable[[], float] = time.time):
        if part not in PARTS:
            raise ValueError(f"unknown status part {part!r} (known: {', '.join(PARTS)})")
        self.bus = bus
        self.part = part
        self.min_interval = min_interval
        self.retry_after = retry_after
        self._clock = clock
        self._pending: list[Any] | Callable[[], list[dict[str, Any]]] | None = None
        self._written_etag: str | None = None
        self._last_write = 0.0  # monotonic
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._spacing = min_interval
        self._last_error = ""
        self.writes = 0

    def update(self, doc: dict[str, Any] | Callable[[], list[dict[str, Any]]]) -> None:
        """Set the part's next content: ``{"items": [...]}``, or a function returning the items, called
        only when a write is due (so a big part is built at most once per write interval)."""
        pending: list[Any] | Callable[[], list[dict[str, Any]]]
        if callable(doc):
            pending = doc
        else:
            items = doc.get("items")
            if not isinstance(items, list):
                raise ValueError("status part document needs an 'items' list")
            pending = items
        if self._closed:
            return
        if self._pending is not None:
            _coalesced.labels(self.part).inc()
        self._pending = pending
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"l2lb-status-{self.part}")

    async def _run(self) -> None:
        while self._pending is not None:
            wait = self._last_write + self._spacing - time.monotonic()
            if wait > 0 and not self._closed:
                await asyncio.sleep(wait)
            try:
                ok = await self._write_pending()
            except Exception as e:  # never let status publishing take a service down
                log.error("status part write failed unexpectedly",
                          extra={"part": self.part, "error": f"{type(e).__name__}: {e}"})
                ok = False
            if self._closed:
                return
            if not ok:
                await asyncio.sleep(self.retry_after)

    async def _write_pending(self) -> bool:
        pending = self._pending
        if pending is None:
            return True
        self._pending = None
        t0 = time.monotonic()
        try:
            items = pending() if callable(pending) else pending
        except Exception as e:  # a broken builder: log, write nothing, wait for the next update
            log.error("status part builder failed", extra={"part": self.part, "error": f"{type(e).__name__}: {e}"})
            return True
        body = json.dumps(items, separators=(",", ":"), sort_keys=True, default=str)
        etag = part_etag(body.encode())
        # bound the CPU spent building + encoding a big part that changes all the time (~10% of a core)
        self._spacing = max(self.min_interval, 10 * (time.monotonic() - t0))
        if etag == self._written_etag:
            return True
        raw = ('{"v":1,"part":' + json.dumps(self.part) + ',"at":' + repr(round(self._clock(), 3))
               + ',"items":' + body + "}")
        keys = self.bus.keys
        try:
            # no MULTI needed: Redis runs SET before HSET, so a reader that sees the new etag in the
            # index always finds the new part (and one that sees the old etag re-reads later)
            async with self.bus.redis.pipeline(transaction=False) as p:
                p.set(keys.status(self.part), raw)
                p.hset(keys.status_index, self.part, etag)
                await p.execute()
        except (RedisError, OSError) as e:
            _write_errors.labels(self.part).inc()
            err = f"{type(e).__name__}: {str(e)[:300]}"
            noperm = isinstance(e, NoPermissionError) or "NOPERM" in str(e).upper()
            kind = type(e).__name__ + (":noperm" if noperm else "")  # messages carry the data: compare kinds
            if kind != self._last_error:  # once per kind of error, not every retry
                hint = " (the Redis ACL user needs SET/HSET on the status keys)" if noperm else ""
                log.warning("could not write status part; will retry" + hint, extra={"part": self.part, "error": err})
                self._last_error = kind
            if self._pending is None:
                self._pending = pending
            return False
        if self._last_error:
            log.info("status part written again", extra={"part": self.part})
            self._last_error = ""
        self._written_etag = etag
        self._last_write = time.monotonic()
        self.writes += 1
        _writes.labels(self.part).inc()
        return True

    async def flush(self) -> None:
        """Write a pending update now (ignoring the interval)."""
        await self._write_pending()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._write_pending()


async def publish_event(bus: Bus, type_: str, **fields: Any) -> str | None:
    """Append one event (move, conflict, allocation_failed, pool_conflict, unassigned) to ``keys.events``.

    Never raises: a failure is logged and None returned (events are informational).
    """
    ev = make_event(type_, time.time(), **fields)
    try:
        eid = await bus.redis.xadd(bus.keys.events, {EVENT_FIELD: encode_event(ev)}, maxlen=EVENTS_MAXLEN,
                                   approximate=True)
    except (RedisError, OSError) as e:
        log.warning("could not publish status event", extra={"type": type_, "error": f"{type(e).__name__}: {e}"})
        return None
    _events.labels(type_).inc()
    return _b(eid)


class EventSink:
    """Fire-and-forget events from synchronous code: ``emit(type, **fields)`` queues, a task sends.

    At most ``max_pending`` events wait (more are dropped and counted); must be used inside a running loop.
    """

    def __init__(self, bus: Bus, max_pending: int = 1000):
        self.bus = bus
        self.max_pending = max_pending
        self._queue: list[tuple[str, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def emit(self, type_: str, **fields: Any) -> None:
        if len(self._queue) >= self.max_pending:
            self.dropped += 1
            _events_dropped.inc()
            return
        self._queue.append((type_, fields))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="l2lb-status-events")

    async def _drain(self) -> None:
        while self._queue:
            type_, fields = self._queue.pop(0)
            try:
                await publish_event(self.bus, type_, **fields)
            except Exception as e:  # never let status events take a service down
                log.error("status event failed unexpectedly",
                          extra={"type": type_, "error": f"{type(e).__name__}: {e}"})

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 2.0)


class StatusParts:
    """Everything one service writes for the cluster view: some parts plus events, behind three calls.

    ``update(part, items)`` and ``emit(type, **fields)`` are synchronous and cheap (coalesced / queued,
    written by background tasks inside the running loop); ``await close()`` flushes and stops.
    """

    def __init__(self, bus: Bus, parts: tuple[str, ...], *, min_interval: float = 0.5):
        self.publishers = {p: StatusPublisher(bus, p, min_interval=min_interval) for p in parts}
        self.events = EventSink(bus)

    def update(self, part: str, items: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]]) -> None:
        """New content of ``part``: the items, or a function building them (called only when a write is due)."""
        self.publishers[part].update(items if callable(items) else {"items": items})

    def emit(self, type_: str, **fields: Any) -> None:
        self.events.emit(type_, **fields)

    async def close(self) -> None:
        for p in self.publishers.values():
            await p.close()
        await self.events.close()


class ClusterSource:
    """Reader side: the parts as last read from Redis, the joined Service index, events, and a change feed."""

    def __init__(self, bus: Bus, *, poll_interval: float = 0.5, max_age: float = 0.25):
        self.bus = bus
        self.poll_interval = poll_interval
        self.max_age = max_age
        self.parts: dict[str, Part] = {p: Part(p) for p in PARTS}
        self._index: ServiceIndex = ServiceIndex()
        self._index_tag: tuple[str, str] = ("", "")
        self._read_at = -1e9  # monotonic
        self._lock = asyncio.Lock()
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._last_event_id: str | None = None
        self._next_parse: dict[str, float] = {}  # part -> monotonic time before which it is not re-read
        self.parse_budget = 0.2  # at most this share of one CPU spent re-parsing changed parts
        self.error: str = ""

    # -- reading ---------------------------------------------------------------------------------
    async def refresh(self) -> list[str]:
        """Re-read the index and the parts that changed; returns the names of changed parts."""
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> list[str]:
        keys = self.bus.keys
        r = self.bus.redis
        try:
            index = {_b(k): _b(v) for k, v in (await r.hgetall(keys.status_index)).items()}
            mono = time.monotonic()
            want = [p for p in PARTS if (p not in index or index[p] != self.parts[p].etag)
                    and (mono >= self._next_parse.get(p, 0.0) or not self.parts[p].etag)]
            raws = await r.mget([keys.status(p) for p in want]) if want else []
        except (RedisError, OSError) as e:
            _read_errors.inc()
            self.error = f"redis unavailable: {type(e).__name__}: {e}"
            raise
        self.error = ""
        self._read_at = time.monotonic()
        changed = []
        for name, raw in zip(want, raws, strict=True):
            t0 = time.monotonic()
            part = parse_part(name, raw, index.get(name))
            spent = time.monotonic() - t0
            # a big part (10k Services: ~2 MB) changing constantly is re-parsed at a bounded rate
            self._next_parse[name] = t0 + spent / self.parse_budget
            if part.etag != self.parts[name].etag:
                changed.append(name)
                for err in part.errors:
                    log.warning("status part has errors", extra={"part": name, "error": err})
            self.parts[name] = part
        return changed

    async def current(self) -> dict[str, Part]:
        """The parts, re-read when older than ``max_age`` seconds (raises on a Redis error)."""
        if time.monotonic() - self._read_at > self.max_age:
            async with self._lock:
                if time.monotonic() - self._read_at > self.max_age:
                    await self._refresh()
        return self.parts

    def service_index(self) -> ServiceIndex:
        tag = (self.parts["services"].etag, self.parts["assignments"].etag)
        if tag != self._index_tag:
            self._index = ServiceIndex.build(self.parts["services"], self.parts["assignments"])
            self._index_tag = tag
        return self._index

    async def events(self, limit: int, type_: str | None = None) -> list[dict[str, Any]]:
        """The newest events first."""
        count = limit if type_ is None else 1000
        raw = await self.bus.redis.xrevrange(self.bus.keys.events, "+", "-", count=count)
        out = []
        for eid, fields in raw or []:
            ev = decode_event(_b(eid), (fields or {}).get(EVENT_FIELD))
            if ev is not None and (type_ is None or ev["type"] == type_):
                out.append(ev)
                if len(out) >= limit:
                    break
        return out

    async def new_events(self) -> list[dict[str, Any]]:
        """Events appended since the previous call (the first call only records the position)."""
        r = self.bus.redis
        k = self.bus.keys.events
        if self._last_event_id is None:
            last = await r.xrevrange(k, "+", "-", count=1)
            self._last_event_id = _b(last[0][0]) if last else "0-0"
            return []
        raw = await r.xrange(k, "(" + self._last_event_id, "+", count=200)
        out = []
        for eid, fields in raw or []:
            self._last_event_id = _b(eid)
            ev = decode_event(_b(eid), (fields or {}).get(EVENT_FIELD))
            if ev is not None:
                out.append(ev)
        return out

    # -- change feed -----------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of changes: {"kind": "part", "part", "etag"} and {"kind": "event", "event": {...}}."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subs.add(q)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="l2lb-status-poll")
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subs.discard(q)

    def _fan_out(self, msg: dict[str, Any]) -> None:
        for q in list(self._subs):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:  # a stalled reader: tell it to reload and drop it
                self._subs.discard(q)
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                q.put_nowait({"kind": "overflow"})

    async def _poll(self) -> None:
        failing = False
        while self._subs:
            try:
                changed = await self.refresh()
                evs = await self.new_events()
            except (RedisError, OSError) as e:
                if not failing:
                    log.warning("status watch cannot read redis", extra={"error": f"{type(e).__name__}: {e}"})
                    self._fan_out({"kind": "error", "message": self.error or str(e)})
                failing = True
            else:
                if failing:
                    self._fan_out({"kind": "error", "message": ""})
                failing = False
                for name in changed:
                    self._fan_out({"kind": "part", "part": name, "etag": self.parts[name].etag})
                for ev in evs:
                    self._fan_out({"kind": "event", "event": ev})
            await asyncio.sleep(self.poll_interval)

    async def close(self) -> None:
        self._subs.clear()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
