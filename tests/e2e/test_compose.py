"""`docker compose up` / `down` of the repository's docker-compose.yml under a real engine.

The engine is Debian's dockerd (+ its containerd, runc, docker-proxy), started by tests.e2e.engine
*inside* the network namespace of a lab host ("dock", interface enp0s25, 198.51.100.10 on the test
bridge), so the announcer's `network_mode: host` is that namespace and nothing runs on this
machine's interfaces; compose's own network (bridge driver) is made inside it too, from TEST-NET-3.
The CLI is Debian's docker with Compose v5 (built from its Go module, tests/e2e/compose/build.sh) as
its plugin. Images are the locally built ones (tests/e2e/images.py), chosen through the variables
the compose file documents (L2LB_IMAGE, L2LB_ANNOUNCER_IMAGE, L2LB_KUBECTL_IMAGE, L2LB_REDIS_IMAGE);
the seed is the repository's, with its LAN addresses moved to TEST-NET (L2LB_SEED_DIR).

Checked: every service becomes healthy and the one-shots exit 0 after `up -d`, each container has
the user, capabilities and read-only root the file asks for (read from the running processes), the
seed's Pi-hole IPs are allocated, and a client namespace on the bridge gets ARP answers for them
from the dock's MAC. Then `docker compose down` leaves no container, network, veth, mount or
process behind (named volumes stay, as compose promises, until `down --volumes`), and stopping the
engine leaves nothing on the machine (processes, cgroups, mounts, links, firewall rules).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from l2lb.lab.netns import Topology
from tests.deploy.support import ROOT
from tests.deploy.test_devstack import SEED_IP, _seed
from tests.e2e.engine import DockerEngine
from tests.e2e.images import REFS, Built

pytestmark = [pytest.mark.e2e, pytest.mark.net, pytest.mark.timeout(1800)]  # a cold image build included

CAP_NET_RAW = 1 << 13
UP_TIMEOUT_S = 240
LONG_RUNNING = {"redis", "apiserver", "allocator", "leases", "announcer"}
ONE_SHOTS = {"crds", "seed"}


def compose_binary() -> Path:
    """The Compose plugin tests/e2e/compose/build.sh made (bash scripts/dev e2e builds it first)."""
    build = ROOT / "tests" / "e2e" / "compose" / "build.sh"
    path = Path(subprocess.run(["bash", str(build), "--path"], capture_output=True, text=True, timeout=60,
                               check=True).stdout.strip())
    if not path.exists():
        pytest.fail(f"docker compose is not built ({path}): run bash scripts/dev e2e, or bash {build}")
    return path


def host_state(prefix: str) -> dict[str, list[str]]:
    """What the engine must not change on this machine: links, mounts, netfilter rules. Other sessions
    may make namespaces (and their /run/netns mounts) meanwhile: those are not compared, ours are."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    rules6 = subprocess.run(["ip6tables-save"], capture_output=True, text=True, check=False).stdout
    mounts = []
    for ln in Path("/proc/self/mountinfo").read_text().splitlines():
        f = ln.split()
        point, fstype = f[4], f[f.index("-") + 1]
        if point.startswith("/run/netns/") and not point.startswith(f"/run/netns/{prefix}"):
            continue
        mounts.append(f"{point} {fstype}")
    return {
        "links": sorted(ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines()),
        "mounts": sorted(mounts),
        "iptables": [ln for ln in (rules + rules6).splitlines() if not ln.startswith("#")],
    }


def cap_eff(pid: int) -> tuple[int, int]:
    st = dict(ln.split(":\t", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in ln)
    return int(st["Uid"].split()[1]), int(st["CapEff"].strip(), 16)


def test_compose_up_down(topology: Topology, e2e_images: dict[str, Built], tmp_path: Path) -> None:
    plugin = compose_binary()
    before = host_state(topology.prefix)
    seed = _seed(tmp_path)
    # both at the kernel's ARP defaults, as a docker host and a client on a LAN nobody tuned
    dock = topology.add_host("dock", ifname="enp0s25", addrs=["198.51.100.10/24"], arp_accept=False)
    client = topology.add_host("cli", addrs=["198.51.100.20/24"], arp_accept=False)
    engine = DockerEngine(dock.ns)
    try:
        engine.start()
        engine.add_cli_plugin("docker-compose", plugin)
        for name in ("l2lb", "l2lb-announcer", "redis", "kubectl"):
            engine.docker(["load", "--input", e2e_images[name].archive], timeout=600)
        env = {**engine.env, "L2LB_IMAGE": REFS["l2lb"], "L2LB_ANNOUNCER_IMAGE": REFS["l2lb-announcer"],
               "L2LB_KUBECTL_IMAGE": REFS["kubectl"], "L2LB_REDIS_IMAGE": REFS["redis"],
               "L2LB_SEED_DIR": str(seed)}
        for k in [k for k in env if k.startswith("COMPOSE_")]:
            del env[k]

        def compose(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
            p = subprocess.run(["/usr/bin/docker", "compose", "--project-directory", str(ROOT), "-f",
                                str(ROOT / "docker-compose.yml"), *args], env=env, capture_output=True, text=True,
                               timeout=timeout, check=False)
            if check and p.returncode != 0:
                logs = subprocess.run(["/usr/bin/docker", "compose", "--project-directory", str(ROOT), "logs",
                                       "--no-color", "--tail", "40"], env=env, capture_output=True, text=True,
                                      timeout=60, check=False).stdout
                pytest.fail(f"docker compose {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}\n"
                            f"--- logs:\n{logs[-6000:]}\n--- dockerd:\n{engine.log(2000)}")
            return p

        # `up -d` as the file's header says (not --wait: it fails on the seed one-shot's normal exit 0,
        # "container l2lb-seed-1 exited (0)", since nothing depends on it); then poll, bounded
        t0 = time.monotonic()
        compose("up", "--detach", "--no-build", "--pull", "never", timeout=UP_TIMEOUT_S)
        by_service: dict[str, dict[str, Any]] = {}
        while time.monotonic() - t0 < UP_TIMEOUT_S:
            ps = [json.loads(ln) for ln in compose("ps", "--all", "--format", "json").stdout.splitlines()
                  if ln.strip()]
            by_service = {str(c["Service"]): c for c in ps}
            if all(by_service.get(s, {}).get("Health") == "healthy" for s in LONG_RUNNING) and \
                    all(by_service.get(s, {}).get("State") == "exited" for s in ONE_SHOTS):
                break
            time.sleep(1)
        up_s = time.monotonic() - t0
        assert set(by_service) == LONG_RUNNING | ONE_SHOTS, by_service.keys()
        for s in LONG_RUNNING:
            assert by_service[s]["State"] == "running" and by_service[s]["Health"] == "healthy", by_service[s]
        for s in ONE_SHOTS:
            assert by_service[s]["State"] == "exited" and by_service[s]["ExitCode"] == 0, by_service[s]

        # users, capabilities and read-only roots, from the running processes
        for s in LONG_RUNNING:
            info = json.loads(engine.docker(["inspect", by_service[s]["ID"]]).stdout)[0]
            assert info["HostConfig"]["ReadonlyRootfs"] is True, s
            uid, cap = cap_eff(int(info["State"]["Pid"]))
            if s == "announcer":
                assert (uid, cap) == (0, CAP_NET_RAW), (s, uid, hex(cap))
                assert info["HostConfig"]["NetworkMode"] == "host"
            elif s == "redis":
                assert (uid, cap) == (999, 0), (s, uid, hex(cap))
            else:
                assert (uid, cap) == (65532, 0), (s, uid, hex(cap))

        # the seed's Services got their IPs (the API server is published on the dock's loopback)
        kc = str(ROOT / "deploy" / "compose" / "kubeconfig.host.yaml")
        ips: dict[str, set[str]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = dock.exec(["kubectl", "--kubeconfig", kc, "get", "svc", "-n", "pihole", "-o", "json"], timeout=30)
            ips = {s["metadata"]["name"]: {i.get("ip", "") for i in
                                           (s.get("status", {}).get("loadBalancer", {}).get("ingress") or [])}
                   for s in json.loads(got.stdout)["items"]}
            if all(ips.values()) and len(ips) == 3:
                break
            time.sleep(0.5)
        assert ips.get("pihole-dns-tcp") == {SEED_IP} and ips.get("pihole-dns-udp") == {SEED_IP}, ips
        web = ips.get("pihole-web", set())
        assert len(web) == 1 and next(iter(web)).startswith("198.51.100."), ips

        # a client on the bridge gets ARP answers for every VIP from the dock (the announcer container)
        for vip in sorted({SEED_IP, *web}):
            answered, out = "", ""
            for _ in range(5):  # bounded: the assignment reaches the announcer a moment after allocation
                out = client.exec(["arping", "-c", "2", "-w", "3", "-I", "eth0", vip], check=False, timeout=10).stdout
                if dock.mac.lower() in out.lower():
                    answered = out
                    break
            assert answered, f"no ARP answer for {vip} from {dock.mac}:\n{out}\n" + \
                compose("logs", "--no-color", "--tail", "30", "announcer", "leases", check=False).stdout[-4000:]
        print(f"compose up -d until all healthy: {up_s:.1f} s; VIPs {sorted({SEED_IP, *web})} answered by {dock.mac}")

        # down: nothing left but the named volumes (kept by design until down --volumes)
        t0 = time.monotonic()
        compose("down", "--timeout", "20", timeout=180)
        down_s = time.monotonic() - t0
        assert engine.docker(["ps", "--all", "--quiet"]).stdout.strip() == ""
        assert set(engine.docker(["network", "ls", "--format", "{{.Name}}"]).stdout.split()) == {"host", "none"}
        links = dock.exec(["ip", "-o", "link", "show"]).stdout
        assert sorted(ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines()) == ["enp0s25", "lo"]
        assert engine.proc is not None
        # in dockerd's mount namespace: no container root (overlay) and, under its state directory, only
        # what dockerd holds while it runs: its data root bound on itself (for mount propagation) and the
        # handle of its own network namespace (exec/netns/default)
        mounts = [ln.split() for ln in Path(f"/proc/{engine.proc.pid}/mountinfo").read_text().splitlines()]
        assert not [m for m in mounts if m[m.index("-") + 1] == "overlay"], "container root filesystems left"
        own = {m[4] for m in mounts if m[4].startswith(str(engine.workdir))}
        assert own <= {str(engine.workdir / "data"), str(engine.workdir / "exec" / "netns" / "default")}, own
        procs = {Path(f"/proc/{p}/comm").read_text().strip() for p in engine.pids()}
        assert procs <= {"dockerd", "containerd"}, procs
        volumes = set(engine.docker(["volume", "ls", "--format", "{{.Name}}"]).stdout.split())
        assert volumes == {"l2lb_redis-data", "l2lb_apiserver-state"}, volumes
        compose("down", "--volumes", timeout=120)
        assert engine.docker(["volume", "ls", "--quiet"]).stdout.strip() == ""
        print(f"compose down: {down_s:.1f} s")
    finally:
        left = engine.stop()
    assert not left, f"the docker engine left: {left}"
    assert not os.path.exists(engine.workdir)
    topology.destroy()
    after = host_state(topology.prefix)
    diff = {k: (sorted(set(before[k]) - set(after[k])), sorted(set(after[k]) - set(before[k])))
            for k in before if before[k] != after[k]}
    assert not diff, f"this machine changed (gone, new): {diff}"

