"""In-process harness: one or more LeasesService instances + fake announcers on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.core.messages import Allocation
from services.leases.service import LeasesConfig, LeasesService
from tests.leases.fakes import FakeAnnouncer

ALL_POLICY: dict[str, Any] = {
    "apiVersion": "l2lb.io/v1alpha1", "kind": "L2AnnouncementPolicy", "metadata": {"name": "all"},
    "spec": {"interfaces": ["eth0"]},
}


async def wait_for(cond: Callable[[], bool], within: float, step: float = 0.01) -> float:
    """Poll ``cond`` (bounded); returns the monotonic time it first held; raises on timeout."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within}s")


class Running:
    def __init__(self, svc: LeasesService):
        self.svc = svc
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] = asyncio.create_task(svc.run(self.stop))

    async def kill(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


class Harness:
    def __init__(self, bus: Bus):
        self.bus = bus
        self.announcers: dict[str, FakeAnnouncer] = {}
        self.leases: list[Running] = []
        self.seq = 0

    async def add_node(self, node: str, **kw: Any) -> FakeAnnouncer:
        a = FakeAnnouncer(self.bus, node, **kw)
        await a.start()
        self.announcers[node] = a
        return a

    def start_leases(self, kube: Any = None, **cfg: Any) -> Running:
        cfg.setdefault("instance", f"leases-{len(self.leases)}")
        cfg.setdefault("startup_grace_ms", 300)
        cfg.setdefault("static_policies", [ALL_POLICY])
        cfg.setdefault("leader_election", kube is not None)
        if kube is None:
            cfg["policy_kinds"] = ()
        r = Running(LeasesService(LeasesConfig(**cfg), self.bus, kube))
        self.leases.append(r)
        return r

    async def allocate(self, key: str, *ips: str, **kw: Any) -> Allocation:
        ns, name = key.split("/")
        self.seq += 1
        a = Allocation(key=key, namespace=ns, name=name, uid=f"uid-{ns}-{name}", generation=1, seq=self.seq,
                       term=1, ips=tuple(ips), **kw)
        await self.bus.publish(self.bus.keys.allocations, a)
        return a

    def serving(self) -> dict[str, set[str]]:
        """ip -> nodes currently serving it (from the fake announcers' own views)."""
        out: dict[str, set[str]] = {}
        for n, a in self.announcers.items():
            for ip in a.serving():
                out.setdefault(ip, set()).add(n)
        return out

    def holder(self, ip: str) -> str | None:
        nodes = self.serving().get(ip, set())
        return next(iter(nodes)) if len(nodes) == 1 else None

    async def close(self) -> None:
        for r in self.leases:
            if not r.stop.is_set():
                await r.kill()
        for a in self.announcers.values():
            await a.stop()
