"""`l2lb status` as a process: from Redis, from a server URL, JSON, watch, clear errors."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import publish_event
from l2lb.lab.status import render_text

from .conftest import PIHOLE_IP, seed_parts, write_parts


async def run(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "l2lb.cli", "status", *args,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), timeout)
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


async def test_json_from_redis(bus: Bus, redis_url: str) -> None:
    await write_parts(bus, seed_parts())
    await publish_event(bus, "allocation_failed", service="other/no-ip", reason="no_pool")
    rc, out, err = await run("--redis", redis_url, "--json")
    assert rc == 0, err
    view = json.loads(out)
    pihole = [s for s in view["services"] if s["ips"] and s["ips"][0]["ip"] == PIHOLE_IP]
    assert [s["key"] for s in pihole] == ["pihole/pihole-dns-tcp", "pihole/pihole-dns-udp"]
    assert view["cluster"]["services"]["total"] == 4 and view["events"][0]["reason"] == "no_pool"


async def test_table_from_redis_and_filter(bus: Bus, redis_url: str) -> None:
    await write_parts(bus, seed_parts())
    rc, out, err = await run("--redis", redis_url, "--namespace", "pihole")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Services 4 (1 failing)")
    row = next(x for x in lines if x.startswith("pihole/pihole-dns-udp"))
    assert PIHOLE_IP in row and "node-a" in row and "UDP/53" in row
    assert not any(x.startswith("other/no-ip") for x in lines)
    assert any(x.startswith("default-pool") and "126" in x for x in lines)


async def test_watch_is_bounded_ndjson(bus: Bus, redis_url: str) -> None:
    await write_parts(bus, seed_parts())
    rc, out, err = await run("--redis", redis_url, "--json", "--watch", "--interval", "0.1", "--count", "3")
    assert rc == 0, err
    docs = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert len(docs) == 3 and all(d["cluster"]["nodes"]["alive"] == 2 for d in docs)


async def test_from_url_with_token(bus: Bus, serve: Any, tmp_path: Path) -> None:
    await write_parts(bus, seed_parts())
    srv = await serve(token="abc")
    rc, _, err = await run("--url", srv.url)
    assert rc == 1 and "--token-file" in err
    (tmp_path / "tok").write_text("abc\n")
    rc, out, err = await run("--url", srv.url, "--token-file", str(tmp_path / "tok"), "--json")
    assert rc == 0, err
    # as the lab prints it: --allocator URL --leases URL; an unreachable first one falls back to the next
    rc, out2, err = await run("--allocator", "http://127.0.0.1:1", "--leases", srv.url,
                              "--token-file", str(tmp_path / "tok"), "--json")
    assert rc == 0, err
    assert json.loads(out2)["services"] == json.loads(out)["services"]
    assert {s["key"] for s in json.loads(out)["services"]} >= {"pihole/pihole-dns-tcp", "pihole/pihole-web"}


async def test_clear_errors(redis_url: str) -> None:
    rc, _, err = await run("--redis", "redis://127.0.0.1:1/0", timeout=60)
    assert rc == 1 and "cannot read redis" in err and "Traceback" not in err
    rc, _, err = await run("--redis", "http://nope")
    assert rc == 1 and "--redis" in err and "Traceback" not in err
    rc, _, err = await run("--namespace", "Not_Valid")
    assert rc == 2 and "namespace" in err
    rc, _, err = await run("--url", "http://127.0.0.1:1")
    assert rc == 1 and "cannot read" in err and "Traceback" not in err


def test_render_text_marks_missing_parts_and_down_links() -> None:
    view = {"cluster": {"services": {"total": 0, "failing": 0}, "ips": {"announced": 0, "allocated": 0, "moves": 0},
                        "pools": {"used": 0, "total": 0}, "nodes": {"alive": 0, "total": 1},
                        "parts": {"services": {"present": False}, "nodes": {"present": True}}},
            "services": [], "pools": [], "events": [],
            "nodes": [{"node": "n1", "alive": False, "heartbeat_age_s": 300.0, "assignments": 0,
                       "interfaces": [{"name": "eth0", "up": False}]}]}
    text = render_text(view, now=0.0)
    assert "(no data yet for: services)" in text
    assert "eth0:DOWN" in text and "5m" in text and " NO " in text
