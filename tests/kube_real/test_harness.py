"""Tests of the real kube-apiserver harness itself (tests/support/kube_real.py + kube-apiserver/)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube_real import SRC_DIR, ApiError, RealApiServer, binary_path, binary_version

pytestmark = pytest.mark.kube


def _kubeconfig(server: RealApiServer) -> tuple[str, str, bytes]:
    cfg = yaml.safe_load(Path(server.kubeconfig).read_text())
    ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
    cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
    user = next(u for u in cfg["users"] if u["name"] == ctx["user"])["user"]
    return cluster["server"], user["token"], base64.b64decode(cluster["certificate-authority-data"])


def _get(url: str, token: str, cadata: bytes) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cadata=cadata.decode())
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_build_script_and_fixture_agree_on_the_binary_name() -> None:
    out = subprocess.run(
        ["bash", str(SRC_DIR / "build.sh"), "--path"], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == str(binary_path())
    assert binary_version() in out.stdout


def test_it_is_the_real_kube_apiserver(real_apiserver: RealApiServer) -> None:
    server, token, ca = _kubeconfig(real_apiserver)
    assert server == real_apiserver.url
    status, version = _get(server + "/version", token, ca)
    assert status == 200
    assert version["gitVersion"] == binary_version()
    assert version["major"] == "1"
    # Only the real server has the aggregation layer, flow control and the full core group.
    status, groups = _get(server + "/apis", token, ca)
    names = {g["name"] for g in groups["groups"]}
    assert {"apiregistration.k8s.io", "flowcontrol.apiserver.k8s.io", "apiextensions.k8s.io"} <= names
    assert real_apiserver.startup_s > 0


def test_kubeconfig_token_is_checked_and_ca_verifies(real_apiserver: RealApiServer) -> None:
    server, token, ca = _kubeconfig(real_apiserver)
    status, ns = _get(server + "/api/v1/namespaces/default", token, ca)
    assert status == 200 and ns["metadata"]["name"] == "default"
    status, body = _get(server + "/api/v1/namespaces/default", "not-a-token", ca)
    assert status == 401, body
    other_ca = Path(tempfile.mkdtemp()) / "ca.pem"
    other_ca.write_text(ssl.get_server_certificate(("127.0.0.1", real_apiserver.port)))
    # The leaf alone is no trust anchor: verification must fail against it.
    with pytest.raises(urllib.error.URLError):
        _get(server + "/version", token, other_ca.read_bytes())


def test_apply_allocates_like_kubernetes_and_reset_removes(kube_real: RealApiServer) -> None:
    kube_real.apply(
        """
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: v1
kind: Service
metadata: {name: site, namespace: web, labels: {app: site}}
spec:
  type: LoadBalancer
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: blue}
spec:
  blocks: [{cidr: 198.51.100.0/28}]
status:
  conditions: [{type: cilium.io/IPsTotal, status: "Unknown", reason: t, message: "14",
                lastTransitionTime: "2026-01-01T00:00:00Z"}]
"""
    )
    svc = kube_real.call("GET", "/api/v1/namespaces/web/services/site")
    # The real server allocates a ClusterIP from --service-cluster-ip-range and a NodePort.
    assert svc["spec"]["clusterIP"].startswith("10.96.")
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    pool = kube_real.call("GET", "/apis/cilium.io/v2/ciliumloadbalancerippools/blue")
    assert pool["spec"]["blocks"] == [{"cidr": "198.51.100.0/28"}]
    assert pool["status"]["conditions"][0]["message"] == "14"

    kube_real.reset()
    for path in (
        "/api/v1/namespaces/web/services/site",
        "/apis/cilium.io/v2/ciliumloadbalancerippools/blue",
        "/api/v1/namespaces/web",
    ):
        with pytest.raises(ApiError) as err:
            kube_real.call("GET", path)
        assert err.value.status == 404, path
    # The "kubernetes" Service survives a reset.
    assert kube_real.call("GET", "/api/v1/namespaces/default/services/kubernetes")["spec"]["clusterIP"]


def test_apply_updates_an_existing_object(kube_real: RealApiServer) -> None:
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1, namespace: default}\ndata: {k: '%s'}\n"
    first = kube_real.apply(doc % "one")[0]
    second = kube_real.apply(doc % "two")[0]
    assert second["data"] == {"k": "two"}
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


def test_requests_come_from_the_audit_log_without_the_harness(kube_real: RealApiServer) -> None:
    kube_real.call("GET", "/api/v1/namespaces/default/configmaps")  # harness: not counted
    kube_real.call("GET", "/api/v1/namespaces/default/services", as_test_user=True)
    with pytest.raises(ApiError):
        kube_real.call("GET", "/api/v1/namespaces/default/services/nope", as_test_user=True)
    reqs = kube_real.requests(settle_s=0.3)
    assert [(r["verb"], r["resource"], r["code"]) for r in reqs] == [
        ("list", "services", 200),
        ("get", "services", 404),
    ]
    assert reqs[1]["path"] == "/api/v1/namespaces/default/services/nope"
    assert all(r["user"] == "l2lb-test" for r in reqs)
    kube_real.clear_requests()
    assert kube_real.requests() == []


def test_fault_injection_skips_on_the_real_server(kube_real: RealApiServer) -> None:
    with pytest.raises(pytest.skip.Exception):
        kube_real.inject(status=500, count=1)
    kube_real.clear_faults()


def test_crds_for_every_configuration_kind_are_served(real_apiserver: RealApiServer) -> None:
    for api_version, kind, namespaced in (
        ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool", False),
        ("cilium.io/v2", "CiliumLoadBalancerIPPool", False),
        ("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy", False),
        ("metallb.io/v1beta1", "IPAddressPool", True),
        ("metallb.io/v1beta1", "L2Advertisement", True),
        ("l2lb.io/v1alpha1", "LoadBalancerIPPool", False),
        ("l2lb.io/v1alpha1", "L2AnnouncementPolicy", False),
    ):
        info = real_apiserver.resource_for(api_version, kind)
        assert info.namespaced is namespaced, kind


def test_namespace_controller_empties_and_removes_a_deleted_namespace(kube_real: RealApiServer) -> None:
    kube_real.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: inside, namespace: doomed}\ndata: {a: b}\n")
    kube_real.call("DELETE", "/api/v1/namespaces/doomed")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ns = kube_real.call("GET", "/api/v1/namespaces/doomed")
        except ApiError as e:
            assert e.status == 404
            break
        assert ns["status"]["phase"] == "Terminating"
        time.sleep(0.2)
    else:
        raise AssertionError("namespace 'doomed' still there after 30 s")
    items = kube_real.call("GET", "/api/v1/configmaps")["items"]
    assert [i["metadata"]["name"] for i in items if i["metadata"]["namespace"] == "doomed"] == []


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 error")])
def test_missing_binary_skips_outside_ci_and_fails_in_ci(ci: str, outcome: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env |= {"L2LB_KUBE_APISERVER_BIN": str(tmp_path / "absent"), "CI": ci}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__)}::test_it_is_the_real_kube_apiserver",
        ],
        cwd=SRC_DIR.parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert outcome in out.stdout, out.stdout[-2000:]
    assert "real kube-apiserver not built" in out.stdout
