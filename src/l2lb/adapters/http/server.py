"""The HTTP side every service has: /healthz, /readyz, /metrics and a JSON status API.

A service builds one :class:`StatusServer`, registers readiness checks and status providers, may add
its own routes, then ``await server.start()``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from l2lb.obs import metrics
from l2lb.obs.log import get_logger

log = get_logger("l2lb.http")

ReadyCheck = Callable[[], tuple[bool, str]]


class StatusConfigError(ValueError):
    """The status API cannot be served as configured (e.g. an empty token file)."""

StatusProvider = Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]]


class StatusServer:
    def __init__(self, service: str, host: str = "127.0.0.1", port: int = 0, token_file: str | None = None):
        self.service = service
        self.host = host
        self.port = port
        self._token: str | None = None
        if token_file:
            # fail closed: a token file that is empty (or unreadable) must not switch auth off
            self._token = Path(token_file).read_text().strip()
            if not self._token:
                raise StatusConfigError(f"--http-token-file {token_file} is empty: refusing to serve without auth")
        self._ready_checks: dict[str, ReadyCheck] = {}
        self._status: dict[str, StatusProvider] = {}
        self.app = web.Application(middlewares=[self._auth_mw])
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/v1/status", self._v1_status)
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    # -- registration -------------------------------------------------------------------------
    def add_ready_check(self, name: str, check: ReadyCheck) -> None:
        self._ready_checks[name] = check

    def add_status(self, name: str, provider: StatusProvider) -> None:
        self._status[name] = provider

    # -- handlers ------------------------------------------------------------------------------
    @web.middleware
    async def _auth_mw(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._token and request.path not in ("/healthz", "/readyz"):
            got = request.headers.get("Authorization", "")
            want = f"Bearer {self._token}"
            if not hmac.compare_digest(got.encode(), want.encode()):
                return web.json_response(
                    {"error": "unauthorized", "message": "send 'Authorization: Bearer <token>'"}, status=401
                )
        return await handler(request)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def readiness(self) -> tuple[bool, dict[str, str]]:
        details: dict[str, str] = {}
        ok = True
        for name, check in self._ready_checks.items():
            try:
                good, why = check()
            except Exception as e:  # a broken check is a not-ready, never a 500
                good, why = False, f"check raised {e!r}"
            details[name] = ("ok: " if good else "failing: ") + why
            ok = ok and good
        return ok, details

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, details = self.readiness()
        if "verbose" in request.query or not ok:
            body = "\n".join(f"[{'+' if v.startswith('ok') else '-'}]{k} {v}" for k, v in details.items())
            return web.Response(text=body + "\n", status=200 if ok else 503)
        return web.Response(text="ok\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = metrics.CONTENT_TYPE
        return resp

    async def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": self.service}
        for name, prov in self._status.items():
            val = prov()
            if not isinstance(val, dict):
                val = await val
            out[name] = val
        ok, details = self.readiness()
        out["ready"] = ok
        out["readiness"] = details
        return out

    async def _v1_status(self, _: web.Request) -> web.Response:
        return web.json_response(await self.status(), dumps=lambda o: json.dumps(o, default=str))

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        log.info("status API listening", extra={"addr": f"{self.host}:{self.bound_port}"})
        return self.bound_port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
