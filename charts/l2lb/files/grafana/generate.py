#!/usr/bin/env python3
"""Write l2lb.json, the Grafana dashboard of the chart (``python charts/l2lb/files/grafana/generate.py``;
``--check`` fails when the committed JSON differs). Every metric a panel names is one the services really
export: tests/deploy/test_monitoring.py scrapes their /metrics and compares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "l2lb.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
# the active leases instance (both instances export; the standby's view may lag)
LEADER = "and on (instance) (l2lb_leases_leader == 1)"

_ids = iter(range(1, 1000))


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref}


def panel(kind: str, title: str, targets: list[dict[str, Any]], x: int, y: int, w: int, h: int,  # noqa: PLR0917
          unit: str = "short", desc: str = "", **field: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": next(_ids), "type": kind, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, **field}, "overrides": []},
        "options": {},
    }
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "value"}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    return p


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def row(title: str, y: int) -> dict[str, Any]:
    return {"id": next(_ids), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def dashboard() -> dict[str, Any]:
    ok_if_one = thresholds(("red", None), ("green", 1))
    zero_good = thresholds(("green", None), ("red", 1))
    panels = [
        row("Health", 0),
        panel("stat", "Leases leader", [target("sum(l2lb_leases_leader)")], 0, 1, 4, 4,
              desc="Active leases instances: exactly 1", thresholds=ok_if_one),
        panel("stat", "Allocator leader", [target("sum(l2lb_allocator_leader)")], 4, 1, 4, 4,
              desc="Active allocator instances: exactly 1", thresholds=ok_if_one),
        panel("stat", "Nodes heartbeating", [target(f"max(l2lb_leases_nodes_alive {LEADER})")], 8, 1, 4, 4,
              desc="Announcers whose heartbeats the leases service receives", thresholds=ok_if_one),
        panel("stat", "IPs announced", [target(f"sum(l2lb_leases_assignments {LEADER})")], 12, 1, 4, 4,
              desc="LoadBalancer IPs with a node answering ARP/NDP for them"),
        panel("stat", "IPs without announcer", [target(f"sum(l2lb_leases_unassigned_ips {LEADER})")], 16, 1, 4, 4,
              desc="IPs that no node announces (no policy, no eligible node, invalid)", thresholds=zero_good),
        panel("stat", "Redis reachable", [target("min(l2lb_bus_up)")], 20, 1, 4, 4,
              desc="1 when every scraped l2lb process's last Redis operation succeeded", thresholds=ok_if_one),
        row("Addresses", 5),
        panel("timeseries", "Pool usage", [target(
            'max by (pool) (l2lb_allocator_pool_ips{state="used"})'
            ' / max by (pool) (l2lb_allocator_pool_ips{state="total"} > 0)',
            "{{pool}}")], 0, 6, 12, 8, unit="percentunit", min=0, max=1,
            desc="Fraction of each pool's addresses in use (alert at 90 %)",
            thresholds=thresholds(("green", None), ("orange", 0.75), ("red", 0.9))),
        panel("timeseries", "IPs per node", [target(f"max by (node) (l2lb_leases_assignments {LEADER})", "{{node}}")],
              12, 6, 12, 8, desc="Which node answers for how many IPs (the active leases instance's assignments)"),
        panel("timeseries", "IP moves", [target("sum by (reason) (increase(l2lb_leases_moves_total[$__rate_interval]))",
                                                "{{reason}}")], 0, 14, 12, 8,
              desc="Holder changes by reason (new, failover, rebalance, ...)"),
        panel("timeseries", "Services without their IPs", [target(
            "max by (reason) (l2lb_allocator_unsatisfied_services)", "{{reason}}")], 12, 14, 12, 8,
            desc="Allocation failures by reason (out_of_ips, no_pool, ...)"),
        panel("timeseries", "Dual announcements / conflicts", [
            target("max(l2lb_leases_dual_announced_ips)", "IPs served by two nodes", "A"),
            target("sum(increase(l2lb_announcer_conflicts_total[$__rate_interval]))",
                   "foreign MAC claims (announcers)", "B")], 0, 22, 12, 8, desc="Should stay 0"),
        panel("timeseries", "Election time (p99)", [target(
            "histogram_quantile(0.99, sum by (le) (rate(l2lb_leases_election_seconds_bucket[$__rate_interval])))",
            "p99")], 12, 22, 12, 8, unit="s"),
        row("Kubernetes API and Redis", 30),
        panel("timeseries", "API requests", [target(
            "sum by (verb, resource) (rate(l2lb_kube_requests_total[$__rate_interval]))", "{{verb}} {{resource}}")],
            0, 31, 12, 8, unit="reqps",
            desc="Requests of every l2lb process (depends on changes, not on the cluster's size)"),
        panel("timeseries", "Client-side throttling wait (p99)", [target(
            "histogram_quantile(0.99, sum by (instance, le) "
            "(rate(l2lb_kube_ratelimit_wait_seconds_bucket[$__rate_interval])))",
            "{{instance}}")], 12, 31, 12, 8, unit="s",
            desc="Time requests wait on kube.qps / kube.burst (alert above 1 s)"),
        panel("timeseries", "Bus messages", [
            target("sum by (stream) (rate(l2lb_bus_published_total[$__rate_interval]))", "published {{stream}}", "A"),
            target("sum by (stream) (rate(l2lb_bus_consumed_total[$__rate_interval]))", "consumed {{stream}}", "B")],
            0, 39, 12, 8, unit="ops"),
        panel("timeseries", "Redis errors and consumer lag", [
            target("sum by (instance) (rate(l2lb_bus_connection_errors_total[$__rate_interval]))",
                   "errors {{instance}}", "A"),
            target("max by (stream, group) (l2lb_bus_consumer_lag)", "lag {{stream}}/{{group}}", "B")],
            12, 39, 12, 8),
    ]
    return {
        "title": "l2lb",
        "uid": "l2lb-overview",
        "description": "LoadBalancer IPs for bare-metal Kubernetes: leaders, announcements, pools, API and Redis",
        "tags": ["l2lb", "loadbalancer"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": [],
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }


def main(argv: list[str]) -> int:
    text = json.dumps(dashboard(), indent=2) + "\n"
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python {Path(__file__).relative_to(Path.cwd())}")
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
