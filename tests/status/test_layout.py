"""The dashboard's layout measured in headless chromium: at 1400 px and at a phone's width nothing overflows
its card (the nodes table used to hide its IPs column at 1400 px), the per-VIP timeline shows who held each
IP and every move with its gap, and pool usage is drawn over time.

Screenshots: set ``L2LB_SCREENSHOTS=/some/dir`` to keep PNGs of every width (the test measures either way).
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import EVENT_FIELD
from l2lb.core.view import PoolHistory, encode_event, make_event

from .cdp import Browser, chromium_path
from .conftest import PIHOLE_IP, seed_parts, write_parts

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="chromium not installed (scripts/dev installs it)")

WIDTHS = {"desktop": (1400, 900), "phone": (390, 844)}

# every element whose content may not stick out of its card; names what overflowed and by how much
OVERFLOW = """JSON.stringify((() => {
  const bad = [];
  const docW = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > docW + 1)
    bad.push({what: 'page', scroll: document.documentElement.scrollWidth, width: docW});
  for (const sec of document.querySelectorAll('main section')) {
    const r = sec.getBoundingClientRect();
    for (const e of sec.querySelectorAll('table, svg, .pool, tr, th, td')) {
      const c = e.getBoundingClientRect();
      if (c.width === 0) continue;
      if (c.right > r.right + 1 || c.left < r.left - 1)
        bad.push({what: e.tagName + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''),
                  in: sec.id, right: Math.round(c.right), card: Math.round(r.right)});
    }
    if (sec.scrollWidth > sec.clientWidth + 1) bad.push({what: 'scroll', in: sec.id, scroll: sec.scrollWidth,
                                                         width: sec.clientWidth});
  }
  return bad.slice(0, 20);
})())"""

NODES_COLUMNS = """JSON.stringify((() => {
  const t = document.querySelector('#nodes'); const card = t.closest('section').getBoundingClientRect();
  return [...t.querySelectorAll('thead th')].map(th => { const r = th.getBoundingClientRect();
    return {name: th.textContent, left: Math.round(r.left), right: Math.round(r.right), visible: r.width > 0 &&
            r.right <= card.right + 1 && r.left >= card.left - 1}; });
})())"""


def busy_parts(now: float) -> dict[str, list[dict[str, Any]]]:
    """The seed plus what a real homelab's nodes look like: long node names, several links with addresses."""
    parts = seed_parts(now, node="node-a")
    links = [("enp0s31f6", ["198.51.100.10/24", "2001:db8::10/64", "fe80::2:ff:fe00:a/64"]),
             ("wlp2s0", []), ("bond0.100", ["203.0.113.10/24"]), ("eno2", [])]
    parts["nodes"] = [
        {"node": name, "alive": alive, "heartbeat_at": now - (0.1 if alive else 42), "assignments": n,
         "interfaces": [{"name": ifn, "mac": f"02:00:00:00:{k:02x}:{j:02x}", "up": j != 1, "addresses": addrs}
                        for j, (ifn, addrs) in enumerate(links)]}
        for k, (name, alive, n) in enumerate([("node-a", True, 1), ("node-b", True, 1),
                                              ("k8s-worker-rack2-node-03.lab.example", False, 0)])]
    parts["pools"].append({"name": "dmz-ipv6-pool", "kind": "LoadBalancerIPPool", "cidrs": ["2001:db8:1::/120"],
                           "total": 256, "used": 240, "available": 16, "conflict": False, "disabled": False,
                           "message": ""})
    return parts


async def write_history(bus: Bus, now: float) -> None:
    """Moves of the Pi-hole IP over the last 20 minutes (node-a -> node-b -> node-a), with measured gaps."""
    for at, frm, to, reason, gap in ((now - 1200, "node-a", "node-b", "holder_dead", 412.0),
                                     (now - 600, "node-b", "node-a", "holder_ineligible", 96.0)):
        ev = make_event("move", at, ip=PIHOLE_IP, service="pihole/pihole-dns-tcp", reason=reason,
                        gap_ms=gap, **{"from": frm, "to": to})
        await bus.redis.xadd(bus.keys.events, {EVENT_FIELD: encode_event(ev)})


def seed_history(api: Any, now: float) -> None:
    """What the server would have sampled over the last hour: the DMZ pool filling up."""
    h = PoolHistory()
    for k, (a, b) in enumerate([(0, 120), (1, 150), (1, 180), (2, 230), (2, 240)]):
        h.add(now - 3300 + k * 700, [{"name": "default-pool", "used": a, "total": 126},
                                     {"name": "dmz-ipv6-pool", "used": b, "total": 256}])
    api.pool_history = h


async def _screenshot(browser: Browser, sid: str, name: str) -> None:
    out = os.environ.get("L2LB_SCREENSHOTS")
    if not out:
        return
    shot = await browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, sid)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.parametrize("width", list(WIDTHS))
async def test_nothing_overflows_and_every_nodes_column_shows(bus: Bus, serve: Any, browser: Browser,
                                                               width: str) -> None:
    now = time.time()
    await write_parts(bus, busy_parts(now))
    await write_history(bus, now)
    srv = await serve()
    seed_history(srv.api, now)
    sid = await browser.open("about:blank")
    w, h = WIDTHS[width]
    await browser.send("Emulation.setDeviceMetricsOverride",
                       {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": width == "phone"}, sid)
    await browser.send("Page.navigate", {"url": srv.url + "/ui/"}, sid)
    await browser.wait_for(sid, "document.querySelectorAll('#nodes tbody tr').length === 3")
    await browser.wait_for(sid, "document.querySelectorAll('#timeline .vip').length >= 2")
    await browser.wait_for(sid, "document.querySelectorAll('#pools svg.history').length === 2")
    await _screenshot(browser, sid, f"status-{width}-{w}px")
    problems = json.loads(await browser.evaluate(sid, OVERFLOW))
    assert problems == [], f"at {w} px: {problems}"
    cols = json.loads(await browser.evaluate(sid, NODES_COLUMNS))
    assert [c["name"] for c in cols] == ["Node", "Alive", "Heartbeat", "Links", "IPs"]
    assert all(c["visible"] for c in cols), f"at {w} px: {cols}"


async def test_timeline_shows_holders_moves_and_gaps(bus: Bus, serve: Any, browser: Browser) -> None:
    now = time.time()
    await write_parts(bus, busy_parts(now))
    await write_history(bus, now)
    srv = await serve()
    seed_history(srv.api, now)
    sid = await browser.open("about:blank")
    await browser.send("Emulation.setDeviceMetricsOverride",
                       {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False}, sid)
    await browser.send("Page.navigate", {"url": srv.url + "/ui/"}, sid)
    await browser.wait_for(sid, "document.querySelectorAll('#timeline .vip').length >= 2")
    rows = json.loads(await browser.evaluate(sid, """JSON.stringify([...document.querySelectorAll('#timeline .vip')]
      .map(v => ({ip: v.dataset.ip, holders: [...v.querySelectorAll('rect.seg')].map(r => r.dataset.node),
                  moves: [...v.querySelectorAll('.move')].map(m => m.dataset.gap),
                  labels: [...v.querySelectorAll('text.gap')].map(t => t.textContent)})))"""))
    pihole = next(r for r in rows if r["ip"] == PIHOLE_IP)
    assert pihole["holders"] == ["node-a", "node-b", "node-a"]
    assert pihole["moves"] == ["412", "96"]
    assert pihole["labels"] == ["412 ms", "96 ms"]
    web = next(r for r in rows if r["ip"] == "198.51.100.129")
    assert web["holders"] == ["node-b"] and web["moves"] == []
    # the pool usage chart: one line per pool, ending at the current usage
    ends = json.loads(await browser.evaluate(sid, """JSON.stringify([...document.querySelectorAll('#pools .pool')]
      .map(p => ({pool: p.dataset.pool, last: p.querySelector('svg.history')?.dataset.last})))"""))
    assert {e["pool"]: e["last"] for e in ends} == {"default-pool": "0.016", "dmz-ipv6-pool": "0.938"}
    # the history line climbs with the samples (its path has a point per sample)
    steps = await browser.evaluate(sid, "document.querySelector('#pools .pool[data-pool=dmz-ipv6-pool] path.line')"
                                        ".getAttribute('d').split('L').length")
    assert steps >= 9
