"""Co-located placement and the node-death analysis (pure parts: no namespaces, no processes)."""

from __future__ import annotations

import argparse
import random

import pytest

from l2lb.lab.nodedeath import (
    PAIRS,
    Bench,
    ScenarioError,
    compare_table,
    cost_table,
    expand_scenarios,
    first_ok_after,
    scenario_parts,
    summarize,
    takeover_s,
    to_survivor_ms,
    vip_outage,
)
from l2lb.lab.placement import ColocatedLab, Placement, PlacementError, host_ip


def test_k8s_placement_single_redis_spreads_replicas_and_leaves_every_case_possible() -> None:
    p = Placement.k8s(3)
    assert p.redis == ("node-1",) and not p.ha
    assert p.allocator == ("node-1", "node-2") and p.leases == ("node-1", "node-3")
    for comp in (p.allocator, p.leases):
        assert len(set(comp)) == len(comp)  # anti-affinity: one replica per node
    names = [n for n, _c, _h in p.processes()]
    assert names == ["redis-0", "allocator-a", "allocator-b", "leases-a", "leases-b"]
    assert p.host_of("leases-b") == "node-3" and p.host_of("announcer-node-2") == "node-2"
    with pytest.raises(KeyError):
        p.host_of("nope")


def test_k8s_placement_ha_and_its_limits() -> None:
    p = Placement.k8s(5, ha=True)
    assert p.redis == p.sentinels == ("node-1", "node-2", "node-3") and p.ha
    with pytest.raises(PlacementError, match="at least 3 nodes"):
        Placement.k8s(2, ha=True)
    with pytest.raises(PlacementError, match="at least 2"):
        Placement.k8s(1)
    two = Placement.k8s(2)
    assert two.leases == ("node-1", "node-2")


def test_parse_placement_and_clear_errors() -> None:
    p = Placement.parse("redis=1,2,3; sentinel=1,2,3; allocator=1,2; leases=ctl,node-3", 3)
    assert p.redis == ("node-1", "node-2", "node-3") and p.leases == ("ctl", "node-3")
    assert "sentinel=node-1,node-2,node-3" in p.describe()
    for spec, msg in (("redis=4;allocator=1;leases=1", "no host '4'"),
                      ("allocator=1;leases=1", "needs redis"),
                      ("redis=1;leases=1", "needs allocator"),
                      ("redis=1,1;allocator=1;leases=1", "two Redis replicas on one host"),
                      ("redis=1,2;allocator=1;leases=1", "without sentinels"),
                      ("redis=1;foo=2;allocator=1;leases=1", "expected one of")):
        with pytest.raises(PlacementError, match=msg):
            Placement.parse(spec, 3)


def test_host_ip() -> None:
    assert host_ip("ctl") == "198.51.100.2" and host_ip("node-3") == "198.51.100.13"


def _probes(answered: list[tuple[float, bool]]) -> list[tuple[float, frozenset[str]]]:
    return [(t, frozenset({"m"}) if ok else frozenset()) for t, ok in answered]


def test_vip_outage_measures_the_longest_gap_after_the_fault() -> None:
    iv = 0.02
    ts = [round(i * iv, 3) for i in range(200)]  # 0 .. 3.98 s
    # answered until 1.0, silent until 1.5, answered again; a one-probe miss at 3.0 is noise
    probes = _probes([(t, not (1.0 < t < 1.5) and t != 3.0) for t in ts])
    o = vip_outage("v", probes, t_fault=1.01, t_end=4.0, t_return=None, interval=iv)
    assert o is not None
    assert o.ms == pytest.approx(500, abs=1) and o.end_s == pytest.approx(0.49, abs=0.01)
    assert not o.ended_by_return
    # 24 probes were sent into it unanswered (1.02 .. 1.48), never more than one interval apart
    assert o.unanswered == 24 and o.max_spacing_ms == pytest.approx(20, abs=1)
    assert o.silent_ms == pytest.approx(480, abs=1)  # from the first unanswered probe (1.02) to the answer (1.5)
    # the gap spans the node's return: ended by it
    o2 = vip_outage("v", probes, t_fault=1.01, t_end=4.0, t_return=1.2, interval=iv)
    assert o2 is not None and o2.ended_by_return
    # a gap that begins after the return is the return's own cost, reported apart
    late = _probes([(t, not (1.0 < t < 1.5) and not (2.0 < t < 2.1)) for t in ts])
    o4 = vip_outage("v", late, t_fault=1.01, t_end=4.0, t_return=1.9, interval=iv)
    assert o4 is not None and o4.ms == pytest.approx(500, abs=1) and not o4.ended_by_return
    assert o4.after_return_ms == pytest.approx(100, abs=1)
    o5 = vip_outage("v", late, t_fault=1.6, t_end=4.0, t_return=1.9, interval=iv)
    assert o5 is not None and o5.ms == 0 and o5.after_return_ms == pytest.approx(100, abs=1)
    # never answered again: open until the end of the window
    silent = _probes([(t, t <= 1.0) for t in ts])
    o3 = vip_outage("v", silent, t_fault=1.01, t_end=3.98, t_return=None, interval=iv)
    assert o3 is not None and o3.end_s is None and o3.ms == pytest.approx(2980, abs=1) and o3.ended_by_return
    # a healthy VIP: no outage; a VIP never answered: not announced
    ok = vip_outage("v", _probes([(t, True) for t in ts]), t_fault=1.0, t_end=3.98, t_return=None, interval=iv)
    assert ok is not None and ok.ms == 0
    assert vip_outage("v", _probes([(t, False) for t in ts]), t_fault=1, t_end=4, t_return=None, interval=iv) is None
    # a gap that ended before the fault does not count
    early = _probes([(t, not (0.2 < t < 0.6)) for t in ts])
    e = vip_outage("v", early, t_fault=1.0, t_end=3.98, t_return=None, interval=iv)
    assert e is not None and e.ms == 0


def test_vip_outage_tells_a_stalled_prober_from_a_silent_vip() -> None:
    iv = 0.02
    # the prober sent nothing between 1.0 and 1.5 (its process stalled): a gap without unanswered probes
    ts = [round(i * iv, 3) for i in range(200) if not (1.0 < i * iv < 1.5)]
    o = vip_outage("v", _probes([(t, True) for t in ts]), t_fault=0.9, t_end=3.98, t_return=None, interval=iv)
    assert o is not None and o.ms == pytest.approx(500, abs=1)
    assert o.unanswered == 0 and o.max_spacing_ms == pytest.approx(500, abs=1)
    assert o.to_dict()["unanswered"] == 0 and o.silent_ms == 0
    # the probe sent just after the stall is late and counted unanswered: silent only from it to the answer
    late = [(t, frozenset() if t == 1.5 else frozenset({"m"})) for t in ts]
    o2 = vip_outage("v", late, t_fault=0.9, t_end=3.98, t_return=None, interval=iv)
    assert o2 is not None and o2.ms == pytest.approx(520, abs=1) and o2.silent_ms == pytest.approx(20, abs=1)


def test_takeover_and_writable_again() -> None:
    tl = [(0.0, "node-1"), (5.0, "node-1"), (6.3, "node-2")]
    assert takeover_s(tl, 1.0, {"node-1"}) == pytest.approx(5.3)
    assert takeover_s(tl, 1.0, {"node-3"}) == 0.0  # the leader did not die
    assert takeover_s([(0.0, "node-1")], 1.0, {"node-1"}) is None  # never taken over
    w = [(0.9, True), (1.1, False), (1.2, False), (2.5, True), (3.0, False), (3.1, True)]
    back, worst = first_ok_after(w, 1.0)
    assert back == pytest.approx(1.5) and worst == pytest.approx(1.4)
    assert first_ok_after([(1.1, True), (1.2, True)], 1.0) == (0.0, 0.0)
    never, worst = first_ok_after([(1.1, False), (2.0, False)], 1.0)
    assert never is None and worst == pytest.approx(0.9)


def test_summary_over_rounds() -> None:
    rounds = [
        {"worst_outage_ms": 300.0, "outages": [{"ms": 300.0}, {"ms": 0.0}], "dual_max_ms": 20.0, "dual_over_1s": 0,
         "lost_allocations": [], "duplicate_ips": [], "converge_s": 1.0, "recovered_s": 0.8,
         "leases_takeover_s": 0.0, "allocator_takeover_s": 0.0, "redis_writable_s": 0.0, "new_service_ip_s": 0.3},
        {"worst_outage_ms": 20000.0, "outages": [{"ms": 20000.0}], "ended_by_return": True, "dual_max_ms": 0.0,
         "dual_over_1s": 0, "lost_allocations": ["x"], "duplicate_ips": [], "converge_s": None, "recovered_s": None,
         "leases_takeover_s": None, "allocator_takeover_s": 0.0, "redis_writable_s": None, "new_service_ip_s": 21.0},
    ]
    s = summarize(rounds)
    assert s["rounds"] == 2 and s["outage_worst_vip_ms"]["max"] == 20000.0
    assert s["outage_worst_vip_ms"]["p50"] in (300.0, 20000.0)
    assert s["rounds_ended_by_return"] == 1 and s["lost_allocations"] == 1 and s["failed_to_converge"] == 1
    assert s["recovered_without_node"] == 1 and s["leases_takeover_s"]["never"] == 1
    assert s["dual_max_ms"] == 20.0
    assert s["vips_moved"] == 0 and s["vips_with_outage_max"] == 0


def test_redis_fault_summary_counts_moved_and_dark_vips() -> None:
    rounds = [{"worst_outage_ms": 30000.0, "outages": [{"ms": 30000.0}] * 8, "vips_with_outage": 8,
               "vips_moved": ["198.51.100.1", "198.51.100.2"], "converge_s": 1.0},
              {"worst_outage_ms": 0.0, "outages": [], "vips_with_outage": 0, "vips_moved": [], "converge_s": 1.0}]
    s = summarize(rounds)
    assert s["vips_moved"] == 2 and s["vips_with_outage_max"] == 8
    assert s["silent_worst_vip_ms"]["max"] is None  # rounds measured before the field: not made up
    s2 = summarize([{**rounds[0], "worst_silent_ms": 29980.0}, {**rounds[1], "worst_silent_ms": 20.0}])
    assert s2["silent_worst_vip_ms"]["max"] == 29980.0


def test_compare_table_puts_the_baseline_beside_l2lb_per_scenario() -> None:
    def one(ms: float, moved: list[str]) -> dict[str, object]:
        return summarize([{"worst_outage_ms": ms, "outages": [{"ms": ms}], "vips_with_outage": 1 if ms else 0,
                           "vips_moved": moved, "converge_s": 1.0}])

    text = compare_table({"no-peers": {"redis-kill": one(30000.0, ["x"]), "leases": one(6700.0, [])},
                          "l2lb": {"redis-kill": one(0.0, []), "leases": one(380.0, [])}})
    lines = text.splitlines()
    rows = [ln.split() for ln in lines[1:5]]
    # per scenario: the baseline's row, then l2lb's, in the order the scenarios were run
    assert [r[:2] for r in rows] == [["redis-kill", "no-peers"], ["redis-kill", "l2lb"],
                                     ["leases", "no-peers"], ["leases", "l2lb"]]
    assert "30,000" in lines[1] and "6,700" in lines[3] and "380" in lines[4]


def _bench(placement: Placement, nodes: int = 3) -> Bench:
    lab = ColocatedLab.__new__(ColocatedLab)
    lab.placement = placement
    lab.args = argparse.Namespace(nodes=nodes)
    lab.dead = set()
    return Bench(lab, None, None, None, rng=random.Random(3))  # type: ignore[arg-type]


@pytest.mark.parametrize("scenario,roles,victim,moves", [
    ("all", {"redis": "node-1", "leases": "node-1", "allocator": "node-1"}, "node-1", []),
    ("all", {"redis": "node-1", "leases": "node-3", "allocator": "node-2"}, "node-1",
     [("leases", "onto"), ("allocator", "onto")]),
    ("redis", {"redis": "node-1", "leases": "node-1", "allocator": "node-2"}, "node-1", [("leases", "off")]),
    ("leases", {"redis": "node-1", "leases": "node-1", "allocator": "node-1"}, "node-3", [("leases", "onto")]),
    ("allocator", {"redis": "node-1", "leases": "node-3", "allocator": "node-2"}, "node-2", []),
    ("nothing", {"redis": "node-1", "leases": "node-3", "allocator": "node-2"}, None, None),
])
def test_plan_picks_the_node_needing_fewest_moves(scenario: str, roles: dict[str, str], victim: str | None,
                                                  moves: list[tuple[str, str]] | None) -> None:
    b = _bench(Placement.k8s(3))
    got = b.plan(scenario, roles)
    assert got is not None
    if victim is None:  # "nothing": node-2 or node-3, each needs one leadership moved off it
        assert got[0] in ("node-2", "node-3") and len(got[1]) == 1 and got[1][0][1] == "off"
    else:
        assert got == (victim, moves)


def test_plan_refuses_what_the_placement_cannot_do() -> None:
    b = _bench(Placement.k8s(3))
    # single Redis: nothing can move the master, so "leases" on node-1 with Redis elsewhere is impossible,
    # but another node works; "redis" only on the Redis node
    assert b.plan("redis", {"redis": "node-1", "leases": "node-3", "allocator": "node-2"}) == ("node-1", [])
    only = _bench(Placement.parse("redis=1;allocator=1;leases=1", 3))
    assert only.plan("leases", {"redis": "node-1", "leases": "node-1", "allocator": "node-1"}) is None
    ha = _bench(Placement.k8s(3, ha=True))
    got = ha.plan("all", {"redis": "node-2", "leases": "node-1", "allocator": "node-1"})
    assert got == ("node-1", [("redis", "onto")])


def test_scenarios_of_several_dying_nodes() -> None:
    assert scenario_parts("redis") == [frozenset({"redis"})]
    assert scenario_parts("redis+leases") == [frozenset({"redis"}), frozenset({"leases"})]
    assert scenario_parts("all+nothing") == [frozenset({"redis", "leases", "allocator"}), frozenset()]
    for bad, msg in (("all+leases", "named for two dying nodes"), ("redis+bogus", "unknown part"),
                     ("leases+leases", "named for two dying nodes")):
        with pytest.raises(ScenarioError, match=msg):
            scenario_parts(bad)
    assert expand_scenarios("redis, pairs,redis-kill", 5) == ["redis", *PAIRS, "redis-kill"]
    assert "leases+allocator" in PAIRS and "redis+leases" in PAIRS
    with pytest.raises(ScenarioError, match="kills 2 of 2 nodes"):
        expand_scenarios("nothing+nothing", 2)
    with pytest.raises(ScenarioError, match="Redis faults"):
        expand_scenarios("redis-crash", 3)
    with pytest.raises(ScenarioError, match="empty"):
        expand_scenarios(" , ", 3)


def test_plan_group_places_each_role_on_its_dying_node() -> None:
    b = _bench(Placement.k8s(5), nodes=5)  # single Redis on node-1, allocator on 1,2, leases on 1,3
    everything_on_1 = {"redis": "node-1", "leases": "node-1", "allocator": "node-1"}
    # the single Redis cannot move: node-1 dies holding it, the leases leader goes to its other replica
    # (node-3, the other victim) and the allocator's off both victims (node-2)
    got = b.plan_group(scenario_parts("redis+leases"), everything_on_1)
    assert got == (("node-1", "node-3"), [("leases", "onto", "node-3"), ("allocator", "off", None)])
    assert b.orphaned(got[0]) == ["redis", "leases"]  # no replica of either survives that pair
    # both leaders on two dying nodes, Redis on neither: node-1 (Redis) must live
    got = b.plan_group(scenario_parts("leases+allocator"), {**everything_on_1, "leases": "node-3"})
    assert got is not None and got[0] == ("node-3", "node-2") and got[1] == [("allocator", "onto", "node-2")]
    assert b.orphaned(got[0]) == []
    got = b.plan_group(scenario_parts("nothing+nothing"), everything_on_1)
    assert got is not None and "node-1" not in got[0] and len(set(got[0])) == 2 and got[1] == []
    # the single-node API keeps its answer and refuses a group
    assert b.plan("all", everything_on_1) == ("node-1", [])
    with pytest.raises(ScenarioError, match="kills 2 nodes"):
        b.plan("all+nothing", everything_on_1)
    # a dead node is never planned
    b.lab.dead = {"node-3"}
    assert b.plan_group(scenario_parts("redis+leases"), everything_on_1) is None


def test_plan_group_with_sentinel_moves_the_master_and_counts_the_sentinel_majority() -> None:
    b = _bench(Placement.k8s(5, ha=True), nodes=5)  # Redis + Sentinel on 1..3
    roles = {"redis": "node-1", "leases": "node-1", "allocator": "node-2"}
    # the cheapest: no Sentinel failover, the leases leader off node-1 (to node-3)
    assert b.plan_group(scenario_parts("redis+allocator"), roles) == (("node-1", "node-2"), [("leases", "off", None)])
    # a leadership restart is cheaper than a Sentinel failover: the master stays, the leader moves
    got = b.plan_group(scenario_parts("redis+leases"), {**roles, "allocator": "node-1"})
    assert got == (("node-1", "node-3"), [("leases", "onto", "node-3"), ("allocator", "off", None)])
    # with the master on node-2 and every leader on node-1, "all+nothing" must fail the master over
    got = b.plan_group(scenario_parts("all+nothing"), {"redis": "node-2", "leases": "node-1", "allocator": "node-1"})
    assert got is not None and got[0][0] == "node-1" and got[1] == [("redis", "onto", "node-1")]
    assert b.orphaned(("node-1", "node-2")) == ["allocator", "sentinel majority"]
    assert b.orphaned(("node-4", "node-5")) == []


def test_cost_table_puts_single_redis_and_redis_ha_side_by_side() -> None:
    single = {"seconds": 90.2, "api_requests_per_s": 1.0, "components": {
        "announcer": {"processes": 3, "cpu_pct": 8.4, "rss_mib": 165.0},
        "redis": {"processes": 1, "cpu_pct": 1.5, "rss_mib": 10.0, "commands_per_s": 60.4},
        "apiserver": {"processes": 1, "cpu_pct": 3.0, "rss_mib": 300.0}}}
    ha = {"seconds": 90.0, "api_requests_per_s": 1.05, "components": {
        "announcer": {"processes": 3, "cpu_pct": 8.6, "rss_mib": 166.0},
        "redis": {"processes": 3, "cpu_pct": 4.5, "rss_mib": 30.0, "commands_per_s": 120.0},
        "sentinel": {"processes": 3, "cpu_pct": 2.1, "rss_mib": 24.0, "commands_per_s": 30.0},
        "apiserver": {"processes": 1, "cpu_pct": 3.0, "rss_mib": 300.0}}}
    lines = cost_table({"single Redis": single, "Redis HA": ha}).splitlines()
    assert "single Redis" in lines[0] and lines[0].index("single Redis") < lines[0].index("Redis HA")
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert [ln.split()[0] for ln in lines[1:5]] == ["redis", "sentinel", "announcer", "apiserver"]
    assert "x1 1.50 % 10 MiB 60 cmd/s" in rows["redis"] and "x3 4.50 % 30 MiB 120 cmd/s" in rows["redis"]
    assert rows["sentinel"].split()[1] == "-"  # no sentinel in single mode
    total = next(ln for ln in lines if "l2lb total" in ln)
    assert "9.90 % 175 MiB" in total and "15.20 % 220 MiB" in total  # the lab's API server is not l2lb's
    assert next(ln for ln in lines if "commands/s" in ln and "Sentinel" in ln).split()[-2:] == ["60", "150"]
    assert next(ln for ln in lines if "requests/min" in ln).split()[-2:] == ["60", "63"]


def test_to_survivor_counts_a_successor_that_died_as_part_of_the_outage() -> None:
    a, b, c = frozenset({"aa"}), frozenset({"bb"}), frozenset({"cc"})
    none: frozenset[str] = frozenset()
    # the victim (aa) answers until 0.98, dies at 1.0; bb takes over at 1.30 and dies; cc answers at 1.72
    probes = [(0.96, a), (0.98, a), (1.0, none), (1.30, b), (1.32, b), (1.34, none), (1.70, none), (1.72, c)]
    assert to_survivor_ms(probes, t_fault=1.0, dead_macs={"aa", "bb"}) == pytest.approx(740.0)
    # when bb survives, its first answer ends the outage
    assert to_survivor_ms(probes, t_fault=1.0, dead_macs={"aa"}) == pytest.approx(320.0)
    # nobody alive answered: None (not 0)
    assert to_survivor_ms(probes[:6], t_fault=1.0, dead_macs={"aa", "bb"}) is None
    s = summarize([{"worst_outage_ms": 400.0, "outages": [], "worst_to_survivor_ms": 740.0, "converge_s": 1.0},
                   {"worst_outage_ms": 300.0, "outages": [], "worst_to_survivor_ms": 320.0, "converge_s": 1.0}])
    assert s["to_survivor_ms"]["max"] == 740.0 and s["to_survivor_ms"]["p50"] == 320.0
