"""Leases service with the embedded API server: policies, EndpointSlices, conditions, Events, mirror
Leases and active/standby leader election."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.kube.client import RESOURCES, KubeClient
from l2lb.core.messages import NodeAssignments, decode
from tests.leases.harness import Harness, wait_for
from tests.support.kube import KubeHandle

pytestmark = pytest.mark.kube

CRDS = Path(__file__).resolve().parents[2] / "k8s" / "crds"
NS = "web"


@pytest.fixture
async def env(redis_url: str, kube_any: KubeHandle) -> AsyncIterator[tuple[Harness, KubeHandle, list[KubeClient]]]:
    """Both API servers: the embedded one and the real kube-apiserver (when built)."""
    kube = kube_any
    for crd in sorted(CRDS.glob("*_*.yaml")):  # the CRD files (not kustomization.yaml)
        kube.apply(str(crd))
    kube.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n"
               "apiVersion: v1\nkind: Namespace\nmetadata: {name: l2lb-system}\n")
    bus = await Bus.connect(redis_url, prefix="t")
    h = Harness(bus)
    clients: list[KubeClient] = []
    try:
        yield h, kube, clients
    finally:
        await h.close()
        for c in clients:
            await c.close()
        await bus.close()


async def _client(kube: KubeHandle, clients: list[KubeClient]) -> KubeClient:
    c = await KubeClient.create(kube.kubeconfig, qps=50, burst=100)
    clients.append(c)
    return c


def _service(name: str, etp: str = "Cluster", labels: dict[str, str] | None = None) -> str:
    lbl = "".join(f"\n    {k}: {v}" for k, v in (labels or {}).items())
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NS}\n"
            f"  labels:\n    app: {name}{lbl}\n"
            f"spec:\n  type: LoadBalancer\n  externalTrafficPolicy: {etp}\n  selector: {{app: {name}}}\n"
            "  ports:\n  - {port: 80, protocol: TCP}\n")


def _policy(zone: str) -> str:
    return ("apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: {name: zoned}\n"
            f"spec:\n  nodeSelector: {{matchLabels: {{zone: {zone}}}}}\n  interfaces: [eth0]\n"
            "  loadBalancerIPs: true\n")


def _slice(svc: str, node: str, ready: bool = True) -> str:
    return (f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}-abc\n"
            f"  namespace: {NS}\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\n"
            f"endpoints:\n- addresses: [203.0.113.50]\n  nodeName: {node}\n"
            f"  conditions: {{ready: {str(ready).lower()}}}\nports:\n- {{port: 80, protocol: TCP}}\n")


async def _condition(c: KubeClient, name: str) -> dict[str, Any]:
    obj = await c.get(RESOURCES["services"], name, NS)
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "l2lb.io/Announced":
            return dict(cond)
    return {}


async def poll(fn: Callable[[], Awaitable[bool]], within: float, step: float = 0.1) -> None:
    """Bounded polling of an async condition (reads through the test's own client)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await fn():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within}s")


async def _nodes(h: Harness) -> None:
    await h.add_node("node-a", labels={"zone": "a"})
    await h.add_node("node-b", labels={"zone": "b"})


async def test_policy_change_moves_ip_and_condition_follows(env: Any) -> None:
    h, kube, clients = env
    await _nodes(h)
    kube.apply(_service("shop"))
    kube.apply(_policy("a"))
    h.start_leases(await _client(kube, clients), static_policies=[], leader_election=False)
    await h.allocate(f"{NS}/shop", "198.51.100.80")
    await wait_for(lambda: h.holder("198.51.100.80") == "node-a", 10)
    tc = await _client(kube, clients)

    async def cond_is(key: str, value: str) -> bool:
        return (await _condition(tc, "shop")).get(key) == value

    await poll(lambda: cond_is("status", "True"), 10)
    t0 = time.monotonic()
    kube.apply(_policy("b"))
    t1 = await wait_for(lambda: h.holder("198.51.100.80") == "node-b", 5)
    print(f"policy change -> move: {(t1 - t0) * 1000:.0f} ms")
    # move ordering on the stream: node-a's set without the IP comes before node-b's set with it
    entries = await h.bus.redis.xrange(h.bus.keys.assignments)
    msgs = [(eid, decode(f[b"m"])) for eid, f in entries]
    ip = "198.51.100.80"

    def has(m: object, node: str, with_ip: bool) -> bool:
        return (isinstance(m, NodeAssignments) and m.node == node
                and any(v.ip == ip for v in m.vips) == with_ip)

    gain = next(i for i, (_, m) in enumerate(msgs) if has(m, "node-b", True))
    a_before = [m for _, m in msgs[:gain] if isinstance(m, NodeAssignments) and m.node == "node-a"]
    assert any(has(m, "node-a", True) for m in a_before)  # node-a held it ...
    assert has(a_before[-1], "node-a", False)  # ... and was told to drop it before node-b got it
    kube.apply(_policy("nowhere"))
    await wait_for(lambda: "198.51.100.80" not in h.serving(), 5)
    await poll(lambda: cond_is("reason", "no_eligible_node"), 10)
    assert (await _condition(tc, "shop"))["status"] == "False"
    evs = (await tc.list(RESOURCES["events"], NS))["items"]
    assert any(e.get("reason") == "AnnouncerMoved" and "node-a to node-b" in e.get("message", "") for e in evs)


async def test_etp_local_follows_ready_endpoint(env: Any) -> None:
    h, kube, clients = env
    await _nodes(h)
    kube.apply(_service("api", etp="Local"))
    kube.apply(_policy("a").replace("nodeSelector: {matchLabels: {zone: a}}", "nodeSelector: {}"))
    kube.apply(_slice("api", "node-b"))
    h.start_leases(await _client(kube, clients), static_policies=[], leader_election=False)
    await h.allocate(f"{NS}/api", "198.51.100.81", external_traffic_policy="Local")
    await wait_for(lambda: h.holder("198.51.100.81") == "node-b", 10)
    t0 = time.monotonic()
    kube.apply(_slice("api", "node-a"))
    t1 = await wait_for(lambda: h.holder("198.51.100.81") == "node-a", 5)
    print(f"ETP Local endpoint move -> IP move: {(t1 - t0) * 1000:.0f} ms")
    kube.apply(_slice("api", "node-a", ready=False))
    await wait_for(lambda: "198.51.100.81" not in h.serving(), 5)


async def test_standby_takes_over_with_zero_moves(env: Any) -> None:
    h, kube, clients = env
    await _nodes(h)
    kube.apply(_policy("a").replace("nodeSelector: {matchLabels: {zone: a}}", "nodeSelector: {}"))
    ips = [f"198.51.100.{100 + i}" for i in range(8)]
    for i in range(len(ips)):
        kube.apply(_service(f"s{i}"))
    le = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.3, "mirror_leases": True}
    first = h.start_leases(await _client(kube, clients), static_policies=[], instance="leases-a", **le)
    await wait_for(lambda: first.svc.m.is_leader, 10)
    second = h.start_leases(await _client(kube, clients), static_policies=[], instance="leases-b", **le)
    for i, ip in enumerate(ips):
        await h.allocate(f"{NS}/s{i}", ip)
    await wait_for(lambda: all(h.holder(ip) for ip in ips), 10)
    tc = await _client(kube, clients)

    async def mirrors() -> bool:
        items = (await tc.list(RESOURCES["leases"], "l2lb-system"))["items"]
        return len([r for r in items if r["metadata"]["name"].startswith("l2lb-announce-")]) == len(ips)

    await poll(mirrors, 10)
    await asyncio.sleep(0.5)
    assert not second.svc.m.is_leader and second.svc.status()["role"] == "standby"
    before = {ip: h.holder(ip) for ip in ips}
    epochs = {ip: e for a in h.announcers.values() for ip, e in a.serving().items()}
    kube.clear_requests()
    t0 = time.monotonic()
    await first.kill()  # graceful: releases the Lease
    t1 = await wait_for(lambda: second.svc.m.is_leader, 10)
    print(f"leases failover: standby leader after {(t1 - t0) * 1000:.0f} ms")
    await wait_for(lambda: all(a.received > 0 and a.last[0] == second.svc.m.term for a in h.announcers.values()), 5)
    await asyncio.sleep(0.5)
    assert {ip: h.holder(ip) for ip in ips} == before
    assert {ip: e for a in h.announcers.values() for ip, e in a.serving().items()} == epochs
    assert second.svc.m.moves_total == 0
    writes = [r for r in kube.requests() if "l2lb-announce-" in r.get("path", "")
              and r.get("verb") not in ("get", "list", "watch")]
    assert writes == []  # mirrors already right: the new leader writes nothing


async def test_api_requests_at_rest_do_not_grow_with_services(env: Any) -> None:
    h, kube, clients = env
    await _nodes(h)
    kube.apply(_policy("a").replace("nodeSelector: {matchLabels: {zone: a}}", "nodeSelector: {}"))
    running = h.start_leases(await _client(kube, clients), static_policies=[], leader_election=True,
                             retry_period=2.0)
    for i in range(50):
        await h.allocate(f"{NS}/bulk{i}", f"203.0.113.{i + 1}")
    await wait_for(lambda: len(h.serving()) == 50, 10)
    await wait_for(lambda: running.svc.m.is_leader, 5)
    await asyncio.sleep(1.0)
    kube.clear_requests()
    await asyncio.sleep(4.0)
    reqs = [r for r in kube.requests() if r.get("verb") != "watch"]
    rate = len(reqs) / 4.0
    print(f"API requests at rest with 50 Services: {rate:.2f}/s")
    assert rate <= 1.0, reqs


async def test_missing_policy_crds_do_not_block_the_election(redis_url: str, tmp_path: Path) -> None:
    from tests.support.kube import ApiServerProcess

    api = ApiServerProcess(tmp_path / "bare")  # a fresh server: no CRD installed at all
    await asyncio.to_thread(api.start)
    bus = await Bus.connect(redis_url, prefix="t")
    h = Harness(bus)
    client = await KubeClient.create(api.kubeconfig)
    try:
        await h.add_node("node-a")
        await h.allocate("ns/x", "198.51.100.90")
        running = h.start_leases(client, leader_election=False, sync_timeout_s=30.0)  # static policy only
        await wait_for(lambda: h.holder("198.51.100.90") == "node-a", 10)
        assert running.svc.mono() - running.svc.m.started < 10  # not the 30 s sync timeout
        st = running.svc.status()
        assert any("not synced" in v for v in st["informers"].values())
    finally:
        await h.close()
        await client.close()
        await bus.close()
        await asyncio.to_thread(api.stop)


async def test_leader_crash_standby_restores_same_holders(env: Any) -> None:
    h, kube, clients = env
    await _nodes(h)
    kube.apply(_policy("a").replace("nodeSelector: {matchLabels: {zone: a}}", "nodeSelector: {}"))
    ips = [f"198.51.100.{120 + i}" for i in range(4)]
    le = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.3, "conditions": False,
          "events": False}
    first = h.start_leases(await _client(kube, clients), static_policies=[], instance="crash-a", **le)
    await wait_for(lambda: first.svc.m.is_leader, 10)
    second = h.start_leases(await _client(kube, clients), static_policies=[], instance="crash-b", **le)
    for i, ip in enumerate(ips):
        await h.allocate(f"{NS}/c{i}", ip)
    await wait_for(lambda: all(h.holder(ip) for ip in ips), 10)
    await asyncio.sleep(0.5)
    before = {ip: h.holder(ip) for ip in ips}
    epochs = {ip: e for a in h.announcers.values() for ip, e in a.serving().items()}
    assert first.svc.elector is not None
    first.svc.elector.release_on_stop = False  # a crash: the Lease is left to expire
    t0 = time.monotonic()
    await first.kill()
    await wait_for(lambda: not h.serving(), 5)  # assignments ran out (ttl 1 s) before the takeover
    t1 = await wait_for(lambda: {ip: h.holder(ip) for ip in ips} == before, 15)
    print(f"leases crash: announcements back after {(t1 - t0) * 1000:.0f} ms (Lease duration 2 s)")
    assert second.svc.m.is_leader and second.svc.m.moves_total == 0
    # the sets ran out during the takeover: same holders, fresh (higher) epochs, never the old ones again
    after = {ip: e for a in h.announcers.values() for ip, e in a.serving().items()}
    assert set(after) == set(epochs) and all(after[ip] > epochs[ip] for ip in epochs)


async def test_invalid_policy_is_reported_not_fatal(env: Any) -> None:
    h, kube, clients = env
    await _nodes(h)
    kube.apply(_policy("a"))
    kube.apply("apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: {name: broken}\n"
               "spec:\n  interfaces: ['eth[0-']\n  loadBalancerIPs: true\n")
    running = h.start_leases(await _client(kube, clients), static_policies=[], leader_election=False)
    await h.allocate(f"{NS}/ok", "198.51.100.95")
    await wait_for(lambda: h.holder("198.51.100.95") == "node-a", 10)  # the good policy still works

    tc = await _client(kube, clients)

    async def warned() -> bool:
        items = (await tc.list(RESOURCES["events"]))["items"]
        return any(e.get("reason") == "InvalidPolicy" and (e.get("involvedObject") or {}).get("name") == "broken"
                   for e in items)

    await poll(warned, 10)
    errs = running.svc.status()["policy_errors"]
    assert [e["policy"] for e in errs] == ["broken"] and "not a valid regex" in errs[0]["error"]


async def test_kube_writes_retry_then_give_up(env: Any) -> None:
    h, kube, clients = env
    await _nodes(h)
    kube.apply(_service("flaky"))
    kube.apply(_service("denied"))
    kube.apply(_policy("a"))
    kube.inject(status=500, match="/services/flaky/status", count=2)  # transient: retried
    kube.inject(status=403, match="/services/denied/status")  # permanent: given up after 2 tries
    running = h.start_leases(await _client(kube, clients), static_policies=[], leader_election=False)
    await h.allocate(f"{NS}/flaky", "198.51.100.96")
    await h.allocate(f"{NS}/denied", "198.51.100.97")
    tc = await _client(kube, clients)

    async def flaky_announced() -> bool:
        return (await _condition(tc, "flaky")).get("status") == "True"

    await poll(flaky_announced, 15)
    await poll(lambda: _no_queue(running.svc), 15)
    await asyncio.sleep(1.0)
    denied = [r for r in kube.requests() if r.get("path", "").endswith("/services/denied/status")]
    assert len(denied) == 2
    assert (await _condition(tc, "denied")) == {}


async def _no_queue(svc: Any) -> bool:
    return not len(svc.writes)
