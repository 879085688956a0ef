"""Issues 25 and 22 on the wire: the announcers' LAN peer heartbeats keep the LAN lit when Redis is gone and
move a dead node's VIPs without it. The co-located lab for real (redis-server, the API server, allocator and
leases replicas, three announcers with a shared peer key, each in its node's namespace on one bridge; a client
namespace probes every VIP with ARP every 10 ms from its own source MAC; TEST-NET addresses only):

* Redis SIGKILLed for 5 s (then started again, without its data): no VIP is left unanswered, none moves;
* a node cut off from every other host but the LAN clients (nftables in the switch: no Redis, no peers) stops
  answering within the validity window (1 s), and the others take its VIPs;
* the node that runs the only Redis, both leaders and holds VIPs dies (SIGKILL of all its processes + cable
  out): its VIPs are answered by their successors within 1 s, the other VIPs never stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.adapters.kube.client import KubeClient
from l2lb.lab import netns
from l2lb.lab.chaos import MultiProber, dual_episodes
from l2lb.lab.main import Progress, repo_root
from l2lb.lab.nodedeath import PROBE_SRC, Bench, Observers, extra_services
from l2lb.lab.placement import ColocatedLab, Placement, heal_partition, partition
from l2lb.lab.procs import Supervisor
from tests.support.netns import require_netns_privileges

pytestmark = [pytest.mark.net, pytest.mark.slow]

TTL_S = 1.0  # leases' default --ttl-ms
PROBE_S = 0.01


def _report(tag: str, r: dict[str, Any]) -> None:
    keep = {k: r.get(k) for k in ("victim", "worst_outage_ms", "worst_outage_vip", "vips_with_outage", "dual_max_ms",
                                  "vips_moved", "converge_s", "ended_by_return", "after_return_max_ms")}
    print(f"{tag}: {keep}")


def _gaps(bench: Bench, since: float) -> dict[str, tuple[float, int]]:
    """Per VIP: the longest stretch between two answered probes after ``since`` (ms) and how many probes were
    sent unanswered in it (0: the prober itself did not send -- its process stalled, not the LAN)."""
    out: dict[str, tuple[float, int]] = {}
    for vip, hist in bench.prober.history.items():
        last: float | None = None
        unanswered = 0
        for t, macs in hist:
            if t < since:
                continue
            if not macs:
                unanswered += 1
                continue
            if last is not None and (t - last) * 1000 > out.get(vip, (0.0, 0))[0]:
                out[vip] = ((t - last) * 1000, unanswered)
            last, unanswered = t, 0
    return out


async def _partition_round(bench: Bench, lab: ColocatedLab, node: str) -> dict[str, Any]:
    """Cut ``node`` off; returns when its VIPs have been answered by others for 1 s (or 10 s passed)."""
    await bench.wait_steady(90, what="before the partition")
    mac = lab.topo.hosts[node].mac
    v4 = sorted(v for v in await bench.vips() if ":" not in v)
    held = [v for v in v4 if bench.answered_by(v) == frozenset({mac})]
    assert held, f"{node} holds no VIP before the partition"
    t_p = time.monotonic()
    partition(lab.topo, node, allow_macs=[lab.topo.hosts["client"].mac])
    try:
        deadline = t_p + 10
        ok_since: float | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if bench.healthy(held, {mac}):
                ok_since = ok_since or time.monotonic()
                if time.monotonic() - ok_since >= 1.0:
                    break
            else:
                ok_since = None
        last_by_node = max((t for v in held for t, macs in bench.prober.history.get(v, []) if mac in macs and t >= t_p),
                           default=t_p)
        moved_at = {v: next((t for t, macs in bench.prober.history.get(v, []) if t >= t_p and macs and mac not in macs),
                            None) for v in held}
        duals = [ep for v in held for ep in dual_episodes(v, [(t, m) for t, m in bench.prober.history.get(v, [])
                                                               if t >= t_p - 1], interval=PROBE_S)]
    finally:
        heal_partition(lab.topo, node)
    return {"held": held, "last_answer_s": round(last_by_node - t_p, 3),
            "moved_s": {v: None if t is None else round(t - t_p, 3) for v, t in moved_at.items()},
            "dual_max_ms": max((ep.seconds * 1000 for ep in duals), default=0.0)}


@pytest.mark.timeout(900)
async def test_redis_outage_partition_and_death_of_the_control_plane_node(tmp_path: Path) -> None:
    require_netns_privileges()
    root = repo_root()
    assert root is not None
    prefix = f"lf{os.getpid() % 100000:05d}"
    netns.sweep(prefix)
    extra = tmp_path / "services.yaml"
    extra.write_text(yaml.safe_dump_all(extra_services(6)))
    args = argparse.Namespace(nodes=3, manifests=[str(root / "tests" / "fixtures" / "lab"), str(extra)],
                              probe_ms=PROBE_S * 1000, round_timeout=10.0, timeout=60.0, json_logs=False, keep=False,
                              sentinel_down_ms=1000)
    # one Redis (on node-1, with both leaderships): the placement where its node's death takes Redis away
    lab = ColocatedLab(args, tmp_path, netns.Topology(prefix), Supervisor(tmp_path / "logs"), Progress(quiet=True),
                       placement=Placement.k8s(3), persist=False)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        lab.build_network()
        with netns.entered(lab.topo.hosts["ctl"].ns):
            await lab.bring_up()
            client = await KubeClient.create(str(lab.kubeconfig), qps=200, burst=400, user_agent="l2lb-test")
            prober = MultiProber(lab.topo.hosts["client"].ns, "eth0", PROBE_SRC, interval_s=PROBE_S)
            obs = Observers(lab, client)
            bench = Bench(lab, client, prober, obs, max_down_s=8.0, redis_down_s=5.0, rng=random.Random(7),
                          svc_counter=6)
            tasks = [asyncio.create_task(prober.run(stop)), asyncio.create_task(obs.poll_leaders(stop)),
                     asyncio.create_task(obs.write_redis(stop))]
            try:
                # 1. Redis down for everybody, 5 s: every holder is alive, so no VIP may go dark or move
                t0 = time.monotonic()
                r = await bench.redis_round("redis-kill")
                _report("redis-kill 5 s", r)
                print(f"longest gaps (ms, probes unanswered in it): {_gaps(bench, t0)}")
                assert r["worst_outage_ms"] is not None, r
                # Measured 0-34 ms (gaps of <= 2 probe intervals count as 0); strict expiry would be >= the 5 s of
                # the outage. The bound leaves room for a process stalled by a loaded host (the prober's too).
                assert r["worst_outage_ms"] <= 500, r
                assert r["vips_moved"] == [] and r["dual_max_ms"] <= 100, r  # the same holders all along
                assert r["converge_s"] is not None, r

                # 2. a node cut off from Redis and from its peers stops within the validity window
                p = await _partition_round(bench, lab, "node-2")
                print(f"partition of node-2: {p}")
                assert p["last_answer_s"] <= TTL_S + 0.15, p
                assert all(t is not None and t <= TTL_S + 1.0 for t in p["moved_s"].values()), p

                # 3. the node with the only Redis, both leaders and VIPs dies: successors take its VIPs over
                r = await bench.node_round("all")
                _report("death of the control-plane node", r)
                held = r["victim_held_vips"]
                assert held, r
                worst = {o["vip"]: o["ms"] for o in r["outages"]}
                assert all(worst.get(v, 0.0) <= 1000 for v in held), r
                others = [v for v in worst if v not in held]
                assert all(worst[v] <= 100 for v in others), r  # frozen: never stopped
                assert r["dual_over_1s"] == 0 and not r["lost_allocations"] and not r["duplicate_ips"], r
                assert r["converge_s"] is not None, r
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                prober.close()
                await client.close()
    finally:
        with contextlib.suppress(Exception):
            await lab.sup.stop_all()
        lab.topo.destroy()
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
