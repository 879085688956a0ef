"""Print the figures of one tests/e2e/test_k8s.py run (its results JSON) as Markdown tables.

    python bench/k8s/table.py ~/.cache/l2lb/e2e-k8s-results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ms(d: dict[str, Any]) -> str:
    """first outage (the failover) / lost queries; the longest gap and later losses when they differ."""
    if not d.get("recovered", True):
        return f"{d['outage_ms'] / 1000:.1f} s, not back / {d['lost']}"
    first = d.get("first_outage_ms")
    if first is None:
        return f"none lost (longest gap {d['outage_ms'] / 1000:.2f} s)"
    out = f"{first / 1000:.2f} s / {d['lost'] - d.get('lost_later', 0)}"
    if first is not None and d["outage_ms"] > first + 1:
        out += f" (longest gap {d['outage_ms'] / 1000:.2f} s)"
    if d.get("lost_later"):
        out += f" (+{d['lost_later']} lost later)"
    return out


def main(path: str) -> None:
    r = json.loads(Path(path).read_text())
    t = r.get("timing", {})
    print(f"run {r.get('date')} UTC, {r.get('machine')}; lock: {r.get('bench_lock')}; faults {r.get('faults_asked')}")
    print(f"cluster start {t.get('cluster_start_total')} s (setup incl. images/builds/CoreDNS "
          f"{t.get('setup_total')} s); kubectl apply -k -> first DNS answer through the VIP "
          f"{r.get('apply_to_first_dns_answer_s')} s")
    print()
    print("UDP/TCP: the client's first outage (from its last answer before the first lost query to the next answer) "
          "/ queries lost in it; later losses (a Service still balancing to a dead node's backend) apart.")
    print()
    print("| fault | node: roles at the fault | UDP outage / lost | TCP outage / lost | ARP: new MAC at | "
          "dual answers | notes |")
    print("|---|---|---|---|---|---|---|")
    for f in r.get("faults", []):
        a = f["arp"]
        new = "-" if a.get("first_new_answer_ms") is None else f"{a['first_new_answer_ms']:.0f} ms"
        notes = "; ".join(n for n in f["notes"] if not n.startswith(("held", "no lock", "NOT held")))
        print(f"| {f['name']} {f['what']} | {f['node']}: {', '.join(f['roles']) or '-'} | {_ms(f['udp'])} | "
              f"{_ms(f['tcp'])} | {new} | {a.get('dual_answers')} | {notes} |")
    print()
    for m in r.get("moves", []):
        print(f"- move at {m['t_s']} s: {m['from']} -> {m['to']} ({m['reason']}, gap {m.get('gap_ms')} ms), "
              f"during {m['during']}")
    if r.get("unexplained_moves"):
        print(f"UNEXPLAINED MOVES: {r['unexplained_moves']}")


if __name__ == "__main__":
    main(sys.argv[1])
