"""Conformance cases through the allocator service itself: the objects of a case in the API server
(Services' ``status`` written through the status subresource, as the anchor left it), one allocator
started on them, and the Services' ingress and ``l2lb.io/IPAllocated`` condition compared with what the
case expects. ``l2lb allocate`` runs every case (tests/conformance); this shows the service, which
restores the same way at takeover, gives the same answers, partial results and refusals included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.adapters.bus.client import Bus
from l2lb.core.parse import CILIUM_BGP_CLASS
from tests.allocator.test_service_kube import Env
from tests.conformance.cilium.cases import CASES as CILIUM
from tests.conformance.harness import Case
from tests.conformance.metallb.cases import CASES as METALLB
from tests.support.kube import KubeHandle

pytestmark = pytest.mark.kube

CRDS = Path(__file__).resolve().parents[2] / "k8s" / "crds"
PICK = {
    # (cases whose outcome depends on which Service is older are left out: the API server stamps
    # creationTimestamp in whole seconds)
    # Cilium: union of spec.loadBalancerIP and the annotation, a partial result, sharing keys, a reserved
    # first address, namespaces, a BGP-class Service (IPs, nothing published to announce)
    "request-union-spec-and-annotation", "family-require-dual-one-missing", "sharing-key-other-key",
    "first-last-no", "cross-namespace-not-allowed", "bgp-class-served", "remove-requested-ip-after",
    # MetalLB: both families from one pool, the request rules, sharing across namespaces, an existing
    # single-family ingress replaced by a pair
    "ctl-simple-dual-stack-loadbalancer", "ctl-request-two-ips-from-same-ip-family-via-custom-annotation",
    "assign-dual-stack-two-pools", "auto-share-across-namespaces", "pool-prefer-dual-v4-pool",
    "ctl-request-dual-stack-loadbalancer-with-invalid-ingress",
    "ctl-request-ip-from-both-svc-spec-loadbalancerip-and-custom-annotation",
}
CASES = [c for c in CILIUM + METALLB if c.name in PICK]


@pytest.fixture
async def env(redis_url: str, kube: KubeHandle) -> AsyncIterator[Env]:
    kube.apply(CRDS)
    bus = await Bus.connect(redis_url, prefix=f"conf{time.monotonic_ns()}")
    e = Env(kube, bus)
    try:
        yield e
    finally:
        await e.close()


def _load(kube: KubeHandle, case: Case) -> None:
    objs: list[dict[str, Any]] = []
    statuses: list[tuple[str, str, Any]] = []
    namespaces = {"default"}
    for orig in case.objects:
        o = {k: v for k, v in orig.items() if k != "status"}
        meta = dict(o["metadata"])
        meta.pop("creationTimestamp", None)  # the API server sets it, in creation order
        o["metadata"] = meta
        if meta.get("namespace"):
            namespaces.add(meta["namespace"])
        if o["kind"] == "Service":
            if not o["spec"].get("ports"):  # the API server wants a port: one nobody else has
                o["spec"] = {**o["spec"], "ports": [{"port": 10000 + len(objs), "protocol": "TCP"}]}
            cips = o["spec"].get("clusterIPs")
            if cips and not o["spec"].get("ipFamilies"):
                # what a dual-stack API server derives (the embedded one is single-stack and would say IPv4)
                o["spec"] = {**o["spec"], "ipFamilies": ["IPv6" if ":" in c else "IPv4" for c in cips]}
        if o["kind"] == "Namespace":
            namespaces.discard(meta["name"])
        objs.append(o)
    for orig in case.objects:
        if orig["kind"] == "Service" and orig.get("status"):
            statuses.append((orig["metadata"]["namespace"], orig["metadata"]["name"], orig["status"]))
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in sorted(namespaces)] + objs
    kube.apply(yaml.safe_dump_all(docs, sort_keys=False))
    for ns, name, status in statuses:
        code, out, _ = kube.http("PATCH", f"/api/v1/namespaces/{ns}/services/{name}/status", {"status": status},
                                 content_type="application/merge-patch+json")
        assert code == 200, out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case_through_the_allocator_service(env: Env, case: Case) -> None:
    assert len(CASES) == len(PICK)
    _load(env.kube, case)
    want, _ = case.expected("l2lb")
    a = await env.start("conf", leader_election=False, cilium_compat=case.cilium_compat)

    def settled() -> bool:
        return all(env.cond(*key.split("/")) is not None for key, w in want.items() if w.reason != "not_handled")

    deadline = time.monotonic() + 20
    while not settled():
        assert time.monotonic() < deadline, {k: env.cond(*k.split("/")) for k in want}
        await asyncio.sleep(0.05)
    for key, w in want.items():
        ns, name = key.split("/")
        ips = sorted(env.ips(ns, name))
        options = [sorted(w.ips), *(sorted(x) for x in w.alt)]
        assert ips in options, (key, ips, w)
        cond = env.cond(ns, name)
        assert cond is not None
        if w.reason is None:
            assert cond["status"] == "False", (key, cond)
        else:
            assert cond["reason"] == w.reason, (key, cond)
            assert cond["status"] == ("True" if w.reason == "satisfied" else "False"), (key, cond)
    # a Service of Cilium's BGP class gets IPs but nothing to announce: no allocation is published
    for o in case.objects:
        if o["kind"] == "Service" and o["spec"].get("loadBalancerClass") == CILIUM_BGP_CLASS:
            key = f"{o['metadata']['namespace']}/{o['metadata']['name']}"
            assert env.ips(*key.split("/")) and key not in a.svc.published
