from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
MINIMAL_CRDS = Path(__file__).with_name("crds_minimal.yaml")


@pytest.fixture
def crds(kube):  # type: ignore[no-untyped-def]
    """Install the Cilium CRDs the seed needs: k8s/crds/ when present, else the suite's minimal copy."""
    src = REPO / "k8s" / "crds"
    docs = kube.load_docs(src) if src.is_dir() and any(src.glob("*.yaml")) else []
    kinds = {d["spec"]["names"]["kind"] for d in docs if d.get("kind") == "CustomResourceDefinition"}
    if {"CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy"} <= kinds:
        kube.apply(src)
        return src
    kube.apply(MINIMAL_CRDS)
    return MINIMAL_CRDS
