"""Watch: event order, resume from a resourceVersion, 410 Gone + relist, bookmarks, selectors."""

from __future__ import annotations

import asyncio

import pytest

from tests.kube_api.helpers import NS, SVC, assert_status, rv, service, watch

pytestmark = pytest.mark.kube
P = SVC.format(ns=NS)
MERGE = "application/merge-patch+json"


def _list_rv(kube, path=P):
    code, lst, _ = kube.http("GET", path)
    assert code == 200
    return lst["metadata"]["resourceVersion"]


async def test_watch_sees_add_modify_delete_in_order(kube):
    start = _list_rv(kube)
    async with watch(kube, P, resourceVersion=start) as w:
        assert w.status == 200
        await asyncio.to_thread(kube.http, "POST", P, service("w1"))
        await asyncio.to_thread(kube.http, "PATCH", P + "/w1", {"metadata": {"labels": {"x": "1"}}},
                                content_type=MERGE)
        await asyncio.to_thread(kube.http, "DELETE", P + "/w1")
        evs = await w.collect(3)
    assert [t for t, _ in evs] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(o["metadata"]["name"] == "w1" for _, o in evs)
    rvs = [rv(o) for _, o in evs]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3 and rvs[0] > int(start)
    assert evs[1][1]["metadata"]["labels"] == {"x": "1"}


async def test_watch_resumes_from_resource_version(kube):
    _, a, _ = kube.http("POST", P, service("r1"))
    kube.http("POST", P, service("r2"))
    kube.http("PATCH", P + "/r1", {"metadata": {"labels": {"v": "2"}}}, content_type=MERGE)
    async with watch(kube, P, resourceVersion=str(rv(a))) as w:
        evs = await w.collect(2)
    assert [(t, o["metadata"]["name"]) for t, o in evs] == [("ADDED", "r2"), ("MODIFIED", "r1")]


async def test_watch_without_resource_version_starts_with_current_state(kube):
    kube.http("POST", P, service("i1"))
    kube.http("POST", P, service("i2"))
    async with watch(kube, P) as w:
        evs = await w.collect(2)
    assert sorted((t, o["metadata"]["name"]) for t, o in evs) == [("ADDED", "i1"), ("ADDED", "i2")]


async def test_too_old_resource_version_is_410_and_relist_recovers(kube):
    kube.require_debug()
    _, a, _ = kube.http("POST", P, service("old"))
    kube.http("PATCH", P + "/old", {"metadata": {"labels": {"v": "2"}}}, content_type=MERGE)
    kube.compact()
    async with watch(kube, P, resourceVersion=str(rv(a))) as w:
        if w.status == 410:  # servers may refuse the watch outright
            assert_status(await w.body(), 410, "Expired")
        else:
            assert w.status == 200
            ev = await w.next_event()
            assert ev is not None and ev[0] == "ERROR"
            assert_status(ev[1], 410, "Expired")
    # relist + watch from the list's resourceVersion works
    start = _list_rv(kube)
    async with watch(kube, P, resourceVersion=start) as w:
        await asyncio.to_thread(kube.http, "POST", P, service("new"))
        evs = await w.collect(1)
    assert [(t, o["metadata"]["name"]) for t, o in evs] == [("ADDED", "new")]


async def test_watch_window_expiry(kube):
    kube.require_debug()
    kube.configure(watch_window=3)
    _, a, _ = kube.http("POST", P, service("win"))
    for i in range(5):
        kube.http("PATCH", P + "/win", {"metadata": {"labels": {"i": str(i)}}}, content_type=MERGE)
    async with watch(kube, P, resourceVersion=str(rv(a))) as w:
        ev = await w.next_event()
    assert ev is not None and ev[0] == "ERROR" and ev[1]["code"] == 410


async def test_bookmarks_carry_current_resource_version(kube):
    kube.require_debug()
    kube.configure(bookmark_interval=0.2)
    start = _list_rv(kube)
    async with watch(kube, P, resourceVersion=start, allowWatchBookmarks="true") as w:
        await asyncio.to_thread(kube.http, "POST", "/api/v1/nodes", {"metadata": {"name": "bm-node"}})
        _, node, _ = await asyncio.to_thread(kube.http, "GET", "/api/v1/nodes/bm-node")
        got = None
        for _ in range(20):
            ev = await w.next_event(timeout=3)
            assert ev is not None
            if ev[0] == "BOOKMARK":
                got = ev[1]
                if int(got["metadata"]["resourceVersion"]) >= rv(node):
                    break
        assert got is not None and got["kind"] == "Service"
        # a bookmark's RV covers changes to other types too, and it is safe to resume from it
        assert int(got["metadata"]["resourceVersion"]) >= rv(node)


async def test_watch_without_bookmarks_gets_none(kube):
    kube.require_debug()
    kube.configure(bookmark_interval=0.1)
    async with watch(kube, P, resourceVersion=_list_rv(kube)) as w:
        with pytest.raises(TimeoutError):
            await w.next_event(timeout=0.6)


async def test_watch_label_selector_transitions(kube):
    start = _list_rv(kube)
    async with watch(kube, P, resourceVersion=start, labelSelector="team=a") as w:
        await asyncio.to_thread(kube.http, "POST", P, service("ls1", labels={"team": "b"}))
        await asyncio.to_thread(kube.http, "PATCH", P + "/ls1", {"metadata": {"labels": {"team": "a"}}},
                                content_type=MERGE)
        await asyncio.to_thread(kube.http, "PATCH", P + "/ls1", {"metadata": {"labels": {"team": "c"}}},
                                content_type=MERGE)
        evs = await w.collect(2)
    assert [t for t, _ in evs] == ["ADDED", "DELETED"]


async def test_watch_field_selector_by_name_and_namespace_scope(kube):
    kube.http("POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    start = _list_rv(kube, "/api/v1/services")
    async with watch(kube, P, resourceVersion=start, fieldSelector="metadata.name=pick") as w:
        await asyncio.to_thread(kube.http, "POST", P, service("skip"))
        await asyncio.to_thread(kube.http, "POST", SVC.format(ns="other"), service("pick", ns="other"))
        await asyncio.to_thread(kube.http, "POST", P, service("pick"))
        evs = await w.collect(1)
        assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for _, o in evs] == [(NS, "pick")]
        with pytest.raises(TimeoutError):
            await w.next_event(timeout=0.3)


async def test_watch_timeout_seconds_ends_stream(kube):
    async with watch(kube, P, resourceVersion=_list_rv(kube), timeoutSeconds="1") as w:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ev = await w.next_event(timeout=10)
        assert ev is None and loop.time() - t0 < 8


async def test_dropped_watch_fault_ends_stream(kube):
    kube.require_debug()
    async with watch(kube, P, resourceVersion=_list_rv(kube)) as w:
        await asyncio.sleep(0.1)
        out = await asyncio.to_thread(kube.inject, drop_watches=True, match="/services")
        assert out["dropped_watches"] >= 1
        assert await w.next_event(timeout=3) is None
