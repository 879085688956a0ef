"""The docker-compose dev stack, run for real without a container engine.

A tiny compose runner: the services of docker-compose.yml, in `depends_on` order, as processes in a
private network namespace (the "docker host": one veth on a test bridge, TEST-NET addresses only),
with each container's commands, environment and bind mounts as written in the file:

* image entry points: the l2lb image runs `l2lb`, the kubectl image `kubectl`, Redis its command;
* the compose network's DNS names (redis, apiserver) resolve to the namespace's loopback through
  /etc/netns/<ns>/hosts (`ip netns exec` mounts it over /etc/hosts), so DSNs and the kubeconfig
  are used unchanged;
* bind mounts map container paths back to the repository, named volumes and tmpfs to temp dirs;
* two containers that publish the same port (allocator and leases, 9100) get distinct ports;
* `service_healthy` runs the service's own healthcheck until it passes, and
  `service_completed_successfully` waits for the one-shot to exit 0.

The seed is the repository's (tests/fixtures/seed) with its LAN addresses moved to TEST-NET through
the documented L2LB_SEED_DIR variable. Checked: every service becomes healthy, the seed is loaded,
announcer heartbeats reach leases through Redis with the ACL users, and -- when the allocator
exists -- the Pi-hole IP is allocated and answered by ARP on the test bridge; and every Kubernetes request
each service made (the embedded API server's request log, attributed by User-Agent) is one its
ServiceAccount's RBAC in k8s/ allows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.lab.netns import Topology
from tests.deploy.support import OVERLAYS, ROOT, built, compose_interpolate, kustomize_cmd
from tests.deploy.test_rbac import granted

SEED_IP = "198.51.100.153"
ENTRY = {"l2lb": [sys.executable, "-m", "l2lb.cli"], "kubectl": ["kubectl"], "redis": []}
PORT_REMAP = {("leases", "9100"): "9101"}
HEALTH_TIMEOUT_S = 40.0


def _available(command: str) -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "l2lb.cli", command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.returncode == 0


def _entry(image: str) -> list[str]:
    name = image.rsplit("/", 1)[-1].split(":", maxsplit=1)[0]
    if name.startswith("l2lb"):
        return ENTRY["l2lb"]
    return ENTRY[name]


def _order(services: dict[str, Any]) -> list[str]:
    done: list[str] = []

    def visit(n: str, stack: tuple[str, ...] = ()) -> None:
        assert n not in stack, f"depends_on cycle: {stack}"
        if n in done:
            return
        for dep in services[n].get("depends_on", {}):
            visit(dep, (*stack, n))
        done.append(n)

    for n in services:
        visit(n)
    return done


class Runner:
    def __init__(self, compose: dict[str, Any], ns: str, tmp: Path):
        self.compose = compose
        self.ns = ns
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def paths(self, name: str) -> list[tuple[str, str]]:
        """(container path, host path); a mounted *.conf that names container paths itself (redis.conf:
        dir, aclfile) is replaced by a copy with those mapped too."""
        raw = self._raw_paths(name)
        out: list[tuple[str, str]] = []
        for dst, host in raw:
            if host.endswith(".conf") and Path(host).is_file():
                copy = self.tmp / "conf" / name / Path(host).name
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(self._sub(dict(raw), Path(host).read_text()))
                out.append((dst, str(copy)))
            else:
                out.append((dst, host))
        return out

    @staticmethod
    def _sub(paths: dict[str, str], value: str) -> str:
        if not paths:
            return value
        alt = "|".join(re.escape(d) for d in sorted(paths, key=len, reverse=True))
        return re.sub(rf"(?<![\w/.-])({alt})(?=/|$|[^\w.-])", lambda m: paths[m.group(1)], value, flags=re.M)

    def _raw_paths(self, name: str) -> list[tuple[str, str]]:
        """(container path, host path) of bind mounts, named volumes and tmpfs."""
        svc = self.compose["services"][name]
        out: list[tuple[str, str]] = []
        for vol in svc.get("volumes", []):
            src, dst = vol.split(":")[:2]
            if src.startswith((".", "/")):
                host = (ROOT / src).resolve() if src.startswith(".") else Path(src)
            else:  # a named volume
                host = self.tmp / "volumes" / src
                host.mkdir(parents=True, exist_ok=True)
            out.append((dst, str(host)))
        for t in svc.get("tmpfs", []):
            host = self.tmp / "tmpfs" / name / t.strip("/")
            host.mkdir(parents=True, exist_ok=True)
            out.append((t, str(host)))
        return out

    def map(self, name: str, value: str) -> str:
        value = self._sub(dict(self.paths(name)), value)  # one pass: host paths are never re-mapped
        for (svc, port), new in PORT_REMAP.items():
            if svc == name:
                value = value.replace(f"={port}", f"={new}").replace(f":{port}/", f":{new}/")
        return value

    def env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        for k, v in (self.compose["services"][name].get("environment") or {}).items():
            env[k] = self.map(name, str(v))
        return env

    def argv(self, name: str) -> list[str]:
        svc = self.compose["services"][name]
        cmd = [self.map(name, c) for c in svc["command"]]
        return ["ip", "netns", "exec", self.ns, *_entry(svc["image"]), *cmd]

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed after Popen dups it
        try:
            proc = subprocess.Popen(self.argv(name), env=self.env(name), stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def healthy(self, name: str) -> bool:
        test = self.compose["services"][name]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            argv = ["sh", "-c", self.map(name, test[1])]
        else:
            argv = [self.map(name, t) for t in test[1:]]
            if argv[0] == "l2lb-healthcheck":
                argv = [sys.executable, str(ROOT / "deploy" / "healthcheck.py"), *argv[1:]]
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], env=self.env(name), capture_output=True, timeout=10, check=False
        )
        return proc.returncode == 0

    def wait_healthy(self, name: str) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < HEALTH_TIMEOUT_S:
            proc = self.procs[name]
            assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{self.log(name)}"
            if self.healthy(name):
                return time.monotonic() - t0
            time.sleep(0.3)
        pytest.fail(f"{name} not healthy after {HEALTH_TIMEOUT_S}s:\n{self.log(name)}")

    def run_once(self, name: str) -> None:
        proc = self.start(name)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert rc == 0, f"one-shot {name} failed ({rc}):\n{self.log(name)}"

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def http_json(self, name: str, path: str) -> Any:
        svc = self.compose["services"][name]
        port = next(a.split("=")[1] for a in svc["command"] if a.startswith("--http-port="))
        return self.get_json(PORT_REMAP.get((name, port), port), path)

    def get_json(self, port: str, path: str) -> Any:
        out = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c",
             f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
             f"'http://127.0.0.1:{port}{path}', timeout=3).read().decode())"],
            capture_output=True, text=True, timeout=15, check=False,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def test_runner_maps_paths(tmp_path: Path) -> None:
    compose = compose_interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))
    r = Runner(compose, "nsx", tmp_path)
    assert r.map("crds", "--filename=/manifests/crds/l2lb.io_loadbalancerippools.yaml") == \
        f"--filename={ROOT / 'k8s' / 'crds' / 'l2lb.io_loadbalancerippools.yaml'}"
    assert r.map("leases", "--http-port=9100") == "--http-port=9101"
    assert r.map("allocator", "--http-port=9100") == "--http-port=9100"
    assert _order(compose["services"]).index("redis") < _order(compose["services"]).index("announcer")
    assert _entry("registry.k8s.io/kubectl:v1.32.4") == ["kubectl"]


def observed_requests(log: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    """service -> (apiGroup, resource[/subresource], verb) it was seen making, by User-Agent."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    for e in log:
        m = re.match(r"l2lb-(allocator|leases|announcer)\b", str(e.get("ua", "")))
        if not m or not e.get("resource"):
            continue
        res = e["resource"] + (f"/{e['subresource']}" if e.get("subresource") else "")
        out.setdefault(m.group(1), set()).add((str(e.get("group", "")), res, str(e["verb"])))
    return out


def test_observed_requests_by_user_agent() -> None:
    log = [
        {"ua": "l2lb-allocator", "group": "", "resource": "services", "subresource": "status", "verb": "patch"},
        {"ua": "l2lb-leases/0.1", "group": "coordination.k8s.io", "resource": "leases", "verb": "update"},
        {"ua": "kubectl/v1.32.4", "group": "", "resource": "namespaces", "verb": "create"},
        {"ua": "l2lb-allocator", "resource": "", "verb": "get"},
    ]
    assert observed_requests(log) == {
        "allocator": {("", "services/status", "patch")},
        "leases": {("coordination.k8s.io", "leases", "update")},
    }


def _seed(tmp: Path) -> Path:
    """The seed with its LAN addresses moved into TEST-NET (198.51.100.0/24)."""
    out = tmp / "seed"
    shutil.copytree(ROOT / "tests" / "fixtures" / "seed", out)
    for f in out.glob("*.yaml"):
        text = f.read_text().replace("192.168.1.128/25", "198.51.100.128/25").replace("192.168.1.153", SEED_IP)
        f.write_text(text)
    assert "192.168." not in "".join(f.read_text() for f in out.glob("*.yaml"))
    return out


@pytest.mark.net
@pytest.mark.slow
def test_dev_stack_comes_up(topology: Topology, tmp_path: Path) -> None:
    if shutil.which("kubectl") is None or shutil.which("redis-server") is None:
        pytest.skip("needs kubectl and redis-server (scripts/dev installs redis-server)")
    seed = _seed(tmp_path)
    compose: dict[str, Any] = compose_interpolate(
        yaml.safe_load((ROOT / "docker-compose.yml").read_text()), {"L2LB_SEED_DIR": str(seed)}
    )
    services = compose["services"]
    skipped = [n for n in ("allocator", "leases", "announcer", "apiserver") if not _available(n)]
    for n in skipped:
        del services[n]
        for other in services.values():
            other.get("depends_on", {}).pop(n, None)
    assert "apiserver" in services and "leases" in services, f"not available: {skipped}"

    node = topology.add_host("dock", ifname="enp0s25", addrs=["198.51.100.10/24"])
    client = topology.add_host("cli", addrs=["198.51.100.20/24"])
    etc = Path("/etc/netns") / node.ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text("127.0.0.1 localhost redis apiserver\n")
    runner = Runner(compose, node.ns, tmp_path)
    took: dict[str, float] = {}
    try:
        for name in _order(services):
            svc = services[name]
            for dep, spec in svc.get("depends_on", {}).items():
                if spec["condition"] == "service_healthy":
                    took.setdefault(dep, runner.wait_healthy(dep))
            if svc.get("restart") == "no":
                runner.run_once(name)
            else:
                runner.start(name)
        for name in services:
            if "healthcheck" in services[name]:
                took.setdefault(name, runner.wait_healthy(name))
        print("healthy after (s):", {k: round(v, 2) for k, v in took.items()})

        # the seed is in the API server, unchanged apart from the TEST-NET addresses
        kc = str(ROOT / "deploy" / "compose" / "kubeconfig.yaml")
        got = subprocess.run(
            ["ip", "netns", "exec", node.ns, "kubectl", "--kubeconfig", kc, "get", "svc", "-n", "pihole", "-o", "json"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        names = {s["metadata"]["name"] for s in json.loads(got.stdout)["items"]}
        assert names == {"pihole-dns-tcp", "pihole-dns-udp", "pihole-web"}

        # heartbeats of the announcer (user "announcer") reach leases (user "leases") via Redis
        if "announcer" in services:
            deadline = time.monotonic() + 15
            status: Any = None
            while time.monotonic() < deadline:
                status = runner.http_json("leases", "/v1/status")
                if "dev-node" in json.dumps(status):
                    break
                time.sleep(0.5)
            assert "dev-node" in json.dumps(status), status

        if "allocator" in services and "announcer" in services:
            deadline = time.monotonic() + 30
            ips: set[str] = set()
            while time.monotonic() < deadline and ips != {SEED_IP}:
                got = subprocess.run(
                    ["ip", "netns", "exec", node.ns, "kubectl", "--kubeconfig", kc, "get", "svc", "-n", "pihole",
                     "pihole-dns-tcp", "pihole-dns-udp", "-o", "json"],
                    capture_output=True, text=True, timeout=30, check=True,
                )
                ips = {
                    i.get("ip", "")
                    for s in json.loads(got.stdout)["items"]
                    for i in (s.get("status", {}).get("loadBalancer", {}).get("ingress") or [])
                }
                time.sleep(0.5)
            assert ips == {SEED_IP}, runner.log("allocator")
            # ARP from a client on the bridge: at most 3 rounds of 2 probes (the assignment reaches
            # the announcer a moment after the allocation)
            answered = ""
            for _ in range(3):
                out = client.exec(["arping", "-c", "2", "-w", "3", "-I", "eth0", SEED_IP], check=False, timeout=10)
                if node.mac.lower() in out.stdout.lower():
                    answered = out.stdout
                    break
            assert answered, out.stdout + runner.log("leases")[-1500:] + runner.log("announcer")[-1500:]

        # every request the services made (the API server's request log, by User-Agent) is allowed
        # by their ServiceAccount's RBAC in the Kubernetes manifests
        if kustomize_cmd() is not None:
            observed = observed_requests(runner.get_json("6443", "/l2lb-debug/requests"))
            print("observed requests:", {k: sorted(v) for k, v in observed.items()})
            for svc_name in ("allocator", "leases"):
                if svc_name in services:
                    assert observed.get(svc_name), f"no requests from l2lb-{svc_name} in the log"
            for svc_name, triples in observed.items():
                allowed = set().union(*(granted(built(o), f"l2lb-{svc_name}") for o in OVERLAYS))
                assert triples <= allowed, f"{svc_name} made requests its RBAC forbids: {sorted(triples - allowed)}"
    finally:
        runner.stop_all()
        shutil.rmtree(etc, ignore_errors=True)
    # a clean stop: every long-running service exits on SIGTERM by itself
    for name, proc in runner.procs.items():
        if services[name].get("restart") != "no":
            assert proc.returncode in (0, -signal.SIGTERM), f"{name}: {proc.returncode}\n{runner.log(name)}"

