"""Shared helpers for the kube client tests (real embedded API server through the `kube` fixture)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError
from l2lb.adapters.kube.ratelimit import TokenBucket

NS = RESOURCES["namespaces"]
SVC = RESOURCES["services"]


async def client_for(kube: Any, *, qps: float = 1000.0, burst: int = 1000) -> KubeClient:
    """A client with its own limiter (tests must not share the process bucket's state)."""
    return await KubeClient.create(kube.kubeconfig, limiter=TokenBucket(qps, burst))


async def ensure_namespace(c: KubeClient, name: str) -> None:
    try:
        await c.create_object(NS, {"metadata": {"name": name}})
    except KubeError as e:
        if not e.conflict:
            raise


def service(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }


def debug(kube: Any, what: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
    """Call the embedded server's /l2lb-debug/ endpoints (compaction, config)."""
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(
        f"{kube.url}/l2lb-debug/{what}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def requests_to(kube: Any, needle: str, verb: str | None = None) -> list[dict[str, Any]]:
    return [r for r in kube.requests() if needle in str(r.get("path", "")) and (verb is None or r.get("verb") == verb)]


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
