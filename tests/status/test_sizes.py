"""Pool sizes a person can read (a /64 is "2^64", not 18446744073709551616) and invalid pools, in the
view, in `l2lb status` (a process reading a real Redis) and in the cluster API's JSON; the pools are
the lab's (tests/fixtures/lab: the seed's /25 and the dual-stack example's /64) run through the real
pure allocator."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from l2lb.adapters.bus.client import Bus
from l2lb.core.allocator import Allocator
from l2lb.core.parse import CILIUM_L2_CLASS, DEFAULT_CLASSES, parse_pool, parse_service
from l2lb.core.view import pools_items, services_items, size_text

from .conftest import write_parts

LAB = Path(__file__).resolve().parents[1] / "fixtures" / "lab"
BAD = {"CiliumLoadBalancerIPPool/bad": "spec.blocks[0].cidr: invalid CIDR '300.1.1.0/24': does not appear to be "
       "an IPv4 or IPv6 network"}


@pytest.mark.parametrize(("n", "text"), [
    (0, "0"), (126, "126"), (16_777_216, "16777216"), (999_999_999, "999999999"),
    (1 << 32, "2^32"), (1 << 64, "2^64"), (1 << 128, "2^128"),
    ((1 << 64) - 2, "1.8e19"), ((1 << 64) + 124, "1.8e19"), (4_294_967_294, "4.3e9"), (10**9, "1.0e9"),
    (-5, "0"),
])
def test_size_text(n: int, text: str) -> None:
    assert size_text(n) == text


def lab_parts() -> dict[str, list[dict[str, Any]]]:
    alloc = Allocator()
    docs = [d for f in ("ip-pool.yaml", "pihole.yaml", "web-dualstack.yaml")
            for d in yaml.safe_load_all((LAB / f).read_text()) if d]
    for d in docs:
        if d["kind"] == "CiliumLoadBalancerIPPool":
            alloc.upsert_pool(parse_pool(d))
    for d in docs:
        if d["kind"] == "Service":
            alloc.allocate(parse_service(d, classes=DEFAULT_CLASSES | {CILIUM_L2_CLASS}))
    return {"services": services_items(alloc.results(), alloc.request),
            "pools": pools_items(alloc.pools(), alloc.pool_usage(), BAD), "assignments": [], "nodes": []}


def test_lab_pools_with_the_real_allocator() -> None:
    pools = {p["name"]: p for p in lab_parts()["pools"]}
    v6 = pools["ipv6-pool"]
    assert v6["used"] == 1 and v6["total"] >= (1 << 64) - 2  # exact in the part (Redis, JSON API)
    assert pools["bad"]["invalid"].startswith("spec.blocks[0].cidr: invalid CIDR") and pools["bad"]["total"] == 0
    assert pools["default-pool"]["invalid"] == ""


async def _status(*args: str) -> str:
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "l2lb.cli", "status", *args,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode == 0, err.decode()
    return out.decode()


async def test_status_prints_readable_sizes_and_invalid_pools(bus: Bus, redis_url: str) -> None:
    parts = lab_parts()
    await write_parts(bus, parts)
    out = await _status("--redis", redis_url)
    lines = out.splitlines()
    pools = {p["name"]: p for p in parts["pools"]}
    total = sum(p["total"] for p in pools.values())
    used = sum(p["used"] for p in pools.values())
    assert str(total) not in out
    assert f"pools {used}/1.8e19 used" in lines[0], lines[0]
    row = next(x for x in lines if x.startswith("ipv6-pool"))
    assert row.split()[1:4] == ["1", size_text(pools["ipv6-pool"]["total"]),
                                size_text(pools["ipv6-pool"]["available"])], row
    assert row.split()[2] in ("2^64", "1.8e19")
    row = next(x for x in lines if x.startswith("default-pool"))
    assert row.split()[1:4] == [str(pools["default-pool"]["used"]), str(pools["default-pool"]["total"]),
                                str(pools["default-pool"]["available"])], row
    row = next(x for x in lines if x.startswith("bad "))
    assert "invalid: spec.blocks[0].cidr: invalid CIDR '300.1.1.0/24'" in row, row
    # JSON keeps the exact numbers and carries the texts beside them
    doc = json.loads(await _status("--redis", redis_url, "--json"))
    assert doc["cluster"]["pools"]["total"] == total and doc["cluster"]["pools"]["total_text"] == "1.8e19"
    assert doc["cluster"]["pools"]["invalid"] == 1
    jv6 = next(p for p in doc["pools"] if p["name"] == "ipv6-pool")
    assert jv6["total"] == pools["ipv6-pool"]["total"] and jv6["total_text"] == size_text(jv6["total"])


async def test_cluster_api_pools_carry_texts(bus: Bus, serve: Any) -> None:
    await write_parts(bus, lab_parts())
    srv = await serve()
    async with aiohttp.ClientSession() as s:
        async with s.get(srv.url + "/v1/pools") as r:
            assert r.status == 200
            items = (await r.json())["items"]
        async with s.get(srv.url + "/v1/cluster") as r:
            cluster = await r.json()
    v6 = next(p for p in items if p["name"] == "ipv6-pool")
    assert v6["total_text"] in ("2^64", "1.8e19") and v6["used_text"] == "1"
    assert next(p for p in items if p["name"] == "bad")["invalid"].startswith("spec.blocks[0].cidr")
    assert cluster["pools"]["used_text"] == str(cluster["pools"]["used"])
