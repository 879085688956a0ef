"""Status patches only on change, 409 read-modify-write retry, conditions, and Events with
dedup/aggregation/spam filter -- all checked on the embedded API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from l2lb.adapters.kube.client import RESOURCES
from l2lb.adapters.kube.events import EventRecorder
from l2lb.adapters.kube.writes import (
    merge_patch_diff,
    patch_status_if_changed,
    set_condition,
    update_with_retry,
)
from tests.kube_client.helpers import SVC, client_for, ensure_namespace, requests_to, service

EVENTS = RESOURCES["events"]


def test_merge_patch_diff() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2], "gone": True}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "l": [1], "added": "x"}
    assert merge_patch_diff(old, new) == {"b": {"d": 4}, "l": [1], "gone": None, "added": "x"}
    assert merge_patch_diff(new, new) == {}


def test_set_condition_keeps_transition_time() -> None:
    t1 = datetime(2026, 1, 1, tzinfo=UTC)
    t2 = t1 + timedelta(minutes=5)
    conds = set_condition(None, "l2lb.io/IPAllocated", "True", "satisfied", "ok", now=t1)
    again = set_condition(conds, "l2lb.io/IPAllocated", "True", "satisfied", "ok", now=t2)
    assert again == conds  # nothing moved
    flipped = set_condition(conds, "l2lb.io/IPAllocated", "False", "out_of_ips", "pool full", now=t2)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z" and flipped[0]["reason"] == "out_of_ips"
    other = set_condition(flipped, "l2lb.io/Announced", "True", "announced", "node-a", now=t2)
    assert [c["type"] for c in other] == ["l2lb.io/IPAllocated", "l2lb.io/Announced"]


@pytest.mark.kube
async def test_status_patched_only_when_changed(kube: Any) -> None:
    c = await client_for(kube)
    try:
        await ensure_namespace(c, "w-status")
        svc = await c.create_object(SVC, service("web", "w-status"))
        kube.clear_requests()
        conds = set_condition(None, "l2lb.io/IPAllocated", "True", "satisfied", "198.51.100.10 from pool p")
        want = {"loadBalancer": {"ingress": [{"ip": "198.51.100.10", "ipMode": "VIP"}]}, "conditions": conds}
        assert await patch_status_if_changed(c, SVC, svc, want) is True
        assert await patch_status_if_changed(c, SVC, svc, want) is False  # same again: no request
        same_again = set_condition(conds, "l2lb.io/IPAllocated", "True", "satisfied", "198.51.100.10 from pool p")
        fresh = await c.get(SVC, "web", "w-status")
        assert await patch_status_if_changed(c, SVC, fresh, {**want, "conditions": same_again}) is False
        assert len(requests_to(kube, "/namespaces/w-status/services/web/status", verb="patch")) == 1
        assert fresh["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.51.100.10"
        # a key dropped from the desired status is removed on the server
        assert await patch_status_if_changed(c, SVC, fresh, {"loadBalancer": {}}) is True
        after = await c.get(SVC, "web", "w-status")
        assert not (after.get("status") or {}).get("conditions")
        assert not ((after.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    finally:
        await c.close()


@pytest.mark.kube
async def test_update_with_retry_survives_a_conflict(kube: Any) -> None:
    c, other = await client_for(kube), await client_for(kube)
    try:
        await ensure_namespace(c, "w-409")
        await c.create_object(SVC, service("web", "w-409"))
        calls = 0

        async def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            obj["metadata"].setdefault("annotations", {})["count"] = str(calls)
            if calls == 1:  # another writer changes the Service between our GET and our PUT
                await other.patch(SVC, "web", {"metadata": {"labels": {"other": "writer"}}}, "w-409")
            return obj

        kube.clear_requests()
        out = await update_with_retry(c, SVC, "web", mutate, "w-409")
        assert out is not None and calls == 2
        codes = [r["code"] for r in requests_to(kube, "/namespaces/w-409/services/web", verb="update")]
        assert codes == [409, 200]
        final = await c.get(SVC, "web", "w-409")
        assert final["metadata"]["annotations"]["count"] == "2"
        assert final["metadata"]["labels"]["other"] == "writer"  # the other writer's change survived
        # a mutate that changes nothing writes nothing
        assert await update_with_retry(c, SVC, "web", lambda o: o, "w-409") is None
    finally:
        await c.close()
        await other.close()


async def _events(c: Any, ns: str) -> list[dict[str, Any]]:
    return list((await c.list(EVENTS, ns))["items"])


@pytest.mark.kube
async def test_events_dedup_count_and_aggregate(kube: Any) -> None:
    c = await client_for(kube)
    try:
        await ensure_namespace(c, "w-ev")
        svc = await c.create_object(SVC, service("web", "w-ev"))
        rec = EventRecorder(c, "l2lb-allocator", host="test-host", aggregate_max=3)
        kube.clear_requests()
        for _ in range(3):
            await rec.event(svc, "Warning", "AllocationFailed", "no pool matches")
        evs = await _events(c, "w-ev")
        assert len(evs) == 1
        ev = evs[0]
        assert ev["count"] == 3 and ev["type"] == "Warning" and ev["reason"] == "AllocationFailed"
        assert ev["involvedObject"]["name"] == "web" and ev["involvedObject"]["kind"] == "Service"
        assert ev["involvedObject"]["uid"] == svc["metadata"]["uid"]
        assert ev["source"]["component"] == "l2lb-allocator"
        assert len(requests_to(kube, "/namespaces/w-ev/events", verb="create")) == 1
        assert len(requests_to(kube, "/namespaces/w-ev/events/", verb="patch")) == 2
        # different messages: separate events until the aggregate limit, then one combined event
        for i in range(5):
            await rec.event(svc, "Warning", "AllocationFailed", f"message {i}")
        evs = await _events(c, "w-ev")
        combined = [e for e in evs if e["message"].startswith("(combined from similar events): ")]
        assert len(combined) == 1 and combined[0]["count"] == 3
        assert len(evs) == 1 + 2 + 1  # first, "message 0", "message 1", combined
        # a Normal event of another reason is separate
        await rec.event(svc, "Normal", "IPAllocated", "198.51.100.10")
        assert any(e["reason"] == "IPAllocated" for e in await _events(c, "w-ev"))
    finally:
        await c.close()


@pytest.mark.kube
async def test_events_spam_filter_and_api_errors_are_not_raised(kube: Any) -> None:
    c = await client_for(kube)
    try:
        await ensure_namespace(c, "w-spam")
        svc = await c.create_object(SVC, service("web", "w-spam"))
        rec = EventRecorder(c, "l2lb-test", spam_burst=3, aggregate_max=100)
        for i in range(6):
            await rec.event(svc, "Normal", "Tick", f"tick {i}")
        assert len(await _events(c, "w-spam")) == 3
        other = await c.create_object(SVC, service("other", "w-spam"))
        kube.inject(status=500, count=1, match="/namespaces/w-spam/events")
        await rec.event(other, "Normal", "Tick", "lost")  # logged, not raised
        assert len(await _events(c, "w-spam")) == 3
        await rec.event({"kind": "Service", "metadata": {}}, "Normal", "X", "no name")  # dropped, not raised
    finally:
        await c.close()
