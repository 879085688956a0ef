"""Kubernetes API traffic: l2lb's leases service vs Cilium's per-Service Lease model.

Both run against the same embedded API server (its request log counts every request):

* **l2lb**: the real leases service (leader election on its one Lease, informers, mirror Leases,
  conditions, Events) with N Services and M fake announcers heartbeating over a real Redis.
* **cilium model**: every node runs, for every Service, client-go's leader election on one Lease
  ("cilium-l2announce-<ns>-<name>"; 15 s duration, 5 s renew deadline, 2 s retry -- Cilium's
  defaults) through one rate-limited client per node at Cilium's default qps 5 / burst 10.

Each runs at rest and under churn (a node dies and returns every few seconds; one Service is
replaced every second). Usage::

    python bench/api_traffic/run.py                       # 60 s per run, 100x3 and 1000x10
    python bench/api_traffic/run.py --duration 10 --scales 100x3,1000x10   # CI
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from l2lb.adapters.bus.client import Bus  # noqa: E402
from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError  # noqa: E402
from l2lb.adapters.kube.leader import micro_time  # noqa: E402
from l2lb.adapters.kube.ratelimit import TokenBucket  # noqa: E402
from l2lb.obs import metrics  # noqa: E402
from l2lb.obs.log import setup_logging  # noqa: E402
from tests.leases.harness import Harness, wait_for  # noqa: E402
from tests.support.kube import ApiServerProcess, KubeHandle  # noqa: E402
from tests.support.redis_server import RedisProcess  # noqa: E402

NS = "bench"
CRDS = REPO / "k8s" / "crds"
CILIUM_NS = "kube-system"


class CountingHandler(logging.Handler):
    """Counts log records by a few substrings (throttling waits, failed lease requests)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "client-side throttling" in msg:
            self.counts["throttled_waits_logged"] += 1
        if "lease request failed" in msg:
            err = str(getattr(record, "error", ""))
            self.counts["lease_requests_failed"] += 1
            if "rate limiter" in err:
                self.counts["rate_limiter_deadline"] += 1


def _wait_hist() -> tuple[float, float]:
    s = metrics.REGISTRY.get_sample_value("l2lb_kube_ratelimit_wait_seconds_sum") or 0.0
    c = metrics.REGISTRY.get_sample_value("l2lb_kube_ratelimit_wait_seconds_count") or 0.0
    return s, c


def ip_of(i: int) -> str:
    return f"2001:db8::{i + 1:x}"  # documentation range; nothing is ever sent to it


def _prepare(kube: KubeHandle, n_svc: int, services: bool) -> None:
    kube.reset()
    kube.apply(CRDS)
    kube.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n"
               "apiVersion: v1\nkind: Namespace\nmetadata: {name: l2lb-system}\n")
    if services:
        path = f"/api/v1/namespaces/{NS}/services"
        for i in range(n_svc):
            body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{i}", "namespace": NS},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}}
            code, out, _ = kube.http("POST", path, body)
            if code >= 400:
                raise RuntimeError(f"cannot create Service svc{i}: {code} {out}")
        kube.apply("apiVersion: l2lb.io/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: all}\n"
                   "spec: {loadBalancerIPs: true}\n")


def _summarise(reqs: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    verbs = Counter(str(r.get("verb")) for r in reqs)
    return {"requests": len(reqs), "req_per_s": len(reqs) / duration, "verbs": dict(sorted(verbs.items()))}


async def run_l2lb(kube: KubeHandle, redis: RedisProcess, n_svc: int, n_nodes: int, duration: float,
                   churn: bool, mirror: bool) -> dict[str, Any]:
    await asyncio.to_thread(_prepare, kube, n_svc, True)
    redis.flushall()
    bus = await Bus.connect(redis.url, prefix="bench")
    h = Harness(bus)
    client = await KubeClient.create(kube.kubeconfig, user_agent="l2lb-leases")
    try:
        for i in range(n_nodes):
            await h.add_node(f"node-{i}", ifaces=(("eth0", True),))
        for i in range(n_svc):
            await h.allocate(f"{NS}/svc{i}", ip_of(i))
        running = h.start_leases(client, static_policies=[], leader_election=True, mirror_leases=mirror,
                                 instance="leases-bench", policy_kinds=("l2lb",))
        svc = running.svc
        await wait_for(lambda: len(h.serving()) == n_svc, 120, step=0.2)
        await wait_for(lambda: not len(svc.writes), 300, step=0.2)  # initial conditions/mirrors/events
        await asyncio.sleep(2.0)
        moves0, wait0 = svc.m.moves_total, _wait_hist()
        await asyncio.to_thread(kube.clear_requests)
        t0 = time.monotonic()
        next_churn, next_replace, victim, revive_at, extra = t0 + 2.0, t0 + 1.0, 0, 0.0, n_svc
        while (now := time.monotonic()) < t0 + duration:
            if churn:
                if now >= next_churn:
                    h.announcers[f"node-{victim % n_nodes}"].die()
                    revive_at, next_churn = now + 3.0, now + 6.0
                if revive_at and now >= revive_at:
                    h.announcers[f"node-{victim % n_nodes}"].revive()
                    revive_at, victim = 0.0, victim + 1
                if now >= next_replace:  # one Service replaced per second (its IP comes and goes)
                    await h.allocate(f"{NS}/svc{extra - n_svc}", deleted=True)
                    await h.allocate(f"{NS}/churn{extra}", ip_of(extra))
                    extra += 1
                    next_replace = now + 1.0
            await asyncio.sleep(0.05)
        reqs = await asyncio.to_thread(kube.requests)
        reqs = [r for r in reqs if r.get("t", 0) > 0]
        out = _summarise(reqs, duration)
        w1 = _wait_hist()
        out.update({
            "moves": svc.m.moves_total - moves0,
            "announced": len(h.serving()),
            "throttle_wait_s_total": round(w1[0] - wait0[0], 3),
        })
        return out
    finally:
        await h.close()
        await client.close()
        await bus.close()


class CiliumLease:
    """One node's client-go leader election on one Service's Lease (GET, then PUT when we hold it
    or it expired; renewals bounded by the 5 s renew deadline, acquisitions not bounded -- they
    queue in the node's rate limiter as in client-go)."""

    DURATION, RENEW_DEADLINE, RETRY = 15.0, 5.0, 2.0

    def __init__(self, client: KubeClient, node: str, name: str, stats: Counter[str]):
        self.client, self.node, self.name, self.stats = client, node, name, stats
        self.leader = False
        self.last_renew = 0.0
        self.observed: tuple[str, str] = ("", "")  # (holder, renewTime) last seen
        self.observed_at = 0.0

    def _spec(self, transitions: int, acquire: str | None) -> dict[str, Any]:
        now = micro_time()
        return {"holderIdentity": self.node, "leaseDurationSeconds": int(self.DURATION),
                "acquireTime": acquire or now, "renewTime": now, "leaseTransitions": transitions}

    async def attempt(self) -> None:
        res = RESOURCES["leases"]
        try:
            lease = await self.client.get(res, self.name, CILIUM_NS)
        except KubeError as e:
            if e.status != 404:
                raise
            body = {"metadata": {"name": self.name, "namespace": CILIUM_NS}, "spec": self._spec(0, None)}
            await self.client.create_object(res, body, CILIUM_NS)
            self.leader, self.last_renew = True, time.monotonic()
            return
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        seen = (holder, str(spec.get("renewTime") or ""))
        if seen != self.observed:
            self.observed, self.observed_at = seen, time.monotonic()
        if holder and holder != self.node and time.monotonic() < self.observed_at + self.DURATION:
            self.leader = False
            return
        trans = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.node else 1)
        lease["spec"] = self._spec(trans, spec.get("acquireTime") if holder == self.node else None)
        await self.client.replace(res, lease, CILIUM_NS)
        if not self.leader:
            self.stats["acquired"] += 1
        self.leader, self.last_renew = True, time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.random() * self.RETRY)
        while not stop.is_set():
            try:
                if self.leader:
                    with KubeClient.deadline(self.RENEW_DEADLINE):
                        await self.attempt()
                else:
                    await self.attempt()
            except KubeError as e:
                self.stats["ratelimit_deadline" if e.status == 0 else f"http_{e.status}"] += 1
                if self.leader and time.monotonic() - self.last_renew > self.RENEW_DEADLINE:
                    self.leader = False
                    self.stats["lost"] += 1
            delay = self.RETRY * (1.0 if self.leader else 1.0 + 0.2 * random.random())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def _valid_leases(kube: KubeHandle) -> int:
    code, lst, _ = kube.http("GET", f"/apis/coordination.k8s.io/v1/namespaces/{CILIUM_NS}/leases")
    if code != 200:
        return 0
    now = time.time()
    n = 0
    for it in lst.get("items", []):
        spec = it.get("spec") or {}
        rt = str(spec.get("renewTime") or "")
        try:
            t = datetime.strptime(rt[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
        if spec.get("holderIdentity") and now - t < float(spec.get("leaseDurationSeconds") or 15):
            n += 1
    return n


async def run_cilium(kube: KubeHandle, n_svc: int, n_nodes: int, duration: float, churn: bool,
                     warmup: float) -> dict[str, Any]:
    await asyncio.to_thread(_prepare, kube, n_svc, False)
    async def new_client(n: int) -> KubeClient:  # one client (own qps 5 / burst 10 bucket) per agent run
        return await KubeClient.create(kube.kubeconfig, limiter=TokenBucket(5, 10), user_agent=f"cilium-node-{n}",
                                       request_timeout=3600.0)

    clients = [await new_client(n) for n in range(n_nodes)]
    old_clients: list[KubeClient] = []
    stats: Counter[str] = Counter()
    stops = [asyncio.Event() for _ in range(n_nodes)]
    tasks: list[list[asyncio.Task[None]]] = [[] for _ in range(n_nodes)]

    def start_node(n: int) -> None:
        stops[n] = asyncio.Event()
        tasks[n] = [asyncio.create_task(CiliumLease(clients[n], f"node-{n}", f"cilium-l2announce-{NS}-svc{i}",
                                                    stats).run(stops[n])) for i in range(n_svc)]

    async def stop_node(n: int) -> None:
        stops[n].set()
        for t in tasks[n]:
            t.cancel()  # a crashed node: no release
        await asyncio.gather(*tasks[n], return_exceptions=True)

    try:
        for n in range(n_nodes):
            start_node(n)
        await asyncio.sleep(warmup)
        stats.clear()
        wait0 = _wait_hist()
        await asyncio.to_thread(kube.clear_requests)
        t0 = time.monotonic()
        next_churn, victim, revive_at = t0 + 2.0, 0, 0.0
        valid: list[int] = []
        next_sample = t0
        while (now := time.monotonic()) < t0 + duration:
            if now >= next_sample:
                valid.append(await asyncio.to_thread(_valid_leases, kube))
                next_sample = now + max(1.0, duration / 10)
            if churn:
                if now >= next_churn:
                    await stop_node(victim % n_nodes)
                    revive_at, next_churn = now + 3.0, now + 6.0
                if revive_at and now >= revive_at:
                    n = victim % n_nodes
                    old_clients.append(clients[n])
                    clients[n] = await new_client(n)  # the restarted agent has a fresh rate limiter
                    start_node(n)
                    revive_at, victim = 0.0, victim + 1
            await asyncio.sleep(0.1)
        reqs = [r for r in await asyncio.to_thread(kube.requests) if r.get("path", "").find("cilium-l2announce") >= 0]
        out = _summarise(reqs, duration)
        w1 = _wait_hist()
        n_wait = max(1.0, w1[1] - wait0[1])
        out.update({
            "announced": min(valid) if valid else 0,
            "announced_mean": round(sum(valid) / max(1, len(valid)), 1),
            "throttle_wait_mean_s": round((w1[0] - wait0[0]) / n_wait, 2),
            "ratelimit_deadline": stats["ratelimit_deadline"],
            "leases_lost": stats["lost"],
            "demanded_req_per_s": round(n_nodes * n_svc / CiliumLease.RETRY + n_svc / CiliumLease.RETRY, 1),
        })
        return out
    finally:
        for n in range(n_nodes):
            with contextlib.suppress(Exception):
                await stop_node(n)
        for c in clients + old_clients:
            await c.close()


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    setup_logging("error")
    counter = CountingHandler()
    for name in ("l2lb.kube.leader", "l2lb.kube"):
        lg = logging.getLogger(name)
        lg.addHandler(counter)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="l2lb-bench-") as tmp:
        redis = RedisProcess(Path(tmp) / "redis")
        api = ApiServerProcess(Path(tmp) / "apiserver")
        redis.start()
        api.start()
        try:
            for scale in args.scales.split(","):
                n_svc, n_nodes = (int(x) for x in scale.lower().split("x"))
                for mode in args.modes.split(","):
                    churn = mode == "churn"
                    for model in args.models.split(","):
                        t = time.monotonic()
                        if model == "l2lb":
                            r = await run_l2lb(api.handle, redis, n_svc, n_nodes, args.duration, churn,
                                               not args.no_mirror)
                        else:
                            r = await run_cilium(api.handle, n_svc, n_nodes, args.duration, churn,
                                                 args.cilium_warmup)
                        r.update({"model": model, "services": n_svc, "nodes": n_nodes, "mode": mode,
                                  "wall_s": round(time.monotonic() - t, 1)})
                        rows.append(r)
                        print(_row(r), flush=True)
        finally:
            api.stop()
            redis.stop()
    return rows


HEADER = (f"{'model':8} {'services':>8} {'nodes':>5} {'mode':6} {'req/s':>8} {'announced':>10}  "
          "notes")


def _row(r: dict[str, Any]) -> str:
    if r["model"] == "l2lb":
        notes = (f"moves={r['moves']} throttle_wait={r['throttle_wait_s_total']}s verbs={r['verbs']}")
    else:
        notes = (f"demanded={r['demanded_req_per_s']}/s mean-throttle-wait={r['throttle_wait_mean_s']}s "
                 f"renew-deadline-failures={r['ratelimit_deadline']} leases-lost={r['leases_lost']} "
                 f"valid-leases-mean={r['announced_mean']} verbs={r['verbs']}")
    return (f"{r['model']:8} {r['services']:>8} {r['nodes']:>5} {r['mode']:6} {r['req_per_s']:>8.2f} "
            f"{r['announced']:>5}/{r['services']:<4}  {notes}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0, help="seconds measured per run (default 60)")
    p.add_argument("--scales", default="100x3,1000x10", help="comma list of SERVICESxNODES")
    p.add_argument("--modes", default="rest,churn")
    p.add_argument("--models", default="l2lb,cilium")
    p.add_argument("--cilium-warmup", type=float, default=20.0,
                   help="seconds the Cilium model runs before measuring (default 20)")
    p.add_argument("--no-mirror", action="store_true", help="run l2lb without mirror Leases")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    print(HEADER, flush=True)
    rows = asyncio.run(amain(args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    worst = max((r["req_per_s"] for r in rows if r["model"] == "l2lb" and r["mode"] == "rest"), default=0.0)
    print(f"\nl2lb at rest: worst {worst:.2f} req/s (goal <= 1 req/s, flat in services and nodes)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
