"""``l2lb sim``: run seeds of the deterministic cluster simulation, check invariants, print reproducers.

    l2lb sim --seeds 200 --minutes 10              # seeds 0..199, 10 simulated minutes each
    l2lb sim --seed 17 --minutes 10 --trace        # one seed, with the trace of what happened
    l2lb sim --seed 17 --faults FILE.json          # replay an exact schedule (what a reproducer prints)

A failing seed is shrunk (delta debugging over its fault schedule) and printed as a command that
replays the smallest schedule still failing, with the trace of that run. The same seed and the same
schedule always give the same run: the simulator reads no real clock and draws every random choice
from the seed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from l2lb.sim import scenarios
from l2lb.sim.faults import KINDS, Fault, generate, shrink
from l2lb.sim.scenarios import SCENARIOS
from l2lb.sim.world import Report, World, WorldConfig

__all__ = ["Outcome", "main", "run_seed", "schedule"]


@dataclass
class Outcome:
    report: Report
    trace: list[str]
    shrunk: list[Fault] | None = None


def schedule(seed: int, cfg: WorldConfig, minutes: float, per_minute: float,
             kinds: dict[str, float] | None = None) -> list[Fault]:
    return generate(seed, nodes=cfg.node_names(), minutes=minutes, per_minute=per_minute, kinds=kinds)


def run_seed(seed: int, cfg: WorldConfig, faults: Sequence[Fault], minutes: float) -> Outcome:
    w = World(cfg, seed)
    rep = w.run(list(faults), minutes * 60.0)
    return Outcome(rep, w.trace)


def _parse_kinds(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise SystemExit(f"l2lb sim: unknown fault kind {name!r}; known: {', '.join(sorted(KINDS))}")
        out[name] = float(w) if w else KINDS[name]
    return out


def _config(args: argparse.Namespace) -> WorldConfig:
    return WorldConfig(nodes=args.nodes, services=args.services, redis_ha=not args.single_redis,
                       elide=not args.no_elide, peers=not args.no_peers)


def _reproducer(args: argparse.Namespace, seed: int, faults: Sequence[Fault]) -> str:
    spec = json.dumps([asdict(f) for f in faults])
    flags = f"--nodes {args.nodes} --services {args.services} --minutes {args.minutes:g}"
    if args.single_redis:
        flags += " --single-redis"
    if args.no_elide:
        flags += " --no-elide"
    if args.no_peers:
        flags += " --no-peers"
    return f"l2lb sim --seed {seed} {flags} --faults-json '{spec}' --trace"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def run_scenarios(args: argparse.Namespace) -> int:
    names = sorted(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for n in names:
        if n not in SCENARIOS:
            raise SystemExit(f"l2lb sim: unknown scenario {n!r}; known: {', '.join(sorted(SCENARIOS))}")
    print(f"{'scenario':26} {'rounds':>6} {'outage p50':>10} {'p99':>8} {'max':>8} {'dual max':>8}  violations")
    failed = 0
    for n in names:
        sc = SCENARIOS[n]
        seed = args.seed if args.seed is not None else 1
        faults = scenarios.schedule(sc, seed, args.rounds)
        minutes = (faults[-1].t + sc.period) / 60.0
        out = run_seed(seed, replace(sc.cfg, peers=not args.no_peers), faults, minutes)
        rep = out.report
        worst: list[float] = []
        skipped = {line.split("t=")[2].split()[0] for line in out.trace if " SKIPPED " in line}
        faults = [f for f in faults if f"{f.t:.3f}" not in skipped and f.kind != "create_service"]
        for f in faults:  # per round: the longest outage that began during the fault or its recovery
            start, end = f.t - 0.01, f.t + f.duration + 5.0
            worst.append(max((o[2] for o in rep.outages if start <= o[1] < end), default=0.0))
        dual = max((d[2] for d in rep.duals), default=0.0)
        print(f"{n:26} {len(faults):6} {_pct(worst, 0.5):9.3f}s {_pct(worst, 0.99):7.3f}s {max(worst):7.3f}s "
              f"{dual:7.3f}s  {len(rep.violations)}")
        for v in rep.violations[:3]:
            print(f"      {v.invariant} at t={v.t:.3f}: {v.detail}")
        failed += 0 if rep.ok else 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="l2lb sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, help="run this one seed")
    ap.add_argument("--seeds", type=int, default=20, help="run seeds 0..N-1 (default 20)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated minutes per seed (default 10)")
    ap.add_argument("--faults-per-minute", type=float, default=2.0)
    ap.add_argument("--kinds", help="fault kinds and weights, e.g. node_death=3,redis_restart (default: all)")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--services", type=int, default=4)
    ap.add_argument("--single-redis", action="store_true", help="one Redis (no replicas, no Sentinel)")
    ap.add_argument("--no-peers", action="store_true",
                    help="announcers without LAN peer heartbeats (no freeze, no takeovers): the behaviour before them")
    ap.add_argument("--no-elide", action="store_true", help="simulate steady stretches too (slower)")
    ap.add_argument("--faults-json", help="replay this schedule (a JSON list of faults, as a reproducer prints)")
    ap.add_argument("--no-shrink", action="store_true", help="do not shrink failing schedules")
    ap.add_argument("--trace", action="store_true", help="print the trace of each run")
    ap.add_argument("--json", action="store_true", help="one JSON object per seed")
    ap.add_argument("--scenario", help="run a named scenario instead of random faults: "
                    + ", ".join(sorted(SCENARIOS)) + " (or 'all')")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the scenario (default 10)")
    args = ap.parse_args(argv)
    if args.scenario:
        return run_scenarios(args)
    if args.nodes < 1 or args.services < 1 or args.minutes <= 0:
        ap.error("--nodes, --services and --minutes must be positive")
    cfg = _config(args)
    kinds = _parse_kinds(args.kinds)
    seeds = [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.seeds))
    failed = 0
    for seed in seeds:
        if args.faults_json:
            try:
                faults = [Fault(**f) for f in json.loads(args.faults_json)]
            except (ValueError, TypeError) as e:
                ap.error(f"--faults-json: {e}")
        else:
            faults = schedule(seed, cfg, args.minutes, args.faults_per_minute, kinds)
        out = run_seed(seed, cfg, faults, args.minutes)
        rep = out.report
        if not rep.ok and not args.no_shrink and not args.faults_json:
            def fails(fs: list[Fault], seed: int = seed) -> bool:
                return not run_seed(seed, cfg, fs, args.minutes).report.ok

            out.shrunk = shrink(faults, fails, budget=60)
        if args.json:
            print(json.dumps({"seed": seed, "ok": rep.ok, "sim_s": round(rep.sim_seconds, 3), "steps": rep.steps,
                              "faults": len(rep.faults),
                              "violations": [asdict(v) for v in rep.violations],
                              "max_outage_s": round(max((o[2] for o in rep.outages), default=0.0), 3),
                              "max_dual_s": round(max((d[2] for d in rep.duals), default=0.0), 3),
                              "shrunk": [asdict(f) for f in out.shrunk] if out.shrunk is not None else None}))
        else:
            worst = max((o[2] for o in rep.outages), default=0.0)
            dual = max((d[2] for d in rep.duals), default=0.0)
            status = "ok" if rep.ok else "FAIL"
            print(f"seed {seed:>5}: {status:4}  {rep.sim_seconds / 60:6.1f} sim-min  {len(rep.faults):3} faults  "
                  f"{rep.steps:8} steps  worst outage {worst:6.3f} s  worst dual {dual:5.3f} s")
            for v in rep.violations[:5]:
                print(f"      {v.invariant} at t={v.t:.3f}: {v.detail}")
        if args.trace or (not rep.ok and not args.json):
            final = out
            if out.shrunk is not None:
                final = run_seed(seed, cfg, out.shrunk, args.minutes)
                print(f"      shrunk to {len(out.shrunk)} fault(s); reproduce with:")
                print("      " + _reproducer(args, seed, out.shrunk))
            lines = final.trace if args.trace else final.trace[-40:]
            for line in lines:
                print("      | " + line)
        if not rep.ok:
            failed += 1
    if len(seeds) > 1 and not args.json:
        print(f"{len(seeds) - failed}/{len(seeds)} seeds passed")
    return 1 if failed else 0
