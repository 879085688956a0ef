"""``l2lb status``: the cluster view in a terminal (plain aligned text) or as JSON.

Reads the status parts straight from Redis (``--redis DSN``, the default, env ``L2LB_REDIS``) or asks a
running service's cluster API (``--url http://host:port``, with ``--token-file`` when it needs one).

    l2lb status                      # tables: summary, Services, pools, nodes, recent events
    l2lb status --json               # one JSON document
    l2lb status --watch              # redraw every --interval seconds (JSON: one document per line)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from l2lb.adapters.bus.client import DEFAULT_DSN, Bus, BusError, DSNError
from l2lb.adapters.bus.dsn import redact
from l2lb.adapters.bus.keys import DEFAULT_PREFIX
from l2lb.adapters.bus.status import ClusterSource
from l2lb.core.view import (
    MAX_LIMIT,
    Query,
    QueryError,
    cluster_summary,
    node_rows,
    parse_query,
    pool_rows,
    size_text,
)

__all__ = ["collect_from_redis", "collect_from_url", "main", "render_text"]

MAX_SERVICES_SHOWN = 100_000


class StatusError(Exception):
    """Something the user must fix (unreachable source, missing token); printed without a traceback."""


async def collect_from_redis(source: ClusterSource, q: Query, events: int = 10) -> dict[str, Any]:
    parts = await source.current()
    now = time.time()
    index = source.service_index()
    services: list[dict[str, Any]] = []
    page = q
    while len(services) < MAX_SERVICES_SHOWN:
        items, token, _ = index.page(page)
        services += items
        if token is None:
            break
        page = Query(q.namespace, q.node, q.pool, q.ip, q.limit, items[-1]["key"])
    return {"cluster": cluster_summary(index, parts, now), "services": services,
            "pools": pool_rows(parts["pools"]), "nodes": node_rows(parts["nodes"], now),
            "events": await source.events(events) if events else []}


async def collect_from_url(session: aiohttp.ClientSession, url: str, q: Query, events: int = 10) -> dict[str, Any]:
    async def get(path: str, params: dict[str, str] | None = None) -> Any:
        try:
            async with session.get(url.rstrip("/") + path, params=params) as r:
                if r.status == 401:
                    raise StatusError(f"{url} needs a bearer token: pass --token-file FILE")
                body = await r.json(content_type=None)
                if r.status != 200:
                    msg = body.get("message") if isinstance(body, dict) else body
                    raise StatusError(f"{url}{path}: HTTP {r.status}: {msg}")
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise StatusError(f"cannot read {url}{path}: {type(e).__name__}: {e}") from None

    params = {k: v for k, v in q.filters().items()}
    params["limit"] = str(q.limit)
    services: list[dict[str, Any]] = []
    while len(services) < MAX_SERVICES_SHOWN:
        page = await get("/v1/services", params)
        services += page["items"]
        if not page.get("continue"):
            break
        params["continue"] = page["continue"]
    return {"cluster": await get("/v1/cluster"), "services": services, "pools": (await get("/v1/pools"))["items"],
            "nodes": (await get("/v1/nodes"))["items"],
            "events": (await get("/v1/events", {"limit": str(events)}))["items"] if events else []}


# -- text rendering ----------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def _age(sec: float | None) -> str:
    if sec is None:
        return "-"
    if sec < 120:
        return f"{sec:.1f}s"
    if sec < 7200:
        return f"{sec / 60:.0f}m"
    return f"{sec / 3600:.0f}h"


def _size(p: dict[str, Any], key: str) -> str:
    """A pool count as a person reads it (the view's ``<key>_text``; older servers send only numbers)."""
    text = p.get(f"{key}_text")
    return str(text) if text else size_text(int(p.get(key) or 0))


def render_text(view: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    c = view["cluster"]
    out = [
        f"Services {c['services']['total']} ({c['services']['failing']} failing)   "
        f"IPs announced {c['ips']['announced']}/{c['ips']['allocated']}   moves {c['ips']['moves']}   "
        f"pools {_size(c['pools'], 'used')}/{_size(c['pools'], 'total')} used   "
        f"nodes alive {c['nodes']['alive']}/{c['nodes']['total']}",
    ]
    missing = [n for n, p in c["parts"].items() if not p["present"]]
    if missing:
        out.append(f"(no data yet for: {', '.join(missing)})")
    out.append("")
    rows: list[Sequence[str]] = []
    for s in view["services"]:
        ports = ",".join(f"{p['protocol']}/{p['port']}" for p in s["ports"])
        status = "ready" if s["ready"] else (s["reason"] or "pending")
        if not s["ips"]:
            rows.append((s["key"], "-", "", "", "", "", ports, status))
        for i, ip in enumerate(s["ips"]):
            since = _age(now - ip["since"]) if ip["since"] else "-"
            rows.append((s["key"] if i == 0 else "", ip["ip"], ip["pool"], ip["node"] or "(none)", since,
                         str(ip["moves"]), ports if i == 0 else "", status if i == 0 else ""))
    out += _table(("SERVICE", "IP", "POOL", "NODE", "SINCE", "MOVES", "PORTS", "STATUS"), rows)
    out.append("")
    out += _table(("POOL", "USED", "TOTAL", "FREE", "USAGE", "CIDRS", "NOTE"), [
        (p["name"], _size(p, "used"), _size(p, "total"), _size(p, "available"),
         f"{'#' * round(10 * p['usage']):<10} {100 * p['usage']:.0f}%", ",".join(p["cidrs"]),
         f"invalid: {p['invalid']}" if p.get("invalid") else
         "conflict" if p["conflict"] else ("disabled" if p["disabled"] else "")) for p in view["pools"]])
    out.append("")
    out += _table(("NODE", "ALIVE", "HEARTBEAT", "LINKS", "IPS"), [
        (n["node"], "yes" if n["alive"] else "NO", _age(n["heartbeat_age_s"]),
         " ".join(f"{i['name']}:{'up' if i['up'] else 'DOWN'}" for i in n["interfaces"]), str(n["assignments"]))
        for n in view["nodes"]])
    if view["events"]:
        out.append("")
        out += _table(("AGE", "EVENT", "IP", "SERVICE", "DETAIL"), [
            (_age(now - e["at"]), e["type"], e["ip"], e["service"],
             " ".join(x for x in ((f"{e['from']} -> {e['to']}" if e["type"] == "move" else e["node"]),
                                  e["reason"], e["message"]) if x)) for e in view["events"]])
    return "\n".join(out) + "\n"


async def _collect_any(session: aiohttp.ClientSession, urls: list[str], q: Query, events: int) -> dict[str, Any]:
    errors = []
    for url in urls:
        try:
            return await collect_from_url(session, url, q, events)
        except StatusError as e:
            errors.append(str(e))
    raise StatusError("; ".join(errors))


# -- command -----------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2lb status", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between redraws with --watch (default 1)")
    p.add_argument("--count", type=int, default=0, help="with --watch: stop after N redraws (0 = forever)")
    p.add_argument("--redis", default=os.environ.get("L2LB_REDIS", DEFAULT_DSN),
                   help="read the parts from this Redis DSN (env L2LB_REDIS; default %(default)s)")
    p.add_argument("--redis-prefix", default=os.environ.get("L2LB_REDIS_PREFIX", DEFAULT_PREFIX),
                   help="prefix of the Redis keys (env L2LB_REDIS_PREFIX)")
    p.add_argument("--url", action="append", default=[],
                   help="ask a service's cluster API instead of Redis, e.g. http://127.0.0.1:9402 (repeatable: "
                        "the first that answers is used)")
    p.add_argument("--allocator", action="append", default=[], dest="url", metavar="URL",
                   help="the allocator's status URL (same as --url: every service serves the whole view)")
    p.add_argument("--leases", action="append", default=[], dest="url", metavar="URL",
                   help="the leases service's status URL (same as --url)")
    p.add_argument("--token-file", help="bearer token for --url")
    p.add_argument("--namespace", help="only Services of this namespace")
    p.add_argument("--node", help="only Services announced by this node")
    p.add_argument("--events", type=int, default=10, help="how many recent events to show (default 10)")
    return p


async def _run(args: argparse.Namespace, q: Query) -> int:
    headers = {}
    if args.token_file:
        try:
            headers["Authorization"] = "Bearer " + Path(args.token_file).read_text().strip()
        except OSError as e:
            raise StatusError(f"--token-file: {e}") from None
    bus: Bus | None = None
    session: aiohttp.ClientSession | None = None
    source: ClusterSource | None = None
    try:
        if args.url:
            session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10))
        else:
            try:
                bus = await Bus.connect(args.redis, prefix=args.redis_prefix, client_name="l2lb-status")
            except (DSNError, BusError) as e:
                raise StatusError(f"--redis {redact(args.redis)}: {e}") from None
            source = ClusterSource(bus, max_age=0.0)
        n = 0
        while True:
            try:
                if session is not None:
                    view = await _collect_any(session, args.url, q, args.events)
                else:
                    assert source is not None
                    view = await collect_from_redis(source, q, args.events)
            except (RedisError, OSError) as e:
                raise StatusError(f"cannot read redis {redact(args.redis)}: {type(e).__name__}: {e}") from None
            if args.json:
                text = json.dumps(view, separators=(",", ":") if args.watch else None,
                                  indent=None if args.watch else 2, default=str) + "\n"
            else:
                text = render_text(view)
                if args.watch and sys.stdout.isatty():
                    text = "\x1b[H\x1b[2J" + text
                elif args.watch:
                    text += "\n"
            sys.stdout.write(text)
            sys.stdout.flush()
            n += 1
            if not args.watch or (args.count and n >= args.count):
                return 0
            await asyncio.sleep(args.interval)
    finally:
        if session is not None:
            await session.close()
        if bus is not None:
            await bus.close()


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.interval <= 0 or args.count < 0 or not 0 <= args.events <= 1000:
        print("l2lb status: --interval must be > 0, --count >= 0, --events in 0..1000", file=sys.stderr)
        return 2
    params = {k: v for k, v in (("namespace", args.namespace), ("node", args.node)) if v}
    try:
        q = parse_query(params)
    except QueryError as e:
        print(f"l2lb status: {e}", file=sys.stderr)
        return 2
    q = Query(q.namespace, q.node, q.pool, q.ip, MAX_LIMIT)
    try:
        return asyncio.run(_run(args, q))
    except StatusError as e:
        print(f"l2lb status: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return 0
