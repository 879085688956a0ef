"""Leader election on a ``coordination.k8s.io/v1`` Lease (client-go's algorithm, re-implemented).

* A candidate takes the Lease when nobody holds it (no Lease, or ``holderIdentity`` empty after a
  release) or when the holder's record has not changed for ``leaseDurationSeconds`` as measured
  on *our* monotonic clock since we first saw that record (no cross-node clock comparison).
* Writes are optimistic (PUT with the read ``resourceVersion``); a 409 means someone else won.
* ``leaseTransitions`` is incremented whenever the holder changes; the leader's ``term`` is that
  value, so it strictly increases with every new leadership -- a fencing token.
* The leader renews every ``retry_period``; if it cannot renew within ``renew_deadline`` (which
  is shorter than ``lease_duration``) it steps down *before* anyone else may take over.
* On stop the leader releases the Lease (empty holder, 1 s duration) so a standby takes over
  at its next retry instead of waiting for expiry (``release_on_stop=False``: it just stops
  renewing, and the others wait for the lease to expire -- what a crash looks like).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["LeaderElector", "micro_time"]

log = get_logger("l2lb.kube.leader")

IS_LEADER = metrics.gauge("l2lb_leader_is_leader", "1 while this process holds the leader Lease", ("lease",))
TRANSITIONS = metrics.counter(
    "l2lb_leader_transitions_total",
    "Leadership gained (acquired) or lost by this process",
    ("lease", "change"),
)

LEASES = RESOURCES["leases"]


def micro_time(dt: datetime | None = None) -> str:
    dt = dt or datetime.now(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_stop: bool = True,
    ):
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError(
                "leader election needs lease_duration > renew_deadline > retry_period > 0, got "
                f"{lease_duration}, {renew_deadline}, {retry_period}"
            )
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_stop = release_on_stop
        self.is_leader = False
        self.term = -1  # leaseTransitions of our current/last leadership; -1 = never led
        self.holder: str = ""  # last observed holder
        self._callbacks: list[Callable[[bool], Awaitable[None] | None]] = []
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None  # our last successfully written Lease
        self._last_renew = 0.0

    def on_change(self, fn: Callable[[bool], Awaitable[None] | None]) -> None:
        self._callbacks.append(fn)

    def status(self) -> dict[str, Any]:
        return {
            "lease": f"{self.namespace}/{self.name}",
            "identity": self.identity,
            "is_leader": self.is_leader,
            "term": self.term,
            "holder": self.holder,
        }

    def readiness(self) -> tuple[bool, str]:
        """Always ready (a standby is healthy); the text says who leads."""
        return True, ("leader" if self.is_leader else f"standby (leader: {self.holder or 'none'})")

    # -- one attempt ---------------------------------------------------------------------------
    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = copy.deepcopy(spec)
            self._observed_at = time.monotonic()
        self.holder = str(spec.get("holderIdentity") or "")

    def _new_spec(self, old: dict[str, Any] | None) -> dict[str, Any]:
        now = micro_time()
        old = old or {}
        mine = old.get("holderIdentity") == self.identity
        transitions = int(old.get("leaseTransitions") or 0)
        if old and not mine:
            transitions += 1
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration)),
            "acquireTime": old.get("acquireTime") if mine and old.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _write(self, lease: dict[str, Any], spec: dict[str, Any]) -> bool:
        body = {"metadata": copy.deepcopy(lease.get("metadata") or {}), "spec": spec}
        try:
            out = await self.client.replace(LEASES, body, self.namespace)
        except KubeError as e:
            if e.conflict:
                return False
            raise
        self._lease = out
        self._observe(out.get("spec") or {})
        self.term = int(spec["leaseTransitions"])
        return True

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        # fast path: renew from our own last write, no GET
        if self.is_leader and self._lease is not None:
            old = self._lease.get("spec") or {}
            if old.get("holderIdentity") == self.identity and await self._write(self._lease, self._new_spec(old)):
                return True
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except KubeError as e:
            if not e.not_found:
                raise
            spec = self._new_spec(None)
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            try:
                out = await self.client.create_object(LEASES, body, self.namespace)
            except KubeError as e2:
                if e2.conflict:
                    return False
                raise
            self._lease = out
            self._observe(out.get("spec") or {})
            self.term = 0
            return True
        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = str(spec.get("holderIdentity") or "")
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if time.monotonic() < self._observed_at + duration:
                return False  # held, and not expired by our clock
        return await self._write(lease, self._new_spec(spec))

    async def release(self) -> bool:
        """Give the Lease up if we hold it (empty holder, 1 s duration, transitions kept)."""
        lease = self._lease
        for _ in range(2):
            if lease is None:
                try:
                    lease = await self.client.get(LEASES, self.name, self.namespace)
                except KubeError:
                    return False
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return False
            now = micro_time()
            new = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            body = {"metadata": copy.deepcopy(lease.get("metadata") or {}), "spec": new}
            try:
                await self.client.replace(LEASES, body, self.namespace)
            except KubeError as e:
                if e.conflict:
                    lease = None
                    continue
                log.warning("leader election: release failed", extra={"lease": self.name, "error": str(e)})
                return False
            self._lease = None
            log.info("leader election: released", extra={"lease": self.name, "identity": self.identity})
            return True
        return False

    # -- loop -------------------------------------------------------------------------------------
    async def _set(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        IS_LEADER.labels(self.name).set(1 if leader else 0)
        TRANSITIONS.labels(self.name, "acquired" if leader else "lost").inc()
        log.info(
            "leader election: " + ("became leader" if leader else "stopped leading"),
            extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity, "term": self.term},
        )
        for fn in list(self._callbacks):
            try:
                r = fn(leader)
                if inspect.isawaitable(r):
                    await r
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader election callback raised", extra={"lease": self.name})

    async def _attempt(self, budget: float) -> bool:
        try:
            with KubeClient.deadline(max(budget, 0.05)):
                return await self.try_acquire_or_renew()
        except KubeError as e:
            log.warning(
                "leader election: lease request failed",
                extra={"lease": f"{self.namespace}/{self.name}", "error": str(e), "leader": self.is_leader},
            )
            return False

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(seconds, 0.0))

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign, lead, renew; step down when renewal fails past ``renew_deadline``; campaign
        again. On ``stop``: release the Lease if held."""
        try:
            while not stop.is_set():
                if not self.is_leader:
                    if await self._attempt(self.retry_period * 2):
                        self._last_renew = time.monotonic()
                        await self._set(True)
                        continue
                    await self._sleep(stop, self.retry_period * (1.0 + 0.2 * random.random()))
                    continue
                await self._sleep(stop, self.retry_period)
                if stop.is_set():
                    break
                left = self.renew_deadline - (time.monotonic() - self._last_renew)
                if await self._attempt(left):
                    self._last_renew = time.monotonic()
                    continue
                if self.holder and self.holder != self.identity:
                    log.warning("leader election: lease taken by another holder", extra={"holder": self.holder})
                    await self._set(False)
                elif time.monotonic() - self._last_renew >= self.renew_deadline:
                    log.warning(
                        "leader election: failed to renew within the renew deadline",
                        extra={"lease": self.name, "renew_deadline_s": self.renew_deadline},
                    )
                    await self._set(False)
        finally:
            if self.is_leader:
                try:
                    if self.release_on_stop:
                        with KubeClient.deadline(min(self.renew_deadline, 5.0)):
                            await self.release()
                finally:
                    await self._set(False)
