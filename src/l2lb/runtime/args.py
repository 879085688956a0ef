"""Command-line flags every service shares: status HTTP server, logging, leader election."""

from __future__ import annotations

import argparse
import os
from collections.abc import Collection


def env_int(name: str, default: int) -> int:
    """An integer from the environment; a malformed value is an error naming the variable."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"environment variable {name}={raw!r} is not an integer") from None


def add_http_log_args(p: argparse.ArgumentParser, *, http_port: int) -> None:
    """``--http-host/--http-port/--http-token-file`` and ``--log-format/--log-level`` (env ``L2LB_*``)."""
    env = os.environ.get
    g = p.add_argument_group("status API and logs")
    g.add_argument("--http-host", default=env("L2LB_HTTP_HOST", "127.0.0.1"),
                   help="address of /healthz, /readyz, /metrics, /v1/ (env L2LB_HTTP_HOST; default 127.0.0.1)")
    g.add_argument("--http-port", type=int, default=env_int("L2LB_HTTP_PORT", http_port),
                   help=f"port of the status API (env L2LB_HTTP_PORT; default {http_port}; 0 = any free port)")
    g.add_argument("--http-token-file", default=env("L2LB_HTTP_TOKEN_FILE") or None,
                   help="require 'Authorization: Bearer <token>', token read from this file (env L2LB_HTTP_TOKEN_FILE)")
    g.add_argument("--log-format", choices=("text", "json"), default=env("L2LB_LOG_FORMAT", "text"),
                   help="text or one JSON object per line (env L2LB_LOG_FORMAT)")
    g.add_argument("--log-level", default=env("L2LB_LOG_LEVEL", "info"), help="env L2LB_LOG_LEVEL; default info")


def add_leader_election_args(p: argparse.ArgumentParser, *, duration: float, renew: float, retry: float) -> None:
    """``--no-leader-election`` and the Lease timings (``--le-*``) of an active/standby service."""
    g = p.add_argument_group("leader election (coordination.k8s.io/v1 Lease)")
    g.add_argument("--no-leader-election", action="store_true",
                   help="act as the only instance (no Lease); never run two like this")
    g.add_argument("--le-lease-duration", type=float, default=duration,
                   help=f"leader Lease duration, s (default {duration:g})")
    g.add_argument("--le-renew-deadline", type=float, default=renew,
                   help=f"a leader that cannot renew for this long steps down, s (default {renew:g})")
    g.add_argument("--le-retry-period", type=float, default=retry,
                   help=f"renew / retry period, s (default {retry:g})")
    g.add_argument("--leader-election-backend", choices=("kube", "redis"),
                   default=os.environ.get("L2LB_LEADER_ELECTION_BACKEND", "kube"),
                   help="kube: the Lease decides (the --le-* timings); redis: a Redis key with a short TTL "
                        "decides, fenced by a term, and the Lease only shows the holder (--le-redis-*): a dead "
                        "leader is replaced in about 1 s instead of the Lease duration "
                        "(env L2LB_LEADER_ELECTION_BACKEND; default kube)")
    g.add_argument("--le-redis-ttl-ms", type=int, default=env_int("L2LB_LE_REDIS_TTL_MS", 1000),
                   help="redis backend: the leader key expires this long after its last renewal (default 1000)")
    g.add_argument("--le-redis-renew-ms", type=int, default=env_int("L2LB_LE_REDIS_RENEW_MS", 250),
                   help="redis backend: renew / retry period (default 250)")
    g.add_argument("--le-redis-renew-deadline-ms", type=int, default=env_int("L2LB_LE_REDIS_RENEW_DEADLINE_MS", 700),
                   help="redis backend: a leader that could not renew for this long steps down; must be below "
                        "the TTL (default 700)")


def check_leader_election_args(args: argparse.Namespace) -> None:
    """ValueError naming the flags when the redis backend's timings cannot work."""
    if getattr(args, "leader_election_backend", "kube") != "redis":
        return
    ttl, deadline, renew = args.le_redis_ttl_ms, args.le_redis_renew_deadline_ms, args.le_redis_renew_ms
    if not ttl > deadline > renew > 0:
        raise ValueError(f"--le-redis-ttl-ms ({ttl}) > --le-redis-renew-deadline-ms ({deadline}) > "
                         f"--le-redis-renew-ms ({renew}) > 0 is needed: a leader must step down before "
                         "its key can expire")


def parse_kinds(flag: str, value: str, known: Collection[str]) -> tuple[str, ...]:
    """A comma list of resource kinds (``--pool-kinds``, ``--policy-kinds``), each one of ``known``."""
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in known]
    if bad:
        raise ValueError(f"{flag}: unknown kind(s) {bad}; choose from {sorted(known)}")
    return kinds
