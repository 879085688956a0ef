"""``l2lb apiserver``: the embedded Kubernetes-compatible API server (plain HTTP, for lab/dev/tests).

    l2lb apiserver --host 127.0.0.1 --port 6443 --kubeconfig-out /tmp/kubeconfig [--state-file state.json]

``--port 0`` picks a free port; the kubeconfig written names the real one. ``kubectl`` works with it
unchanged (``kubectl --kubeconfig PATH apply -f ...``; no OpenAPI is served, so kubectl's client-side
schema check is skipped and the server checks the fields it knows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import yaml
from aiohttp import web

from l2lb.apiserver.server import ApiServer
from l2lb.apiserver.store import Store
from l2lb.obs.log import get_logger
from l2lb.runtime.run import run_service

log = get_logger("l2lb.apiserver")


def write_kubeconfig(path: str, url: str, name: str = "l2lb-embedded") -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "l2lb-embedded"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, p)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="l2lb apiserver", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default=os.environ.get("L2LB_APISERVER_HOST", "127.0.0.1"))
    ap.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("L2LB_APISERVER_PORT", "6443")),
        help="TCP port (0 = any free port)",
    )
    ap.add_argument("--kubeconfig-out", default=None, help="write a kubeconfig pointing at this server here")
    ap.add_argument("--state-file", default=None, help="keep state in this JSON file across restarts")
    ap.add_argument(
        "--watch-window",
        type=int,
        default=10000,
        help="watch history kept, in events; older resourceVersions get 410 Gone",
    )
    ap.add_argument(
        "--bookmark-interval",
        type=float,
        default=60.0,
        help="seconds between BOOKMARK events on watches that allow them",
    )
    ap.add_argument(
        "--watch-timeout",
        type=float,
        default=1800.0,
        help="watch duration when the client gives no timeoutSeconds",
    )
    ap.add_argument("--max-request-log", type=int, default=200_000)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--log-format", choices=("text", "json"), default="text")
    return ap


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.watch_window < 1 or args.bookmark_interval <= 0:
        print("l2lb apiserver: --watch-window must be >= 1 and --bookmark-interval > 0")
        return 2

    async def serve(stop: asyncio.Event) -> None:
        srv = ApiServer(
            Store(window=args.watch_window),
            bookmark_interval=args.bookmark_interval,
            state_file=args.state_file,
            max_log=args.max_request_log,
            watch_timeout=args.watch_timeout,
        )
        runner = web.AppRunner(srv.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            log.error("cannot listen", extra={"addr": f"{args.host}:{args.port}", "error": str(e)})
            raise SystemExit(1) from None
        server = site._server
        socks = getattr(server, "sockets", None) or []
        port = socks[0].getsockname()[1] if socks else args.port
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{port}"
        if args.kubeconfig_out:
            try:
                write_kubeconfig(args.kubeconfig_out, url)
            except OSError as e:
                await runner.cleanup()
                log.error("cannot write the kubeconfig", extra={"path": args.kubeconfig_out, "error": str(e)})
                raise SystemExit(1) from None
        log.info(
            "API server listening",
            extra={"url": url, "kubeconfig": args.kubeconfig_out, "state_file": args.state_file},
        )
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            log.info("API server stopped", extra={"rv": srv.store.rv})

    return run_service("apiserver", serve, log_level=args.log_level, log_format=args.log_format)
