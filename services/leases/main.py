"""``l2lb leases``: which node answers for which IP (active/standby, sub-second failover)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from l2lb.obs.log import get_logger
from l2lb.runtime.args import (
    add_http_log_args,
    add_leader_election_args,
    check_leader_election_args,
    env_int,
    parse_kinds,
)
from l2lb.runtime.config import parse_with_config
from l2lb.runtime.run import run_service
from services.leases.service import POLICY_RESOURCES, LeasesConfig, LeasesService

log = get_logger("l2lb.leases")




def build_parser() -> argparse.ArgumentParser:
    from l2lb.adapters.bus.client import add_redis_args
    from l2lb.adapters.kube.client import add_kube_args

    p = argparse.ArgumentParser(prog="l2lb leases", description=__doc__)
    p.add_argument(
        "--instance",
        default=os.environ.get("L2LB_INSTANCE") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
        help="identity of this process (leader election, consumer groups); default hostname-random",
    )
    p.add_argument(
        "--namespace",
        default=os.environ.get("L2LB_NAMESPACE", "l2lb-system"),
        help="namespace of the leader-election Lease and of mirror Leases (default l2lb-system)",
    )
    p.add_argument(
        "--tick-ms",
        type=int,
        default=env_int("L2LB_LEASES_TICK_MS", 50),
        help="liveness check / election period (default 50)",
    )
    p.add_argument(
        "--renew-ms",
        type=int,
        default=env_int("L2LB_LEASES_RENEW_MS", 250),
        help="renew every node's assignment set this often: a small NodeRenewal (digest of the set) while the "
        "set is unchanged, the full set otherwise (default 250)",
    )
    p.add_argument(
        "--full-every-ms",
        type=int,
        default=env_int("L2LB_LEASES_FULL_EVERY_MS", 30000),
        help="send each node its full set at least this often even when unchanged (safety net); 0 = every "
        "renewal is the full set, the behaviour before NodeRenewal (use it while announcers older than "
        "NodeRenewal still run) (default 30000: a mismatching renewal already makes an announcer ask for the full set)",
    )
    p.add_argument(
        "--ttl-ms",
        type=int,
        default=env_int("L2LB_LEASES_TTL_MS", 1000),
        help="validity of an assignment without renewal, counted by the announcer (default 1000)",
    )
    p.add_argument(
        "--missed",
        type=int,
        default=env_int("L2LB_LEASES_MISSED", 3),
        help="a node is dead after this many missed heartbeat intervals (default 3)",
    )
    p.add_argument(
        "--lag-tolerance-ms",
        type=int,
        default=2000,
        help="liveness runs on heartbeat stream time; it may fall behind our clock this much (default 2000)",
    )
    p.add_argument(
        "--startup-grace-ms",
        type=int,
        default=500,
        help="collect heartbeats this long after start before the first election (default 500)",
    )
    p.add_argument(
        "--reconnect-grace-ms",
        type=int,
        default=2000,
        help="after Redis came back, its master changed or no node was heard at all for a while, a node not heard "
        "since then is declared dead this much later than its missed heartbeats say (its client may wait for a "
        "socket time-out on the old master) -- unless the nodes heard since report it silent on the LAN too "
        "(default 2000; about the DSN's socket_timeout)",
    )
    p.add_argument(
        "--heartbeat-full-every-ms",
        type=int,
        default=env_int("L2LB_HEARTBEAT_FULL_EVERY_MS", 2000),
        help="the announcers' --heartbeat-full-every-ms (same env): a leases started while announcers send only "
        "the digest of their serving maps waits up to this + 1 s for the full maps before adopting holders "
        "(default 2000)",
    )
    p.add_argument(
        "--successors",
        type=int,
        default=env_int("L2LB_LEASES_SUCCESSORS", 2),
        help="pre-authorised successors per VIP, each with a reserved epoch, sent to the holder and (as its "
        "standby list) to each successor, so a successor can take a VIP over by itself when its holder and the "
        "control plane are silent; 0 = none (assignments exactly as before succession) (default 2)",
    )
    p.add_argument(
        "--policy-kinds",
        default=os.environ.get("L2LB_POLICY_KINDS", "cilium,metallb,l2lb"),
        help="comma list of announcement policy kinds to watch: cilium, metallb, l2lb",
    )
    p.add_argument(
        "--policy-file",
        action="append",
        default=[],
        help="YAML file of policies to use besides the watched ones (repeatable)",
    )
    p.add_argument(
        "--mirror-leases",
        action="store_true",
        help="mirror each Service's holder into a coordination.k8s.io Lease (on change only)",
    )
    p.add_argument("--no-conditions", action="store_true", help="do not write the l2lb.io/Announced condition")
    p.add_argument("--no-events", action="store_true", help="do not record Events on moves")
    p.add_argument(
        "--no-kube",
        action="store_true",
        help="run without a Kubernetes API (policies from --policy-file only; no ETP Local)",
    )
    # Shorter than client-go's 15/10/2: a standby takes over a crashed leader within ~6-8 s. The API
    # load is the same (one renewal per retry period); announcers keep their VIPs meanwhile
    # (--leases-outage-grace-ms on the announcer), so this bounds how long node failures wait.
    add_leader_election_args(p, duration=6.0, renew=4.0, retry=2.0)
    add_http_log_args(p, http_port=9402)
    add_redis_args(p)
    add_kube_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> LeasesConfig:
    kinds = parse_kinds("--policy-kinds", args.policy_kinds, POLICY_RESOURCES)
    check_leader_election_args(args)
    for name, v in (
        ("--tick-ms", args.tick_ms),
        ("--renew-ms", args.renew_ms),
        ("--ttl-ms", args.ttl_ms),
        ("--missed", args.missed),
    ):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if args.successors < 0:
        raise ValueError(f"--successors must be >= 0, got {args.successors}")
    if args.full_every_ms < 0:
        raise ValueError(f"--full-every-ms must be >= 0, got {args.full_every_ms}")
    if args.reconnect_grace_ms < 0:
        raise ValueError(f"--reconnect-grace-ms must be >= 0, got {args.reconnect_grace_ms}")
    if args.heartbeat_full_every_ms < 0:
        raise ValueError(f"--heartbeat-full-every-ms must be >= 0, got {args.heartbeat_full_every_ms}")
    if args.ttl_ms <= args.renew_ms:
        raise ValueError(f"--ttl-ms ({args.ttl_ms}) must be larger than --renew-ms ({args.renew_ms})")
    static: list[dict[str, Any]] = []
    for path in args.policy_file:
        try:
            docs = list(yaml.safe_load_all(Path(path).read_text()))
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"--policy-file {path}: {e}") from None
        static.extend(d for d in docs if isinstance(d, dict))
    return LeasesConfig(
        instance=args.instance,
        namespace=args.namespace,
        tick_ms=args.tick_ms,
        renew_ms=args.renew_ms,
        ttl_ms=args.ttl_ms,
        full_every_ms=args.full_every_ms,
        heartbeat_full_every_ms=args.heartbeat_full_every_ms,
        successors=args.successors,
        missed=args.missed,
        startup_grace_ms=args.startup_grace_ms,
        reconnect_grace_ms=args.reconnect_grace_ms,
        lag_tolerance_ms=args.lag_tolerance_ms,
        policy_kinds=() if args.no_kube else kinds,
        leader_election=not (args.no_leader_election or args.no_kube),
        lease_duration=args.le_lease_duration,
        renew_deadline=args.le_renew_deadline,
        retry_period=args.le_retry_period,
        mirror_leases=args.mirror_leases and not args.no_kube,
        conditions=not args.no_conditions,
        events=not args.no_events,
        static_policies=static,
    )


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parse_with_config(parser, argv, "leases")
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"l2lb leases: {e}", file=sys.stderr)
        return 2

    async def amain(stop: asyncio.Event) -> None:
        from l2lb.adapters.bus.client import bus_from_args
        from l2lb.adapters.http.server import StatusServer

        bus = await bus_from_args(args)
        kube = None
        if not args.no_kube:
            from l2lb.adapters.kube.client import client_from_args

            kube = await client_from_args(args, user_agent="l2lb-leases")
        from l2lb.adapters.bus.leader import elector_from_args

        elector = elector_from_args(args, bus=bus, kube=kube, name="l2lb-leases", identity=cfg.instance,
                                    namespace=cfg.namespace) if cfg.leader_election else None  # None: the Lease
        svc = LeasesService(cfg, bus, kube, elector=elector)
        http = StatusServer("leases", args.http_host, args.http_port, args.http_token_file)
        from l2lb.adapters.http.cluster import mount_cluster_api

        mount_cluster_api(http, bus)  # /v1/services, /v1/nodes, ... and the dashboard (read from Redis)
        http.add_ready_check("leases", svc.readiness)
        http.add_status("leases", svc.status)
        await http.start()
        try:
            await svc.run(stop)
        finally:
            await http.stop()
            if kube is not None:
                await kube.close()
            await bus.close()

    return run_service("leases", amain, log_level=args.log_level, log_format=args.log_format)
