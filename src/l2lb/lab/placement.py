"""Where the lab runs l2lb's pieces: the control-plane namespace, or inside the node namespaces.

``l2lb lab`` historically runs redis-server, allocator and leases in their own ``ctl`` namespace that
no fault ever takes down. In a real cluster they are pods on the same nodes as the announcers, so a
node that dies takes them with it. :class:`ColocatedLab` places them the way k8s/base's scheduling
would (:meth:`Placement.k8s`):

* Redis: the StatefulSet's pods -- one (single-node mode, the k8s/base default today) or, with
  ``ha``, one per node for the first three nodes (pod 0 the initial master, the others replicas) with a
  Sentinel beside each;
* allocator and leases: their Deployments' 2 replicas each, on distinct nodes (pod anti-affinity),
  one active (Kubernetes Lease) and one warm standby;
* announcer: one per node (DaemonSet);
* the **API server stays in the control-plane namespace** (``ctl``): in a real cluster it lives on
  control-plane nodes the lab does not model; every service reaches it over the LAN bridge.

A *node death* (:meth:`ColocatedLab.node_death`) takes the node's cable out (switch side, so no
frame -- not even a FIN or RST of a dying socket -- leaves it) and SIGKILLs every process of that
node at the same instant; :meth:`ColocatedLab.node_return` is its reboot (link back, every process
started again the way kubelet restarts the node's pods; a Redis that comes back while Sentinel has
promoted another one starts as that master's replica, as the k8s/base start script does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2lb.lab import netns
from l2lb.lab.main import ANN_HTTP, API_PORT, CTL_IP, Lab, node_ip
from l2lb.lab.procs import Proc, python_cli, wait_http_ready

REDIS_PORT = 6379
SENTINEL_PORT = 26379
SENTINEL_SERVICE = "l2lb"
ALLOC_BASE_HTTP = 9101
LEASES_BASE_HTTP = 9102
COMPONENTS = ("redis", "sentinel", "allocator", "leases")
# the leader-election Lease timings the services default to (k8s/base does not override them)
LE_FAST = ["--le-lease-duration", "2", "--le-renew-deadline", "1.5", "--le-retry-period", "0.3"]


class PlacementError(ValueError):
    """A placement spec that cannot be used (the message says what to fix)."""


def _letters(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i]


@dataclass(frozen=True)
class Placement:
    """Host ("ctl" or "node-N") of every replica of each component; redis[0] is the initial master."""

    redis: tuple[str, ...]
    sentinels: tuple[str, ...] = ()
    allocator: tuple[str, ...] = ("ctl",)
    leases: tuple[str, ...] = ("ctl",)

    @property
    def ha(self) -> bool:
        return bool(self.sentinels)

    @classmethod
    def k8s(cls, nodes: int, *, ha: bool = False) -> Placement:
        """What k8s/base's scheduling gives on ``nodes`` equal nodes.

        Replicas of one component land on distinct nodes (anti-affinity); across components the
        scheduler may pick any such layout, and this one is chosen so that every measured case
        exists: node-1 can hold the Redis master and both leaderships at once, node-2 holds only an
        allocator replica, node-3 only a leases replica (each can be made to hold nothing at all).
        """
        if nodes < 2:
            raise PlacementError("a co-located placement needs at least 2 nodes")
        n = [f"node-{i}" for i in range(1, nodes + 1)]
        third = n[2] if nodes >= 3 else n[1]
        if ha:
            if nodes < 3:
                raise PlacementError("Redis with Sentinel needs at least 3 nodes (a majority of sentinels "
                                     "must survive a node death); use the single-node Redis for 2 nodes")
            return cls(redis=tuple(n[:3]), sentinels=tuple(n[:3]), allocator=(n[0], n[1]), leases=(n[0], third))
        return cls(redis=(n[0],), allocator=(n[0], n[1]), leases=(n[0], third))

    @classmethod
    def control_plane(cls, *, standbys: bool = True) -> Placement:
        """Everything in the control-plane namespace (the classic lab), with standbys by default."""
        two = ("ctl", "ctl") if standbys else ("ctl",)
        return cls(redis=("ctl",), allocator=two, leases=two)

    @classmethod
    def parse(cls, spec: str, nodes: int) -> Placement:
        """``redis=1,2,3;sentinel=1,2,3;allocator=1,2;leases=1,3`` (node numbers or ``ctl``)."""
        known = {f"node-{i}" for i in range(1, nodes + 1)} | {"ctl"}
        parts: dict[str, tuple[str, ...]] = {}
        for item in filter(None, (s.strip() for s in spec.split(";"))):
            key, sep, val = item.partition("=")
            key = key.strip()
            if not sep or key not in COMPONENTS:
                raise PlacementError(f"placement item {item!r}: expected one of {', '.join(COMPONENTS)}=HOSTS")
            hosts = []
            for h in filter(None, (x.strip() for x in val.split(","))):
                host = h if h == "ctl" or h.startswith("node-") else f"node-{h}"
                if host not in known:
                    raise PlacementError(f"placement {key}: no host {h!r} (nodes are 1..{nodes}, or ctl)")
                hosts.append(host)
            parts[key] = tuple(hosts)
        if not parts.get("redis"):
            raise PlacementError("placement needs redis=HOSTS")
        for key in ("allocator", "leases"):
            if not parts.get(key):
                raise PlacementError(f"placement needs {key}=HOSTS")
        if len(set(parts["redis"])) != len(parts["redis"]):
            raise PlacementError("two Redis replicas on one host (they would share port 6379)")
        if len(set(parts.get("sentinel", ()))) != len(parts.get("sentinel", ())):
            raise PlacementError("two sentinels on one host")
        if len(parts["redis"]) > 1 and not parts.get("sentinel"):
            raise PlacementError("Redis replicas without sentinels: nobody would promote a replica")
        return cls(redis=parts["redis"], sentinels=parts.get("sentinel", ()), allocator=parts["allocator"],
                   leases=parts["leases"])

    def describe(self) -> str:
        s = f"redis={','.join(self.redis)}"
        if self.sentinels:
            s += f" sentinel={','.join(self.sentinels)}"
        return s + f" allocator={','.join(self.allocator)} leases={','.join(self.leases)}"

    def processes(self) -> list[tuple[str, str, str]]:
        """(process name, component, host) of every control process (announcers not included)."""
        out = [(f"redis-{i}", "redis", h) for i, h in enumerate(self.redis)]
        out += [(f"sentinel-{i}", "sentinel", h) for i, h in enumerate(self.sentinels)]
        out += [(f"allocator-{_letters(i)}", "allocator", h) for i, h in enumerate(self.allocator)]
        out += [(f"leases-{_letters(i)}", "leases", h) for i, h in enumerate(self.leases)]
        return out

    def host_of(self, proc: str) -> str:
        for name, _comp, host in self.processes():
            if name == proc:
                return host
        if proc.startswith("announcer-"):
            return proc.removeprefix("announcer-")
        raise KeyError(proc)


def host_ip(host: str) -> str:
    return CTL_IP if host == "ctl" else node_ip(int(host.removeprefix("node-")))


async def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        w.write(b"PING\r\n")
        await w.drain()
        line = await asyncio.wait_for(r.readline(), timeout)
        return line.startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()


async def redis_command(host: str, port: int, *args: str, timeout: float = 0.5) -> Any:
    """One command on a fresh connection (the orchestrator's view: no pooled connection to a dead node)."""
    import redis.asyncio as aioredis

    r = aioredis.Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    execute: Any = r.execute_command  # untyped in redis-py
    try:
        return await execute(*args)
    finally:
        await r.aclose()


def healthy_entries(reply: Any) -> int:
    """Entries of SENTINEL SENTINELS/REPLICAS not flagged down or disconnected."""
    n = 0
    for item in reply or []:
        if isinstance(item, dict):
            flags = item.get("flags", "")
        else:
            txt = [x.decode() if isinstance(x, bytes) else str(x) for x in item]
            flags = dict(zip(txt[::2], txt[1::2], strict=False)).get("flags", "")
        flags = flags.decode() if isinstance(flags, bytes) else str(flags)
        if not {"s_down", "o_down", "disconnected"} & set(flags.split(",")):
            n += 1
    return n


class ColocatedLab(Lab):
    """The lab with Redis, allocator and leases placed in namespaces (see the module docstring)."""

    placement: Placement

    def __init__(self, *a: Any, placement: Placement, persist: bool = True, fast_le: bool = False,
                 le_backend: str = "kube", **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.placement = placement
        self.persist = persist
        self.fast_le = fast_le
        self.le_backend = le_backend  # "kube" (the Lease decides) or "redis" (l2lb.adapters.bus.leader)
        self.dead: set[str] = set()  # nodes currently dead (cable out, processes killed)
        self.deaths: list[dict[str, Any]] = []

    # -- addresses --------------------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        p = self.placement
        if p.ha:
            hosts = ",".join(f"{host_ip(h)}:{SENTINEL_PORT}" for h in p.sentinels)
            # short timeouts: a master whose node died sends no RST; clients must give up on it quickly
            return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/0?socket_timeout=2&connect_timeout=0.5"
        return f"redis://{host_ip(p.redis[0])}:{REDIS_PORT}/0"

    def control_procs(self) -> list[str]:
        return [n for n, comp, _h in self.placement.processes() if comp in ("allocator", "leases")]

    def redis_procs(self) -> list[str]:
        return [n for n, comp, _h in self.placement.processes() if comp == "redis"]

    def announcer_procs(self) -> list[str]:
        return [f"announcer-{n}" for n in self.node_names()]

    def procs_on(self, host: str) -> list[str]:
        """Every process the lab runs on ``host`` (its announcer included), in start order."""
        out = [n for n, _c, h in self.placement.processes() if h == host]
        if host.startswith("node-"):
            out.append(f"announcer-{host}")
        return out

    def http_port(self, proc: str) -> int:
        comp, _, letter = proc.partition("-")
        i = "abcdefghijklmnopqrstuvwxyz".index(letter)
        return (ALLOC_BASE_HTTP if comp == "allocator" else LEASES_BASE_HTTP) + 10 * i

    # -- starting ---------------------------------------------------------------------------------
    async def start_control_plane(self) -> None:
        ctl = self.topo.hosts["ctl"].ns
        cli = python_cli()
        api = await self.sup.start("apiserver", [*cli, "apiserver", "--host", CTL_IP, "--port", str(API_PORT),
                                                 "--kubeconfig-out", str(self.kubeconfig)], ns=ctl)
        for i, _h in enumerate(self.placement.redis):
            await self.start_redis(i, initial=True)
        for i, _h in enumerate(self.placement.sentinels):
            await self.start_sentinel(i)
        await wait_http_ready(f"http://{CTL_IP}:{API_PORT}/readyz", api, timeout=30)
        await self.wait_redis_ready(30)

    def _redis_args(self, i: int, replicaof: str | None) -> list[str]:
        host = self.placement.redis[i]
        data = self.workdir / f"redis-{i}"
        data.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("redis-server") or "redis-server"
        args = [exe, "--bind", host_ip(host), "127.0.0.1", "--port", str(REDIS_PORT), "--protected-mode", "no",
                "--dir", str(data), "--save", ""]
        # k8s/base/redis/redis.conf: appendonly yes, fsync every second (a PV per pod)
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--appendonly", "no"]
        if self.placement.ha:  # as k8s/base/redis/start-redis.sh
            args += ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                     "--min-replicas-to-write", "1", "--min-replicas-max-lag", "3"]
        if replicaof:
            args += ["--replicaof", replicaof, str(REDIS_PORT)]
        return args

    async def current_master(self) -> str | None:
        """IP of the master as the sentinels that answer see it (majority of answers), else None."""
        if not self.placement.ha:
            return host_ip(self.placement.redis[0])
        votes: dict[str, int] = {}
        for h in self.placement.sentinels:
            if h in self.dead:
                continue
            try:
                got = await redis_command(host_ip(h), SENTINEL_PORT, "SENTINEL", "get-master-addr-by-name",
                                          SENTINEL_SERVICE, timeout=0.3)
            except Exception:
                continue
            if got:
                ip = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
                votes[ip] = votes.get(ip, 0) + 1
        if not votes:
            return None
        return max(votes, key=lambda k: votes[k])

    async def master_host(self) -> str | None:
        ip = await self.current_master()
        for h in self.placement.redis:
            if host_ip(h) == ip:
                return h
        return None

    async def start_redis(self, i: int, *, initial: bool = False) -> Proc:
        host = self.placement.redis[i]
        replicaof: str | None = None
        if self.placement.ha:
            if initial:
                replicaof = None if i == 0 else host_ip(self.placement.redis[0])
            else:
                # what k8s/base's redis start script does: ask the sentinels who the master is
                master = await self.current_master()
                if master is not None and master != host_ip(host):
                    replicaof = master
        return await self.sup.start(f"redis-{i}", self._redis_args(i, replicaof), ns=self.topo.hosts[host].ns)

    def _sentinel_conf(self, i: int) -> Path:
        host = self.placement.sentinels[i]
        d = self.workdir / f"sentinel-{i}"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "sentinel.conf"
        if not conf.exists():  # Sentinel rewrites its file with what it learnt: keep it across restarts
            master = host_ip(self.placement.redis[0])
            quorum = len(self.placement.sentinels) // 2 + 1
            conf.write_text(
                f"port {SENTINEL_PORT}\nbind {host_ip(host)} 127.0.0.1\nprotected-mode no\ndir {d}\n"
                f"sentinel monitor {SENTINEL_SERVICE} {master} {REDIS_PORT} {quorum}\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.args_get('sentinel_down_ms', 1000)}\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
                f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n")
        return conf

    def args_get(self, name: str, default: Any) -> Any:
        return getattr(self.args, name, default) or default

    async def start_sentinel(self, i: int) -> Proc:
        host = self.placement.sentinels[i]
        exe = shutil.which("redis-sentinel")
        args = [exe, str(self._sentinel_conf(i))] if exe else \
            [shutil.which("redis-server") or "redis-server", str(self._sentinel_conf(i)), "--sentinel"]
        return await self.sup.start(f"sentinel-{i}", args, ns=self.topo.hosts[host].ns)

    async def wait_redis_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sup.check_alive()
            if await self.redis_settled():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"Redis not ready after {timeout:.0f} s ({self.placement.describe()}); "
                           f"see {self.sup.logdir}/redis-*.log and sentinel-*.log")

    async def redis_settled(self) -> bool:
        """Every live Redis answers; with Sentinel, the sentinels agree on a live master that has
        every other live Redis as a replica."""
        live = [h for h in self.placement.redis if h not in self.dead]
        for h in live:
            if not await redis_ping(host_ip(h), REDIS_PORT):
                return False
        if not self.placement.ha:
            return True
        master = await self.current_master()
        if master is None or master not in {host_ip(h) for h in live}:
            return False
        try:
            info = await redis_command(master, REDIS_PORT, "INFO", "replication")
        except Exception:
            return False
        if not isinstance(info, dict) or info.get("role") != "master":
            return False
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                  and v.get("state") == "online"]
        if len(online) < len(live) - 1:
            return False
        # every live sentinel knows the others and the replicas: else a master death now would
        # find nobody to promote (or no quorum)
        live_sentinels = [h for h in self.placement.sentinels if h not in self.dead]
        for h in live_sentinels:
            for what, want in (("SENTINELS", len(live_sentinels) - 1), ("REPLICAS", len(live) - 1)):
                try:
                    reply = await redis_command(host_ip(h), SENTINEL_PORT, "SENTINEL", what, SENTINEL_SERVICE)
                except Exception:
                    return False
                if healthy_entries(reply) < want:
                    return False
        return True

    def _service_args(self, proc: str, host: str) -> list[str]:
        comp = proc.split("-", 1)[0]
        kube = ["--kubeconfig", str(self.kubeconfig), "--namespace", "l2lb-system", *(LE_FAST if self.fast_le else []),
                "--leader-election-backend", self.le_backend]
        return [*python_cli(), comp, "--instance", proc, *kube, *self.common(self.http_port(proc), host_ip(host))]

    async def start_proc(self, proc: str) -> Proc:
        """(Re)start one process of the placement the way its pod would start."""
        if proc.startswith("announcer-"):
            node = proc.removeprefix("announcer-")
            started: Proc = await self.start_announcer(node, self.node_names().index(node) + 1)
            return started
        comp, _, idx = proc.partition("-")
        if comp == "redis":
            return await self.start_redis(int(idx))
        if comp == "sentinel":
            return await self.start_sentinel(int(idx))
        host = self.placement.host_of(proc)
        return await self.sup.start(proc, self._service_args(proc, host), ns=self.topo.hosts[host].ns)

    async def start_services(self) -> None:
        procs = [(n, h) for n, comp, h in self.placement.processes() if comp in ("allocator", "leases")]
        started = [(n, h, await self.start_proc(n)) for n, h in procs]
        anns = [(i, await self.start_announcer(name, i)) for i, name in enumerate(self.node_names(), start=1)]
        for n, h, p in started:
            await wait_http_ready(f"http://{host_ip(h)}:{self.http_port(n)}/healthz", p)
        for i, p in anns:
            await wait_http_ready(f"http://{node_ip(i)}:{ANN_HTTP}/readyz", p)

    # -- who leads ------------------------------------------------------------------------------
    async def leader(self, client: Any, component: str) -> str | None:
        """The process holding the leader-election Lease of ``component`` (allocator | leases)."""
        from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError

        try:
            with KubeClient.deadline(2):
                obj = await client.get(RESOURCES["leases"], f"l2lb-{component}", "l2lb-system")
        except (KubeError, TimeoutError, OSError):
            return None
        holder = (obj.get("spec") or {}).get("holderIdentity")
        return holder if isinstance(holder, str) and holder in self.sup.procs else None

    async def roles(self, client: Any) -> dict[str, str | None]:
        """Host of the Redis master and of each leader right now."""
        out: dict[str, str | None] = {"redis": await self.master_host()}
        for comp in ("leases", "allocator"):
            lead = await self.leader(client, comp)
            out[comp] = self.placement.host_of(lead) if lead else None
        return out

    def status_urls(self) -> tuple[str, str]:
        """The first replica of each (any replica serves the cluster view from Redis)."""
        a, l_ = "allocator-a", "leases-a"
        return (f"http://{host_ip(self.placement.host_of(a))}:{self.http_port(a)}",
                f"http://{host_ip(self.placement.host_of(l_))}:{self.http_port(l_)}")

    # -- faults ---------------------------------------------------------------------------------
    async def inject(self, how: str, node: str) -> None:
        if how == "node":
            self.node_death(node)
        else:
            await super().inject(how, node)

    async def heal(self, how: str, node: str) -> None:
        if how == "node":
            await self.node_return(node)
            await self.wait_redis_ready(60)
            await wait_http_ready(f"http://{host_ip(node)}:{ANN_HTTP}/readyz", self.sup.procs[f"announcer-{node}"])
        else:
            await super().heal(how, node)

    def node_death(self, node: str) -> float:
        """Cable out and SIGKILL of every process of ``node`` at the same instant; returns that instant."""
        return self.nodes_death([node])

    def nodes_death(self, nodes: list[str]) -> float:
        """The death of several nodes at one instant: every cable out first (so that no FIN/RST of a dying
        socket leaves any of them), then SIGKILL of every process of each; returns that instant."""
        if len(set(nodes)) != len(nodes) or not nodes:
            raise ValueError(f"nodes to kill must be distinct and not empty: {nodes}")
        for node in nodes:
            if node in self.dead:
                raise RuntimeError(f"{node} is already dead")
        t = time.monotonic()
        for node in nodes:
            self.topo.cut(node, False)
        for node in nodes:
            for proc in self.procs_on(node):
                self.sup.signal(proc, signal.SIGKILL)
        self.dead.update(nodes)
        took = round((time.monotonic() - t) * 1000, 1)
        for node in nodes:
            self.deaths.append({"node": node, "t": t, "procs": self.procs_on(node), "took_ms": took})
        return t

    async def reap(self, node: str) -> None:
        for proc in self.procs_on(node):
            p = self.sup.procs.get(proc)
            if p is not None and p.proc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.proc.wait(), 5)

    async def node_return(self, node: str) -> None:
        """The node reboots: its cable back, then its pods start again (Redis and Sentinel first)."""
        await self.reap(node)
        self.topo.cut(node, True)
        self.dead.discard(node)
        for proc in self.procs_on(node):
            await self.start_proc(proc)


PROBER_MAC_PREFIX = ("02:c4:00:00:00:00", "ff:ff:ff:ff:00:00")  # l2lb.lab.chaos.MultiProber's source MACs


def partition(topo: netns.Topology, node: str, *, allow_macs: list[str]) -> None:
    """Cut ``node`` off from every other host of the LAN except LAN clients: the switch forwards
    its frames only to ``allow_macs`` and the chaos prober's MACs, and to it only theirs (nftables,
    bridge family, in the switch namespace). It keeps its link, so it sees no link event and keeps
    hearing ARP requests: the hard partition, where only its own rules can make it stop answering."""
    _port_filter(topo, node, "part", "isolate", allow_macs=allow_macs, verdict="drop")


def lossy(topo: netns.Topology, node: str, loss: float, *, allow_macs: list[str]) -> None:
    """Drop a share ``loss`` of the frames to and from ``node`` at the switch, at random (nftables numgen, bridge
    family): TCP connections (Redis, the API server) retransmit, the peers' raw frames are lost. Frames to and
    from ``allow_macs`` and the chaos prober pass, so the LAN clients still see what the node answers."""
    if not 0.0 < loss <= 1.0:
        raise ValueError(f"loss must be in (0, 1], not {loss}")
    pct = max(1, min(100, round(loss * 100)))
    _port_filter(topo, node, "loss", "lose", allow_macs=allow_macs, verdict=f"numgen random mod 100 < {pct} drop")


def heal_loss(topo: netns.Topology, node: str) -> None:
    netns.run(["ip", "netns", "exec", topo.switch, "nft", "delete", "table", "bridge", _table("loss", node)],
              check=False)


def _table(kind: str, node: str) -> str:
    return f"{kind}_{node.replace('-', '_')}"


def _port_filter(topo: netns.Topology, node: str, kind: str, chain: str, *, allow_macs: list[str],
                 verdict: str) -> None:
    """A bridge table ``<kind>_<node>`` in the switch namespace: frames to and from ``node``'s port pass when they
    come from or go to ``allow_macs`` or the chaos prober's MACs; the others get ``verdict``."""
    port = topo.hosts[node].peer
    pfx, mask = PROBER_MAC_PREFIX
    rules = []
    for direction, addr in (("iifname", "daddr"), ("oifname", "saddr")):
        rules += [f'{direction} "{port}" ether {addr} {m} accept' for m in allow_macs]
        rules += [f'{direction} "{port}" ether {addr} & {mask} == {pfx} accept', f'{direction} "{port}" {verdict}']
    text = (f"table bridge {_table(kind, node)} {{\n chain {chain} {{\n  type filter hook forward priority 0; "
            "policy accept;\n  " + "\n  ".join(rules) + "\n }\n}\n")
    _nft(topo.switch, text)


def _nft(ns: str, text: str) -> None:
    import subprocess

    if shutil.which("nft") is None:
        raise netns.NetnsError("the 'nft' command is missing: apt-get install nftables (scripts/dev installs it)")
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text, capture_output=True,
                          text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise netns.NetnsError(f"nft in {ns} failed: {proc.stderr.strip()}")


def heal_partition(topo: netns.Topology, node: str) -> None:
    netns.run(["ip", "netns", "exec", topo.switch, "nft", "delete", "table", "bridge",
               _table("part", node)], check=False)


def colocated_args(args: argparse.Namespace) -> Placement:
    """The placement asked for on the command line (``--placement`` spec, or k8s/base's with ``--redis-ha``)."""
    spec = getattr(args, "placement", None)
    if spec:
        return Placement.parse(spec, args.nodes)
    return Placement.k8s(args.nodes, ha=bool(getattr(args, "redis_ha", False)))


def add_colocated_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("placement")
    g.add_argument("--colocated", action="store_true",
                   help="run redis, allocator and leases inside the node namespaces as k8s/base would place "
                        "them (the API server stays in the control-plane namespace); enables the 'node' "
                        "round (node death: every process of the node SIGKILLed and its cable out)")
    g.add_argument("--redis-ha", action="store_true",
                   help="with --colocated: Redis on 3 nodes (1 master, 2 replicas) with a Sentinel on each")
    g.add_argument("--placement", help="with --colocated: explicit layout, e.g. "
                   "'redis=1,2,3;sentinel=1,2,3;allocator=1,2;leases=1,3' (node numbers or ctl)")
    g.add_argument("--no-persistence", action="store_true",
                   help="with --colocated: Redis without its append-only file (k8s/base keeps one)")
    g.add_argument("--sentinel-down-ms", type=int, default=1000,
                   help="Sentinel down-after-milliseconds (default 1000)")
    g.add_argument("--le-backend", choices=("kube", "redis"), default="kube",
                   help="with --colocated: leader election of allocator and leases (default kube: the Lease)")


def make_lab(args: argparse.Namespace, workdir: Path, topo: netns.Topology, sup: Any, progress: Any) -> Lab:
    """A :class:`Lab`, or a :class:`ColocatedLab` when ``args.colocated``."""
    if getattr(args, "colocated", False):
        return ColocatedLab(args, workdir, topo, sup, progress, placement=colocated_args(args),
                            persist=not getattr(args, "no_persistence", False),
                            le_backend=getattr(args, "le_backend", "kube"))
    return Lab(args, workdir, topo, sup, progress)
