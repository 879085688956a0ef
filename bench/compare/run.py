"""l2lb and the real MetalLB side by side: same lab, same client, same faults, one run.

    sudo .venv/bin/python bench/compare/run.py                 # everything (about 45 min)
    sudo .venv/bin/python bench/compare/run.py --sections failover --rounds 3 --stop-rounds 1   # quick
    sudo .venv/bin/python bench/compare/run.py --systems metallb --sections arp

The lab is l2lb's (src/l2lb/lab): a bridge, a control-plane namespace (198.51.100.2), three node
namespaces (198.51.100.11-13, LAN interface enp0s25), a client (198.51.100.100, kernel-default ARP
sysctls) and an ARP observer (198.51.100.101). For each system in turn the SAME network is reused and a
fresh REAL kube-apiserver (tests/support/kube-apiserver, with its audit log) runs in the control-plane
namespace; the same objects are applied (tests/support/metallb/fixtures/pihole.yaml: MetalLB's
IPAddressPool + L2Advertisement and the Pi-hole Services, which l2lb reads as-is; one ready endpoint
per node for each Service, as the endpointslice controller would write). Then:

* l2lb: redis-server, allocator, leases (control plane), one announcer per node;
* MetalLB (tests/support/metallb, built from go.universe.tf/metallb): controller (control plane), one
  speaker per node with memberlist, as its DaemonSet runs it.

Every node carries the Pi-hole VIP on lo (no dummy driver here) with arp_ignore=1 / arp_announce=2 (what
kube-proxy's IPVS mode with strictARP does) and runs a UDP responder naming the node (bench/compare/
udp.py); the client queries the VIP every 10 ms. Sections (``--sections``):

* failover: faults on the announcing node -- SIGKILL of the announcing process, link down, SIGSTOP
  for 30 s -- ``--rounds`` each (``--stop-rounds`` for SIGSTOP); per round the client's UDP outage
  (longest gap between answers), lost queries, time to the first answer from another node, dual ARP
  answers seen by the observer, answers flipping between nodes, and whether the VIP went back to the
  old node after the heal (flap-back). Each round runs under ``flock --lock`` (default
  /work/.bench.lock when it exists).
* arp: bench/arp's Go generator from the client against the announcing node (latency at 1000/s,
  highest 0-loss rate); under the lock.
* idle: CPU (% of one core) and RSS of every process over ``--idle-seconds`` at rest, with 3, 100 and
  1000 Services (1000 Services share 250 IPs, four ports each), per node and for the control plane;
  also the API requests of that window (audit log, by user). Under the lock.
* churn: API requests while one Service is replaced per second and the announcing process of a node
  is killed every 6 s (restarted 3 s later), 100 Services.
* cilium: the Cilium L2-announcement model on client-go's own leaderelection package
  (bench/api_traffic/cilium-go: one Lease election per Service per node, 15/5/2 s, one client per node
  at qps 5 / burst 10) against a fresh real kube-apiserver, at rest with 3/100/1000 Services and under
  churn (a node crashes every 6 s) with 100, 3 nodes.

Results: a table with ratios on stdout, all raw data with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import concurrent.futures
import contextlib
import ctypes
import fcntl
import importlib.util
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from l2lb.lab import netns  # noqa: E402
from l2lb.lab.probe import ArpProber  # noqa: E402
from l2lb.lab.procs import Proc, Supervisor, python_cli, wait_http_ready  # noqa: E402
from tests.support.kube_real import binary_path as kas_binary  # noqa: E402
from tests.support.metallb import harness  # noqa: E402
from tests.support.metallb.harness import LabApiServer, LabNode, MetalLB  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXTURES = REPO / "tests" / "support" / "metallb" / "fixtures" / "pihole.yaml"
CTL_IP = "198.51.100.2"
CLIENT_IP = "198.51.100.100"
OBS_IP = "198.51.100.101"
LAN_IF = "enp0s25"
VIP = "198.51.100.153"
UDP_PORT = 53
REDIS_PORT = 6379
ALLOC_HTTP, LEASES_HTTP, ANN_HTTP = 9101, 9102, 9103
ARGEN_SENDER_BASE = "198.51.100.20"  # .20-.83: no lab host, no pool address
ARGEN_SENDERS = 64
# the compare lab tops out far below bench/arp's two-namespace lab (every ARP broadcast reaches all three
# nodes, and on each a Python or Go process reads it): finer steps than bench/arp's
ARP_RATES = (2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 150_000)
KERNEL_ARP_IP = "198.51.100.90"  # the kernel baseline: on the owner's LAN interface, no pool address
SCALE_POOL = ("203.0.113.1", "203.0.113.250")  # 250 shared IPs for the 100/1000-Service scales
CLK_TCK = os.sysconf("SC_CLK_TCK")
_libc = ctypes.CDLL(None, use_errno=True)


def load_bench(name: str) -> Any:
    """bench/<name>/run.py as module ``bench_<name>`` (every bench's script is called run.py)."""
    mod_name = f"bench_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, REPO / "bench" / name / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def node_ip(i: int) -> str:
    return f"198.51.100.{10 + i}"


# ------------------------------------------------------------------------------------------ utils
def enter_ns(ns: str) -> None:
    """Move the calling thread into ``ns`` for good (executor threads that talk to the API server)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, netns.CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({ns})")
    finally:
        os.close(fd)


class BenchLock:
    """flock on the shared benchmark lock around each timed piece (a batch of rounds, the idle windows).

    Re-entrant (an inner ``held()`` inside an outer one is free); waits in a thread with a blocking
    flock, so it queues like ``flock(1)`` users do."""

    def __init__(self, path: str | None):
        self.path = path
        self.waited_s = 0.0
        self._depth = 0
        self._fd = -1

    @contextlib.asynccontextmanager
    async def held(self, what: str = "") -> AsyncIterator[None]:
        if not self.path or self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        t0 = time.monotonic()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"waiting for {self.path}{f' ({what})' if what else ''}")
                await self._wait(fd)
            waited = time.monotonic() - t0
            self.waited_s += waited
            if waited > 1:
                say(f"got {self.path} after {waited:.0f} s")
            self._depth = 1
            yield
        finally:
            self._depth = 0
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    async def _wait(fd: int) -> None:
        """A blocking flock in a daemon thread (queues like flock(1); never holds up the exit)."""
        loop = asyncio.get_running_loop()
        got: asyncio.Future[None] = loop.create_future()

        def take() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            loop.call_soon_threadsafe(lambda: got.done() or got.set_result(None))

        threading.Thread(target=take, name="bench-lock", daemon=True).start()
        await got


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def summary(values: list[float]) -> dict[str, float | int]:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "max": max(values) if values else float("nan"),
            "mean": statistics.fmean(values) if values else float("nan")}


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def rss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


class MachineLoad:
    """The shared machine's load during a window: load average (1/5/15 min) at the start, the end and
    the highest 1-min value sampled, and the whole machine's CPU use (/proc/stat, % of ALL CPUs) -- the
    VM is shared with other agents, so every figure is printed with the load it was taken under."""

    def __init__(self) -> None:
        self.load0 = os.getloadavg()
        self.max1 = self.load0[0]
        self.busy0, self.total0 = self._stat()

    @staticmethod
    def _stat() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return sum(vals[:8]) - idle, sum(vals[:8])

    def sample(self) -> None:
        self.max1 = max(self.max1, os.getloadavg()[0])

    def result(self) -> dict[str, Any]:
        self.sample()
        busy1, total1 = self._stat()
        return {"loadavg_start": [round(x, 2) for x in self.load0],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()], "loadavg1_max": round(self.max1, 2),
                "machine_cpu_busy_pct": round((busy1 - self.busy0) / max(1, total1 - self.total0) * 100, 1),
                "cpus": os.cpu_count()}


def ctx_switches(pids: list[int]) -> int:
    """Voluntary + involuntary context switches of every thread of ``pids``: how often they woke up."""
    total = 0
    for p in pids:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def scale_docs(n: int) -> list[dict[str, Any]]:
    """``n`` extra LoadBalancer Services on a second pool: four per IP (distinct ports, one sharing
    key per IP), so 1000 Services fit the 250 TEST-NET-3 addresses; namespace ``scale``."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scale"}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": "scale-pool", "namespace": "metallb-system"},
         "spec": {"addresses": [f"{SCALE_POOL[0]}-{SCALE_POOL[1]}"]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
         "metadata": {"name": "scale", "namespace": "metallb-system"},
         "spec": {"ipAddressPools": ["scale-pool"], "interfaces": [LAN_IF]}},
    ]
    for i in range(n):
        docs.append(scale_service(i))
    return docs


def scale_service(i: int) -> dict[str, Any]:
    ip = f"203.0.113.{1 + (i // 4) % 250}"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc{i}", "namespace": "scale",
                         "annotations": {"metallb.io/address-pool": "scale-pool",
                                         "metallb.io/loadBalancerIPs": ip,
                                         "metallb.io/allow-shared-ip": f"ip-{ip}"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": f"svc{i}"},
                     "ports": [{"name": "p", "port": 8000 + i % 4, "protocol": "TCP"}]}}


# ------------------------------------------------------------------------------------------ systems
class System:
    """What bench/compare needs from a load balancer under test."""

    name = ""
    label = ""

    def __init__(self, bench: Bench):
        self.b = bench

    def users(self) -> list[str]:
        raise NotImplementedError

    def install(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    def announcer(self, node: LabNode) -> str:
        """Supervisor name of the process that announces on ``node``."""
        raise NotImplementedError

    async def restart_announcer(self, node: LabNode) -> None:
        raise NotImplementedError

    def control_plane(self) -> list[str]:
        raise NotImplementedError


class L2lb(System):
    name, label = "l2lb", "l2lb"

    def users(self) -> list[str]:
        return ["l2lb-allocator", "l2lb-leases"]

    def install(self) -> None:
        self.b.api.install_crds()  # k8s/crds (+ the suite's stand-ins for kinds it lacks)
        self.b.api.ensure_namespace("l2lb-system")

    async def start(self) -> None:
        b, ctl = self.b, self.b.ctl.ns
        redis = shutil.which("redis-server") or "redis-server"
        await b.sup.start("redis", [redis, "--bind", CTL_IP, "127.0.0.1", "--port", str(REDIS_PORT), "--save", "",
                                    "--appendonly", "no", "--protected-mode", "no", "--dir", str(b.workdir)], ns=ctl)
        cli = python_cli()
        procs = []
        for svc, port in (("allocator", ALLOC_HTTP), ("leases", LEASES_HTTP)):
            kc = b.api.kubeconfig_for(f"l2lb-{svc}", b.workdir / f"kubeconfig-l2lb-{svc}")
            procs.append((await b.sup.start(svc, [*cli, svc, "--kubeconfig", str(kc), "--namespace", "l2lb-system",
                                                  *self.common(port, CTL_IP)], ns=ctl), f"http://{CTL_IP}:{port}"))
        for n in b.nodes:
            await self.restart_announcer(n, wait=False)
        for p, url in procs:
            await wait_http_ready(f"{url}/readyz", p, timeout=60)
        for n in b.nodes:
            await wait_http_ready(f"http://{n.ip}:{ANN_HTTP}/readyz", b.sup.procs[self.announcer(n)], timeout=60)

    def common(self, port: int, host: str) -> list[str]:
        return ["--redis", f"redis://{CTL_IP}:{REDIS_PORT}/0", "--http-host", host, "--http-port", str(port),
                "--log-level", "info"]

    def announcer(self, node: LabNode) -> str:
        return f"announcer-{node.name}"

    async def restart_announcer(self, node: LabNode, wait: bool = True) -> None:
        # per-source reply limit lifted (bench/arp does the same): the ARP section's generator is one MAC
        p = await self.b.sup.start(self.announcer(node), [
            *python_cli(), "announcer", "--node", node.name, "--interfaces", LAN_IF,
            "--node-labels", f"kubernetes.io/hostname={node.name}", "--reply-rate", "1e9", "--reply-burst", "1e9",
            *self.common(ANN_HTTP, node.ip)], ns=node.ns)
        if wait:
            await wait_http_ready(f"http://{node.ip}:{ANN_HTTP}/readyz", p, timeout=60)

    def control_plane(self) -> list[str]:
        return ["allocator", "leases", "redis"]


class MetalLBSystem(System):
    name, label = "metallb", f"MetalLB {harness.version()}"

    def __init__(self, bench: Bench):
        super().__init__(bench)
        self.m: MetalLB | None = None

    def users(self) -> list[str]:
        return MetalLB.users(self.b.nodes)

    def install(self) -> None:
        self.m = MetalLB(self.b.api, self.b.sup, self.b.workdir, self.b.nodes, ctl_ns=self.b.ctl.ns, api_host=CTL_IP)
        self.m.install()

    async def start(self) -> None:
        assert self.m is not None
        await self.m.start()

    def announcer(self, node: LabNode) -> str:
        assert self.m is not None
        return self.m.speaker_name(node)

    async def restart_announcer(self, node: LabNode) -> None:
        assert self.m is not None
        await self.m.start_speaker(node)

    def control_plane(self) -> list[str]:
        return ["metallb-controller"]


# ------------------------------------------------------------------------------------------ bench
class Bench:
    def __init__(self, a: argparse.Namespace, workdir: Path):
        self.a = a
        self.root_workdir = workdir
        self.workdir = workdir
        self.topo = netns.Topology(a.prefix)
        self.sup = Supervisor(workdir / "logs")
        self.lock = BenchLock(a.lock)
        self.nodes: list[LabNode] = []
        self.api: LabApiServer = None  # type: ignore[assignment]
        self.results: dict[str, Any] = {}
        self._change_t = time.time()  # wall time of the last scale-up (quiesce's reference)

    # -- network --------------------------------------------------------------------------------
    def build_network(self) -> None:
        self.ctl = self.topo.add_host("ctl", addrs=[f"{CTL_IP}/24"], arp_accept=False)
        for i in range(1, self.a.nodes + 1):
            name = f"node-{i}"
            h = self.topo.add_host(name, ifname=LAN_IF, addrs=[f"{node_ip(i)}/24"], arp_accept=False)
            self.nodes.append(LabNode(name, h.ns, node_ip(i), LAN_IF))
            # kube-proxy IPVS with strictARP: the VIP is a local address on a device other than the LAN
            # interface and the kernel never answers ARP for it. kube-proxy uses a dummy device
            # (kube-ipvs0); this kernel has no dummy driver ("Unknown device type"), so it goes on lo,
            # which is the same for routing and ARP (the classic LVS direct-routing set-up).
            for cmd in (["ip", "addr", "add", f"{VIP}/32", "dev", "lo"],
                        ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]):
                h.exec(cmd)
        self.client = self.topo.add_host("client", addrs=[f"{CLIENT_IP}/24"], arp_accept=False)
        self.obs = self.topo.add_host("obs", addrs=[f"{OBS_IP}/24"], arp_accept=False)
        netns.ns_exec(self.topo.switch, ["sysctl", "-qw", "net.bridge.bridge-nf-call-arptables=0",
                                         "net.bridge.bridge-nf-call-iptables=0"], check=False)
        self.mac_to_node = {self.topo.hosts[n.name].mac: n.name for n in self.nodes}

    async def start_responders(self) -> None:
        for n in self.nodes:
            await self.sup.start(f"udp-{n.name}", [sys.executable, str(HERE / "udp.py"), "respond", "--name", n.name,
                                                   "--port", str(UDP_PORT)], ns=n.ns)

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)

    # -- per system -----------------------------------------------------------------------------
    async def bring_up(self, system: System) -> None:
        self.workdir = self.root_workdir / system.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = LabApiServer(kas_binary(), self.workdir / "kas", system.users())
        await asyncio.to_thread(self.api.start)
        say(f"{system.label}: kube-apiserver ready in {self.api.startup_s:.1f} s")
        await asyncio.to_thread(system.install)
        docs = [d for d in yaml.safe_load_all(FIXTURES.read_text()) if isinstance(d, dict)]
        await asyncio.to_thread(self.api.apply_docs, harness.node_objects(self.nodes) + docs)
        svcs = [d for d in docs if d["kind"] == "Service"]
        await asyncio.to_thread(self.api.apply_docs, harness.endpoint_slices(svcs, self.nodes))
        await asyncio.to_thread(self.api.clear_requests)  # quiesce() of the first scale counts from here
        self._change_t = time.time()
        await system.start()
        await self.wait_ips("pihole", 3)
        owner = await self.wait_owner(60)
        say(f"{system.label}: {VIP} announced by {owner}")

    async def tear_down(self) -> None:
        """Stop the system's processes (the UDP responders stay) and its API server."""
        mine = {k: p for k, p in self.sup.procs.items() if not k.startswith("udp-")}
        for k in mine:
            self.sup.signal(k, signal.SIGCONT)
            self.sup.signal(k, signal.SIGTERM)
        for k, p in mine.items():
            if p.proc is None:
                continue
            try:
                await asyncio.wait_for(p.proc.wait(), 5)
            except TimeoutError:
                self.sup.signal(k, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(p.proc.wait(), 5)
            del self.sup.procs[k]
        if self.api is not None:
            await asyncio.to_thread(self.api.stop)
        for n in self.nodes:  # no neighbour state carried into the next system's run
            netns.ns_exec(n.ns, ["ip", "neigh", "flush", "all"], check=False)
        for h in (self.client, self.obs, self.ctl):
            h.exec(["ip", "neigh", "flush", "all"], check=False)

    async def wait_ips(self, namespace: str, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            lst = await asyncio.to_thread(self.api.call, "GET", f"/api/v1/namespaces/{namespace}/services")
            done = [s for s in lst.get("items", [])
                    if ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress")]
            if len(done) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(done)}/{count} Services in {namespace} got an IP in {timeout:.0f} s; "
                                   f"logs in {self.sup.logdir}")
            self.sup.check_alive()
            await asyncio.sleep(0.5)

    async def who_answers(self, seconds: float = 0.3) -> list[str]:
        prober = ArpProber(self.obs.ns, "eth0", OBS_IP, VIP, interval_s=0.02)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        try:
            tl = await prober.run(stop, max_seconds=seconds + 1)
        finally:
            prober.close()
        return [self.mac_to_node.get(m, m) for m in tl.macs()]

    async def wait_owner(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while time.monotonic() < deadline:
            last = await self.who_answers()
            if len(last) == 1:
                return last[0]
            self.sup.check_alive()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no single node answers ARP for {VIP} after {timeout:.0f} s (answering: {last}); "
                           f"logs in {self.sup.logdir}")

    # -- failover -------------------------------------------------------------------------------
    async def ensure_responders(self) -> None:
        """Every node's UDP responder runs (a dead one would look like an outage of the VIP's new node)."""
        for n in self.nodes:
            p = self.sup.procs.get(f"udp-{n.name}")
            if p is None or not p.alive:
                say(f"UDP responder of {n.name} is not running (log: {p.tail(5) if p else '-'}); starting it")
                await self.sup.start(f"udp-{n.name}", [sys.executable, str(HERE / "udp.py"), "respond", "--name",
                                                       n.name, "--port", str(UDP_PORT)], ns=n.ns)
                self.results["responder_restarts"] = int(self.results.get("responder_restarts", 0)) + 1

    async def failover_round(self, system: System, how: str) -> dict[str, Any]:
        await self.ensure_responders()
        owner = await self.wait_owner(60)
        await asyncio.sleep(1.0)
        owner = await self.wait_owner(60)  # settled
        node = self.node(owner)
        old_mac = self.topo.hosts[owner].mac
        out_file = self.workdir / f"udp-{how}-{time.monotonic_ns()}.json"
        res: dict[str, Any] = {"how": how, "old_node": owner}
        async with self.lock.held():
            client = await self.sup.start("udp-client", [sys.executable, str(HERE / "udp.py"), "client", "--target",
                                                         VIP, "--port", str(UDP_PORT), "--interval-ms",
                                                         str(self.a.probe_ms), "--seconds", "120", "--out",
                                                         str(out_file)], ns=self.client.ns)
            prober = ArpProber(self.obs.ns, "eth0", OBS_IP, VIP, interval_s=self.a.probe_ms / 1000)
            stop = asyncio.Event()
            ptask = asyncio.create_task(prober.run(stop, max_seconds=115, max_probes=12_000))
            try:
                await asyncio.sleep(1.5)  # the client resolves the VIP, answers flow
                t_fault = time.monotonic()
                name = system.announcer(node)
                if how == "kill":
                    await self.sup.kill(name)
                elif how == "linkdown":
                    self.topo.hosts[owner].link(False)
                else:
                    self.sup.signal(name, signal.SIGSTOP)
                if how == "stop":
                    await asyncio.sleep(self.a.stop_seconds)
                else:
                    deadline = t_fault + self.a.round_timeout
                    while time.monotonic() < deadline:
                        if any(x.mac != old_mac and x.kind == "reply" and x.t > t_fault
                               for x in prober.timeline.answers):
                            break
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(1.0)
                t_heal = time.monotonic()
                if how == "kill":
                    await system.restart_announcer(node)
                elif how == "linkdown":
                    self.topo.hosts[owner].link(True)
                else:
                    self.sup.signal(name, signal.SIGCONT)
                await asyncio.sleep(self.a.heal_watch)
            finally:
                stop.set()
                tl = await ptask
                prober.close()
                self.sup.signal("udp-client", signal.SIGTERM)
                if client.proc is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(client.proc.wait(), 10)
        data = json.loads(out_file.read_text())
        out_file.unlink()
        res.update(analyse_udp(data, owner, t_fault, t_heal))
        arp = tl.failover(old_mac, t_fault)
        res["arp_dual_ms"] = arp["dual_ms"]
        res["arp_first_new_ms"] = arp["first_new_answer_ms"]
        res["arp_new_node"] = self.mac_to_node.get(str(arp["new_mac"]), None)
        # observer: two MACs answering ARP within one probe interval, anywhere in the round
        # the observer's probes answered by two MACs at once (replies of two MACs less than half a probe
        # interval apart): dual announcement, as opposed to a move (or a flap-back) from one MAC to another
        res["arp_dual_events"], res["arp_dual_span_ms"] = dual_events(tl.replies(), self.a.probe_ms / 1000 / 2)
        return res

    # -- idle cost and API traffic ------------------------------------------------------------
    async def idle_window(self, system: System, seconds: float) -> dict[str, Any]:
        groups: dict[str, list[int]] = {}
        for n in self.nodes:
            p = self.sup.procs[system.announcer(n)]
            groups[f"node:{n.name}"] = proc_tree(p.pid or 0)
        for name in system.control_plane():
            p = self.sup.procs[name]
            groups[f"cp:{name}"] = proc_tree(p.pid or 0)
        async with self.lock.held():
            await asyncio.to_thread(self.api.clear_requests)
            t0 = time.monotonic()
            load = MachineLoad()
            c0 = {k: cpu_ticks(v) for k, v in groups.items()}
            x0 = {k: ctx_switches(v) for k, v in groups.items()}
            rss_max = {k: rss_kib(v) for k, v in groups.items()}
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(min(5.0, seconds - (time.monotonic() - t0)))
                load.sample()
                for k, v in groups.items():
                    rss_max[k] = max(rss_max[k], rss_kib(v))
            dt = time.monotonic() - t0
            c1 = {k: cpu_ticks(v) for k, v in groups.items()}
            x1 = {k: ctx_switches(v) for k, v in groups.items()}
            machine = load.result()
            reqs = await asyncio.to_thread(self.api.requests, settle_s=0.5)
        out: dict[str, Any] = {"seconds": round(dt, 1), "procs": {}, "load": machine}
        for k in groups:
            out["procs"][k] = {"cpu_pct": round((c1[k] - c0[k]) / CLK_TCK / dt * 100, 2),
                               "rss_mib": round(rss_max[k] / 1024, 1),
                               "wakeups_per_s": round((x1[k] - x0[k]) / dt, 1)}
        nodes = [v for k, v in out["procs"].items() if k.startswith("node:")]
        out["per_node"] = {"cpu_pct": round(statistics.fmean(x["cpu_pct"] for x in nodes), 2),
                           "rss_mib": round(statistics.fmean(x["rss_mib"] for x in nodes), 1),
                           "wakeups_per_s": round(statistics.fmean(x["wakeups_per_s"] for x in nodes), 1)}
        cps = [v for k, v in out["procs"].items() if k.startswith("cp:")]
        out["control_plane"] = {"cpu_pct": round(sum(x["cpu_pct"] for x in cps), 2),
                                "rss_mib": round(sum(x["rss_mib"] for x in cps), 1),
                                "wakeups_per_s": round(sum(x["wakeups_per_s"] for x in cps), 1)}
        out["api"] = api_summary(reqs, dt)
        return out

    async def scale_to(self, n: int) -> None:
        """Bring the extra Services of namespace ``scale`` to ``n`` (created with their EndpointSlices)."""
        have = self.results.setdefault("_scale_have", 0)
        if n <= have:
            return
        docs = scale_docs(n)
        base = docs[:3]
        svcs = [scale_service(i) for i in range(have, n)]
        t0 = time.monotonic()
        await asyncio.to_thread(self.api.clear_requests)
        self._change_t = time.time()
        await asyncio.to_thread(self.api.apply_docs, base)
        for i in range(0, len(svcs), 50):
            chunk = svcs[i:i + 50]
            await asyncio.to_thread(self.api.apply_docs, chunk + harness.endpoint_slices(chunk, self.nodes))
        self.results["_scale_have"] = n
        await self.wait_ips("scale", n, timeout=600)
        say(f"  {n} extra Services created and given IPs in {time.monotonic() - t0:.1f} s")

    async def quiesce(self, quiet_s: float, max_s: float) -> dict[str, Any]:
        """Wait until the system has made no API request for ``quiet_s`` (leader-Lease renewals aside:
        l2lb renews two forever), at most ``max_s``; the requests it made meanwhile (from the last
        ``clear_requests()``, e.g. the start of a scale-up) are the cost of absorbing the change."""
        t0 = time.time()
        while True:
            reqs = await asyncio.to_thread(self.api.requests, settle_s=0.0)
            busy = [float(r["t"]) for r in reqs if r["resource"] != "leases"]
            now = time.time()
            last = max(busy, default=0.0)
            if now - max(last, t0 - quiet_s) >= quiet_s or now - t0 >= max_s:
                out = api_summary(reqs, now - self._change_t)
                out["quiet"] = now - max(last, t0 - quiet_s) >= quiet_s
                out["waited_s"] = round(now - t0, 1)
                out["last_request_after_s"] = round(last - self._change_t, 1) if busy else None
                return out
            self.sup.check_alive()
            await asyncio.sleep(2.0)

    async def churn_window(self, system: System, seconds: float) -> dict[str, Any]:
        """One Service replaced per second, a node's announcing process killed every 6 s (back 3 s later)."""
        await asyncio.to_thread(self.api.clear_requests)
        t0 = time.monotonic()
        load = MachineLoad()
        next_replace, next_kill, revive_at, victim, k = t0 + 1.0, t0 + 2.0, 0.0, 0, 0
        while (now := time.monotonic()) < t0 + seconds:
            load.sample()
            if now >= next_replace:
                old = scale_service(k)
                new = scale_service(k)  # the replacement takes the slot (IP, port) the old one frees
                new["metadata"]["name"] = f"churn{k}"
                await asyncio.to_thread(self.api.call, "DELETE",
                                        f"/api/v1/namespaces/scale/services/{old['metadata']['name']}")
                await asyncio.to_thread(self.api.apply_docs, [new, *harness.endpoint_slices([new], self.nodes)])
                k += 1
                next_replace = now + 1.0
            if now >= next_kill:
                await self.sup.kill(system.announcer(self.nodes[victim % len(self.nodes)]))
                revive_at, next_kill = now + 3.0, now + 6.0
            if revive_at and now >= revive_at:
                await system.restart_announcer(self.nodes[victim % len(self.nodes)])
                revive_at, victim = 0.0, victim + 1
            await asyncio.sleep(0.05)
        if revive_at:
            await system.restart_announcer(self.nodes[victim % len(self.nodes)])
        machine = load.result()
        reqs = await asyncio.to_thread(self.api.requests, settle_s=0.5)
        return {"seconds": seconds, "replaced": k, "api": api_summary(reqs, time.monotonic() - t0), "load": machine}

    # -- ARP ------------------------------------------------------------------------------------
    async def arp_section(self, system: System) -> dict[str, Any]:
        """The system's announcer/speaker answering for the VIP, then the kernel of the same node
        answering for KERNEL_ARP_IP on its LAN interface (the baseline, taken right after, under the
        same load: every node's process still reads every broadcast)."""
        arp_run = load_bench("arp")
        owner = await self.wait_owner(30)
        binary = arp_run.go_binary()
        if not isinstance(binary, Path):
            return {"skipped": f"Go generator unavailable: {binary}"}
        node = self.topo.hosts[owner]
        mac = node.mac
        kw = {"rates": ARP_RATES, "latency_at": ()}

        def gen(target: str) -> Any:
            return arp_run.GoGenerator(self.client, binary, target=target, sender_base=ARGEN_SENDER_BASE,
                                       senders=ARGEN_SENDERS)

        async with self.lock.held():
            load = MachineLoad()
            res = await asyncio.to_thread(arp_run.measure, gen(VIP), mac, self.a.arp_seconds, self.a.arp_max_rate,
                                          system.name, **kw)
            res["load"] = load.result()
            pid = self.sup.procs[system.announcer(self.node(owner))].pid or 0
            res["rss_mib"] = round(rss_kib(proc_tree(pid)) / 1024, 1)
            res["node"] = owner
            # a VIP that moved during the load (missed heartbeats / memberlist probes) shows as total loss
            res["node_after"] = await self.wait_owner(30)
            node.exec(["ip", "addr", "add", f"{KERNEL_ARP_IP}/32", "dev", LAN_IF])
            try:
                load = MachineLoad()
                kern = await asyncio.to_thread(arp_run.measure, gen(KERNEL_ARP_IP), mac, self.a.arp_seconds,
                                               self.a.arp_max_rate, f"kernel of {owner}", **kw)
                kern["load"] = load.result()
                res["kernel"] = kern
            finally:
                node.exec(["ip", "addr", "del", f"{KERNEL_ARP_IP}/32", "dev", LAN_IF], check=False)
        self.client.exec(["ip", "neigh", "flush", "all"], check=False)
        return res


def dual_events(replies: list[Any], window: float) -> tuple[int, float]:
    """(number of probe answers where two MACs replied within ``window`` of each other, time from the
    first such event to the last, ms)."""
    ts = [b.t for a, b in itertools.pairwise(replies) if a.mac != b.mac and b.t - a.t < window]
    return len(ts), ((ts[-1] - ts[0]) * 1000 if ts else 0.0)


def analyse_udp(data: dict[str, Any], old: str, t_fault: float, t_heal: float) -> dict[str, Any]:
    replies = sorted((float(t), str(node)) for _seq, t, node in data["replies"])
    sent = [(int(s), float(t)) for s, t in data["sent"]]
    answered = {int(s) for s, _t, _n in data["replies"]}
    before = [r for r in replies if r[0] < t_fault]
    during = [r for r in replies if t_fault <= r[0] < t_heal]
    after = [r for r in replies if r[0] >= t_heal]
    out: dict[str, Any] = {"sent": len(sent), "answered": len(answered)}
    out["baseline_ok"] = bool(before) and before[-1][1] == old
    # outage: the longest silence between two answers from the last answer before the fault on
    ts = ([before[-1][0]] if before else []) + [t for t, _ in during]
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    if during:
        out["outage_ms"] = max(gaps) * 1000 if gaps else None
    else:
        out["outage_ms"] = None  # no answer at all until the heal
        out["silent_until_heal_ms"] = (t_heal - (before[-1][0] if before else t_fault)) * 1000
    out["lost_fault"] = sum(1 for s, t in sent if t_fault - 0.05 <= t < t_heal and s not in answered)
    new = [r for r in during if r[1] != old]
    out["first_new_ms"] = (new[0][0] - t_fault) * 1000 if new else None
    out["new_node"] = new[0][1] if new else None
    seq_nodes = [n for _t, n in during]
    out["flips_during"] = sum(1 for a, b in itertools.pairwise(seq_nodes) if a != b)
    # heal: longest silence after it, who answers at the end, did the VIP go back to the old node
    ts2 = ([during[-1][0]] if during else ([before[-1][0]] if before else [])) + [t for t, _ in after]
    gaps2 = [b - a for a, b in itertools.pairwise(ts2)]
    out["heal_outage_ms"] = max(gaps2) * 1000 if gaps2 else None
    out["lost_heal"] = sum(1 for s, t in sent if t >= t_heal and s not in answered and t < sent[-1][1] - 0.1)
    out["final_node"] = after[-1][1] if after else None
    out["flapped_back"] = bool(after) and out["new_node"] is not None and after[-1][1] == old
    nodes_after = [n for _t, n in after]
    out["flips_heal"] = sum(1 for a, b in itertools.pairwise(nodes_after) if a != b)
    return out


def api_summary(reqs: list[dict[str, Any]], seconds: float, bucket_s: float = 10.0) -> dict[str, Any]:
    """Requests by user and by verb+resource, and per ``bucket_s`` from the window's first request on
    (``timeline``: tells a steady rate from a tail of work that is still dying down)."""
    by_user: Counter[str] = Counter(r["user"] for r in reqs)
    verbs: Counter[str] = Counter(f"{r['verb']} {r['resource']}" for r in reqs)
    codes: Counter[str] = Counter(str(r["code"]) for r in reqs)
    timeline: list[int] = []
    ts = sorted(float(r["t"]) for r in reqs if r.get("t"))
    if ts:
        t0 = min(ts[0], time.time() - seconds)
        timeline = [0] * max(1, int(seconds // bucket_s) + 1)
        for t in ts:
            timeline[min(len(timeline) - 1, max(0, int((t - t0) // bucket_s)))] += 1
    return {"requests": len(reqs), "req_per_s": round(len(reqs) / max(seconds, 1e-9), 2),
            "by_user": dict(by_user.most_common()), "top": dict(verbs.most_common(8)), "codes": dict(codes),
            f"per_{bucket_s:.0f}s": timeline}


# ------------------------------------------------------------------------------------------ cilium
CILIUM_GO = REPO / "bench" / "api_traffic" / "cilium-go"


def cilium_binary() -> Path | str:
    """bench/api_traffic/cilium-go (client-go leaderelection), built once per source version, niced."""
    go = shutil.which("go")
    if go is None:
        return "go not found on PATH"
    sources = [f for f in sorted(CILIUM_GO.iterdir()) if f.suffix in (".go", ".mod", ".sum")]
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOMAXPROCS": "1"}
    arp_run = load_bench("arp")
    out: Path | str = arp_run.cached_build(
        "cilium-lease-model", sources,
        lambda tmp: ["nice", "-n", "15", go, "build", "-p", "1", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."],
        what="go build", timeout=1800, cwd=CILIUM_GO, env=env)
    return out


def valid_leases(api: LabApiServer) -> int:
    lst = api.call("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases")
    now = time.time()
    n = 0
    for it in lst.get("items", []):
        if not it["metadata"]["name"].startswith("cilium-l2announce-"):
            continue  # kube-apiserver's own identity Lease lives there too
        spec = it.get("spec") or {}
        rt = str(spec.get("renewTime") or "")
        try:
            t = calendar.timegm(time.strptime(rt[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            continue
        if spec.get("holderIdentity") and now - t < float(spec.get("leaseDurationSeconds") or 15):
            n += 1
    return n


async def cilium_section(b: Bench, a: argparse.Namespace) -> list[dict[str, Any]]:
    """Cilium's L2-announcement Lease election with client-go's leaderelection (bench/api_traffic/cilium-go),
    one process per node (its own client: qps 5 / burst 10), against a fresh real kube-apiserver in the
    control-plane namespace; at rest with each --scales count and under churn (a node crashes every 6 s,
    back 3 s later) with 100 Services."""
    binary = cilium_binary()
    if not isinstance(binary, Path):
        return [{"skipped": f"cilium-go: {binary}"}]
    names = [f"node-{i}" for i in range(1, a.nodes + 1)]
    rows = []
    plan = [(n, False) for n in a.scales] + ([(100, True)] if a.cilium_churn else [])
    for n_svc, churn in plan:
        workdir = b.root_workdir / f"cilium-{n_svc}-{'churn' if churn else 'rest'}"
        api = LabApiServer(kas_binary(), workdir / "kas", [f"cilium-{n}" for n in names])
        await asyncio.to_thread(api.start)
        sup = Supervisor(workdir / "logs")
        try:
            async def start(node: str, api: LabApiServer = api, sup: Supervisor = sup,
                            workdir: Path = workdir, n_svc: int = n_svc) -> Proc:
                kc = api.kubeconfig_for(f"cilium-{node}", workdir / f"kubeconfig-{node}")
                return await sup.start(node, [str(binary), "--kubeconfig", str(kc), "--node", node, "--services",
                                              str(n_svc), "--qps", str(a.cilium_qps), "--burst",
                                              str(a.cilium_burst), "--seconds", "1800"], ns=b.ctl.ns)

            for node in names:
                await start(node)
            await asyncio.sleep(a.cilium_warmup)
            async with b.lock.held():
                await asyncio.to_thread(api.clear_requests)
                t0 = time.monotonic()
                load = MachineLoad()
                valid: list[int] = []
                next_sample, next_kill, revive_at, victim = t0, t0 + 2.0, 0.0, 0
                while (now := time.monotonic()) < t0 + a.api_seconds:
                    if now >= next_sample:
                        valid.append(await asyncio.to_thread(valid_leases, api))
                        next_sample = now + max(1.0, a.api_seconds / 10)
                    if churn:
                        if now >= next_kill:
                            await sup.kill(names[victim % len(names)])
                            revive_at, next_kill = now + 3.0, now + 6.0
                        if revive_at and now >= revive_at:
                            await start(names[victim % len(names)])
                            revive_at, victim = 0.0, victim + 1
                    load.sample()
                    await asyncio.sleep(0.1)
                machine = load.result()
                reqs = await asyncio.to_thread(api.requests, settle_s=0.5)
                dt = time.monotonic() - t0
            r = {"services": n_svc, "mode": "churn" if churn else "rest", "api": api_summary(reqs, dt), "load": machine,
                 "announced": min(valid) if valid else 0,
                 "announced_mean": round(statistics.fmean(valid), 1) if valid else 0.0,
                 "demanded_req_per_s": round(len(names) * n_svc / 2.0, 1)}
            r["req_per_s"] = r["api"]["req_per_s"]
            rows.append(r)
            say(f"  Cilium model (client-go) {n_svc} Services {r['mode']}: {r['req_per_s']:.2f} req/s, "
                f"valid Leases min {r['announced']}/{n_svc} (mean {r['announced_mean']})")
        finally:
            await sup.stop_all()
            await asyncio.to_thread(api.stop)
    return rows


# ------------------------------------------------------------------------------------------ main
async def run_system(b: Bench, system: System, a: argparse.Namespace, save: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"label": system.label}
    save(system.name, res)
    b.results = {}
    await b.bring_up(system)
    try:
        async with b.lock.held(f"{system.name}: every timed section"):
            await timed_sections(b, system, a, save, res)
        res["logs"] = str(b.sup.logdir)
    finally:
        await b.tear_down()
    return res


async def timed_sections(b: Bench, system: System, a: argparse.Namespace, save: Any, res: dict[str, Any]) -> None:
    """Failover, ARP, idle and churn of one system (run_system holds the bench lock around them all:
    one wait in the queue per system instead of one per batch)."""
    if "failover" in a.sections:
        rounds: dict[str, list[dict[str, Any]]] = {}
        plan = [("kill", a.rounds), ("linkdown", a.rounds), ("stop", a.stop_rounds)]
        for how, n in plan:
            rounds[how] = []
            async with b.lock.held(f"{system.name} {how} x{n}"):
                for i in range(n):
                    r = await b.failover_round(system, how)
                    rounds[how].append(r)
                    say(f"{system.name} {how:8s} #{i + 1:2d}: {r['old_node']} -> {r['new_node']} outage "
                        f"{_ms(r['outage_ms'])} (first other node {_ms(r['first_new_ms'])}, "
                        f"lost {r['lost_fault']}), ARP dual answers {r['arp_dual_events']}, heal: outage "
                        f"{_ms(r['heal_outage_ms'])} final {r['final_node']} flap-back {r['flapped_back']}")
            res["failover"] = {h: failover_summary(rs) for h, rs in rounds.items()}
            res["failover_raw"] = rounds
            save(system.name, res)
    if "arp" in a.sections:
        res["arp"] = await b.arp_section(system)
        save(system.name, res)
    if "idle" in a.sections or "churn" in a.sections:
        res["idle"] = {}
        async with b.lock.held(f"{system.name} idle/churn"):
            for n in a.scales:
                await b.scale_to(max(0, n - 3))
                await asyncio.sleep(a.settle)
                # at rest = after the system stopped reacting to the scale-up (MetalLB's controller may
                # rewrite every Service's status for a while: its "reprocess all" retries)
                q = await b.quiesce(a.quiet_seconds, a.quiesce_max)
                res.setdefault("settle", {})[str(n)] = q
                say(f"{system.name} {n} Services: quiet after {q['waited_s']} s more (quiet={q['quiet']}); "
                    f"requests since the scale-up began {q['requests']} {q['by_user']} {q['top']}")
                if "idle" in a.sections:
                    w = await b.idle_window(system, a.idle_seconds)
                    res["idle"][str(n)] = w
                    save(system.name, res)
                    say(f"{system.name} idle with {n} Services: per node {w['per_node']}, control plane "
                        f"{w['control_plane']}, API {w['api']['req_per_s']} req/s")
                if n == 100 and "churn" in a.sections:
                    res["churn"] = await b.churn_window(system, a.api_seconds)
                    say(f"{system.name} churn (100 Services): API {res['churn']['api']['req_per_s']} req/s "
                        f"{res['churn']['api']['by_user']}")
                    await asyncio.sleep(a.settle)


def failover_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    outages = [float(r["outage_ms"]) for r in rs if r["outage_ms"] is not None]
    return summary(outages) | {
        "rounds": len(rs),
        "no_answer_until_heal": sum(1 for r in rs if r["outage_ms"] is None),
        "moved": sum(1 for r in rs if r["new_node"] is not None),
        "first_new_p50": pct([float(r["first_new_ms"]) for r in rs if r["first_new_ms"] is not None], 50),
        "lost_max": max((int(r["lost_fault"]) for r in rs), default=0),
        "arp_dual_span_max_ms": max((float(r["arp_dual_span_ms"]) for r in rs), default=0.0),
        "arp_dual_rounds": sum(1 for r in rs if r["arp_dual_events"] > 0),
        "flips_max": max((int(r["flips_during"]) + int(r["flips_heal"]) for r in rs), default=0),
        "flapped_back": sum(1 for r in rs if r["flapped_back"]),
        "heal_outage_p50": pct([float(r["heal_outage_ms"]) for r in rs if r["heal_outage_ms"] is not None], 50),
        "heal_outage_max": max((float(r["heal_outage_ms"]) for r in rs if r["heal_outage_ms"] is not None),
                               default=float("nan")),
    }


def _ms(v: Any) -> str:
    return "n/a" if v is None or v != v else f"{float(v):,.0f} ms"


def _load(m: dict[str, Any] | None) -> str:
    if not m:
        return "n/a"
    return (f"avg {m['loadavg_start'][0]:.1f}->{m['loadavg_end'][0]:.1f} (max {m['loadavg1_max']:.1f}), "
            f"machine CPU {m['machine_cpu_busy_pct']:.0f} % of {m['cpus']}")


def _ratio(x: float, y: float) -> str:
    if x != x or y != y or y <= 0:
        return "n/a"
    return f"{x / y:.1f}x"


def report(res: dict[str, Any], a: argparse.Namespace) -> None:
    sysnames = [s for s in ("l2lb", "metallb") if s in res]
    sysnames_present = bool(sysnames)
    print()
    print(f"== bench/compare, {res['machine']}, {res['date']} ==")
    if sysnames_present and all("failover" in res[s] for s in sysnames):
        print(f"\nFailover, client UDP every {a.probe_ms:.0f} ms to {VIP} (outage = longest silence between answers)")
        print(f"  {'fault':9s} {'system':14s} {'n':>3s} {'p50':>9s} {'p99':>9s} {'max':>9s} {'moved':>5s} "
              f"{'lost max':>8s} {'ARPdual':>7s} {'flips':>5s} {'flapback':>8s} {'heal p50':>9s}")
        for how in ("kill", "linkdown", "stop"):
            for s in sysnames:
                f = res[s]["failover"].get(how)
                if not f:
                    continue
                print(f"  {how:9s} {res[s]['label']:14s} {f['rounds']:3d} {_ms(f['p50']):>9s} {_ms(f['p99']):>9s} "
                      f"{_ms(f['max']):>9s} {f['moved']:5d} {f['lost_max']:8d} {f['arp_dual_rounds']:7d} "
                      f"{f['flips_max']:5d} {f['flapped_back']:8d} {_ms(f['heal_outage_p50']):>9s}")
            if len(sysnames) == 2 and how in res["metallb"]["failover"] and how in res["l2lb"]["failover"]:
                m, l2 = res["metallb"]["failover"][how], res["l2lb"]["failover"][how]
                print(f"  {'':9s} ratio MetalLB/l2lb: p50 {_ratio(m['p50'], l2['p50'])}, "
                      f"max {_ratio(m['max'], l2['max'])}")
    if sysnames_present and all("arp" in res[s] for s in sysnames):
        print("\nARP replies (bench/arp generator from the client, to the announcing node)")
        for s in sysnames:
            r = res[s]["arp"]
            if "skipped" in r:
                print(f"  {res[s]['label']:14s} skipped: {r['skipped']}")
                continue
            for who, x in ((res[s]["label"], r), (f"  kernel ({r['node']})", r.get("kernel"))):
                if not x:
                    continue
                best = x.get("best") or {}
                low = x["low"]
                print(f"  {who:14s} at 1000/s p50 {low['p50_us']} us p99 {low['p99_us']} us (min {low['min_us']}); "
                      "highest 0-loss rate "
                      f"{best.get('achieved_rate', 'none')}/s ({x['stop'] or 'generator limit'}); "
                      f"load {_load(x.get('load'))}")
            print(f"  {'':14s} RSS {r['rss_mib']} MiB; VIP on {r['node']} before, {r['node_after']} after")
    if sysnames_present and all("idle" in res[s] for s in sysnames):
        print(f"\nIdle cost over {a.idle_seconds:.0f} s (CPU % of one core, RSS MiB) and API requests at rest")
        for n in a.scales:
            for s in sysnames:
                w = res[s]["idle"].get(str(n))
                if not w:
                    continue
                print(f"  {n:5d} Services {res[s]['label']:14s} per node {w['per_node']['cpu_pct']:6.2f} % "
                      f"{w['per_node']['rss_mib']:6.1f} MiB | control plane {w['control_plane']['cpu_pct']:6.2f} % "
                      f"{w['control_plane']['rss_mib']:6.1f} MiB | API {w['api']['req_per_s']:6.2f} req/s | "
                      f"load {_load(w.get('load'))}")
            if len(sysnames) == 2 and str(n) in res["l2lb"]["idle"] and str(n) in res["metallb"]["idle"]:
                m, l2 = res["metallb"]["idle"][str(n)], res["l2lb"]["idle"][str(n)]
                print(f"  {'':14s} ratio l2lb/MetalLB per node: "
                      f"CPU {_ratio(l2['per_node']['cpu_pct'], m['per_node']['cpu_pct'])}"
                      f", RSS {_ratio(l2['per_node']['rss_mib'], m['per_node']['rss_mib'])}")
    if any("churn" in res[s] for s in sysnames):
        print("\nAPI requests under churn (100 Services, one replaced per second, a node's process killed every 6 s)")
        for s in sysnames:
            if "churn" in res[s]:
                c = res[s]["churn"]["api"]
                print(f"  {res[s]['label']:14s} {c['req_per_s']:6.2f} req/s  {c['by_user']}; "
                      f"load {_load(res[s]['churn'].get('load'))}")
    if "cilium" in res:
        print("\nCilium model (per-Service Lease election, 3 nodes), same real kube-apiserver build")
        for r in res["cilium"]:
            if "skipped" in r:
                print(f"  skipped: {r['skipped']}")
                continue
            print(f"  {r['services']:5d} Services {r['mode']:5s} {r['req_per_s']:6.2f} req/s (demanded "
                  f"{r['demanded_req_per_s']}/s), Leases with a live holder: min {r['announced']}/{r['services']}; "
                  f"load {_load(r.get('load'))}")


async def amain(a: argparse.Namespace) -> int:
    ok, why = netns.have_privileges()
    if not ok:
        print(f"bench/compare: {why}", file=sys.stderr)
        return 2
    if not kas_binary().is_file():
        print("bench/compare: the real kube-apiserver is not built: bash tests/support/kube-apiserver/build.sh",
              file=sys.stderr)
        return 2
    if "metallb" in a.systems and (why := harness.missing()):
        print(f"bench/compare: {why}", file=sys.stderr)
        return 2
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM/SIGINT: clean up (processes, namespaces) like at the end
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="l2lb-bench-compare-"))
    netns.sweep(a.prefix)
    b = Bench(a, workdir)
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": a.machine,
                           "kernel": platform.release(), "metallb": None, "args": vars(a)}
    res.pop("metallb")

    def save(key: str, value: Any) -> None:
        res[key] = value
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1, default=str))

    rc = 0
    try:
        b.build_network()
        await b.start_responders()
        with netns.entered(b.ctl.ns):
            loop = asyncio.get_running_loop()
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
                max_workers=4, initializer=enter_ns, initargs=(b.ctl.ns,)))
            # one hold of the bench lock for both systems and the model: their figures are compared with
            # each other, so they are taken under the same conditions, without another helper's run between
            async with b.lock.held("bench/compare: both systems and the Cilium model"):
                # failover of both systems first (the figures the comparison is about), then the rest
                groups = [[x for x in a.sections if x == "failover"],
                          [x for x in a.sections if x in ("arp", "idle", "churn")]]
                for group in [g for g in groups if g]:
                    for sname in a.systems:
                        system: System = L2lb(b) if sname == "l2lb" else MetalLBSystem(b)
                        say(f"=== {system.label}: {', '.join(group)} ===")
                        prev = dict(res.get(sname) or {})
                        part = await run_system(b, system, argparse.Namespace(**{**vars(a), "sections": group}),
                                                lambda key, value, prev=prev: save(key, {**prev, **value}))
                        save(sname, {**prev, **part})
                if "cilium" in a.sections:
                    say("=== Cilium model ===")
                    res["cilium"] = await cilium_section(b, a)
    except asyncio.CancelledError:
        rc = 130
        print("bench/compare: interrupted; cleaning up", file=sys.stderr)
    except Exception as e:
        rc = 1
        print(f"bench/compare: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        await b.sup.stop_all()
        b.topo.destroy()
    res["bench_lock_waited_s"] = round(b.lock.waited_s, 1)
    res["metallb_build"] = harness.build_info()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    if rc == 0:
        report(res, a)
    print(f"\nworkdir (logs): {workdir}")
    return rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default="l2lb,metallb")
    p.add_argument("--sections", default="failover,arp,idle,churn,cilium")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=20, help="rounds of kill and of link down (default 20)")
    p.add_argument("--stop-rounds", type=int, default=5, help="rounds of SIGSTOP (default 5)")
    p.add_argument("--stop-seconds", type=float, default=30.0)
    p.add_argument("--round-timeout", type=float, default=30.0, help="longest wait for a failover (s)")
    p.add_argument("--heal-watch", type=float, default=6.0, help="seconds watched after the heal")
    p.add_argument("--probe-ms", type=float, default=10.0)
    p.add_argument("--scales", default="3,100,1000", help="Service counts for the idle section")
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--api-seconds", type=float, default=60.0, help="length of the churn and Cilium windows")
    p.add_argument("--settle", type=float, default=10.0, help="seconds after scaling before measuring")
    p.add_argument("--quiet-seconds", type=float, default=10.0,
                   help="then wait for this long without an API request of the system (Lease renewals aside)")
    p.add_argument("--quiesce-max", type=float, default=240.0, help="longest wait for --quiet-seconds")
    p.add_argument("--cilium-warmup", type=float, default=20.0)
    p.add_argument("--no-cilium-churn", dest="cilium_churn", action="store_false")
    p.add_argument("--cilium-qps", type=float, default=5.0, help="per-node client limit of the Cilium model")
    p.add_argument("--cilium-burst", type=int, default=10)
    p.add_argument("--arp-seconds", type=float, default=1.0)
    p.add_argument("--arp-max-rate", type=int, default=150_000)
    p.add_argument("--prefix", default="l2cmp")
    p.add_argument("--lock", default="/work/.bench.lock" if os.path.exists("/work/.bench.lock") else None,
                   help="flock this file around each timed piece (default /work/.bench.lock when present)")
    p.add_argument("--machine", default="2-core Firecracker VM, kernel " + platform.release().split("-")[0])
    p.add_argument("--json")
    a = p.parse_args()
    a.systems = [s for s in a.systems.split(",") if s]
    a.sections = [s for s in a.sections.split(",") if s]
    a.scales = [int(x) for x in a.scales.split(",") if x]
    bad = set(a.systems) - {"l2lb", "metallb"}
    if bad:
        p.error(f"unknown systems {sorted(bad)}")
    if a.nodes < 2 or a.rounds < 0 or a.stop_rounds < 0:
        p.error("--nodes >= 2, --rounds/--stop-rounds >= 0")
    return asyncio.run(amain(a))


if __name__ == "__main__":
    raise SystemExit(main())
