"""The Redis bus: publishers, consumer groups, dead letters, resync, health.

One :class:`Bus` per process (one connection pool; each running :class:`Consumer` holds one
connection for its blocking reads). See ``docs/bus.md`` for the stream layout and semantics.

Delivery is at-least-once. A consumer acknowledges an entry only after its handler returned;
entries left pending by a dead consumer are claimed (XAUTOCLAIM) after ``min_idle_ms``.
Unreadable entries go to the dead-letter stream. When the consumer cannot trust its position
any more it calls ``on_resync(reason)`` with one of:

* ``"group_missing"``: the consumer group vanished (deleted, or the stream was deleted);
* ``"stream_trimmed"``: MAXLEN trimming removed entries the group had not read yet;
* ``"incarnation_changed"``: the Redis dataset was lost (restart without persistence, or a
  failover to an empty replica); the group is recreated and reads the new dataset from its start.

``on_resync`` is expected to load a snapshot and/or ``request_snapshot`` from the producer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from l2lb.adapters.bus.dsn import DSNError, RedisDSN, parse_dsn, redact
from l2lb.adapters.bus.keys import DEFAULT_PREFIX, Keys
from l2lb.core.messages import Message, MessageError, SnapshotRequest, decode, encode
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = [
    "DEFAULT_DSN",
    "DEFAULT_MAXLEN",
    "Backoff",
    "Bus",
    "BusAuthError",
    "BusError",
    "BusPermissionError",
    "BusUnavailableError",
    "Consumer",
    "DSNError",
    "Handler",
    "add_redis_args",
    "bus_from_args",
]

log = get_logger("l2lb.bus")

DEFAULT_DSN = "redis://127.0.0.1:6379/0"
DEFAULT_MAXLEN = 10_000
DEADLETTER_MAXLEN = 10_000
READ_OVERDUE_SLACK_S = 0.3  # a blocking read that has not returned block_ms + this after it went out is overdue
PAYLOAD_FIELD = b"m"

Handler = Callable[[Message, str], Awaitable[None]]
ResyncHandler = Callable[[str], Awaitable[None]]

_published = metrics.counter("l2lb_bus_published_total", "Messages published on the bus", ("stream",))
_consumed = metrics.counter(
    "l2lb_bus_consumed_total", "Messages handled and acknowledged by a consumer group", ("stream", "group")
)
_lag = metrics.gauge(
    "l2lb_bus_consumer_lag", "Entries in the stream not yet delivered to the group (XINFO GROUPS lag)",
    ("stream", "group"),
)
_pending = metrics.gauge(
    "l2lb_bus_pending", "Entries delivered to the group but not acknowledged (XINFO GROUPS pending)",
    ("stream", "group"),
)
_deadletter = metrics.counter(
    "l2lb_bus_deadletter_total", "Entries moved to the dead-letter stream", ("stream", "reason")
)
_handler_seconds = metrics.histogram(
    "l2lb_bus_handler_seconds", "Time spent in a consumer's handler per message", ("stream", "group"),
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
_handler_errors = metrics.counter(
    "l2lb_bus_handler_errors_total", "Handler exceptions (entry left pending for redelivery)",
    ("stream", "group"),
)
_claimed = metrics.counter(
    "l2lb_bus_claimed_total", "Pending entries claimed from idle consumers (XAUTOCLAIM)", ("stream", "group")
)
_resyncs = metrics.counter(
    "l2lb_bus_resyncs_total", "Consumer resyncs by reason", ("stream", "group", "reason")
)
_up = metrics.gauge("l2lb_bus_up", "1 when the last Redis operation succeeded")
_master_moves = metrics.counter(
    "l2lb_bus_master_moves_total", "Times the sentinels named another master and every connection was dropped"
)
_conn_errors = metrics.counter(
    "l2lb_bus_connection_errors_total", "Failed Redis operations (connection level)"
)


class BusError(Exception):
    """Base class of bus errors."""


class BusUnavailableError(BusError):
    """Redis cannot be reached (transient: retry later)."""


class BusAuthError(BusError):
    """Redis refused the credentials (configuration error)."""


class BusPermissionError(BusError):
    """The Redis ACL user may not run a command on a key (configuration error)."""


_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
# error replies of a Redis that cannot take the command now (a master cut off from its replicas under
# min-replicas-to-write, a replica without its master, a dataset still loading): unavailable, retry
_UNAVAILABLE = ("NOREPLICAS", "MASTERDOWN", "LOADING")


class Backoff:
    """Exponential backoff with jitter: the n-th delay is uniform in [d/2, d], d = min(cap, base * 2**n)."""

    def __init__(self, base: float = 0.05, cap: float = 2.0, rng: Callable[[], float] = random.random):
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng
        self.attempt = 0

    def next(self) -> float:
        d = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return float(d / 2 + self._rng() * d / 2)

    def reset(self) -> None:
        self.attempt = 0


def _s(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _id_tuple(eid: Any) -> tuple[int, int]:
    s = _s(eid)
    ms, _, seq = s.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def _reason_of(err: MessageError) -> str:
    text = str(err)
    if "no longer supported" in text:
        return "unsupported_version"
    if "unknown message kind" in text:
        return "unknown_kind"
    if "not JSON" in text:
        return "not_json"
    return "malformed"


async def _sleep_or_stop(delay: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


class Bus:
    """Connection to the bus. Build with :meth:`connect` (or :func:`bus_from_args`)."""

    def __init__(
        self,
        client: aioredis.Redis,
        dsn: RedisDSN,
        keys: Keys,
        *,
        client_name: str = "l2lb",
        maxlen: int | Mapping[str, int] = DEFAULT_MAXLEN,
        health_interval: float = 1.0,
    ) -> None:
        self._r = client
        self.dsn = dsn
        self.keys = keys
        self.client_name = client_name
        if isinstance(maxlen, int):
            self._default_maxlen = maxlen
            self._maxlen: dict[str, int] = {}
        else:
            self._default_maxlen = DEFAULT_MAXLEN
            self._maxlen = dict(maxlen)
        self._maxlen.setdefault(keys.deadletter, DEADLETTER_MAXLEN)
        self.health_interval = health_interval
        self._down_since: float | None = None
        self._last_error = ""
        self._denied: dict[str, str] = {}
        self._closed = False
        self._health_task: asyncio.Task[None] | None = None
        self.incarnation_id: str | None = None
        self._sentinel: Sentinel | None = None
        self._master: tuple[str, int] | None = None  # the master the sentinels named last (Sentinel DSNs)
        self.master_moves = 0  # times the sentinels named another master (leases: its nodes reconnect too)
        # stream -> (monotonic time, XINFO GROUPS answer), shared by this Bus's consumers
        self._groups_cache: dict[str, tuple[float, Any]] = {}

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        client_name: str = "l2lb",
        maxlen: int | Mapping[str, int] = DEFAULT_MAXLEN,
        health_interval: float = 1.0,
    ) -> Bus:
        """Connect and probe once.

        Raises :class:`DSNError` for a bad DSN and :class:`BusAuthError` / :class:`BusPermissionError`
        when Redis refuses the credentials. An unreachable Redis is *not* an error: the bus comes
        up not-ready (see :meth:`readiness`) and keeps retrying in the background.
        """
        d = parse_dsn(dsn)
        client, sentinel = _make_client(await _pin_sentinel_addresses(d), client_name)
        bus = cls(client, d, Keys(prefix), client_name=client_name, maxlen=maxlen,
                  health_interval=health_interval)
        bus._sentinel = sentinel
        try:
            await bus._probe()
        except (BusAuthError, BusPermissionError):
            await bus._close_clients()
            raise
        except BusUnavailableError as e:
            log.warning("redis not reachable yet; will keep retrying",
                        extra={"redis": d.describe(), "error": str(e)})
        bus._health_task = asyncio.create_task(bus._health_loop(), name="l2lb-bus-health")
        return bus

    async def close(self) -> None:
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        await self._close_clients()

    async def _close_clients(self) -> None:
        await self._r.aclose()
        if self._sentinel is not None:
            for s in self._sentinel.sentinels:
                await s.aclose()
            self._sentinel = None

    @property
    def redis(self) -> aioredis.Redis:
        """The underlying redis-py client (for services' own keys listed in :class:`Keys`)."""
        return self._r

    # -- health ----------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        if self._closed:
            return False, "bus closed"
        if self._down_since is not None:
            return False, (f"redis {self.dsn.describe()} unreachable for "
                           f"{time.monotonic() - self._down_since:.1f}s: {self._last_error}")
        if self._denied:
            return False, "redis ACL denies: " + "; ".join(sorted(self._denied.values()))
        return True, f"connected to {self.dsn.describe()} (incarnation {self.incarnation_id})"

    def _note_ok(self) -> None:
        if self._down_since is not None:
            log.info("redis reachable again", extra={
                "redis": self.dsn.describe(), "down_s": round(time.monotonic() - self._down_since, 3)})
            self._down_since = None
        _up.set(1)

    def _note_down(self, err: BaseException) -> None:
        _conn_errors.inc()
        _up.set(0)
        self._last_error = f"{type(err).__name__}: {err}"
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("redis unreachable", extra={"redis": self.dsn.describe(), "error": self._last_error})

    def _wrap(self, err: BaseException, command: str, key: str) -> BusError:
        """Turn a redis-py error into a clear BusError (and record it for readiness)."""
        if isinstance(err, AuthenticationError):
            user = self.dsn.username or "default"
            return BusAuthError(f"redis at {self.dsn.describe()} refused user {user!r}: {err} "
                                "(check the DSN's user/password and the server's ACL)")
        if isinstance(err, NoPermissionError):
            user = self.dsn.username or "default"
            msg = (f"redis user {user!r} may not run {command} on {key!r}: {err} "
                   "(see deploy/redis/users.acl)")
            self._denied[f"{command} {key}"] = f"{command} {key}"
            return BusPermissionError(msg)
        if isinstance(err, _TRANSIENT) or (isinstance(err, ResponseError) and str(err).startswith(_UNAVAILABLE)):
            self._note_down(err)
            where = f"{command} {key}".strip()
            return BusUnavailableError(f"redis {self.dsn.describe()} unavailable during {where}: {err}")
        return BusError(f"redis {command} {key} failed: {err}")

    def _allowed(self, command: str, key: str) -> None:
        self._denied.pop(f"{command} {key}", None)

    async def _probe(self) -> None:
        try:
            await self._r.ping()
        except RedisError as e:
            raise self._wrap(e, "PING", "") from None
        except OSError as e:
            raise self._wrap(e, "PING", "") from None
        self._note_ok()
        await self.incarnation()

    async def _health_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.health_interval)
            if self._sentinel is not None:
                await self._follow_master()
            try:
                await self._r.ping()
            except (RedisError, OSError) as e:
                err = self._wrap(e, "PING", "")
                if not isinstance(err, BusUnavailableError):
                    log.error("redis health check failed", extra={"error": str(err)})
                continue
            self._note_ok()

    async def _follow_master(self) -> None:
        """Sentinel: when the sentinels name another master, drop every connection -- also those
        blocked in a read -- so that nothing keeps talking to the old one (it may still be up, cut
        off from the others, until Sentinel demotes it; redis-py alone moves idle connections only)."""
        assert self._sentinel is not None and self.dsn.sentinel_service is not None
        try:
            addr = await asyncio.wait_for(self._sentinel.discover_master(self.dsn.sentinel_service),
                                          max(self.dsn.connect_timeout * 2, 0.5))
        except (RedisError, OSError, TimeoutError):
            return  # no sentinel answers now: nothing to compare (the PING below reports the outage)
        master = (str(addr[0]), int(addr[1]))
        if self._master is not None and master != self._master:
            log.warning("redis master moved: reconnecting every connection",
                        extra={"old": f"{self._master[0]}:{self._master[1]}", "new": f"{master[0]}:{master[1]}"})
            _master_moves.inc()
            self.master_moves += 1
        self._master = master
        # every tick, not only on the move: a connection busy in a read while we dropped it may have
        # come back to the old address (redis-py gives no other handle on in-use connections)
        pool = self._r.connection_pool
        conns = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
        for conn in conns:
            where = (str(getattr(conn, "host", "")), int(getattr(conn, "port", 0) or 0))
            if getattr(conn, "is_connected", False) and where != master:
                with contextlib.suppress(RedisError, OSError):
                    await conn.disconnect()

    async def incarnation(self) -> str:
        """The current dataset id, creating one when missing (SET NX, then GET)."""
        key = self.keys.incarnation
        try:
            cur = await self._r.get(key)
            if cur is None:
                await self._r.set(key, secrets.token_hex(8), nx=True)
                cur = await self._r.get(key)
        except (RedisError, OSError) as e:
            raise self._wrap(e, "GET/SET", key) from None
        self._note_ok()
        inc = _s(cur) if cur is not None else ""
        if self.incarnation_id is not None and inc != self.incarnation_id:
            log.warning("redis dataset changed (restart without persistence or failover)",
                        extra={"old": self.incarnation_id, "new": inc})
        self.incarnation_id = inc
        return inc

    # -- publishing ------------------------------------------------------------------------------
    def maxlen_for(self, stream: str) -> int:
        return self._maxlen.get(stream, self._default_maxlen)

    def set_maxlen(self, stream: str, maxlen: int) -> None:
        """Bound ``stream`` to about ``maxlen`` entries (XADD MAXLEN ~)."""
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._maxlen[stream] = maxlen

    async def publish(self, stream: str, msg: Message) -> str:
        """XADD the encoded message (field ``m``) with MAXLEN ~; returns the entry id.

        Raises :class:`BusUnavailableError` when Redis is unreachable, :class:`BusPermissionError`
        when the ACL forbids it.
        """
        return await self.publish_raw(stream, encode(msg))

    async def publish_raw(
        self, stream: str, payload: bytes, extra: Mapping[str, str | bytes] | None = None
    ) -> str:
        """Publish an already encoded payload (tools and tests; services use :meth:`publish`)."""
        fields: dict[Any, Any] = {PAYLOAD_FIELD: payload}
        if extra:
            fields.update(extra)
        try:
            eid = await self._r.xadd(stream, fields, maxlen=self.maxlen_for(stream), approximate=True)
        except (RedisError, OSError) as e:
            raise self._wrap(e, "XADD", stream) from None
        self._note_ok()
        self._allowed("XADD", stream)
        _published.labels(self.keys.short(stream)).inc()
        return _s(eid)

    async def publish_many(self, stream: str, msgs: Sequence[Message]) -> list[str | BusError]:
        """XADD every message in one pipeline (one round trip), in order; per message its entry id or the
        :class:`BusError` it got (all the same error when Redis is unreachable)."""
        maxlen = self.maxlen_for(stream)
        try:
            async with self._r.pipeline(transaction=False) as p:
                for msg in msgs:
                    p.xadd(stream, {PAYLOAD_FIELD: encode(msg)}, maxlen=maxlen, approximate=True)
                raw = await p.execute(raise_on_error=False)
        except (RedisError, OSError) as e:
            err = self._wrap(e, "XADD", stream)
            return [err] * len(msgs)
        out: list[str | BusError] = []
        for r in raw:
            if isinstance(r, (RedisError, OSError)):
                out.append(self._wrap(r, "XADD", stream))
            else:
                out.append(_s(r))
        ok = sum(1 for r in out if isinstance(r, str))
        if ok:
            self._note_ok()
            self._allowed("XADD", stream)
            _published.labels(self.keys.short(stream)).inc(ok)
        return out

    # -- snapshots -------------------------------------------------------------------------------
    async def request_snapshot(self, topic: str, requester: str, reason: str) -> None:
        """Ask the producer of ``topic`` to republish a full snapshot (SnapshotRequest on keys.control)."""
        req = SnapshotRequest(topic=topic, requester=requester, reason=reason)
        await self.publish(self.keys.control, req)
        log.info("snapshot requested", extra={"topic": topic, "requester": requester, "reason": reason})

    async def store_snapshot(self, topic: str, msg: Message) -> None:
        key = self.keys.snapshot(topic)
        try:
            await self._r.set(key, encode(msg))
        except (RedisError, OSError) as e:
            raise self._wrap(e, "SET", key) from None
        self._note_ok()

    async def load_snapshot(self, topic: str) -> Message | None:
        """The stored snapshot of ``topic``, or None when there is none or it is unreadable (logged)."""
        key = self.keys.snapshot(topic)
        try:
            raw = await self._r.get(key)
        except (RedisError, OSError) as e:
            raise self._wrap(e, "GET", key) from None
        self._note_ok()
        if raw is None:
            return None
        try:
            return decode(raw)
        except MessageError as e:
            log.warning("stored snapshot is unreadable; ignoring it", extra={"key": key, "error": str(e)})
            return None

    # -- consuming -------------------------------------------------------------------------------
    def consumer(
        self,
        stream: str,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        on_resync: ResyncHandler | None = None,
        from_start: bool = False,
        **options: Any,
    ) -> Consumer:
        """A consumer of ``stream`` in ``group`` (created when missing: at the stream's end, or its
        start with ``from_start``). ``options``: see :class:`Consumer`."""
        return Consumer(self, stream, group, consumer, handler, on_resync=on_resync, from_start=from_start,
                        **options)

    def serve_snapshots(
        self,
        topic: str,
        name: str,
        fn: Callable[[SnapshotRequest], Awaitable[None]],
        *,
        republish_on_resync: bool = True,
        **options: Any,
    ) -> Consumer:
        """Producer side of resync: call ``fn(request)`` for every SnapshotRequest of ``topic``.

        ``name`` identifies this producer instance (its own group, so leader and standby both see
        every request; ``fn`` decides whether to answer). With ``republish_on_resync`` a resync of
        this consumer (e.g. Redis lost its data) also calls ``fn`` with a request from
        ``requester="bus"`` and reason ``"producer_<reason>"``, so the snapshot is republished
        before anyone asks.
        """

        async def handle(msg: Message, _id: str) -> None:
            if isinstance(msg, SnapshotRequest) and msg.topic == topic:
                await fn(msg)

        async def resync(reason: str) -> None:
            if republish_on_resync:
                await fn(SnapshotRequest(topic=topic, requester="bus", reason=f"producer_{reason}"))

        return self.consumer(self.keys.control, f"snapshots:{topic}:{name}", name, handle, on_resync=resync,
                             **options)


class Consumer:
    """One member of a consumer group. ``await run(stop)`` until ``stop`` is set; never raises for
    Redis outages, bad messages or handler errors (all logged, counted, retried).

    Options: ``batch`` (XREADGROUP COUNT, 100), ``block_ms`` (1000), ``min_idle_ms`` (pending entries
    idle longer are claimed from other consumers, 10000), ``claim_interval`` (s, min_idle/2),
    ``max_deliveries`` (handler failures before dead-lettering, 5), ``check_interval`` (s between
    incarnation/trim checks, 1.0), ``stats_interval`` (s between full checks with lag/pending, 5.0),
    ``forget_after`` (s: idle consumers of the group with nothing pending are deleted, 3600),
    ``backoff`` (:class:`Backoff`), ``noack`` (XREADGROUP NOACK: entries never wait in the group's
    pending list, so no XACK, no redelivery after a crash or a failed handler: for a stream of
    superseded-at-once messages whose group lives as long as the process, e.g. leases reading
    heartbeats; one round trip per read). ``check()`` runs the checks at once (tests, status pages).
    """

    def __init__(
        self,
        bus: Bus,
        stream: str,
        group: str,
        name: str,
        handler: Handler,
        *,
        on_resync: ResyncHandler | None = None,
        from_start: bool = False,
        batch: int = 100,
        block_ms: int = 1000,
        min_idle_ms: int = 10_000,
        claim_interval: float | None = None,
        max_deliveries: int = 5,
        check_interval: float = 1.0,
        stats_interval: float = 5.0,
        forget_after: float = 3600.0,
        backoff: Backoff | None = None,
        noack: bool = False,
    ) -> None:
        if block_ms >= bus.dsn.socket_timeout * 1000:
            raise ValueError(
                f"block_ms {block_ms} must be below the socket timeout ({bus.dsn.socket_timeout}s)"
            )
        self.bus = bus
        self.stream = stream
        self.group = group
        self.name = name
        self.handler = handler
        self.on_resync = on_resync
        self.from_start = from_start
        self.batch = batch
        self.block_ms = block_ms
        self.min_idle_ms = min_idle_ms
        self.claim_interval = claim_interval if claim_interval is not None else min_idle_ms / 2000
        self.max_deliveries = max_deliveries
        self.check_interval = check_interval
        self.stats_interval = stats_interval
        self.forget_after = forget_after
        self.noack = noack
        self._next_forget = 0.0
        self.backoff = backoff or Backoff()
        self._r = bus.redis
        self._labels = (bus.keys.short(stream), group)
        self._incarnation: str | None = None
        self._unacked: list[str] = []  # handled entries whose XACK goes out with the next XREADGROUP
        self._failures: dict[str, int] = {}
        self._next_check = 0.0
        self._next_stats = 0.0
        self._pos: tuple[int, int] = (0, 0)  # newest stream position known to be delivered to the group
        self._read_since: float | None = None  # monotonic time the read in progress went out (None: none)
        self._next_claim = 0.0
        self._last_full = False
        # observable state (status pages, tests)
        self.handled = 0
        self.deadlettered = 0
        self.claimed = 0
        self.resyncs: list[str] = []
        self.lag: int | None = None
        self.pending: int | None = None
        self.running = False

    # -- main loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        stop_task: asyncio.Task[bool] = asyncio.create_task(stop.wait())
        need_setup = True
        first = True
        group_missing = False
        self.running = True
        try:
            while not stop.is_set():
                try:
                    if need_setup:
                        await self._setup(first)
                        need_setup = first = group_missing = False
                        self.backoff.reset()
                    if group_missing:
                        await self._group_missing()
                        group_missing = False
                    now = time.monotonic()
                    if now >= self._next_stats:
                        await self.check(full=True, fresh=False)
                    elif self._last_full or now >= self._next_check:
                        await self.check(full=False, fresh=False)
                    if now >= self._next_claim:
                        await self._claim()
                        self._next_claim = time.monotonic() + self.claim_interval
                    got = await self._read(stop_task)
                    if got is None:
                        break
                    self._last_full = len(got) >= self.batch
                    if got:
                        self._pos = max(self._pos, _id_tuple(got[-1][0]))
                    await self._process(got, defer=True)
                    self.backoff.reset()
                except ResponseError as e:
                    if isinstance(e, NoPermissionError):
                        err = self.bus._wrap(e, "XREADGROUP/XACK/XAUTOCLAIM", self.stream)
                        log.error("consumer not allowed by redis ACL", extra=self._x(error=str(err)))
                        await _sleep_or_stop(max(self.backoff.next(), 1.0), stop)
                    elif "NOGROUP" in str(e):
                        group_missing = True  # handled at the top of the loop, inside the try
                        await _sleep_or_stop(0.01, stop)
                    elif isinstance(e, ReadOnlyError):
                        self.bus._note_down(e)
                        need_setup = True
                        await _sleep_or_stop(self.backoff.next(), stop)
                    else:
                        log.error("unexpected redis error in consumer", extra=self._x(error=str(e)))
                        await _sleep_or_stop(self.backoff.next(), stop)
                except AuthenticationError as e:
                    log.error("redis refused the consumer's credentials", extra=self._x(error=str(e)))
                    await _sleep_or_stop(max(self.backoff.next(), 1.0), stop)
                except (RedisError, OSError) as e:
                    self.bus._note_down(e)
                    need_setup = True
                    delay = self.backoff.next()
                    log.debug("consumer waiting for redis",
                              extra=self._x(error=str(e), retry_s=round(delay, 3)))
                    await _sleep_or_stop(delay, stop)
                except BusUnavailableError as e:
                    need_setup = True
                    delay = self.backoff.next()
                    log.debug("consumer waiting for redis",
                              extra=self._x(error=str(e), retry_s=round(delay, 3)))
                    await _sleep_or_stop(delay, stop)
                except BusError as e:
                    log.error("consumer error", extra=self._x(error=str(e)))
                    await _sleep_or_stop(max(self.backoff.next(), 1.0), stop)
                except Exception as e:  # a bug must not kill the consumer: log it, back off, go on
                    log.error("unexpected error in consumer", extra=self._x(error=repr(e)), exc_info=True)
                    need_setup = True
                    await _sleep_or_stop(max(self.backoff.next(), 1.0), stop)
        finally:
            self.running = False
            stop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_task
            if self._unacked:  # what we handled last: acked now (else redelivered to the next consumer)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._r.xack(self.stream, self.group, *self._unacked), 1.0)
                    _consumed.labels(*self._labels).inc(len(self._unacked))
                self._unacked = []

    def _x(self, **kw: Any) -> dict[str, Any]:
        return {"stream": self.stream, "group": self.group, "consumer": self.name, **kw}

    # -- setup / resync ------------------------------------------------------------------------
    async def _setup(self, first: bool) -> None:
        inc = await self.bus.incarnation()
        if self._incarnation is not None and inc != self._incarnation:
            self._incarnation = inc
            await self._create_group("0")
            await self._resync("incarnation_changed")
        else:
            self._incarnation = inc
            created = await self._create_group("0" if self.from_start else "$")
            if created and not first:
                await self._resync("group_missing")
        self.bus._note_ok()
        self.bus._allowed("XREADGROUP/XACK/XAUTOCLAIM", self.stream)
        # entries delivered to us before a crash/disconnect but never acked
        start = "0-0"
        for _ in range(100):
            res: Any = await self._r.xreadgroup(
                self.group, self.name, {self.stream: start}, count=self.batch
            )
            entries = res[0][1] if res else []
            entries = [(eid, f) for eid, f in entries if f is not None]
            if not entries:
                break
            await self._process(entries)
            start = _s(entries[-1][0])
        self._next_check = self._next_stats = 0.0

    async def _create_group(self, start: str) -> bool:
        try:
            await self._r.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" in str(e):
                return False
            raise
        log.info("consumer group created", extra=self._x(start=start))
        return True

    async def _group_missing(self) -> None:
        inc = await self.bus.incarnation()
        if self._incarnation is not None and inc != self._incarnation:
            self._incarnation = inc
            await self._create_group("0")
            await self._resync("incarnation_changed")
            return
        await self._create_group("0" if self.from_start else "$")
        await self._resync("group_missing")

    async def _resync(self, reason: str) -> None:
        self.resyncs.append(reason)
        _resyncs.labels(*self._labels, reason).inc()
        self._failures.clear()
        log.warning("consumer resync", extra=self._x(reason=reason))
        if self.on_resync is None:
            return
        try:
            await self.on_resync(reason)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("on_resync handler failed", extra=self._x(reason=reason, error=repr(e)), exc_info=True)

    async def check(self, full: bool = True, *, fresh: bool = True) -> None:
        """Incarnation, group existence, trimming past our position, lag and pending metrics.

        The cheap form (``full=False``, every ``check_interval``) reads only the incarnation and
        XINFO STREAM, and escalates to a full one when the stream's first entry lies beyond the
        newest position this consumer knows of. The full form (every ``stats_interval``) adds
        XINFO GROUPS, which returns one record per group of the stream (~10 ms of parsing with 100
        groups), so the run loop lets consumers of one Bus share a recent answer (``fresh=False``).
        """
        now = time.monotonic()
        jitter = 0.9 + 0.2 * random.random()  # keep many consumers from checking in lockstep
        self._next_check = now + self.check_interval * jitter
        if full:
            self._next_stats = now + self.stats_interval * jitter
        async with self._r.pipeline(transaction=False) as p:
            p.get(self.bus.keys.incarnation)
            p.xinfo_stream(self.stream)
            inc_raw, info = await p.execute(raise_on_error=False)
        for r in (inc_raw, info):
            if isinstance(r, (NoPermissionError, RedisConnectionError, RedisTimeoutError)):
                raise r
        if not isinstance(inc_raw, Exception) and (inc_raw is None or _s(inc_raw) != self._incarnation):
            await self._group_missing()
            return
        if isinstance(info, Exception):
            if "no such key" in str(info).lower():
                await self._group_missing()
                return
            raise info
        length = int(info.get("length") or 0)
        removed = int(info.get("entries-added") or 0) - length
        first_raw = info.get("recorded-first-entry-id") or (info.get("first-entry") or [b"0-0"])[0]
        first = _id_tuple(first_raw)
        suspect = length > 0 and removed > 0 and first > self._pos
        if not full:
            if suspect:
                await self.check(full=True, fresh=True)
            return
        cached = self.bus._groups_cache.get(self.stream)
        if not fresh and cached is not None and now - cached[0] < self.stats_interval / 2:
            groups = cached[1]
        else:
            try:
                groups = await self._r.xinfo_groups(self.stream)
            except ResponseError as e:
                if "no such key" in str(e).lower():
                    await self._group_missing()
                    return
                raise
            self.bus._groups_cache[self.stream] = (now, groups)
            fresh = True
        mine = next((g for g in groups if _s(g.get("name")) == self.group), None)
        if mine is None:
            if not fresh:
                await self.check(full=True, fresh=True)
            else:
                await self._group_missing()
            return
        self.pending = int(mine.get("pending") or 0)
        _pending.labels(*self._labels).set(self.pending)
        lag = mine.get("lag")
        self.lag = int(lag) if lag is not None else None
        if self.lag is not None:
            _lag.labels(*self._labels).set(self.lag)
        last_delivered = _id_tuple(mine.get("last-delivered-id"))
        self._pos = max(self._pos, last_delivered)
        read = mine.get("entries-read")
        if length > 0 and removed > 0 and self._pos < first and (read is None or int(read) < removed):
            if not fresh:
                await self.check(full=True, fresh=True)
                return
            log.warning("stream trimmed past the group's position: entries were lost",
                        extra=self._x(entries_read=read, trimmed=removed))
            # Re-anchor the group's counter so lag is right again and we report this gap once.
            await self._r.xgroup_setid(self.stream, self.group, _s(mine.get("last-delivered-id")),
                                       entries_read=removed)
            self.bus._groups_cache.pop(self.stream, None)
            await self._resync("stream_trimmed")

    # -- reading -------------------------------------------------------------------------------
    def reads_ok(self, now: float) -> bool:
        """False while a read is overdue (it went out longer than block_ms + a little ago and has not returned):
        the path from Redis to us is stalled, whatever our writes say (the announcer's leases-outage grace
        relies on hearing leases' silence, not on failing to hear it)."""
        since = self._read_since
        return since is None or now - since <= self.block_ms / 1000.0 + READ_OVERDUE_SLACK_S

    async def _read(self, stop_task: asyncio.Task[bool]) -> list[tuple[Any, Any]] | None:
        self._read_since = time.monotonic()
        try:
            return await self._read_once(stop_task)
        finally:
            self._read_since = None

    async def _read_once(self, stop_task: asyncio.Task[bool]) -> list[tuple[Any, Any]] | None:
        acks = self._unacked
        read = asyncio.ensure_future(self._ack_and_read(acks) if acks else self._r.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=self.batch, block=self.block_ms,
            noack=self.noack))
        done, _ = await asyncio.wait({read, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if read not in done:
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await read
            return None
        res: Any = read.result()
        if acks:
            self._unacked = []
            _consumed.labels(*self._labels).inc(len(acks))
        self.bus._note_ok()
        if not res:
            return []
        entries: list[tuple[Any, Any]] = res[0][1]
        return entries

    def handled_noack(self, n: int) -> None:
        """Entries read with NOACK are done once handled (nothing pending to acknowledge)."""
        _consumed.labels(*self._labels).inc(n)

    async def _ack_and_read(self, acks: list[str]) -> Any:
        """XACK of the entries handled last and the next XREADGROUP in one round trip (a pipeline): a
        consumer of a busy stream (leases reads every node's heartbeats) pays one round trip per entry, not
        two. The acks go out before the read blocks, as a separate XACK did."""
        async with self._r.pipeline(transaction=False) as p:
            p.xack(self.stream, self.group, *acks)
            p.xreadgroup(self.group, self.name, {self.stream: ">"}, count=self.batch, block=self.block_ms)
            res = await p.execute()
        return res[1]

    async def _forget_dead_consumers(self) -> None:
        """XGROUP DELCONSUMER members idle longer than ``forget_after`` s with nothing pending
        (restarted processes with a new consumer name would otherwise pile up in the group)."""
        consumers = await self._r.xinfo_consumers(self.stream, self.group)
        for c in consumers:
            name = _s(c.get("name"))
            if name == self.name or int(c.get("pending") or 0) > 0:
                continue
            if int(c.get("idle") or 0) >= self.forget_after * 1000:
                await self._r.xgroup_delconsumer(self.stream, self.group, name)
                log.info("removed dead consumer from group", extra=self._x(dead=name))

    async def _claim(self) -> None:
        if time.monotonic() >= self._next_forget:
            self._next_forget = time.monotonic() + max(self.forget_after / 4, self.claim_interval)
            await self._forget_dead_consumers()
        start = "0-0"
        for _ in range(10):
            res = await self._r.xautoclaim(self.stream, self.group, self.name, self.min_idle_ms,
                                           start_id=start, count=self.batch)
            nxt, entries = _s(res[0]), res[1]
            deleted = res[2] if len(res) > 2 else []
            gone = [eid for eid, f in entries if f is None] + list(deleted)
            entries = [(eid, f) for eid, f in entries if f is not None]
            if gone:  # payload trimmed away while pending: nothing to hand over
                await self._r.xack(self.stream, self.group, *gone)
            if entries:
                self.claimed += len(entries)
                _claimed.labels(*self._labels).inc(len(entries))
                counts: dict[str, int] = {}
                info = await self._r.xpending_range(
                    self.stream, self.group, min=_s(entries[0][0]), max=_s(entries[-1][0]),
                    count=len(entries), consumername=self.name,
                )
                for it in info:
                    counts[_s(it["message_id"])] = int(it["times_delivered"])
                log.info("claimed pending entries of idle consumers",
                         extra=self._x(count=len(entries), first=_s(entries[0][0])))
                await self._process(entries, counts)
            if nxt in ("0-0", "0") or not entries:
                break
            start = nxt

    async def _process(
        self, entries: list[tuple[Any, Any]], deliveries: Mapping[str, int] | None = None, *,
        defer: bool = False,
    ) -> None:
        """Handle ``entries`` and acknowledge them (``defer``: with the next read, see ``_ack_and_read``)."""
        acks: list[str] = []
        for raw_id, fields in entries:
            eid = _s(raw_id)
            payload = fields.get(PAYLOAD_FIELD) if isinstance(fields, dict) else None
            if payload is None:
                await self._deadletter(eid, fields, "no_payload", "entry has no 'm' field")
                acks.append(eid)
                continue
            try:
                msg = decode(payload)
            except MessageError as e:
                await self._deadletter(eid, fields, _reason_of(e), str(e))
                acks.append(eid)
                continue
            t0 = time.perf_counter()
            try:
                await self.handler(msg, eid)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _handler_errors.labels(*self._labels).inc()
                n = max(self._failures.get(eid, 0) + 1, (deliveries or {}).get(eid, 0))
                self._failures[eid] = n
                if self.noack:  # read with NOACK: nothing is pending, nothing comes again
                    log.warning("handler failed; entry dropped (read without acknowledgement)",
                                extra=self._x(id=eid, error=repr(e)), exc_info=True)
                    self._failures.pop(eid, None)
                    continue
                if n >= self.max_deliveries:
                    await self._deadletter(
                        eid, fields, "handler_failed", f"{n} failed deliveries, last: {e!r}"
                    )
                    self._failures.pop(eid, None)
                    acks.append(eid)
                else:
                    log.warning("handler failed; entry stays pending for redelivery",
                                extra=self._x(id=eid, attempt=n, error=repr(e)), exc_info=True)
                continue
            _handler_seconds.labels(*self._labels).observe(time.perf_counter() - t0)
            self._failures.pop(eid, None)
            acks.append(eid)
            self.handled += 1
        if acks and defer and self.noack:
            self.handled_noack(len(acks))
        elif acks and defer:
            self._unacked.extend(acks)
        elif acks:
            await self._r.xack(self.stream, self.group, *acks)
            ok = len(acks)
            _consumed.labels(*self._labels).inc(ok)

    async def _deadletter(self, eid: str, fields: Any, reason: str, error: str) -> None:
        self.deadlettered += 1
        _deadletter.labels(self._labels[0], reason).inc()
        log.warning("unreadable bus entry moved to the dead-letter stream",
                    extra=self._x(id=eid, reason=reason, error=error))
        body: dict[Any, Any] = {
            "stream": self.stream, "group": self.group, "consumer": self.name, "id": eid,
            "reason": reason, "error": error[:1000], "at": f"{time.time():.3f}",
        }
        if isinstance(fields, dict):
            payload = fields.get(PAYLOAD_FIELD)
            if payload is not None:
                body[PAYLOAD_FIELD] = payload
        dl = self.bus.keys.deadletter
        try:
            await self._r.xadd(dl, body, maxlen=self.bus.maxlen_for(dl), approximate=True)
        except NoPermissionError as e:
            # Losing the copy is better than blocking the stream forever: log and go on.
            err = self.bus._wrap(e, "XADD", dl)
            log.error("cannot write the dead-letter stream", extra=self._x(error=str(err)))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a lookup given up on: its late error is not "never retrieved"


async def _pin_sentinel_addresses(d: RedisDSN) -> RedisDSN:
    """Sentinel DSNs that name their sentinels: the names' addresses now, asked before the names from then
    on. In Kubernetes the name is a Service's (l2lb-redis-sentinel), whose ClusterIP lasts as long as the
    Service, so finding the new master after a node death needs no name lookup -- lookups that kube-proxy
    still sends to a dead node's CoreDNS fail until the node is NotReady (~40 s; measured, e2e fault dm).
    The names stay in the list, after the addresses (a Service made again gets another address). Not with
    TLS (the certificate names the host), nor when the lookup fails now (the names alone, as before)."""
    if not d.sentinel or d.tls:
        return d
    loop = asyncio.get_running_loop()
    pinned: list[tuple[str, int]] = []
    for host, port in d.hosts:
        if _is_ip(host):
            continue
        lookup = asyncio.ensure_future(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        lookup.add_done_callback(_retrieve)
        try:
            infos = await asyncio.wait_for(asyncio.shield(lookup), max(d.connect_timeout, 1.0) * 3)
        except (OSError, TimeoutError):
            continue
        for *_, sockaddr in infos:
            addr = (str(sockaddr[0]), port)
            if addr not in pinned and addr not in d.hosts:
                pinned.append(addr)
    return replace(d, hosts=(*pinned, *d.hosts)) if pinned else d


def _make_client(d: RedisDSN, client_name: str) -> tuple[aioredis.Redis, Sentinel | None]:
    common: dict[str, Any] = {
        "db": d.db,
        "username": d.username,
        "password": d.password,
        "socket_timeout": d.socket_timeout,
        "socket_connect_timeout": d.connect_timeout,
        "socket_keepalive": True,
        "client_name": client_name,
        # One immediate retry (a stale pooled connection after a Redis restart); the bus does its
        # own backoff above that.
        "retry": Retry(NoBackoff(), 1),
        **d.tls_kwargs(),
    }
    if d.sentinel:
        assert d.sentinel_service is not None
        skw: dict[str, Any] = {
            "socket_timeout": d.connect_timeout,
            "socket_connect_timeout": d.connect_timeout,
            # No retries per sentinel: discovery asks the next one instead. redis-py's default (3
            # retries with exponential backoff) spends ~18 s on one dead sentinel -- the node death
            # that took the master often took a sentinel too.
            "retry": Retry(NoBackoff(), 0),
            **d.tls_kwargs(),
        }
        if d.sentinel_username:
            skw["username"] = d.sentinel_username
        if d.sentinel_password:
            skw["password"] = d.sentinel_password
        # redis-py < 8.2 leaves Sentinel.__init__ untyped, >= 8.2 types it: called through Any so
        # mypy --strict passes on both without a (then unused) type: ignore.
        make_sentinel: Any = Sentinel
        sentinel: Sentinel = make_sentinel(list(d.hosts), sentinel_kwargs=skw, **common)
        client: aioredis.Redis = sentinel.master_for(d.sentinel_service, redis_class=aioredis.Redis, **common)
        return client, sentinel
    return aioredis.Redis(host=d.host, port=d.port, **common), None


# -- CLI helpers ---------------------------------------------------------------------------------
def add_redis_args(parser: argparse.ArgumentParser) -> None:
    """``--redis`` DSN (env L2LB_REDIS), ``--redis-prefix`` (env L2LB_REDIS_PREFIX),
    ``--redis-maxlen`` (env L2LB_REDIS_MAXLEN)."""
    g = parser.add_argument_group("redis bus")
    g.add_argument("--redis", default=os.environ.get("L2LB_REDIS", DEFAULT_DSN),
                   help="Redis DSN: redis://[user:pass@]host:port/db, rediss://...?ssl_ca_certs=PATH, "
                        "redis+sentinel://host:port[,host:port]/service (env L2LB_REDIS)")
    g.add_argument("--redis-prefix", default=os.environ.get("L2LB_REDIS_PREFIX", DEFAULT_PREFIX),
                   help="prefix of every Redis key (env L2LB_REDIS_PREFIX)")
    maxlen_default = int(os.environ.get("L2LB_REDIS_MAXLEN", DEFAULT_MAXLEN))
    g.add_argument("--redis-maxlen", type=int, default=maxlen_default,
                   help="approximate bound of each stream's length (env L2LB_REDIS_MAXLEN)")


async def bus_from_args(args: argparse.Namespace, *, client_name: str = "l2lb") -> Bus:
    dsn = getattr(args, "redis", DEFAULT_DSN)
    try:
        return await Bus.connect(
            dsn, prefix=getattr(args, "redis_prefix", DEFAULT_PREFIX), client_name=client_name,
            maxlen=getattr(args, "redis_maxlen", DEFAULT_MAXLEN),
        )
    except DSNError as e:
        raise DSNError(f"--redis {redact(dsn)}: {e}") from None
