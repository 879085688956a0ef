"""Failover benchmark: client-observed outage of l2lb vs Cilium's Lease-based election model.

l2lb: the lab topology (netns nodes, real redis-server, API server, allocator, leases, one announcer
per node); N failovers each by SIGKILL of the announcing node's announcer and by taking its link
down, for an IPv4 VIP (the client probes it with ARP every 10 ms) and an IPv6 VIP (the lab's
dual-stack Service on 2001:db8:53::/64; the client probes it with Neighbor Solicitations every 10 ms
from an address its kernel does not own, and records when its own kernel's neighbour entry moved
to the new node after the unsolicited NA). Prints p50/p99/max outage and the longest dual
announcement per family.

Cilium model: the same API server; K "node" processes each run one client-go-style leader election
per Service Lease with Cilium's defaults (15 s duration / 5 s renew deadline / 2 s retry) through a
rate-limited client (qps 10 / burst 20); the holder of the Leases is SIGKILLed and the time until
another node holds each Lease is measured from a watch. That time is a lower bound of Cilium's
client-observed outage (its GARP/ARP path comes on top, as l2lb's does in its own figures).

    sudo python bench/failover/run.py               # 20 + 20 l2lb failovers, 2 Cilium-model kills
    sudo python bench/failover/run.py --quick       # a few rounds (CI smoke)
    sudo python bench/failover/run.py --families "" --traffic 6 --skip-cilium   # real UDP traffic only

After the probe rounds, ``--traffic 6`` (the default) runs real-traffic rounds on the IPv6 VIP: UDP
every 10 ms from the client (Linux's NDP defaults) to every node, which holds the VIP on lo as
kube-proxy's IPVS mode does (bench/failover/realtraffic.py, l2lb.lab.traffic).

Co-located placement (issue 22: redis, allocator and leases inside the node namespaces as k8s/base
places them; the API server stays in the control-plane namespace) with node deaths (cable out + SIGKILL
of every process of the node at one instant), per scenario = what the dying node holds
(l2lb.lab.nodedeath), and Redis faults (issue 25):

    sudo python bench/failover/run.py --colocated --rounds 10 --scenarios redis,leases,allocator,all,nothing
    sudo python bench/failover/run.py --colocated --redis-ha --rounds 10      # Redis + Sentinel on 3 nodes
    sudo python bench/failover/run.py --colocated --nodes 5 --services 8 --rounds 2 --scenarios pairs \
        [--stagger-ms 300]                    # two of 5 nodes die at once (or the second during the failover)
    sudo python bench/failover/run.py --colocated --cost-compare --cost-s 90   # idle: single Redis | Redis HA
    sudo python bench/failover/run.py --colocated --placement ctl --rounds 3 \
        --scenarios redis-kill,redis-stop,redis-restart [--no-persistence]    # Redis outages, classic lab

``--baseline no-peers [--baseline-rounds N]`` runs the same scenarios again with announcers started with
``--no-peers`` (no LAN heartbeats: no freeze while Redis is down, no succession) and prints both side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from l2lb.adapters.kube.client import RESOURCES, KubeClient
from l2lb.lab import netns
from l2lb.lab.main import Lab, Progress
from l2lb.lab.procs import Supervisor, python_cli, wait_http_ready

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import realtraffic  # noqa: E402


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def summary(values: list[float]) -> dict[str, float | int]:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "max": max(values) if values else float("nan"),
            "mean": statistics.fmean(values) if values else float("nan")}


async def run_l2lb(a: argparse.Namespace, workdir: Path, progress: Progress) -> dict[str, Any]:
    lab_args = argparse.Namespace(nodes=a.nodes, manifests=None, probe_ms=a.probe_ms, round_timeout=a.round_timeout,
                                  timeout=60.0, json_logs=False, keep=False)
    lab = Lab(lab_args, workdir / "l2lb", netns.Topology(a.prefix), Supervisor(workdir / "l2lb" / "logs"), progress)
    families = [int(f) for f in a.families.split(",") if f]
    traffic = [int(f) for f in a.traffic.split(",") if f]
    results: dict[int, dict[str, list[dict[str, Any]]]] = {f: {"kill": [], "linkdown": []} for f in families}
    traffic_results: dict[int, dict[str, list[dict[str, Any]]]] = {f: {"kill": [], "linkdown": []} for f in traffic}
    client_sysctls: dict[str, str] = {}
    try:
        lab.build_network()
        with netns.entered(lab.topo.hosts["ctl"].ns):
            svcs = await lab.bring_up()
            vips: dict[str, list[str]] = {}
            for s in svcs:
                for ing in s["status"]["loadBalancer"]["ingress"]:
                    vips.setdefault(ing["ip"], []).append(s["metadata"]["name"])
            targets = {6 if ":" in v else 4: v for v in lab.failover_vips(vips)}
            missing = [f for f in families if f not in targets]
            if missing:
                raise RuntimeError(f"no IPv{missing[0]} VIP on the client's LAN in the lab's manifests")
            for i in range(a.rounds if families else 0):
                for how in ("kill", "linkdown"):
                    for fam in families:
                        r = await lab.failover_round(targets[fam], how)
                        results[fam][how].append(r)
                        kernel = (f", client kernel moved at {round(r['kernel_switch_ms'])} ms"
                                  if r.get("kernel_switch_ms") is not None else "")
                        progress.say(f"l2lb IPv{fam} {how:8s} #{i + 1:2d}: {r['old_node']} -> {r['new_node']} "
                                     f"outage {r['outage_ms'] if r['outage_ms'] is None else round(r['outage_ms'])}"
                                     f" ms, dual {round(r['dual_ms'])} ms{kernel}")
            if traffic:
                missing = [f for f in traffic if f not in targets]
                if missing:
                    raise RuntimeError(f"no IPv{missing[0]} VIP on the client's LAN for --traffic")
                client_sysctls = await realtraffic.setup_backends(lab, [targets[f] for f in traffic])
                for i in range(a.traffic_rounds):
                    for how in ("kill", "linkdown"):
                        for fam in traffic:
                            r = await realtraffic.traffic_round(lab, targets[fam], how, a)
                            traffic_results[fam][how].append(r)
                            progress.say(
                                f"l2lb IPv{fam} UDP {how:8s} #{i + 1:2d}: {r['old_node']} -> {r['new_node']} outage "
                                f"{'n/a' if r['outage_ms'] is None else round(r['outage_ms'])} ms, lost "
                                f"{r['lost_fault']}, client kernel moved at "
                                f"{'n/a' if r['kernel_switch_ms'] is None else round(r['kernel_switch_ms'])} ms, "
                                f"flapped back {r['flapped_back']}")
    finally:
        await lab.sup.stop_all()
        lab.topo.destroy()
    out: dict[str, Any] = {}
    for fam, by_how in results.items():
        dest = out if fam == 4 else out.setdefault("ipv6", {})
        for how, rs in by_how.items():
            dest[how] = round_summary(rs)
        if fam == 6:
            dest["vip"] = targets[6]
    if 4 in results:
        out["vip"] = targets[4]
    out["raw"] = {f"ipv{f}": r for f, r in results.items()}
    if traffic:
        out["traffic"] = {f"ipv{f}": {how: realtraffic.traffic_summary(rs, summary) for how, rs in by_how.items()}
                          for f, by_how in traffic_results.items()}
        out["traffic"]["client_sysctls"] = client_sysctls
        out["raw"]["traffic"] = {f"ipv{f}": r for f, r in traffic_results.items()}
    return out


def round_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Outage percentiles, failures, dual answers and flap-backs over failover rounds (and, for IPv6, when
    the client's kernel entry moved to the new node)."""
    outages = [float(r["outage_ms"]) for r in rs if r["outage_ms"] is not None]
    out: dict[str, Any] = summary(outages) | {
        "failed": sum(1 for r in rs if r["outage_ms"] is None),
        "dual_max_ms": max((float(r["dual_ms"]) for r in rs), default=0.0),
        "dual_over_1s": sum(1 for r in rs if float(r["dual_ms"]) > 1000),
        "flapped_back": sum(1 for r in rs if r["flapped_back"]),
    }
    if any("kernel_switch_ms" in r for r in rs):
        moved = [float(r["kernel_switch_ms"]) for r in rs if r.get("kernel_switch_ms") is not None]
        out["kernel_switch"] = summary(moved) | {"not_moved": len(rs) - len(moved)}
        out["na_flags"] = sorted({f"reply={r['na_flags']['reply']} unsolicited={r['na_flags']['garp']}"
                                  for r in rs if r.get("na_flags")})
    return out


async def run_cilium_model(a: argparse.Namespace, workdir: Path, progress: Progress) -> dict[str, Any]:
    sup = Supervisor(workdir / "cilium" / "logs")
    kubeconfig = workdir / "cilium" / "kubeconfig"
    try:
        api = await sup.start("apiserver", [*python_cli(), "apiserver", "--host", "127.0.0.1", "--port", "0",
                                            "--kubeconfig-out", str(kubeconfig)])
        for _ in range(100):
            if kubeconfig.exists():
                break
            await asyncio.sleep(0.1)
        client = await KubeClient.create(str(kubeconfig), qps=100, burst=200, user_agent="bench-observer")
        server = client_server_url(kubeconfig)
        await wait_http_ready(f"{server}/readyz", api)
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}
        try:
            await client.create_object(RESOURCES["namespaces"], ns)
        except Exception:  # exists already
            pass
        holders: dict[str, str] = {}
        changes: list[tuple[float, str, str]] = []
        stop_watch = asyncio.Event()

        async def watch() -> None:
            lst = await client.list(RESOURCES["leases"], "kube-system")
            for it in lst.get("items", []):
                holders[it["metadata"]["name"]] = (it.get("spec") or {}).get("holderIdentity") or ""
            rv = lst["metadata"]["resourceVersion"]
            while not stop_watch.is_set():
                async for typ, obj in client.watch(RESOURCES["leases"], "kube-system", resource_version=rv,
                                                   timeout_s=30):
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if typ in ("ADDED", "MODIFIED"):
                        name = obj["metadata"]["name"]
                        h = (obj.get("spec") or {}).get("holderIdentity") or ""
                        if holders.get(name) != h:
                            holders[name] = h
                            changes.append((time.monotonic(), name, h))
                    if stop_watch.is_set():
                        break

        wtask = asyncio.create_task(watch())
        names = [f"cnode-{i}" for i in range(1, a.nodes + 1)]
        for n in names:
            await sup.start(n, [sys.executable, str(HERE / "lease_node.py"), "--kubeconfig", str(kubeconfig),
                                "--identity", n, "--leases", str(a.cilium_leases), "--qps", str(a.cilium_qps),
                                "--burst", str(a.cilium_burst)])
            await asyncio.sleep(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(holders) < a.cilium_leases or not all(holders.values())):
            await asyncio.sleep(0.2)
        samples: list[float] = []
        for k in range(a.cilium_kills):
            counts: dict[str, int] = {}
            for h in holders.values():
                counts[h] = counts.get(h, 0) + 1
            victim = max(counts, key=lambda n: counts[n])
            owned = [n for n, h in holders.items() if h == victim]
            t0 = time.monotonic()
            await sup.kill(victim)
            progress.say(f"cilium model kill #{k + 1}: {victim} held {len(owned)} leases; waiting for takeover")
            wait_until = t0 + 60
            while time.monotonic() < wait_until and any(holders[n] == victim for n in owned):
                await asyncio.sleep(0.05)
            for n in owned:
                t_new = next((t for t, name, h in changes if name == n and t >= t0 and h not in ("", victim)), None)
                if t_new is not None:
                    samples.append((t_new - t0) * 1000)
            await sup.restart(victim)
            await asyncio.sleep(2)
        stop_watch.set()
        wtask.cancel()
        await asyncio.gather(wtask, return_exceptions=True)
        await client.close()
        return summary(samples) | {"samples_ms": samples, "leases": a.cilium_leases,
                                   "timings": "15 s duration / 5 s renew deadline / 2 s retry",
                                   "client_limit": f"qps {a.cilium_qps} / burst {a.cilium_burst}"}
    finally:
        await sup.stop_all()


def client_server_url(kubeconfig: Path) -> str:
    import yaml

    cfg = yaml.safe_load(kubeconfig.read_text())
    return str(cfg["clusters"][0]["cluster"]["server"])


def fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:,.0f} ms"


async def run_cost_compare(a: argparse.Namespace) -> int:
    """The cost at rest of single Redis and of Redis HA (3 Redis + 3 Sentinels), one lab after the other in
    this one run, printed side by side."""
    import os

    from l2lb.lab import nodedeath
    from l2lb.lab.placement import Placement

    if a.nodes < 3:
        print("bench/failover: --cost-compare needs --nodes >= 3 (Redis HA runs on 3 nodes)", file=sys.stderr)
        return 2
    costs: dict[str, Any] = {}
    placements: dict[str, str] = {}
    load = [os.getloadavg()]
    for name, ha in (("single Redis", False), ("Redis HA", True)):
        args = argparse.Namespace(**vars(a))
        args.redis_ha, args.rounds, args.scenarios, args.json = ha, 0, [], None
        args.placement_obj = Placement.k8s(a.nodes, ha=ha)
        args.cost_s, args.cost_settle_s = a.cost_s or 90.0, 15.0  # Sentinel's discovery settles first
        netns.sweep(a.prefix)
        print(f"== {name}: {args.placement_obj.describe()}, {args.cost_s:.0f} s at rest", flush=True)
        r = await nodedeath.run(args, Path(tempfile.mkdtemp(prefix="l2lb-bench-cost-")), Progress())
        costs[name], placements[name] = r["cost_at_rest"], r["placement"]
        load.append(os.getloadavg())
        if r["cleanup"]["leftover_namespaces"]:
            print(f"bench/failover: namespaces left: {r['cleanup']['leftover_namespaces']}", file=sys.stderr)
            return 1
    print()
    print(f"Cost at rest, {a.nodes} nodes co-located as k8s/base places them, {a.services} + 2 Services, nothing "
          f"happening (CPU % of one core, RSS, commands/s; load average 1 min at start / between / end: "
          f"{' / '.join(f'{x[0]:.1f}' for x in load)})")
    print(nodedeath.cost_table(costs))
    if a.json:
        Path(a.json).write_text(nodedeath.dumps({"cost_at_rest": costs, "placements": placements,
                                                 "loadavg": load, "nodes": a.nodes, "services": a.services}))
    return 0


async def run_colocated(a: argparse.Namespace) -> int:
    from l2lb.lab import nodedeath
    from l2lb.lab.placement import Placement, PlacementError

    try:
        if a.placement == "ctl":
            a.placement_obj = Placement.control_plane()
        elif a.placement:
            a.placement_obj = Placement.parse(a.placement, a.nodes)
        else:
            a.placement_obj = Placement.k8s(a.nodes, ha=a.redis_ha)
    except PlacementError as e:
        print(f"bench/failover: {e}", file=sys.stderr)
        return 2
    try:
        a.scenarios = nodedeath.expand_scenarios(a.scenarios, a.nodes)
    except ValueError as e:
        print(f"bench/failover: {e}", file=sys.stderr)
        return 2
    if a.stagger_ms < 0:
        print("bench/failover: --stagger-ms must be >= 0", file=sys.stderr)
        return 2
    if a.cost_compare:
        return await run_cost_compare(a)
    # l2lb as configured first, then the baseline (the same lab, announcers with --no-peers: the failover
    # rules before the LAN peer heartbeats) with its own number of rounds
    variants: list[tuple[str, argparse.Namespace]] = [("no-peers" if a.no_peers else "l2lb", a)]
    if a.baseline == "no-peers" and not a.no_peers:
        base = argparse.Namespace(**vars(a))
        base.no_peers = True
        base.rounds = a.baseline_rounds if a.baseline_rounds is not None else a.rounds
        base.json = f"{a.json}.baseline-partial" if a.json else None
        variants.append(("no-peers", base))
    runs: dict[str, dict[str, Any]] = {}
    for name, args in variants:
        workdir = Path(tempfile.mkdtemp(prefix="l2lb-bench-nodes-"))
        netns.sweep(a.prefix)
        print(f"== {name}: announcers {'without' if args.no_peers else 'with'} LAN peer heartbeats, "
              f"{args.rounds} rounds per scenario", flush=True)
        runs[name] = await nodedeath.run(args, workdir, Progress())
        if a.json:  # what is measured so far survives an interrupted baseline
            Path(a.json).write_text(nodedeath.dumps(runs[name] if len(variants) == 1 else {"variants": runs}))
    res = runs[variants[0][0]]
    print()
    print(f"{a.nodes} nodes, placement {res['placement']}, leader election {res['leader_election']}, "
          f"Redis persistence {'on' if res['persistence'] else 'off'}, "
          f"ARP probe every {a.probe_ms:.0f} ms, {a.services} + 2 Services; node down at most {a.max_down_s:.0f} s"
          + (f"; several dying nodes {a.stagger_ms:.0f} ms apart" if a.stagger_ms else "")
          + (f"; Redis down {a.redis_down_s:.0f} s, restart gap {a.restart_gap_s:.1f} s"
             if any(s in nodedeath.REDIS_FAULTS for s in a.scenarios) else ""))
    for name, r in runs.items():
        if r.get("cost_at_rest"):
            c = r["cost_at_rest"]
            print(f"cost at rest ({name}) over {c['seconds']} s: Kubernetes API {c['api_requests_per_s']} req/s; "
                  + "; ".join(f"{k} x{v['processes']}: CPU {v['cpu_pct']:.1f} %, RSS {v['rss_mib']:.0f} MiB"
                              for k, v in sorted(c["components"].items())))
    if len(runs) > 1:
        print(nodedeath.compare_table({name: r["results"] for name, r in runs.items()}))
    elif res["results"]:
        print(nodedeath.table(res["results"]))
    for name, r in runs.items():
        for sc, summ in r["results"].items():
            ts = summ.get("to_survivor_ms") or {}
            if a.second != "none" and ts.get("max") is not None:
                print(f"{sc} ({name}): the dead nodes' VIPs until a surviving node answered, worst per round p50 "
                      f"{ts['p50']:.0f} / p99 {ts['p99']:.0f} / max {ts['max']:.0f} ms")
            if summ.get("orphaned") or summ.get("successors_hit"):
                print(f"{sc} ({name}): rounds in which every replica died: "
                      + (", ".join(f"{c} {k}" for c, k in summ["orphaned"].items()) or "none")
                      + (f"; VIPs the next victim had taken over when it died: {summ['successors_hit']}"
                         if a.stagger_ms else ""))
    for name, r in runs.items():
        for n in r["notes"]:
            print(f"note ({name}): {n}")
    if a.json:
        Path(a.json).write_text(nodedeath.dumps(res if len(runs) == 1 else {"variants": runs}))
        for _name, args in variants[1:]:
            if args.json:
                Path(args.json).unlink(missing_ok=True)
    return 0 if not any(r["cleanup"]["leftover_namespaces"] for r in runs.values()) else 1


async def main_async(a: argparse.Namespace) -> int:
    ok, why = netns.have_privileges()
    if not ok:
        print(f"bench/failover: {why}", file=sys.stderr)
        return 2
    if a.colocated:
        return await run_colocated(a)
    workdir = Path(tempfile.mkdtemp(prefix="l2lb-bench-failover-"))
    progress = Progress()
    netns.sweep(a.prefix)
    res: dict[str, Any] = {"l2lb": await run_l2lb(a, workdir, progress)}
    if not a.skip_cilium:
        res["cilium_model"] = await run_cilium_model(a, workdir, progress)
    rows: list[tuple[str, dict[str, Any]]] = []
    for fam, part in (("IPv4", res["l2lb"]), ("IPv6", res["l2lb"].get("ipv6") or {})):
        for how in ("kill", "linkdown"):
            if how in part:
                rows.append((f"l2lb {fam} " + ("SIGKILL announcer" if how == "kill" else "node link down"), part[how]))
                if "kernel_switch" in part[how]:
                    rows.append(("  client kernel entry moved (NA)", part[how]["kernel_switch"]))
    print()
    if rows:
        print(f"Client-observed outage, {a.nodes} nodes, ARP (IPv4) / Neighbor Solicitation (IPv6) probe every "
              f"{a.probe_ms:.0f} ms")
        print(f"  {'':34s} {'n':>4s} {'p50':>10s} {'p99':>10s} {'max':>10s}  dual>1s  failed")
    for label, r in rows:
        extra = (f"  {r['dual_over_1s']:7d}  {r['failed']:6d}" if "failed" in r
                 else f"  {'':7s}  {r['not_moved']:6d}")
        print(f"  {label:34s}{r['n']:4d} {fmt(r['p50']):>10s} {fmt(r['p99']):>10s} {fmt(r['max']):>10s}{extra}")
    if "cilium_model" in res and "kill" in res["l2lb"]:
        c = res["cilium_model"]
        print(f"  {'Cilium model (lease takeover only)':34s}{c['n']:4d} {fmt(c['p50']):>10s} {fmt(c['p99']):>10s} "
              f"{fmt(c['max']):>10s}")
        r = res["l2lb"]["kill"]
        if r["p50"] == r["p50"] and c["p50"] == c["p50"] and r["p50"] > 0:
            print(f"  ratio Cilium model / l2lb (p50, SIGKILL): {c['p50'] / r['p50']:.0f}x")
    tr = res["l2lb"].get("traffic") or {}
    if tr:
        print()
        sysctls = ", ".join(f"{k}={v}" for k, v in tr["client_sysctls"].items())
        print(f"Real traffic: UDP to the VIP every {a.probe_ms:.0f} ms, every node answering it (VIP on lo, as "
              f"kube-proxy IPVS), client kernel at its defaults ({sysctls})")
        print(f"  {'':34s} {'n':>4s} {'p50':>10s} {'p99':>10s} {'max':>10s}  lost p50/max  kernel moved p50/p99  "
              f"flapped  failed")
        for fam in ("ipv4", "ipv6"):
            for how in ("kill", "linkdown"):
                t = (tr.get(fam) or {}).get(how)
                if not t:
                    continue
                label = f"l2lb IPv{fam[-1]} " + ("SIGKILL announcer" if how == "kill" else "node link down")
                ks, lost = t["kernel_switch"], t["lost"]
                print(f"  {label:34s}{t['n']:4d} {fmt(t['p50']):>10s} {fmt(t['p99']):>10s} {fmt(t['max']):>10s}  "
                      f"{lost['p50']:5.0f}/{lost['max']:<6.0f}  {fmt(ks['p50']):>9s}/{fmt(ks['p99']):<10s}  "
                      f"{t['flapped_back']:7d}  {t['failed']:6d}")
                rows.append((label + " (UDP)", t))
    parts = [r for _, r in rows if "failed" in r]
    goals = all(r["p50"] <= 300 for label, r in rows if "SIGKILL" in label) \
        and all(r["p99"] <= 1000 and not r.get("dual_over_1s") and not r["failed"] for r in parts)
    print(f"  goals (SIGKILL p50 <= 300 ms, p99 <= 1 s, no dual > 1 s, no failed round): "
          f"{'met' if goals and parts else 'NOT met'}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=20, help="failovers of each kind (default 20)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--probe-ms", type=float, default=10.0)
    p.add_argument("--families", default="4,6", choices=("4,6", "4", "6", "6,4", ""),
                   help="address families of the failover rounds (default 4,6: an IPv4 and an IPv6 VIP; '' none)")
    p.add_argument("--traffic", default="6", choices=("6", "4", "4,6", "6,4", ""),
                   help="real-traffic rounds (UDP to the VIP, every node answering it like kube-proxy IPVS, the "
                        "client's kernel at its defaults) for these families after the probe rounds (default 6; '' "
                        "none)")
    p.add_argument("--traffic-rounds", type=int, help="real-traffic rounds of each kind (default: --rounds)")
    p.add_argument("--round-timeout", type=float, default=10.0, help="give up on a failover after this many s")
    p.add_argument("--prefix", default="l2bfo")
    p.add_argument("--cilium-leases", type=int, default=10, help="Services (= Leases) in the Cilium model")
    p.add_argument("--cilium-kills", type=int, default=2)
    p.add_argument("--cilium-qps", type=float, default=10.0)
    p.add_argument("--cilium-burst", type=int, default=20)
    p.add_argument("--skip-cilium", action="store_true")
    p.add_argument("--quick", action="store_true", help="3 rounds, 1 Cilium-model kill")
    p.add_argument("--json", help="write all results here")
    g = p.add_argument_group("co-located placement (issue 22) and Redis faults (issue 25)")
    g.add_argument("--colocated", action="store_true", help="node deaths / Redis faults in the co-located lab")
    g.add_argument("--redis-ha", action="store_true", help="Redis on 3 nodes with a Sentinel on each")
    g.add_argument("--placement", help="'ctl' (everything in the control-plane namespace, standbys included) or "
                   "a layout like 'redis=1;allocator=1,2;leases=1,3' (default: k8s/base's)")
    g.add_argument("--scenarios", default="redis,leases,allocator,all,nothing",
                   help="comma list: redis, leases, allocator, all, nothing (node deaths: what the dying node "
                        "holds); two nodes dying at once: joined with '+' (redis+leases, leases+allocator, "
                        "all+nothing, ...) or 'pairs' (redis+leases, redis+allocator, leases+allocator, "
                        "all+nothing, nothing+nothing; use --nodes 5); redis-kill, redis-stop, redis-restart "
                        "(Redis faults)")
    g.add_argument("--second", choices=("none", "successor"), default="none",
                   help="successor: in single node deaths, the node that first answers one of the dead node's VIPs "
                        "dies at that instant too (a death during the previous failover, on the node taking over)")
    g.add_argument("--stagger-ms", type=float, default=0.0,
                   help="several dying nodes: each dies this long after the previous one, i.e. during the "
                        "failover of the first (default 0: at the same instant)")
    g.add_argument("--no-persistence", action="store_true", help="Redis without its append-only file")
    g.add_argument("--max-down-s", type=float, default=20.0, help="a dead node returns after at most this long")
    g.add_argument("--redis-down-s", type=float, default=30.0, help="Redis kill/stop lasts this long")
    g.add_argument("--restart-gap-s", type=float, default=0.0,
                   help="redis-restart: Redis stays down this long between its exit and its start (a pod's "
                        "restart in Kubernetes takes seconds; default 0: at once)")
    g.add_argument("--services", type=int, default=6, help="extra Services besides the seed's (default 6)")
    g.add_argument("--sentinel-down-ms", type=int, default=1000)
    g.add_argument("--fast-le", action="store_true", help="2 s leader Leases (the chaos lab's) instead of the "
                   "services' defaults (leases 6 s, allocator 15 s)")
    g.add_argument("--le-backend", choices=("kube", "redis"), default="kube",
                   help="leader election of allocator and leases: kube (the Lease) or redis (short TTL key)")
    g.add_argument("--cost-s", type=float, default=0.0,
                   help="first measure the cost at rest (CPU, RSS per component, API requests/s) over this many s")
    g.add_argument("--cost-compare", action="store_true",
                   help="only the cost at rest, of single Redis and of Redis HA (3 Redis + 3 Sentinels) one "
                        "after the other in this run, printed side by side (over --cost-s, default 90 s)")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--no-peers", action="store_true",
                   help="announcers without LAN peer heartbeats (the rules before them: no freeze, no succession)")
    g.add_argument("--baseline", choices=("no-peers", "none"), default="none",
                   help="no-peers: after l2lb's rounds, run the same scenarios with --no-peers announcers and print "
                        "both side by side")
    g.add_argument("--baseline-rounds", type=int, help="rounds per scenario of the baseline (default: --rounds)")
    a = p.parse_args()
    if a.quick:
        a.rounds, a.cilium_kills = 3, 1
    if a.traffic_rounds is None:
        a.traffic_rounds = a.rounds

    async def runner() -> int:
        # SIGTERM/SIGINT cancel the run, so that its cleanup (processes, namespaces) still happens
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: task.cancel() if task else None)
        try:
            return await main_async(a)
        except asyncio.CancelledError:
            print("bench/failover: interrupted; cleaned up", file=sys.stderr)
            return 130

    return asyncio.run(runner())


if __name__ == "__main__":
    raise SystemExit(main())
