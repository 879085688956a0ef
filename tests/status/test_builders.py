"""Part builders for the allocator and leases, fed from the real pure allocator, election and tracker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from l2lb.core.allocator import Allocator
from l2lb.core.election import ElectionResult, IpAssignment
from l2lb.core.messages import Heartbeat, InterfaceInfo
from l2lb.core.nodes import NodeTracker
from l2lb.core.parse import CILIUM_L2_CLASS, DEFAULT_CLASSES, parse_pool, parse_service
from l2lb.core.view import (
    AssignmentHistory,
    ServiceIndex,
    nodes_items,
    parse_part,
    part_doc,
    pools_items,
    services_items,
)

from .conftest import PIHOLE_IP

LAB = Path(__file__).resolve().parents[1] / "fixtures" / "lab"


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((LAB / name).read_text()) if d]


def test_allocator_parts_from_the_seed() -> None:
    alloc = Allocator()
    for obj in load("ip-pool.yaml"):
        alloc.upsert_pool(parse_pool(obj))
    classes = DEFAULT_CLASSES | {CILIUM_L2_CLASS}
    for obj in load("pihole.yaml"):
        if obj["kind"] == "Service":
            alloc.allocate(parse_service(obj, classes=classes))
    svcs = services_items(alloc.results(), alloc.request)
    by_key = {s["key"]: s for s in svcs}
    assert by_key["pihole/pihole-dns-tcp"]["ips"] == [PIHOLE_IP]
    assert by_key["pihole/pihole-dns-udp"]["ports"] == [{"protocol": "UDP", "port": 53}]
    assert by_key["pihole/pihole-dns-udp"]["pools"] == {PIHOLE_IP: "default-pool"}
    assert by_key["pihole/pihole-web"]["reason"] == "" and len(by_key["pihole/pihole-web"]["ips"]) == 1
    pools = pools_items(alloc.pools(), alloc.pool_usage())
    assert pools[0]["name"] == "default-pool" and pools[0]["cidrs"] == ["198.51.100.128/25"]
    assert pools[0]["used"] == 2 and pools[0]["kind"] == "CiliumLoadBalancerIPPool"
    # what the allocator writes, the view reads back
    part = parse_part("services", json.dumps(part_doc("services", svcs, 1.0)))
    assert not part.errors and len(part.items) == 3


def test_failed_allocation_carries_reason() -> None:
    alloc = Allocator()
    obj = load("pihole.yaml")[3]  # pihole-web, no pool exists
    alloc.allocate(parse_service(obj, classes=DEFAULT_CLASSES | {CILIUM_L2_CLASS}))
    (item,) = services_items(alloc.results(), alloc.request)
    assert item["ips"] == [] and item["reason"] == "no_pool" and item["message"]


def result(holders: dict[str, str], unassigned: tuple[str, ...] = ()) -> ElectionResult:
    return ElectionResult(assignments={ip: IpAssignment(ip=ip, node=n, epoch=7, services=("pihole/pihole-web",))
                                       for ip, n in holders.items()},
                          unassigned=dict.fromkeys(unassigned, "no_eligible_node"))


def test_assignment_history_counts_moves_and_since() -> None:
    h = AssignmentHistory()
    a = h.items(result({PIHOLE_IP: "node-a"}), now=100.0)
    assert a == [{"ip": PIHOLE_IP, "node": "node-a", "epoch": 7, "since": 100.0, "moves": 0,
                  "services": ["pihole/pihole-web"]}]
    assert h.items(result({PIHOLE_IP: "node-a"}), now=105.0)[0]["since"] == 100.0
    b = h.items(result({PIHOLE_IP: "node-b"}), now=110.0)[0]
    assert (b["node"], b["since"], b["moves"]) == ("node-b", 110.0, 1)
    c = h.items(result({}, unassigned=(PIHOLE_IP,)), now=120.0)[0]
    assert (c["node"], c["moves"]) == ("", 1)
    d = h.items(result({PIHOLE_IP: "node-a"}), now=130.0)[0]
    assert (d["node"], d["moves"], d["since"]) == ("node-a", 1, 130.0)  # from nobody is not a move
    assert h.items(None, now=140.0) == []


def test_nodes_items_from_tracker() -> None:
    tr = NodeTracker(missed=3)
    eth = InterfaceInfo(name="eth0", mac="02:00:00:00:00:0a", up=True, addresses=("198.51.100.10/24",))
    down = InterfaceInfo(name="eth1", mac="02:00:00:00:00:0b", up=False)
    tr.observe(Heartbeat(node="node-a", instance="i", seq=1, sent_at=0.0, interval_ms=100,
                         interfaces=(eth, down)), now=50.0)
    items = nodes_items(tr.nodes, result({PIHOLE_IP: "node-a"}), mono_now=50.5, wall_now=1000.0)
    assert items == [{"node": "node-a", "alive": True, "reason": "heartbeat", "heartbeat_at": 999.5,
                      "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:0a", "up": True,
                                      "addresses": ["198.51.100.10/24"]},
                                     {"name": "eth1", "mac": "02:00:00:00:00:0b", "up": False, "addresses": []}],
                      "assignments": 1}]
    part = parse_part("nodes", json.dumps(part_doc("nodes", items, 1000.0)))
    assert part.items[0]["reason"] == "heartbeat" and part.items[0]["interfaces"][1]["up"] is False
    idx = ServiceIndex.build(parse_part("services", None), parse_part("assignments", None))
    assert idx.rows == []
