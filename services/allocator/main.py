"""``l2lb allocator``: LB-IPAM for Services of type LoadBalancer (active/standby)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import uuid

from l2lb.runtime.args import add_http_log_args, add_leader_election_args, check_leader_election_args, parse_kinds
from l2lb.runtime.config import parse_with_config
from l2lb.runtime.run import run_service
from services.allocator.service import POOL_RESOURCES, AllocatorConfig


def build_parser() -> argparse.ArgumentParser:
    from l2lb.adapters.bus.client import add_redis_args
    from l2lb.adapters.kube.client import add_kube_args

    p = argparse.ArgumentParser(prog="l2lb allocator", description=__doc__)
    p.add_argument("--instance",
                   default=os.environ.get("L2LB_INSTANCE") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
                   help="identity of this process (leader election); default hostname-random")
    p.add_argument("--namespace", default=os.environ.get("L2LB_NAMESPACE", "l2lb-system"),
                   help="namespace of the leader-election Lease l2lb-allocator (default l2lb-system)")
    p.add_argument("--pool-kinds", default=os.environ.get("L2LB_POOL_KINDS", "l2lb,cilium,metallb"),
                   help="comma list of pool resources to watch: l2lb, cilium (v2alpha1), cilium-v2, metallb")
    p.add_argument("--cilium-compat", action="store_true",
                   default=os.environ.get("L2LB_CILIUM_COMPAT", "") in ("1", "true", "yes"),
                   help="also handle Services of loadBalancerClass io.cilium/l2-announcer")
    p.add_argument("--no-events", action="store_true", help="do not record Events")
    p.add_argument("--no-pool-status", action="store_true", help="do not write pool status counters")
    add_leader_election_args(p, duration=15.0, renew=10.0, retry=2.0)
    add_http_log_args(p, http_port=9401)
    add_redis_args(p)
    add_kube_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> AllocatorConfig:
    kinds = parse_kinds("--pool-kinds", args.pool_kinds, POOL_RESOURCES)
    check_leader_election_args(args)
    if "cilium" in kinds and "cilium-v2" in kinds:
        raise ValueError("--pool-kinds: cilium and cilium-v2 are the same objects; pick one")
    return AllocatorConfig(
        instance=args.instance, namespace=args.namespace, pool_kinds=kinds, cilium_compat=args.cilium_compat,
        leader_election=not args.no_leader_election, lease_duration=args.le_lease_duration,
        renew_deadline=args.le_renew_deadline, retry_period=args.le_retry_period,
        events=not args.no_events, pool_status=not args.no_pool_status,
    )


def main(argv: list[str]) -> int:
    args = parse_with_config(build_parser(), argv, "allocator")
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"l2lb allocator: {e}", file=sys.stderr)
        return 2

    async def amain(stop: asyncio.Event) -> None:
        from l2lb.adapters.bus.client import bus_from_args
        from l2lb.adapters.http.server import StatusServer
        from l2lb.adapters.kube.client import client_from_args
        from services.allocator.service import AllocatorService

        bus = await bus_from_args(args, client_name="l2lb-allocator")
        kube = await client_from_args(args, user_agent="l2lb-allocator")
        from l2lb.adapters.bus.leader import elector_from_args

        elector = elector_from_args(args, bus=bus, kube=kube, name="l2lb-allocator", identity=cfg.instance,
                                    namespace=cfg.namespace)  # None: the Lease (default)
        svc = AllocatorService(cfg, bus, kube, elector=elector)
        http = StatusServer("allocator", args.http_host, args.http_port, args.http_token_file)
        http.add_ready_check("allocator", svc.readiness)
        http.add_status("allocator", svc.status)
        from l2lb.adapters.http.cluster import mount_cluster_api

        mount_cluster_api(http, bus)  # the cluster view (Services, pools, nodes) and dashboard
        await http.start()
        try:
            await svc.run(stop)
        finally:
            await http.stop()
            await kube.close()
            await bus.close()

    return run_service("allocator", amain, log_level=args.log_level, log_format=args.log_format)
