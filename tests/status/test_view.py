"""Pure cluster view: tolerant part parsing, strict queries, pagination, validators."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.view import (
    Query,
    QueryError,
    ServiceIndex,
    cluster_summary,
    decode_event,
    encode_event,
    etag_of,
    make_event,
    node_rows,
    parse_events_query,
    parse_part,
    parse_query,
    part_doc,
)

from .conftest import seed_parts, synthetic_services


def parts_of(d: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    return {k: parse_part(k, json.dumps(part_doc(k, v, 1.0))) for k, v in d.items()}


def test_parse_part_is_tolerant() -> None:
    assert parse_part("services", None).etag == ""
    p = parse_part("services", b"{not json")
    assert p.errors and "not JSON" in p.errors[0] and p.items == ()
    p = parse_part("services", json.dumps({"v": 1, "items": "x"}))
    assert p.errors and p.items == ()
    p = parse_part("services", json.dumps({"items": []}))
    assert p.errors and "version" in p.errors[0]
    doc = part_doc("services", [{"key": "a/b", "ips": ["198.51.100.1", 7]}, 3, {"name": "no-key"}], 5.0)  # type: ignore[list-item]
    p = parse_part("services", json.dumps(doc))
    assert len(p.items) == 1 and p.items[0]["ips"] == ["198.51.100.1"] and p.items[0]["namespace"] == "a"
    assert p.errors == ("part services: 2 malformed item(s) dropped",) and p.at == 5.0
    assert parse_part("nope", b"{}").errors


def test_pagination_visits_every_service_once() -> None:
    ps = parts_of(synthetic_services(2500))
    idx = ServiceIndex.build(ps["services"], ps["assignments"])  # type: ignore[arg-type]
    q = parse_query({"limit": "700"})
    keys: list[str] = []
    while True:
        items, tok, total = idx.page(q)
        assert total == 2500
        keys += [i["key"] for i in items]
        if tok is None:
            break
        q = parse_query({"limit": "700", "continue": tok})
    assert keys == sorted(keys) and len(set(keys)) == 2500


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 60), limit=st.integers(1, 25), ns=st.sampled_from([None, "ns1", "ns7"]),
       node=st.sampled_from([None, "node-0", "node-2"]))
def test_filtered_pagination_matches_a_plain_filter(n: int, limit: int, ns: str | None, node: str | None) -> None:
    ps = parts_of(synthetic_services(n))
    idx = ServiceIndex.build(ps["services"], ps["assignments"])  # type: ignore[arg-type]
    params = {k: v for k, v in (("namespace", ns), ("node", node)) if v} | {"limit": str(limit)}
    want = [r["key"] for r in idx.rows if (ns is None or r["namespace"] == ns) and (node is None or node in r["nodes"])]
    got: list[str] = []
    q = parse_query(params)
    for _ in range(200):
        items, tok, total = idx.page(q)
        assert total == len(want)
        got += [i["key"] for i in items]
        if tok is None:
            break
        q = parse_query(params | {"continue": tok})
    assert got == want


def test_query_errors_name_the_parameter() -> None:
    for params, needle in (({"limit": "1e3"}, "limit"), ({"node": "a b"}, "node"), ({"ip": "x"}, "ip"),
                           ({"zzz": "1"}, "unknown"), ({"continue": "AAAA"}, "continue")):
        with pytest.raises(QueryError, match=needle):
            parse_query(params)
    assert parse_query({"ip": "2001:DB8::1"}).ip == "2001:db8::1"
    assert parse_events_query({"type": "move", "limit": "5"}) == (5, "move")
    with pytest.raises(QueryError, match="type"):
        parse_events_query({"type": "bogus"})


def test_join_summary_and_node_age() -> None:
    ps = parts_of(seed_parts(now=1000.0))
    idx = ServiceIndex.build(ps["services"], ps["assignments"])  # type: ignore[arg-type]
    row = next(r for r in idx.rows if r["key"] == "pihole/pihole-dns-udp")
    assert row["ips"][0] == {"ip": "198.51.100.153", "pool": "default-pool", "node": "node-a", "epoch": 3,
                             "since": 970.0, "moves": 0}
    s = cluster_summary(idx, ps, 1001.0)  # type: ignore[arg-type]
    assert s["ips"] == {"allocated": 2, "announced": 2, "moves": 1}
    assert s["parts"]["pools"]["age_s"] == 1000.0
    nodes = node_rows(ps["nodes"], 1001.0)  # type: ignore[arg-type]
    assert [n["heartbeat_age_s"] for n in nodes] == [1.1, 1.2] and nodes[0]["links_up"] == 1


def test_etag_depends_on_every_input() -> None:
    a = etag_of("services", "e1", "e2", Query().canonical())
    assert a == etag_of("services", "e1", "e2", Query().canonical())
    assert a != etag_of("services", "e1", "e3", Query().canonical())
    assert a != etag_of("services", "e1", "e2", Query(limit=3).canonical())


def test_events_roundtrip() -> None:
    ev = make_event("move", 12.5, ip="198.51.100.153", **{"from": "a", "to": "b"})
    back = decode_event("1-0", encode_event(ev))
    assert back is not None and back["to"] == "b" and back["id"] == "1-0" and back["service"] == ""
    assert decode_event("1-1", b"[]") is None and decode_event("1-2", b"{") is None
