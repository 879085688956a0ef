"""`l2lb allocator` as a real process: HTTP endpoints, kill -9 and restart without IP changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import KubeHandle, free_port
from tests.support.procs import http_get

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
N = 150




def _wait(cond: object, within: float, step: float = 0.1) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if cond():  # type: ignore[operator]
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"condition not met within {within}s")


class Proc:
    def __init__(self, kube: KubeHandle, redis_url: str, prefix: str, tmp: Path, name: str):
        self.port = free_port()
        self.log = (tmp / f"{name}.log").open("w")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "l2lb.cli", "allocator", "--kubeconfig", kube.kubeconfig,
             "--redis", redis_url, "--redis-prefix", prefix, "--instance", name,
             "--http-port", str(self.port), "--le-lease-duration", "2", "--le-renew-deadline", "1.5",
             "--le-retry-period", "0.3", "--kube-qps", "200", "--kube-burst", "400"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self) -> bool:
        return http_get(self.url("/readyz"))[0] == 200

    def status(self) -> dict[str, object]:
        code, body = http_get(self.url("/v1/status"))
        assert code == 200, body
        out: dict[str, object] = json.loads(body)["allocator"]
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.log.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    out: list[Proc] = []
    yield out
    for p in out:
        p.stop()


def _ips(kube: KubeHandle, ns: str) -> dict[str, list[str]]:
    code, obj, _ = kube.http("GET", f"/api/v1/namespaces/{ns}/services")
    assert code == 200
    return {i["metadata"]["name"]: [x["ip"] for x in ((i.get("status") or {}).get("loadBalancer") or {})
                                    .get("ingress") or []] for i in obj["items"]}


def test_kill_9_and_restart(kube: KubeHandle, redis_url: str, tmp_path: Path, procs: list[Proc]) -> None:
    kube.apply(ROOT / "k8s" / "crds")
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: l2lb-system}\n---\n"
               "apiVersion: v1\nkind: Namespace\nmetadata: {name: bulk}\n")
    kube.apply(ROOT / "tests" / "fixtures" / "seed")
    kube.apply("apiVersion: l2lb.io/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: bulk}\n"
               "spec:\n  blocks: [{cidr: 198.51.100.0/24}]\n"
               "  serviceSelector: {matchLabels: {io.kubernetes.service.namespace: bulk}}\n")
    for i in range(N):
        code, out, _ = kube.http("POST", "/api/v1/namespaces/bulk/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "bulk"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})
        assert code == 201, out
    prefix = f"proc{time.monotonic_ns()}"
    a = Proc(kube, redis_url, prefix, tmp_path, "alloc-a")
    procs.append(a)
    _wait(a.ready, 30)
    _wait(lambda: all(v for v in _ips(kube, "bulk").values()), 30)
    before = _ips(kube, "bulk") | {f"pihole/{k}": v for k, v in _ips(kube, "pihole").items()}
    assert before["pihole/pihole-dns-tcp"] == before["pihole/pihole-dns-udp"] == ["192.168.1.153"]
    assert len({v[0] for k, v in before.items() if not k.startswith("pihole/")}) == N

    code, metrics = http_get(a.url("/metrics"))
    assert code == 200
    assert f'l2lb_allocator_pool_ips{{pool="bulk",state="used"}} {float(N)}' in metrics
    st = a.status()
    assert st["role"] == "leader" and len(st["services"]) == N + 3  # type: ignore[arg-type]
    assert st["pools"]["default-pool"]["used"] == 2  # type: ignore[index]

    # the cluster view every service serves, fed by the allocator's status parts in Redis
    def pools_view() -> dict[str, Any]:
        code, body = http_get(a.url("/v1/pools"))
        return {p["name"]: p for p in json.loads(body)["items"]} if code == 200 else {}
    _wait(lambda: pools_view().get("bulk", {}).get("used") == N, 10)
    code, body = http_get(a.url("/v1/services?namespace=pihole"))
    assert code == 200, body
    view = {s["name"]: s for s in json.loads(body)["items"]}
    assert [(i["ip"], i["pool"]) for i in view["pihole-dns-udp"]["ips"]] == [("192.168.1.153", "default-pool")]

    a.stop(signal.SIGKILL)  # no Lease release: the next one waits for it to expire
    kube.clear_requests()
    t0 = time.monotonic()
    b = Proc(kube, redis_url, prefix, tmp_path, "alloc-b")
    procs.append(b)
    _wait(b.ready, 30, step=0.05)
    t_ready = time.monotonic() - t0  # ready as standby: caches synced
    _wait(lambda: b.status()["role"] == "leader" and b.status()["restores"] == 1, 30, step=0.05)
    took = time.monotonic() - t0
    print(f"allocator restart after kill -9 with {N + 3} Services: ready (standby) after {t_ready:.2f} s, "
          f"leader with everything restored after {took:.2f} s (includes waiting out the dead "
          f"leader's 2 s Lease); restore itself {b.status()['last_restore_seconds']} s")
    after = _ips(kube, "bulk") | {f"pihole/{k}": v for k, v in _ips(kube, "pihole").items()}
    assert after == before
    patches = [r for r in kube.requests() if "/services/" in r.get("path", "") and r.get("verb") == "patch"]
    assert patches == []
