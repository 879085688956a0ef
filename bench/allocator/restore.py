"""Restore benchmark: `l2lb allocator` killed with SIGKILL and restarted with N Services (default
10k) against the embedded API server and a real Redis. Prints the time to ready of the restarted
process (caches listed + every IP adopted; goal <= 5 s), IP changes (must be 0) and the API
requests it made, next to the first run that allocated everything.

    python bench/allocator/restore.py [--services N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.kube import ApiServerProcess, free_port  # noqa: E402
from tests.support.procs import http_get  # noqa: E402
from tests.support.redis_server import RedisProcess  # noqa: E402


def start_allocator(api: ApiServerProcess, redis_url: str, work: Path,
                    name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (work / f"{name}.log").open("wb")
    p = subprocess.Popen(
        [sys.executable, "-m", "l2lb.cli", "allocator", "--kubeconfig", api.kubeconfig, "--redis", redis_url,
         "--redis-prefix", "bench", "--instance", name, "--http-port", str(port), "--no-leader-election",
         "--kube-qps", "5000", "--kube-burst", "5000", "--no-events", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    return p, port


def wait_restored(port: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = http_get(f"http://127.0.0.1:{port}/v1/status")
        if code == 200:
            st: dict[str, Any] = json.loads(body)["allocator"]
            if st["restores"] >= 1 and st["role"] == "leader":
                code, _ = http_get(f"http://127.0.0.1:{port}/readyz")
                if code == 200:
                    return st
        time.sleep(0.02)
    raise SystemExit(f"allocator not ready within {timeout}s")


def ips(api: ApiServerProcess) -> dict[str, tuple[str, ...]]:
    code, obj, _ = api.handle.http("GET", "/api/v1/namespaces/bulk/services", timeout=60)
    assert code == 200
    return {i["metadata"]["name"]: tuple(x["ip"] for x in ((i.get("status") or {}).get("loadBalancer") or {})
                                         .get("ingress") or []) for i in obj["items"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10_000)
    args = ap.parse_args(argv)
    n = args.services
    with tempfile.TemporaryDirectory(prefix="l2lb-bench-restore-") as tmp:
        work = Path(tmp)
        api = ApiServerProcess(work / "api", bookmark_interval=5.0)
        redis = RedisProcess(work / "redis")
        api.start()
        redis.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            h = api.handle
            h.apply(ROOT / "k8s" / "crds")
            h.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: bulk}\n---\n"
                    "apiVersion: l2lb.io/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: bulk}\n"
                    "spec: {blocks: [{cidr: 10.96.0.0/16}, {cidr: '2001:db8:96::/64'}]}\n")
            t0 = time.monotonic()

            def create(i: int) -> None:
                body = {"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": f"s{i}", "namespace": "bulk"},
                        "spec": {"type": "LoadBalancer", "ports": [{"port": 80 + i % 7, "protocol": "TCP"}],
                                 "ipFamilyPolicy": "PreferDualStack" if i % 5 == 0 else "SingleStack"}}
                code, out, _ = h.http("POST", "/api/v1/namespaces/bulk/services", body)
                if code != 201:
                    raise SystemExit(f"create failed: {code} {out}")

            with ThreadPoolExecutor(8) as ex:
                list(ex.map(create, range(n)))
            print(f"created {n} Services in {time.monotonic() - t0:.1f} s")

            t0 = time.monotonic()
            p1, port1 = start_allocator(api, redis.url, work, "first")
            procs.append(p1)
            wait_restored(port1, 300)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                before = ips(api)
                if all(before.values()):
                    break
                time.sleep(0.5)
            t_first = time.monotonic() - t0
            print(f"first run: {n} Services allocated and written in {t_first:.1f} s "
                  f"({sum(len(v) for v in before.values())} IPs)")

            p1.send_signal(signal.SIGKILL)
            p1.wait(10)
            h.clear_requests()
            t0 = time.monotonic()
            p2, port2 = start_allocator(api, redis.url, work, "second")
            procs.append(p2)
            st = wait_restored(port2, 120)
            t_ready = time.monotonic() - t0
            time.sleep(1.0)
            after = ips(api)
            changed = sum(1 for k in before if before[k] != after.get(k))
            reqs = h.requests()
            by_verb: dict[str, int] = {}
            for r in reqs:
                verb = r.get("verb", "?")
                if verb not in ("list", "watch", "get"):
                    verb += " " + str(r.get("resource", ""))
                by_verb[verb] = by_verb.get(verb, 0) + 1
            print(f"restart after SIGKILL: ready in {t_ready:.2f} s (process start + list + restore; "
                  f"restore itself {st['last_restore_seconds']:.2f} s), IP changes: {changed}, "
                  f"API requests: {dict(sorted(by_verb.items()))}")
            print(f"goal: ready <= 5 s with 10k Services and 0 IP changes: "
                  f"{'met' if t_ready <= 5 and changed == 0 and n >= 10_000 else 'see figures'}")
            return 0 if changed == 0 else 1
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            api.stop()
            redis.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
