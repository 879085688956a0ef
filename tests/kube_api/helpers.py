"""Helpers for the API behaviour suite: object builders and an aiohttp watch reader.

Everything here speaks plain HTTP to ``kube.url`` so the suite runs against the embedded server and,
parametrized, against a real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

NS = "kapi"  # the suite's namespace (a real server has its own Service "kubernetes" in "default")
SVC = "/api/v1/namespaces/{ns}/services"


def service(name: str, ns: str = NS, *, labels: dict[str, str] | None = None, port: int = 80,
            lb: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"type": "LoadBalancer" if lb else "ClusterIP", "selector": {"app": name},
                 "ports": [{"name": "p", "port": port, "protocol": "TCP"}]},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def assert_status(body: Any, code: int, reason: str | None = None) -> None:
    """A Kubernetes ``Status`` object with this code (and reason)."""
    assert isinstance(body, dict), body
    assert body.get("kind") == "Status", body
    assert body.get("status") == "Failure", body
    assert body.get("code") == code, body
    if reason is not None:
        assert body.get("reason") == reason, body
    assert body.get("message"), body


class WatchStream:
    """An open watch: ``await next_event()`` returns (type, object) or None when the server ended it."""

    def __init__(self, url: str, params: dict[str, str], extra: dict[str, Any] | None = None):
        self.url = url
        self.params = params
        self.extra = extra or {}
        self.status = 0
        self._session: aiohttp.ClientSession | None = None
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> WatchStream:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        self._resp = await self._session.get(self.url, params={"watch": "true", **self.params}, **self.extra)
        self.status = self._resp.status
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._resp is not None:
            conn = self._resp.connection
            tr = conn.transport if conn is not None else None
            if tr is not None:
                tr.abort()  # a TLS transport would otherwise close asynchronously, after the test
            self._resp.close()
        if self._session is not None:
            await self._session.close()

    async def body(self) -> Any:
        assert self._resp is not None
        return json.loads(await self._resp.read())

    async def next_event(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]] | None:
        assert self._resp is not None
        line = await asyncio.wait_for(self._resp.content.readline(), timeout)
        if not line:
            return None
        ev = json.loads(line)
        return ev["type"], ev["object"]

    async def collect(self, n: int, timeout: float = 5.0, skip_bookmarks: bool = True
                      ) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < n:
            ev = await self.next_event(max(0.01, deadline - loop.time()))
            if ev is None:
                break
            if skip_bookmarks and ev[0] == "BOOKMARK":
                continue
            out.append(ev)
        return out


def watch(kube: Any, path: str, **params: str) -> WatchStream:
    return WatchStream(kube.url + path, params, kube.aiohttp_kwargs())
