"""The leases machine's Kubernetes commands carried out (``l2lb.core.leases_machine``): the
``l2lb.io/Announced`` condition of Services, mirror Leases and Events.

:class:`WriteQueue` holds the newest intent per slot (one per Service and kind), writes one at a time
while this instance leads, retries a failed write with backoff (0.5, 1, 2, 4, 5 s ...) and gives up
(logged, ``l2lb_leases_kube_writes_total{what="dropped"}``) after 8 tries, or 2 for 400/403/404/422.
:class:`LeasesWriter` writes nothing the informer caches already show (a new leader rewrites nothing)
and reports every condition/Lease that is now right back to the machine (``done``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from l2lb.adapters.kube.client import RESOURCES, KubeError
from l2lb.adapters.kube.writes import set_condition
from l2lb.core.leases_machine import PolicyEvent, ServiceEvent, WriteCondition, WriteLease
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = ["CONDITION", "MANAGED_BY", "MANAGER", "KubeCommand", "LeasesWriter", "WriteQueue"]

log = get_logger("l2lb.leases")

KUBE_WRITES = metrics.counter("l2lb_leases_kube_writes_total",
                              "Kubernetes writes made by leases (mirrors, conditions, events)", ("what",))
CONDITION = "l2lb.io/Announced"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "l2lb-leases"

KubeCommand = WriteCondition | WriteLease | ServiceEvent | PolicyEvent


class WriteQueue:
    def __init__(self, write: Callable[[KubeCommand], Awaitable[None]], active: Callable[[], bool]):
        self._write = write
        self._active = active
        self._queue: dict[tuple[str, str], KubeCommand] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._wake = asyncio.Event()

    def put(self, cmd: KubeCommand) -> None:
        self._queue[cmd.slot] = cmd
        self._wake.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            if not self._active():
                self._queue.clear()
                continue
            k, cmd = next(iter(self._queue.items()))
            del self._queue[k]
            try:
                await self._write(cmd)
                self._failures.pop(k, None)
            except Exception as e:
                n = self._failures.get(k, 0) + 1
                status = int(getattr(e, "status", 0) or 0)
                if n >= 8 or (status in (400, 403, 404, 422) and n >= 2):
                    self._failures.pop(k, None)
                    KUBE_WRITES.labels("dropped").inc()
                    log.error("kubernetes write failed repeatedly; giving up on it",
                              extra={"what": k[0], "key": k[1], "attempts": n, "error": repr(e)})
                else:
                    self._failures[k] = n
                    log.warning("kubernetes write failed; will retry",
                                extra={"what": k[0], "key": k[1], "attempt": n, "error": repr(e)})
                    self._queue.setdefault(k, cmd)  # unless a newer write for it was queued meanwhile
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.25 * 2**n, 5.0))


class LeasesWriter:
    """``await writer(cmd)`` writes one command; ``informers`` may hold "services" and "leases" caches."""

    def __init__(self, kube: Any, namespace: str, informers: Mapping[str, Any], recorder: Any | None,
                 done: Callable[[WriteCondition | WriteLease], None]):
        self.kube = kube
        self.namespace = namespace
        self.informers = informers
        self.recorder = recorder
        self.done = done

    async def __call__(self, cmd: KubeCommand) -> None:
        if isinstance(cmd, WriteCondition):
            await self.condition(cmd)
        elif isinstance(cmd, WriteLease):
            await self.lease(cmd)
        elif self.recorder is not None:
            if isinstance(cmd, ServiceEvent):
                ns, name = cmd.service.split("/", 1)
                ref = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name,
                                                                           "uid": cmd.uid}}
                await self.recorder.event(ref, cmd.type, cmd.reason, cmd.message)
            else:
                await self.recorder.event(dict(cmd.obj), "Warning", "InvalidPolicy", cmd.message)
            KUBE_WRITES.labels("event").inc()

    async def condition(self, cmd: WriteCondition) -> None:
        ns, name = cmd.service.split("/", 1)
        st = cmd.state
        inf = self.informers.get("services")
        obj = inf.cache.get(cmd.service) if inf is not None else None
        if inf is not None and inf.synced and obj is None:
            self.done(cmd)
            return  # the Service is gone
        status = "True" if st.announced else "False"
        reason = "Announced" if st.announced else st.reason
        prev = ((obj or {}).get("status") or {}).get("conditions") or []
        for c in prev:
            if (c.get("type"), c.get("status"), c.get("reason"), c.get("message")) == (CONDITION, status, reason,
                                                                                       st.message):
                self.done(cmd)
                return  # already says so: no write
        gen = int(((obj or {}).get("metadata") or {}).get("generation") or 0)
        conds = set_condition(prev, CONDITION, status, reason, st.message[:1000], observed_generation=gen)
        cond = next(c for c in conds if c.get("type") == CONDITION)
        await self.kube.patch(RESOURCES["services"], name, {"status": {"conditions": [cond]}}, ns,
                              subresource="status", patch_type="strategic")
        KUBE_WRITES.labels("condition").inc()
        self.done(cmd)

    async def lease(self, cmd: WriteLease) -> None:
        ns, name = cmd.service.split("/", 1)
        lname = f"l2lb-announce-{ns}-{name}"[:253]
        res = RESOURCES["leases"]
        inf = self.informers.get("leases")
        cur = inf.cache.get(f"{self.namespace}/{lname}") if inf is not None else None
        if not cmd.holder:
            if cur is not None or inf is None:
                try:
                    await self.kube.delete(res, lname, self.namespace)
                    KUBE_WRITES.labels("lease").inc()
                except KubeError as e:
                    if e.status != 404:
                        raise
            self.done(cmd)
            return
        if cur is not None and (cur.get("spec") or {}).get("holderIdentity") == cmd.holder:
            self.done(cmd)
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        spec = {"holderIdentity": cmd.holder, "leaseDurationSeconds": cmd.duration_s, "acquireTime": now,
                "renewTime": now}
        meta: dict[str, Any] = {"name": lname, "namespace": self.namespace, "labels": {MANAGED_BY: MANAGER},
                                "annotations": {"l2lb.io/service": cmd.service}}
        if cur is None:
            try:
                await self.kube.create_object(res, {"metadata": meta, "spec": spec}, self.namespace)
                KUBE_WRITES.labels("lease").inc()
                self.done(cmd)
                return
            except KubeError as e:
                if e.status != 409:
                    raise
                cur = await self.kube.get(res, lname, self.namespace)
        spec["leaseTransitions"] = int((cur.get("spec") or {}).get("leaseTransitions") or 0) + 1
        meta["resourceVersion"] = (cur.get("metadata") or {}).get("resourceVersion")
        await self.kube.replace(res, {"metadata": meta, "spec": spec}, self.namespace)
        KUBE_WRITES.labels("lease").inc()
        self.done(cmd)
