"""l2lb run the way users run it, in a real 3-node Kubernetes (issue 20, items 2-5).

One long scenario on the session's cluster (tests/e2e/k8s_lab.py, tests/e2e/cluster.py): install l2lb
with docs/install.md's commands through a small overlay (images only), the seed's pool/policy/Services
(addresses moved to TEST-NET-2), a DNS + HTTP Deployment behind them (2 replicas on two nodes); a client
namespace with default sysctls resolves over UDP and TCP and fetches the page through the VIPs; then the
failover of the DNS VIP, measured on that traffic, under the faults of ``L2LB_E2E_FAULTS`` (default all):

* a  the announcing node's announcer pod is deleted        * b  its container is SIGKILLed
* c  the announcing node's cable is pulled (40 s)           * d  the announcing node dies
* d2 the Redis master's node dies                            * d1 the node of a 1-replica Pi-hole dies
  (the app's outage, reported, not asserted)

Every move of the VIP during the run, with the reason leases gave, is listed; a move outside a fault,
or back to a node once its fault healed, fails the test (the election is sticky). Run with
``bash scripts/dev e2e`` (``pytest -m e2e``), a measurement with ``bench/k8s/failover.sh``; results are
printed and written to ``$L2LB_E2E_RESULTS`` (default ~/.cache/l2lb/e2e-k8s-results.json).
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import k8s_lab
from tests.e2e.cluster import (
    Cluster,
    ClusterError,
    Node,
    in_ns,
    run,
    wait_for,
)
from tests.e2e.failover import FaultResult, bench_lock, run_fault

REPO = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent / "k8s"
SEED_DIR = REPO / "tests" / "fixtures" / "seed"
DNS_VIP = "198.51.100.153"  # the seed's 192.168.1.153, moved to TEST-NET-2
DNS_NAME = "pihole.lab.test"
DNS_ANSWER = "198.51.100.80"
STABLE_S = 10.0  # the VIP on one node this long before a fault
# a dead node stays dead this long (> the 50 s node-monitor grace), then powers on
DEATH_WINDOW_S = float(os.environ.get("L2LB_E2E_DEATH_S", "75"))
ALL_FAULTS = ("a", "b", "c", "d", "d2", "d1", "dm")
# a subset for a shorter run (CI): e.g. L2LB_E2E_FAULTS=a,c,d; "all" (the default) = every fault
_asked = os.environ.get("L2LB_E2E_FAULTS", "all").strip()
FAULTS = set(ALL_FAULTS) if _asked in ("", "all") else {f.strip() for f in _asked.split(",") if f.strip()}
if FAULTS - set(ALL_FAULTS):
    raise ValueError(f"L2LB_E2E_FAULTS: unknown faults {sorted(FAULTS - set(ALL_FAULTS))}; "
                     f"known: {','.join(ALL_FAULTS)} or all")

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def cluster(k8s_cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster (tests/e2e/k8s_lab.py), back in its just-started state when a test used it before."""
    if k8s_cluster.tests_run:
        took = k8s_lab.reset(k8s_cluster)
        print(f"\ne2e cluster reset in {took} s", flush=True)
    k8s_cluster.tests_run += 1
    yield k8s_cluster


def _seed_testnet(tmp: Path) -> Path:
    """The seed's manifests with the LAN range moved to TEST-NET-2, nothing else changed."""
    out = tmp / "seed"
    out.mkdir()
    for f in SEED_DIR.iterdir():
        text = f.read_text().replace("192.168.1.128/25", "198.51.100.128/25").replace("192.168.1.153", DNS_VIP)
        (out / f.name).write_text(text)
    assert "192.168." not in "".join(p.read_text() for p in out.iterdir())
    return out


def _dig(c: Cluster, *extra: str) -> str:
    proc = in_ns(c.client_ns, ["dig", f"@{DNS_VIP}", DNS_NAME, "+short", "+time=1", "+tries=1", *extra],
                 check=False, timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _pods(c: Cluster, ns: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = c.kget("pods", "-n", ns, "-l", selector)["items"]
    return items


def _node_of(c: Cluster, name: str) -> Node:
    return next(n for n in c.nodes if n.name == name)


def _arp_mac(c: Cluster) -> str | None:
    proc = in_ns(c.observer_ns, ["arping", "-c", "1", "-w", "1", "-I", "eth0", DNS_VIP], check=False, timeout=10)
    for line in proc.stdout.splitlines():
        if "[" in line and "]" in line:
            return line.split("[", 1)[1].split("]", 1)[0].lower()
    return None


def _announcer_node(c: Cluster, *, stable_s: float = 0.0, timeout: float = 120.0) -> Node:
    """The node whose MAC answers ARP for the DNS VIP (asked from the observer namespace); with
    ``stable_s``, only once the same node has answered for that long (a VIP can move back to a
    node that returned, some seconds later: a fault must hit the node announcing at that time)."""
    since: dict[str, float] = {}

    def ask() -> str | None:
        mac = _arp_mac(c)
        now = time.monotonic()
        if mac is None or mac not in since:
            since.clear()
            if mac is not None:
                since[mac] = now
            return None if stable_s > 0 or mac is None else mac
        return mac if now - since[mac] >= stable_s else None
    mac = wait_for(f"one node answering ARP for the DNS VIP for {stable_s:.0f} s", ask, timeout=timeout, interval=0.5)
    for n in c.nodes:
        if n.mac == mac:
            return n
    raise ClusterError(f"{mac} answers for {DNS_VIP}, which is no node's MAC")


def _roles(c: Cluster) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {n.name: [] for n in c.nodes}
    pods = c.kget("pods", "-n", "l2lb-system")["items"]
    redis_pods = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods
                  if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "redis"}
    master = _redis_master(c, list(redis_pods))
    for pod, node in redis_pods.items():
        if node in roles:
            roles[node].append("redis" if len(redis_pods) == 1 else
                               "redis-master" if pod == master else "redis-replica")
    for p in c.kget("pods", "-n", "pihole")["items"]:  # the DNS/web backend: a 1-replica one's node death is the app's
        if p["spec"].get("nodeName") in roles:
            roles[p["spec"]["nodeName"]].append("pihole-backend")
    for p in c.kget("pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"]:  # cluster DNS: the sentinels
        if p["spec"].get("nodeName") in roles:  # and Redis clients resolve names through it
            roles[p["spec"]["nodeName"]].append("coredns")
    for lease in ("l2lb-leases", "l2lb-allocator"):
        proc = c.kubectl("-n", "l2lb-system", "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}",
                         check=False)
        holder = proc.stdout.strip()
        for p in c.kget("pods", "-n", "l2lb-system")["items"]:
            if holder and holder.startswith(p["metadata"]["name"]) and p["spec"].get("nodeName") in roles:
                roles[p["spec"]["nodeName"]].append(f"{lease.removeprefix('l2lb-')}-leader")
    try:
        roles[_announcer_node(c).name].append("announces-dns-vip")
    except ClusterError:
        pass
    return roles


def _redis_master(c: Cluster, pods: list[str]) -> str | None:
    """The Redis pod the sentinels name as master (k8s/base runs Redis + Sentinel in 3 pods). The sentinels
    name it by its own Service's ClusterIP (Service l2lb-redis-N, k8s/base/redis) or, before that, by its
    name behind the headless Service (l2lb-redis-N.l2lb-redis-headless...)."""
    for pod in pods:
        proc = c.kubectl("-n", "l2lb-system", "exec", pod, "-c", "sentinel", "--", "redis-cli", "--no-auth-warning",
                         "-p", "26379", "sentinel", "get-master-addr-by-name", "l2lb", check=False, timeout=20)
        host = proc.stdout.split("\n", 1)[0].strip()
        if proc.returncode != 0 or not host:
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host.split(".", 1)[0]
        by_ip = {s["spec"].get("clusterIP"): s["metadata"]["name"] for s in c.kget("svc", "-n", "l2lb-system")["items"]}
        return by_ip.get(host, host)
    return None


def _time_new_service(c: Cluster, name: str, since: float, out: dict[str, Any], timeout: float = 240) -> None:
    """Creates LoadBalancer Service ``name`` (pihole namespace) and records in ``out`` the seconds from ``since``
    (monotonic: the node's kill) until it was created and until its status got an IP: what a user who adds a
    Service while the control plane fails over waits (the allocator needs the Redis master)."""
    manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "pihole"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "pihole"},
                         "ports": [{"name": "probe", "port": 9, "targetPort": 80, "protocol": "TCP"}]}}
    try:
        c.kubectl("create", "-f", "-", input=json.dumps(manifest), timeout=30)
        out["created_s"] = round(time.monotonic() - since, 2)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            proc = c.kubectl("-n", "pihole", "get", "svc", name, "-o",
                             "jsonpath={.status.loadBalancer.ingress[0].ip}", check=False, timeout=20)
            if proc.returncode == 0 and proc.stdout.strip():
                out["ip"] = proc.stdout.strip()
                out["ip_s"] = round(time.monotonic() - since, 2)
                return
            time.sleep(0.5)
        out["ip_s"] = None
        out["error"] = f"no IP within {timeout:.0f} s"
    except (ClusterError, OSError, ValueError) as e:  # recorded, the fault's other figures still count
        out["error"] = str(e)[-300:]


def _arrange_dm(c: Cluster, node: Node) -> list[str]:
    """Puts a CoreDNS replica and the Redis master on ``node`` (fault dm); returns what it did. CoreDNS: the
    other nodes cordoned while one CoreDNS pod elsewhere is deleted, so its replacement lands on ``node``.
    Redis: the other replica's Redis paused (its sentinels call it down after 1 s) during SENTINEL FAILOVER,
    so the sentinels can only promote ``node``'s replica."""
    done: list[str] = []
    dns = c.kget("pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"]
    if not any(p["spec"].get("nodeName") == node.name for p in dns):
        others = [o.name for o in c.nodes if o.name != node.name]
        for name in others:
            c.kubectl("cordon", name)
        try:
            c.kubectl("-n", "kube-system", "delete", "pod", dns[0]["metadata"]["name"], timeout=90)
            c.kubectl("-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=120s", timeout=140)
        finally:
            for name in others:
                c.kubectl("uncordon", name)
        done.append(f"CoreDNS pod {dns[0]['metadata']['name']} on {dns[0]['spec'].get('nodeName')} replaced "
                    f"by one on {node.name}")
    for _ in range(3):
        pods = _pods(c, "l2lb-system", "app.kubernetes.io/component=redis")
        master = _redis_master(c, [p["metadata"]["name"] for p in pods])
        (mine,) = [p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") == node.name]
        if master == mine:
            return done
        paused: list[tuple[Node, str]] = []
        try:
            for p in pods:
                if p["metadata"]["name"] in (master, mine):
                    continue
                cid = next(s["containerID"] for s in p["status"]["containerStatuses"]
                           if s["name"] == "redis").split("://", 1)[1]
                host = _node_of(c, p["spec"]["nodeName"])
                c.node_exec(host, ["ctr", "-n", "k8s.io", "task", "pause", cid])
                paused.append((host, cid))
            time.sleep(3)
            c.kubectl("-n", "l2lb-system", "exec", mine, "-c", "sentinel", "--", "redis-cli", "--no-auth-warning",
                      "-p", "26379", "sentinel", "failover", "l2lb", timeout=20)
            wait_for(f"{mine} the Redis master", lambda who=mine: _redis_master(c, [who]) == who,
                     timeout=40, interval=1)
        finally:
            for host, cid in paused:
                c.node_exec(host, ["ctr", "-n", "k8s.io", "task", "resume", cid])
        done.append(f"Redis master {master} -> {mine} (SENTINEL FAILOVER, the other replica paused)")
        time.sleep(5)  # the old master and the paused replica reconfigured as replicas
    raise ClusterError(f"could not make the Redis pod on {node.name} the master: {done}")


def _sentinel_story(c: Cluster, since: float, dead: str) -> dict[str, Any]:
    """What the sentinels of the Redis pods that survived a node death logged since ``since`` (wall clock):
    the first +switch-master (a new master: seconds after ``since``), how often they entered TILT mode, how
    many name lookups failed, and the lines that say so (kubectl logs --timestamps)."""
    story: dict[str, Any] = {"switch_master_s": None, "tilt_entered": 0, "failed_lookups": 0, "lines": []}
    keys = ("+sdown master", "+odown", "+tilt", "-tilt", "Failed to resolve", "+try-failover", "+promoted-slave",
            "+switch-master", "Next failover delay")
    for p in _pods(c, "l2lb-system", "app.kubernetes.io/component=redis"):
        if p["spec"].get("nodeName") == dead:
            continue
        name = p["metadata"]["name"]
        proc = c.kubectl("-n", "l2lb-system", "logs", name, "-c", "sentinel", "--timestamps", check=False, timeout=30)
        for line in proc.stdout.splitlines():
            stamp, _, msg = line.partition(" ")
            try:  # RFC 3339 with nanoseconds: keep microseconds
                head, _, frac = stamp.rstrip("Z").partition(".")
                at = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()
            except ValueError:
                continue
            if at < since or not any(k in msg for k in keys):
                continue
            rel = round(at - since, 1)
            story["lines"].append(f"{name} +{rel:6.1f} s {msg.strip()[-160:]}")
            story["tilt_entered"] += "+tilt" in msg
            story["failed_lookups"] += "Failed to resolve" in msg
            if "+switch-master" in msg and (story["switch_master_s"] is None or rel < story["switch_master_s"]):
                story["switch_master_s"] = rel
    story["lines"].sort(key=lambda x: float(x.split("+", 1)[1].split(" s ", 1)[0]))
    return story


def _wait_l2lb_ready(c: Cluster, timeout: float = 240) -> None:
    for kind, name in (("statefulset", "l2lb-redis"), ("deploy", "l2lb-allocator"), ("deploy", "l2lb-leases"),
                       ("daemonset", "l2lb-announcer")):
        c.kubectl("-n", "l2lb-system", "rollout", "status", f"{kind}/{name}", f"--timeout={int(timeout)}s",
                  timeout=timeout + 20)


def install_l2lb(c: Cluster, tmp: Path) -> float:
    """docs/install.md's commands (CRDs, Secret, apply -k of an images-only overlay), the node label
    of the Cilium overlay, the seed (TEST-NET-2) and the Pi-hole pod; returns when apply -k ran."""
    c.kubectl("apply", "-f", str(REPO / "k8s/crds/l2lb.io_loadbalancerippools.yaml"),
              "-f", str(REPO / "k8s/crds/l2lb.io_l2announcementpolicies.yaml"))
    # no Cilium here: its CRDs from k8s/crds, so the seed's Cilium objects apply unchanged (k8s/crds/README.md)
    c.kubectl("apply", "-f", str(REPO / "k8s/crds/cilium.io_ciliumloadbalancerippools.yaml"),
              "-f", str(REPO / "k8s/crds/cilium.io_ciliuml2announcementpolicies.yaml"))
    secret = run(["sh", str(REPO / "deploy/k8s/redis-secret.sh")]).stdout
    c.kubectl("create", "-f", "-", input=secret)
    t_apply = time.monotonic()
    c.kubectl("apply", "-k", str(E2E / "overlay"), timeout=120)
    c.kubectl("label", "nodes", "--all", "l2lb.io/announcer=true")
    c.kubectl("apply", "-k", str(_seed_testnet(tmp)))
    c.kubectl("apply", "-f", str(E2E / "workload" / "pihole.yaml"))
    return t_apply


def check_traffic(c: Cluster, results: dict[str, Any]) -> None:
    """UDP and TCP DNS and HTTP through the VIPs, from the client with default sysctls."""
    assert _dig(c) == DNS_ANSWER, "UDP"
    assert _dig(c, "+tcp") == DNS_ANSWER, "TCP"
    svc = c.kget("svc", "-n", "pihole")["items"]
    ips = {s["metadata"]["name"]: [i["ip"] for i in s["status"].get("loadBalancer", {}).get("ingress", [])]
           for s in svc}
    results["service_ips"] = ips
    assert ips["pihole-dns-tcp"] == ips["pihole-dns-udp"] == [DNS_VIP]
    (web_ip,) = ips["pihole-web"]
    # the web VIP may be announced a little after the DNS one: bounded wait for the page
    t0 = time.monotonic()
    page = wait_for(f"the page through {web_ip}", lambda: in_ns(
        c.client_ns, ["curl", "-sS", "--max-time", "3", f"http://{web_ip}/"], check=False, timeout=10).stdout,
        timeout=90, interval=0.5)
    results["web_page_wait_s"] = round(time.monotonic() - t0, 2)
    assert "l2lb-e2e-http-ok" in page, page[:500]
    # the client really has default sysctls, and learnt the VIP by ARP on the LAN
    assert in_ns(c.client_ns, ["sysctl", "-n", "net.ipv4.conf.all.arp_accept"]).stdout.strip() == "0"
    neigh = in_ns(c.client_ns, ["ip", "neigh", "show", DNS_VIP]).stdout
    assert any(n.mac in neigh for n in c.nodes), neigh
    # the announcer pod sees the node's links (enp0s25, cni0, pod veths) and nothing of the host
    ann = _announcer_node(c)
    results["first_announcer"] = ann.name
    pod = next(p for p in _pods(c, "l2lb-system", "app.kubernetes.io/component=announcer")
               if p["spec"]["nodeName"] == ann.name)
    links = c.kubectl("-n", "l2lb-system", "exec", pod["metadata"]["name"], "--", "python3", "-c",
                      "import socket; print(sorted(n for _, n in socket.if_nameindex()))", check=False)
    results["announcer_pod_links"] = links.stdout.strip() or links.stderr.strip()
    names = links.stdout.strip().strip("[]").replace("'", "").split(", ")  # a list of names, not a substring
    assert "enp0s25" in names and "eth0" not in names, links  # (a veth named veth0... contains "eth0")


@pytest.mark.timeout(3600)  # cluster start (+ builds when cold), install, the faults with reboots
def test_l2lb_in_a_real_cluster(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"),
                               "machine": "2-core Firecracker VM, kernel 6.18", "timing": c.timing.steps,
                               "harness": c.log, "faults_asked": sorted(FAULTS)}
    # ---- item 3: install as users do
    t_apply = install_l2lb(c, tmp_path)
    # ---- item 4: the first DNS answer through the VIP, then UDP, TCP and HTTP through the VIPs
    answer = wait_for("a DNS answer through the VIP", lambda: _dig(c), timeout=420, interval=0.5)
    results["apply_to_first_dns_answer_s"] = round(time.monotonic() - t_apply, 2)
    assert answer == DNS_ANSWER
    _wait_l2lb_ready(c)
    _wait_pihole(c, 2)
    check_traffic(c, results)
    # ---- item 5: failover under the faults
    # timed figures: under the machine's shared benchmark lock when L2LB_BENCH_LOCK names it
    wait_s = float(os.environ.get("L2LB_BENCH_LOCK_WAIT", "600"))
    t_faults = time.time()
    windows: list[dict[str, Any]] = []
    try:
        with bench_lock(os.environ.get("L2LB_BENCH_LOCK"), wait_s=wait_s) as st:
            results["bench_lock"] = st
            results["faults"] = _failover(c, tmp_path, st, windows)
    finally:  # every move l2lb made while the faults ran, with its reason: also when a fault failed
        results["moves"] = _moves(c, t_faults, windows)
        # sticky: l2lb moves a VIP only because of a fault; never between faults, never back to a node
        # once its fault healed (announcer back, cable in, node on again)
        results["unexplained_moves"] = [m for m in results["moves"] if m["during"] is None or m["back_to_healed"]]
        results["sentinels"] = {w["fault"]: w["sentinels"] for w in windows if "sentinels" in w}
        results["new_service"] = {w["fault"]: w["new_service"] for w in windows if "new_service" in w}
        out = Path(os.environ.get("L2LB_E2E_RESULTS", str(Path.home() / ".cache/l2lb/e2e-k8s-results.json")))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))
    print("\n" + json.dumps({k: v for k, v in results.items() if k not in ("faults", "moves")}, indent=1,
                            default=str))
    for f in results["faults"]:
        print(FaultResult(**f).line())
    for m in results["moves"]:
        print(f"move {m['t_s']:7.1f} s {m['from']} -> {m['to']} ({m['reason']}, gap {m.get('gap_ms')} ms) "
              f"during {m['during']}")
    # what must hold whatever the placement: a lost announcer pod/container never darkens the VIP
    # for good, nor does a cut cable of a node that does not run Redis (or a cluster DNS server the
    # Redis clients and sentinels need), nor the death of the announcing node while the other
    # Pi-hole replica and Redis live on; the rest is reported
    infra = {"redis", "redis-master", "coredns"}
    for f in results["faults"]:
        if f["name"] in ("a", "b") or (f["name"] in ("c", "d") and not infra & set(f["roles"])):
            assert f["udp"]["recovered"] and f["tcp"]["recovered"], f
    # sticky: l2lb moves a VIP only because of a fault (a node or announcer that went away)
    assert not results["unexplained_moves"], results["unexplained_moves"]


def _wait_pihole(c: Cluster, replicas: int) -> None:
    c.kubectl("-n", "pihole", "rollout", "status", "deploy/pihole", "--timeout=240s", timeout=260)
    wait_for(f"{replicas} ready Pi-hole pods", lambda: len([
        p for p in _pods(c, "pihole", "app=pihole") if p["metadata"].get("deletionTimestamp") is None
        and any(cd["type"] == "Ready" and cd["status"] == "True" for cd in p["status"].get("conditions", []))
    ]) == replicas, timeout=240, interval=1)


def _moves(c: Cluster, since: float, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The DNS VIP's moves since ``since`` (wall clock) as leases recorded them (the cluster view's events in
    Redis, read through a leases pod's /v1/events), each with the fault whose window it fell in: "<fault>"
    from its injection until 5 s after it healed, "<fault> healed" from then until all was steady again,
    None between faults; ``back_to_healed``: it went to the node whose fault had healed."""
    for p in _pods(c, "l2lb-system", "app.kubernetes.io/component=leases"):
        if p["status"].get("phase") != "Running":
            continue
        proc = c.kubectl("get", "--raw", f"/api/v1/namespaces/l2lb-system/pods/{p['metadata']['name']}:9100/proxy"
                         "/v1/events?type=move&limit=1000", check=False, timeout=30)
        if proc.returncode != 0:
            continue
        out = []
        for ev in sorted(json.loads(proc.stdout)["items"], key=lambda e: e["at"]):
            if ev["ip"] != DNS_VIP or ev["at"] < since:
                continue
            w = next((w for w in windows if w["inject"] - 1 <= ev["at"] <= w["steady"]), None)
            healed = w is not None and ev["at"] > w["heal"] + 5
            during = None if w is None else w["fault"] + (" healed" if healed else "")
            out.append({"t_s": round(ev["at"] - since, 1), "from": ev["from"], "to": ev["to"],
                        "reason": ev["reason"], "gap_ms": ev.get("gap_ms"), "during": during,
                        "back_to_healed": healed and w is not None and ev["to"] == w["node"]})
        return out
    return [{"t_s": 0.0, "from": "", "to": "", "reason": "no leases pod answered /v1/events", "during": "?"}]


def _failover(c: Cluster, tmp: Path, lock_state: str, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The faults asked for (L2LB_E2E_FAULTS), each measured on the client's DNS traffic. ``windows`` gets
    each one's fault, node and wall times: injected, healed (announcer back: the end of its measurement;
    cable in; node powered on), steady (every node Ready, l2lb rolled out, DNS answering)."""
    out: list[dict[str, Any]] = []

    def measure(name: str, what: str, pick: Callable[[], Node], act: Callable[[Node], object],
                undo: Callable[[Node], object] | None, max_s: float, min_s: float = 15) -> Node:
        roles = _roles(c)
        chosen: list[Node] = []

        def inject() -> tuple[str, str]:
            node = pick()  # at the moment of the fault: the VIP may have moved since the last look
            chosen.append(node)
            windows.append({"fault": name, "node": node.name, "inject": time.time(), "heal": float("inf"),
                            "steady": float("inf")})
            act(node)
            return node.name, node.mac

        r = run_fault(name=name, what=what, roles=roles, client_ns=c.client_ns, observer_ns=c.observer_ns,
                      vip=DNS_VIP, dns_name=DNS_NAME, expect=DNS_ANSWER, inject=inject,
                      settle=(lambda: healed(undo, chosen[0])) if undo else None, out_dir=tmp,
                      max_seconds=max_s, min_seconds=min_s)
        if windows[-1]["heal"] == float("inf"):
            windows[-1]["heal"] = time.time()  # an announcer pod/container: back by the end of the measurement
        r.notes.append(lock_state)
        print(r.line(), flush=True)
        out.append(r.__dict__)
        return chosen[0]

    def healed(undo: Callable[[Node], object], node: Node) -> None:
        windows[-1]["heal"] = time.time()
        undo(node)

    def steady() -> None:  # the end of the current fault's window: everything back, DNS answering
        wait_for("every node Ready", c._all_nodes_ready, timeout=240, interval=1)
        _wait_l2lb_ready(c)
        wait_for("DNS through the VIP", lambda: _dig(c) == DNS_ANSWER, timeout=300, interval=0.5)
        windows[-1]["steady"] = time.time()

    def announcer_pod(node: Node) -> dict[str, Any]:
        return next(p for p in _pods(c, "l2lb-system", "app.kubernetes.io/component=announcer")
                    if p["spec"]["nodeName"] == node.name)

    def announcing() -> Node:
        return _announcer_node(c)

    def death(name: str, what: str, pick: Callable[[], Node]) -> None:
        # right after the kill a new LoadBalancer Service is created: how long until it gets an IP
        svc = f"e2e-new-{name}"
        alloc: dict[str, Any] = {"service": svc}
        probe: list[threading.Thread] = []

        def kill(n: Node) -> None:
            c.kill_node(n)
            t = threading.Thread(target=_time_new_service, args=(c, svc, time.monotonic(), alloc), daemon=True)
            t.start()
            probe.append(t)

        node = measure(name, what, pick, kill, None, DEATH_WINDOW_S, DEATH_WINDOW_S - 5)
        t0 = time.monotonic()
        windows[-1]["heal"] = time.time()
        c.restart_node(node)
        steady()
        out[-1]["notes"].append(f"node powered on again: Ready + l2lb rolled out + DNS answers "
                                f"{time.monotonic() - t0:.1f} s later")
        for t in probe:
            t.join(timeout=300)
        windows[-1]["new_service"] = alloc
        out[-1]["notes"].append(f"a Service created {alloc.get('created_s')} s after the kill got IP "
                                f"{alloc.get('ip')} {alloc.get('ip_s')} s after the kill {alloc.get('error', '')}")
        c.kubectl("-n", "pihole", "delete", "svc", svc, "--ignore-not-found", "--wait=false", check=False)
        story = _sentinel_story(c, windows[-1]["inject"], node.name)
        windows[-1]["sentinels"] = story
        out[-1]["notes"].append(f"sentinels (surviving pods): new master {story['switch_master_s']} s after the "
                                f"kill, TILT entered {story['tilt_entered']} times, {story['failed_lookups']} "
                                f"failed name lookups")
        print("\n".join(story["lines"]), flush=True)

    # (a) the announcer pod is deleted (kubectl delete pod: SIGTERM, 5 s grace; the DaemonSet recreates it)
    if "a" in FAULTS:
        _announcer_node(c, stable_s=STABLE_S)
        measure("a", "announcer pod deleted", announcing,
                lambda n: c.kubectl("-n", "l2lb-system", "delete", "pod", announcer_pod(n)["metadata"]["name"],
                                    "--wait=false"), None, 45)
        steady()

    # (b) the announcer container is SIGKILLed (kubelet restarts it)
    def sigkill(n: Node) -> None:
        cid = announcer_pod(n)["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        c.node_exec(n, ["ctr", "-n", "k8s.io", "task", "kill", "-s", "SIGKILL", cid])
    if "b" in FAULTS:
        _announcer_node(c, stable_s=STABLE_S)
        measure("b", "announcer container SIGKILLed", announcing, sigkill, None, 45)
        steady()
    # (c) the announcing node's link goes down (cable out; kubelet and pods keep running), back after
    if "c" in FAULTS:
        _announcer_node(c, stable_s=STABLE_S)
        measure("c", "announcing node's link down", announcing, lambda n: c.cable(n, False),
                lambda n: c.cable(n, True), 40)
        steady()
    # (d) whole node death of the announcing node (with whatever else it runs); the Pi-hole has 2
    # replicas on two nodes, so the DNS service itself survives: what the client loses is l2lb's part
    # (plus kube-proxy's: until the node is NotReady, ~50 s, Services still send some queries to the
    # dead node's replica)
    if "d" in FAULTS:
        _announcer_node(c, stable_s=STABLE_S)
        death("d", "whole node dies (announcing node)", announcing)
    # (d2) the Redis master's node dies (when it is another node than the one (d) killed)
    if "d2" in FAULTS:
        redis = next((n for n, r in _roles(c).items() if "redis" in r or "redis-master" in r), None)
        if redis is not None:
            _announcer_node(c, stable_s=STABLE_S)
            death("d2", "whole node dies (Redis master's node)", lambda: _node_of(c, redis))
    # (dm) what (d) hits when the placement is unlucky: the announcing node also runs the Redis master and
    # one of the 2 CoreDNS replicas (kubeadm's default). Both are put there first (_arrange_dm), then it dies.
    if "dm" in FAULTS:
        target = _announcer_node(c, stable_s=STABLE_S)
        windows.append({"fault": "dm arranging", "node": target.name, "inject": time.time(),
                        "heal": time.time(), "steady": float("inf")})
        arranged = _arrange_dm(c, target)
        steady()
        _announcer_node(c, stable_s=STABLE_S)
        death("dm", "whole node dies (announcing node + Redis master + a CoreDNS)", lambda: target)
        out[-1]["notes"].append("arranged before: " + ("; ".join(arranged) or "nothing, already so"))
    # (d1) the 1-replica reality: one Pi-hole pod (a homelab's usual), its node dies. l2lb moves the
    # VIP, but the only backend is gone until Kubernetes evicts and reschedules it (~5 min): reported,
    # not asserted. The Pi-hole goes back to 2 replicas afterwards.
    if "d1" in FAULTS:
        c.kubectl("-n", "pihole", "scale", "deploy/pihole", "--replicas=1")
        _wait_pihole(c, 1)
        (pod,) = [p for p in _pods(c, "pihole", "app=pihole") if p["metadata"].get("deletionTimestamp") is None]
        _announcer_node(c, stable_s=STABLE_S)
        death("d1", "whole node dies (the only Pi-hole pod's, 1 replica)",
              lambda: _node_of(c, pod["spec"]["nodeName"]))
        c.kubectl("-n", "pihole", "scale", "deploy/pihole", "--replicas=2")
        _wait_pihole(c, 2)
    return out
