"""The pictures of the status page, as data: per-VIP holder timeline with move gaps, pool usage history,
their query parameters, and the routes that serve them (against a real Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import EVENT_FIELD
from l2lb.core.view import (
    Part,
    PoolHistory,
    QueryError,
    decode_event,
    encode_event,
    make_event,
    parse_timeline_query,
    vip_timeline,
)

from .conftest import PIHOLE_IP, seed_parts, write_parts

NOW = 1_000_000.0


def assignments(*items: dict[str, Any]) -> Part:
    return Part("assignments", etag="x", at=NOW, items=tuple(items))


def move(at: float, ip: str, frm: str, to: str, gap: float | None = None, type_: str = "move") -> dict[str, Any]:
    return make_event(type_, at, ip=ip, reason="holder_dead", gap_ms=gap, **{"from": frm, "to": to})


def test_segments_follow_the_moves_back_from_now() -> None:
    evs = [move(NOW - 600, "203.0.113.1", "a", "b", 412.4), move(NOW - 300, "203.0.113.1", "b", "", 1200.0,
                                                                 "unassigned"),
           move(NOW - 100, "203.0.113.1", "", "a")]
    t = vip_timeline(reversed(evs), assignments({"ip": "203.0.113.1", "node": "a", "since": NOW - 100,
                                                  "services": ["ns/web"]}), NOW, 3600)
    (v,) = t["items"]
    assert [(s["node"], s["from"], s["to"]) for s in v["segments"]] == [
        ("a", NOW - 3600, NOW - 600), ("b", NOW - 600, NOW - 300), ("", NOW - 300, NOW - 100), ("a", NOW - 100, NOW)]
    assert [m["gap_ms"] for m in v["moves"]] == [412.4, 1200.0, None]
    assert v["services"] == ["ns/web"] and t["nodes"] == ["a", "b"]
    assert t["from"] == NOW - 3600 and t["to"] == NOW


def test_window_order_limit_and_ips_without_moves() -> None:
    parts = assignments({"ip": "203.0.113.9", "node": "c", "since": NOW - 60},
                        {"ip": "203.0.113.2", "node": "c", "since": NOW - 9999},
                        {"ip": "203.0.113.1", "node": "b", "since": NOW - 5})
    evs = [move(NOW - 7200, "203.0.113.1", "x", "y"),  # before the window: ignored
           move(NOW - 5, "203.0.113.1", "a", "b", 30.0), move(NOW - 50, "203.0.113.9", "b", "c", 80.0),
           make_event("conflict", NOW - 1, ip="203.0.113.2", node="c")]  # not a move
    t = vip_timeline(evs, parts, NOW, 3600)
    assert [v["ip"] for v in t["items"]] == ["203.0.113.1", "203.0.113.9", "203.0.113.2"]  # last moved first
    still = t["items"][2]
    assert still["segments"] == [{"node": "c", "from": NOW - 3600, "to": NOW}] and still["moves"] == []
    fresh = vip_timeline([], assignments({"ip": "203.0.113.3", "node": "a", "since": NOW - 60}), NOW, 3600)
    assert fresh["items"][0]["segments"] == [{"node": "a", "from": NOW - 60, "to": NOW}]
    assert vip_timeline(evs, parts, NOW, 3600, limit=1)["items"][0]["ip"] == "203.0.113.1"
    assert vip_timeline(evs, parts, NOW, 3600, limit=1)["total"] == 3
    # a released IP (no current assignment) keeps its history until it ages out of the window
    gone = vip_timeline([move(NOW - 10, "203.0.113.7", "a", "", 5.0, "unassigned")], assignments(), NOW, 3600)
    assert gone["items"][0]["segments"][-1] == {"node": "", "from": NOW - 10, "to": NOW}


def test_gap_survives_the_event_stream_encoding() -> None:
    ev = decode_event("1-0", encode_event(move(NOW, "203.0.113.1", "a", "b", 333.333)))
    assert ev is not None and ev["gap_ms"] == 333.3
    for bad in (-1, "12", True, float("inf")):
        assert "gap_ms" not in make_event("move", NOW, gap_ms=bad)


def test_pool_history_samples_changes_at_once_and_repeats_sparsely() -> None:
    h = PoolHistory(spacing_s=30, max_points=4)
    pool = {"name": "p", "used": 1, "total": 10}
    for dt in (0, 5, 10):  # unchanged within 30 s: one point
        h.add(NOW + dt, [pool])
    h.add(NOW + 11, [{**pool, "used": 2}])  # a change: at once
    h.add(NOW + 45, [{**pool, "used": 2}])  # unchanged, 34 s later: a point
    pts = h.items(NOW + 50, 3600)["items"][0]["points"]
    assert [(p["at"] - NOW, p["used"]) for p in pts] == [(0, 1), (11, 2), (45, 2)]
    assert pts[1]["usage"] == 0.2
    for k in range(10):
        h.add(NOW + 100 + k * 40, [pool])
    assert len(h.items(NOW + 1000, 3600)["items"][0]["points"]) == 4  # bounded
    h.add(NOW + 2000, [{"name": "q", "used": 0, "total": 0}])  # p gone, q with no addresses
    (q,) = h.items(NOW + 2000, 3600)["items"]
    assert q["pool"] == "q" and q["points"][0]["usage"] == 0.0
    # the window keeps the sample just before its start (the usage at its left edge)
    h2 = PoolHistory(spacing_s=1)
    for k in range(5):
        h2.add(NOW + k * 100, [{"name": "p", "used": k, "total": 10}])
    assert [p["used"] for p in h2.items(NOW + 400, 150)["items"][0]["points"]] == [2, 3, 4]


@pytest.mark.parametrize(("query", "message"), [
    ({"window": "59"}, "window: 59 s is out of range"),
    ({"window": "1h"}, "window: '1h' is not a whole number of seconds"),
    ({"limit": "0"}, "limit: 0 is out of range"),
    ({"since": "1"}, "since"),
])
def test_timeline_query_errors_name_the_parameter(query: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_timeline_query(query)
    assert parse_timeline_query({}) == (3600, 50)
    assert parse_timeline_query({"window": "900", "limit": "5"}) == (900, 5)


async def test_routes_serve_timeline_and_history(bus: Bus, serve: Any) -> None:
    import time

    now = time.time()
    await write_parts(bus, seed_parts(now))
    ev = make_event("move", now - 100, ip=PIHOLE_IP, reason="holder_dead", gap_ms=250.0,
                    **{"from": "node-b", "to": "node-a"})
    await bus.redis.xadd(bus.keys.events, {EVENT_FIELD: encode_event(ev)})
    srv = await serve()
    async with srv.session() as s:
        r = await s.get(srv.url + "/v1/timeline?window=600")
        assert r.status == 200
        t = await r.json()
        pihole = next(v for v in t["items"] if v["ip"] == PIHOLE_IP)
        assert [seg["node"] for seg in pihole["segments"]] == ["node-b", "node-a"]
        assert pihole["moves"][0]["gap_ms"] == 250.0
        r = await s.get(srv.url + "/v1/timeline?window=10")
        assert r.status == 400 and "window" in (await r.json())["message"]
        r = await s.get(srv.url + "/v1/pools/history")
        assert r.status == 200
        (pool,) = (await r.json())["items"]
        assert pool["pool"] == "default-pool" and pool["points"][-1]["used"] == 2
        r = await s.get(srv.url + "/v1/pools/history?limit=3")
        assert r.status == 400 and "window" in (await r.json())["message"]
        spec = await (await s.get(srv.url + "/v1/openapi.json")).json()
        assert {"/v1/timeline", "/v1/pools/history"} <= set(spec["paths"])
