"""Named fault scenarios of the failover issues, run in the simulator over many rounds.

Each scenario is a placement (where Redis, leases and the allocator run) and one fault repeated every
``period`` seconds with a jitter drawn from the seed; the report gives, per round, the worst outage of
any VIP and of the VIPs whose holder survived, and the worst dual answer.

* ``node-death-<what>``: the node holding <what> dies (every process killed, cable out) for 20 s:
  ``nothing`` (VIPs only), ``redis`` (the Redis master), ``leases`` (leader), ``allocator`` (leader),
  ``all`` (the three together);
* ``redis-down-30s``: the Redis master SIGKILLed for 30 s (``-single``: one Redis, as the single-node
  mode; else the HA default, Sentinel promotes);
* ``redis-restart-nodata``: the master restarts without its data (2 s);
* ``partition-holder``: a node answering VIPs is cut off from everyone for 10 s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from l2lb.sim.faults import Fault
from l2lb.sim.world import WorldConfig

__all__ = ["LAB_CHAOS", "SCENARIOS", "Scenario", "chaos_loss_schedule", "schedule"]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    target: str
    duration: float
    extra: float = 0.0
    period: float = 60.0
    cfg: WorldConfig = field(default_factory=lambda: WorldConfig(nodes=3))


_HA = WorldConfig(nodes=3, redis_ha=True, leases_nodes=(1, 3), allocator_nodes=(1, 2))
_SPREAD = WorldConfig(nodes=5, services=6, redis_ha=True)  # Redis on n1..n3; leaders placed per scenario
SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("node-death-nothing", "node_death", "@holder", 20.0, cfg=replace(_SPREAD, services=8,
                                                                                leases_nodes=(1, 2),
                                                                                allocator_nodes=(2, 3))),
    # the role moves with each death (Sentinel promotes another replica, the standby leads): the placement
    # keeps the other roles off every node that can hold it, so each round is that role alone (+ VIPs)
    Scenario("node-death-redis", "node_death", "@redis-master", 20.0,
             cfg=replace(_SPREAD, leases_nodes=(4, 5), allocator_nodes=(4, 5))),
    Scenario("node-death-leases", "node_death", "@leases-leader", 20.0,
             cfg=replace(_SPREAD, leases_nodes=(4, 5), allocator_nodes=(2, 3))),
    Scenario("node-death-allocator", "node_death", "@allocator-leader", 20.0,
             cfg=replace(_SPREAD, leases_nodes=(2, 3), allocator_nodes=(4, 5))),
    # k8s/base on 3 nodes: the first death takes all three roles; later rounds whatever the node holds then
    Scenario("node-death-all", "node_death", "@redis-master", 20.0, cfg=replace(_HA, leases_nodes=(1, 2))),
    Scenario("node-death-all-single", "node_death", "@redis-master", 20.0,
             cfg=replace(_HA, redis_ha=False, leases_nodes=(1, 2))),
    Scenario("redis-down-30s", "redis_restart", "@redis-master", 30.0, extra=1.0, period=90.0,
             cfg=replace(_SPREAD, leases_nodes=(4, 5), allocator_nodes=(4, 5))),
    Scenario("redis-down-30s-single", "redis_restart", "@redis-master", 30.0, extra=1.0, period=90.0,
             cfg=replace(_HA, redis_ha=False)),
    Scenario("redis-restart-nodata", "redis_restart", "@redis-master", 2.0, extra=0.0, cfg=replace(
        _HA, redis_ha=False)),
    Scenario("partition-holder", "partition", "@holder", 10.0, cfg=replace(_SPREAD, services=8,
                                                                            leases_nodes=(1, 2),
                                                                            allocator_nodes=(2, 3))),
]}


def schedule(sc: Scenario, seed: int, rounds: int) -> list[Fault]:
    """One fault per round; for faults on a VIP holder, a new Service 10 s before each round (the sticky
    election leaves a returned node empty; a new Service lands on the least loaded node: it)."""
    rng = random.Random(seed)
    out: list[Fault] = []
    for i in range(rounds):
        t = round(20.0 + i * sc.period + rng.random() * 5.0, 3)
        if sc.target == "@holder":
            out.append(Fault(t - 10.0, "create_service", "", 0.0, float(100 + i)))
        out.append(Fault(t, sc.kind, sc.target, sc.duration, sc.extra))
    return out


# the shape of bench/chaos's co-located Redis HA lab: 3 nodes, the fast leader election its processes run with
LAB_CHAOS = WorldConfig(nodes=3, leases_nodes=(1, 2), allocator_nodes=(2, 3), lease_duration=2.0,
                        renew_deadline=1.5, retry=0.3)


def chaos_loss_schedule(seed: int, duration: float, nodes: list[str]) -> list[Fault]:
    """``bench/chaos --kinds loss``'s fault loop: 0.5-2 s apart, one node loses 10 or 50 % of its messages for
    3-8 s (the lab's LAN clients are exempt, as the simulator's oracle is)."""
    rng = random.Random(seed)
    out: list[Fault] = []
    t = 5.0
    while True:
        t += rng.uniform(0.5, 2.0)
        if t >= duration:
            return out
        dur = rng.uniform(3.0, 8.0)
        out.append(Fault(round(t, 3), "msg_faults", rng.choice(nodes), round(dur, 3), rng.choice((0.1, 0.5))))
        t += dur
