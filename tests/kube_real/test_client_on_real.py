"""l2lb's own Kubernetes client against the real kube-apiserver (kubeconfig with token + CA data)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support.kube_real import RealApiServer

pytestmark = pytest.mark.kube

kube_client = pytest.importorskip("l2lb.adapters.kube.client")


async def test_crud_watch_and_errors_through_kubeclient(kube_real: RealApiServer) -> None:
    res = kube_client.RESOURCES["leases"]
    client = await kube_client.KubeClient.create(kube_real.kubeconfig, qps=0, burst=10)
    try:
        listed = await client.list(res, "default")
        rv = listed["metadata"]["resourceVersion"]
        assert listed["items"] == []
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "l2lb-harness-probe"},
            "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15},
        }
        created = await client.create_object(res, lease, "default")
        assert created["metadata"]["namespace"] == "default"
        with pytest.raises(kube_client.KubeError) as err:
            await client.create_object(res, lease, "default")
        assert err.value.status == 409

        stale = dict(created)
        await client.patch(res, "l2lb-harness-probe", {"spec": {"holderIdentity": "node-b"}}, "default")
        with pytest.raises(kube_client.KubeError) as err:  # optimistic concurrency on PUT
            await client.replace(res, stale, "default")
        assert err.value.status == 409

        events = []
        gen = client.watch(res, "default", resource_version=rv, timeout_s=5)
        async with contextlib.aclosing(gen):
            async with asyncio.timeout(10):
                async for typ, obj in gen:
                    events.append((typ, obj["spec"].get("holderIdentity")))
                    if len(events) == 2:
                        break
        assert events == [("ADDED", "node-a"), ("MODIFIED", "node-b")]

        await client.delete(res, "l2lb-harness-probe", "default")
        with pytest.raises(kube_client.KubeError) as err:
            await client.get(res, "l2lb-harness-probe", "default")
        assert err.value.status == 404
    finally:
        await client.close()
    counted = {(r["verb"], r["code"]) for r in kube_real.requests(settle_s=0.3)}
    assert {("list", 200), ("create", 201), ("create", 409), ("patch", 200), ("update", 409)} <= counted
    assert ("delete", 200) in counted and ("get", 404) in counted


async def test_watch_from_an_expired_resource_version_is_410(kube_real: RealApiServer) -> None:
    res = kube_client.RESOURCES["leases"]
    client = await kube_client.KubeClient.create(kube_real.kubeconfig, qps=0, burst=10)
    try:
        with pytest.raises(kube_client.KubeError) as err:
            gen = client.watch(res, "default", resource_version="1", timeout_s=5)
            async with contextlib.aclosing(gen):
                async with asyncio.timeout(10):
                    async for _ in gen:
                        pass
        assert err.value.status == 410
    finally:
        await client.close()
