"""Informer against the embedded API server: sync, live events, resume from resourceVersion,
410 Gone after compaction -> relist with synthetic diff events, dropped watches -> reconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from l2lb.adapters.kube.client import KubeClient
from l2lb.adapters.kube.informer import Informer
from tests.kube_client.helpers import SVC, client_for, debug, ensure_namespace, requests_to, service, wait_until

pytestmark = pytest.mark.kube

Event = tuple[str, str, str | None]  # (type, name, old rv)


class Running:
    def __init__(self, inf: Informer):
        self.inf = inf
        self.events: list[Event] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        inf.add_handler(self.on)

    async def on(self, typ: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.events.append((typ, obj["metadata"]["name"], (old or {}).get("metadata", {}).get("resourceVersion")))

    def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.inf.run(self.stop))

    async def halt(self) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def names(self, typ: str) -> set[str]:
        return {n for t, n, _ in self.events if t == typ}


@contextlib.asynccontextmanager
async def informer(kube: Any, ns: str) -> AsyncIterator[tuple[KubeClient, Running]]:
    c = await client_for(kube)
    await ensure_namespace(c, ns)
    r = Running(Informer(c, SVC, ns, name=f"test-{ns}"))
    try:
        yield c, r
    finally:
        if r.task is not None and not r.task.done():
            await r.halt()
        await c.close()


def compact(kube: Any) -> None:
    """Compact the server's watch history (embedded server only; skips on a real one)."""
    if getattr(kube, "kind", "") == "real" or getattr(kube, "embedded", True) is False:
        pytest.skip("compaction on demand needs the embedded API server")
    if hasattr(kube, "compact"):
        kube.compact()
    else:
        debug(kube, "compact")


async def test_sync_and_live_events(kube: Any) -> None:
    async with informer(kube, "inf-live") as (c, r):
        await c.create_object(SVC, service("a", "inf-live"))
        r.start()
        await r.inf.wait_synced(5)
        assert r.inf.synced and set(r.inf.cache) == {"inf-live/a"}
        assert r.events == [("ADDED", "a", None)]
        await c.create_object(SVC, service("b", "inf-live"))
        await c.patch(SVC, "a", {"metadata": {"labels": {"x": "y"}}}, "inf-live")
        await c.delete(SVC, "b", "inf-live")
        await wait_until(lambda: len(r.events) >= 4)
        assert [(t, n) for t, n, _ in r.events] == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert r.inf.cache["inf-live/a"]["metadata"]["labels"] == {"x": "y"}
        assert "inf-live/b" not in r.inf.cache
        assert r.inf.lists == 1
        ok, why = r.inf.readiness()
        assert ok and "1 objects" in why


async def test_resume_from_resource_version_without_relist(kube: Any) -> None:
    async with informer(kube, "inf-resume") as (c, r):
        await c.create_object(SVC, service("a", "inf-resume"))
        await c.create_object(SVC, service("b", "inf-resume"))
        r.start()
        await r.inf.wait_synced(5)
        await r.halt()
        r.events.clear()
        # changes while not watching
        await c.create_object(SVC, service("c", "inf-resume"))
        await c.delete(SVC, "a", "inf-resume")
        kube.clear_requests()
        r.start()
        await wait_until(lambda: len(r.events) >= 2)
        assert [(t, n) for t, n, _ in r.events] == [("ADDED", "c"), ("DELETED", "a")]
        assert r.inf.lists == 1  # resumed, no relist
        assert requests_to(kube, "/namespaces/inf-resume/services", verb="list") == []
        assert set(r.inf.cache) == {"inf-resume/b", "inf-resume/c"}


async def test_410_gone_relists_and_diffs_the_cache(kube: Any) -> None:
    async with informer(kube, "inf-gone") as (c, r):
        for n in ("a", "b", "c"):
            await c.create_object(SVC, service(n, "inf-gone"))
        r.start()
        await r.inf.wait_synced(5)
        await r.halt()
        old_rv_b = r.inf.cache["inf-gone/b"]["metadata"]["resourceVersion"]
        r.events.clear()
        await c.delete(SVC, "a", "inf-gone")
        await c.patch(SVC, "b", {"metadata": {"labels": {"v": "2"}}}, "inf-gone")
        await c.create_object(SVC, service("d", "inf-gone"))
        compact(kube)  # our resourceVersion is now too old
        kube.clear_requests()
        r.start()
        await wait_until(lambda: len(r.events) >= 3)
        assert sorted(r.events) == sorted(
            [("ADDED", "d", None), ("MODIFIED", "b", old_rv_b), ("DELETED", "a", r.events[-1][2])]
        )
        assert ("MODIFIED", "c") not in [(t, n) for t, n, _ in r.events]  # unchanged: no event
        assert r.inf.lists == 2
        assert len(requests_to(kube, "/namespaces/inf-gone/services", verb="list")) == 1
        server = await c.list(SVC, "inf-gone")
        assert set(r.inf.cache) == {f"inf-gone/{i['metadata']['name']}" for i in server["items"]}
        # and it keeps watching after the relist
        await c.create_object(SVC, service("e", "inf-gone"))
        await wait_until(lambda: "e" in r.names("ADDED"))


async def test_dropped_watch_reconnects_from_last_version(kube: Any) -> None:
    async with informer(kube, "inf-drop") as (c, r):
        await c.create_object(SVC, service("a", "inf-drop"))
        r.start()
        await r.inf.wait_synced(5)
        await wait_until(lambda: bool(requests_to(kube, "/namespaces/inf-drop/services", verb="watch")))
        watches_before = r.inf.watches
        kube.inject(drop_watches=True, match="/namespaces/inf-drop/services")
        await wait_until(lambda: r.inf.watches > watches_before)
        await c.create_object(SVC, service("b", "inf-drop"))
        await wait_until(lambda: "b" in r.names("ADDED"))
        assert r.inf.lists == 1
        assert [n for t, n, _ in r.events if t == "ADDED"] == ["a", "b"]


async def test_handler_errors_do_not_stop_the_informer(kube: Any) -> None:
    async with informer(kube, "inf-err") as (c, r):

        def boom(typ: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
            raise RuntimeError("handler bug")

        r.inf._handlers.insert(0, boom)
        r.start()
        await r.inf.wait_synced(5)
        await c.create_object(SVC, service("a", "inf-err"))
        await wait_until(lambda: "a" in r.names("ADDED"))
        assert not r.task.done()  # type: ignore[union-attr]


async def test_server_restart_without_state_relists_and_converges(tmp_path: Any) -> None:
    """The API server comes back empty (no state file): the informer must not keep its old cache."""
    from l2lb.adapters.kube.informer import Informer
    from tests.support.kube import ApiServerProcess

    srv = ApiServerProcess(tmp_path / "srv", bookmark_interval=0.3)
    srv.start()
    c = None
    try:
        c = await client_for(srv.handle)
        c.retry_cap = 0.5
        await ensure_namespace(c, "inf-restart")
        for i in range(5):
            await c.create_object(SVC, service(f"old{i}", "inf-restart"))
        r = Running(Informer(c, SVC, "inf-restart", name="test-restart"))
        r.inf.backoff.cap = 0.5
        r.start()
        await r.inf.wait_synced(5)
        assert len(r.inf.cache) == 5
        srv.stop(kill=True)
        await asyncio.sleep(0.3)
        srv.start()  # same port, no state: resourceVersions start again from 1
        await ensure_namespace(c, "inf-restart")
        await c.create_object(SVC, service("new", "inf-restart"))
        await wait_until(lambda: set(r.inf.cache) == {"inf-restart/new"}, timeout=10)
        assert r.names("DELETED") == {f"old{i}" for i in range(5)}
        assert "new" in r.names("ADDED")
        assert r.inf.lists >= 2
        await r.halt()
    finally:
        if c is not None:
            await c.close()
        srv.stop()
