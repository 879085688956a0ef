"""Full stack in one process: embedded API server + the seed's lab YAML -> the real allocator -> Redis
-> the real leases service + fake announcers -> status parts -> the dashboard in headless chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.kube.client import KubeClient
from services.allocator.service import AllocatorConfig, AllocatorService
from tests.leases.harness import Harness
from tests.support.kube import KubeHandle

from .cdp import Browser, chromium_path
from .conftest import PIHOLE_IP

pytestmark = [pytest.mark.kube,
              pytest.mark.skipif(chromium_path() is None, reason="chromium not installed (scripts/dev installs it)")]

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "fixtures" / "lab"

ROWS = """JSON.stringify([...document.querySelectorAll('#services tbody tr')].map(tr => ({
  key: tr.dataset.key, ip: tr.dataset.ip, node: tr.querySelector('.node').textContent,
  moves: tr.querySelector('.moves').textContent})))"""


def pihole_nodes(raw: Any) -> set[str]:
    rows = json.loads(raw) if isinstance(raw, str) else []
    return {r["node"] for r in rows if r["ip"] == PIHOLE_IP}


async def test_dashboard_follows_a_real_failover(bus: Bus, kube: KubeHandle, serve: Any) -> None:
    kube.apply(ROOT / "k8s" / "crds")
    kube.apply(LAB / "ip-pool.yaml")
    kube.apply(LAB / "pihole.yaml")
    client = await KubeClient.create(kube.kubeconfig, qps=50, burst=100)
    alloc = AllocatorService(AllocatorConfig(instance="a", leader_election=False, pool_status=False), bus, client)
    stop = asyncio.Event()
    alloc_task = asyncio.create_task(alloc.run(stop))
    h = Harness(bus)
    browser = Browser(chromium_path() or "chromium")
    try:
        await h.add_node("node-a")
        await h.add_node("node-b")
        h.start_leases()
        srv = await serve()
        await browser.start()
        sid = await browser.open(srv.url + "/")
        # the seed's Pi-hole pair shares 198.51.100.153, announced by exactly one node
        ok = await browser.wait_for(sid, f"(() => {{ const r = {ROWS}; const p = JSON.parse(r).filter("
                                         f"x => x.ip === '{PIHOLE_IP}'); return p.length === 2 && "
                                         "p.every(x => x.node.startsWith('node-')) && r; })()", timeout=30)
        rows = json.loads(ok)
        assert {r["key"] for r in rows if r["ip"] == PIHOLE_IP} == {"pihole/pihole-dns-tcp", "pihole/pihole-dns-udp"}
        (holder,) = pihole_nodes(ok)
        other = "node-b" if holder == "node-a" else "node-a"

        h.announcers[holder].die()  # the node answering for the Pi-hole IP crashes
        moved = await browser.wait_for(sid, f"(() => {{ const r = {ROWS}; return JSON.parse(r).filter(x => x.ip === "
                                            f"'{PIHOLE_IP}').every(x => x.node === '{other}' && x.moves === '1') "
                                            "&& r; })()", timeout=15)
        assert pihole_nodes(moved) == {other}
        feed = await browser.wait_for(sid, "[...document.querySelectorAll('#feed li[data-type=move]')]"
                                           f".map(li => li.textContent).find(t => t.includes('{PIHOLE_IP}'))")
        assert f"{holder} → {other}" in feed
        # the timeline: the IP's bar goes from the dead holder to the other node, the move carries its gap
        # (the dead node's silence when the leases service named the new holder: missed heartbeats + a tick)
        gap = await browser.wait_for(sid, f"document.querySelector('#timeline svg.vip[data-ip=\"{PIHOLE_IP}\"] "
                                          ".move')?.dataset.gap", timeout=15)
        assert 200 <= int(gap) <= 10_000, gap
        holders = json.loads(await browser.evaluate(sid, "JSON.stringify([...document.querySelectorAll("
                                                         f"'#timeline svg.vip[data-ip=\"{PIHOLE_IP}\"] rect.seg')]"
                                                         ".map(r => r.dataset.node))"))
        assert holders[-2:] == [holder, other], holders
        assert f"(gap {gap} ms)" in feed or "(gap " in feed, feed
        # the node list shows the dead node
        dead = await browser.wait_for(sid, f"document.querySelector('#nodes tr[data-node={holder}]')"
                                           "?.children[1].textContent === 'no'")
        assert dead is True
        async with srv.session() as s, s.get(srv.url + "/v1/nodes") as r:
            nodes = {n["node"]: n for n in (await r.json())["items"]}
        assert nodes[other]["alive"] and 0 <= nodes[other]["heartbeat_age_s"] < 5
        assert nodes[other]["interfaces"][0]["name"] == "eth0" and nodes[other]["interfaces"][0]["up"]
        assert not nodes[holder]["alive"] and nodes[other]["assignments"] >= 2
    finally:
        await browser.close()
        await h.close()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(alloc_task, 15)
        await client.close()
