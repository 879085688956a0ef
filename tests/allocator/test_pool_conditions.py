"""Pools in ``kubectl get``/``describe`` (the real kubectl, on the embedded API server and on a real
kube-apiserver): an invalid pool gets a ``<prefix>/PoolInvalid`` condition (reason and the error) with
zero counters, shown in the Invalid column; a /64's counters read "2^64"/"1.8e19", not 20 digits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.kube.client import KubeClient
from l2lb.core.allocator import Allocator
from l2lb.core.parse import parse_pool
from l2lb.core.view import size_text
from services.allocator.service import AllocatorConfig, AllocatorService, invalid_reason

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
CILIUM = "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools"
OWN = "/apis/l2lb.io/v1alpha1/loadbalancerippools"
V6_POOL = "apiVersion: l2lb.io/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: v6}\nspec:\n  blocks:\n" \
    "  - {cidr: '2001:db8:53::/64'}\n"


async def _until(cond: Callable[[], Any], within: float) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within} s")


def _conds(kube: Any, path: str) -> dict[str, dict[str, Any]]:
    code, obj, _ = kube.http("GET", path)
    assert code == 200, obj
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _kubectl_row(out: str) -> dict[str, str]:
    """The first row of ``kubectl get`` by column (cells may be blank: columns are cut at the headers)."""
    head, row = out.splitlines()[:2]
    starts = [i for i, ch in enumerate(head) if ch != " " and (i == 0 or head[i - 1] == " ")]
    ends = [*starts[1:], max(len(row), len(head))]
    return {head[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def test_invalid_reason() -> None:
    assert invalid_reason("spec.blocks[0].cidr: invalid CIDR '300.1.1.0/24': bad") == "invalid_cidr"
    assert invalid_reason("spec.blocks[0].start: invalid range: 198.51.100.9 is after stop") == "invalid_range"
    assert invalid_reason("pool name 'x' is already used by IPAddressPool/x") == "name_conflict"
    assert invalid_reason("spec: missing or not an object") == "invalid_spec"


async def test_invalid_pools_get_a_condition_and_kubectl_shows_why(kube_any: Any, redis_url: str) -> None:
    real = not kube_any.embedded
    kube_any.apply(ROOT / "k8s" / "crds")
    kube_any.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: l2lb-system}\n")
    bad_cidr = ("apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: bad-cidr}\n"
                "spec:\n  blocks:\n  - {cidr: 300.1.1.0/24}\n")
    if real:
        # the real server checks the CRD's format: cidr itself: the user gets the error from kubectl apply
        cp = kube_any.kubectl("apply", "-f", "-", input=bad_cidr, check=False)
        assert cp.returncode != 0 and "cidr" in cp.stderr, cp.stderr
    else:
        kube_any.apply(bad_cidr)
    kube_any.apply("apiVersion: l2lb.io/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: reversed}\n"
                   "spec:\n  blocks:\n  - {start: 198.51.100.9, stop: 198.51.100.1}\n")
    kube_any.apply("apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: good}\n"
                   "spec:\n  blocks:\n  - {start: 203.0.113.1, stop: 203.0.113.16}\n")
    kube_any.apply(V6_POOL)
    bus = await Bus.connect(redis_url, prefix=f"pc{time.monotonic_ns()}")
    client = await KubeClient.create(kube_any.kubeconfig, qps=50, burst=100)
    svc = AllocatorService(AllocatorConfig(instance="pc", leader_election=False, pool_status_interval=0.2),
                           bus, client)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        rev = await _until(lambda: _conds(kube_any, f"{OWN}/reversed").get("l2lb.io/PoolInvalid"), 20)
        assert rev["status"] == "True" and rev["reason"] == "invalid_range", rev
        assert "is after stop" in rev["message"] and rev["message"].startswith("spec.blocks[0].start")
        conds = _conds(kube_any, f"{OWN}/reversed")
        assert {t: conds[t]["message"] for t in ("l2lb.io/IPsTotal", "l2lb.io/IPsAvailable", "l2lb.io/IPsUsed")} \
            == {"l2lb.io/IPsTotal": "0", "l2lb.io/IPsAvailable": "0", "l2lb.io/IPsUsed": "0"}
        good = await _until(lambda: _conds(kube_any, f"{CILIUM}/good").get("cilium.io/IPsAvailable"), 20)
        assert good["message"] == "16"
        assert "cilium.io/PoolInvalid" not in _conds(kube_any, f"{CILIUM}/good")  # no noise on a fine pool

        # a /64 reads as a person reads it, in the condition and in kubectl get
        alloc = Allocator()
        alloc.upsert_pool(parse_pool(yaml.safe_load(V6_POOL)))
        u = alloc.pool_usage()["v6"]
        want = {"l2lb.io/IPsTotal": size_text(u.total), "l2lb.io/IPsAvailable": size_text(u.available),
                "l2lb.io/IPsUsed": "0"}
        assert want["l2lb.io/IPsTotal"] in ("2^64", "1.8e19")
        v6 = await _until(lambda: (c := _conds(kube_any, f"{OWN}/v6")).get("l2lb.io/IPsTotal") and c, 20)
        assert {t: v6[t]["message"] for t in want} == want
        cols = _kubectl_row(kube_any.kubectl("get", "loadbalancerippools.l2lb.io", "v6").stdout)
        assert (cols["USED"], cols["AVAILABLE"], cols["INVALID"]) == ("0", want["l2lb.io/IPsAvailable"], "")

        out = kube_any.kubectl("get", "loadbalancerippools.l2lb.io", "reversed").stdout
        cols = _kubectl_row(out)
        assert (cols["NAME"], cols["USED"], cols["AVAILABLE"], cols["CONFLICT"]) == ("reversed", "0", "0", "False")
        assert cols["INVALID"] == "spec.blocks[0].start: invalid range: start 198.51.100.9 is after stop 198.51.100.1"
        desc = kube_any.kubectl("describe", "loadbalancerippools.l2lb.io", "reversed").stdout
        assert "l2lb.io/PoolInvalid" in desc and "invalid_range" in desc and "is after stop" in desc, desc
        if not real:
            bad = await _until(lambda: _conds(kube_any, f"{CILIUM}/bad-cidr").get("cilium.io/PoolInvalid"), 20)
            assert bad["status"] == "True" and bad["reason"] == "invalid_cidr" and "300.1.1.0/24" in bad["message"]
            out = kube_any.kubectl("get", "ciliumloadbalancerippools.cilium.io", "bad-cidr").stdout
            assert "invalid CIDR '300.1.1.0/24'" in out, out

        # fixed: the condition turns False (resolved) and the counters are the pool's again
        kube_any.apply("apiVersion: l2lb.io/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: reversed}\n"
                       "spec:\n  blocks:\n  - {start: 198.51.100.1, stop: 198.51.100.9}\n")
        fixed = await _until(lambda: (c := _conds(kube_any, f"{OWN}/reversed"))["l2lb.io/PoolInvalid"]["status"]
                             == "False" and c, 20)
        assert fixed["l2lb.io/PoolInvalid"]["reason"] == "resolved" and fixed["l2lb.io/PoolInvalid"]["message"] == ""
        assert fixed["l2lb.io/IPsTotal"]["message"] == "9"
        out = kube_any.kubectl("get", "loadbalancerippools.l2lb.io", "reversed").stdout
        assert "is after stop" not in out, out
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await client.close()
        await bus.close()
