"""`helm install` of charts/l2lb into the real 3-node cluster of tests/e2e/cluster.py (issue 23): the same
seed, Pi-hole pod and DNS-through-the-VIP check as test_k8s.py's `kubectl apply -k` install, then
`helm upgrade` (DNS keeps answering, the chart-made Redis passwords stay), then `helm uninstall`
(announcers gone at once, the VIP no longer answered, only the CRDs and Redis's volumes left).

Helm is v4.3.2 from tests/support/helm; it runs in the control-plane namespace like the harness's kubectl.
Run with ``bash scripts/dev e2e`` (``pytest -m e2e tests/e2e/test_k8s_helm.py``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_support import CHART, helm_bin
from tests.e2e import test_k8s
from tests.e2e.cluster import Cluster, run, wait_for
from tests.e2e.test_k8s import (
    DNS_ANSWER,
    E2E,
    REPO,
    _arp_mac,
    _dig,
    _seed_testnet,
    _wait_l2lb_ready,
    check_traffic,
)

pytestmark = [pytest.mark.e2e]
cluster = test_k8s.cluster  # the module-scoped fixture: this module gets a cluster of its own
NS = "l2lb-system"


def helm(c: Cluster, home: Path, *args: str, timeout: float = 300) -> str:
    env = {**os.environ, "KUBECONFIG": str(c.dir / "cp" / "admin.kubeconfig"), "HELM_CACHE_HOME": str(home / "c"),
           "HELM_CONFIG_HOME": str(home / "cfg"), "HELM_DATA_HOME": str(home / "d")}
    proc = run(["nsenter", f"--net=/run/netns/{c.cp_ns}", "--", helm_bin(), *args], check=False, timeout=timeout,
               env=env)
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.timeout(3600)
def test_helm_install_upgrade_uninstall(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    home = Path(tempfile.mkdtemp(prefix="l2lb-e2e-helm-"))
    results: dict[str, Any] = {}
    # the seed's objects are Cilium kinds and there is no Cilium here: its CRDs from k8s/crds (as test_k8s.py)
    c.kubectl("apply", "-f", str(REPO / "k8s/crds/cilium.io_ciliumloadbalancerippools.yaml"),
              "-f", str(REPO / "k8s/crds/cilium.io_ciliuml2announcementpolicies.yaml"))
    # docs/install.md "With Helm": the namespace with the Pod Security label, then helm install
    c.kubectl("create", "namespace", NS)
    c.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=privileged")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "migration": {"mode": "cilium"},
        "images": {"l2lb": {"repository": "l2lb", "tag": "e2e", "pullPolicy": "IfNotPresent"},
                   "announcer": {"repository": "l2lb-announcer", "tag": "e2e", "pullPolicy": "IfNotPresent"},
                   "redis": {"repository": "l2lb-e2e/redis", "tag": "e2e", "pullPolicy": "IfNotPresent"}},
        "kube": {"qps": 50, "burst": 100},
    }))
    t0 = time.monotonic()
    helm(c, home, "install", "l2lb", str(CHART), "-n", NS, "-f", str(values))
    c.kubectl("label", "nodes", "--all", "l2lb.io/announcer=true")
    c.kubectl("apply", "-k", str(_seed_testnet(tmp_path)))
    c.kubectl("apply", "-f", str(E2E / "workload" / "pihole.yaml"))
    answer = wait_for("a DNS answer through the VIP (helm install)", lambda: _dig(c), timeout=420, interval=0.5)
    results["install_to_first_dns_answer_s"] = round(time.monotonic() - t0, 2)
    assert answer == DNS_ANSWER
    _wait_l2lb_ready(c)
    check_traffic(c, results)
    secret = c.kget("secret", "l2lb-redis", "-n", NS)
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    # upgrade: a changed value rolls allocator and leases; the announcers (the data path) are untouched
    probes: list[bool] = []
    helm(c, home, "upgrade", "l2lb", str(CHART), "-n", NS, "--reuse-values", "--set", "kube.qps=60")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        probes.append(_dig(c) == DNS_ANSWER)
        done = all(c.kubectl("-n", NS, "rollout", "status", f"deploy/{d}", "--timeout=1s", check=False).returncode == 0
                   for d in ("l2lb-allocator", "l2lb-leases"))
        if done and len(probes) >= 10:
            break
        time.sleep(0.5)
    _wait_l2lb_ready(c)
    results["upgrade_dns_probes"] = {"total": len(probes), "answered": sum(probes)}
    print("\nhelm e2e (install, upgrade):", results["install_to_first_dns_answer_s"], results["upgrade_dns_probes"])
    assert all(probes), results["upgrade_dns_probes"]
    assert c.kget("configmap", "l2lb-config", "-n", NS)["data"]["L2LB_KUBE_QPS"] == "60"
    assert c.kget("secret", "l2lb-redis", "-n", NS)["data"] == secret["data"], "helm upgrade changed the passwords"
    listed = yaml.safe_load(helm(c, home, "list", "-n", NS, "-o", "yaml"))
    assert [(r["name"], str(r["revision"]), r["status"]) for r in listed] == [("l2lb", "2", "deployed")]
    check_traffic(c, results)

    # uninstall: announcers stop, nobody answers ARP for the VIP any more; CRDs and Redis claims stay
    helm(c, home, "uninstall", "l2lb", "-n", NS)
    wait_for("no announcer pod", lambda: not c.kget("pods", "-n", NS, "-l",
                                                     "app.kubernetes.io/component=announcer")["items"], timeout=180)
    wait_for("no ARP answer for the DNS VIP", lambda: _arp_mac(c) is None, timeout=60, interval=1)
    left = {f"{d['kind']}/{d['metadata']['name']}"
            for d in c.kget("deploy,daemonset,statefulset,configmap,secret,service", "-n", NS)["items"]
            if d["metadata"]["name"].startswith("l2lb")}
    assert left == set(), left
    crds = {d["metadata"]["name"] for d in c.kget("crd")["items"]}
    assert {"loadbalancerippools.l2lb.io", "l2announcementpolicies.l2lb.io"} <= crds
    print("\nhelm e2e:", {k: v for k, v in results.items() if k != "announcer_pod_links"})
