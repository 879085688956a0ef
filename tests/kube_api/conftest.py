"""The API behaviour suite runs against the embedded server and, when its binary is built, a real
kube-apiserver (``tests/support/kube_real.py``): ``kube`` here is parametrized over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kube_api.helpers import NS
from tests.support.kube import ApiServerProcess, KubeHandle, fresh_handle
from tests.support.kube_real import RealKubeHandle

REPO = Path(__file__).resolve().parents[2]
MINIMAL_CRDS = Path(__file__).with_name("crds_minimal.yaml")


@pytest.fixture(params=["embedded", "real"])
def kube(request: pytest.FixtureRequest, apiserver_process: ApiServerProcess) -> KubeHandle:
    if request.param == "embedded":
        return fresh_handle(apiserver_process)
    server = request.getfixturevalue("real_apiserver")
    server.reset()
    server.clear_requests()
    return RealKubeHandle(server)


@pytest.fixture(autouse=True)
def _suite_namespace(request: pytest.FixtureRequest) -> None:
    """Tests that use ``kube`` get the namespace ``kapi`` (``NS``), empty."""
    if "kube" not in request.fixturenames:
        return
    kube: KubeHandle = request.getfixturevalue("kube")
    code, body, _ = kube.http("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": NS}})
    assert code in (201, 409), body
    kube.clear_requests()


@pytest.fixture
def crds(kube: KubeHandle) -> Path:
    """Install the Cilium CRDs the seed needs: k8s/crds/ when present, else the suite's minimal copy."""
    src = REPO / "k8s" / "crds"
    docs = kube.load_docs(src) if src.is_dir() and any(src.glob("*.yaml")) else []
    kinds = {d["spec"]["names"]["kind"] for d in docs if d.get("kind") == "CustomResourceDefinition"}
    if {"CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy"} <= kinds:
        kube.apply(src)
        return src
    kube.apply(MINIMAL_CRDS)
    return MINIMAL_CRDS
