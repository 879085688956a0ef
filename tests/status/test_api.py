"""The cluster API against a real Redis: schema, ETag/304, 400s, 401, pagination, SSE."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from yarl import URL

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import publish_event

from .conftest import PIHOLE_IP, Served, seed_parts, synthetic_services, write_parts


def validator_for(openapi: dict[str, Any], path: str, code: str = "200") -> Draft202012Validator:
    """A JSON Schema validator of the response ``code`` of GET ``path`` in the served document."""
    schema = openapi["paths"][path]["get"]["responses"][code]["content"]["application/json"]["schema"]
    registry: Registry[Any] = Registry().with_resource("urn:openapi", Resource.from_contents(
        openapi, default_specification=__import__("referencing.jsonschema").jsonschema.DRAFT202012))
    ref = schema["$ref"].replace("#/", "urn:openapi#/")
    return Draft202012Validator({"$ref": ref}, registry=registry)


async def get_json(s: aiohttp.ClientSession, url: str) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with s.get(url) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_responses_validate_against_served_openapi(bus: Bus, serve: Any) -> None:
    await write_parts(bus, seed_parts())
    await publish_event(bus, "move", ip=PIHOLE_IP, **{"from": "node-b", "to": "node-a"}, service="pihole/pihole-web")
    srv: Served = await serve()
    async with srv.session() as s:
        code, doc, _ = await get_json(s, srv.url + "/v1/openapi.json")
        assert code == 200 and doc["openapi"].startswith("3.1")
        validate_spec(doc)  # a valid OpenAPI 3.1 document
        Draft202012Validator.check_schema(doc["components"]["schemas"]["Service"])
        for path, url in (("/v1/services", ""), ("/v1/pools", ""), ("/v1/nodes", ""), ("/v1/events", ""),
                          ("/v1/cluster", ""), ("/v1/services/{namespace}/{name}", "/v1/services/pihole/pihole-web")):
            code, body, _ = await get_json(s, srv.url + (url or path))
            assert code == 200, (path, body)
            errors = list(validator_for(doc, path).iter_errors(body))
            assert not errors, (path, [e.message for e in errors])
        # the validator really checks: a broken answer is refused
        bad = {"items": [{"key": 1}], "continue": None, "total": 1, "limit": 500}
        assert list(validator_for(doc, "/v1/services").iter_errors(bad))
        # and a 400 answer validates against the Error schema
        code, body, _ = await get_json(s, srv.url + "/v1/services?limit=abc")
        assert code == 400
        assert not list(validator_for(doc, "/v1/services", "400").iter_errors(body))


async def test_services_join_assignments(bus: Bus, serve: Any) -> None:
    await write_parts(bus, seed_parts())
    srv = await serve()
    async with srv.session() as s:
        _, body, _ = await get_json(s, srv.url + "/v1/services?namespace=pihole")
        keys = [i["key"] for i in body["items"]]
        assert keys == ["pihole/pihole-dns-tcp", "pihole/pihole-dns-udp", "pihole/pihole-web"]
        dns = body["items"][0]
        assert dns["ips"][0]["ip"] == PIHOLE_IP and dns["ips"][0]["node"] == "node-a"
        assert dns["ips"][0]["pool"] == "default-pool" and dns["ready"] is True
        _, body, _ = await get_json(s, srv.url + "/v1/services?node=node-b")
        assert [i["key"] for i in body["items"]] == ["pihole/pihole-web"]
        _, body, _ = await get_json(s, srv.url + f"/v1/services?ip={PIHOLE_IP}")
        assert body["total"] == 2
        _, body, _ = await get_json(s, srv.url + "/v1/services?namespace=other")
        assert body["items"][0]["ready"] is False and body["items"][0]["reason"] == "no_pool"
        code, one, _ = await get_json(s, srv.url + "/v1/services/pihole/pihole-dns-udp")
        assert code == 200 and one["ports"] == [{"protocol": "UDP", "port": 53}] and one["nodes"] == ["node-a"]
        code, body, _ = await get_json(s, srv.url + "/v1/services/pihole/nope")
        assert code == 404 and "pihole/nope" in body["message"]
        code, body, _ = await get_json(s, srv.url + "/v1/services/Bad_NS/x")
        assert code == 400 and "namespace" in body["message"]
        _, c, _ = await get_json(s, srv.url + "/v1/cluster")
        assert c["services"] == {"total": 4, "ready": 3, "failing": 1}
        assert c["nodes"]["alive"] == 2 and c["ips"]["moves"] == 1
        _, nodes, _ = await get_json(s, srv.url + "/v1/nodes")
        assert nodes["items"][0]["node"] == "node-a" and 0 <= nodes["items"][0]["heartbeat_age_s"] < 30


async def test_etag_and_304(bus: Bus, serve: Any) -> None:
    await write_parts(bus, seed_parts())
    srv = await serve()
    async with srv.session() as s:
        for path in ("/v1/services?limit=2", "/v1/pools", "/v1/nodes", "/v1/cluster", "/v1/openapi.json"):
            async with s.get(srv.url + path) as r:
                assert r.status == 200
                tag = r.headers["ETag"]
                assert tag.startswith('W/"')
            async with s.get(srv.url + path, headers={"If-None-Match": tag}) as r:
                assert r.status == 304, path
            async with s.get(srv.url + path, headers={"If-None-Match": 'W/"other"'}) as r:
                assert r.status == 200
        async with s.get(srv.url + "/v1/services?limit=2") as r:
            tag = r.headers["ETag"]
        # another query has another validator
        async with s.get(srv.url + "/v1/services?limit=3", headers={"If-None-Match": tag}) as r:
            assert r.status == 200
        # a change of the assignments part (failover) changes the validator
        parts = seed_parts(node="node-b")
        await write_parts(bus, {"assignments": parts["assignments"]})
        await asyncio.sleep(0.3)  # the source re-reads parts older than 250 ms
        async with s.get(srv.url + "/v1/services?limit=2", headers={"If-None-Match": tag}) as r:
            assert r.status == 200
            body = await r.json()
            assert body["items"][1]["key"] == "pihole/pihole-dns-tcp"
            assert body["items"][1]["ips"][0]["node"] == "node-b"


@pytest.mark.parametrize(("query", "needle"), [
    ("limit=abc", "limit"), ("limit=0", "limit"), ("limit=999999", "limit"), ("limit=-1", "limit"),
    ("node=Bad_Node", "node"), ("namespace=" + "a" * 64, "namespace"), ("namespace=UPPER", "namespace"),
    ("continue=garbage!", "continue"), ("continue=e30", "continue"), ("ip=300.1.1.1", "ip"),
    ("pool=x%20y", "pool"), ("bogus=1", "bogus"), ("limit=1&limit=2", "more than once"),
])
async def test_bad_params_are_400(bus: Bus, serve: Any, query: str, needle: str) -> None:
    await write_parts(bus, seed_parts())
    srv = await serve()
    async with srv.session() as s:
        code, body, _ = await get_json(s, srv.url + "/v1/services?" + query)
        assert code == 400, body
        assert body["error"] == "bad_request" and needle in body["message"]


async def test_bad_params_other_routes(bus: Bus, serve: Any) -> None:
    srv = await serve()
    async with srv.session() as s:
        for path, needle in (("/v1/events?type=nope", "type"), ("/v1/events?limit=5000", "limit"),
                             ("/v1/pools?x=1", "x"), ("/v1/watch?x=1", "x")):
            code, body, _ = await get_json(s, srv.url + path)
            assert code == 400 and needle in body["message"], (path, body)


async def test_continue_token_of_other_filters_is_400(bus: Bus, serve: Any) -> None:
    await write_parts(bus, synthetic_services(30))
    srv = await serve()
    async with srv.session() as s:
        _, body, _ = await get_json(s, srv.url + "/v1/services?namespace=ns1&limit=1")
        tok = body["continue"]
        assert tok
        code, body, _ = await get_json(s, srv.url + f"/v1/services?namespace=ns2&limit=1&continue={tok}")
        assert code == 400 and "other filters" in body["message"]


async def test_token_required(bus: Bus, serve: Any) -> None:
    await write_parts(bus, seed_parts())
    srv = await serve(token="s3cret")
    async with srv.session() as s:
        for path in ("/v1/services", "/v1/cluster", "/v1/openapi.json", "/v1/watch"):
            async with s.get(srv.url + path) as r:
                assert r.status == 401, path
        async with s.get(srv.url + "/ui/") as r:  # the page itself has no data
            assert r.status == 200 and "l2lb" in await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        async with s.get(srv.url + "/ui/app.js") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
        async with s.get(URL(srv.url + "/ui/..%2Fserver.py", encoded=True)) as r:  # the three files, nothing else
            assert r.status == 404
        async with s.get(srv.url + "/ui/nothing.js") as r:
            assert r.status == 404
    async with srv.session("wrong") as s, s.get(srv.url + "/v1/services") as r:
        assert r.status == 401
    async with srv.session("s3cret") as s, s.get(srv.url + "/v1/services") as r:
        assert r.status == 200 and (await r.json())["total"] == 4


async def test_pagination_over_10k_services(bus: Bus, serve: Any) -> None:
    n = 10_000
    await write_parts(bus, synthetic_services(n))
    srv = await serve()
    seen: list[str] = []
    pages = 0
    t0 = time.monotonic()
    async with srv.session() as s:
        url = srv.url + "/v1/services?limit=1000"
        tok = None
        while True:
            async with s.get(url + (f"&continue={tok}" if tok else "")) as r:
                assert r.status == 200
                body = await r.json()
            pages += 1
            assert body["total"] == n and len(body["items"]) <= 1000
            seen += [i["key"] for i in body["items"]]
            tok = body["continue"]
            if tok is None:
                break
            assert pages < 20
        assert pages == 10 and len(seen) == n and len(set(seen)) == n and seen == sorted(seen)
        # filtered pages
        ns_keys: list[str] = []
        tok = None
        while True:
            async with s.get(srv.url + "/v1/services?namespace=ns3&limit=300"
                             + (f"&continue={tok}" if tok else "")) as r:
                body = await r.json()
            ns_keys += [i["key"] for i in body["items"]]
            tok = body["continue"]
            if tok is None:
                break
        assert len(ns_keys) == n // 10 and all(k.startswith("ns3/") for k in ns_keys)
    assert time.monotonic() - t0 < 30


async def test_watch_delivers_part_changes_and_events(bus: Bus, serve: Any) -> None:
    await write_parts(bus, seed_parts())
    srv = await serve()
    got: list[tuple[str, Any]] = []

    async def read(resp: aiohttp.ClientResponse, until: Any) -> None:
        ev = ""
        async for line in resp.content:
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                ev = text[7:]
            elif text.startswith("data: "):
                got.append((ev, json.loads(text[6:])))
                if until():
                    return

    async with srv.session() as s, s.get(srv.url + "/v1/watch") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        await asyncio.wait_for(read(resp, lambda: any(e == "hello" for e, _ in got)), 5)
        # simulated failover: the assignments part changes and a move event is published
        parts = seed_parts(node="node-b")
        await write_parts(bus, {"assignments": parts["assignments"]})
        await publish_event(bus, "move", ip=PIHOLE_IP, service="pihole/pihole-dns-tcp",
                            **{"from": "node-a", "to": "node-b"})

        def both() -> bool:
            return (any(e == "part" and d["part"] == "assignments" for e, d in got)
                    and any(e == "event" and d["type"] == "move" for e, d in got))
        await asyncio.wait_for(read(resp, both), 5)
    move = next(d for e, d in got if e == "event")
    assert move["ip"] == PIHOLE_IP and move["to"] == "node-b" and move["from"] == "node-a"
    assert not any(e == "part" and d["part"] == "pools" for e, d in got)


async def test_redis_down_is_503(bus: Bus, serve: Any, redis_server: Any) -> None:
    srv = await serve()
    async with srv.session() as s:
        async with s.get(srv.url + "/v1/cluster") as r:
            assert r.status == 200
            body = await r.json()
            assert body["parts"]["services"]["present"] is False
        await bus.redis.connection_pool.disconnect()
        redis_server.stop()
        try:
            await asyncio.sleep(0.3)
            async with s.get(srv.url + "/v1/services") as r:
                assert r.status == 503
                assert "redis" in (await r.json())["message"]
        finally:
            redis_server.start()


async def test_server_stops_promptly_with_an_open_watch(bus: Bus, serve: Any) -> None:
    srv = await serve()
    async with srv.session() as s, s.get(srv.url + "/v1/watch") as resp:
        assert resp.status == 200
        first = await asyncio.wait_for(resp.content.readline(), 5)
        assert first.startswith(b"retry:")
        t0 = time.monotonic()
        await asyncio.wait_for(srv.server.stop(), 10)
        took = time.monotonic() - t0
        assert took < 3.0
