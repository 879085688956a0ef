"""Benchmark the LB-IPAM allocator against a naive reference.

Allocates then releases N Services (default 100k) across two IPv4 /16 pools and an IPv6 /64 pool
(a quarter dual-stack, a quarter IPv6 only), prints allocations/s and peak traced memory for
l2lb's allocator and for a naive reference that materialises every free address in a set (its IPv6
pool is cut to 2**18 addresses, since a real /64 cannot be materialised at all), and the ratios.

Speed is CPU time (time.process_time, so other load on a shared machine does not count), best of
two runs without tracing, Python's default GC on (the request objects are inputs: they are frozen
out of the GC's full passes). Memory comes from a third run under tracemalloc.

    python bench/allocator/run.py [--services N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import sys
import time
import tracemalloc
from collections.abc import Callable

from l2lb.core.allocator import Allocator
from l2lb.core.models import Block, Pool, ServiceRequest

V4S = ("10.20.0.0/16", "10.21.0.0/16")
V6 = "2001:db8:1::/64"
NAIVE_V6_CAP = 1 << 18


def requests(n: int) -> list[ServiceRequest]:
    out = []
    for i in range(n):
        kind = i % 4  # 0: dual-stack, 1: IPv6 only, 2-3: IPv4 only
        out.append(ServiceRequest(
            namespace=f"ns{i % 50}", name=f"svc{i}", ports=(("TCP", 80),),
            ip_family_policy="RequireDualStack" if kind == 0 else "SingleStack",
            ip_families=(6,) if kind == 1 else (),
        ))
    return out


class Naive:
    """Reference: a set of every free address per family; allocation pops the lowest."""

    def __init__(self, v6_cap: int):
        free4: set[int] = set()
        for cidr in V4S:
            n4 = ipaddress.ip_network(cidr)
            base4 = int(n4.network_address)
            free4.update(range(base4 + 1, base4 + n4.num_addresses - 1))
        base6 = int(ipaddress.ip_network(V6).network_address)
        self.free = {4: free4, 6: set(range(base6 + 1, base6 + 1 + v6_cap))}
        self.owned: dict[str, list[tuple[int, int]]] = {}

    def allocate(self, req: ServiceRequest) -> list[str]:
        fams = [4, 6] if req.ip_family_policy == "RequireDualStack" else list(req.ip_families or (4,))
        got = []
        for f in fams:
            k = self.free[f].pop()  # any free address
            got.append((f, k))
        self.owned[req.key] = got
        return [str(ipaddress.ip_address(k)) for _, k in got]

    def release(self, key: str) -> None:
        for f, k in self.owned.pop(key):
            self.free[f].add(k)


def _run_once(setup: Callable[[], object], alloc: Callable[[object, ServiceRequest], int],
              release: Callable[[object, str], None], reqs: list[ServiceRequest]) -> tuple[float, float, float, int]:
    gc.collect()
    t0 = time.process_time()
    obj = setup()
    t_setup = time.process_time() - t0
    t0 = time.process_time()
    ips = 0
    for r in reqs:
        ips += alloc(obj, r)
    t_alloc = time.process_time() - t0
    t0 = time.process_time()
    for r in reqs:
        release(obj, r.key)
    t_rel = time.process_time() - t0
    return t_setup, t_alloc, t_rel, ips


def measure(label: str, setup: Callable[[], object], alloc: Callable[[object, ServiceRequest], int],
            release: Callable[[object, str], None], reqs: list[ServiceRequest]) -> dict[str, float]:
    """Timed run without tracing (best of two), then a run under tracemalloc for peak memory."""
    runs = [_run_once(setup, alloc, release, reqs) for _ in range(2)]
    t_setup = min(r[0] for r in runs)
    t_alloc = min(r[1] for r in runs)
    t_rel = min(r[2] for r in runs)
    ips = runs[0][3]
    tracemalloc.start()
    obj = setup()
    at_rest = tracemalloc.get_traced_memory()[0]
    del obj
    tracemalloc.stop()
    tracemalloc.start()
    _run_once(setup, alloc, release, reqs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(reqs)
    row = {"setup_s": t_setup, "alloc_per_s": n / t_alloc, "ips": ips, "release_per_s": n / t_rel,
           "peak_mib": peak / 2**20, "pools_mib": at_rest / 2**20}
    print(f"{label:8s} setup {t_setup:7.3f} s   allocate {row['alloc_per_s']:>10,.0f} Services/s "
          f"({ips} IPs)   release {row['release_per_s']:>10,.0f}/s   peak memory {row['peak_mib']:6.1f} MiB "
          f"(pools alone {row['pools_mib']:6.2f} MiB)")
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="10k Services (smoke run)")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.services
    reqs = requests(n)
    gc.collect()
    gc.freeze()  # the inputs are not the allocator's state: keep them out of the GC's full passes
    pools = [Pool(f"v4-{i}", (Block.cidr(c),)) for i, c in enumerate(V4S)] + [Pool("v6", (Block.cidr(V6),))]

    def setup_l2lb() -> Allocator:
        a = Allocator()
        for p in pools:
            a.upsert_pool(p)
        return a

    def alloc_l2lb(a: object, r: ServiceRequest) -> int:
        assert isinstance(a, Allocator)
        res = a.allocate(r)
        if not res.ok:
            raise SystemExit(f"allocation failed: {res}")
        return len(res.ips)

    def rel_l2lb(a: object, key: str) -> None:
        assert isinstance(a, Allocator)
        a.release(key)

    def alloc_naive(a: object, r: ServiceRequest) -> int:
        assert isinstance(a, Naive)
        return len(a.allocate(r))

    def rel_naive(a: object, key: str) -> None:
        assert isinstance(a, Naive)
        a.release(key)

    print("allocations/s = Services allocated per second (every 4th gets two IPs); "
          "peak memory of the whole run (allocate all, release all) under tracemalloc")
    print(f"{n} Services, pools {' + '.join(V4S)} + {V6} (1/4 dual-stack, 1/4 IPv6 only); "
          f"naive IPv6 pool capped at {NAIVE_V6_CAP} addresses")
    mine = measure("l2lb", setup_l2lb, alloc_l2lb, rel_l2lb, reqs)
    naive = measure("naive", lambda: Naive(NAIVE_V6_CAP), alloc_naive, rel_naive, reqs)
    print(f"ratio l2lb/naive: allocate speed x{mine['alloc_per_s'] / naive['alloc_per_s']:.2f}, "
          f"release speed x{mine['release_per_s'] / naive['release_per_s']:.2f}, "
          f"peak memory x{mine['peak_mib'] / naive['peak_mib']:.3f}, "
          f"pools alone x{mine['pools_mib'] / naive['pools_mib']:.5f}, "
          f"setup x{mine['setup_s'] / max(naive['setup_s'], 1e-9):.4f}")
    goal = 100_000
    print(f"goal >= {goal:,} allocations/s: {'met' if mine['alloc_per_s'] >= goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
