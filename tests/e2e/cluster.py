"""A real multi-node Kubernetes cluster on one machine, for l2lb's end-to-end tests.

Every part is the real program: kube-apiserver + etcd (tests/support/kube-apiserver),
kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl of the same release
(tests/support/kube-cluster, one binary), containerd + runc + the CNI plugins from Debian,
CoreDNS from its Go module (tests/support/coredns). Nothing runs on this machine's real network:

* a "switch" network namespace holds the lab bridge (LAN 198.51.100.0/24);
* the control plane runs in its own namespace ("cp", 198.51.100.1, also the LAN's router);
* each node is a network namespace whose only link, ``enp0s25`` (the name the seed's
  L2 announcement policy selects), is a veth port on the bridge. A node's containerd, kubelet and
  kube-proxy share one private mount + UTS namespace (made by a small "holder" process): a
  fresh sysfs showing only the node's links (the cgroup hierarchies kept), a fresh tmpfs on /run
  (so /run/containerd/containerd.sock, /run/netns, /run/runc are the node's own), and the node's
  own directories bound on /var/lib and /var/log. So a hostNetwork pod (the announcer) sees the
  node's ``enp0s25``, ``cni0`` and pod veths, and nothing of the host;
* every process of a node (holder, containerd, shims, containers, kubelet, kube-proxy) lives in
  the node's cgroup subtree ``/l2lb-e2e-<prefix>/<node>`` of every v1 hierarchy (kubelet's
  ``cgroupRoot`` is that subtree): a node "dies" by freezing that subtree and SIGKILLing each pid
  in it, and teardown empties and removes it the same way;
* pods get addresses from the CNI bridge plugin (``cni0``, host-local IPAM, one /27 of
  203.0.113.0/25 per node; static routes between nodes, as flannel's host-gw does); Services use
  203.0.113.128/25 (``kubernetes`` = .129, cluster DNS = .138), all TEST-NET.

Host side effects are limited to: the namespaces (prefix ``k8<pid>``), the cgroup directories, the
work directory; kubelet's kernel tunables (vm.overcommit_memory, kernel.panic, ...) are shown to it
with the values it wants through read-only bind mounts inside the node's mount namespace (with
``protectKernelDefaults: true`` it only reads them), so this machine's real settings are never
changed. :func:`sweep_stale` removes what a killed run left.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "tests" / "support"
CGROUP_FS = Path("/sys/fs/cgroup")
PREFIX_ROOT = "k8"
WORK_ROOT = Path(os.environ.get("L2LB_E2E_WORKDIR", "/var/tmp/l2lb-e2e"))

LAN_PREFIX = 24
CP_IP = "198.51.100.1"
CLIENT_IP = "198.51.100.50"
OBSERVER_IP = "198.51.100.51"
POD_CIDR = "203.0.113.0/25"
SERVICE_CIDR = "203.0.113.128/25"
KUBERNETES_SVC_IP = "203.0.113.129"
DNS_SVC_IP = "203.0.113.138"
APISERVER_PORT = 6443
NODE_IFACE = "enp0s25"  # the interface the seed's CiliumL2AnnouncementPolicy names
PAUSE_REF = "docker.io/l2lb-e2e/pause:3.10"
COREDNS_REF = "docker.io/l2lb-e2e/coredns:e2e"
KUBELET_TUNABLES = {  # what kubelet's protectKernelDefaults checks (pkg/kubelet/cm: setupKernelTunables)
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class ClusterError(RuntimeError):
    pass


def _b36(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
    return out.rjust(width, "0")


def run(args: Sequence[str], *, check: bool = True, timeout: float = 60.0, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (bounded), raising :class:`ClusterError` with its stderr when it fails."""
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False,
                              input=input, env=env)
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(args)} did not finish in {timeout} s") from e
    if check and proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip()[-2000:]
        raise ClusterError(f"{' '.join(args)} failed ({proc.returncode}): {why}")
    return proc


def build(script: str) -> Path:
    """Build (or take from the per-machine cache) one Go program of tests/support; its path."""
    out = run(["bash", str(SUPPORT / script)], timeout=3600).stdout.strip().splitlines()
    path = Path(out[-1])
    if not path.is_file():
        raise ClusterError(f"{script} printed {path}, which is not a file")
    return path


# --- cgroups (v1: one directory per hierarchy) -------------------------------------------------

def cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (cpu, memory, ..., name=systemd)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        if fstype == "cgroup":
            out.append(Path(left.split()[4]))
    if not out:
        raise ClusterError("no cgroup v1 hierarchy mounted under /sys/fs/cgroup (this harness is written for v1)")
    return out


def cgroup_make(rel: str) -> None:
    """Create ``rel`` (e.g. ``l2lb-e2e-x/node1``) in every hierarchy; cpuset gets its parent's cpus/mems."""
    for h in cgroup_hierarchies():
        parts = Path(rel).parts
        for i in range(1, len(parts) + 1):
            d = h.joinpath(*parts[:i])
            if d.is_dir():
                continue
            d.mkdir()
            if (d / "cpuset.cpus").exists():
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((d.parent / f).read_text().strip() or "0")


def cgroup_pids(rel: str) -> set[int]:
    """Every pid in ``rel`` and below, in any hierarchy."""
    pids: set[int] = set()
    for h in cgroup_hierarchies():
        base = h / rel
        if not base.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(base):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split())
    return pids


def cgroup_kill(rel: str, *, timeout: float = 20.0) -> int:
    """SIGKILL every process in ``rel`` at once (freezer: frozen first, so nothing escapes by forking)."""
    freezer = next((h for h in cgroup_hierarchies() if h.name == "freezer"), None)
    state = freezer / rel / "freezer.state" if freezer else None
    killed = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state and state.exists():
            state.write_text("FROZEN")
            for _ in range(100):
                if state.read_text().strip() == "FROZEN":
                    break
                time.sleep(0.01)
        pids = cgroup_pids(rel)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        if state and state.exists():
            state.write_text("THAWED")
        if not pids:
            return killed
        time.sleep(0.05)
    raise ClusterError(f"processes still alive in cgroup {rel} after {timeout} s: {sorted(cgroup_pids(rel))}")


def cgroup_remove(rel: str) -> None:
    """Kill what is left in ``rel`` and remove its directories bottom-up in every hierarchy."""
    cgroup_kill(rel)
    for h in cgroup_hierarchies():
        base = h / rel
        if not base.is_dir():
            continue
        for _ in range(50):
            dirs = sorted((Path(p) for p, _d, _f in os.walk(base)), key=lambda p: len(p.parts), reverse=True)
            busy = False
            for d in dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
            if not busy:
                break
            time.sleep(0.1)


# --- network namespaces ----------------------------------------------------------------------------

def netns_add(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def netns_del(name: str) -> None:
    run(["ip", "netns", "del", name], check=False)


def netns_list() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"], check=False).stdout.splitlines() if line.strip()]


def in_ns(ns: str, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(["nsenter", f"--net=/run/netns/{ns}", "--", *args], **kw)


def sysctl(ns: str, key: str, value: str) -> None:
    in_ns(ns, ["sysctl", "-qw", f"{key}={value}"])


def _pdeathsig_and_cgroup(cgroup_rel: str | None) -> Any:
    procs = [h / cgroup_rel / "cgroup.procs" for h in cgroup_hierarchies()] if cgroup_rel else []

    def pre() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the test run dies -> so do its daemons
        pid = str(os.getpid())
        for f in procs:
            with open(f, "w") as fh:
                fh.write(pid)
    return pre


def spawn(argv: Sequence[str], *, log: Path, cgroup: str | None) -> subprocess.Popen[bytes]:
    """Start a long-running process (from the main thread: PDEATHSIG follows the spawning thread)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_pdeathsig_and_cgroup(cgroup),  # noqa: PLW1509 (main thread only)
                                start_new_session=True)


def wait_for(what: str, cond: Any, *, timeout: float, interval: float = 0.2) -> Any:
    """Poll ``cond()`` until it returns a truthy value (returned) or ``timeout`` s pass (raises)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except ClusterError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what} (last: {str(last)[-1500:]})")


# --- the cluster --------------------------------------------------------------------------------

@dataclass
class Node:
    name: str
    index: int  # 1-based
    ns: str
    port: str  # the bridge port (switch namespace) of its cable
    ip: str
    mac: str
    pod_cidr: str
    dir: Path
    cgroup: str
    holder: subprocess.Popen[bytes] | None = None
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    boots: int = 0

    @property
    def gateway(self) -> str:  # cni0's address: the first of the pod subnet
        base = self.pod_cidr.split("/")[0].rsplit(".", 1)
        return f"{base[0]}.{int(base[1]) + 1}"


@dataclass
class Timing:
    steps: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - t0, 2)


class Cluster:
    """The lab: a switch, the control plane, ``nodes`` nodes, a client and an ARP observer."""

    def __init__(self, *, nodes: int = 3, images: dict[str, Path] | None = None, prefix: str | None = None):
        if not 1 <= nodes <= 4:
            raise ClusterError("1..4 nodes (one /27 of 203.0.113.0/25 each)")
        self.prefix = prefix or f"{PREFIX_ROOT}{_b36(os.getpid(), 5)}"
        self.dir = WORK_ROOT / self.prefix
        self.cgroup = f"l2lb-e2e-{self.prefix}"
        self.switch = f"{self.prefix}sw"
        self.cp_ns = f"{self.prefix}cp"
        self.client_ns = f"{self.prefix}cl"
        self.observer_ns = f"{self.prefix}ob"
        self.images = dict(images or {})
        self.timing = Timing()
        self.nodes = [
            Node(name=f"node{i}", index=i, ns=f"{self.prefix}n{i}", port=f"{self.prefix}p{i}",
                 ip=f"198.51.100.{10 + i}", mac=f"02:00:c6:33:64:{10 + i:02x}",
                 pod_cidr=f"203.0.113.{32 * (i - 1)}/27", dir=self.dir / f"node{i}",
                 cgroup=f"l2lb-e2e-{self.prefix}/node{i}")
            for i in range(1, nodes + 1)
        ]
        users = ("kube-controller-manager", "kube-scheduler", "kube-proxy", *[f"node-{n.name}" for n in self.nodes])
        self.tokens = {u: secrets.token_hex(16) for u in users}
        self.cp_procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kube_bin: Path | None = None
        self.apiserver_bin: Path | None = None
        self._made: list[str] = []  # namespaces made, for teardown
        self.node_root: Path | None = None  # the cached containerd root every node starts from (noderoot.py)
        self.log: list[str] = []  # what the harness did that is worth a line in the results
        self.tests_run = 0  # tests that used this cluster (a session shares one: tests/e2e/k8s_lab.py)

    # ---- binaries and images
    def build(self) -> None:
        with self.timing.step("build_kube_apiserver"):
            self.apiserver_bin = build("kube-apiserver/build.sh")
        with self.timing.step("build_l2lb_kube"):
            self.kube_bin = build("kube-cluster/build.sh")
        with self.timing.step("build_coredns"):
            coredns = build("coredns/build.sh")
        from tests.e2e.ociarchive import image_from_files

        with self.timing.step("image_coredns"):  # deterministic archive, kept per machine (its name is its digest)
            addons = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "l2lb" / "images" / "addons"
            self.images["coredns"] = image_from_files(
                COREDNS_REF, {"/coredns": coredns}, entrypoint=["/coredns"], out_dir=addons)
            others = sorted((f for f in addons.glob("*.tar") if f != self.images["coredns"]),
                            key=lambda f: f.stat().st_mtime, reverse=True)
            for old in others[1:]:  # this one and the newest other one are kept
                old.unlink(missing_ok=True)
        bindir = self.dir / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        link = bindir / "kubectl"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.kube_bin)

    @property
    def kubectl_bin(self) -> Path:
        return self.dir / "bin" / "kubectl"

    # ---- the network
    def _veth_to_switch(self, ns: str, port: str, ifname: str, mac: str | None, addr: str) -> None:
        tmp = f"{port}x"
        run(["ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", tmp])
        run(["ip", "-n", self.switch, "link", "set", tmp, "netns", ns])
        run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "link", "set", tmp, "name", ifname])
        if mac:
            run(["ip", "-n", ns, "link", "set", ifname, "address", mac])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{addr}/{LAN_PREFIX}", "dev", ifname])

    def _ns(self, name: str) -> None:
        netns_add(name)
        self._made.append(name)

    def start_network(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ns(self.switch)
        run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0",
             "mcast_snooping", "0"])
        run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        self._ns(self.cp_ns)
        self._veth_to_switch(self.cp_ns, f"{self.prefix}pc", "eth0", "02:00:c6:33:64:01", CP_IP)
        sysctl(self.cp_ns, "net.ipv4.ip_forward", "1")  # the LAN's router: nodes' default route
        for n in self.nodes:
            run(["ip", "-n", self.cp_ns, "route", "add", n.pod_cidr, "via", n.ip])
        # a LAN client with the kernel's default sysctls (no arp_accept, nothing tuned)
        self._ns(self.client_ns)
        self._veth_to_switch(self.client_ns, f"{self.prefix}pl", "eth0", "02:00:c6:33:64:32", CLIENT_IP)
        self._ns(self.observer_ns)
        self._veth_to_switch(self.observer_ns, f"{self.prefix}po", "eth0", "02:00:c6:33:64:33", OBSERVER_IP)
        for n in self.nodes:
            self._ns(n.ns)
            self._veth_to_switch(n.ns, n.port, NODE_IFACE, n.mac, n.ip)
            run(["ip", "-n", n.ns, "route", "add", "default", "via", CP_IP])
            for m in self.nodes:
                if m is not n:
                    run(["ip", "-n", n.ns, "route", "add", m.pod_cidr, "via", m.ip])
            sysctl(n.ns, "net.ipv4.ip_forward", "1")
            # bridged pod-to-pod traffic through a Service must see conntrack (kube-proxy's DNAT)
            sysctl(n.ns, "net.bridge.bridge-nf-call-iptables", "1")
            sysctl(n.ns, "net.bridge.bridge-nf-call-ip6tables", "1")

    def cable(self, node: Node, up: bool) -> None:
        """Plug a node's cable in or out (the switch port: the node sees NO-CARRIER)."""
        run(["ip", "-n", self.switch, "link", "set", node.port, "up" if up else "down"])

    # ---- control plane
    def _kubeconfig(self, path: Path, user: str, token: str, server: str) -> Path:
        ca = (self.dir / "cp" / "apiserver" / "ca.crt").read_bytes()
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": server,
                                                     "certificate-authority-data": base64.b64encode(ca).decode()}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
            "current-context": "e2e",
        }))
        path.chmod(0o600)
        return path

    def start_control_plane(self) -> None:
        assert self.apiserver_bin and self.kube_bin
        cp = self.dir / "cp"
        cp.mkdir(parents=True, exist_ok=True)
        cgroup_make(f"{self.cgroup}/cp")
        users = [f"--user={u}:{t}" for u, t in self.tokens.items()]
        with self.timing.step("apiserver_ready"):
            self.cp_procs["kube-apiserver"] = spawn([
                "nsenter", f"--net=/run/netns/{self.cp_ns}", "--", str(self.apiserver_bin),
                "--data-dir", str(cp / "apiserver"), "--port", str(APISERVER_PORT),
                "--kubeconfig-out", str(cp / "admin.kubeconfig"), "--namespace-controller=false",
                "--service-account-admission", f"--san={CP_IP}", f"--san={KUBERNETES_SVC_IP}", *users, "--",
                "--bind-address=0.0.0.0", f"--advertise-address={CP_IP}", "--endpoint-reconciler-type=lease",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # the lab has no DNS for node names: logs/exec/port-forward go to the node's IP
                "--kubelet-preferred-address-types=InternalIP",
            ], log=cp / "kube-apiserver.log", cgroup=f"{self.cgroup}/cp")
            wait_for("kube-apiserver /readyz", self._readyz, timeout=120)
        server = f"https://{CP_IP}:{APISERVER_PORT}"
        for u in ("kube-controller-manager", "kube-scheduler", "kube-proxy"):
            self._kubeconfig(cp / f"{u}.kubeconfig", u, self.tokens[u], server)
        api = cp / "apiserver"
        self.cp_procs["kube-controller-manager"] = spawn([
            "nsenter", f"--net=/run/netns/{self.cp_ns}", "--", str(self.kube_bin), "kube-controller-manager",
            f"--kubeconfig={cp / 'kube-controller-manager.kubeconfig'}", "--leader-elect=false",
            f"--root-ca-file={api / 'ca.crt'}", f"--service-account-private-key-file={api / 'sa.key'}",
            "--use-service-account-credentials=false", "--allocate-node-cidrs=false",
            f"--cluster-cidr={POD_CIDR}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--bind-address=127.0.0.1", "--secure-port=10257", "--v=1",
        ], log=cp / "kube-controller-manager.log", cgroup=f"{self.cgroup}/cp")
        self.cp_procs["kube-scheduler"] = spawn([
            "nsenter", f"--net=/run/netns/{self.cp_ns}", "--", str(self.kube_bin), "kube-scheduler",
            f"--kubeconfig={cp / 'kube-scheduler.kubeconfig'}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=10259", "--v=1",
        ], log=cp / "kube-scheduler.log", cgroup=f"{self.cgroup}/cp")

    def _readyz(self) -> bool:
        proc = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
        return proc.returncode == 0 and proc.stdout.strip() == "ok"

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None,
                ) -> subprocess.CompletedProcess[str]:
        """kubectl (same release as the cluster) as the cluster admin, from the control-plane namespace."""
        env = {**os.environ, "KUBECONFIG": str(self.dir / "cp" / "admin.kubeconfig")}
        return run(["nsenter", f"--net=/run/netns/{self.cp_ns}", "--", str(self.kubectl_bin), *args],
                   check=check, timeout=timeout, input=input, env=env)

    def kget(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    # ---- nodes
    def _node_files(self, n: Node) -> None:
        d = n.dir
        for sub in ("lib/containerd", "lib/kubelet", "lib/cni", "lib/containerd-opt", "log", "cni", "tunables"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for key, value in KUBELET_TUNABLES.items():
            (d / "tunables" / key.replace("/", ".")).write_text(value + "\n")
        (d / "resolv.conf").write_text("# no upstream DNS in the lab\n")
        (d / "cni" / "10-l2lb-e2e.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "l2lb-e2e",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": n.pod_cidr, "gateway": n.gateway}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=1))
        (d / "containerd.toml").write_text(f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_REF}"
  disable_apparmor = true
  # no process on this machine has CAP_SYS_RESOURCE (not even in the bounding set), so nobody can
  # set an oom_score_adj below 0 (pause: -998): clamp to containerd's own, as rootless setups do
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d / 'cni'}"
    max_conf_num = 1
""")
        (d / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this machine has cgroup v1 only; kubelet >= 1.35 refuses it otherwise
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{n.cgroup}", "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "address": n.ip, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
            "clusterDomain": "cluster.local", "clusterDNS": [DNS_SVC_IP], "resolvConf": str(d / "resolv.conf"),
            "protectKernelDefaults": True, "failSwapOn": False, "maxPods": 28, "serializeImagePulls": False,
            # the "node" disk is this shared machine's: don't evict for what other jobs write
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        }, indent=1))
        self._kubeconfig(d / "kubelet.kubeconfig", f"node-{n.name}", self.tokens[f"node-{n.name}"],
                         f"https://{CP_IP}:{APISERVER_PORT}")
        (d / "kube-proxy.yaml").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.dir / "cp" / "kube-proxy.kubeconfig")},
            "hostnameOverride": n.name, "clusterCIDR": POD_CIDR, "detectLocalMode": "ClusterCIDR",
            "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
            # nf_conntrack_max is not writable in a network namespace: leave the sysctls as they are
            "conntrack": {"maxPerCore": 0, "min": 0},
        }, indent=1))

    def _holder_script(self, n: Node) -> str:
        d = n.dir
        binds = "\n".join(
            f"mount --bind -o ro {d / 'tunables' / key.replace('/', '.')} /proc/sys/{key}" for key in KUBELET_TUNABLES)
        return f"""set -e
hostname {n.name}
# sysfs of this network namespace (only the node's links), the cgroup hierarchies kept
mkdir -p {d}/.cg
mount --rbind /sys/fs/cgroup {d}/.cg
umount -l /sys
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --move {d}/.cg /sys/fs/cgroup
# the node's own /run (fresh at every boot), /var/lib and /var/log
mount -t tmpfs -o mode=0755,size=512m tmpfs /run
mount --bind {d}/lib /var/lib
mount --bind {d}/log /var/log
{binds}
echo ready
exec sleep 2147483647
"""

    def boot_node(self, n: Node) -> None:
        """Start the node's holder, containerd (+ image import on the first boot), kubelet, kube-proxy."""
        self.boot_runtime(n)
        if n.boots == 1 and self.node_root is None:
            self.import_images(n)
        self.boot_kubelet(n)

    def import_images(self, n: Node) -> None:
        for name, archive in self.images.items():
            t0 = time.monotonic()
            self.node_exec(n, ["ctr", "-n", "k8s.io", "images", "import", str(archive)], timeout=900)
            self.timing.steps[f"import_{n.name}_{name}"] = round(time.monotonic() - t0, 2)

    def boot_runtime(self, n: Node) -> None:
        """Power on: the namespace holder (mounts) and containerd."""
        n.boots += 1
        logs = n.dir / "logs"
        cgroup_make(n.cgroup)
        cgroup_make(f"{n.cgroup}/system")
        sys_cg = f"{n.cgroup}/system"
        holder = spawn_holder(["nsenter", f"--net=/run/netns/{n.ns}", "--", "unshare", "--mount", "--uts",
                               "--propagation", "slave", "--", "sh", "-ec", self._holder_script(n)],
                              log=logs / "holder.log", cgroup=sys_cg)
        n.holder = holder
        enter = ["nsenter", "-t", str(holder.pid), "--mount", "--uts", "--net", "--"]
        n.daemons["containerd"] = spawn([*enter, "containerd", "--config", str(n.dir / "containerd.toml")],
                                        log=logs / f"containerd.{n.boots}.log", cgroup=sys_cg)
        wait_for(f"{n.name} containerd", lambda: self.node_exec(n, ["ctr", "version"], check=False).returncode == 0,
                 timeout=60)

    def boot_kubelet(self, n: Node) -> None:
        assert self.kube_bin and n.holder is not None
        logs = n.dir / "logs"
        sys_cg = f"{n.cgroup}/system"
        enter = ["nsenter", "-t", str(n.holder.pid), "--mount", "--uts", "--net", "--"]
        n.daemons["kubelet"] = spawn([
            *enter, str(self.kube_bin), "kubelet", f"--config={n.dir / 'kubelet.yaml'}",
            f"--kubeconfig={n.dir / 'kubelet.kubeconfig'}", f"--node-ip={n.ip}", f"--hostname-override={n.name}",
            "--v=1",
        ], log=logs / f"kubelet.{n.boots}.log", cgroup=sys_cg)
        n.daemons["kube-proxy"] = spawn([*enter, str(self.kube_bin), "kube-proxy",
                                         f"--config={n.dir / 'kube-proxy.yaml'}", "--v=1"],
                                        log=logs / f"kube-proxy.{n.boots}.log", cgroup=sys_cg)

    def node_exec(self, n: Node, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command on a node (its network, mount and UTS namespaces)."""
        if n.holder is None or n.holder.poll() is not None:
            raise ClusterError(f"{n.name} is not running")
        return run(["nsenter", "-t", str(n.holder.pid), "--mount", "--uts", "--net", "--", *args], **kw)

    def kill_node(self, n: Node, *, cable: bool = True) -> int:
        """The node dies: every process of it (holder, containerd, shims, containers, kubelet,
        kube-proxy) SIGKILLed at once through its frozen cgroup subtree; its cable out too."""
        if cable:
            self.cable(n, False)
        killed = cgroup_kill(n.cgroup)
        for p in [n.holder, *n.daemons.values()]:
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)
        n.holder = None
        n.daemons.clear()
        return killed

    def restart_node(self, n: Node) -> None:
        """Power the node back on: a fresh /run, the same disks; then plug its cable back in."""
        # a reboot leaves no pod network namespaces, cni0 or pod veths behind
        run(["ip", "-n", n.ns, "link", "del", "cni0"], check=False)
        self.boot_node(n)
        self.cable(n, True)

    # ---- whole lifecycle
    def start(self, *, node_ready_timeout: float = 240.0) -> None:
        with self.timing.step("network"):
            self.start_network()
        self.start_control_plane()
        for n in self.nodes:
            self._node_files(n)
        from tests.e2e import noderoot

        if noderoot.enabled():  # every node's containerd root from the per-machine cache: no import
            with self.timing.step("node_root_cache"):
                self.node_root = noderoot.ensure_root(self.images, self.log)
            with self.timing.step("node_roots_link"):
                self._each_node(lambda n: noderoot.link_root(self.node_root, n.dir / "lib" / "containerd"))
        with self.timing.step("nodes_boot"):
            for n in self.nodes:
                self.boot_runtime(n)
        if self.node_root is None:
            with self.timing.step("image_import"):  # every node at once: I/O bound, ~1 GB per node
                self._each_node(self.import_images)
        with self.timing.step("kubelets_start"):
            for n in self.nodes:
                self.boot_kubelet(n)
        with self.timing.step("nodes_ready"):
            wait_for("every node Ready", self._all_nodes_ready, timeout=node_ready_timeout, interval=1.0)

    def _each_node(self, fn: Any) -> None:
        """``fn(node)`` for every node at once (threads; no process is spawned from them)."""
        errors: list[BaseException] = []

        def one(n: Node) -> None:
            try:
                fn(n)
            except BaseException as e:  # re-raised below, in the main thread
                errors.append(e)
        threads = [threading.Thread(target=one, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _all_nodes_ready(self) -> bool:
        nodes = self.kget("nodes")["items"]
        ready = {
            item["metadata"]["name"] for item in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in item["status"].get("conditions", []))
        }
        return ready == {n.name for n in self.nodes}

    def destroy(self) -> None:
        """Remove everything, even after a failure: processes (by cgroup), cgroups, namespaces, files."""
        for n in self.nodes:
            with contextlib.suppress(ClusterError):
                cgroup_kill(n.cgroup)
        for p in self.cp_procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.cp_procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(25)
        cgroup_remove(self.cgroup)
        for n in self.nodes:
            for p in [n.holder, *n.daemons.values()]:
                if p is not None and p.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(5)
        for ns in reversed(self._made):
            netns_del(ns)
        self._made.clear()
        if os.environ.get("L2LB_E2E_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


def spawn_holder(argv: Sequence[str], *, log: Path, cgroup: str, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start a node's namespace holder and wait until it printed "ready" (its mounts are in place)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    errf = open(log, "ab")  # noqa: SIM115 (handed to the child)
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                                preexec_fn=_pdeathsig_and_cgroup(cgroup),  # noqa: PLW1509 (main thread only)
                                start_new_session=True)
    finally:
        errf.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline and b"ready" not in buf:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            buf += chunk
    if b"ready" not in buf:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
        raise ClusterError(f"node holder did not come up: {log.read_text()[-2000:]}")
    proc.stdout.close()
    return proc


def sweep_stale() -> list[str]:
    """Remove what killed runs left (their owner pid is gone): processes, cgroups, namespaces, files."""
    gone: list[str] = []
    owners: set[str] = set()
    for ns in netns_list():
        if ns.startswith(PREFIX_ROOT) and len(ns) >= 9:
            owners.add(ns[:7])
    with contextlib.suppress(OSError):
        for h in cgroup_hierarchies():
            for d in h.glob("l2lb-e2e-k8*"):
                owners.add(d.name.removeprefix("l2lb-e2e-"))
    if WORK_ROOT.is_dir():
        owners.update(p.name for p in WORK_ROOT.iterdir() if p.name.startswith(PREFIX_ROOT))
    for prefix in owners:
        if not all(c in _DIGITS for c in prefix[2:]) or len(prefix) != 7:
            continue
        if os.path.exists(f"/proc/{int(prefix[2:], 36)}"):
            continue
        with contextlib.suppress(ClusterError):
            cgroup_remove(f"l2lb-e2e-{prefix}")
        for ns in netns_list():
            if ns.startswith(prefix):
                netns_del(ns)
        shutil.rmtree(WORK_ROOT / prefix, ignore_errors=True)
        gone.append(prefix)
    return gone
