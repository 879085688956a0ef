"""The announcer's flags, their validation, and the inputs read from files (``--static-assignments``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket

from l2lb.adapters.bus.client import add_redis_args
from l2lb.core.announcer_machine import MachineConfig
from l2lb.core.messages import MessageError, NodeAssignments, VipAssignment
from l2lb.runtime.args import add_http_log_args, env_int

# Virtual interfaces that must never answer for LoadBalancer IPs (CNI, bridges, kube-proxy's dummy).
DEFAULT_EXCLUDE = (
    "lxc", "veth", "cali", "cilium", "docker", "cni", "flannel", "kube-", "vxlan", "genev", "tunl", "weave",
    "br-", "virbr", "nodelocaldns", "dummy", "nerdctl", "podman",
)


def parse_labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"--node-labels: {part!r} is not key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def interface_pattern(specs: list[str] | None) -> re.Pattern[str]:
    """Regexes (each a full match) -> one pattern; default: every interface not named like a virtual one."""
    regs = [r for r in (specs or []) if r.strip()]
    if not regs:
        return re.compile(r"(?!(" + "|".join(re.escape(p) for p in DEFAULT_EXCLUDE) + r")).+")
    for r in regs:
        try:
            re.compile(r)  # raises re.error with the culprit
        except (OverflowError, RecursionError) as e:  # huge repeat counts overflow
            raise ValueError(f"--interfaces {r!r}: {e}") from None
    return re.compile("|".join(f"(?:{r})" for r in regs))


def load_static(path: str, node: str, seq: int, wall: float) -> NodeAssignments:
    """Read a ``--static-assignments`` file; ValueError with a clear message when it is wrong."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("vips", []), list):
        raise ValueError(f"{path}: expected an object with a 'vips' list")
    ttl = data.get("ttl_ms") or 10 * 365 * 86400 * 1000
    if not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(f"{path}: ttl_ms must be a positive integer")
    vips = []
    for i, v in enumerate(data.get("vips", [])):
        if not isinstance(v, dict):
            raise ValueError(f"{path}: vips[{i}] must be an object")
        try:
            vips.append(VipAssignment.from_obj({"epoch": 1, **v}))
        except MessageError as e:
            raise ValueError(f"{path}: vips[{i}]: {e}") from None
    return NodeAssignments(node=node, term=0, seq=seq, ttl_ms=ttl, sent_at=wall, vips=tuple(vips))


MIN_PEER_KEY = 16


def read_peer_key(args: argparse.Namespace) -> bytes | None:
    """The peers' shared key: the file's bytes (surrounding whitespace removed) or L2LB_PEER_KEY; None when
    neither is set. ValueError naming the fix when it is unusable."""
    if args.peer_key_file:
        try:
            with open(args.peer_key_file, "rb") as f:
                key = f.read().strip()
        except OSError as e:
            raise ValueError(f"--peer-key-file {args.peer_key_file}: {e.strerror}") from None
        where = f"--peer-key-file {args.peer_key_file}"
    elif os.environ.get("L2LB_PEER_KEY"):
        key = os.environ["L2LB_PEER_KEY"].strip().encode()
        where = "L2LB_PEER_KEY"
    else:
        return None
    if len(key) < MIN_PEER_KEY:
        raise ValueError(f"{where}: the peer key must have at least {MIN_PEER_KEY} bytes "
                         "(e.g. head -c 32 /dev/urandom | base64)")
    return key


def machine_config(args: argparse.Namespace, instance: str, peer_key: bytes | None = None) -> MachineConfig:
    return MachineConfig(
        node=args.node, instance=instance, labels=parse_labels(args.node_labels or ""), bus=not args.no_bus,
        heartbeat_interval_ms=args.heartbeat_interval_ms, heartbeat_full_every_ms=args.heartbeat_full_every_ms,
        garp_count=args.garp_count, garp_interval_ms=args.garp_interval_ms, reply_rate=args.reply_rate,
        reply_burst=args.reply_burst, defend_interval_ms=args.defend_interval_ms,
        max_clock_skew_ms=args.max_clock_skew_ms, leases_outage_grace_ms=args.leases_outage_grace_ms,
        peers=not args.no_peers, cluster=args.cluster_name, peer_key=peer_key,
        peer_interval_ms=args.peer_interval_ms, peer_timeout_ms=args.peer_timeout_ms,
        takeover_after_ms=args.takeover_after_ms,
    )


def _add_kube_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``l2lb.adapters.kube.client.add_kube_args`` (same names, envs and defaults), declared
    here so the announcer does not import the Kubernetes client unless ``--kubeconfig`` is given."""
    env = os.environ.get
    g = p.add_argument_group("Kubernetes API (optional: only to read this node's labels)")
    g.add_argument("--kubeconfig", default=env("L2LB_KUBECONFIG") or None,
                   help="kubeconfig path (env L2LB_KUBECONFIG); when set, the Node's labels are reported")
    g.add_argument("--kube-qps", type=float, default=env("L2LB_KUBE_QPS", "20"))
    g.add_argument("--kube-burst", type=int, default=env("L2LB_KUBE_BURST", "40"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="l2lb announcer", description="Answer ARP/NDP for this node's LoadBalancer IPs."
    )
    env = os.environ.get
    p.add_argument(
        "--node",
        default=env("L2LB_NODE") or env("NODE_NAME") or socket.gethostname(),
        help="this node's name (env L2LB_NODE / NODE_NAME; default: hostname)",
    )
    p.add_argument(
        "--interfaces",
        action="extend",
        nargs="+",
        metavar="REGEX",
        help="interfaces allowed to answer (full-match regexes; default: all Ethernet interfaces except "
        "CNI/bridge/virtual ones)",
    )
    p.add_argument(
        "--node-labels",
        default=env("L2LB_NODE_LABELS", ""),
        help="labels to report, k=v,k2=v2 (merged over the Node's labels when --kubeconfig is given)",
    )
    p.add_argument("--heartbeat-interval-ms", type=int, default=100)
    p.add_argument(
        "--heartbeat-full-every-ms", type=int, default=env_int("L2LB_HEARTBEAT_FULL_EVERY_MS", 2000),
        help="while the served VIPs are unchanged and the leases service renews by digest, heartbeats carry "
        "only the digest of the serving map, and the full map at least this often; 0 = always the full map "
        "(env L2LB_HEARTBEAT_FULL_EVERY_MS, default 2000)",
    )
    p.add_argument("--garp-count", type=int, default=5, help="gratuitous announcements per takeover")
    p.add_argument("--garp-interval-ms", type=int, default=1000)
    p.add_argument("--reply-rate", type=float, default=100.0, help="replies per second per source MAC")
    p.add_argument("--reply-burst", type=float, default=50.0, help="token bucket size per source MAC")
    p.add_argument(
        "--defend-interval-ms", type=int, default=10_000, help="at most one defence per VIP per interval"
    )
    p.add_argument("--max-clock-skew-ms", type=int, default=5000,
                   help="until the first Redis round trip tells us Redis's clock (which then decides alone), bus "
                   "assignments sent longer ago than ttl + this by the sender's clock are backlog (0: never)")
    p.add_argument(
        "--leases-outage-grace-ms", type=int, default=env_int("L2LB_LEASES_OUTAGE_GRACE_MS", 60000),
        help="keep answering this long past the validity deadline when the leases service sends nothing "
        "to any node while Redis stays reachable (a leases crash/failover); 0 = strict expiry (default 60000)",
    )
    p.add_argument("--rcvbuf", type=int, default=2 << 20,
                   help="receive ring per interface in bytes, mapped into the process (256-byte slots: 8192 "
                   "frames for the default 2 MiB, 55 ms at 150k requests/s)")
    p.add_argument("--no-packet-ring", action="store_true",
                   help="recv/send one frame per system call instead of PACKET_MMAP rings (slower; for debugging)")
    p.add_argument("--link-poll-ms", type=int, default=50, help="/sys polling interval without rtnetlink")
    p.add_argument("--no-netlink", action="store_true", help="poll /sys for link state instead of rtnetlink")
    p.add_argument(
        "--static-assignments",
        metavar="FILE",
        help="test/dev: JSON {vips:[{ip,epoch,interfaces}], ttl_ms} read at start and on SIGHUP",
    )
    p.add_argument(
        "--no-bus", action="store_true", help="test/dev: run without Redis (static assignments only)"
    )
    g = p.add_argument_group("LAN peer heartbeats (Redis-down freeze, succession takeovers)")
    g.add_argument("--no-peers", action="store_true",
                   help="send and hear no peer heartbeats (then Redis down = strict expiry, no LAN takeovers)")
    g.add_argument("--cluster-name", default=env("L2LB_CLUSTER_NAME", "l2lb"),
                   help="peers of another cluster name on the same LAN are ignored (env L2LB_CLUSTER_NAME)")
    g.add_argument("--peer-key-file", default=env("L2LB_PEER_KEY_FILE") or None, metavar="FILE",
                   help="shared key authenticating peer heartbeats (HMAC-SHA256), >= 16 bytes; or the key itself "
                   "in env L2LB_PEER_KEY. Without one, frames go unsigned (lab/dev only: a warning at start)")
    g.add_argument("--peer-interval-ms", type=int, default=env_int("L2LB_PEER_INTERVAL_MS", 100),
                   help="a peer heartbeat on every answering interface this often (default 100)")
    g.add_argument("--peer-timeout-ms", type=int, default=env_int("L2LB_PEER_TIMEOUT_MS", 350),
                   help="a peer counts as heard this long after its last frame (default 350)")
    g.add_argument("--takeover-after-ms", type=int, default=env_int("L2LB_TAKEOVER_AFTER_MS", 300),
                   help="a successor takes a VIP over when its holder has been silent on the LAN this long (+150 ms "
                   "per rank) and the control plane is silent (default 300)")
    add_http_log_args(p, http_port=9473)
    add_redis_args(p)
    _add_kube_args(p)
    return p


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error (exit 2, naming the flag) for any unusable value."""
    try:
        interface_pattern(args.interfaces)
        parse_labels(args.node_labels or "")
    except (re.error, ValueError) as e:
        parser.error(str(e))
    for name in ("heartbeat_interval_ms", "garp_interval_ms", "link_poll_ms", "defend_interval_ms",
                 "peer_interval_ms", "peer_timeout_ms", "takeover_after_ms"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.heartbeat_full_every_ms < 0:
        parser.error("--heartbeat-full-every-ms must be >= 0")
    if args.garp_count < 0 or args.reply_rate <= 0 or args.reply_burst < 1:
        parser.error("--garp-count must be >= 0, --reply-rate > 0 and --reply-burst >= 1")
    if args.peer_timeout_ms <= args.peer_interval_ms:
        parser.error(f"--peer-timeout-ms ({args.peer_timeout_ms}) must be larger than --peer-interval-ms "
                     f"({args.peer_interval_ms}): a peer would count as silent between two of its frames")
    if not args.cluster_name or len(args.cluster_name.encode()) > 255:
        parser.error("--cluster-name must have 1 to 255 bytes")
    try:
        read_peer_key(args)
    except ValueError as e:
        parser.error(str(e))
