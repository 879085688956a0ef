"""A short fixed-seed chaos run in the co-located placement (Redis + Sentinel on the nodes, allocator
and leases replicas beside the announcers), with node deaths, a partition of one node from all but the
LAN clients, and Redis down for everybody while a node dies: the chaos invariants hold there too (a
partitioned node stops answering), the Redis faults hit the current master (a Sentinel failover), and
nothing is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l2lb.lab import chaos
from l2lb.lab.placement import Placement
from tests.support.netns import require_netns_privileges

pytestmark = [pytest.mark.chaos, pytest.mark.net, pytest.mark.slow]

SEED = 20261206
DURATION = float(os.environ.get("L2LB_CHAOS_COLOCATED_SECONDS", "60"))
# How long a partitioned node may go on answering. The goal (issue 22/25) is the validity window
# (PARTITION_STOP_S, 2 s with margin). Today's rules miss it when the cut-off node holds the Redis
# MASTER: its own Redis round trips still succeed and leases is silent for everybody, so the
# leases-outage grace keeps its VIPs until the master refuses writes (min-replicas-max-lag 3 s, found
# by this test). The LAN-peer rules of docs/design (grace only with a quorum of peers heard) close it;
# then this goes back to chaos.PARTITION_STOP_S.
PARTITION_STOP_HA_TODAY_S = 3 + 1 + 1.5  # max-lag + validity + margin


@pytest.mark.timeout(400)
async def test_colocated_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    require_netns_privileges()
    prefix = f"lk{os.getpid() % 100000:05d}"
    report = await chaos.run_chaos(SEED, DURATION, prefix=prefix, workdir=tmp_path, quiet=True,
                                   placement=Placement.k8s(3, ha=True), node_faults=True,
                                   partition_stop_s=PARTITION_STOP_HA_TODAY_S)
    text = report.text()
    print(text)
    assert report.violations == [], text
    kinds = report.fault_counts()
    assert set(kinds) == set(chaos.FAULT_KINDS + chaos.NODE_FAULT_KINDS), text  # every kind fired
    # the Redis faults hit a master that lives on a node (redis-N), not a control-plane Redis
    assert all(f.target.startswith("redis-") for f in report.faults if f.kind == "redis_restart"), text
    assert report.converge_s is not None and report.converge_s <= chaos.CONVERGE_BOUND_S, text
    assert report.leaks["namespaces"] == [] and report.leaks["processes"] == [], text
    assert report.leaks["redis_keys_outside_prefix"] == [], text
