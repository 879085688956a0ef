"""l2lb against Cilium >= 1.16 LB-IPAM: every case of ``cases.py`` through ``l2lb allocate``'s code path.

The same cases run with the pools as ``cilium.io/v2alpha1`` and ``cilium.io/v2``
CiliumLoadBalancerIPPool and as l2lb's own ``l2lb.io/v1alpha1`` LoadBalancerIPPool: l2lb's kind follows
Cilium's rules (docs/install.md), so a pool moved from one kind to the other changes no IP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.cilium.cases import CASES
from tests.conformance.harness import Case, check_case, ids, with_pool_kind

KINDS = {
    "v2alpha1": ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"),
    "v2": ("cilium.io/v2", "CiliumLoadBalancerIPPool"),
    "l2lb": ("l2lb.io/v1alpha1", "LoadBalancerIPPool"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_cilium_case(case: Case, kind: str, tmp_path: Path) -> None:
    check_case(with_pool_kind(case, *KINDS[kind]), tmp_path)


def test_enough_cases() -> None:
    assert len(CASES) > 40
    assert all(c.source.split()[0].endswith("_test.go") for c in CASES)
