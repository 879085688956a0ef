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


async def test_watch_from_an_old_resource_version_replays_instead_of_410(kube_real: RealApiServer) -> None:
    """Real behaviour: while the watch cache still holds it, an old resourceVersion is served by
    replaying events from there (no 410 Gone); 410 comes only once the cache window moved past it
    (minutes of traffic), which a test cannot provoke quickly. The embedded server must not 410
    for such a version either."""
    res = kube_client.RESOURCES["leases"]
    client = await kube_client.KubeClient.create(kube_real.kubeconfig, qps=0, burst=10)
    try:
        first = await client.create_object(
            res, {"metadata": {"name": "old"}, "spec": {"holderIdentity": "a"}}, "default"
        )
        await client.patch(res, "old", {"spec": {"holderIdentity": "b"}}, "default")
        rv_before = str(int(first["metadata"]["resourceVersion"]) - 1)
        seen = []
        gen = client.watch(res, "default", resource_version=rv_before, timeout_s=5)
        async with contextlib.aclosing(gen):
            async with asyncio.timeout(10):
                async for typ, obj in gen:
                    seen.append((typ, obj["spec"]["holderIdentity"]))
                    if len(seen) == 2:
                        break
        assert seen == [("ADDED", "a"), ("MODIFIED", "b")]
    finally:
        await client.close()
