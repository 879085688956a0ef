"""A short fixed-seed chaos run on the lab topology: every invariant must hold, every fault kind fires."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l2lb.lab import chaos, netns
from tests.support.netns import require_netns_privileges

pytestmark = [pytest.mark.chaos, pytest.mark.net, pytest.mark.slow]

SEED = 20261128
DURATION = float(os.environ.get("L2LB_CHAOS_SECONDS", "60"))


@pytest.mark.timeout(400)
async def test_fixed_seed_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    require_netns_privileges()
    prefix = f"lc{os.getpid() % 100000:05d}"
    report = await chaos.run_chaos(SEED, DURATION, prefix=prefix, workdir=tmp_path, quiet=True)
    text = report.text()
    print(text)
    assert report.violations == [], text
    # the run did what it says: every kind of fault, leaders among the victims, churn, probes
    assert set(report.fault_counts()) == set(chaos.FAULT_KINDS), text
    assert any("(leader)" in f.target and f.target.startswith("leases") for f in report.faults), text
    assert any("(leader)" in f.target and f.target.startswith("allocator") for f in report.faults), text
    assert report.churn.get("create", 0) >= 10 and report.churn.get("delete", 0) >= 3, text
    assert report.probes_sent > 1000 and report.api_observations > 50, text
    assert report.converge_s is not None and report.converge_s <= chaos.CONVERGE_BOUND_S, text
    assert report.worst_dual_ms <= chaos.DUAL_ALLOWED_S * 1000, text
    assert report.leaks["namespaces"] == [] and report.leaks["processes"] == [], text
    assert report.leaks["redis_keys_outside_prefix"] == [], text
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
