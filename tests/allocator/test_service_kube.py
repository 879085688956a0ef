"""The allocator service end to end: embedded API server (or real one) + real Redis + the seed's YAML."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.kube.client import KubeClient
from l2lb.core.messages import Allocation, AllocationSnapshot, decode
from services.allocator.service import AllocatorConfig, AllocatorService
from tests.support.kube import KubeHandle

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "k8s" / "crds"
SEED = ROOT / "tests" / "fixtures" / "seed"


async def wait_for(cond: Callable[[], bool], within: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within}s")


class Running:
    def __init__(self, svc: AllocatorService):
        self.svc = svc
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(svc.run(self.stop))

    async def kill(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


class Env:
    def __init__(self, kube: KubeHandle, bus: Bus):
        self.kube = kube
        self.bus = bus
        self.clients: list[KubeClient] = []
        self.running: list[Running] = []

    async def close(self) -> None:
        """Kill the allocators still running, close their API clients and the bus."""
        for r in self.running:
            if not r.task.done():
                await r.kill()
        for c in self.clients:
            await c.close()
        await self.bus.close()

    async def start(self, instance: str = "a", **cfg: Any) -> Running:
        client = await KubeClient.create(self.kube.kubeconfig, qps=50, burst=100)
        self.clients.append(client)
        cfg.setdefault("pool_status_interval", 0.2)
        svc = AllocatorService(AllocatorConfig(instance=instance, **cfg), self.bus, client)
        r = Running(svc)
        self.running.append(r)
        return r

    def svc(self, ns: str, name: str) -> dict[str, Any]:
        code, obj, _ = self.kube.http("GET", f"/api/v1/namespaces/{ns}/services/{name}")
        assert code == 200, obj
        return dict(obj)

    def ips(self, ns: str, name: str) -> list[str]:
        ing = ((self.svc(ns, name).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [i["ip"] for i in ing]

    def cond(self, ns: str, name: str) -> dict[str, Any] | None:
        for c in (self.svc(ns, name).get("status") or {}).get("conditions") or []:
            if c.get("type") == "l2lb.io/IPAllocated":
                return dict(c)
        return None

    def events(self, ns: str) -> list[dict[str, Any]]:
        code, obj, _ = self.kube.http("GET", f"/api/v1/namespaces/{ns}/events")
        assert code == 200
        return list(obj.get("items") or [])

    async def messages(self) -> list[Any]:
        entries: Any = await self.bus.redis.xrange(self.bus.keys.allocations)
        out = []
        for _, fields in entries:
            raw = fields.get(b"m", fields.get("m"))
            out.append(decode(raw))
        return out


@pytest.fixture
async def env(redis_url: str, kube: KubeHandle) -> AsyncIterator[Env]:
    kube.apply(CRDS)
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: l2lb-system}\n")
    bus = await Bus.connect(redis_url, prefix=f"alloc{time.monotonic_ns()}")
    e = Env(kube, bus)
    try:
        yield e
    finally:
        await e.close()


def _service(name: str, ns: str = "pihole", *, ips: str | None = None, key: str | None = None,
             port: int = 80, proto: str = "TCP") -> str:
    ann = ""
    if ips or key:
        ann = "  annotations:\n"
        if ips:
            ann += f"    io.cilium/lb-ipam-ips: \"{ips}\"\n"
        if key:
            ann += f"    io.cilium/lb-ipam-sharing-key: {key}\n"
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n{ann}"
            f"spec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n"
            f"  ports:\n  - {{port: {port}, protocol: {proto}}}\n")


async def test_seed_end_to_end(env: Env) -> None:
    env.kube.apply(SEED)  # the seed's YAML, unchanged (pool with metadata.namespace, policy, Pi-hole)
    a = await env.start("a", leader_election=True, retry_period=0.5)
    await wait_for(lambda: env.ips("pihole", "pihole-dns-udp") == ["192.168.1.153"]
                   and env.ips("pihole", "pihole-web") != [], 20)
    assert env.ips("pihole", "pihole-dns-tcp") == ["192.168.1.153"]
    assert env.ips("pihole", "pihole-web") == ["192.168.1.128"]  # Cilium >= 1.16: the whole /25
    ing = env.svc("pihole", "pihole-dns-tcp")["status"]["loadBalancer"]["ingress"]
    assert ing == [{"ip": "192.168.1.153", "ipMode": "VIP"}]
    c = env.cond("pihole", "pihole-dns-udp")
    assert c is not None and c["status"] == "True" and c["reason"] == "satisfied"
    await wait_for(lambda: any(e.get("reason") == "IPAllocated" for e in env.events("pihole")), 5)

    # startup publishes one snapshot with every allocation (later changes: one Allocation each); the
    # statuses are written before it is published, so wait for it
    msgs: list[Any] = []
    deadline = time.monotonic() + 10
    while not any(isinstance(m, AllocationSnapshot) and m.allocations for m in msgs) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        msgs = await env.messages()
    allocs = {x.key: x for m in msgs if isinstance(m, AllocationSnapshot) for x in m.allocations}
    assert allocs["pihole/pihole-dns-tcp"].ips == ("192.168.1.153",)
    assert allocs["pihole/pihole-dns-udp"].ports[0].protocol == "UDP"
    assert allocs["pihole/pihole-dns-udp"].ip_pools == {"192.168.1.153": "default-pool"}
    assert any(isinstance(m, AllocationSnapshot) and len(m.allocations) == 3 for m in msgs)
    stored = await env.bus.load_snapshot("allocations")
    assert isinstance(stored, AllocationSnapshot) and {x.key for x in stored.allocations} == set(allocs)

    # pool status: Cilium-style counters
    def pool_cond(typ: str) -> str | None:
        _, obj, _ = env.kube.http("GET", "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/default-pool")
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == typ:
                return str(cond["message"])
        return None
    await wait_for(lambda: pool_cond("cilium.io/IPsUsed") == "2", 5)
    assert pool_cond("cilium.io/IPsTotal") == "128" and pool_cond("cilium.io/IPsAvailable") == "126"

    # at rest: nothing but watches and leader-election renewals
    await asyncio.sleep(0.5)
    env.kube.clear_requests()
    await asyncio.sleep(2.5)
    busy = [r for r in env.kube.requests() if r.get("verb") != "watch" and "/leases/" not in r.get("path", "")]
    assert busy == []

    # an incompatible request for the shared IP: condition + Event, no IP, others untouched
    env.kube.apply(_service("dns-dup", ips="192.168.1.153", key="pi-hole", port=53, proto="TCP"))
    await wait_for(lambda: env.cond("pihole", "dns-dup") is not None, 10)
    c = env.cond("pihole", "dns-dup")
    assert c is not None and c["status"] == "False"
    assert c["reason"] == "already_allocated_incompatible_service" and "TCP/53" in c["message"]
    assert env.ips("pihole", "dns-dup") == []
    await wait_for(lambda: any(e.get("reason") == "AllocationFailed" for e in env.events("pihole")), 5)
    assert env.ips("pihole", "pihole-dns-tcp") == ["192.168.1.153"]

    # delete: the IP is freed and reusable
    code, _, _ = env.kube.http("DELETE", "/api/v1/namespaces/pihole/services/pihole-web")
    assert code == 200
    env.kube.apply(_service("web2", ips="192.168.1.128"))
    await wait_for(lambda: env.ips("pihole", "web2") == ["192.168.1.128"], 10)
    msgs = await env.messages()
    assert any(isinstance(m, Allocation) and m.key == "pihole/pihole-web" and m.deleted for m in msgs)

    # malformed pool: Event, no crash, others keep working
    env.kube.apply("apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: broken}\n"
                   "spec:\n  blocks:\n  - {start: 198.51.100.9, stop: 198.51.100.1}\n")
    env.kube.apply(_service("after-broken"))
    await wait_for(lambda: env.ips("pihole", "after-broken") == ["192.168.1.129"], 10)
    await wait_for(lambda: any(e.get("reason") == "InvalidPool" for e in env.events("default")
                               + env.events("kube-system")), 5)
    err = a.svc.status()["pool_errors"]["CiliumLoadBalancerIPPool/broken"]
    assert err.startswith("spec.blocks[0].start:") and "is after stop" in err

    # restart: 0 IP changes, no status writes
    before = {n: env.ips("pihole", n) for n in ("pihole-dns-tcp", "pihole-dns-udp", "web2", "after-broken")}
    await a.kill()
    env.kube.clear_requests()
    b = await env.start("b", leader_election=True, retry_period=0.5)
    await wait_for(lambda: b.svc.restores == 1, 20)
    await asyncio.sleep(0.5)
    assert {n: env.ips("pihole", n) for n in before} == before
    writes = [r for r in env.kube.requests() if "/services/" in r.get("path", "") and r.get("verb") == "patch"]
    assert writes == []


def _own_pool(name: str, blocks: str, selector: str = "") -> str:
    return (f"apiVersion: l2lb.io/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {{name: {name}}}\n"
            f"spec:\n  blocks:\n{blocks}{selector}")


async def test_metallb_dualstack_exhaustion_conflict(env: Env) -> None:
    env.kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: metallb-system}\n")
    env.kube.apply(ROOT / "tests" / "fixtures" / "metallb")
    env.kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n")
    env.kube.apply(_own_pool("duo", "  - {cidr: 203.0.113.0/29}\n  - {cidr: '2001:db8:7::/64'}\n",
                             "  serviceSelector: {matchLabels: {want: duo}}\n"))
    env.kube.apply(_own_pool("small", "  - {start: 198.51.100.1, stop: 198.51.100.1}\n",
                             "  serviceSelector: {matchLabels: {want: small}}\n"))
    dual = ("apiVersion: v1\nkind: Service\nmetadata: {name: dual, namespace: apps, labels: {want: duo}}\n"
            "spec:\n  type: LoadBalancer\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n"
            "  ports: [{port: 443, protocol: TCP}]\n")
    env.kube.apply(dual)
    for n in ("s1", "s2"):
        env.kube.apply(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: apps, "
                       "labels: {want: small}, annotations: {metallb.io/address-pool: small}}\n"
                       "spec: {type: LoadBalancer, ports: [{port: 80}]}\n")
    await env.start("solo", leader_election=False)
    # MetalLB annotations and pool, unchanged
    await wait_for(lambda: env.ips("pihole", "pihole-dns-udp") == ["192.168.1.153"], 20)
    assert env.ips("pihole", "pihole-dns-tcp") == ["192.168.1.153"]
    await wait_for(lambda: env.ips("apps", "dual") != [], 10)
    assert env.ips("apps", "dual") == ["203.0.113.0", "2001:db8:7::"]
    await wait_for(lambda: env.cond("apps", "s2") is not None and env.cond("apps", "s1") is not None, 10)
    conds = {n: env.cond("apps", n) for n in ("s1", "s2")}
    failed = [n for n, c in conds.items() if c is not None and c["reason"] == "out_of_ips"]
    assert len(failed) == 1 and env.ips("apps", failed[0]) == []
    # grow the pool: the waiting Service gets the new address
    env.kube.apply(_own_pool("small", "  - {start: 198.51.100.1, stop: 198.51.100.2}\n",
                             "  serviceSelector: {matchLabels: {want: small}}\n"))
    await wait_for(lambda: env.ips("apps", failed[0]) == ["198.51.100.2"], 10)
    c = env.cond("apps", failed[0])
    assert c is not None and c["status"] == "True"
    # a Service that stops being type LoadBalancer is released: ingress and condition removed
    env.kube.apply(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {failed[0]}, namespace: apps, "
                   "labels: {want: small}, annotations: {metallb.io/address-pool: small}}\n"
                   "spec: {type: ClusterIP, ports: [{port: 80}]}\n")
    await wait_for(lambda: env.cond("apps", failed[0]) is None and env.ips("apps", failed[0]) == [], 10)
    await wait_for(lambda: any(e.get("reason") == "IPReleased" for e in env.events("apps")), 5)
    msgs = await env.messages()
    assert any(isinstance(m, Allocation) and m.key == f"apps/{failed[0]}" and m.deleted for m in msgs)

    # an overlapping pool created later is in conflict and allocates nothing
    env.kube.apply(_own_pool("late", "  - {cidr: 203.0.113.0/30}\n"))

    def conflict() -> str | None:
        _, obj, _ = env.kube.http("GET", "/apis/l2lb.io/v1alpha1/loadbalancerippools/late")
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == "l2lb.io/PoolConflict" and cond["status"] == "True":
                return str(cond["message"])
        return None
    await wait_for(lambda: conflict() is not None, 10)
    assert "overlaps CIDR '203.0.113.0/29' from IP Pool 'duo'" in (conflict() or "")
    assert env.ips("apps", "dual") == ["203.0.113.0", "2001:db8:7::"]


async def test_leader_failover_keeps_ips_and_writes_nothing(env: Env) -> None:
    env.kube.apply(SEED)
    a = await env.start("a", leader_election=True, retry_period=0.3, lease_duration=3.0, renew_deadline=2.0)
    await wait_for(lambda: a.svc.is_leader and a.svc.restores == 1, 20)
    b = await env.start("b", leader_election=True, retry_period=0.3, lease_duration=3.0, renew_deadline=2.0)
    await wait_for(lambda: b.svc.synced() and b.svc.role() == "standby", 10)
    assert b.svc.readiness()[0]
    before = {n: env.ips("pihole", n) for n in ("pihole-dns-tcp", "pihole-dns-udp", "pihole-web")}
    assert before["pihole-dns-tcp"] == ["192.168.1.153"]
    env.kube.clear_requests()
    t0 = time.monotonic()
    await a.kill()  # graceful: releases the Lease
    await wait_for(lambda: b.svc.is_leader and b.svc.restores == 1, 10)
    took = time.monotonic() - t0
    print(f"allocator failover: standby restored after {took * 1000:.0f} ms")
    assert {n: env.ips("pihole", n) for n in before} == before
    reqs = env.kube.requests()
    assert [r for r in reqs if r.get("verb") == "list"] == []  # warm standby: no re-listing
    assert [r for r in reqs if "/services/" in r.get("path", "") and r.get("verb") == "patch"] == []
    snaps = [m for m in await env.messages() if isinstance(m, AllocationSnapshot)]
    assert snaps and snaps[-1].term > snaps[0].term


async def test_pool_kind_without_crd_does_not_block(env: Env) -> None:
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ipaddresspools.metallb.io"
    code, _, _ = env.kube.http("DELETE", crd)
    assert code in (200, 202)
    try:
        await wait_for(lambda: env.kube.http("GET", "/apis/metallb.io/v1beta1/ipaddresspools")[0] == 404, 10)
        env.kube.apply(SEED)
        r = await env.start("nocrd", leader_election=False, pool_kinds=("l2lb", "cilium", "metallb"))
        await wait_for(lambda: env.ips("pihole", "pihole-dns-tcp") == ["192.168.1.153"], 20)
        assert r.svc.status()["pool_kinds_not_served"] == ["metallb"]
        await wait_for(lambda: r.svc.readiness()[0], 5)
    finally:
        env.kube.apply(CRDS / "metallb.io_ipaddresspools.yaml")


async def test_redis_outage_and_data_loss(kube: KubeHandle, tmp_path: Path) -> None:
    from tests.support.redis_server import RedisProcess

    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    bus = await Bus.connect(redis.url, prefix="outage")
    e = Env(kube, bus)
    try:
        kube.apply(CRDS)
        kube.apply(SEED)
        await e.start("r", leader_election=False)
        await wait_for(lambda: e.ips("pihole", "pihole-dns-tcp") == ["192.168.1.153"], 20)
        redis.stop(kill=True)
        # Kubernetes keeps being served while Redis is down
        kube.apply(_service("during-outage"))
        await wait_for(lambda: e.ips("pihole", "during-outage") == ["192.168.1.129"], 15)  # .128: pihole-web
        redis.start()  # empty: the data is gone

        async def stored() -> set[str]:
            try:
                snap = await bus.load_snapshot("allocations")
            except Exception:
                return set()
            return {a.key for a in snap.allocations} if isinstance(snap, AllocationSnapshot) else set()

        deadline = time.monotonic() + 20
        while "pihole/during-outage" not in await stored():
            assert time.monotonic() < deadline, "snapshot not republished after Redis came back"
            await asyncio.sleep(0.2)
        assert {"pihole/pihole-dns-tcp", "pihole/pihole-dns-udp", "pihole/pihole-web"} <= await stored()
    finally:
        await e.close()
        redis.stop()
