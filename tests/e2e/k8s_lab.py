"""The session's one real Kubernetes cluster (tests/e2e/cluster.py) for every k8s e2e test.

Starting the cluster (network, API server, 3 nodes with their containerd, kubelet and kube-proxy,
CoreDNS, storage) costs a minute or more, so every test module that needs it (test_k8s.py: install
with kubectl + failover; test_k8s_helm.py: install with helm) shares one, started at first use and
removed at the end of the session (also when a test failed). Between two tests :func:`reset` puts
it back to the state right after its start: every node up and Ready, its cable in; l2lb and the
seed's workload gone (their namespaces, l2lb's cluster-wide RBAC, the seed's pools and policies,
the nodes' opt-in label), the Redis volumes empty and Available again. CRDs stay (installing them
again is part of each install; Helm keeps existing CRDs anyway).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, ClusterError, run, sweep_stale, wait_for

E2E = Path(__file__).resolve().parent / "k8s"
IMAGE_NAMES = ("pause", "l2lb", "l2lb-announcer", "redis", "dnsmasq", "http")
NAMESPACES = ("l2lb-system", "pihole")
# the seed's kinds and l2lb's own (cluster-scoped objects; their CRDs stay)
CUSTOM_KINDS = ("ciliumloadbalancerippools.cilium.io", "ciliuml2announcementpolicies.cilium.io",
                "loadbalancerippools.l2lb.io", "l2announcementpolicies.l2lb.io")
OPT_IN_LABEL = "l2lb.io/announcer"


def images() -> dict[str, Path]:
    """The e2e image archives the nodes need (tests/e2e/images.py; ``L2LB_E2E_IMAGES`` overrides)."""
    override = os.environ.get("L2LB_E2E_IMAGES")  # {"name": "/path/archive.tar", ...}: these archives instead
    if override:
        given = {k: Path(v) for k, v in json.loads(override).items()}
        missing = [n for n in IMAGE_NAMES if n not in given or not given[n].is_file()]
        if missing:
            raise ClusterError(f"L2LB_E2E_IMAGES names no existing archive for {missing}")
        return {n: given[n] for n in IMAGE_NAMES}
    from tests.e2e.images import build_all

    built = build_all()
    missing = [n for n in IMAGE_NAMES if n not in built]
    if missing:
        raise ClusterError(f"tests/e2e/images.py built no image for {missing}")
    return {n: Path(built[n].archive) for n in IMAGE_NAMES}


def install_addons(c: Cluster) -> None:
    """What a cluster has before l2lb: cluster DNS, a default StorageClass with volumes."""
    _storage(c)
    c.kubectl("apply", "-f", str(E2E / "addons" / "coredns.yaml"))
    with c.timing.step("coredns_ready"):
        c.kubectl("-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=240s", timeout=260)


def _storage(c: Cluster) -> None:
    pv_dir = c.dir / "pv" / "redis"
    for k in range(3):
        d = pv_dir / str(k)
        shutil.rmtree(d, ignore_errors=True)  # what the last test's Redis wrote
        d.mkdir(parents=True)
        d.chmod(0o777)
    storage = (E2E / "addons" / "storage.yaml").read_text().replace("@PV_DIR@", str(pv_dir))
    c.kubectl("apply", "-f", "-", input=storage)


def session_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Body of the session fixture ``k8s_cluster`` (tests/e2e/conftest.py)."""
    # tests/e2e/conftest.py deselects e2e tests unless -m names e2e; this guard keeps a plain
    # `pytest tests/` from starting a cluster should that conftest be absent
    if "e2e" not in str(request.config.getoption("markexpr", "")) and os.environ.get("L2LB_E2E") != "1":
        pytest.skip("end-to-end cluster: bash scripts/dev e2e (pytest -m e2e)")
    if os.geteuid() != 0:
        pytest.fail("the e2e cluster needs root (namespaces, cgroups, mounts)")
    sweep_stale()
    t0 = time.monotonic()
    c = Cluster(nodes=3)
    try:
        with c.timing.step("images"):
            c.images.update(images())
        c.build()
        t_start = time.monotonic()
        c.start()
        c.timing.steps["cluster_start_total"] = round(time.monotonic() - t_start, 2)
        install_addons(c)
        c.timing.steps["setup_total"] = round(time.monotonic() - t0, 2)
        print(f"\ne2e cluster {c.prefix} up in {c.timing.steps['setup_total']} s: {c.log}", flush=True)
        yield c
    finally:
        t1 = time.monotonic()
        c.destroy()
        leftovers = [ns for ns in run(["ip", "netns", "list"]).stdout.split() if ns.startswith(c.prefix)]
        print(f"\ne2e cluster {c.prefix} removed in {time.monotonic() - t1:.1f} s", flush=True)
        assert not leftovers, f"namespaces left behind: {leftovers}"


def reset(c: Cluster) -> float:
    """Back to the state right after the cluster started (see the module docstring); seconds it took."""
    t0 = time.monotonic()
    for n in c.nodes:
        if n.holder is None or n.holder.poll() is not None:
            c.restart_node(n)  # a test that failed while a node was dead
        c.cable(n, True)
    wait_for("every node Ready", c._all_nodes_ready, timeout=240, interval=1)
    c.kubectl("delete", "namespace", *NAMESPACES, "--ignore-not-found", "--wait=true", "--timeout=300s",
              timeout=320)
    for kind in ("clusterrolebindings", "clusterroles"):
        names = [i["metadata"]["name"] for i in c.kget(kind)["items"] if i["metadata"]["name"].startswith("l2lb")]
        if names:
            c.kubectl("delete", kind, *names, "--ignore-not-found")
    crds = {i["metadata"]["name"] for i in c.kget("crd")["items"]}
    for kind in CUSTOM_KINDS:
        if kind in crds:
            c.kubectl("delete", kind, "--all", "--ignore-not-found")
    c.kubectl("label", "nodes", "--all", f"{OPT_IN_LABEL}-")
    pvs = [i["metadata"]["name"] for i in c.kget("pv")["items"]]
    if pvs:  # Released (their claims went with the namespace): new ones on empty directories
        c.kubectl("delete", "pv", *pvs, "--wait=true", "--timeout=120s", timeout=140)
    _storage(c)
    left = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in c.kget("pods", "-A")["items"]
            if p["metadata"]["namespace"] != "kube-system"]
    if left:
        raise ClusterError(f"pods left after the reset: {left}")
    took = round(time.monotonic() - t0, 2)
    c.timing.steps[f"reset_{len([k for k in c.timing.steps if k.startswith('reset_')]) + 1}"] = took
    return took
