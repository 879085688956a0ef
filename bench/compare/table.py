"""Markdown from a bench/compare --json file: the rows for README's "Measured" table, then (with
``--detail``) the full tables for bench/compare/results: ARP latency at every rate (with the kernel of
the same node as baseline), idle CPU/RSS/wakeups per process, API requests by kind, machine load.

    python bench/compare/table.py results.json            # README rows
    python bench/compare/table.py --detail results.json   # + detail tables
"""

from __future__ import annotations

import json
import sys
from typing import Any


def ms(v: Any) -> str:
    if v is None or v != v:
        return "n/a"
    v = float(v)
    return f"{v / 1000:.1f} s" if v >= 1000 else f"{v:.0f} ms"


def ratio(a: Any, b: Any) -> str:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return "n/a"
    if a != a or b != b or b <= 0:
        return "n/a"
    return f"{a / b:.0f}x" if a / b >= 10 else f"{a / b:.1f}x"


def cost(x: dict[str, Any]) -> str:
    w = x.get("wakeups_per_s")
    return f"{x['cpu_pct']:.1f} %, {x['rss_mib']:.0f} MiB" + (f", {w:.0f} wakeups/s" if w is not None else "")


def load(x: dict[str, Any] | None) -> str:
    if not x:
        return "n/a"
    return (f"{x['loadavg_start'][0]:.1f}→{x['loadavg_end'][0]:.1f} (max {x['loadavg1_max']:.1f}), machine CPU "
            f"{x['machine_cpu_busy_pct']:.0f} % of {x['cpus']}")


def kinds(api: dict[str, Any], n: int = 5) -> str:
    top = api.get("top") or {}
    return ", ".join(f"{k} {v}" for k, v in list(top.items())[:n]) or "none"


def detail(r: dict[str, Any]) -> list[str]:
    systems = [(s, r[s]) for s in ("l2lb", "metallb") if s in r]
    out: list[str] = []
    arps = [(x["label"], x["arp"]) for _s, x in systems if "arp" in x and "skipped" not in x["arp"]]
    if arps:
        out += ["", "ARP replies: p50 / p99 / max latency (µs) and loss per rate asked (1 s per step; the rate the "
                "generator reached in brackets); kernel = the same node answering for an address on its LAN interface, "
                "right after", ""]
        cols = []
        for label, a in arps:
            cols.append((label, a))
            if a.get("kernel"):
                cols.append((f"kernel ({label} run)", a["kernel"]))
        out.append("| rate | " + " | ".join(c for c, _ in cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        rates: list[int] = []
        for _c, a in cols:
            for st in [a["low"], *a.get("steps", [])]:
                if st["rate"] not in rates:
                    rates.append(st["rate"])
        for rate in sorted(rates):
            cells = []
            for _c, a in cols:
                st = next((x for x in [a["low"], *a.get("steps", [])] if x["rate"] == rate), None)
                if st is None:
                    cells.append("—")
                    continue
                reached = "" if st["achieved_rate"] >= 0.98 * rate else f" [{st['achieved_rate']}/s]"
                cells.append(f"{st['p50_us']:.0f} / {st['p99_us']:.0f} / {st['max_us']:.0f}, "
                             f"lost {st['lost']}{reached}")
            out.append(f"| {rate}/s | " + " | ".join(cells) + " |")
        out.append("")
        for label, a in cols:
            out.append(f"* {label}: stop: {a.get('stop') or 'every rate'}; machine load {load(a.get('load'))}"
                       + (f"; RSS {a['rss_mib']} MiB; VIP on {a['node']} before, {a['node_after']} after"
                          if "rss_mib" in a else ""))
    scales = sorted({int(n) for _s, x in systems for n in (x.get("idle") or {})})
    if scales:
        out += ["", "Idle, 60 s at rest: CPU (% of one core), RSS (highest sample, MiB), wakeups/s (voluntary + "
                "involuntary context switches of every thread) per process; API requests in the same window", "",
                "| Services | system | process | CPU % | RSS MiB | wakeups/s |", "|---|---|---|---|---|---|"]
        for n in scales:
            for _s, x in systems:
                w = (x.get("idle") or {}).get(str(n))
                if not w:
                    continue
                for proc, v in w["procs"].items():
                    out.append(f"| {n} | {x['label']} | {proc.split(':', 1)[1]} | {v['cpu_pct']:.2f} | "
                               f"{v['rss_mib']:.1f} | {v.get('wakeups_per_s', 'n/a')} |")
                out.append(f"| {n} | {x['label']} | **per node (mean)** | {w['per_node']['cpu_pct']:.2f} | "
                           f"{w['per_node']['rss_mib']:.1f} | {w['per_node'].get('wakeups_per_s', 'n/a')} |")
                out.append(f"| {n} | {x['label']} | **control plane (sum)** | {w['control_plane']['cpu_pct']:.2f} | "
                           f"{w['control_plane']['rss_mib']:.1f} | {w['control_plane'].get('wakeups_per_s', 'n/a')} |")
        out += ["", "| Services | system | machine load in the window |", "|---|---|---|"]
        for n in scales:
            for _s, x in systems:
                w = (x.get("idle") or {}).get(str(n))
                if w:
                    out.append(f"| {n} | {x['label']} | {load(w.get('load'))} |")
    if not scales and not r.get("cilium") and not any("churn" in x for _s, x in systems):
        return out
    out += ["", "Kubernetes API requests (the real kube-apiserver's audit log): at rest (the 60 s idle window), "
            "absorbing a scale-up (from its start until 10 s without a request, Lease renewals aside), under churn", "",
            "| window | system | requests | req/s | by user | by kind (top 5) |", "|---|---|---|---|---|---|"]
    for n in scales:
        for _s, x in systems:
            w = (x.get("idle") or {}).get(str(n))
            if w:
                a = w["api"]
                out.append(f"| at rest, {n} Services | {x['label']} | {a['requests']} | {a['req_per_s']:.2f} | "
                           f"{a['by_user']} | {kinds(a)} |")
        for _s, x in systems:
            q = (x.get("settle") or {}).get(str(n))
            if q:
                out.append(f"| scale-up to {n} Services, until quiet ({q['waited_s']} s more; last request "
                           f"{q.get('last_request_after_s')} s after the start; quiet={q['quiet']}) | {x['label']} | "
                           f"{q['requests']} | — | {q['by_user']} | {kinds(q)} |")
    for _s, x in systems:
        if "churn" in x:
            c = x["churn"]
            out.append(f"| churn, 100 Services, {c['seconds']:.0f} s ({c['replaced']} replaced) | {x['label']} | "
                       f"{c['api']['requests']} | {c['api']['req_per_s']:.2f} | {c['api']['by_user']} | "
                       f"{kinds(c['api'])} |")
    for c in r.get("cilium", []):
        if "skipped" in c:
            out.append(f"| Cilium model | skipped: {c['skipped']} | | | | |")
            continue
        out.append(f"| Cilium model (client-go), {c['services']} Services, {c['mode']} | Cilium model | "
                   f"{c['api']['requests']} | {c['req_per_s']:.2f} (demanded {c['demanded_req_per_s']}) | "
                   f"live Leases min {c['announced']}/{c['services']} | {kinds(c['api'])} |")
    loads = [("churn", x["label"], x["churn"].get("load")) for _s, x in systems if "churn" in x]
    loads += [(f"Cilium {c['services']} {c['mode']}", "Cilium model", c.get("load"))
              for c in r.get("cilium", []) if "skipped" not in c]
    if loads:
        out += ["", "| window | system | machine load |", "|---|---|---|"]
        out += [f"| {w} | {s} | {load(x)} |" for w, s, x in loads]
    return out


def main(path: str, with_detail: bool = False) -> int:
    with open(path) as f:
        r = json.load(f)
    l2, m = r.get("l2lb", {}), r.get("metallb", {})
    ml = m.get("label", "MetalLB")
    rows = []
    names = {"kill": "SIGKILL of the announcing process", "linkdown": "announcing node's link down",
             "stop": "SIGSTOP of the announcing process for 30 s"}
    for how in ("kill", "linkdown", "stop"):
        a, b = (l2.get("failover") or {}).get(how), (m.get("failover") or {}).get(how)
        if not a or not b:
            continue
        rows.append(
            f"| client UDP outage, {names[how]} (`bench/compare`, {a['rounds']} rounds, query every 10 ms) | "
            f"p50 {ms(a['p50'])}, p99 {ms(a['p99'])}, max {ms(a['max'])}; other node answers ARP after "
            f"{ms(a['first_new_p50'])} (p50); dual ARP answers in {a['arp_dual_rounds']} rounds; flap-back "
            f"{a['flapped_back']}/{a['rounds']} | {ml}: p50 {ms(b['p50'])}, p99 {ms(b['p99'])}, max {ms(b['max'])} "
            f"(p50 {ratio(b['p50'], a['p50'])}); other node after {ms(b['first_new_p50'])}; dual in "
            f"{b['arp_dual_rounds']} rounds; flap-back {b['flapped_back']}/{b['rounds']} |")
    if "arp" in l2 and "arp" in m and "skipped" not in l2["arp"] and "skipped" not in m["arp"]:
        def arp(x: dict[str, Any]) -> str:
            best = (x.get("best") or {}).get("achieved_rate", "none")
            return (f"p50 {x['low']['p50_us']:.0f} µs, p99 {x['low']['p99_us']:.0f} µs at 1000/s; 0 loss up to "
                    f"{best}/s ({x['stop'] or 'generator limit'})")
        def kern(x: dict[str, Any]) -> str:
            k = x.get("kernel")
            if not k:
                return ""
            return f"; kernel of the same node: p50 {k['low']['p50_us']:.0f} µs, p99 {k['low']['p99_us']:.0f} µs"
        rows.append(f"| ARP replies in the lab (`bench/compare`, bench/arp's Go generator, 3 nodes) | {arp(l2['arp'])}"
                    f"{kern(l2['arp'])} | {ml}: {arp(m['arp'])}{kern(m['arp'])} |")
    for n in ("3", "100", "1000"):
        a, b = (l2.get("idle") or {}).get(n), (m.get("idle") or {}).get(n)
        if not a or not b:
            continue
        rows.append(
            f"| idle cost, {n} Services, 60 s at rest: per node / control plane (CPU % of a core, RSS) | "
            f"announcer {cost(a['per_node'])} / allocator+leases+redis {cost(a['control_plane'])} | {ml}: speaker "
            f"{cost(b['per_node'])} / controller {cost(b['control_plane'])} "
            f"(l2lb per node: {ratio(a['per_node']['cpu_pct'], b['per_node']['cpu_pct'])} the CPU, "
            f"{ratio(a['per_node']['rss_mib'], b['per_node']['rss_mib'])} the RSS) |")
    cil = {(x.get("services"), x.get("mode")): x for x in r.get("cilium", []) if "skipped" not in x}
    for n in ("3", "100", "1000"):
        a, b = (l2.get("idle") or {}).get(n), (m.get("idle") or {}).get(n)
        if not a or not b:
            continue
        c = cil.get((int(n), "rest"))
        ctext = (f"; Cilium model (client-go): {c['req_per_s']:.1f} req/s, live Leases min {c['announced']}/{n}"
                 if c else "")
        rows.append(f"| Kubernetes API requests at rest, {n} Services x 3 nodes (real kube-apiserver's audit log) | "
                    f"{a['api']['req_per_s']:.2f} req/s | {ml}: {b['api']['req_per_s']:.2f} req/s{ctext} |")
    if "churn" in l2 and "churn" in m:
        c = cil.get((100, "churn"))
        ctext = f"; Cilium model: {c['req_per_s']:.1f} req/s" if c else ""
        rows.append(f"| API requests under churn, 100 Services (1 replaced/s, a node's process killed every 6 s) | "
                    f"{l2['churn']['api']['req_per_s']:.2f} req/s | {ml}: {m['churn']['api']['req_per_s']:.2f} "
                    f"req/s{ctext} |")
    if with_detail:
        rows += detail(r)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    detail_flag = "--detail" in args
    files = [x for x in args if x != "--detail"]
    if len(files) != 1:
        print("usage: python bench/compare/table.py [--detail] results.json", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(files[0], detail_flag))
