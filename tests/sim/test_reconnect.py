"""Simulator regressions of leases' reconnect grace (issue 22): a short Redis outage moves no VIP away from a live
node, and a node that dies during it or just after it still loses its VIPs within the LAN takeover time."""

from __future__ import annotations

import pytest

from l2lb.sim.faults import Fault
from l2lb.sim.run import run_seed
from l2lb.sim.world import WorldConfig

CFG = WorldConfig(nodes=5)


@pytest.mark.parametrize("stop_s", [0.223, 1.383])
def test_seed_19_a_redis_sigstop_moves_no_vip_away_from_a_live_node(stop_s: float) -> None:
    """Seed 19 (``l2lb sim --seeds 30``): the Redis master SIGSTOPped for 0.223 s (t=412.4) or 1.383 s (t=130.6,
    Sentinel promotes a replica). Leases read its own node's heartbeat first, counted the other nodes' silence
    from their last heartbeat before the stop and gave every VIP to that node (3 moves, each a GARP storm)."""
    out = run_seed(19, CFG, [Fault(30.0, "redis_stop", "n1", stop_s)], 1.0)
    assert out.report.ok, "\n".join([str(v) for v in out.report.violations] + out.trace[-30:])
    moved = [line for line in out.trace if "(reassigned)" in line]
    assert not moved, "\n".join(out.trace)
    assert any("answers" in line for line in out.trace)  # the trace is the one checked (VIPs were placed)


@pytest.mark.parametrize("after_s", [0.2, 1.3, 2.0])
def test_a_holder_that_dies_during_or_just_after_a_redis_sigstop_loses_its_vip_within_the_takeover_time(
        after_s: float) -> None:
    """n4 holds .131 and dies 0.2 s into the 1.383 s stop (its successor takes over on the LAN), at its end, or
    0.6 s after it, before its own client was heard again (leases renews the successor by then, so only leases
    can move it: the grace must not delay that -- the nodes heard since report n4 silent on the LAN)."""
    faults = [Fault(30.0, "redis_stop", "n1", 1.383), Fault(30.0 + after_s, "node_death", "n4", 20.0)]
    out = run_seed(19, CFG, faults, 1.0)
    assert out.report.ok, "\n".join([str(v) for v in out.report.violations] + out.trace[-30:])
    assert any(" n4 answers 198.51.100.131@" in line for line in out.trace[:20])  # n4 holds it
    worst = max((o[2] for o in out.report.outages if o[1] >= 29.9), default=0.0)
    assert worst <= 0.5, "\n".join(out.trace)
    taken = [line for line in out.trace if " answers " in line and "198.51.100.131@" in line and " n4 " not in line]
    assert taken, "\n".join(out.trace)
