"""Leader election on a Redis key with a short TTL, fenced by a strictly increasing term.

The same interface as :class:`l2lb.adapters.kube.leader.LeaderElector` (``on_change``, ``run``,
``status``, ``readiness``, ``is_leader``, ``term``, ``holder``), for services that must not wait
for a Kubernetes Lease to expire (6 s for leases, 15 s for the allocator) when their leader's
node dies. Selected with ``--leader-election-backend redis``.

* One key per election (:meth:`Keys.leader`) holds ``<identity>|<term>`` with a TTL of ``ttl_ms``
  (default 1000). A candidate takes it when it is absent (SET NX semantics, in one Lua script);
  the leader renews it every ``renew_ms`` (250) with the same script (PEXPIRE if still ours).
* **Term**: on every acquisition the script sets ``term = max(last term + 1, Redis TIME in ms)``
  (:meth:`Keys.leader_term`): strictly increasing while Redis keeps its data, and still increasing
  (the wall-clock part) when a restart without persistence or a failover to a lagging replica
  lost it -- like the per-IP epochs. It is greater than any Kubernetes Lease term (small integers),
  so moving from the Lease backend to this one keeps fencing right; moving back needs the
  announcers restarted (they keep the highest term they saw).
* **No two leaders for longer than the renew deadline**: the leader steps down when no renewal
  succeeded within ``renew_deadline_ms`` (700) of the *send time* of the last successful one,
  while Redis expires the key ``ttl_ms`` (1000) after it *processed* that renewal -- later than the
  send. So the old leader has stepped down before anyone can take the key. What remains is the
  case where Redis itself loses the key (a failover to a replica that had not received it): then a
  new leader gets a higher term at once, and the old one, whose next renewal finds the key gone or
  another holder, steps down within ``renew_deadline_ms``; announcers follow the higher term.
* While Redis is unreachable nobody leads (the leader steps down at its deadline): nobody could
  publish anyway. The Kubernetes Lease of the same name is still written by the current leader
  (holder, renew time) every ``mirror_every_s`` for ``kubectl`` visibility; it decides nothing.
* On stop the leader deletes the key if it is still its own, so a standby takes over at its next
  attempt (``renew_ms``) instead of after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["KubeLeaseMirror", "RedisLeaderElector", "elector_from_args"]

log = get_logger("l2lb.bus.leader")

IS_LEADER = metrics.gauge("l2lb_redis_leader_is_leader", "1 while this process holds the Redis leader key",
                          ("lease",))
TRANSITIONS = metrics.counter("l2lb_redis_leader_transitions_total",
                              "Redis leadership gained (acquired) or lost by this process", ("lease", "change"))

# KEYS[1] lock, KEYS[2] term; ARGV[1] identity, ARGV[2] ttl ms.
# Returns {1|0 (we hold it now), term of the holder, holder identity}.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local id, term = string.match(cur, '^(.*)|(%d+)$')
  if id == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(term), id}
  end
  return {0, tonumber(term or '0'), id or cur}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local term = math.max(last + 1, now)
redis.call('SET', KEYS[2], string.format('%d', term))
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. string.format('%d', term), 'PX', ARGV[2])
return {1, term, ARGV[1]}
"""
# KEYS[1] lock; ARGV[1] identity. Deletes the key if we hold it.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*)|%d+$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class RedisLeaderElector:
    def __init__(
        self,
        bus: Any,
        *,
        name: str,
        identity: str,
        ttl_ms: int = 1000,
        renew_ms: int = 250,
        renew_deadline_ms: int = 700,
        mirror: Any | None = None,
        mirror_every_s: float = 2.0,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if "|" in identity:
            raise ValueError(f"leader election identity may not contain '|': {identity!r}")
        if not ttl_ms > renew_deadline_ms > renew_ms > 0:
            raise ValueError("Redis leader election needs ttl > renew deadline > renew interval > 0, got "
                             f"{ttl_ms}, {renew_deadline_ms}, {renew_ms} ms")
        self.bus = bus
        self.name = name
        self.identity = identity
        self.ttl_ms = ttl_ms
        self.renew_ms = renew_ms
        self.renew_deadline_ms = renew_deadline_ms
        self.mirror = mirror  # a KubeLeaseMirror (or None): the Kubernetes Lease, for visibility only
        self.mirror_every_s = mirror_every_s
        self.is_leader = False
        self.term = -1  # term of our current/last leadership; -1 = never led
        self.holder = ""  # last observed holder
        self._callbacks: list[Callable[[bool], Awaitable[None] | None]] = []
        self._sha: dict[str, str] = {}
        self._last_ok_sent = 0.0  # monotonic send time of the last successful renewal
        self._last_mirror = 0.0

    @property
    def key(self) -> str:
        return str(self.bus.keys.leader(self.name))

    @property
    def term_key(self) -> str:
        return str(self.bus.keys.leader_term(self.name))

    def on_change(self, fn: Callable[[bool], Awaitable[None] | None]) -> None:
        self._callbacks.append(fn)

    def status(self) -> dict[str, Any]:
        return {"backend": "redis", "lease": self.name, "identity": self.identity, "is_leader": self.is_leader,
                "term": self.term, "holder": self.holder, "ttl_ms": self.ttl_ms}

    def readiness(self) -> tuple[bool, str]:
        return True, ("leader" if self.is_leader else f"standby (leader: {self.holder or 'none'})")

    # -- Redis ------------------------------------------------------------------------------------
    async def _script(self, body: str, keys: list[str], args: list[str]) -> Any:
        r = self.bus.redis
        sha = self._sha.get(body)
        if sha is None:
            sha = _text(await r.script_load(body))
            self._sha[body] = sha
        try:
            return await r.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or failed over: its script cache is empty
            self._sha[body] = _text(await r.script_load(body))
            return await r.evalsha(self._sha[body], len(keys), *keys, *args)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the key afterwards (``term`` then is our term)."""
        sent = time.monotonic()
        got = await asyncio.wait_for(
            self._script(_ACQUIRE, [self.key, self.term_key], [self.identity, str(self.ttl_ms)]),
            max(self.renew_deadline_ms / 1000 - (sent - self._last_ok_sent), 0.05) if self.is_leader
            else self.ttl_ms / 1000)
        ours, term, holder = int(got[0]), int(got[1]), _text(got[2])
        self.holder = holder
        if not ours:
            return False
        if self.is_leader and term != self.term:
            # the key was lost (Redis failover/restart) and we took it again: a new leadership
            log.warning("leader election (redis): our key was lost and taken again with a new term",
                        extra={"lease": self.name, "old_term": self.term, "term": term})
            await self._set(False)
        self.term = term
        self._last_ok_sent = sent
        return True

    async def release(self) -> bool:
        try:
            n = await asyncio.wait_for(self._script(_RELEASE, [self.key], [self.identity]), 2.0)
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("leader election (redis): release failed", extra={"lease": self.name, "error": str(e)})
            return False
        return bool(n)

    # -- loop -------------------------------------------------------------------------------------
    async def _set(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        IS_LEADER.labels(self.name).set(1 if leader else 0)
        TRANSITIONS.labels(self.name, "acquired" if leader else "lost").inc()
        log.info("leader election (redis): " + ("became leader" if leader else "stopped leading"),
                 extra={"lease": self.name, "identity": self.identity, "term": self.term})
        for fn in list(self._callbacks):
            try:
                r = fn(leader)
                if inspect.isawaitable(r):
                    await r
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader election callback raised", extra={"lease": self.name})

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except (RedisError, OSError, TimeoutError) as e:
            log.debug("leader election (redis): attempt failed", extra={"lease": self.name, "error": str(e)})
            return False

    async def _mirror(self, force: bool = False) -> None:
        if self.mirror is None or not self.is_leader:
            return
        now = time.monotonic()
        if not force and now - self._last_mirror < self.mirror_every_s:
            return
        self._last_mirror = now
        with contextlib.suppress(Exception):  # visibility only: never let it disturb the election
            await asyncio.wait_for(self.mirror.write(self.identity, self.term), 2.0)

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(seconds, 0.0))

    async def run(self, stop: asyncio.Event) -> None:
        mirror_task: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                ok = await self._attempt()
                if ok and not self.is_leader:
                    await self._set(True)
                    self._last_mirror = 0.0
                elif not ok and self.is_leader:
                    late = (time.monotonic() - self._last_ok_sent) * 1000
                    if self.holder and self.holder != self.identity:
                        log.warning("leader election (redis): key held by another process",
                                    extra={"lease": self.name, "holder": self.holder})
                        await self._set(False)
                    elif late >= self.renew_deadline_ms:
                        log.warning("leader election (redis): no renewal within the renew deadline",
                                    extra={"lease": self.name, "renew_deadline_ms": self.renew_deadline_ms})
                        await self._set(False)
                if self.is_leader and (mirror_task is None or mirror_task.done()):
                    mirror_task = asyncio.create_task(self._mirror())
                jitter = 1.0 if self.is_leader else 1.0 + 0.2 * random.random()
                await self._sleep(stop, self.renew_ms / 1000 * jitter)
        finally:
            if mirror_task is not None:
                mirror_task.cancel()
                await asyncio.gather(mirror_task, return_exceptions=True)
            if self.is_leader:
                try:
                    await self.release()
                finally:
                    await self._set(False)


class KubeLeaseMirror:
    """Writes the Kubernetes Lease ``name`` as the Redis leader sees it (holder, renew time, term as
    ``leaseTransitions`` is not kept: the term lives in Redis). For ``kubectl get lease`` only."""

    def __init__(self, client: Any, namespace: str, name: str, duration_s: int = 5) -> None:
        self.client, self.namespace, self.name, self.duration_s = client, namespace, name, duration_s

    async def write(self, identity: str, term: int) -> None:
        from l2lb.adapters.kube.client import RESOURCES, KubeError
        from l2lb.adapters.kube.leader import micro_time

        res = RESOURCES["leases"]
        now = micro_time()
        try:
            cur = await self.client.get(res, self.name, self.namespace)
        except KubeError as e:
            if not e.not_found:
                raise
            cur = None
        spec = (cur or {}).get("spec") or {}
        new = {"holderIdentity": identity, "leaseDurationSeconds": self.duration_s, "renewTime": now,
               "acquireTime": spec.get("acquireTime") if spec.get("holderIdentity") == identity else now,
               "leaseTransitions": int(spec.get("leaseTransitions") or 0)
               + (1 if spec.get("holderIdentity") not in (None, "", identity) else 0)}
        meta = {"name": self.name, "namespace": self.namespace,
                "annotations": {"l2lb.io/leader-backend": "redis", "l2lb.io/leader-term": str(term)}}
        if cur is None:
            await self.client.create_object(res, {"metadata": meta, "spec": new}, self.namespace)
        else:
            meta["resourceVersion"] = cur["metadata"]["resourceVersion"]
            await self.client.replace(res, {"metadata": meta, "spec": new}, self.namespace)


def elector_from_args(args: Any, *, bus: Any, kube: Any | None, name: str, identity: str,
                      namespace: str) -> RedisLeaderElector | None:
    """The Redis elector when ``--leader-election-backend redis`` (with the Kubernetes Lease ``name``
    mirrored when there is a Kubernetes API), else None: the service makes its Lease elector.
    Raises ValueError on inconsistent ``--le-redis-*`` timings."""
    if getattr(args, "leader_election_backend", "kube") != "redis" or getattr(args, "no_leader_election", False):
        return None
    mirror = KubeLeaseMirror(kube, namespace, name) if kube is not None else None
    return RedisLeaderElector(bus, name=name, identity=identity, ttl_ms=args.le_redis_ttl_ms,
                              renew_ms=args.le_redis_renew_ms, renew_deadline_ms=args.le_redis_renew_deadline_ms,
                              mirror=mirror)
