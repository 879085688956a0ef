"""Least-privilege Redis ACL users for the three services, generated from :class:`Keys`.

``deploy/redis/users.acl`` is this module's output for the default prefix and the *development*
passwords below. For production render your own file with real passwords::

    python -m l2lb.adapters.bus.acl --prefix l2lb \\
        --password allocator=$(cat alloc.pw) --password leases=... --password announcer=... > users.acl

and start Redis with ``--aclfile users.acl`` (Redis >= 7.0: the rules use ACL selectors).

Every user starts from nothing (``resetkeys resetchannels -@all``). Root permissions are the
connection basics (PING, SELECT, CLIENT SETNAME) and GET/SET on the incarnation key; each
selector ``( ... )`` pairs the commands with the only keys they may touch, so e.g. the announcer
may XADD heartbeats but only *consume* assignments.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Mapping, Sequence

from l2lb.adapters.bus.keys import DEFAULT_PREFIX, Keys
from l2lb.adapters.bus.status import status_acl_selectors

__all__ = ["DEV_PASSWORDS", "SERVICES", "ha_users", "render_users_acl", "service_rules"]

SERVICES = ("allocator", "leases", "announcer")
DEV_PASSWORDS = {s: f"l2lb-{s}-dev" for s in SERVICES}

# Commands a Consumer runs on the stream it reads.
CONSUME = ("+xreadgroup", "+xack", "+xgroup|create", "+xgroup|setid", "+xgroup|delconsumer", "+xautoclaim",
           "+xpending", "+xinfo|groups", "+xinfo|stream", "+xinfo|consumers")
PUBLISH = ("+xadd",)
BASE = ("+ping", "+select", "+client|setname")


def _sel(keys: Sequence[str], cmds: Sequence[str], *, read_only: bool = False) -> str:
    pat = " ".join(("%R~" if read_only else "~") + k for k in keys)
    return f"({pat} {' '.join(cmds)})"


def service_rules(keys: Keys, service: str) -> list[str]:
    """ACL rules (without user name and password) of ``service``."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r} (known: {', '.join(SERVICES)})")
    root = ["resetkeys", "resetchannels", "-@all", *BASE, "+get", "+set", f"~{keys.incarnation}"]
    sel: list[str] = [_sel([keys.deadletter], PUBLISH)]
    if service == "allocator":
        sel += [
            _sel([keys.allocations], PUBLISH),
            _sel([keys.control], CONSUME),  # serves SnapshotRequest("allocations")
            _sel([keys.snapshot("allocations")], ("+get", "+set")),
        ]
    elif service == "leases":
        sel += [
            _sel([keys.allocations, keys.heartbeats], CONSUME),
            _sel([keys.control], (*CONSUME, *PUBLISH)),  # serves "assignments", requests "allocations"
            _sel([keys.assignments], PUBLISH),
            _sel([keys.snapshot("allocations")], ("+get",), read_only=True),
            _sel([keys.snapshot("assignments")], ("+get", "+set")),
            _sel([keys.epochs], ("+@hash", "+del", "+exists")),
        ]
    if service in ("allocator", "leases"):
        sel += status_acl_selectors(keys)  # both write and serve the cluster view (status parts, events)
        # --leader-election-backend redis (l2lb.adapters.bus.leader): its own key and term, by Lua script
        name = f"l2lb-{service}"
        sel.append(_sel([keys.leader(name), keys.leader_term(name)],
                        ("+evalsha", "+eval", "+script|load", "+get", "+set", "+pexpire", "+del", "+time")))
    else:  # announcer
        sel += [
            _sel([keys.heartbeats], PUBLISH),
            _sel([keys.assignments], CONSUME),
            _sel([keys.control], PUBLISH),  # requests "assignments"
            _sel([keys.snapshot("assignments")], ("+get",), read_only=True),
        ]
    return root + sel


# Users of Redis replication and Sentinel (k8s/base runs Redis with replicas and a Sentinel per pod):
# a replica logs in to its master as "replication" (masteruser), a sentinel to every Redis as
# "sentinel" (sentinel auth-user); rules as the Redis documentation gives them.
REPLICATION_RULES = ("resetkeys", "resetchannels", "-@all", "+psync", "+replconf", "+ping")
SENTINEL_RULES = ("resetkeys", "allchannels", "-@all", "+multi", "+slaveof", "+ping", "+exec", "+subscribe",
                  "+config|rewrite", "+role", "+publish", "+info", "+client|setname", "+client|kill", "+script|kill")


def ha_users(replication_password: str | None, sentinel_password: str | None) -> list[str]:
    """ACL lines of the replication and sentinel users (only those whose password is given)."""
    out = []
    for user, pw, rules in (("replication", replication_password, REPLICATION_RULES),
                            ("sentinel", sentinel_password, SENTINEL_RULES)):
        if pw:
            out.append(f"user {user} on #{hashlib.sha256(pw.encode()).hexdigest()} " + " ".join(rules))
    return out


def render_users_acl(
    keys: Keys | None = None,
    passwords: Mapping[str, str] | None = None,
    *,
    extra_lines: Sequence[str] = (),
    disable_default: bool = True,
) -> str:
    """An ACL file (``--aclfile``) with one user per service; passwords are stored as SHA-256."""
    keys = keys or Keys(DEFAULT_PREFIX)
    pw = dict(DEV_PASSWORDS)
    pw.update(passwords or {})
    # Redis ACL files allow no comments: the documentation lives in deploy/redis/README.md.
    lines: list[str] = []
    if disable_default:
        lines.append("user default off resetkeys resetchannels -@all")
    for svc in SERVICES:
        digest = hashlib.sha256(pw[svc].encode()).hexdigest()
        lines.append(f"user {svc} on #{digest} " + " ".join(service_rules(keys, svc)))
    lines.extend(extra_lines)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m l2lb.adapters.bus.acl", description=__doc__.split("\n\n")[0])
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--password", action="append", default=[], metavar="SERVICE=PASSWORD")
    p.add_argument("--keep-default-user", action="store_true", help="do not disable the 'default' user")
    p.add_argument("--replication-password", help="also a user 'replication' (replicas log in to the master)")
    p.add_argument("--sentinel-password", help="also a user 'sentinel' (sentinels log in to every Redis)")
    args = p.parse_args(argv)
    pws: dict[str, str] = {}
    for item in args.password:
        svc, sep, val = item.partition("=")
        if not sep or svc not in SERVICES or not val:
            p.error(f"--password wants SERVICE=PASSWORD with SERVICE in {', '.join(SERVICES)}")
        pws[svc] = val
    sys.stdout.write(render_users_acl(Keys(args.prefix), pws, disable_default=not args.keep_default_user,
                                      extra_lines=ha_users(args.replication_password, args.sentinel_password)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
