"""Behaviour digest of simulator runs: the same seed must give the same digest before and after a change
that only makes the simulator (or a machine) cheaper.

    python bench/sim/digest.py --seeds 8 --minutes 10 --faults-per-minute 0.2 1 6 [--no-elide] > before.txt
    (change the code)
    python bench/sim/digest.py ... > after.txt && diff before.txt after.txt

One line per (rate, seed): a SHA-256 over the trace, the report (verdict, outages, dual answers, counters,
simulated seconds; not the step count, which a cheaper simulator may lower), every assignment message
published (with its entry id), the Services' final statuses and the kernel's RNG state at the end (one
random draw more or fewer anywhere shows). The step count is printed beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import asdict

from l2lb.sim.run import schedule
from l2lb.sim.world import World, WorldConfig


def digest(seed: int, cfg: WorldConfig, minutes: float, per_minute: float) -> tuple[str, int]:
    w = World(cfg, seed)
    rep = w.run(schedule(seed, cfg, minutes, per_minute), minutes * 60.0)
    h = hashlib.sha256()
    for line in w.trace:
        h.update(line.encode() + b"\n")
    d = asdict(rep)
    d.pop("steps")
    h.update(repr(sorted(d.items())).encode())
    h.update(repr(w.issued_log).encode())
    h.update(repr(sorted(w.api.services.items())).encode())
    h.update(repr(w.kernel.rng.getstate()).encode())
    return h.hexdigest()[:16], rep.steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--faults-per-minute", type=float, nargs="+", default=[0.2, 1.0, 6.0])
    ap.add_argument("--no-elide", action="store_true")
    a = ap.parse_args(argv)
    cfg = WorldConfig(elide=not a.no_elide)
    for rate in a.faults_per_minute:
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            dg, steps = digest(seed, cfg, a.minutes, rate)
            print(f"rate {rate:g} seed {seed} {'no-elide ' if a.no_elide else ''}digest {dg} steps {steps}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
