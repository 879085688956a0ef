"""The seed's Pi-hole case on both API servers: the embedded one and a real kube-apiserver (when built)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.kube.client import RESOURCES, KubeClient
from services.allocator.service import AllocatorConfig, AllocatorService

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]


async def test_seed_pihole_on_any_apiserver(kube_any: Any, redis_url: str) -> None:
    if hasattr(kube_any, "install_crds"):
        kube_any.install_crds()  # real server
    else:
        kube_any.apply(ROOT / "k8s" / "crds")
    kube_any.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: l2lb-system}\n")
    kube_any.apply(ROOT / "tests" / "fixtures" / "seed" / "ip-pool.yaml")
    kube_any.apply(ROOT / "tests" / "fixtures" / "seed" / "pihole.yaml")
    bus = await Bus.connect(redis_url, prefix=f"any{time.monotonic_ns()}")
    client = await KubeClient.create(kube_any.kubeconfig, qps=50, burst=100)
    reader = await KubeClient.create(kube_any.kubeconfig, qps=50, burst=100)
    svc = AllocatorService(AllocatorConfig(instance="any", retry_period=0.5), bus, client)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        async def ingress(name: str) -> list[dict[str, Any]]:
            obj = await reader.get(RESOURCES["services"], name, "pihole")
            return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])

        deadline = time.monotonic() + 30
        while not (await ingress("pihole-dns-udp") and await ingress("pihole-web")):
            assert time.monotonic() < deadline, "no IPs within 30 s"
            await asyncio.sleep(0.2)
        assert await ingress("pihole-dns-tcp") == [{"ip": "192.168.1.153", "ipMode": "VIP"}]
        assert await ingress("pihole-dns-udp") == [{"ip": "192.168.1.153", "ipMode": "VIP"}]
        # Cilium >= 1.16: allowFirstLastIPs unset means Yes, the /25's first address is handed out
        assert [i["ip"] for i in await ingress("pihole-web")] == ["192.168.1.128"]
        obj = await reader.get(RESOURCES["services"], "pihole-dns-tcp", "pihole")
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "l2lb.io/IPAllocated")
        assert cond["status"] == "True" and cond["reason"] == "satisfied"
        # at rest: watches and leader-election renewals only
        await asyncio.sleep(1.0)
        kube_any.clear_requests()
        await asyncio.sleep(2.0)
        busy = [r for r in kube_any.requests() if r.get("verb") != "watch" and "/leases/" not in r.get("path", "")
                and "events" not in r.get("path", "") and "ciliumloadbalancerippools" not in r.get("path", "")]
        assert busy == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await client.close()
        await reader.close()
        await bus.close()
