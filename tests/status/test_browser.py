"""The dashboard in headless chromium (DevTools protocol) against parts in a real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import publish_event

from .cdp import Browser, chromium_path
from .conftest import PIHOLE_IP, seed_parts, write_parts

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="chromium not installed (scripts/dev installs it)")

ROWS = """JSON.stringify([...document.querySelectorAll('#services tbody tr')].map(tr => ({
  key: tr.dataset.key, ip: tr.dataset.ip, node: tr.querySelector('.node').textContent})))"""


def rows_of(raw: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads(raw)
    return rows


async def test_dashboard_shows_seed_services_and_follows_a_failover(bus: Bus, serve: Any, browser: Browser) -> None:
    await write_parts(bus, seed_parts(node="node-a"))
    srv = await serve()
    sid = await browser.open(srv.url + "/")
    await browser.wait_for(sid, "document.querySelectorAll('#services tbody tr').length >= 4")
    rows = rows_of(await browser.evaluate(sid, ROWS))
    pihole = [r for r in rows if r["ip"] == PIHOLE_IP]
    assert {r["key"] for r in pihole} == {"pihole/pihole-dns-tcp", "pihole/pihole-dns-udp"}
    assert all(r["node"] == "node-a" for r in pihole)
    # pools as bars, nodes listed, live feed connected (the pools part may render after the services)
    await browser.wait_for(sid, "document.querySelector('.pool .bar > div') !== null")
    width = await browser.evaluate(sid, "document.querySelector('.pool .bar > div').style.width")
    assert width == f"{100 * 2 / 126:.1f}%"
    await browser.wait_for(sid, "document.querySelectorAll('#nodes tbody tr').length === 2")
    await browser.wait_for(sid, "document.querySelector('#live').textContent === 'live: on'")

    # simulated failover: leases moves the Pi-hole IP to node-b and records a move event
    await write_parts(bus, {"assignments": seed_parts(node="node-b")["assignments"]})
    await publish_event(bus, "move", ip=PIHOLE_IP, service="pihole/pihole-dns-tcp",
                        **{"from": "node-a", "to": "node-b"})
    expr = ("[...document.querySelectorAll('#services tbody tr')].filter(tr => tr.dataset.ip === '"
            + PIHOLE_IP + "').every(tr => tr.querySelector('.node').textContent === 'node-b')")
    await browser.wait_for(sid, expr, timeout=10)
    feed = await browser.wait_for(sid, "document.querySelector('#feed li[data-type=move]')?.textContent")
    assert PIHOLE_IP in feed and "node-b" in feed
    rows = rows_of(await browser.evaluate(sid, ROWS))
    assert [r["node"] for r in rows if r["key"] == "pihole/pihole-web"] == ["node-b"]
    assert await browser.evaluate(sid, "document.querySelector('#error').hidden") is True


async def test_dashboard_with_token(bus: Bus, serve: Any, browser: Browser) -> None:
    await write_parts(bus, seed_parts())
    srv = await serve(token="tok-123")
    sid = await browser.open(srv.url + "/ui/#token=tok-123")
    await browser.wait_for(sid, "document.querySelectorAll('#services tbody tr').length >= 4")
    # without the token the page shows the token form
    sid2 = await browser.open(srv.url + "/ui/")
    await browser.evaluate(sid2, "sessionStorage.clear()")
    await browser.send("Page.reload", {}, sid2)
    await browser.wait_for(sid2, "document.querySelector('#auth') && !document.querySelector('#auth').hidden")
    assert await browser.evaluate(sid2, "document.querySelectorAll('#services tbody tr').length") == 0


async def test_dashboard_prints_readable_pool_sizes_and_invalid_pools(bus: Bus, serve: Any, browser: Browser) -> None:
    from .test_sizes import lab_parts  # the lab's pools (a /25 and a /64) through the real allocator

    parts = lab_parts()
    await write_parts(bus, parts)
    srv = await serve()
    sid = await browser.open(srv.url + "/")
    await browser.wait_for(sid, "document.querySelectorAll('#pools .pool').length === 3")
    labels = json.loads(await browser.evaluate(sid, "JSON.stringify(Object.fromEntries([...document.querySelectorAll("
                                               "'#pools .pool')].map(p => [p.dataset.pool, p.textContent])))"))
    v6 = next(p for p in parts["pools"] if p["name"] == "ipv6-pool")
    assert labels["ipv6-pool"].endswith(f"1 / {'2^64' if v6['total'] == 1 << 64 else '1.8e19'} used"), labels
    assert str(v6["total"]) not in labels["ipv6-pool"] and "e+" not in labels["ipv6-pool"]
    assert "invalid CIDR '300.1.1.0/24'" in labels["bad"] and labels["default-pool"].endswith("/ 128 used")
    summary = await browser.wait_for(sid, "document.querySelector('#summary').textContent.includes('pool IPs') && "
                                          "document.querySelector('#summary').textContent")
    assert "/1.8e19 pool IPs used" in summary, summary
