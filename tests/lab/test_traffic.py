"""Real traffic to a VIP (l2lb.lab.traffic) on the real wire: a node that holds the VIP on ``lo`` as
kube-proxy's IPVS mode holds it on kube-ipvs0 answers UDP from the VIP itself, and its kernel answers
neither ARP nor NDP for it (so only l2lb decides who gets the traffic); the analysis of a client file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from l2lb.lab.netns import Topology
from l2lb.lab.traffic import analyse

VIP4, VIP6 = "198.51.100.153", "2001:db8:53::1"


@pytest.mark.net
@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_node_answers_from_the_vip_and_its_kernel_never_claims_it(topology: Topology, tmp_path: Path,
                                                                   vip: str) -> None:
    node = topology.add_host("n1", ifname="enp0s25", addrs=["198.51.100.11/24", "2001:db8::b/64"])
    client = topology.add_host("cli", addrs=["198.51.100.100/24", "2001:db8:53::100/64"])
    for cmd in (["ip", "addr", "add", f"{VIP4}/32", "dev", "lo"],
                ["ip", "-6", "addr", "add", f"{VIP6}/128", "dev", "lo", "nodad"],
                ["ip", "-6", "route", "replace", "2001:db8:53::/64", "dev", "enp0s25"],
                ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]):
        node.exec(cmd)
    # the node's kernel stays silent for the VIP: nobody answers ARP / NDP for it
    if ":" in vip:
        nd = client.exec(["ndisc6", "-n", "-r", "2", "-w", "300", vip, "eth0"], check=False)
        assert nd.returncode != 0 and "No response" in nd.stdout, nd.stdout
    else:
        ar = client.exec(["arping", "-c", "2", "-w", "2", "-I", "eth0", vip], check=False, timeout=10)
        assert "Received 0 response" in ar.stdout, ar.stdout
    # what l2lb's announcer would make the client believe: the VIP is at the node's MAC
    client.exec(["ip", "neigh", "replace", vip, "lladdr", node.mac, "dev", "eth0", "nud", "reachable"])
    resp = subprocess.Popen(["ip", "netns", "exec", node.ns, sys.executable, "-m", "l2lb.lab.traffic", "respond",
                             "--name", "node-1", "--port", "5353", "--max-seconds", "30"])
    try:
        time.sleep(0.5)
        out = tmp_path / "c.json"
        client.exec([sys.executable, "-m", "l2lb.lab.traffic", "client", "--target", vip, "--port", "5353",
                     "--interval-ms", "10", "--seconds", "0.5", "--out", str(out)], timeout=20)
    finally:
        resp.terminate()
        resp.wait(10)
    data = json.loads(out.read_text())
    assert 40 <= len(data["sent"]) <= 60
    assert len(data["replies"]) >= len(data["sent"]) - 2  # answered from the VIP (else: wrong_source)
    assert {n for _s, _t, n in data["replies"]} == {"node-1"} and data["wrong_source"] == 0


def test_analyse_a_failover() -> None:
    sent = [[i, i * 0.01] for i in range(300)]
    replies = [[i, i * 0.01 + 0.001, "node-1"] for i in range(100)]  # up to 0.99 s
    replies += [[i, i * 0.01 + 0.001, "node-2"] for i in range(135, 300)]  # from 1.35 s
    r = analyse({"sent": sent, "replies": replies}, "node-1", t_fault=1.0, t_heal=2.5)
    assert r["baseline_ok"] and r["new_node"] == "node-2" and r["flips_during"] == 0
    assert r["outage_ms"] == pytest.approx(360, abs=0.5)  # 0.991 -> 1.351
    assert r["first_new_ms"] == pytest.approx(351, abs=0.5)
    assert r["lost_fault"] == 35 and r["final_node"] == "node-2" and r["flapped_back"] is False
    silent = analyse({"sent": sent, "replies": replies[:100]}, "node-1", t_fault=1.0, t_heal=2.5)
    assert silent["outage_ms"] is None and silent["silent_until_heal_ms"] == pytest.approx(1509, abs=0.5)
