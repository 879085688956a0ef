"""Node deaths and Redis outages in the co-located lab, measured from the client (issues 22 and 25).

A *round* arranges who holds what (the Redis master, the leases leader, the allocator leader), kills
one node (:meth:`l2lb.lab.placement.ColocatedLab.node_death`: cable out + SIGKILL of everything on
it at one instant), watches the LAN and the cluster until the survivors have recovered -- or until
``max_down_s`` has passed -- then brings the node back (its reboot) and waits until everything has
converged again, which is what the next round's failover depends on.

Scenarios (what the dying node holds): ``redis`` (the Redis master only), ``leases`` (the leases
leader only), ``allocator`` (the allocator leader only), ``all`` (all three), ``nothing`` (none of
them; it still holds VIPs as an announcer). Leaderships are moved before a round by a graceful
restart of the current leader (what ``kubectl delete pod`` does); with Sentinel the master is moved
with ``SENTINEL FAILOVER`` (replica priorities steer it).

Redis faults (issue 25; no node dies): ``redis-kill`` (SIGKILL, down for ``redis_down_s``, started
again), ``redis-stop`` (SIGSTOP for ``redis_down_s``, SIGCONT), ``redis-restart`` (SIGTERM and start
again at once, like a rollout restart; with or without the append-only file as the lab runs it).

Observed during every round, from outside the services:

* every VIP probed with ARP from the client namespace (:class:`l2lb.lab.chaos.MultiProber`):
  per VIP the longest stretch without an answer after the fault (an *outage*; one the survivors did
  not end before the node came back is flagged ``ended_by_return``), and two MACs answering at once
  (*dual* answers);
* the Kubernetes Leases of both leaderships (takeover time), a Redis writer through the services'
  DSN (when Redis takes writes again: Sentinel failover as clients see it);
* a Service created just after the fault (time until it gets an IP: the allocator's failover), the
  IPs of every Service (an IP that changed or vanished is a *lost allocation*; one IP in two Services
  that may not share it is a *duplicate*).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError
from l2lb.core.parse import status_ips
from l2lb.lab.chaos import MultiProber, dual_episodes, sharing_violations
from l2lb.lab.placement import (
    REDIS_PORT,
    SENTINEL_PORT,
    SENTINEL_SERVICE,
    ColocatedLab,
    host_ip,
    redis_command,
)
from l2lb.obs.log import get_logger

log = get_logger("l2lb.lab.nodedeath")

SCENARIOS = ("redis", "leases", "allocator", "all", "nothing")
REDIS_FAULTS = ("redis-kill", "redis-stop", "redis-restart")
WANTS: dict[str, frozenset[str]] = {
    "redis": frozenset({"redis"}), "leases": frozenset({"leases"}), "allocator": frozenset({"allocator"}),
    "all": frozenset({"redis", "leases", "allocator"}), "nothing": frozenset(),
}
# node deaths of several nodes at once: what each dying node holds, joined with "+" (e.g. "redis+leases":
# one node holds the Redis master, another the leases leader; "nothing+nothing": two plain announcers)
PAIRS = ("redis+leases", "redis+allocator", "leases+allocator", "all+nothing", "nothing+nothing")
PROBE_SRC = [f"198.51.100.{i}" for i in range(210, 250)]


class ScenarioError(ValueError):
    """A scenario name that cannot be used (the message says what to fix)."""


def scenario_parts(scenario: str) -> list[frozenset[str]]:
    """What each dying node of a node-death scenario holds: ``redis`` -> [{redis}]; ``redis+leases`` ->
    [{redis}, {leases}] (two nodes die). A role can be held by one dying node only."""
    names = [x.strip() for x in scenario.split("+")]
    bad = [x for x in names if x not in SCENARIOS]
    if bad:
        raise ScenarioError(f"scenario {scenario!r}: unknown part(s) {bad}; each part is one of "
                            f"{', '.join(SCENARIOS)} (several dying nodes: joined with '+', e.g. redis+leases)")
    parts = [WANTS[x] for x in names]
    seen: set[str] = set()
    for part in parts:
        if part & seen:
            raise ScenarioError(f"scenario {scenario!r}: {sorted(part & seen)} named for two dying nodes "
                                f"(one node holds each role)")
        seen |= part
    return parts


def expand_scenarios(spec: str, nodes: int) -> list[str]:
    """The bench's --scenarios list: names (redis, leases, ..., redis-kill, ...), deaths of several nodes
    joined with '+' (redis+leases) and ``pairs`` (every scenario of :data:`PAIRS`). ScenarioError says what
    is wrong."""
    out: list[str] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        for sc in PAIRS if item == "pairs" else (item,):
            if sc in REDIS_FAULTS:
                out.append(sc)
                continue
            try:
                parts = scenario_parts(sc)
            except ScenarioError as e:
                raise ScenarioError(f"{e}; Redis faults: {', '.join(REDIS_FAULTS)}; 'pairs' = "
                                    f"{', '.join(PAIRS)}") from None
            if len(parts) >= nodes:
                raise ScenarioError(f"scenario {sc!r} kills {len(parts)} of {nodes} nodes: nobody would be left "
                                    f"to take over (--nodes {2 * len(parts) + 1} keeps a majority)")
            out.append(sc)
    if not out:
        raise ScenarioError("--scenarios is empty")
    return out
BENCH_NS = "bench"


# ------------------------------------------------------------------------------------------------
# pure analysis


@dataclass(frozen=True)
class VipOutage:
    vip: str
    ms: float  # longest stretch without an answer that began after the fault and before the return
    start_s: float  # from the fault
    end_s: float | None  # None: never answered again within the window
    ended_by_return: bool  # still open when the node returned / Redis came back
    after_return_ms: float = 0.0  # longest stretch that began after the return (the return's own cost)
    unanswered: int = 0  # probes sent into the longest stretch and not answered
    max_spacing_ms: float = 0.0  # longest time between two probes sent in it (long: the prober itself stalled)
    silent_ms: float = 0.0  # from its first unanswered probe to the answer: the outage without the prober's stalls

    def to_dict(self) -> dict[str, Any]:
        return {"vip": self.vip, "ms": round(self.ms, 1), "start_s": round(self.start_s, 3),
                "end_s": None if self.end_s is None else round(self.end_s, 3), "ended_by_return": self.ended_by_return,
                "after_return_ms": round(self.after_return_ms, 1), "unanswered": self.unanswered,
                "max_spacing_ms": round(self.max_spacing_ms, 1), "silent_ms": round(self.silent_ms, 1)}


def vip_outage(vip: str, probes: Sequence[tuple[float, frozenset[str]]], *, t_fault: float, t_end: float,
               t_return: float | None, interval: float) -> VipOutage | None:
    """The longest answer gap of ``vip`` caused by the fault (probes: (send time, MACs)).

    A gap runs from the last answered probe before it to the first answered one after it. Counted:
    gaps that end after ``t_fault`` and begin before ``t_return`` (the node's return or Redis's);
    one still open at ``t_end`` lasts until ``t_end`` (``end_s`` None). Gaps that begin after the
    return are reported apart (``after_return_ms``). Gaps no longer than two probe intervals are
    probe noise. None when the VIP was not answered at all (not announced). The longest gap also
    says how many probes went unanswered in it and the longest time between two probes sent: a gap
    with no unanswered probe and one long spacing is the prober's own stall, not the VIP's silence.
    """
    until = t_return if t_return is not None else t_end
    last_ok: float | None = None
    best = (0.0, 0.0, 0.0, False, 0, 0.0, 0.0)  # ms, start, end, ended_by_return, unanswered, max spacing, silent
    after = 0.0
    noise = 2 * interval + 1e-9
    missed = 0  # unanswered probes since the last answered one
    prev_sent: float | None = None
    spacing = 0.0  # longest spacing of sent probes since the last answered one
    first_missed: float | None = None  # the first unanswered probe since the last answered one

    def gap(a: float, b: float) -> None:
        nonlocal best, after
        ms = (b - a) * 1000
        if a >= until:
            after = max(after, ms)
        elif ms > best[0]:
            silent = 0.0 if first_missed is None else (b - first_missed) * 1000
            best = (ms, a - t_fault, b - t_fault, t_return is not None and a < t_return <= b, missed, spacing * 1000,
                    silent)

    for t, got in probes:
        if t > t_end:
            break
        if prev_sent is not None:
            spacing = max(spacing, t - prev_sent)
        prev_sent = t
        if not got:
            missed += 1
            first_missed = t if first_missed is None else first_missed
            continue
        if last_ok is not None and t > t_fault and t - last_ok > noise:
            gap(last_ok, t)
        last_ok, missed, spacing, first_missed = t, 0, 0.0, None
    if last_ok is None:
        return None
    open_gap = t_end - last_ok > noise
    if open_gap:
        if prev_sent is not None:
            spacing = max(spacing, t_end - prev_sent)
        gap(last_ok, t_end)
    ms, start, end, by_return, unanswered, max_spacing, silent_ms = best
    end_s: float | None = end
    if open_gap and ms > 0 and abs(end - (t_end - t_fault)) < 1e-9:
        end_s = None
    return VipOutage(vip, ms, start, end_s, by_return or end_s is None, after, unanswered, max_spacing, silent_ms)


def to_survivor_ms(probes: Sequence[tuple[float, frozenset[str]]], *, t_fault: float, dead_macs: set[str]
                   ) -> float | None:
    """From the last answer before the fault to the first answer after it by a node that is not dead: what a
    client sees when the VIP's first successor dies too (its short answers in between do not help a client
    that moved to it). None when no survivor answered."""
    last: float | None = None
    for t, got in probes:
        if t <= t_fault:
            if got:
                last = t
            continue
        if got and not got & dead_macs:
            return None if last is None else (t - last) * 1000
    return None


def pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def takeover_s(timeline: Sequence[tuple[float, str | None]], t_fault: float, dead: set[str]) -> float | None:
    """Seconds from the fault until the timeline first shows a holder outside ``dead`` (None: never);
    0 when the holder at the fault was not dead (nothing to take over)."""
    before = [h for t, h in timeline if t <= t_fault]
    if before and before[-1] not in dead and before[-1] is not None:
        return 0.0
    for t, h in timeline:
        if t > t_fault and h is not None and h not in dead:
            return t - t_fault
    return None


def first_ok_after(timeline: Sequence[tuple[float, bool]], t_fault: float) -> tuple[float | None, float]:
    """(seconds until the first success after the first failure past the fault, longest failure run in s)."""
    first_fail: float | None = None
    back: float | None = None
    worst = 0.0
    run_start: float | None = None
    for t, ok in timeline:
        if t < t_fault:
            continue
        if not ok:
            if run_start is None:
                run_start = t
            first_fail = first_fail if first_fail is not None else t
        elif run_start is not None:
            worst = max(worst, t - run_start)
            if back is None:
                back = t - t_fault
            run_start = None
    if run_start is not None and timeline:
        worst = max(worst, timeline[-1][0] - run_start)
    if first_fail is None:
        return 0.0, 0.0
    return back, worst


def summarize(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Figures of one scenario over its rounds (outages in ms; the worst VIP of each round)."""
    worst = [float(r["worst_outage_ms"]) for r in rounds if r.get("worst_outage_ms") is not None]
    every = [float(o["ms"]) for r in rounds for o in r.get("outages", []) if o["ms"] > 0]
    takeovers = {k: [float(r[k]) for r in rounds if r.get(k) is not None]
                 for k in ("leases_takeover_s", "allocator_takeover_s", "redis_writable_s", "new_service_ip_s")}

    def stats(v: Sequence[float]) -> dict[str, float | None]:
        return {"p50": pct(v, 50), "p99": pct(v, 99), "max": max(v) if v else None}

    return {
        "rounds": len(rounds),
        "outage_worst_vip_ms": stats(worst),
        "outage_any_vip_ms": stats(every),
        # the same without the prober's own stalls (from the first unanswered probe; rounds that have it)
        "silent_worst_vip_ms": stats([float(r["worst_silent_ms"]) for r in rounds if "worst_silent_ms" in r]),
        "rounds_ended_by_return": sum(1 for r in rounds if r.get("ended_by_return")),
        "dual_max_ms": max((float(r.get("dual_max_ms", 0)) for r in rounds), default=0.0),
        "after_return_max_ms": max((float(r.get("after_return_max_ms", 0)) for r in rounds), default=0.0),
        "dual_over_1s": sum(int(r.get("dual_over_1s", 0)) for r in rounds),
        "lost_allocations": sum(len(r.get("lost_allocations", [])) for r in rounds),
        "duplicate_ips": sum(len(r.get("duplicate_ips", [])) for r in rounds),
        "failed_to_converge": sum(1 for r in rounds if r.get("converge_s") is None),
        "recovered_without_node": sum(1 for r in rounds if r.get("recovered_s") is not None),
        **{k: stats(v) | {"n": len(v), "never": sum(1 for r in rounds if r.get(k) is None and k in r)}
           for k, v in takeovers.items()},
        "converge_after_return_s": stats([float(r["converge_s"]) for r in rounds if r.get("converge_s") is not None]),
        "vips_moved": sum(len(r.get("vips_moved", [])) for r in rounds),
        # several dying nodes: rounds in which a component lost every replica (nobody could take it over)
        "orphaned": {c: sum(1 for r in rounds if c in r.get("orphaned", ()))
                     for c in sorted({c for r in rounds for c in r.get("orphaned", ())})},
        "successors_hit": sum(len(r.get("successors_hit", ())) for r in rounds),
        # the dead nodes' VIPs: from their last answer until a surviving node answered (a successor that died)
        "to_survivor_ms": stats([float(r["worst_to_survivor_ms"]) for r in rounds
                                 if r.get("worst_to_survivor_ms") is not None]),
        "vips_with_outage_max": max((int(r.get("vips_with_outage", 0)) for r in rounds), default=0),
    }


# ------------------------------------------------------------------------------------------------
# observers


class Observers:
    """Leader Leases polled every 100 ms; a Redis writer through the services' DSN every 50 ms."""

    def __init__(self, lab: ColocatedLab, client: KubeClient) -> None:
        self.lab = lab
        self.client = client
        self.leaders: dict[str, list[tuple[float, str | None]]] = {"leases": [], "allocator": []}
        self.writes: list[tuple[float, bool]] = []
        self._bus: Any = None

    async def poll_leaders(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for comp in ("leases", "allocator"):
                lead = await self.lab.leader(self.client, comp)
                host = self.lab.placement.host_of(lead) if lead else None
                tl = self.leaders[comp]
                if not tl or tl[-1][1] != host:
                    tl.append((time.monotonic(), host))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    async def write_redis(self, stop: asyncio.Event) -> None:
        from l2lb.adapters.bus.client import Bus

        self._bus = await Bus.connect(self.lab.redis_url, client_name="l2lb-bench-writer", health_interval=1.0)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                ok = True
                try:
                    await asyncio.wait_for(self._bus.redis.set(self._bus.keys.probe, n), 1.0)
                except Exception:
                    ok = False
                self.writes.append((time.monotonic(), ok))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
        finally:
            await self._bus.close()

    def writable_now(self, within: float = 0.3) -> bool:
        return bool(self.writes) and self.writes[-1][1] and time.monotonic() - self.writes[-1][0] < within


# ------------------------------------------------------------------------------------------------
# the runner


@dataclass
class Bench:
    lab: ColocatedLab
    client: KubeClient
    prober: MultiProber
    obs: Observers
    max_down_s: float = 20.0
    redis_down_s: float = 30.0
    restart_gap_s: float = 0.0  # redis-restart: down this long between the exit and the start
    settle_s: float = 1.0
    stagger_s: float = 0.0  # several dying nodes: each dies this long after the previous one (0: one instant)
    second: str = "none"  # "successor": the node that first answers one of the victim's VIPs dies at that instant
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    round_no: int = 0
    svc_counter: int = 0  # bench/svc-N Services created so far
    notes: list[str] = field(default_factory=list)

    # -- cluster views --------------------------------------------------------------------------
    async def services(self) -> list[dict[str, Any]]:
        with KubeClient.deadline(5):
            lst = await self.client.list(RESOURCES["services"])
        return [s for s in lst.get("items", []) if (s.get("spec") or {}).get("type") == "LoadBalancer"]

    async def vips(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in await self.services():
            for ip in status_ips(s):
                m = s["metadata"]
                out.setdefault(ip, []).append(f"{m['namespace']}/{m['name']}")
        return out

    def answered_by(self, vip: str, within: float = 0.3) -> frozenset[str] | None:
        return self.prober.last_answer(vip, within)

    def healthy(self, vips: Sequence[str], exclude_macs: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
        macs = self.lab.mac_to_node()
        for v in vips:
            got = self.answered_by(v)
            if got is None or len(got) != 1:
                return False
            mac = next(iter(got))
            if mac not in macs or mac in exclude_macs:
                return False
        return True

    async def wait_steady(self, timeout: float, *, what: str) -> float:
        """Until every VIP is answered by exactly one node, Redis settled, both leaders held and every
        Service has an IP -- for ``settle_s`` in a row. Returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        ok_since: float | None = None
        pending = "not checked"
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            self.lab.sup.check_alive()
            try:
                svcs = await self.services()
            except (KubeError, TimeoutError, aiohttp.ClientError, OSError) as e:
                pending, ok_since = f"API: {e}", None
                continue
            v4 = sorted({ip for s in svcs for ip in status_ips(s) if ":" not in ip})
            self.prober.set_targets(v4)
            no_ip = [s["metadata"]["name"] for s in svcs if not status_ips(s)]
            leaders = {c: await self.lab.leader(self.client, c) for c in ("leases", "allocator")}
            checks = {
                "services without IP": not no_ip,
                "VIPs answered by one node": self.healthy(v4),
                "redis settled": await self.lab.redis_settled(),
                "leaders": all(leaders.values()),
                "redis writable": self.obs.writable_now(),
            }
            bad = [k for k, ok in checks.items() if not ok]
            if bad:
                pending, ok_since = ", ".join(bad) + (f" ({no_ip[:3]})" if no_ip else ""), None
                continue
            ok_since = ok_since or time.monotonic()
            if time.monotonic() - ok_since >= self.settle_s:
                return time.monotonic() - t0
        raise RuntimeError(f"{what}: not steady after {timeout:.0f} s: {pending}")

    # -- arranging ------------------------------------------------------------------------------
    async def graceful_restart(self, proc: str, comp: str) -> None:
        """SIGTERM the leader (it releases its Lease), wait until another process leads, start it again."""
        sup = self.lab.sup
        sup.signal(proc, signal.SIGTERM)
        p = sup.procs[proc]
        if p.proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.proc.wait(), 20)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lead = await self.lab.leader(self.client, comp)
            if lead and lead != proc:
                break
            await asyncio.sleep(0.1)
        await self.lab.start_proc(proc)

    async def move_master(self, onto: str) -> None:
        """Sentinel failover to the Redis on ``onto`` (replica priorities steer the choice)."""
        lab = self.lab
        for i, h in enumerate(lab.placement.redis):
            if h in lab.dead:
                continue
            prio = "1" if h == onto else "100"
            with contextlib.suppress(Exception):
                await redis_command(host_ip(h), REDIS_PORT, "CONFIG", "SET", "replica-priority", prio)
            del i
        refused: list[str] = []
        for _attempt in range(3):  # a sentinel may refuse (NOGOODSLAVE while a replica resyncs, INPROG)
            for h in lab.placement.sentinels:
                if h in lab.dead:
                    continue
                try:
                    await redis_command(host_ip(h), SENTINEL_PORT, "SENTINEL", "FAILOVER", SENTINEL_SERVICE,
                                        timeout=2)
                    break
                except Exception as e:
                    refused.append(f"{h}: {e}")
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                if await lab.master_host() == onto and await lab.redis_settled():
                    return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"Redis master did not move to {onto} within 36 s (refusals: {refused[-3:]})")

    def plan(self, scenario: str, roles: Mapping[str, str | None]) -> tuple[str, list[tuple[str, str]]] | None:
        """(victim, moves) with the fewest moves for one dying node; a move is (component, "onto"|"off")."""
        got = self.plan_group(scenario_parts(scenario), roles)
        if got is None:
            return None
        if len(got[0]) != 1:
            raise ScenarioError(f"scenario {scenario!r} kills {len(got[0])} nodes; use plan_group")
        return got[0][0], [(comp, how) for comp, how, _onto in got[1]]

    def plan_group(self, parts: Sequence[frozenset[str]], roles: Mapping[str, str | None]
                   ) -> tuple[tuple[str, ...], list[tuple[str, str, str | None]]] | None:
        """(victims, moves) with the fewest moves: ``victims[i]`` will hold exactly the roles ``parts[i]``
        names; a move is (component, "onto", victim) or (component, "off", None) (off every victim).
        None when the placement cannot do it (a role whose replicas cannot reach the node that should
        hold it, or a single Redis that would have to move)."""
        import itertools

        p = self.lab.placement
        hosts = {"redis": set(p.redis), "leases": set(p.leases), "allocator": set(p.allocator)}
        live = [n for n in self.lab.node_names() if n not in self.lab.dead]
        best: tuple[int, float, tuple[str, ...], list[tuple[str, str, str | None]]] | None = None
        for victims in itertools.permutations(live, len(parts)):
            moves: list[tuple[str, str, str | None]] = []
            feasible = True
            for comp in ("redis", "leases", "allocator"):
                target = next((v for v, part in zip(victims, parts, strict=True) if comp in part), None)
                cur = roles.get(comp)
                movable = comp != "redis" or p.ha
                if target is not None and cur != target:
                    feasible &= movable and target in hosts[comp]
                    moves.append((comp, "onto", target))
                elif target is None and cur in victims:
                    # the role goes to a replica on a node that stays up
                    feasible &= movable and bool(hosts[comp] - set(victims))
                    moves.append((comp, "off", None))
            if feasible:
                # a Sentinel failover is slower and less sure than a graceful restart of a leader
                cost = sum(3 if comp == "redis" else 1 for comp, _h, _o in moves)
                key = (cost, self.rng.random(), victims, moves)
                if best is None or key[:2] < best[:2]:
                    best = key
        return None if best is None else (best[2], best[3])

    async def arrange(self, scenario: str) -> list[str]:
        """Move the roles so that the scenario's dying nodes hold what it names; returns those nodes."""
        parts = scenario_parts(scenario)
        roles = await self.lab.roles(self.client)
        planned = self.plan_group(parts, roles)
        if planned is None:
            raise RuntimeError(f"scenario {scenario!r} impossible with placement {self.lab.placement.describe()}")
        victims, moves = planned
        for comp, _how, onto in moves:
            if comp == "redis":
                if onto is not None:
                    await self.move_master(onto)
                else:
                    others = [h for h in self.lab.placement.redis if h not in victims and h not in self.lab.dead]
                    await self.move_master(self.rng.choice(others))
                continue
            lead = await self.lab.leader(self.client, comp)
            if lead is None:
                raise RuntimeError(f"no {comp} leader to move")
            await self.graceful_restart(lead, comp)
        roles = await self.lab.roles(self.client)
        for victim, part in zip(victims, parts, strict=True):
            got = {c for c, h in roles.items() if h == victim}
            if got != set(part):
                raise RuntimeError(f"arranging {scenario} on {'+'.join(victims)}: {victim} holds {sorted(got)} "
                                   f"({roles})")
        return list(victims)

    def orphaned(self, victims: Sequence[str]) -> list[str]:
        """Components with no replica left once ``victims`` are dead (nobody can take their role over)."""
        p = self.lab.placement
        hosts = {"redis": p.redis, "sentinel": p.sentinels, "allocator": p.allocator, "leases": p.leases}
        out = [c for c, hs in hosts.items() if hs and all(h in victims or h in self.lab.dead for h in hs)]
        if p.ha and "sentinel" not in out:
            alive = [h for h in p.sentinels if h not in victims and h not in self.lab.dead]
            if len(alive) < len(p.sentinels) // 2 + 1:
                out.append("sentinel majority")
        return out

    async def ensure_holds(self, victim: str, want: int = 2, keep: Sequence[str] = ()) -> list[str]:
        """Make ``victim`` answer for at least ``want`` VIPs.

        The election is sticky and never rebalances, so a node that died in the previous round
        comes back holding nothing. New IPs go to the least-loaded node: create ``want`` Services
        (they land on the victim), then delete as many bench Services of the busiest other node (not one
        of ``keep``: the other dying nodes), so the number of VIPs stays the same.
        """
        mac = self.lab.topo.hosts[victim].mac
        kept = {self.lab.topo.hosts[k].mac for k in keep}
        held: list[str] = []
        for _ in range(3):
            vipmap = await self.vips()
            held = [v for v in vipmap if ":" not in v and self.answered_by(v) == frozenset({mac})]
            if len(held) >= want:
                return held
            load: dict[str, list[str]] = {}
            for v, svcs in vipmap.items():
                got = self.answered_by(v)
                if ":" in v or got is None or len(got) != 1 or got == frozenset({mac}) or got & kept:
                    continue
                if all(k.startswith(f"{BENCH_NS}/svc-") for k in svcs):
                    load.setdefault(next(iter(got)), []).extend(svcs)
            for _i in range(want - len(held)):
                self.svc_counter += 1
                await self._new_service(f"svc-{self.svc_counter}", port=80)
            await self.wait_steady(60, what=f"placing new VIPs on {victim}")
            busiest = sorted(load.values(), key=len, reverse=True)
            doomed = (busiest[0] if busiest else [])[: want - len(held)]
            for key in doomed:
                with contextlib.suppress(KubeError, TimeoutError, aiohttp.ClientError, OSError), \
                        KubeClient.deadline(5):
                    await self.client.delete(RESOURCES["services"], key.split("/", 1)[1], BENCH_NS)
            await self.wait_steady(60, what=f"after moving VIPs to {victim}")
        self.notes.append(f"round {self.round_no}: {victim} holds only {held} before its death")
        return held

    # -- one round ------------------------------------------------------------------------------
    async def _new_service(self, name: str, port: int = 8080) -> None:
        doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": BENCH_NS},
               "spec": {"type": "LoadBalancer", "selector": {"app": name},
                        "ports": [{"name": "p", "port": port, "protocol": "TCP"}]}}
        with KubeClient.deadline(5):
            await self.client.create_object(RESOURCES["services"], doc, BENCH_NS)

    async def _ip_of(self, name: str) -> list[str]:
        try:
            with KubeClient.deadline(3):
                obj = await self.client.get(RESOURCES["services"], name, BENCH_NS)
        except (KubeError, TimeoutError, aiohttp.ClientError, OSError):
            return []
        return status_ips(obj)

    async def node_round(self, scenario: str) -> dict[str, Any]:
        """One node death (``redis``, ``leases``, ...) or the death of several nodes (``redis+leases``: at
        one instant, or ``stagger_s`` apart: the next one dies while the previous failover is under way)."""
        lab = self.lab
        self.round_no += 1
        await self.wait_steady(90, what=f"before round {self.round_no}")
        victims = await self.arrange(scenario)
        await self.wait_steady(90, what=f"after arranging {scenario} on {'+'.join(victims)}")
        for v in victims:
            await self.ensure_holds(v, keep=[x for x in victims if x != v])
        roles = await lab.roles(self.client)
        vipmap = await self.vips()
        v4 = sorted(v for v in vipmap if ":" not in v)
        before = {k: tuple(sorted(v)) for k, v in ((f"{s['metadata']['namespace']}/{s['metadata']['name']}",
                                                     status_ips(s)) for s in await self.services())}
        victim_macs = {lab.topo.hosts[v].mac for v in victims}
        held = {v: [ip for ip in v4 if self.answered_by(ip) == frozenset({lab.topo.hosts[v].mac})] for v in victims}
        orphaned = self.orphaned(victims)
        await asyncio.sleep(0.5)
        deaths: list[float] = []
        successors_hit: list[str] = []  # the first victim's VIPs that a later victim answered when it died
        if self.stagger_s > 0:
            for i, v in enumerate(victims):
                if i:
                    await asyncio.sleep(self.stagger_s)
                    mac = lab.topo.hosts[v].mac
                    successors_hit += [ip for ip in held[victims[0]] if mac in (self.answered_by(ip, 0.1) or ())]
                deaths.append(lab.node_death(v))
        else:
            deaths = [lab.nodes_death(victims)] * len(victims)
        t_fault = deaths[0]
        if self.second == "successor" and len(victims) == 1:
            # the node taking one of the victim's VIPs over dies as soon as the client hears it (mid-failover)
            first_mac = lab.topo.hosts[victims[0]].mac
            macs = lab.mac_to_node()
            while time.monotonic() - t_fault < 5 and len(victims) == 1:
                for ip in held[victims[0]]:
                    hist = self.prober.history.get(ip, [])
                    got = hist[-1][1] if hist and hist[-1][0] > t_fault else frozenset()
                    other = [m for m in got if m != first_mac and macs.get(m) not in (None, *victims)]
                    if other:
                        nxt = macs[other[0]]
                        deaths.append(lab.node_death(nxt))
                        successors_hit.append(ip)
                        victims.append(nxt)
                        victim_macs.add(other[0])
                        held[nxt] = []
                        break
                else:
                    await asyncio.sleep(0.002)
            if len(victims) == 1:
                self.notes.append(f"round {self.round_no}: no successor answered {victims[0]}'s VIPs within 5 s")
        new_svc = f"nd-{self.round_no}"
        t_new: float | None = None
        await asyncio.sleep(0.2)
        try:
            await self._new_service(new_svc)
            t_created = time.monotonic()
        except (KubeError, TimeoutError, aiohttp.ClientError, OSError) as e:
            self.notes.append(f"round {self.round_no}: could not create {new_svc}: {e}")
            t_created = None
        recovered: float | None = None
        ok_since: float | None = None
        dead = set(victims)
        while time.monotonic() - t_fault < self.max_down_s:
            await asyncio.sleep(0.1)
            if t_new is None and t_created is not None and await self._ip_of(new_svc):
                t_new = time.monotonic()
            leaders = {c: await lab.leader(self.client, c) for c in ("leases", "allocator")}
            live_leaders = all(x and lab.placement.host_of(x) not in dead for x in leaders.values())
            if self.healthy(v4, victim_macs) and t_new is not None and live_leaders and self.obs.writable_now():
                ok_since = ok_since or time.monotonic()
                if time.monotonic() - ok_since >= 0.5:
                    recovered = ok_since - t_fault
                    break
            else:
                ok_since = None
        t_return = time.monotonic()
        for v in victims:
            await lab.node_return(v)
        converge: float | None = None
        try:
            converge = await self.wait_steady(90, what=f"after {'+'.join(victims)} returned")
        except RuntimeError as e:
            self.notes.append(f"round {self.round_no} ({scenario}): {e}")
        if t_new is None and t_created is not None and await self._ip_of(new_svc):
            t_new = time.monotonic()  # got its IP only after the node came back (or never)
        t_end = time.monotonic()
        after = {k: tuple(sorted(v)) for k, v in ((f"{s['metadata']['namespace']}/{s['metadata']['name']}",
                                                    status_ips(s)) for s in await self.services())}
        lost = [f"{k}: {list(v)} -> {list(after.get(k, ()))}" for k, v in before.items() if v and after.get(k) != v]
        if t_created is not None and not await self._ip_of(new_svc):
            lost.append(f"{BENCH_NS}/{new_svc}: created during the outage, no IP {t_end - t_created:.0f} s later")
        dup = sharing_violations(await self.services())
        with contextlib.suppress(KubeError, TimeoutError, aiohttp.ClientError, OSError), KubeClient.deadline(5):
            await self.client.delete(RESOURCES["services"], new_svc, BENCH_NS)
        res = self.analyse(v4, t_fault, t_end, t_return)
        survivor = {ip: to_survivor_ms(self.prober.history.get(ip, []), t_fault=t_fault, dead_macs=victim_macs)
                    for v in victims for ip in held[v]}
        res.update({
            "to_survivor_ms": {ip: None if ms is None else round(ms, 1) for ip, ms in survivor.items()},
            "worst_to_survivor_ms": max((ms for ms in survivor.values() if ms is not None), default=None),
            "scenario": scenario, "round": self.round_no, "victim": "+".join(victims), "victims": victims,
            "roles_before": roles, "victim_held_vips": held[victims[0]] if len(victims) == 1 else held,
            "orphaned": orphaned, "deaths_s": [round(t - t_fault, 3) for t in deaths],
            "successors_hit": successors_hit,
            "recovered_s": None if recovered is None else round(recovered, 3),
            "returned_s": round(t_return - t_fault, 3), "converge_s": None if converge is None else round(converge, 3),
            "new_service_ip_s": None if t_new is None or t_created is None else round(t_new - t_fault, 3),
            "leases_takeover_s": _r(takeover_s(self.obs.leaders["leases"], t_fault, dead)),
            "allocator_takeover_s": _r(takeover_s(self.obs.leaders["allocator"], t_fault, dead)),
            "lost_allocations": lost, "duplicate_ips": dup,
        })
        back, worst = first_ok_after(self.obs.writes, t_fault)
        res["redis_writable_s"] = _r(back)
        res["redis_unwritable_max_s"] = round(worst, 3)
        return res

    async def redis_round(self, fault: str) -> dict[str, Any]:
        lab = self.lab
        self.round_no += 1
        await self.wait_steady(90, what=f"before round {self.round_no}")
        v4 = sorted(v for v in await self.vips() if ":" not in v)
        holders = {v: self.answered_by(v) for v in v4}
        master = await lab.master_host()
        idx = lab.placement.redis.index(master) if master in lab.placement.redis else 0
        proc = f"redis-{idx}"
        await asyncio.sleep(0.5)
        t_fault = time.monotonic()
        if fault == "redis-kill":
            await lab.sup.kill(proc)
            await asyncio.sleep(self.redis_down_s)
            t_return = time.monotonic()
            await lab.start_proc(proc)
        elif fault == "redis-stop":
            lab.sup.signal(proc, signal.SIGSTOP)
            try:
                await asyncio.sleep(self.redis_down_s)
            finally:
                lab.sup.signal(proc, signal.SIGCONT)
            t_return = time.monotonic()
        elif fault == "redis-restart":
            lab.sup.signal(proc, signal.SIGTERM)
            p = lab.sup.procs[proc]
            if p.proc is not None:
                await asyncio.wait_for(p.proc.wait(), 30)
            await asyncio.sleep(self.restart_gap_s)  # the pod's way back (deleted, created, container started)
            t_return = time.monotonic()
            await lab.start_proc(proc)
        else:
            raise ValueError(f"unknown Redis fault {fault!r}")
        converge: float | None = None
        try:
            converge = await self.wait_steady(90, what=f"after {fault}")
        except RuntimeError as e:
            self.notes.append(f"round {self.round_no} ({fault}): {e}")
        await asyncio.sleep(0.5)
        t_end = time.monotonic()
        res = self.analyse(v4, t_fault, t_end, t_return)
        moved = [v for v in v4 if holders.get(v) and self.answered_by(v, 1.0) != holders[v]]
        back, worst = first_ok_after(self.obs.writes, t_fault)
        res.update({"scenario": fault, "round": self.round_no, "redis_down_s": round(t_return - t_fault, 3),
                    "persistence": lab.persist, "converge_s": None if converge is None else round(converge, 3),
                    "vips_moved": moved, "redis_writable_s": _r(back), "redis_unwritable_max_s": round(worst, 3)})
        return res

    def analyse(self, v4: Sequence[str], t_fault: float, t_end: float, t_return: float) -> dict[str, Any]:
        outs: list[VipOutage] = []
        duals: list[dict[str, Any]] = []
        for v in v4:
            hist = self.prober.history.get(v, [])
            o = vip_outage(v, hist, t_fault=t_fault, t_end=t_end, t_return=t_return, interval=self.prober.interval_s)
            if o is not None:
                outs.append(o)
            window = [(t, m) for t, m in hist if t_fault - 1 <= t <= t_end]
            for ep in dual_episodes(v, window, interval=self.prober.interval_s):
                duals.append({"vip": v, "ms": round(ep.seconds * 1000, 1), "at_s": round(ep.start - t_fault, 3),
                              "macs": list(ep.macs)})
        worst = max(outs, key=lambda o: o.ms, default=None)
        return {
            "outages": [o.to_dict() for o in outs],
            "worst_outage_ms": None if worst is None else round(worst.ms, 1),
            "worst_outage_vip": None if worst is None else worst.vip,
            "worst_silent_ms": round(max((o.silent_ms for o in outs), default=0.0), 1),
            "ended_by_return": any(o.ended_by_return for o in outs if o.ms > 0),
            "vips_with_outage": sum(1 for o in outs if o.ms > 0),
            "after_return_max_ms": round(max((o.after_return_ms for o in outs), default=0.0), 1),
            "duals": duals,
            "dual_max_ms": max((d["ms"] for d in duals), default=0.0),
            "dual_over_1s": sum(1 for d in duals if d["ms"] > 1000),
        }


def _proc_cpu_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds used so far, RSS MiB) of a process from /proc."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


async def _api_requests(url: str) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, s.get(url) as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("l2lb_apiserver_requests_total{"))


async def _commands_processed(lab: ColocatedLab) -> dict[str, int]:
    """INFO stats total_commands_processed of every live Redis and Sentinel process (by process name)."""
    out: dict[str, int] = {}
    for name, comp, host in lab.placement.processes():
        if comp not in ("redis", "sentinel") or host in lab.dead:
            continue
        port = REDIS_PORT if comp == "redis" else SENTINEL_PORT
        with contextlib.suppress(Exception):
            info = await redis_command(host_ip(host), port, "INFO", "stats", timeout=2)
            out[name] = int(info["total_commands_processed"])
    return out


async def measure_cost(lab: ColocatedLab, seconds: float) -> dict[str, Any]:
    """Cost at rest: CPU (% of one core) and RSS per component over ``seconds`` with nothing else
    happening, the Kubernetes API requests/s of all services together and the commands/s each Redis
    and Sentinel process served (INFO stats; the INFO calls themselves are 2 commands per process)."""
    from l2lb.lab.main import API_PORT, CTL_IP

    def comp(name: str) -> str:
        return name.split("-", 1)[0]

    procs = {n: p.pid for n, p in lab.sup.procs.items() if p.pid and p.alive}
    t0 = time.monotonic()
    cpu0 = {n: _proc_cpu_rss(pid)[0] for n, pid in procs.items()}
    api0 = await _api_requests(f"http://{CTL_IP}:{API_PORT}/metrics")
    cmd0 = await _commands_processed(lab)
    await asyncio.sleep(seconds)
    cmd1 = await _commands_processed(lab)
    api1 = await _api_requests(f"http://{CTL_IP}:{API_PORT}/metrics")
    dt = time.monotonic() - t0
    out: dict[str, dict[str, float]] = {}
    for n, pid in procs.items():
        cpu1, rss = _proc_cpu_rss(pid)
        c = out.setdefault(comp(n), {"processes": 0, "cpu_pct": 0.0, "rss_mib": 0.0})
        c["processes"] += 1
        c["cpu_pct"] += (cpu1 - cpu0[n]) / dt * 100
        c["rss_mib"] += rss
    for n in cmd0.keys() & cmd1.keys():
        c = out.setdefault(comp(n), {"processes": 0, "cpu_pct": 0.0, "rss_mib": 0.0})
        c["commands_per_s"] = c.get("commands_per_s", 0.0) + (cmd1[n] - cmd0[n] - 1) / dt  # minus our INFO
    for c in out.values():
        c["cpu_pct"], c["rss_mib"] = round(c["cpu_pct"], 2), round(c["rss_mib"], 1)
        if "commands_per_s" in c:
            c["commands_per_s"] = round(c["commands_per_s"], 1)
    return {"seconds": round(dt, 1), "components": out, "api_requests_per_s": round((api1 - api0) / dt, 2),
            "redis_commands_per_process": {n: round((cmd1[n] - cmd0[n] - 1) / dt, 1)
                                           for n in sorted(cmd0.keys() & cmd1.keys())}}


COST_ORDER = ("redis", "sentinel", "announcer", "leases", "allocator", "apiserver")


def cost_table(columns: Mapping[str, Mapping[str, Any]]) -> str:
    """Costs at rest side by side (one column per variant, e.g. single Redis | Redis HA): per component
    CPU % of one core, RSS and Redis commands/s; the l2lb total (without the lab's API server) and the
    Kubernetes API requests per minute."""
    comps: list[str] = []
    for c in columns.values():
        comps += [k for k in c["components"] if k not in comps]
    comps.sort(key=lambda k: (COST_ORDER.index(k) if k in COST_ORDER else len(COST_ORDER), k))

    def cell(c: Mapping[str, Any] | None) -> str:
        if not c:
            return "-"
        txt = f"x{int(c['processes'])} {c['cpu_pct']:.2f} % {c['rss_mib']:.0f} MiB"
        return txt + (f" {c['commands_per_s']:.0f} cmd/s" if "commands_per_s" in c else "")

    cells = {k: [cell(col["components"].get(k)) for col in columns.values()] for k in comps}
    width = 3 + max(24, *(len(n) for n in columns), *(len(c) for row in cells.values() for c in row))
    lines = [f"  {'':34s}" + "".join(f"{n:>{width}s}" for n in columns)]
    for k in comps:
        lines.append(f"  {k:34s}" + "".join(f"{c:>{width}s}" for c in cells[k]))

    def total(col: Mapping[str, Any], key: str) -> float:
        return float(sum(v.get(key, 0.0) for k, v in col["components"].items() if k != "apiserver"))

    totals = [f"{total(col, 'cpu_pct'):.2f} % {total(col, 'rss_mib'):.0f} MiB" for col in columns.values()]
    lines.append(f"  {'l2lb total (CPU %, RSS MiB)':34s}" + "".join(f"{t:>{width}s}" for t in totals))
    lines.append(f"  {'Redis + Sentinel commands/s':34s}" + "".join(
        f"{total(col, 'commands_per_s'):>{width}.0f}" for col in columns.values()))
    lines.append(f"  {'Kubernetes API requests/min':34s}" + "".join(
        f"{col['api_requests_per_s'] * 60:>{width}.0f}" for col in columns.values()))
    lines.append(f"  {'window (s)':34s}" + "".join(f"{col['seconds']:>{width}.0f}" for col in columns.values()))
    return "\n".join(lines)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def extra_services(n: int) -> list[dict[str, Any]]:
    """``n`` Services with an automatic IP from the lab pool, so that every node holds some VIPs."""
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BENCH_NS}}]
    for i in range(1, n + 1):
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": f"svc-{i}", "namespace": BENCH_NS},
                     "spec": {"type": "LoadBalancer", "selector": {"app": f"svc-{i}"},
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    return docs


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} ms"


def fmt_s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


TABLE_LEGEND = (
    "  (outage: worst VIP per round; by-return: rounds whose outage only the node's return (or Redis's) ended; "
    "dark: most VIPs with a gap in one round; moved: VIPs answered by another node after a Redis fault (all "
    "rounds); silent: the worst VIP's gap counted from its first unanswered probe (without the prober's own "
    "stalls), max over rounds; leases/alloc: leadership takeover, redis: writable again, newIP: Service created "
    "after the fault got an IP -- all max over rounds; again: every round converged after the node came back; "
    "ret.gap: longest gap of any VIP that began when the node came back)")


def _head(label: str) -> str:
    return (f"  {label} {'n':>3s} {'p50':>9s} {'p99':>9s} {'max':>9s} {'by-return':>9s} {'dark':>4s} "
            f"{'moved':>5s} {'silent':>9s} {'dual max':>9s} {'lost':>4s} {'dup':>3s} {'leases':>7s} {'alloc':>7s} "
            f"{'redis':>7s} {'newIP':>7s} {'again':>5s} {'ret.gap':>8s}")


def _row(label: str, s: Mapping[str, Any]) -> str:
    o = s["outage_worst_vip_ms"]
    return (f"  {label} {s['rounds']:3d} {fmt_ms(o['p50']):>9s} {fmt_ms(o['p99']):>9s} {fmt_ms(o['max']):>9s} "
            f"{s['rounds_ended_by_return']:9d} {s.get('vips_with_outage_max', 0):4d} {s.get('vips_moved', 0):5d} "
            f"{fmt_ms((s.get('silent_worst_vip_ms') or {}).get('max')):>9s} "
            f"{fmt_ms(s['dual_max_ms']):>9s} {s['lost_allocations']:4d} "
            f"{s['duplicate_ips']:3d} {fmt_s(s['leases_takeover_s']['max']):>7s} "
            f"{fmt_s(s['allocator_takeover_s']['max']):>7s} {fmt_s(s['redis_writable_s']['max']):>7s} "
            f"{fmt_s(s['new_service_ip_s']['max']):>7s} "
            f"{'yes' if s['failed_to_converge'] == 0 else 'NO':>5s} {fmt_ms(s['after_return_max_ms']):>8s}")


def table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The report: one line per scenario."""
    lines = [_head(f"{'scenario':16s}")]
    lines += [_row(f"{name:16s}", s) for name, s in results.items()]
    lines.append(TABLE_LEGEND)
    return "\n".join(lines)


def compare_table(variants: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The report of one run with several variants (e.g. the baseline ``no-peers`` and ``l2lb``): per
    scenario one line per variant, in the order given, so that each figure stands beside its baseline."""
    scenarios: list[str] = []
    for results in variants.values():
        scenarios += [s for s in results if s not in scenarios]
    lines = [_head(f"{'scenario':16s} {'variant':9s}")]
    for sc in scenarios:
        for name, results in variants.items():
            if sc in results:
                lines.append(_row(f"{sc:16s} {name:9s}", results[sc]))
    lines.append(TABLE_LEGEND)
    return "\n".join(lines)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


async def run(args: Any, workdir: Path, progress: Any) -> dict[str, Any]:
    """Build the co-located lab, run ``args.rounds`` rounds of each of ``args.scenarios`` (node deaths
    and/or Redis faults), clean up; returns {"placement", "results": {scenario: summary}, "raw", ...}."""
    from l2lb.lab import netns
    from l2lb.lab.main import CLIENT_IP, repo_root
    from l2lb.lab.procs import Supervisor

    placement = args.placement_obj
    lab_args = argparse.Namespace(nodes=args.nodes, manifests=None, probe_ms=args.probe_ms, round_timeout=10.0,
                                  timeout=60.0, json_logs=False, keep=False, sentinel_down_ms=args.sentinel_down_ms,
                                  no_peers=bool(getattr(args, "no_peers", False)))
    lab = ColocatedLab(lab_args, workdir, netns.Topology(args.prefix), Supervisor(workdir / "logs"), progress,
                       placement=placement, persist=not args.no_persistence, fast_le=args.fast_le,
                       le_backend=getattr(args, "le_backend", "kube"))
    root = repo_root()
    extra = workdir / "bench-services.yaml"
    extra.write_text(yaml.safe_dump_all(extra_services(args.services)))
    lab_args.manifests = [str(root / "tests" / "fixtures" / "lab") if root else "", str(extra)]
    raw: dict[str, list[dict[str, Any]]] = {}
    bench: Bench | None = None
    cost: dict[str, Any] | None = None
    del CLIENT_IP
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        with progress.step(f"building the co-located lab ({placement.describe()})"):
            lab.build_network()
        with netns.entered(lab.topo.hosts["ctl"].ns):
            with progress.step("bringing the cluster up"):
                await lab.bring_up()
            if getattr(args, "cost_s", 0) > 0:
                with progress.step(f"cost at rest: {args.cost_s:.0f} s of nothing"):
                    await asyncio.sleep(getattr(args, "cost_settle_s", 5.0))  # let the start-up settle
                    cost = await measure_cost(lab, args.cost_s)
                progress.say(f"  {json.dumps(cost)}")
            client = await KubeClient.create(str(lab.kubeconfig), qps=200, burst=400, user_agent="l2lb-bench")
            prober = MultiProber(lab.topo.hosts["client"].ns, "eth0", PROBE_SRC, interval_s=args.probe_ms / 1000)
            obs = Observers(lab, client)
            bench = Bench(lab, client, prober, obs, max_down_s=args.max_down_s, redis_down_s=args.redis_down_s,
                          rng=random.Random(args.seed), svc_counter=args.services,
                          restart_gap_s=getattr(args, "restart_gap_s", 0.0),
                          stagger_s=getattr(args, "stagger_ms", 0.0) / 1000,
                          second=getattr(args, "second", "none"))
            tasks = [asyncio.create_task(prober.run(stop)), asyncio.create_task(obs.poll_leaders(stop)),
                     asyncio.create_task(obs.write_redis(stop))]
            try:
                for scenario in args.scenarios:
                    for i in range(args.rounds):
                        try:
                            with progress.step(f"{scenario} round {i + 1}/{args.rounds}"):
                                if scenario in REDIS_FAULTS:
                                    r = await bench.redis_round(scenario)
                                else:
                                    r = await bench.node_round(scenario)
                        except RuntimeError as e:  # a round that could not be set up: say so, go on
                            bench.notes.append(f"{scenario} round {i + 1} skipped: {e}")
                            progress.say(f"  {scenario} #{i + 1}: skipped: {e}")
                            continue
                        raw.setdefault(scenario, []).append(r)
                        if getattr(args, "json", None):  # keep what was measured if a later round fails
                            Path(args.json).write_text(dumps({"partial": True, "raw": raw}))
                        progress.say(f"  {scenario} #{i + 1}: victim {r.get('victim', '-')}, worst outage "
                                     f"{fmt_ms(r['worst_outage_ms'])} ({r['vips_with_outage']} VIPs; ended by "
                                     f"return: {r['ended_by_return']}), dual {fmt_ms(r['dual_max_ms'])}, "
                                     f"leases {fmt_s(r.get('leases_takeover_s'))}, redis writable "
                                     f"{fmt_s(r.get('redis_writable_s'))}, new IP {fmt_s(r.get('new_service_ip_s'))}, "
                                     f"lost {len(r.get('lost_allocations', []))}, converge {fmt_s(r['converge_s'])}")
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                prober.close()
                await client.close()
    finally:
        with progress.step("cleaning up"):
            forced = await lab.sup.stop_all()
            lab.topo.destroy()
    left = [n for n in netns.list_namespaces() if n.startswith(args.prefix)]
    return {"placement": placement.describe(), "persistence": not args.no_persistence, "cost_at_rest": cost,
            "peers": not getattr(args, "no_peers", False),
            "leader_election": getattr(args, "le_backend", "kube"),
            "results": {k: summarize(v) for k, v in raw.items()}, "raw": raw,
            "notes": bench.notes if bench else [], "cleanup": {"forced_kill": forced, "leftover_namespaces": left}}
