"""Chaos runner: break the lab cluster on purpose and check l2lb's invariants from outside.

Three parts:

* **pure checkers** over recorded observations (unit-tested without a cluster):
  :func:`dual_episodes`, :func:`outages`, :func:`sharing_violations`, :class:`IpStability`;
* **observers**: :class:`MultiProber` (one raw ARP socket in the client namespace probing every VIP,
  each VIP from its own source MAC/IP so the announcer's per-source rate limit is not the bottleneck)
  and a polling API observer;
* **fault injectors** on :class:`ChaosLab` (a :class:`l2lb.lab.main.Lab` with standby allocator and
  leases): SIGKILL / SIGSTOP+SIGCONT of any service process (leaders and standbys), redis-server
  restart without persistence, API server faults (429 + Retry-After, 5xx, latency, dropped watches,
  410 via compaction), node link down/up, Service and pool churn.

:func:`run_chaos` runs everything for ``duration`` seconds with a seeded RNG and returns a
:class:`ChaosReport`; ``bench/chaos/run.py`` prints it, ``tests/chaos`` asserts on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError
from l2lb.core import codec
from l2lb.core.allocator import incompatibility
from l2lb.core.models import ParseError, ServiceRequest
from l2lb.core.parse import IP_ANNOTATIONS, parse_service, status_ips
from l2lb.lab import netns
from l2lb.lab.main import ANN_HTTP, API_PORT, CTL_IP, LAN_IF, Lab, Progress, node_ip
from l2lb.lab.placement import ColocatedLab, Placement, heal_loss, heal_partition, lossy, partition
from l2lb.lab.procs import Supervisor, python_cli, wait_http_ready
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

log = get_logger("l2lb.chaos")

_FAULTS = metrics.counter("l2lb_chaos_faults_total", "faults injected by the chaos runner", ("kind",))
_VIOLATIONS = metrics.counter("l2lb_chaos_violations_total", "invariant violations seen", ("invariant",))

ETH_P_ARP = 0x0806
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1

DUAL_ALLOWED_S = 1.0  # two MACs may answer at most this long (after a move)
CONVERGE_BOUND_S = 10.0

# ------------------------------------------------------------------------------------------------
# pure checkers


@dataclass(frozen=True)
class Episode:
    vip: str
    start: float
    end: float
    macs: tuple[str, ...]

    @property
    def seconds(self) -> float:
        return self.end - self.start


def dual_episodes(vip: str, probes: Sequence[tuple[float, frozenset[str]]], *, interval: float,
                  join_gap: float = 0.3) -> list[Episode]:
    """Periods in which more than one MAC answered the same probe.

    ``probes``: (send time, MACs that answered that probe), in send order. Probes with >= 2 MACs
    closer than ``join_gap`` belong to one episode; an episode lasts from its first such probe to its
    last one plus one probe interval (a single double-answered probe is ``interval`` long).
    """
    out: list[Episode] = []
    start = last = -1.0
    macs: set[str] = set()
    for t, got in probes:
        if len(got) < 2:
            continue
        if start >= 0 and t - last <= join_gap:
            last = t
            macs |= got
            continue
        if start >= 0:
            out.append(Episode(vip, start, last + interval, tuple(sorted(macs))))
        start = last = t
        macs = set(got)
    if start >= 0:
        out.append(Episode(vip, start, last + interval, tuple(sorted(macs))))
    return out


def outages(vip: str, probes: Sequence[tuple[float, frozenset[str]]]) -> list[Episode]:
    """Stretches without any answer between two answered probes (from the last answered probe
    before to the first answered probe after). Unanswered probes at the start or end are not
    outages (the VIP may not have been announced yet / any more)."""
    out: list[Episode] = []
    last_ok: float | None = None
    gap = False
    for t, got in probes:
        if got:
            if gap and last_ok is not None:
                out.append(Episode(vip, last_ok, t, tuple(sorted(got))))
            last_ok, gap = t, False
        else:
            gap = True
    return out


def _request(obj: Mapping[str, Any]) -> ServiceRequest | None:
    try:
        return parse_service(obj)
    except ParseError:
        return None


def sharing_violations(services: Iterable[Mapping[str, Any]]) -> list[str]:
    """IPs that appear in the statuses of two Services that may not share an IP."""
    by_ip: dict[str, list[ServiceRequest]] = {}
    for s in services:
        req = _request(s)
        if req is None:
            continue
        for ip in set(status_ips(s)):
            by_ip.setdefault(ip, []).append(req)
    out = []
    for ip, reqs in sorted(by_ip.items()):
        for i, a in enumerate(reqs):
            for b in reqs[i + 1:]:
                why = incompatibility(a, b) or incompatibility(b, a)
                if why:
                    out.append(f"{ip} in the status of {a.key} and {b.key}: {why}")
    return out


def request_fingerprint(obj: Mapping[str, Any]) -> str:
    """What a Service asks for (requested IPs, pool, sharing, class, type): a change of it may move its IP."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ann = meta.get("annotations") or {}
    keep = {k: v for k, v in ann.items() if k in IP_ANNOTATIONS or "sharing" in k or "address-pool" in k
            or "allow-shared" in k}
    return json.dumps({"ann": keep, "lbip": spec.get("loadBalancerIP"), "type": spec.get("type"),
                       "class": spec.get("loadBalancerClass"), "labels": meta.get("labels") or {},
                       "fam": spec.get("ipFamilies"), "pol": spec.get("ipFamilyPolicy")}, sort_keys=True)


@dataclass
class _Seen:
    ips: tuple[str, ...]
    first_seen: float  # when these IPs were first observed
    fingerprint: str
    fp_changed_at: float  # last time the request was seen changing


class IpStability:
    """No Service changes IP unless it was deleted (new uid), its request changed, or pools changed.

    Observations lag the allocator (polling, API faults, leader failover), so a cause counts when it
    was seen up to ``grace`` seconds before the old IPs were first observed, and for ``settle`` seconds;
    a move away from IPs the current request does not name is always caused.
    """

    def __init__(self, grace: float = 10.0, settle: float = 30.0,
                 pool_scope: Callable[[Mapping[str, Any], tuple[str, ...]], bool] | None = None) -> None:
        self.grace = grace
        self.settle = settle  # a cause older than this does not excuse a move any more
        # which Services a pool change may move (default: any); the chaos run narrows it to the churned pool
        self.pool_scope = pool_scope or (lambda _svc, _ips: True)
        self._last: dict[str, _Seen] = {}  # uid -> last non-empty IPs
        self._fp: dict[str, tuple[str, float]] = {}  # uid -> (fingerprint, when it last changed)
        self._pool_changes: list[float] = []

    def pools_changed(self, now: float) -> None:
        self._pool_changes.append(now)

    def observe(self, services: Iterable[Mapping[str, Any]], now: float) -> list[str]:
        out = []
        for s in services:
            meta = s.get("metadata") or {}
            uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
            fp = request_fingerprint(s)
            old_fp = self._fp.get(uid)
            if old_fp is None or old_fp[0] != fp:
                self._fp[uid] = (fp, now if old_fp is not None else -1e18)
            fp_changed_at = self._fp[uid][1]
            ips = tuple(sorted(status_ips(s)))
            if not ips:
                continue
            prev = self._last.get(uid)
            if prev is not None and prev.ips == ips:
                continue
            if prev is not None and not self._caused(s, prev, fp_changed_at, now):
                out.append(f"{meta.get('namespace')}/{meta.get('name')} changed IP {list(prev.ips)} -> {list(ips)} "
                           "without a change of its request, pools, or a deletion")
            self._last[uid] = _Seen(ips, now, fp, fp_changed_at)
        return out

    def _caused(self, svc: Mapping[str, Any], prev: _Seen, fp_changed_at: float, now: float) -> bool:
        since = max(prev.first_seen - self.grace, now - self.settle)
        if fp_changed_at >= since:
            return True
        if any(t >= since for t in self._pool_changes) and self.pool_scope(svc, prev.ips):
            return True
        req = _request(svc)
        return bool(req and req.requested_ips and not set(prev.ips) <= set(req.requested_ips))


# ------------------------------------------------------------------------------------------------
# the client-side prober


def _fake_mac(i: int) -> bytes:
    return bytes([0x02, 0xC4, 0x00, 0x00, (i >> 8) & 0xFF, i & 0xFF])


class MultiProber:
    """One raw ARP socket in the client namespace probing a changing set of VIPs.

    Each VIP is probed from its own locally administered source MAC and its own TEST-NET source IP
    (``src_base`` + index), so replies are attributed to the probe of that VIP and the announcer's
    per-source rate limit applies per VIP. Bounded: at most ``max_probes`` in total.
    """

    def __init__(self, ns: str, ifname: str, src_ips: Sequence[str], *, interval_s: float = 0.05,
                 max_probes: int = 2_000_000):
        self.ns, self.ifname = ns, ifname
        self.interval_s = interval_s
        self.max_probes = max_probes
        self.src_ips = list(src_ips)
        with netns.entered(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            self.sock.bind((ifname, ETH_P_ARP))
            ifindex = socket.if_nametoindex(ifname)
        # replies go to the fake MACs: receive frames not addressed to this interface too
        mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        self.sock.setblocking(False)
        self.sent = 0
        self.garps: dict[str, int] = {}
        self._targets: dict[str, int] = {}  # vip -> slot (source MAC/IP index)
        self._free = list(range(len(self.src_ips)))
        self._cur: dict[str, tuple[float, set[str]]] = {}  # vip -> (send time, macs) of the open probe
        self.history: dict[str, list[tuple[float, frozenset[str]]]] = {}
        self._by_src: dict[bytes, str] = {}

    def set_targets(self, vips: Iterable[str]) -> None:
        want = {v for v in vips if ":" not in v}
        for v in list(self._targets):
            if v not in want:
                self._close_probe(v)
                slot = self._targets.pop(v)
                self._by_src.pop(_fake_mac(slot), None)
                self._free.append(slot)
        for v in sorted(want - set(self._targets)):
            if not self._free:
                log.warning("chaos prober: more VIPs than source slots", extra={"vip": v})
                break
            slot = self._free.pop(0)
            self._targets[v] = slot
            self._by_src[_fake_mac(slot)] = v

    @property
    def targets(self) -> list[str]:
        return sorted(self._targets)

    def _close_probe(self, vip: str) -> None:
        cur = self._cur.pop(vip, None)
        if cur is not None:
            self.history.setdefault(vip, []).append((cur[0], frozenset(cur[1])))

    def _drain(self) -> None:
        for _ in range(1000):
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            fr = codec.parse(data)
            if not isinstance(fr, codec.ArpFrame):
                continue
            vip = codec.ip_text(fr.spa) if len(fr.spa) == 4 else ""
            if fr.op == 2 and fr.tha in self._by_src:
                want = self._by_src[fr.tha]
                if vip == want and want in self._cur:
                    self._cur[want][1].add(codec.mac_text(fr.sha))
            elif fr.spa == fr.tpa and vip in self._targets and fr.sha not in self._by_src:
                self.garps[vip] = self.garps.get(vip, 0) + 1

    def _send_round(self, now: float) -> None:
        for vip, slot in list(self._targets.items()):
            self._close_probe(vip)
            mac = _fake_mac(slot)
            frame = codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=mac, sha=mac,
                                    spa=codec.ip_bytes(self.src_ips[slot]), tha=codec.ZERO_MAC,
                                    tpa=codec.ip_bytes(vip))
            with contextlib.suppress(BlockingIOError, OSError):
                self.sock.send(frame)
                self.sent += 1
            self._cur[vip] = (now, set())

    def last_answer(self, vip: str, within: float) -> frozenset[str] | None:
        """MACs that answered the most recent completed probe of ``vip`` sent within ``within`` s."""
        h = self.history.get(vip)
        if not h or time.monotonic() - h[-1][0] > within:
            return None
        return h[-1][1]

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._drain)
        try:
            nxt = time.monotonic()
            while not stop.is_set() and self.sent < self.max_probes:
                self._send_round(time.monotonic())
                nxt += self.interval_s
                delay = nxt - time.monotonic()
                if delay < -self.interval_s:  # fell behind (loaded machine): skip, do not burst
                    nxt = time.monotonic()
                    delay = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, delay))
            await asyncio.sleep(self.interval_s)
            self._drain()
            for v in list(self._cur):
                self._close_probe(v)
        finally:
            loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------------------------------------
# report


@dataclass
class FaultRecord:
    kind: str
    target: str
    start: float  # seconds since the run started
    end: float


@dataclass
class ChaosReport:
    seed: int
    duration_s: float
    faults: list[FaultRecord] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    worst_dual_ms: float = 0.0
    worst_dual: dict[str, Any] | None = None
    worst_outage_ms: float = 0.0
    worst_outage: dict[str, Any] | None = None
    converge_s: float | None = None
    probes_sent: int = 0
    api_observations: int = 0
    churn: dict[str, int] = field(default_factory=dict)
    leaks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fault_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            out[f.kind] = out.get(f.kind, 0) + 1
        return dict(sorted(out.items()))

    def violation(self, invariant: str, detail: str, t: float) -> None:
        if sum(1 for v in self.violations if v["invariant"] == invariant) < 50:
            self.violations.append({"invariant": invariant, "detail": detail, "t": round(t, 3)})
        _VIOLATIONS.labels(invariant).inc()
        log.warning("chaos invariant violated", extra={"invariant": invariant, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fault_counts"] = self.fault_counts()
        d["violation_count"] = len(self.violations)
        return d

    def text(self) -> str:
        lines = [f"chaos run: seed {self.seed}, {self.duration_s:.0f} s of faults, "
                 f"{len(self.faults)} faults, {self.probes_sent} ARP probes, {self.api_observations} API snapshots"]
        lines.append("faults by kind: " + ", ".join(f"{k}={n}" for k, n in self.fault_counts().items()))
        lines.append("churn: " + ", ".join(f"{k}={n}" for k, n in sorted(self.churn.items())))
        lines.append(f"invariant violations: {len(self.violations)}")
        for v in self.violations[:20]:
            lines.append(f"  [{v['t']:8.2f}s] {v['invariant']}: {v['detail']}")
        lines.append(f"worst dual announcement: {self.worst_dual_ms:.0f} ms {self.worst_dual or ''}")
        lines.append(f"worst outage (stable VIPs): {self.worst_outage_ms:.0f} ms {self.worst_outage or ''}")
        conv = "never (violation)" if self.converge_s is None else f"{self.converge_s:.2f} s"
        lines.append(f"time to converge after the last fault: {conv}")
        lines.append(f"leaks: {json.dumps(self.leaks)}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the lab with standbys


MAIN_POOL = "198.51.100.128/26"  # .129-.190 usable
EXTRA_POOL = ("198.51.100.200", "198.51.100.207")  # selective pool for label chaos-pool=extra
REQUEST_IPS = [f"198.51.100.{i}" for i in range(176, 191)]  # requested by churn Services
PROBE_SRC = [f"198.51.100.{i}" for i in range(210, 250)]  # client probe source addresses
STABLE = ("pihole/pihole-dns-tcp", "pihole/pihole-dns-udp", "pihole/pihole-web")


def chaos_manifests() -> list[dict[str, Any]]:
    pool_main = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                 "metadata": {"name": "chaos-main"}, "spec": {"blocks": [{"cidr": MAIN_POOL}]}}
    policy = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
              "metadata": {"name": "chaos-l2"},
              "spec": {"interfaces": [LAN_IF], "externalIPs": True, "loadBalancerIPs": True}}
    nss = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("pihole", "chaos")]
    svcs = []
    for name, proto in (("pihole-dns-tcp", "TCP"), ("pihole-dns-udp", "UDP")):
        svcs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": "pihole",
                                  "annotations": {"io.cilium/lb-ipam-ips": "198.51.100.153",
                                                  "io.cilium/lb-ipam-sharing-key": "pi-hole"}},
                     "spec": {"type": "LoadBalancer", "selector": {"app": "pihole"},
                              "ports": [{"name": "dns", "port": 53, "protocol": proto}]}})
    svcs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pihole-web", "namespace": "pihole"},
                 "spec": {"type": "LoadBalancer", "selector": {"app": "pihole"},
                          "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    return [pool_main, policy, *nss, *svcs]


def extra_pool() -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "chaos-extra"},
            "spec": {"blocks": [{"start": EXTRA_POOL[0], "stop": EXTRA_POOL[1]}],
                     "serviceSelector": {"matchLabels": {"chaos-pool": "extra"}}}}


FAULT_KINDS = ["sigkill", "sigstop", "redis_restart", "api_429", "api_5xx", "api_latency", "api_drop_watches",
               "api_compact", "link_down"]
FAULT_WEIGHTS = [5, 3, 1, 1, 1, 1, 1, 1, 3]
# with node_faults (run_chaos(node_faults=True), bench/chaos --node-faults): a node dies (cable out +
# SIGKILL of everything on it; co-located, Redis/allocator/leases replicas die with it) and comes back;
# a node is partitioned from every other host but the LAN clients; Redis is down for everybody
# (every Redis process stopped) while a node dies
NODE_FAULT_KINDS = ["node_death", "partition", "redis_down_node_death"]
NODE_FAULT_WEIGHTS = [3, 2, 1]
# only when asked by name (run_chaos(kinds=...), bench/chaos --kinds): message loss on one node's link (10 or
# 50 % of its frames, LAN clients exempt) -- the real-time check of the simulator's msg_faults model
EXTRA_FAULT_KINDS = ["loss"]
ALL_FAULT_KINDS = FAULT_KINDS + NODE_FAULT_KINDS + EXTRA_FAULT_KINDS
PARTITION_STOP_S = 2.0  # a partitioned node must not answer any more this long after the cut (ttl 1 s + margin)
PROCESS_ROLES = ("allocator", "leases", "standby", "announcer")

ALLOC_B_HTTP = 9111
LEASES_B_HTTP = 9112
ALLOC_HTTP_A = 9101
LEASES_HTTP_A = 9102
LE_ARGS = ["--le-lease-duration", "2", "--le-renew-deadline", "1.5", "--le-retry-period", "0.3"]


class ChaosLab(Lab):
    """The lab with 2 allocators and 2 leases instances (leader + standby each), fast leader election."""

    def control_procs(self) -> list[str]:
        return ["allocator-a", "allocator-b", "leases-a", "leases-b"]

    def announcer_procs(self) -> list[str]:
        return [f"announcer-{n}" for n in self.node_names()]

    async def start_services(self) -> None:
        ctl = self.topo.hosts["ctl"].ns
        cli = python_cli()
        kube = ["--kubeconfig", str(self.kubeconfig), "--namespace", "l2lb-system", *LE_ARGS]
        procs = []
        for inst, port in (("a", ALLOC_HTTP_A), ("b", ALLOC_B_HTTP)):
            procs.append((port, await self.sup.start(
                f"allocator-{inst}", [*cli, "allocator", "--instance", f"allocator-{inst}", *kube,
                                      *self.common(port, CTL_IP)], ns=ctl)))
        for inst, port in (("a", LEASES_HTTP_A), ("b", LEASES_B_HTTP)):
            procs.append((port, await self.sup.start(
                f"leases-{inst}", [*cli, "leases", "--instance", f"leases-{inst}", *kube,
                                   *self.common(port, CTL_IP)], ns=ctl)))
        anns = [(i, await self.start_announcer(name, i)) for i, name in enumerate(self.node_names(), start=1)]
        for port, p in procs:
            await wait_http_ready(f"http://{CTL_IP}:{port}/healthz", p)
        for i, p in anns:
            await wait_http_ready(f"http://{node_ip(i)}:{ANN_HTTP}/readyz", p)

    async def apply_manifests(self, client: KubeClient) -> list[str]:
        docs_path = self.workdir / "chaos-manifests.yaml"
        docs_path.write_text(yaml.safe_dump_all(chaos_manifests()))
        self.args.manifests = [str(docs_path)]
        return await super().apply_manifests(client)


# ------------------------------------------------------------------------------------------------
# the run


@dataclass
class ChurnSvc:
    name: str
    kind: str  # "auto" | "request" | "extra" | "conflict"
    ip: str | None = None


class ChaosRun:
    """One seeded run on a brought-up :class:`ChaosLab`: fault and churn loops, observers, convergence."""

    def __init__(self, lab: ChaosLab, seed: int, duration: float, *, churn_per_s: float = 1.0,
                 probe_ms: float = 50.0, fault_gap: tuple[float, float] = (0.5, 2.0),
                 converge_bound: float = CONVERGE_BOUND_S, node_faults: bool = False,
                 partition_stop_s: float = PARTITION_STOP_S, kinds: Sequence[str] | None = None):
        self.lab = lab
        self.partition_stop_s = partition_stop_s
        self.kinds = FAULT_KINDS + (NODE_FAULT_KINDS if node_faults else [])
        self.weights = FAULT_WEIGHTS + (NODE_FAULT_WEIGHTS if node_faults else [])
        if kinds:  # exactly these, equally weighted
            unknown = sorted(set(kinds) - set(ALL_FAULT_KINDS))
            if unknown:
                raise ValueError(f"unknown fault kind(s) {unknown}: choose from {ALL_FAULT_KINDS}")
            self.kinds, self.weights = list(kinds), [1] * len(kinds)
        self.lossy: list[tuple[str, float, float, float]] = []  # node, loss, start, end (monotonic)
        self.partitions: list[tuple[str, float, float]] = []  # node, start, end (monotonic)
        self.dead_nodes: set[str] = set()
        self.rng = random.Random(seed)  # faults
        self.crng = random.Random(seed + 1_000_003)  # churn: its own stream, so the two loops do not interleave draws
        self.duration = duration
        self.churn_per_s = churn_per_s
        self.fault_gap = fault_gap
        self.converge_bound = converge_bound
        self.report = ChaosReport(seed=seed, duration_s=duration)
        self.t0 = time.monotonic()
        self.stability = IpStability(pool_scope=_extra_pool_scope)
        self.prober = MultiProber(lab.topo.hosts["client"].ns, "eth0", PROBE_SRC, interval_s=probe_ms / 1000,
                                  max_probes=int((duration + 120) * 1000 / probe_ms * len(PROBE_SRC)))
        self.services: list[dict[str, Any]] = []
        self.churn: dict[str, ChurnSvc] = {}
        self.extra_pool = False
        self.stable_vips: set[str] = set()
        self.recent_vips: dict[str, float] = {}  # vip -> last time seen in a status
        self.last_fault_end = 0.0
        self.api_base = f"http://{CTL_IP}:{API_PORT}"
        self._n = 0
        self._bag: list[str] = []
        self._bag_done = False
        self._proc_turn = 0
        self.client: KubeClient | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- observers ----------------------------------------------------------------------------
    async def observe_api(self, client: KubeClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                with KubeClient.deadline(5):
                    lst = await client.list(RESOURCES["services"])
            except (KubeError, TimeoutError, aiohttp.ClientError, OSError):
                await asyncio.sleep(0.2)
                continue
            svcs = [s for s in lst.get("items", []) if (s.get("spec") or {}).get("type") == "LoadBalancer"]
            self.services = svcs
            self.report.api_observations += 1
            t = self.now()
            for v in sharing_violations(svcs):
                self.report.violation("ip_shared_by_incompatible_services", v, t)
            for v in self.stability.observe(svcs, t):
                self.report.violation("ip_changed_without_cause", v, t)
            mono = time.monotonic()
            for s in svcs:
                for ip in status_ips(s):
                    self.recent_vips[ip] = mono
                    if _key(s) in STABLE:
                        self.stable_vips.add(ip)
            # keep probing a released VIP for 5 s: a node still answering for it shows up as dual
            self.prober.set_targets(v for v, seen in self.recent_vips.items() if mono - seen < 5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    # -- faults ---------------------------------------------------------------------------------
    async def _debug(self, method: str, what: str, body: dict[str, Any] | None = None) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.request(method, f"{self.api_base}/l2lb-debug/{what}", json=body) as r:
            if r.status >= 300:
                raise RuntimeError(f"debug {method} {what}: HTTP {r.status} {await r.text()}")

    async def _hold(self, lo: float = 0.5, hi: float = 3.0) -> None:
        await asyncio.sleep(self.rng.uniform(lo, hi))

    async def _restart(self, name: str) -> None:
        sup = self.lab.sup
        if isinstance(self.lab, ColocatedLab):  # its processes restart the way their pods would
            await self.lab.start_proc(name)
        elif name.startswith("announcer-"):
            node = name.removeprefix("announcer-")
            await self.lab.start_announcer(node, self.lab.node_names().index(node) + 1)
        else:
            await sup.restart(name)

    async def fault_once(self) -> None:
        lab, sup, rng = self.lab, self.lab.sup, self.rng
        if not self._bag:  # every kind once (shuffled) first, then weighted at random
            self._bag = rng.choices(self.kinds, self.weights, k=len(self.kinds)) if self._bag_done else \
                rng.sample(self.kinds, len(self.kinds))
            self._bag_done = True
        kind = self._bag.pop()
        target = ""
        label = ""
        t0 = self.now()
        if kind in ("sigkill", "sigstop"):
            target, label = await self.pick_process()
        if kind == "sigkill":
            await sup.kill(target)
            await self._hold(0.2, 2.0)
            await self._restart(target)
        elif kind == "sigstop":
            sup.signal(target, signal.SIGSTOP)
            try:
                await self._hold(0.3, 3.0)
            finally:
                sup.signal(target, signal.SIGCONT)
        elif kind == "redis_restart":
            target = await self.redis_master_proc()
            await sup.kill(target)
            await self._hold(0.1, 1.0)
            await self._restart(target)
        elif kind == "api_429":
            target = "apiserver"
            await self._debug("POST", "faults", {"status": 429, "retry_after": 1, "count": rng.randint(3, 30)})
            await self._hold()
            await self._debug("DELETE", "faults")
        elif kind == "api_5xx":
            target = "apiserver"
            await self._debug("POST", "faults", {"status": rng.choice([500, 503]), "count": rng.randint(3, 30)})
            await self._hold()
            await self._debug("DELETE", "faults")
        elif kind == "api_latency":
            target = "apiserver"
            await self._debug("POST", "faults", {"latency_ms": rng.choice([200, 500, 1000])})
            await self._hold()
            await self._debug("DELETE", "faults")
        elif kind == "api_drop_watches":
            target = "apiserver"
            await self._debug("POST", "faults", {"drop_watches": True})
        elif kind == "api_compact":
            target = "apiserver"
            await self._debug("POST", "compact")
            await self._debug("POST", "faults", {"drop_watches": True})  # watchers resume from an old RV -> 410
        elif kind == "node_death":
            target = rng.choice(lab.node_names())
            await self.node_death(target)
            try:
                await self._hold(1.0, 6.0)
            finally:
                await self.node_return(target)
        elif kind == "partition":
            target = rng.choice(lab.node_names())
            partition(lab.topo, target, allow_macs=[lab.topo.hosts["client"].mac])
            start = time.monotonic()
            try:
                await self._hold(2.5, 5.0)
            finally:
                heal_partition(lab.topo, target)
                self.partitions.append((target, start, time.monotonic()))
        elif kind == "redis_down_node_death":
            redis = [n for n in sup.procs if n == "redis" or n.startswith("redis-")]
            target = rng.choice(lab.node_names())
            for r in redis:
                sup.signal(r, signal.SIGSTOP)
            try:
                await self._hold(0.3, 1.5)
                await self.node_death(target)
                await self._hold(1.0, 4.0)
            finally:
                for r in redis:
                    sup.signal(r, signal.SIGCONT)
            try:
                await self._hold(0.5, 2.0)
            finally:
                await self.node_return(target)
        elif kind == "loss":
            target = rng.choice(lab.node_names())
            loss = rng.choice((0.1, 0.5))
            label = f"{target} {loss:.0%}"
            lossy(lab.topo, target, loss, allow_macs=[lab.topo.hosts["client"].mac])
            start = time.monotonic()
            try:
                await self._hold(3.0, 8.0)
            finally:
                heal_loss(lab.topo, target)
                self.lossy.append((target, loss, start, time.monotonic()))
        elif kind == "link_down":
            target = rng.choice(lab.node_names())
            lab.topo.hosts[target].link(False)
            try:
                await self._hold(0.5, 3.0)
            finally:
                lab.topo.hosts[target].link(True)
        self.report.faults.append(FaultRecord(kind, label or target, round(t0, 3), round(self.now(), 3)))
        _FAULTS.labels(kind).inc()
        self.last_fault_end = self.now()

    async def node_death(self, node: str) -> None:
        """Cable out + SIGKILL of everything on the node (co-located: its Redis/allocator/leases too)."""
        lab = self.lab
        self.dead_nodes.add(node)
        if isinstance(lab, ColocatedLab):
            lab.node_death(node)
        else:
            lab.topo.cut(node, False)
            lab.sup.signal(f"announcer-{node}", signal.SIGKILL)

    async def node_return(self, node: str) -> None:
        lab = self.lab
        if isinstance(lab, ColocatedLab):
            if node in lab.dead:
                await lab.node_return(node)
        else:
            p = lab.sup.procs.get(f"announcer-{node}")
            if p is not None and p.proc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.proc.wait(), 5)
            lab.topo.cut(node, True)
            await self._restart(f"announcer-{node}")
        self.dead_nodes.discard(node)

    async def redis_master_proc(self) -> str:
        """The process of the Redis master ("redis" in the classic lab, "redis-N" co-located)."""
        lab = self.lab
        if isinstance(lab, ColocatedLab):
            host = await lab.master_host()
            return f"redis-{lab.placement.redis.index(host) if host in lab.placement.redis else 0}"
        return "redis"

    async def leader(self, lease: str) -> str | None:
        """holderIdentity of the leader-election Lease (the instance name is the process name)."""
        if self.client is None:
            return None
        try:
            with KubeClient.deadline(3):
                obj = await self.client.get(RESOURCES["leases"], lease, "l2lb-system")
        except (KubeError, TimeoutError, aiohttp.ClientError, OSError):
            return None
        holder = (obj.get("spec") or {}).get("holderIdentity")
        return holder if isinstance(holder, str) and holder in self.lab.sup.procs else None

    async def pick_process(self) -> tuple[str, str]:
        """Process faults take turns: allocator leader, leases leader, a standby, an announcer."""
        lab, rng = self.lab, self.rng
        role = PROCESS_ROLES[self._proc_turn % len(PROCESS_ROLES)]
        self._proc_turn += 1
        if role in ("allocator", "leases"):
            lead = await self.leader(f"l2lb-{role}")
            if lead:
                return lead, f"{lead}(leader)"
            role = "standby"
        if role == "standby":
            leads = {await self.leader("l2lb-allocator"), await self.leader("l2lb-leases")}
            standbys = [n for n in lab.control_procs() if n not in leads]
            name = rng.choice(standbys or lab.control_procs())
            return name, f"{name}(standby)" if standbys else name
        name = rng.choice(lab.announcer_procs())
        return name, name

    async def fault_loop(self, end: float) -> None:
        while self.now() < end:
            try:
                await self.restart_crashed("between faults")
                await self.fault_once()
            except (RuntimeError, aiohttp.ClientError, OSError, netns.NetnsError) as e:
                self.report.notes.append(f"fault injection failed at {self.now():.1f}s: {e}")
            await asyncio.sleep(self.rng.uniform(*self.fault_gap))

    # -- churn ----------------------------------------------------------------------------------
    def _svc_doc(self, c: ChurnSvc) -> dict[str, Any]:
        ann: dict[str, str] = {}
        labels = {"app": "chaos", "chaos-kind": c.kind}
        if c.kind == "request" and c.ip:
            ann["io.cilium/lb-ipam-ips"] = c.ip
        elif c.kind == "conflict":
            ann["io.cilium/lb-ipam-ips"] = "198.51.100.153"  # the Pi-hole's IP, no sharing key: refused
        elif c.kind == "extra":
            labels["chaos-pool"] = "extra"
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": c.name, "namespace": "chaos", "labels": labels, "annotations": ann},
                "spec": {"type": "LoadBalancer", "selector": {"app": c.name},
                         "ports": [{"name": "p", "port": 8000 + self._n % 100, "protocol": "TCP"}]}}

    def _free_request_ip(self) -> str | None:
        used = {c.ip for c in self.churn.values() if c.ip}
        for o in self.services:  # what the API shows too (a failed delete may have left a holder)
            used.update(status_ips(o))
            used.update(_split_ips(((o.get("metadata") or {}).get("annotations") or {}).get("io.cilium/lb-ipam-ips")))
        free = [ip for ip in REQUEST_IPS if ip not in used]
        return self.crng.choice(free) if free else None

    async def churn_once(self, client: KubeClient) -> None:
        rng, res = self.crng, RESOURCES["services"]
        op = rng.choices(["create", "change", "delete", "pool"], [4, 2, 3, 1])[0]
        if op == "create" and len(self.churn) >= 10:
            op = "delete"
        if op in ("change", "delete") and not self.churn:
            op = "create"
        counts = self.report.churn
        try:
            with KubeClient.deadline(10):
                if op == "create":
                    self._n += 1
                    kind = rng.choices(["auto", "request", "extra", "conflict"], [3, 3, 2, 1])[0]
                    c = ChurnSvc(f"churn-{self._n}", kind, self._free_request_ip() if kind == "request" else None)
                    if kind == "request" and c.ip is None:
                        c.kind = "auto"
                    self.churn[c.name] = c
                    try:
                        await client.create_object(res, self._svc_doc(c), "chaos")
                    except (KubeError, TimeoutError, aiohttp.ClientError, OSError):
                        self.churn.pop(c.name, None)
                        raise
                elif op == "change":
                    cands = [c for c in self.churn.values() if c.kind == "request"]
                    ip = self._free_request_ip()
                    if not cands or ip is None:
                        return
                    c = rng.choice(cands)
                    c.ip = ip
                    await client.patch(res, c.name, {"metadata": {"annotations": {"io.cilium/lb-ipam-ips": ip}}},
                                       "chaos")
                elif op == "delete":
                    c = self.churn.pop(rng.choice(sorted(self.churn)))
                    await client.delete(res, c.name, "chaos")
                else:
                    pr = RESOURCES["cilium_pools_v2alpha1"]
                    self.stability.pools_changed(self.now())
                    if self.extra_pool:
                        op = "pool_delete"
                        self.extra_pool = False
                        await client.delete(pr, "chaos-extra")
                    else:
                        op = "pool_create"
                        self.extra_pool = True
                        await client.create_object(pr, extra_pool())
                    self.stability.pools_changed(self.now())
            counts[op] = counts.get(op, 0) + 1
        except (KubeError, TimeoutError, aiohttp.ClientError, OSError) as e:
            counts[f"{op}_failed"] = counts.get(f"{op}_failed", 0) + 1
            log.info("chaos churn call failed", extra={"op": op, "error": str(e)})
        self.last_fault_end = self.now()

    async def churn_loop(self, client: KubeClient, end: float) -> None:
        if self.churn_per_s <= 0:
            return
        while self.now() < end:
            await self.churn_once(client)
            await asyncio.sleep(self.crng.expovariate(self.churn_per_s))

    # -- convergence ----------------------------------------------------------------------------
    async def heal(self) -> None:
        with contextlib.suppress(RuntimeError, aiohttp.ClientError, OSError):
            await self._debug("DELETE", "faults")
        for node in list(self.dead_nodes):
            await self.node_return(node)
        for node in self.lab.node_names():
            heal_partition(self.lab.topo, node)
            heal_loss(self.lab.topo, node)
        for name in self.lab.topo.hosts:
            if name.startswith("node-"):
                self.lab.topo.hosts[name].link(True)
        for name in list(self.lab.sup.procs):
            self.lab.sup.signal(name, signal.SIGCONT)
        await self.restart_crashed("after the faults")

    async def restart_crashed(self, when: str) -> None:
        """A process that exited although no fault killed it is a finding: note it, start it again."""
        for name, p in list(self.lab.sup.procs.items()):
            if not p.alive:
                rc = p.proc.returncode if p.proc else None
                self.report.notes.append(f"{name} exited by itself (exit {rc}) {when} at {self.now():.1f}s; "
                                         f"restarted; log: {p.log_path}")
                await self._restart(name)

    def _unconverged(self) -> list[str]:
        macs = self.lab.mac_to_node()
        want: list[str] = []
        for s in self.services:
            # what is expected comes from the object itself: a churn call that failed on an API fault
            # may or may not have been applied
            key = _key(s)
            meta = s.get("metadata") or {}
            if (meta.get("labels") or {}).get("chaos-kind") == "conflict":
                continue  # asks for a taken IP without a sharing key: must stay without it
            ips = status_ips(s)
            if not ips:
                want.append(f"{key}: no IP")
                continue
            requested = (meta.get("annotations") or {}).get("io.cilium/lb-ipam-ips")
            if requested and requested not in ips:
                want.append(f"{key}: has {ips}, requested {requested}")
            for ip in ips:
                got = self.prober.last_answer(ip, 0.5)
                if got is None or len(got) != 1 or next(iter(got)) not in macs:
                    want.append(f"{key}: {ip} answered by {sorted(got) if got is not None else 'not probed'}")
        return want

    async def converge(self) -> None:
        t_last = self.last_fault_end
        deadline = time.monotonic() + self.converge_bound + 20
        pending: list[str] = ["not checked"]
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            pending = self._unconverged()
            if not pending:
                self.report.converge_s = round(self.now() - t_last, 3)
                break
        if self.report.converge_s is None or self.report.converge_s > self.converge_bound:
            self.report.violation("no_convergence", f"not converged {self.converge_bound:.0f} s after the last fault "
                                  f"(took {self.report.converge_s}); pending: {pending[:5]}", self.now())

    # -- analysis -------------------------------------------------------------------------------
    def partition_violations(self) -> None:
        """A partitioned node (cut off from Redis and its peers, still seen by LAN clients) must have
        stopped answering ``partition_stop_s`` after the cut, for as long as the partition lasts."""
        bound = getattr(self, "partition_stop_s", PARTITION_STOP_S)
        for node, start, end in self.partitions:
            mac = self.lab.topo.hosts[node].mac
            late = sorted((t, vip) for vip, hist in self.prober.history.items() for t, got in hist
                          if start + bound <= t <= end and mac in got)
            if late:
                t, vip = late[0]
                self.report.violation("partitioned_node_kept_answering",
                                      f"{node} answered for {vip} {t - start:.2f} s after it was partitioned "
                                      f"(and {len(late)} more times until {end - start:.1f} s)", start - self.t0)

    def analyse_probes(self) -> None:
        r = self.report
        r.probes_sent = self.prober.sent
        self.partition_violations()
        for vip, hist in self.prober.history.items():
            for ep in dual_episodes(vip, hist, interval=self.prober.interval_s):
                ms = ep.seconds * 1000
                if ms > r.worst_dual_ms:
                    r.worst_dual_ms = ms
                    r.worst_dual = {"vip": vip, "at_s": round(ep.start - self.t0, 3), "macs": list(ep.macs),
                                    "during": self._faults_at(ep.start, ep.end)}
                if ep.seconds > DUAL_ALLOWED_S:
                    r.violation("dual_announcement_over_1s", f"{vip} answered by {list(ep.macs)} for {ms:.0f} ms "
                                f"(faults: {self._faults_at(ep.start, ep.end)})", ep.start - self.t0)
            if vip not in self.stable_vips:
                continue
            for ep in outages(vip, hist):
                ms = ep.seconds * 1000
                if ms > r.worst_outage_ms:
                    r.worst_outage_ms = ms
                    r.worst_outage = {"vip": vip, "at_s": round(ep.start - self.t0, 3),
                                      "during": self._faults_at(ep.start, ep.end)}

    def _faults_at(self, a: float, b: float) -> list[str]:
        a, b = a - self.t0 - 3, b - self.t0
        return [f"{f.kind}:{f.target}@{f.start:.1f}" for f in self.report.faults if f.start <= b and f.end >= a][:4]


def _extra_pool_scope(svc: Mapping[str, Any], ips: tuple[str, ...]) -> bool:
    """Only Services the churned selective pool selects, or that held its IPs, may move when it changes."""
    lo, hi = (int(ipaddress.IPv4Address(x)) for x in EXTRA_POOL)
    labels = (svc.get("metadata") or {}).get("labels") or {}
    return labels.get("chaos-pool") == "extra" or any(
        ":" not in ip and lo <= int(ipaddress.IPv4Address(ip)) <= hi for ip in ips)


def _split_ips(v: Any) -> list[str]:
    return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else []


def _key(s: Mapping[str, Any]) -> str:
    m = s.get("metadata") or {}
    return f"{m.get('namespace')}/{m.get('name')}"


async def _redis_keys(url: str) -> list[str]:
    from l2lb.adapters.bus.client import Bus

    bus = await Bus.connect(url, client_name="l2lb-chaos")  # redis:// or redis+sentinel://
    try:
        return [k.decode() if isinstance(k, bytes) else str(k) async for k in bus.redis.scan_iter(count=1000)]
    finally:
        await bus.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False


class ColocatedChaosLab(ColocatedLab, ChaosLab):
    """The chaos lab with Redis, allocator and leases inside the node namespaces (l2lb.lab.placement),
    the chaos lab's fast leader election (2 s Leases) and manifests."""


async def run_chaos(seed: int, duration: float, *, nodes: int = 3, prefix: str = "l2chs", churn_per_s: float = 1.0,
                    probe_ms: float = 50.0, workdir: Path | None = None, quiet: bool = False,
                    converge_bound: float = CONVERGE_BOUND_S, placement: Placement | None = None,
                    le_backend: str = "kube", node_faults: bool = False,
                    partition_stop_s: float = PARTITION_STOP_S, kinds: Sequence[str] | None = None) -> ChaosReport:
    """Build the lab, run ``duration`` seconds of seeded faults and churn, converge, clean up, report.

    ``placement``: run Redis, allocator and leases where it says (co-located in node namespaces);
    default the classic layout (all of them in the control-plane namespace)."""
    ok, why = netns.have_privileges()
    if not ok:
        raise RuntimeError(why)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="l2lb-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    progress = Progress(quiet)
    netns.sweep(prefix)
    args = argparse.Namespace(nodes=nodes, manifests=None, probe_ms=10.0, round_timeout=10.0, timeout=60.0,
                              json_logs=False, keep=False)
    lab: ChaosLab
    if placement is not None:
        lab = ColocatedChaosLab(args, workdir, netns.Topology(prefix), Supervisor(workdir / "logs"), progress,
                                placement=placement, fast_le=True, le_backend=le_backend)
    else:
        lab = ChaosLab(args, workdir, netns.Topology(prefix), Supervisor(workdir / "logs"), progress)
    run: ChaosRun | None = None
    pids: list[int] = []
    try:
        with progress.step(f"building the lab ({nodes} nodes, standby allocator and leases)"):
            lab.build_network()
        with netns.entered(lab.topo.hosts["ctl"].ns):
            with progress.step("bringing the cluster up"):
                await lab.bring_up()
            run = ChaosRun(lab, seed, duration, churn_per_s=churn_per_s, probe_ms=probe_ms,
                           converge_bound=converge_bound, node_faults=node_faults,
                           partition_stop_s=partition_stop_s, kinds=kinds)
            client = await KubeClient.create(str(lab.kubeconfig), qps=200, burst=400, user_agent="l2lb-chaos")
            run.client = client
            stop = asyncio.Event()
            try:
                observer = asyncio.create_task(run.observe_api(client, stop))
                probing = asyncio.create_task(run.prober.run(stop))
                await asyncio.sleep(1.0)
                end = run.now() + duration
                with progress.step(f"{duration:.0f} s of faults and churn (seed {seed})"):
                    await asyncio.gather(run.fault_loop(end), run.churn_loop(client, end))
                with progress.step("healing and waiting for convergence"):
                    await run.heal()
                    await run.converge()
                    await asyncio.sleep(1.0)  # a last stretch of probes after convergence
                stop.set()
                await asyncio.gather(observer, probing)
                run.analyse_probes()
                keys = await _redis_keys(lab.redis_url)
                bad = [k for k in keys if not k.startswith("l2lb:")]
                run.report.leaks["redis_keys_total"] = len(keys)
                run.report.leaks["redis_keys_outside_prefix"] = bad
                if bad:
                    run.report.violation("redis_key_outside_prefix", f"{bad[:5]}", run.now())
            finally:
                stop.set()
                await client.close()
                run.prober.close()
    finally:
        pids = [p.pid for p in lab.sup.procs.values() if p.pid]
        with progress.step("cleaning up"):
            forced = await lab.sup.stop_all()
            lab.topo.destroy()
    report = run.report if run else ChaosReport(seed=seed, duration_s=duration)
    left_ns = [n for n in netns.list_namespaces() if n.startswith(prefix)]
    left_pids = [pid for pid in pids if _pid_alive(pid)]
    report.leaks.update({"namespaces": left_ns, "processes": left_pids, "forced_kill": forced,
                         "logs": str(lab.sup.logdir)})
    if left_ns:
        report.violation("leaked_namespace", str(left_ns), time.monotonic() - (run.t0 if run else 0))
    if left_pids:
        report.violation("leaked_process", str(left_pids), time.monotonic() - (run.t0 if run else 0))
    return report
