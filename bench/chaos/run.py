"""Chaos run on the lab topology: seeded faults + churn, invariants checked from outside, a report.

    sudo python bench/chaos/run.py --seed 1 --duration 600          # the long run (10 min of faults)
    sudo python bench/chaos/run.py --seed 7 --duration 60 --json out.json

Exit status 0 when no invariant was violated, 1 otherwise, 2 when the lab cannot run here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from l2lb.lab import chaos


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--churn", type=float, default=1.0, help="Service/pool changes per second (default 1)")
    p.add_argument("--probe-ms", type=float, default=50.0, help="ARP probe interval per VIP (default 50)")
    p.add_argument("--prefix", default="l2chb", help="namespace name prefix (default l2chb)")
    p.add_argument("--workdir", help="logs go here (default: a new temp dir)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--colocated", action="store_true",
                   help="Redis, allocator and leases inside the node namespaces as k8s/base places them "
                        "(the API server stays in the control-plane namespace)")
    p.add_argument("--redis-ha", action="store_true", help="with --colocated: Redis + Sentinel on 3 nodes")
    p.add_argument("--placement", help="with --colocated: explicit layout, e.g. 'redis=1;allocator=1,2;leases=1,3'")
    p.add_argument("--le-backend", choices=("kube", "redis"), default="kube",
                   help="with --colocated: leader election of allocator and leases")
    p.add_argument("--node-faults", action="store_true",
                   help="also node deaths (cable out + SIGKILL of everything on the node), partitions of one "
                        "node from all but the LAN clients, Redis down for everybody while a node dies")
    p.add_argument("--kinds", help="only these fault kinds, comma-separated, equally weighted (e.g. 'loss', "
                                   "'loss,node_death'); 'loss' (10 or 50 %% of one node's frames for 3-8 s, LAN "
                                   "clients exempt) is drawn only when named here")
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()] if a.kinds else None
    if kinds:
        unknown = sorted(set(kinds) - set(chaos.ALL_FAULT_KINDS))
        if unknown:
            print(f"chaos: unknown fault kind(s) {unknown}; choose from {', '.join(chaos.ALL_FAULT_KINDS)}",
                  file=sys.stderr)
            return 2
    placement = None
    if a.colocated:
        from l2lb.lab.placement import Placement, PlacementError

        try:
            placement = Placement.parse(a.placement, a.nodes) if a.placement else Placement.k8s(a.nodes,
                                                                                              ha=a.redis_ha)
        except PlacementError as e:
            print(f"chaos: {e}", file=sys.stderr)
            return 2
    try:
        report = asyncio.run(chaos.run_chaos(a.seed, a.duration, nodes=a.nodes, prefix=a.prefix, churn_per_s=a.churn,
                                             probe_ms=a.probe_ms, workdir=Path(a.workdir) if a.workdir else None,
                                             quiet=a.quiet, placement=placement, le_backend=a.le_backend,
                                             node_faults=a.node_faults, kinds=kinds))
    except RuntimeError as e:
        print(f"chaos: {e}", file=sys.stderr)
        return 2
    print(report.text())
    if a.json:
        Path(a.json).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
