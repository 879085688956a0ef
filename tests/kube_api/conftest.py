"""The API behaviour suite runs against the embedded server and, when its binary is built, a real
kube-apiserver (``tests/support/kube_real.py``): ``kube`` here is parametrized over both."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.kube_api.helpers import NS
from tests.support.kube import ApiServerProcess, KubeHandle, fresh_handle

REPO = Path(__file__).resolve().parents[2]
MINIMAL_CRDS = Path(__file__).with_name("crds_minimal.yaml")


class RealHandle(KubeHandle):
    """The suite's handle on the real kube-apiserver fixture: HTTPS + bearer token, no debug hooks."""

    embedded = False

    def __init__(self, server: Any):
        super().__init__(server.url, server.kubeconfig)
        self.server = server

    def _ssl(self) -> ssl.SSLContext:
        ctx: ssl.SSLContext = self.server._ssl
        return ctx

    def http(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
             query: dict[str, str] | None = None, timeout: float = 30.0, raw: bytes | None = None
             ) -> tuple[int, Any, dict[str, str]]:
        url = self.url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.server.token}",
                                              "Accept": "application/json"})
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl()) as r:
                code, text, headers = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            code, text, headers = e.code, e.read(), dict(e.headers)
        try:
            decoded: Any = json.loads(text) if text else None
        except ValueError:
            decoded = text.decode(errors="replace")
        return code, decoded, headers

    def aiohttp_kwargs(self) -> dict[str, Any]:
        return {"ssl": self._ssl(), "headers": {"Authorization": f"Bearer {self.server.token}"}}

    def requests(self, since: float | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.server.requests()
        return [e for e in out if since is None or e["t"] >= since]

    def clear_requests(self) -> None:
        self.server.clear_requests()

    def inject(self, **fault: Any) -> dict[str, Any]:
        pytest.skip("fault injection exists only in the embedded API server")

    def clear_faults(self) -> None:
        return None

    def compact(self, rv: int | None = None) -> int:
        pytest.skip("compaction on demand exists only in the embedded API server")

    def configure(self, **cfg: Any) -> dict[str, Any]:
        pytest.skip("server configuration exists only in the embedded API server")

    def reset(self, keep_crds: bool = True) -> None:
        self.server.reset()
        self._disc = None


@pytest.fixture(params=["embedded", "real"])
def kube(request: pytest.FixtureRequest, apiserver_process: ApiServerProcess) -> KubeHandle:
    if request.param == "embedded":
        return fresh_handle(apiserver_process)
    server = request.getfixturevalue("real_apiserver")
    server.reset()
    server.clear_requests()
    return RealHandle(server)


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
