"""Fault schedules for the simulator: generated from a seed, replayable, shrinkable.

A schedule is a list of :class:`Fault` (time, kind, target, duration, extra). The generator draws
them from its own RNG (not the kernel's), so removing faults from a schedule while shrinking keeps
every other fault where it was. :func:`shrink` is delta debugging (ddmin) over a failing schedule:
the smallest sub-list that still fails, which is what a reproducer prints.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["KINDS", "KINDS_BEFORE_API_FAULTS", "Fault", "generate", "shrink"]

# kind -> weight of the draw
KINDS: dict[str, float] = {
    "node_death": 3.0,  # every process of the node killed + link down; back after `duration`
    "announcer_kill": 2.0,  # SIGKILL of one announcer; restarted after `duration`
    "pause": 1.5,  # SIGSTOP of one process (announcer, leases, allocator, redis) for `duration`
    "link_down": 2.0,  # a node's link down for `duration`
    "partition": 1.5,  # one node cut off from everyone (client and control plane stay with the rest)
    "redis_restart": 1.5,  # redis master SIGKILL, back after `duration`, with or without its data
    "redis_stop": 1.0,  # redis master SIGSTOP for `duration`
    "leases_kill": 1.5,  # the leases leader killed (standby takes over)
    "allocator_kill": 1.0,
    "msg_faults": 1.0,  # loss/duplication/delay on one node's link for `duration`
    "clock_step": 0.5,  # one node's wall clock jumps by `extra` seconds
    "api_outage": 1.0,  # the API server unreachable for `duration`
    "api_throttle": 0.75,  # the API server answers a share `extra` of requests 429 (Retry-After 1 s) for `duration`
    "watch_expired": 0.5,  # the API server compacts its history: every watch gets 410 Gone and lists again
    "churn": 2.0,  # a Service created or deleted
    # (scenarios also use "create_service": a new Service svc-<extra>, drawn by no generator)
}
# the weights before api_throttle and watch_expired (2026-12-06): regression tests that replay a seed's
# schedule of that time pass them, so the seed keeps meaning the schedule it was found with
KINDS_BEFORE_API_FAULTS: dict[str, float] = {k: w for k, w in KINDS.items()
                                             if k not in ("api_throttle", "watch_expired")}


@dataclass(frozen=True, slots=True)
class Fault:
    t: float
    kind: str
    target: str = ""  # node (or process "node/name")
    duration: float = 0.0
    extra: float = 0.0  # kind-specific: clock step seconds, loss probability, persistence flag (1/0)

    def text(self) -> str:
        parts = [f"t={self.t:.3f}", self.kind]
        if self.target:
            parts.append(self.target)
        if self.duration:
            parts.append(f"for {self.duration:.3f}s")
        if self.extra:
            parts.append(f"extra={self.extra:g}")
        return " ".join(parts)


def generate(seed: int, *, nodes: Sequence[str], minutes: float, per_minute: float = 6.0,
             kinds: dict[str, float] | None = None, warmup: float = 5.0) -> list[Fault]:
    """A seeded schedule: ``per_minute`` faults on average (Poisson arrivals) after ``warmup`` s."""
    rng = random.Random(seed * 7919 + 17)
    weights = kinds or KINDS
    names = sorted(weights)
    w = [weights[n] for n in names]
    out: list[Fault] = []
    t = warmup
    end = minutes * 60.0
    rate = per_minute / 60.0
    while True:
        t += rng.expovariate(rate) if rate > 0 else end
        if t >= end:
            break
        kind = rng.choices(names, w)[0]
        node = rng.choice(list(nodes))
        dur = round(rng.choice((0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)) * (0.5 + rng.random()), 3)
        extra = 0.0
        if kind == "clock_step":
            extra = rng.choice((-30.0, -2.0, 2.0, 30.0))
            dur = 0.0
        elif kind == "msg_faults":
            extra = rng.choice((0.1, 0.5, 1.0))  # loss probability (1.0: everything lost)
        elif kind == "redis_restart":
            extra = float(rng.random() < 0.5)  # 1: persistent, 0: comes back empty
        elif kind == "churn":
            dur = 0.0
            extra = float(rng.randrange(1_000_000))
        elif kind == "api_throttle":
            extra = rng.choice((0.5, 0.9, 1.0))  # share of requests answered 429
        elif kind == "watch_expired":
            dur = 0.0
        out.append(Fault(round(t, 3), kind, node, dur, extra))
    return out


def shrink(faults: Sequence[Fault], fails: Callable[[list[Fault]], bool], *, budget: int = 200) -> list[Fault]:
    """ddmin: a 1-minimal sub-list of ``faults`` for which ``fails`` still holds (at most ``budget`` runs)."""
    cur = list(faults)
    n = 2
    runs = 0
    while len(cur) >= 2 and runs < budget:
        size = max(1, len(cur) // n)
        chunks = [cur[i:i + size] for i in range(0, len(cur), size)]
        reduced = False
        for i in range(len(chunks)):
            rest = [f for j, c in enumerate(chunks) if j != i for f in c]
            runs += 1
            if fails(rest):
                cur, n, reduced = rest, max(n - 1, 2), True
                break
            if runs >= budget:
                break
        if not reduced:
            if n >= len(cur):
                break
            n = min(len(cur), n * 2)
    if len(cur) == 1 and runs < budget and fails([]):
        return []
    return cur
