"""Real-traffic failover rounds for bench/failover: UDP to the VIP, as a LAN client sends it.

Every node holds the VIP on ``lo`` (as kube-proxy's IPVS mode holds it on kube-ipvs0; IPv4 with
arp_ignore=1 / arp_announce=2, IPv6 needs nothing: Linux answers a Neighbor Solicitation only for
addresses of the interface it came in on) and runs a UDP responder naming the node
(:mod:`l2lb.lab.traffic`), so which node gets the traffic is decided by the client's kernel
neighbour entry alone, i.e. by l2lb's ARP/NDP. The client queries the VIP every ``--probe-ms`` with
its kernel at Linux's defaults for IPv6 neighbour discovery (accept_untracked_na, drop_unsolicited_na,
ndisc_notify as shipped; the lab only turns DAD off; the sysctls are read back into the report; IPv4
at the kernel's ARP defaults too, arp_accept=0), the fault hits the announcing node,
and the round reports the client's outage (longest silence), lost queries, when another node first
answered, when the client's kernel entry moved (rtnetlink), and the heal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from l2lb.lab.main import Lab
from l2lb.lab.neigh import NeighWatcher
from l2lb.lab.traffic import analyse

UDP_PORT = 5353
CLIENT_SYSCTLS = ("accept_untracked_na", "drop_unsolicited_na", "ndisc_notify", "accept_dad")


def traffic_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "l2lb.lab.traffic", *args]


async def setup_backends(lab: Lab, vips: list[str]) -> dict[str, str]:
    """The VIPs on every node's ``lo`` and a responder per node; returns the client's neighbour sysctls."""
    for name in lab.node_names():
        h = lab.topo.hosts[name]
        for vip in vips:
            if ":" in vip:
                h.exec(["ip", "-6", "addr", "replace", f"{vip}/128", "dev", "lo", "nodad"])
            else:
                h.exec(["ip", "addr", "replace", f"{vip}/32", "dev", "lo"])
                h.exec(["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"])
        await lab.sup.start(f"udp-{name}", traffic_cmd("respond", "--name", name, "--port", str(UDP_PORT)), ns=h.ns)
    client = lab.topo.hosts["client"]
    out = {}
    if any(":" in v for v in vips):
        for k in CLIENT_SYSCTLS:
            r = client.exec(["sysctl", "-n", f"net.ipv6.conf.{client.ifname}.{k}"], check=False)
            out[f"ipv6.{k}"] = r.stdout.strip()
    if any(":" not in v for v in vips):
        r = client.exec(["sysctl", "-n", f"net.ipv4.conf.{client.ifname}.arp_accept"], check=False)
        out["ipv4.arp_accept"] = r.stdout.strip()
    return out


async def traffic_round(lab: Lab, vip: str, how: str, a: argparse.Namespace) -> dict[str, Any]:
    """One fault (kill | linkdown) of the node announcing ``vip`` while the client sends real UDP to it."""
    macs = lab.mac_to_node()
    old_mac = await lab.wait_announced(vip, 15)
    old = macs.get(old_mac, "?")
    client = lab.topo.hosts["client"]
    out_file = lab.workdir / f"udp-{how}-{time.monotonic_ns()}.json"
    proc = await lab.sup.start("udp-client", traffic_cmd(
        "client", "--target", vip, "--port", str(UDP_PORT), "--interval-ms", str(a.probe_ms), "--seconds", "60",
        "--out", str(out_file)), ns=client.ns)
    watcher = NeighWatcher(client.ns, vip)
    # an observer: its answers never reach the client's kernel; every 50 ms, so that it and the kernel's own
    # solicitations (same MAC) stay well inside the announcer's per-source limit (100/s)
    prober = lab.make_prober(vip, max(a.probe_ms, 50.0) / 1000)
    stop = asyncio.Event()
    ptask = asyncio.create_task(prober.run(stop, max_seconds=55, max_probes=6000))
    res: dict[str, Any] = {"how": how, "family": 6 if ":" in vip else 4, "vip": vip, "old_node": old}
    try:
        watcher.attach()
        await asyncio.sleep(1.5)  # the client resolves the VIP, answers flow
        t_fault = time.monotonic()
        await lab.inject(how, old)
        # the client's traffic follows its kernel's entry: wait (bounded) until it names another node
        deadline = t_fault + a.round_timeout
        while time.monotonic() < deadline:
            ev = next((e for e in watcher.events if e.t > t_fault and e.mac and e.mac != old_mac), None)
            if ev is not None:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        t_heal = time.monotonic()
        await lab.heal(how, old)
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        tl = await ptask
        prober.close()
        watcher.detach()
        watcher.close()
        lab.sup.signal("udp-client", signal.SIGTERM)
        if proc.proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.proc.wait(), 10)
    data = json.loads(out_file.read_text())
    out_file.unlink()
    res.update(analyse(data, old, t_fault, t_heal))
    moved = next((e for e in watcher.events if e.t > t_fault and e.mac and e.mac != old_mac), None)
    res["kernel_switch_ms"] = None if moved is None else (moved.t - t_fault) * 1000
    res["kernel_switch_to"] = None if moved is None else macs.get(moved.mac, moved.mac)
    res["kernel_events"] = [{"ms": round((e.t - t_fault) * 1000, 1), "node": macs.get(e.mac, e.mac), "state": e.state}
                            for e in watcher.events]
    ndp = tl.failover(old_mac, t_fault)
    res["probe_first_new_ms"] = ndp["first_new_answer_ms"]
    res["probe_dual_ms"] = ndp["dual_ms"]
    return res


def traffic_summary(rs: list[dict[str, Any]], summary: Callable[[list[float]], dict[str, Any]]) -> dict[str, Any]:
    outages = [float(r["outage_ms"]) for r in rs if r["outage_ms"] is not None]
    return summary(outages) | {
        "failed": sum(1 for r in rs if r["outage_ms"] is None or r["new_node"] is None),
        "lost": summary([float(r["lost_fault"]) for r in rs]),
        "kernel_switch": summary([float(r["kernel_switch_ms"]) for r in rs if r["kernel_switch_ms"] is not None]),
        "flips_during_max": max((int(r["flips_during"]) for r in rs), default=0),
        "flapped_back": sum(1 for r in rs if r["flapped_back"]),
        "baseline_bad": sum(1 for r in rs if not r["baseline_ok"]),
        "wrong_source": sum(int(r["wrong_source"]) for r in rs),
        "probe_dual_max_ms": max((float(r["probe_dual_ms"]) for r in rs), default=0.0),
    }
