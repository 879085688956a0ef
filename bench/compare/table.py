"""Markdown rows for README's "Measured" table from a bench/compare --json file.

    python bench/compare/table.py results.json
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


def main(path: str) -> int:
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
        rows.append(f"| ARP replies in the lab (`bench/compare`, bench/arp's Go generator, 3 nodes) | {arp(l2['arp'])} "
                    f"| {ml}: {arp(m['arp'])} |")
    for n in ("3", "100", "1000"):
        a, b = (l2.get("idle") or {}).get(n), (m.get("idle") or {}).get(n)
        if not a or not b:
            continue
        rows.append(
            f"| idle cost, {n} Services, 60 s at rest: per node / control plane (CPU % of a core, RSS) | "
            f"announcer {a['per_node']['cpu_pct']:.1f} %, {a['per_node']['rss_mib']:.0f} MiB / allocator+leases+redis "
            f"{a['control_plane']['cpu_pct']:.1f} %, {a['control_plane']['rss_mib']:.0f} MiB | {ml}: speaker "
            f"{b['per_node']['cpu_pct']:.1f} %, {b['per_node']['rss_mib']:.0f} MiB / controller "
            f"{b['control_plane']['cpu_pct']:.1f} %, {b['control_plane']['rss_mib']:.0f} MiB |")
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
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
