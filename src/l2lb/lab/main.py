"""``l2lb lab``: a whole l2lb cluster on one machine, real ARP from a client, a measured failover.

Topology (all in network namespaces the lab creates; nothing is added to the root namespace):

    <prefix>sw   a bridge ("the LAN switch")
    <prefix>ctl  198.51.100.2    control plane: redis-server, API server, allocator, leases
    <prefix>n1.. 198.51.100.11+  nodes: one announcer each, LAN interface named enp0s25 (the seed's)
    <prefix>cli  198.51.100.100  a LAN client that resolves the VIPs (2001:db8::100, plus an on-link
                                 address in every IPv6 pool's prefix: l2lb.lab.onlink)

Every service is the same process production runs (``l2lb allocator|leases|announcer``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2lb.adapters.kube.client import RESOURCES, KubeClient
from l2lb.core.models import ParseError, Pool
from l2lb.core.parse import is_pool, parse_pool
from l2lb.lab import manifests, netns
from l2lb.lab.neigh import NeighWatcher
from l2lb.lab.onlink import OnLink, for_vip, plan
from l2lb.lab.probe import ArpProber, prober_for
from l2lb.lab.procs import Supervisor, python_cli, wait_http_ready

CTL_IP = "198.51.100.2"
CLIENT_IP = "198.51.100.100"
CLIENT_IP6 = "2001:db8::100"
# the LAN's own IPv6 prefix: the client's address and the raw NDP prober's (owned by nobody)
LAN6 = OnLink(ipaddress.IPv6Network("2001:db8::/64"), ipaddress.IPv6Address(CLIENT_IP6),
              ipaddress.IPv6Address("2001:db8::101"))
LAN_IF = "enp0s25"
API_PORT = 6443
REDIS_PORT = 6379
ALLOC_HTTP = 9101
LEASES_HTTP = 9102
ANN_HTTP = 9103


def repo_root() -> Path | None:
    for p in Path(__file__).resolve().parents:
        if (p / "k8s" / "crds").is_dir() and (p / "tests" / "fixtures").is_dir():
            return p
    return None


def node_ip(i: int) -> str:
    return f"198.51.100.{10 + i}"


def node_ip6(i: int) -> str:
    return f"2001:db8::{10 + i:x}"


class Progress:
    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.monotonic()
        self.quiet = quiet

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    @contextlib.contextmanager
    def step(self, msg: str) -> Any:
        t = time.monotonic()
        self.say(f"{msg} ...")
        yield
        self.say(f"{msg}: done in {time.monotonic() - t:.1f}s")


@dataclass
class Lab:
    args: argparse.Namespace
    workdir: Path
    topo: netns.Topology
    sup: Supervisor
    progress: Progress
    kubeconfig: Path = field(init=False)
    report: dict[str, Any] = field(default_factory=dict)
    onlinks: list[OnLink] = field(default_factory=lambda: [LAN6])

    def __post_init__(self) -> None:
        self.kubeconfig = self.workdir / "kubeconfig"

    @property
    def redis_url(self) -> str:
        return f"redis://{CTL_IP}:{REDIS_PORT}/0"

    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(1, self.args.nodes + 1)]

    def mac_to_node(self) -> dict[str, str]:
        return {h.mac: name for name, h in self.topo.hosts.items() if name.startswith("node-")}

    # -- building -------------------------------------------------------------------------------
    def build_network(self) -> None:
        # every host at the kernel's default ARP sysctls (arp_accept=0): the client sees the VIP
        # move only the way an untuned LAN client does (a gratuitous ARP updates an existing entry)
        self.topo.add_host("ctl", ifname="eth0", addrs=[f"{CTL_IP}/24", "2001:db8::2/64"], arp_accept=False)
        for i, name in enumerate(self.node_names(), start=1):
            self.topo.add_host(name, ifname=LAN_IF, addrs=[f"{node_ip(i)}/24", f"{node_ip6(i)}/64"],
                               arp_accept=False)
        self.topo.add_host("client", ifname="eth0", addrs=[f"{CLIENT_IP}/24", f"{CLIENT_IP6}/64"],
                           arp_accept=False)

    def setup_onlink(self, docs: list[dict[str, Any]]) -> list[str]:
        """Give the client an address in every IPv6 pool's prefix (and the nodes a route to it, as a
        LAN's router advertisement would); returns lines for the user."""
        pools: list[Pool] = []
        for d in docs:
            if is_pool(d):
                with contextlib.suppress(ParseError):  # the allocator reports bad pools (Event, condition)
                    pools.append(parse_pool(d))
        new, notes = plan(pools, self.onlinks)
        client = self.topo.hosts["client"]
        for o in new:
            client.exec(["ip", "-6", "addr", "add", o.client_interface, "dev", "eth0", "nodad"])
            notes.append(f"client: {o.client_interface} on-link for the IPv6 pool prefix {o.network} "
                         f"(NDP prober source {o.prober})")
        self.onlinks += new
        for name in self.node_names():
            self.restore_ipv6(name)
        return notes

    def restore_ipv6(self, name: str) -> None:
        """A node's IPv6 addresses and its routes to the pool prefixes. Taking a link down in Linux
        (``ip link set down``) drops both (net.ipv6.conf.*.keep_addr_on_down=0), where pulling a cable
        drops neither: a link-down round puts them back when it heals."""
        h = self.topo.hosts[name]
        for a in h.addrs:
            if ":" in a:
                h.exec(["ip", "-6", "addr", "replace", a, "dev", h.ifname, "nodad"])
        for o in self.onlinks[1:]:
            h.exec(["ip", "-6", "route", "replace", str(o.network), "dev", h.ifname])

    async def start_control_plane(self) -> None:
        ctl = self.topo.hosts["ctl"].ns
        redis = shutil.which("redis-server") or "redis-server"
        await self.sup.start("redis", [redis, "--bind", CTL_IP, "127.0.0.1", "--port", str(REDIS_PORT),
                                       "--save", "", "--appendonly", "no", "--protected-mode", "no",
                                       "--dir", str(self.workdir)], ns=ctl)
        cli = python_cli()
        api = await self.sup.start("apiserver", [*cli, "apiserver", "--host", CTL_IP, "--port", str(API_PORT),
                                                 "--kubeconfig-out", str(self.kubeconfig)], ns=ctl)
        await wait_http_ready(f"http://{CTL_IP}:{API_PORT}/readyz", api, timeout=30)

    def common(self, http_port: int, host: str) -> list[str]:
        return ["--redis", self.redis_url, "--http-host", host, "--http-port", str(http_port),
                "--log-format", "json" if self.args.json_logs else "text"]

    async def start_services(self) -> None:
        ctl = self.topo.hosts["ctl"].ns
        cli = python_cli()
        kube = ["--kubeconfig", str(self.kubeconfig), "--namespace", "l2lb-system"]
        alloc = await self.sup.start("allocator", [*cli, "allocator", *kube, *self.common(ALLOC_HTTP, CTL_IP)],
                                     ns=ctl)
        leases = await self.sup.start("leases", [*cli, "leases", *kube, *self.common(LEASES_HTTP, CTL_IP)], ns=ctl)
        anns = []
        for i, name in enumerate(self.node_names(), start=1):
            anns.append((name, i, await self.start_announcer(name, i)))
        await wait_http_ready(f"http://{CTL_IP}:{ALLOC_HTTP}/readyz", alloc)
        await wait_http_ready(f"http://{CTL_IP}:{LEASES_HTTP}/readyz", leases)
        for _name, i, p in anns:
            await wait_http_ready(f"http://{node_ip(i)}:{ANN_HTTP}/readyz", p)

    def peer_key_file(self) -> Path:
        """The announcers' shared peer key (as k8s gives it from a Secret): made once per lab."""
        path = self.workdir / "peer.key"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path

    def peer_args(self) -> list[str]:
        """The announcers' LAN peer options: the shared key, or ``--no-peers`` when the lab's args ask for
        the behaviour without peer heartbeats (the baseline of the failover benchmarks)."""
        if getattr(self.args, "no_peers", False):
            return ["--no-peers"]
        return ["--peer-key-file", str(self.peer_key_file())]

    async def start_announcer(self, name: str, i: int) -> Any:
        ns = self.topo.hosts[name].ns
        return await self.sup.start(
            f"announcer-{name}",
            [*python_cli(), "announcer", "--node", name, "--interfaces", LAN_IF,
             "--node-labels", f"kubernetes.io/hostname={name}", *self.peer_args(),
             *self.common(ANN_HTTP, node_ip(i))],
            ns=ns,
        )

    async def apply_manifests(self, client: KubeClient) -> list[str]:
        root = repo_root()
        crd_dir = root / "k8s" / "crds" if root else None
        paths: list[Path] = []
        if crd_dir and crd_dir.is_dir():
            paths.append(crd_dir)
        docs = manifests.load_documents(paths)
        done = await manifests.apply(client, docs)
        await asyncio.sleep(0.2)  # CRDs become served
        ns_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "l2lb-system"}}
        node_docs = [{"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}} for n in self.node_names()]
        done += await manifests.apply(client, [ns_doc, *node_docs])
        user = [Path(p) for p in self.args.manifests] if self.args.manifests else [self.default_manifests()]
        user_docs = manifests.load_documents(user)
        done += await manifests.apply(client, user_docs)
        return done + self.setup_onlink(user_docs)

    def default_manifests(self) -> Path:
        root = repo_root()
        if root is None:
            raise SystemExit("l2lb lab: run it from an l2lb checkout (needs tests/fixtures/lab and k8s/crds), "
                             "or pass --manifests DIR")
        return root / "tests" / "fixtures" / "lab"

    async def wait_for_ips(self, client: KubeClient, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            lst = await client.list(RESOURCES["services"])
            svcs = [s for s in lst.get("items", []) if (s.get("spec") or {}).get("type") == "LoadBalancer"]
            pending = [s for s in svcs if not ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress")]
            if svcs and not pending:
                return svcs
            if time.monotonic() > deadline:
                names = ", ".join(f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in pending)
                conds = {f"{s['metadata']['name']}": (s.get("status") or {}).get("conditions") for s in pending}
                raise RuntimeError(f"Services without an IP after {timeout:.0f} s: {names or 'none found'}; "
                                   f"conditions: {json.dumps(conds)}; see {self.sup.logdir}/allocator.log")
            self.sup.check_alive()
            await asyncio.sleep(0.2)

    async def bring_up(self) -> list[dict[str, Any]]:
        """Start everything (call inside the control-plane namespace); returns the LB Services."""
        progress = self.progress
        with progress.step("starting redis-server and the API server"):
            await self.start_control_plane()
        client = await KubeClient.create(str(self.kubeconfig), qps=50, burst=100, user_agent="l2lb-lab")
        try:
            with progress.step("applying CRDs, nodes and manifests"):
                for line in await self.apply_manifests(client):
                    progress.say(f"  {line}")
            with progress.step("starting allocator, leases and one announcer per node"):
                await self.start_services()
            with progress.step("waiting for every LoadBalancer Service to get an IP"):
                return await self.wait_for_ips(client, self.args.timeout)
        finally:
            await client.close()

    # -- observing from the client -------------------------------------------------------------
    def probe_source(self, vip: str) -> str | None:
        """The client-side source address that asks for ``vip`` (None: the VIP is not on the client's LAN)."""
        if ":" not in vip:
            return CLIENT_IP
        o = for_vip(vip, self.onlinks)
        return None if o is None else str(o.prober)

    def make_prober(self, vip: str, interval_s: float) -> ArpProber:
        src = self.probe_source(vip)
        if src is None:
            raise RuntimeError(f"{vip} is in no prefix the lab's client has on-link (only 2001:db8::/32 is used)")
        return prober_for(self.topo.hosts["client"].ns, "eth0", src, vip, interval_s=interval_s)

    async def who_answers(self, vip: str, seconds: float = 0.3) -> list[str]:
        prober = self.make_prober(vip, 0.02)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        try:
            tl = await prober.run(stop, max_seconds=seconds + 1)
        finally:
            prober.close()
        return tl.macs()

    async def wait_announced(self, vip: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            macs = await self.who_answers(vip)
            if len(macs) == 1:
                return macs[0]
            self.sup.check_alive()
        raise RuntimeError(f"no single node answers {'NDP' if ':' in vip else 'ARP'} for {vip} after {timeout:.0f} s "
                           f"(see {self.sup.logdir}/leases.log and announcer-*.log)")

    def kick_neighbour(self, vip: str) -> None:
        """Make the client's kernel resolve ``vip``: one UDP datagram to its discard port (no reply needed)."""
        fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
        with netns.entered(self.topo.hosts["client"].ns):
            s = socket.socket(fam, socket.SOCK_DGRAM)
        with s, contextlib.suppress(OSError):
            s.sendto(b"l2lb-lab", (vip, 9))

    def kernel_neigh(self, vip: str) -> str:
        return self.topo.hosts["client"].exec(["ip", "neigh", "show", vip], check=False).stdout.strip()

    async def wait_kernel_entry(self, vip: str, timeout: float = 2.0) -> str:
        """Resolve ``vip`` in the client's kernel; returns the ``ip neigh`` line (bounded wait)."""
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            self.kick_neighbour(vip)
            await asyncio.sleep(0.05)
            line = self.kernel_neigh(vip)
            if "lladdr" in line:
                break
        return line

    async def client_kernel_view(self, vip: str) -> dict[str, str]:
        client = self.topo.hosts["client"]
        if self.probe_source(vip) is None:
            return {"neigh": "", "note": "not on the client's LAN"}
        client.exec(["ip", "neigh", "flush", "to", vip], check=False)
        out = {"neigh": await self.wait_kernel_entry(vip)}
        if ":" in vip:
            if shutil.which("ndisc6"):
                nd = client.exec(["ndisc6", "-m", "-n", "-r", "2", "-w", "500", vip, "eth0"], check=False, timeout=10)
                macs = re.findall(r"Target link-layer address:\s*([0-9A-Fa-f:]{17})", nd.stdout)
                # -m prints every NA for the target in the wait (unsolicited ones too): one line per MAC
                uniq = list(dict.fromkeys(m.lower() for m in macs))
                out["ndisc6"] = " / ".join(uniq) or (nd.stdout.strip().splitlines() or ["no answer"])[-1]
        elif shutil.which("arping"):
            ar = client.exec(["arping", "-c", "2", "-w", "3", "-I", "eth0", vip], check=False, timeout=10)
            out["arping"] = " / ".join(line.strip() for line in ar.stdout.splitlines() if "reply" in line.lower()
                                       or "bytes from" in line.lower())
        return out

    # -- failover ------------------------------------------------------------------------------
    def failover_vips(self, vips: dict[str, list[str]]) -> list[str]:
        """One IPv4 VIP (a shared one if any: the Pi-hole's) and one IPv6 VIP on the client's LAN."""
        out = []
        for v6 in (False, True):
            fam = [v for v in vips if (":" in v) == v6 and self.probe_source(v) is not None]
            if fam:
                out.append(next((v for v in fam if len(vips[v]) > 1), fam[0]))
        return out

    async def failover_round(self, vip: str, how: str) -> dict[str, Any]:
        """One failover of ``vip`` by ``how`` (kill | linkdown), probed from the client every --probe-ms.

        For an IPv6 VIP the client's kernel also holds an entry for it (resolved before the fault) and
        the round records when that entry moved to the new node's MAC (``kernel_switch_ms``): the
        prober's own answers never reach the kernel, so only the new node's unsolicited NA can move it.
        """
        macs = self.mac_to_node()
        old_mac = await self.wait_announced(vip, 15)
        old_node = macs.get(old_mac, "?")
        v6 = ":" in vip
        before = await self.wait_kernel_entry(vip) if v6 else ""
        watcher = NeighWatcher(self.topo.hosts["client"].ns, vip) if v6 else None
        prober = self.make_prober(vip, self.args.probe_ms / 1000)
        stop = asyncio.Event()
        task: asyncio.Task[Any] | None = None
        try:
            if watcher is not None:
                watcher.attach()
            task = asyncio.create_task(prober.run(stop, max_seconds=self.args.round_timeout + 5))
            await asyncio.sleep(0.5)  # baseline answers from the old node
            t_fault = time.monotonic()
            await self.inject(how, old_node)
            # wait for a new MAC (bounded), then keep probing a little to catch any dual answering
            deadline = t_fault + self.args.round_timeout
            while time.monotonic() < deadline:
                if any(a.mac != old_mac and a.kind == "reply" and a.t > t_fault for a in prober.timeline.answers):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)
            stop.set()
            tl = await task
            res: dict[str, Any] = dict(tl.failover(old_mac, t_fault))
            res.update({"how": how, "family": 6 if v6 else 4, "old_node": old_node,
                        "new_node": macs.get(str(res["new_mac"]), None),
                        "probes_sent": tl.sent, "probe_interval_ms": self.args.probe_ms})
            res["neigh_after"] = self.kernel_neigh(vip)
            if watcher is not None:
                watcher.detach()
                new_mac = res["new_mac"]
                ev = watcher.first_with_mac(str(new_mac), t_fault) if new_mac else None
                res["kernel_before"] = before
                res["kernel_switch_ms"] = None if ev is None else (ev.t - t_fault) * 1000
                res["kernel_events"] = [{"ms": round((e.t - t_fault) * 1000, 1), "mac": e.mac, "state": e.state}
                                        for e in watcher.events]
                new_answers = [a for a in tl.answers if a.mac == new_mac]
                res["na_flags"] = {kind: sorted({a.flags for a in new_answers if a.kind == kind
                                                 and a.flags is not None}) for kind in ("reply", "garp")}
        finally:
            stop.set()
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            prober.close()
            if watcher is not None:
                watcher.close()
        # heal, then check the IP does not flap back
        await self.heal(how, old_node)
        await asyncio.sleep(1.0)
        after = await self.who_answers(vip, 0.5)
        res["after_heal"] = [macs.get(m, m) for m in after]
        res["flapped_back"] = bool(after) and after[0] == old_mac
        return res

    def status_urls(self) -> tuple[str, str]:
        """(allocator, leases) status API base URLs, reachable from the control-plane namespace."""
        return f"http://{CTL_IP}:{ALLOC_HTTP}", f"http://{CTL_IP}:{LEASES_HTTP}"

    async def inject(self, how: str, node: str) -> None:
        """The fault of a failover round ("kill": SIGKILL of the node's announcer; "linkdown")."""
        if how == "kill":
            await self.sup.kill(f"announcer-{node}")
        elif how == "linkdown":
            self.topo.hosts[node].link(False)
        else:
            raise RuntimeError(f"unknown failover round {how!r} (kill, linkdown; node with --colocated)")

    async def heal(self, how: str, node: str) -> None:
        if how == "kill":
            i = self.node_names().index(node) + 1
            p = await self.start_announcer(node, i)
            await wait_http_ready(f"http://{node_ip(i)}:{ANN_HTTP}/readyz", p)
        else:
            self.topo.hosts[node].link(True)
            self.restore_ipv6(node)


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


async def run(args: argparse.Namespace) -> int:
    ok, why = netns.have_privileges()
    if not ok:
        print(f"l2lb lab: {why}", file=sys.stderr)
        return 2
    for tool, pkg in (("redis-server", "redis-server"), ("arping", "iputils-arping"), ("ping", "iputils-ping")):
        if shutil.which(tool) is None:
            print(f"l2lb lab: '{tool}' is missing: apt-get install {pkg} (or run: bash scripts/dev l2lb lab)",
                  file=sys.stderr)
            return 2
    if repo_root() is None and not args.manifests:
        print("l2lb lab: run it from an l2lb checkout or pass --manifests DIR", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="l2lb-lab-"))
    workdir.mkdir(parents=True, exist_ok=True)
    progress = Progress(args.quiet)
    swept = netns.sweep(args.prefix)
    if swept:
        progress.say(f"removed leftovers of an earlier lab: {', '.join(swept)}")
    from l2lb.lab.placement import PlacementError, make_lab

    try:
        lab = make_lab(args, workdir, netns.Topology(args.prefix), Supervisor(workdir / "logs"), progress)
    except PlacementError as e:
        print(f"l2lb lab: {e}", file=sys.stderr)
        return 2
    rc = 1
    try:
        rc = await _run(lab)
    finally:
        if not args.keep or rc != 0:
            with progress.step("cleaning up (processes, namespaces)"):
                forced = await lab.sup.stop_all()
                lab.topo.destroy()
                leftovers = [n for n in netns.list_namespaces() if n.startswith(args.prefix)]
                lab.report["cleanup"] = {"forced_kill": forced, "leftover_namespaces": leftovers}
                if leftovers:
                    print(f"l2lb lab: namespaces left behind: {leftovers}", file=sys.stderr)
                    rc = rc or 1
        if args.json_report:
            Path(args.json_report).write_text(json.dumps(lab.report, indent=2, default=str))
    return rc


async def _run(lab: Lab) -> int:
    args, progress = lab.args, lab.progress
    lab.report["workdir"] = str(lab.workdir)
    with progress.step(f"building the network: bridge, control plane, {args.nodes} nodes, a client"):
        lab.build_network()
    placement = getattr(lab, "placement", None)
    if placement is not None:
        progress.say(f"co-located placement: {placement.describe()} "
                     f"(the API server stays in {lab.topo.hosts['ctl'].ns})")
        lab.report["placement"] = placement.describe()
    ctl_ns = lab.topo.hosts["ctl"].ns
    with netns.entered(ctl_ns):  # the orchestrator talks to the cluster from the control-plane namespace
        svcs = await lab.bring_up()
        vips: dict[str, list[str]] = {}
        rows_src: list[tuple[str, str, str]] = []
        for s in svcs:
            key = f"{s['metadata']['namespace']}/{s['metadata']['name']}"
            ports = ",".join(f"{p.get('protocol', 'TCP')}/{p['port']}" for p in s["spec"].get("ports", []))
            for ing in s["status"]["loadBalancer"]["ingress"]:
                vips.setdefault(ing["ip"], []).append(key)
                rows_src.append((key, ing["ip"], ports))
        holders: dict[str, str] = {}
        with progress.step("asking the LAN (ARP and NDP from the client) who answers for each IP"):
            macs = lab.mac_to_node()
            for vip in vips:
                if lab.probe_source(vip) is None:
                    holders[vip] = "(not on the client's LAN)"
                    continue
                mac = await lab.wait_announced(vip, args.timeout)
                holders[vip] = macs.get(mac, mac)
        print()
        print_table([[k, ip, holders.get(ip, "?"), ports] for k, ip, ports in rows_src],
                    ["SERVICE", "IP", "ANNOUNCED BY", "PORTS"])
        print()
        lab.report["services"] = [{"service": k, "ip": ip, "node": holders.get(ip), "ports": p}
                                  for k, ip, p in rows_src]
        views = {}
        for vip in vips:
            views[vip] = await lab.client_kernel_view(vip)
            tool = "ndisc6" if ":" in vip else "arping"
            progress.say(f"client kernel: {views[vip]['neigh'] or views[vip].get('note') or '(no neighbour entry)'}"
                         + (f"; {tool}: {views[vip][tool]}" if views[vip].get(tool) else ""))
        lab.report["client_view"] = views
        targets = lab.failover_vips(vips)
        if not targets:
            raise RuntimeError("no VIP on the client's LAN to fail over")
        rounds = []
        for how in args.rounds.split(","):
            what = {"kill": "SIGKILL of the announcer", "linkdown": "link down",
                    "node": "node death (cable out + SIGKILL of every process on the node)"}.get(how, how)
            for vip in targets:
                with progress.step(f"failover by {what} for {vip}, client probing with "
                                   f"{'NDP' if ':' in vip else 'ARP'} every {args.probe_ms} ms"):
                    r = await lab.failover_round(vip, how)
                rounds.append(r)
                progress.say(
                    f"  {r['old_node']} -> {r['new_node']}: last answer from old MAC at "
                    f"{_ms(r['last_old_answer_ms'])}, first from new MAC at {_ms(r['first_new_answer_ms'])}, "
                    f"client-observed outage {_ms(r['outage_ms'])}, dual answering {_ms(r['dual_ms'])}; "
                    f"after heal: {r['after_heal']} (flapped back: {r['flapped_back']})")
                if "kernel_switch_ms" in r:
                    progress.say(f"  client kernel moved to the new MAC at {_ms(r['kernel_switch_ms'])} "
                                 f"(unsolicited NA first seen at {_ms(r['first_garp_ms'])}); NA flags of the new "
                                 f"node: solicited {_na_flags(r['na_flags']['reply'])}, unsolicited "
                                 f"{_na_flags(r['na_flags']['garp'])}")
                progress.say(f"  client neighbour entry now: {r['neigh_after']}")
        lab.report["failovers"] = rounds
        print()
        print_table([[r["how"], str(r["vip"]), str(r["old_node"]), str(r["new_node"]), _ms(r["outage_ms"]),
                      _ms(r["dual_ms"]), _ms(r["kernel_switch_ms"]) if "kernel_switch_ms" in r else "-"]
                     for r in rounds], ["FAULT", "IP", "FROM", "TO", "OUTAGE", "DUAL", "KERNEL"])
        print()
        failed = [r for r in rounds if r["outage_ms"] is None or r["new_node"] is None]
        if args.keep:
            alloc_url, leases_url = lab.status_urls()
            print(f"The lab keeps running. Logs: {lab.sup.logdir}. Look at it with:\n"
                  f"  sudo ip netns exec {ctl_ns} l2lb status --allocator {alloc_url} --leases {leases_url}\n"
                  f"  status page: sudo ip netns exec {ctl_ns} curl {leases_url}/\n"
                  f"  sudo ip netns exec {ctl_ns} kubectl --kubeconfig {lab.kubeconfig} get svc -A\n"
                  f"Remove it with: sudo l2lb lab --cleanup --prefix {args.prefix}")
        return 1 if failed else 0


def _na_flags(seen: list[int]) -> str:
    """NA flag sets as RFC 4861 names them, e.g. [0x60] -> "S+O" ("none seen" when empty)."""
    names = [("R", 0x80), ("S", 0x40), ("O", 0x20)]
    return " / ".join("+".join(n for n, bit in names if f & bit) or "none" for f in seen) or "none seen"


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.0f} ms"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="l2lb lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=3, help="number of node namespaces (default 3)")
    p.add_argument("--manifests", action="append", help="YAML file or directory to apply (default: the seed's, "
                   "with the LAN range mapped to TEST-NET); repeatable")
    p.add_argument("--rounds", help="failover rounds to run (comma list): kill, linkdown, and with --colocated node "
                   "(node death) (default kill,linkdown; with --colocated kill,linkdown,node)")
    p.add_argument("--probe-ms", type=float, default=10.0, help="client ARP probe interval (default 10 ms)")
    p.add_argument("--round-timeout", type=float, default=10.0, help="give up on a failover after this many s")
    p.add_argument("--timeout", type=float, default=60.0, help="bound for each wait (default 60 s)")
    p.add_argument("--prefix", default="l2lab", help="name prefix for namespaces (<= 6 chars; default l2lab)")
    p.add_argument("--workdir", help="where logs and the kubeconfig go (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    p.add_argument("--cleanup", action="store_true", help="only remove a lab left running by --keep")
    p.add_argument("--json-report", help="write the measured results as JSON to this file")
    p.add_argument("--json-logs", action="store_true", help="services log JSON lines")
    p.add_argument("--quiet", action="store_true")
    from l2lb.lab.placement import add_colocated_args

    add_colocated_args(p)
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = "kill,linkdown,node" if args.colocated else "kill,linkdown"
    if "node" in args.rounds.split(",") and not args.colocated:
        p.error("the 'node' round needs --colocated (a node death takes the control plane's pieces with it)")
    if args.nodes < 2:
        p.error("--nodes must be at least 2 (a failover needs somewhere to go)")
    if args.cleanup:
        _kill_lab_processes(args.prefix)
        gone = netns.sweep(args.prefix)
        print(f"removed: {', '.join(gone) or 'nothing'}")
        return 0
    main_task: asyncio.Task[int] | None = None

    async def runner() -> int:
        nonlocal main_task
        main_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: main_task.cancel() if main_task else None)
        try:
            return await run(args)
        except asyncio.CancelledError:
            print("l2lb lab: interrupted; cleaned up", file=sys.stderr)
            return 130

    try:
        return asyncio.run(runner())
    except (RuntimeError, manifests.ManifestError) as e:
        print(f"l2lb lab: {e}", file=sys.stderr)
        return 1


def _kill_lab_processes(prefix: str) -> None:
    """Processes started by a kept lab run inside its namespaces: kill what is left in them."""
    for ns in netns.list_namespaces():
        if ns.startswith(prefix):
            pids = netns.run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                netns.run(["kill", "-9", pid], check=False)
