"""One "node" of the Cilium model: holds/competes for one Kubernetes Lease per Service.

Cilium's L2 announcer runs, on every node, a client-go leader election per Service on a Lease
named cilium-l2announce-<ns>-<svc> (defaults: lease duration 15 s, renew deadline 5 s, retry
period 2 s), through the agent's client with its rate limit (default qps 5 / burst 10 in older
releases). This process does the same with l2lb's own LeaderElector (client-go's algorithm) and
rate-limited client, so both sides of the comparison run against the same API server.

Run by bench/failover/run.py; SIGKILL of this process is a node crash (no release).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from l2lb.adapters.kube.client import KubeClient
from l2lb.adapters.kube.leader import LeaderElector


async def main_async(a: argparse.Namespace) -> None:
    client = await KubeClient.create(a.kubeconfig, qps=a.qps, burst=a.burst, user_agent=f"cilium-model/{a.identity}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    electors = [
        LeaderElector(client, namespace=a.namespace, name=f"cilium-l2announce-bench-svc{i}", identity=a.identity,
                      lease_duration=a.duration, renew_deadline=a.renew, retry_period=a.retry)
        for i in range(a.leases)
    ]
    try:
        await asyncio.gather(*(e.run(stop) for e in electors))
    finally:
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--namespace", default="kube-system")
    p.add_argument("--leases", type=int, default=30)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--renew", type=float, default=5.0)
    p.add_argument("--retry", type=float, default=2.0)
    p.add_argument("--qps", type=float, default=5.0)
    p.add_argument("--burst", type=int, default=10)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
