"""The simulator's message-loss model beside the real-time lab: the fault loop of ``bench/chaos --kinds loss``
(one node at a time loses 10 or 50 % of its frames for 3-8 s, 0.5-2 s apart; LAN clients exempt) replayed in
the simulator with the lab's shape (3 nodes, Redis + Sentinel on all three, the chaos lab's fast leader
election: 2 s Lease, 1.5 s renew deadline, 0.3 s retry).

    python bench/sim/loss_model.py --seeds 10 --duration 120
    python bench/chaos/run.py --colocated --redis-ha --nodes 3 --kinds loss --duration 120   # the lab

Prints per seed the worst outage and the worst dual answer of any VIP, and over all seeds the share of
outage episodes longer than 0.5 s and 1 s -- the figures to hold against the lab's report. A model that
disagrees with the lab (e.g. loss that fails Redis commands instead of delaying them) shows here first.
"""

from __future__ import annotations

import argparse
import sys

from l2lb.sim.run import run_seed
from l2lb.sim.scenarios import LAB_CHAOS, chaos_loss_schedule


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of faults per seed (default 120)")
    a = ap.parse_args(argv)
    if a.seeds < 1 or a.duration <= 10:
        print("loss_model: --seeds >= 1 and --duration > 10 s", file=sys.stderr)
        return 2
    episodes: list[float] = []
    bad = 0
    print(f"{'seed':>5} {'faults':>6} {'worst outage':>13} {'worst dual':>11} violations")
    for seed in range(a.seeds):
        faults = chaos_loss_schedule(seed, a.duration, LAB_CHAOS.node_names())
        out = run_seed(seed, LAB_CHAOS, faults, a.duration / 60.0)
        rep = out.report
        worst = max((o[2] for o in rep.outages), default=0.0)
        dual = max((d[2] for d in rep.duals), default=0.0)
        episodes += [o[2] for o in rep.outages]
        bad += 0 if rep.ok else 1
        print(f"{seed:5d} {len(faults):6d} {worst:12.3f}s {dual:10.3f}s {len(rep.violations)}")
    n = len(episodes)
    over = [sum(1 for e in episodes if e > lim) for lim in (0.5, 1.0)]
    print(f"outage episodes {n}: > 0.5 s {over[0]}, > 1 s {over[1]}; max {max(episodes, default=0.0):.3f} s; "
          f"seeds with a violation {bad}/{a.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
