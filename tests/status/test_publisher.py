"""StatusPublisher against a real Redis: coalescing, change detection, retry after an outage."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import ClusterSource, StatusPublisher, publish_event


async def test_updates_coalesce_to_at_most_one_write_per_interval(bus: Bus) -> None:
    pub = StatusPublisher(bus, "pools", min_interval=0.5)
    for i in range(50):
        pub.update({"items": [{"name": f"p{i}", "total": i}]})
        await asyncio.sleep(0.01)  # 50 updates over ~0.5 s
    await asyncio.sleep(0.7)
    assert 1 <= pub.writes <= 3, pub.writes
    raw = await bus.redis.get(bus.keys.status("pools"))
    assert json.loads(raw or b"{}")["items"] == [{"name": "p49", "total": 49}]
    assert (await bus.redis.hget(bus.keys.status_index, "pools")) is not None
    await pub.close()


async def test_unchanged_document_is_not_rewritten(bus: Bus) -> None:
    pub = StatusPublisher(bus, "nodes", min_interval=0.0)
    doc = {"items": [{"node": "n1", "alive": True}]}
    pub.update(doc)
    await asyncio.sleep(0.1)
    pub.update(dict(doc))
    await asyncio.sleep(0.1)
    assert pub.writes == 1
    pub.update({"items": [{"node": "n1", "alive": False}]})
    await asyncio.sleep(0.1)
    assert pub.writes == 2
    await pub.close()


async def test_bad_input_is_refused_clearly(bus: Bus) -> None:
    with pytest.raises(ValueError, match="unknown status part"):
        StatusPublisher(bus, "whatever")
    pub = StatusPublisher(bus, "services")
    with pytest.raises(ValueError, match="items"):
        pub.update({"services": []})


async def test_source_sees_only_changed_parts(bus: Bus) -> None:
    src = ClusterSource(bus)
    assert await src.refresh() == []
    pub = StatusPublisher(bus, "services", min_interval=0.0)
    pub.update({"items": [{"key": "a/b", "ips": ["198.51.100.7"]}]})
    await pub.close()
    assert await src.refresh() == ["services"]
    assert await src.refresh() == []
    assert src.parts["services"].items[0]["key"] == "a/b"
    assert await src.new_events() == []
    await publish_event(bus, "conflict", ip="198.51.100.7", node="n1")
    evs = await src.new_events()
    assert [e["type"] for e in evs] == ["conflict"]
    assert [e["type"] for e in await src.events(10)] == ["conflict"]


async def test_write_retried_after_redis_outage(bus: Bus, redis_server: Any) -> None:
    pub = StatusPublisher(bus, "assignments", min_interval=0.0, retry_after=0.2)
    await bus.redis.connection_pool.disconnect()
    redis_server.stop()
    try:
        pub.update({"items": [{"ip": "198.51.100.9", "node": "n2"}]})
        await asyncio.sleep(0.3)
        assert pub.writes == 0
    finally:
        redis_server.start()
    for _ in range(50):
        if pub.writes:
            break
        await asyncio.sleep(0.1)
    assert pub.writes == 1
    raw = await bus.redis.get(bus.keys.status("assignments"))
    assert json.loads(raw or b"{}")["items"][0]["node"] == "n2"
    await pub.close()


async def test_event_sink_from_sync_code(bus: Bus) -> None:
    from l2lb.adapters.bus.status import EventSink

    sink = EventSink(bus, max_pending=3)
    for i in range(5):  # synchronous calls, as from leases' _record_move
        sink.emit("move", ip=f"198.51.100.{i}", **{"from": "a", "to": "b"})
    assert sink.dropped == 2
    await sink.close()
    src = ClusterSource(bus)
    evs = await src.events(10)
    assert [e["ip"] for e in evs] == ["198.51.100.2", "198.51.100.1", "198.51.100.0"]


async def test_status_parts_facade(bus: Bus) -> None:
    from l2lb.adapters.bus.status import StatusParts

    sp = StatusParts(bus, ("assignments", "nodes"), min_interval=0.0)
    sp.update("assignments", [{"ip": "198.51.100.153", "node": "node-a", "epoch": 1}])
    sp.update("nodes", [{"node": "node-a", "alive": True}])
    sp.emit("move", ip="198.51.100.153", **{"from": "node-b", "to": "node-a"})
    await sp.close()
    src = ClusterSource(bus)
    assert sorted(await src.refresh()) == ["assignments", "nodes"]
    assert src.parts["assignments"].items[0]["node"] == "node-a"
    assert [e["to"] for e in await src.events(5)] == ["node-a"]
    with pytest.raises(KeyError):
        sp.update("services", [])  # not one of this service's parts


async def test_lazy_builder_runs_once_per_write(bus: Bus) -> None:
    calls = 0
    state = {"n": 0}

    def build() -> list[dict[str, object]]:
        nonlocal calls
        calls += 1
        return [{"name": "p", "total": state["n"]}]

    pub = StatusPublisher(bus, "pools", min_interval=0.3)
    for i in range(30):  # 30 changes within ~0.3 s
        state["n"] = i
        pub.update(build)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    assert calls == pub.writes and 1 <= calls <= 3
    raw = await bus.redis.get(bus.keys.status("pools"))
    assert json.loads(raw or b"{}")["items"] == [{"name": "p", "total": 29}]  # built from the latest state

    def broken() -> list[dict[str, object]]:
        raise RuntimeError("bug in a builder")
    pub.update(broken)  # logged, nothing written, the publisher keeps working
    await asyncio.sleep(0.5)
    state["n"] = 99
    pub.update(build)
    await pub.close()
    assert json.loads(await bus.redis.get(bus.keys.status("pools")) or b"{}")["items"][0]["total"] == 99
