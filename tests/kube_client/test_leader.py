"""Leader election on a real Lease in the embedded API server: one leader at a time, handover on
release, takeover after expiry, term = leaseTransitions strictly increasing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from l2lb.adapters.kube.client import RESOURCES, KubeClient
from l2lb.adapters.kube.leader import LeaderElector
from tests.kube_client.helpers import client_for, ensure_namespace, wait_until

pytestmark = pytest.mark.kube

NS = "l2lb-system"
TIMING = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.2}


class Candidate:
    def __init__(self, c: KubeClient, identity: str, **kw: Any):
        self.el = LeaderElector(c, namespace=NS, name="l2lb-test", identity=identity, **{**TIMING, **kw})
        self.changes: list[tuple[bool, int]] = []
        self.el.on_change(lambda led: self.changes.append((led, self.el.term)))
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.el.run(self.stop))

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


async def monitor(cands: list[Candidate], stop: asyncio.Event, both: list[float]) -> None:
    while not stop.is_set():
        if sum(1 for x in cands if x.el.is_leader) > 1:
            both.append(time.monotonic())
        await asyncio.sleep(0.01)


async def test_handover_on_release_and_takeover_after_expiry(kube: Any) -> None:
    ca, cb = await client_for(kube), await client_for(kube)
    try:
        await ensure_namespace(ca, NS)
        a = Candidate(ca, "node-a", release_on_stop=False)
        await wait_until(lambda: a.el.is_leader, 3)
        b = Candidate(cb, "node-b")
        mon_stop, both = asyncio.Event(), list[float]()
        mon = asyncio.create_task(monitor([a, b], mon_stop, both))
        await asyncio.sleep(1.0)
        assert a.el.is_leader and not b.el.is_leader and b.el.holder == "node-a"
        lease = await ca.get(RESOURCES["leases"], "l2lb-test", NS)
        assert lease["spec"]["holderIdentity"] == "node-a" and a.el.term == lease["spec"]["leaseTransitions"] == 0

        # crash-like stop (no release): b must wait for expiry (~lease_duration since it saw the last renew)
        t_stop = time.monotonic()
        await a.halt()
        assert not a.el.is_leader and a.changes == [(True, 0), (False, 0)]
        await wait_until(lambda: b.el.is_leader, 5)
        took = time.monotonic() - t_stop
        assert 1.5 <= took <= 2.0 + 3 * TIMING["retry_period"] + 0.9, took
        assert b.el.term == 1

        # graceful stop: c takes over at its next retry, not after expiry
        cc = await client_for(kube)
        try:
            c = Candidate(cc, "node-c")
            await asyncio.sleep(0.5)
            assert not c.el.is_leader
            t_stop = time.monotonic()
            await b.halt()
            await wait_until(lambda: c.el.is_leader, 3)
            assert time.monotonic() - t_stop < 1.0
            assert c.el.term == 2
            lease = await cc.get(RESOURCES["leases"], "l2lb-test", NS)
            assert lease["spec"]["holderIdentity"] == "node-c" and lease["spec"]["leaseTransitions"] == 2
            await c.halt()
            lease = await cc.get(RESOURCES["leases"], "l2lb-test", NS)
            assert lease["spec"]["holderIdentity"] == ""  # released
        finally:
            await cc.close()
        mon_stop.set()
        await mon
        assert both == []
        assert b.changes == [(True, 1), (False, 1)]
    finally:
        await ca.close()
        await cb.close()


async def test_leader_steps_down_when_it_cannot_renew(kube: Any) -> None:
    c = await client_for(kube)
    try:
        await ensure_namespace(c, NS)
        a = Candidate(c, "node-a")
        await wait_until(lambda: a.el.is_leader, 3)
        # the API server answers every Lease request with 503 from now on
        kube.inject(status=503, match="/leases/l2lb-test")
        t0 = time.monotonic()
        await wait_until(lambda: not a.el.is_leader, 4)
        took = time.monotonic() - t0
        # steps down after ~renew_deadline, before the lease could expire for the others
        assert TIMING["renew_deadline"] - TIMING["retry_period"] <= took < TIMING["lease_duration"], took
        kube.clear_faults()
        await wait_until(lambda: a.el.is_leader, 4)  # and campaigns again
        assert a.el.term == 0  # same holder re-acquired its own lease: no transition
        await a.halt()
    finally:
        await c.close()


async def test_bad_timing_is_rejected() -> None:
    from kubernetes_asyncio.client import Configuration

    c = KubeClient(Configuration())
    try:
        with pytest.raises(ValueError, match="lease_duration > renew_deadline > retry_period"):
            LeaderElector(c, namespace="x", name="y", identity="z", lease_duration=5, renew_deadline=10)
        with pytest.raises(ValueError, match="identity"):
            LeaderElector(c, namespace="x", name="y", identity="")
    finally:
        await c.close()
