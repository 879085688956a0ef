"""The chaos runner's invariant checkers, as pure functions over recorded observations."""

from __future__ import annotations

from typing import Any

from l2lb.lab.chaos import ChaosReport, FaultRecord, IpStability, dual_episodes, outages, sharing_violations

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def probes(*answers: str, step: float = 0.05) -> list[tuple[float, frozenset[str]]]:
    """One probe per character: '.' no answer, 'a'/'b' one MAC, '2' both."""
    m = {".": frozenset(), "a": frozenset({A}), "b": frozenset({B}), "2": frozenset({A, B})}
    return [(i * step, m[c]) for i, c in enumerate("".join(answers))]


def test_single_double_answer_is_a_short_episode() -> None:
    eps = dual_episodes("v", probes("aaaa2bbbb"), interval=0.05)
    assert len(eps) == 1
    assert abs(eps[0].seconds - 0.05) < 1e-9
    assert eps[0].macs == (A, B)


def test_long_dual_answering_is_one_long_episode() -> None:
    # 30 probes (1.5 s) of both MACs, with a few single answers in between (lost replies)
    eps = dual_episodes("v", probes("aa", "2" * 10, "a", "2" * 10, "b", "2" * 10, "bb"), interval=0.05)
    assert len(eps) == 1
    assert eps[0].seconds > 1.0


def test_separate_episodes_are_not_joined() -> None:
    eps = dual_episodes("v", probes("2", "a" * 20, "2"), interval=0.05)
    assert [round(e.seconds, 3) for e in eps] == [0.05, 0.05]


def test_no_dual_when_one_mac_answers() -> None:
    assert dual_episodes("v", probes("aaaa...bbbb"), interval=0.05) == []


def test_outages_between_answers_only() -> None:
    outs = outages("v", probes("...aa....bb..", step=0.1))
    assert len(outs) == 1  # leading and trailing silence are not outages
    assert abs(outs[0].seconds - 0.5) < 1e-9  # last answer at 0.4, next at 0.9


def svc(name: str, ip: str | None, *, ns: str = "default", key: str | None = None, proto: str = "TCP",
        port: int = 53, uid: str | None = None, ann: dict[str, str] | None = None) -> dict[str, Any]:
    annotations = dict(ann or {})
    if key:
        annotations["io.cilium/lb-ipam-sharing-key"] = key
    return {
        "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": proto}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}] if ip else []}},
    }


def test_sharing_tcp_and_udp_on_one_port_is_allowed() -> None:
    assert sharing_violations([svc("a", "198.51.100.1", key="k"), svc("b", "198.51.100.1", key="k", proto="UDP")]) == []


def test_sharing_without_key_or_same_port_is_a_violation() -> None:
    v = sharing_violations([svc("a", "198.51.100.1", key="k"), svc("b", "198.51.100.1")])
    assert len(v) == 1 and "198.51.100.1" in v[0]
    v = sharing_violations([svc("a", "198.51.100.1", key="k"), svc("b", "198.51.100.1", key="k")])
    assert len(v) == 1 and "same port" in v[0]
    v = sharing_violations([svc("a", "198.51.100.1", key="k"), svc("b", "198.51.100.1", key="k", proto="UDP",
                                                                      ns="other")])
    assert len(v) == 1 and "namespace" in v[0]


def test_ip_change_needs_a_cause() -> None:
    st = IpStability(grace=5)
    assert st.observe([svc("a", "198.51.100.1")], 100) == []
    assert st.observe([svc("a", None)], 101) == []  # losing the IP for a while is not a change
    v = st.observe([svc("a", "198.51.100.2")], 102)
    assert len(v) == 1 and "default/a" in v[0]


def test_old_causes_do_not_excuse_later_moves() -> None:
    st = IpStability(grace=5)
    ann = "io.cilium/lb-ipam-ips"
    assert st.observe([svc("a", "198.51.100.1")], 0) == []
    st.pools_changed(1)
    assert st.observe([svc("a", "198.51.100.1", ann={ann: "198.51.100.1"})], 2) == []  # request changed at 2
    assert st.observe([svc("a", "198.51.100.1", ann={ann: "198.51.100.1"})], 50) == []
    assert st.observe([svc("b", "198.51.100.5")], 50) == []
    # first seen at 0 and 50: the causes at 1 and 2 are older than 50 - grace
    assert len(st.observe([svc("a", "198.51.100.9", ann={ann: "198.51.100.1"})], 60)) == 1
    assert len(st.observe([svc("b", "198.51.100.6")], 60)) == 1


def test_ip_change_after_request_change_deletion_or_pool_change_is_fine() -> None:
    st = IpStability(grace=5)
    ann = "io.cilium/lb-ipam-ips"
    assert st.observe([svc("a", "198.51.100.1", ann={ann: "198.51.100.1"})], 0) == []
    # the request changes first, the status follows later: still caused
    assert st.observe([svc("a", "198.51.100.1", ann={ann: "198.51.100.2"})], 1) == []
    assert st.observe([svc("a", "198.51.100.2", ann={ann: "198.51.100.2"})], 2) == []
    # deleted and created again: a new uid
    assert st.observe([svc("a", "198.51.100.3", uid="uid-2", ann={ann: "198.51.100.2"})], 3) == []
    assert st.observe([svc("b", "198.51.100.7")], 3) == []
    st.pools_changed(4)
    assert st.observe([svc("b", "198.51.100.8")], 5) == []


def test_lagging_observations_of_two_quick_request_changes() -> None:
    # requested .2 then .3 in quick succession; the observer first sees .2 with the request already .3
    st = IpStability(grace=5)
    ann = "io.cilium/lb-ipam-ips"
    assert st.observe([svc("a", "198.51.100.1", ann={ann: "198.51.100.1"})], 0) == []
    assert st.observe([svc("a", "198.51.100.2", ann={ann: "198.51.100.3"})], 30) == []
    assert st.observe([svc("a", "198.51.100.3", ann={ann: "198.51.100.3"})], 30.3) == []


def test_pool_changes_excuse_only_services_in_scope() -> None:
    st = IpStability(grace=5, pool_scope=lambda _s, ips: "198.51.100.200" in ips)
    assert st.observe([svc("in", "198.51.100.200"), svc("out", "198.51.100.1")], 0) == []
    st.pools_changed(1)
    v = st.observe([svc("in", "198.51.100.2"), svc("out", "198.51.100.3")], 2)
    assert len(v) == 1 and "default/out" in v[0]


def test_report_counts_and_text() -> None:
    r = ChaosReport(seed=3, duration_s=10)
    r.faults += [FaultRecord("sigkill", "leases-a", 1, 2), FaultRecord("sigkill", "allocator-b", 3, 4),
                 FaultRecord("link_down", "node-1", 5, 6)]
    r.violation("dual_announcement_over_1s", "v answered by two", 5.0)
    assert r.fault_counts() == {"link_down": 1, "sigkill": 2}
    d = r.to_dict()
    assert d["violation_count"] == 1 and d["fault_counts"]["sigkill"] == 2
    assert "invariant violations: 1" in r.text() and "sigkill=2" in r.text()


def test_partitioned_node_must_stop_answering() -> None:
    """The partition invariant over recorded probes: answers from the cut-off node's MAC later than
    PARTITION_STOP_S after the cut and before the heal are violations; earlier ones are not."""
    import types

    from l2lb.lab.chaos import PARTITION_STOP_S, ChaosReport, ChaosRun

    run = ChaosRun.__new__(ChaosRun)
    run.report = ChaosReport(seed=1, duration_s=10)
    run.t0 = 0.0
    run.lab = types.SimpleNamespace(topo=types.SimpleNamespace(hosts={"node-1": types.SimpleNamespace(mac="m1")}))
    hist = [(t / 10, frozenset({"m1"})) for t in range(0, 100)]
    run.prober = types.SimpleNamespace(history={"v": hist})
    run.partitions = [("node-1", 1.0, 1.0 + PARTITION_STOP_S - 0.05)]  # healed before the bound: fine
    run.partition_violations()
    assert run.report.violations == []
    run.partitions = [("node-1", 1.0, 5.0)]
    run.partition_violations()
    (v,) = run.report.violations
    assert v["invariant"] == "partitioned_node_kept_answering" and "node-1 answered for v" in v["detail"]
