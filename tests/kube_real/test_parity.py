"""Behaviours the real kube-apiserver showed that l2lb depends on; each runs on both servers
(``kube_any``) so the embedded server is held to what the real one does."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.kube import KubeHandle

pytestmark = pytest.mark.kube

NS = "parity"


def _ok(out: tuple[int, Any, dict[str, str]], *codes: int) -> Any:
    code, body, _ = out
    assert code in (codes or (200, 201)), (code, body)
    return body


def _lb_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }


@pytest.fixture
def ns(kube_any: KubeHandle) -> KubeHandle:
    _ok(kube_any.http("POST", "/api/v1/namespaces", {"metadata": {"name": NS}}))
    return kube_any


def test_default_kubernetes_service_exists(kube_any: KubeHandle) -> None:
    svc = _ok(kube_any.http("GET", "/api/v1/namespaces/default/services/kubernetes"))
    assert svc["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [(443, "TCP")]


def test_load_balancer_status_ingress_gets_ip_mode_vip(ns: KubeHandle) -> None:
    _ok(ns.http("POST", f"/api/v1/namespaces/{NS}/services", _lb_service("dns")))
    patch = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}
    out = _ok(
        ns.http(
            "PATCH",
            f"/api/v1/namespaces/{NS}/services/dns/status",
            patch,
            content_type="application/merge-patch+json",
        )
    )
    # A controller comparing its desired status with the stored one must expect ipMode.
    assert out["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.10", "ipMode": "VIP"}]


def test_load_balancer_service_gets_cluster_ip_and_node_port(ns: KubeHandle) -> None:
    svc = _ok(ns.http("POST", f"/api/v1/namespaces/{NS}/services", _lb_service("np")))
    assert svc["spec"]["clusterIP"] and svc["spec"]["clusterIPs"] == [svc["spec"]["clusterIP"]]
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    assert svc["spec"]["externalTrafficPolicy"] == "Cluster"
    assert svc["spec"]["allocateLoadBalancerNodePorts"] is True
    assert svc["spec"]["ipFamilies"] == ["IPv4"] and svc["spec"]["ipFamilyPolicy"] == "SingleStack"


def test_endpointslice_generation_counts_label_changes(ns: KubeHandle) -> None:
    path = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "s1", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.51.100.5"], "nodeName": "node-a"}],
    }
    first = _ok(ns.http("POST", path, body))
    assert first["metadata"]["generation"] == 1
    second = _ok(
        ns.http(
            "PATCH", path + "/s1", {"metadata": {"labels": {"x": "y"}}}, content_type="application/merge-patch+json"
        )
    )
    assert second["metadata"]["generation"] == 2


def test_unknown_group_is_404(kube_any: KubeHandle) -> None:
    code, _, _ = kube_any.http("GET", "/apis/nope.example.com/v1/things")
    assert code == 404


def test_deleted_namespace_is_emptied(ns: KubeHandle) -> None:
    _ok(ns.http("POST", f"/api/v1/namespaces/{NS}/services", _lb_service("gone")))
    _ok(ns.http("DELETE", f"/api/v1/namespaces/{NS}"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, _, _ = ns.http("GET", f"/api/v1/namespaces/{NS}")
        if code == 404:
            break
        time.sleep(0.2)
    assert code == 404
    assert _ok(ns.http("GET", f"/api/v1/namespaces/{NS}/services"))["items"] == []
