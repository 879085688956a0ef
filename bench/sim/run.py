"""How much cluster time the deterministic simulator covers per minute of CPU, beside the real-time
chaos suite (bench/chaos), which covers one minute of cluster time per minute of wall clock.

    python bench/sim/run.py                      # the default matrix (a few minutes of CPU)
    python bench/sim/run.py --seeds 20 --minutes 30 --faults-per-minute 1

Rows per fault rate: every ms simulated (the baseline of the simulator itself: ``--no-elide``), steady
stretches elided with ``--minutes`` per seed, and elided with ``--long-minutes`` per seed (a cluster's
start and the final settle are paid once per seed; what is left is the cost of each fault).

For each configuration: seeds run, simulated minutes (elided steady stretches included and shown
apart), CPU seconds (this process), simulated minutes per CPU minute, steps (events) per CPU second,
invariant violations. The simulator is single-threaded and deterministic: CPU time, not wall time, is
the honest cost on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from l2lb.sim.run import run_seed, schedule
from l2lb.sim.world import WorldConfig


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(label: str, cfg: WorldConfig, seeds: int, minutes: float, per_minute: float) -> dict[str, float]:
    t0, steps, sim_s, elided_s, failed = cpu(), 0, 0.0, 0.0, 0
    for seed in range(seeds):
        out = run_seed(seed, cfg, schedule(seed, cfg, minutes, per_minute), minutes)
        steps += out.report.steps
        sim_s += out.report.sim_seconds
        elided_s += out.report.counters.get("elided_ms", 0) / 1000.0
        failed += 0 if out.report.ok else 1
    used = cpu() - t0
    row = {"sim_min": sim_s / 60, "elided_min": elided_s / 60, "cpu_s": used,
           "sim_min_per_cpu_min": (sim_s / 60) / (used / 60) if used else 0.0,
           "steps_per_cpu_s": steps / used if used else 0.0, "failed": failed}
    print(f"  {label:58} {row['sim_min']:8.1f} {row['elided_min']:8.1f} {used:8.1f} "
          f"{row['sim_min_per_cpu_min']:10.0f} {row['steps_per_cpu_s']:10.0f} {failed:6d}/{seeds}")
    sys.stdout.flush()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--long-minutes", type=float, default=60.0, help="minutes per seed of the long rows (0: none)")
    ap.add_argument("--full-seeds", type=int, default=4, help="seeds of the every-ms rows (slow)")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--faults-per-minute", type=float, action="append",
                    help="repeatable; default: 0.2, 1 and 6")
    a = ap.parse_args(argv)
    rates = a.faults_per_minute or [0.2, 1.0, 6.0]
    print(f"deterministic simulator, {a.nodes} nodes, 4 Services, Redis + 2 replicas + 3 sentinels, "
          f"2 leases, 2 allocators; {a.seeds} seeds per row ({a.full_seeds} every ms) "
          f"({time.strftime('%Y-%m-%d')})")
    print(f"  {'configuration':58} {'sim-min':>8} {'elided':>8} {'cpu-s':>8} {'sim-min/':>10} {'steps/':>10} "
          f"{'failed':>6}")
    print(f"  {'':58} {'':>8} {'':>8} {'':>8} {'cpu-min':>10} {'cpu-s':>10}")
    rows = {}
    for rate in rates:
        runs = [(False, a.full_seeds, a.minutes), (True, a.seeds, a.minutes)]
        if a.long_minutes:
            runs.append((True, a.seeds, a.long_minutes))
        for elide, seeds, minutes in runs:
            cfg = WorldConfig(nodes=a.nodes, elide=elide)
            label = (f"{rate:g} faults/min, {minutes:g}-min seeds, "
                     f"{'steady stretches elided' if elide else 'every ms simulated'}")
            rows[(rate, elide, minutes)] = measure(label, cfg, seeds, minutes, rate)
    print("  baseline: the real-time chaos suite (bench/chaos) covers 1 cluster-minute per wall-minute "
          "(and needs the whole 2-core machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
