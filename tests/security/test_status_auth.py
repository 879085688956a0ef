"""Every service's own status endpoints (StatusServer: /metrics, /v1/status) refuse requests without
the bearer token when auth is on; probes (/healthz, /readyz) stay open for kubelet. The cluster API
routes (/v1/services ...) are covered by tests/status/test_api.py::test_token_required."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from l2lb.adapters.http.server import StatusServer


async def test_status_server_refuses_without_the_token(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("s3cret-token\n")  # a trailing newline (as kubectl create secret writes it) is ignored
    srv = StatusServer("sec-test", host="127.0.0.1", port=0, token_file=str(tok))
    srv.add_status("secret", lambda: {"inside": "data"})
    port = await srv.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            for path in ("/metrics", "/v1/status"):
                for hdr in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                            {"Authorization": "Bearer s3cret-token-and-more"}, {"Authorization": "Basic s3cret-token"}):
                    async with s.get(base + path, headers=hdr) as r:
                        body = await r.text()
                        assert r.status == 401, (path, hdr, r.status)
                        assert "inside" not in body and "l2lb_" not in body
            for path in ("/healthz", "/readyz"):
                async with s.get(base + path) as r:
                    assert r.status == 200, path
            ok = {"Authorization": "Bearer s3cret-token"}
            async with s.get(base + "/v1/status", headers=ok) as r:
                assert r.status == 200 and (await r.json())["secret"] == {"inside": "data"}
            async with s.get(base + "/metrics", headers=ok) as r:
                assert r.status == 200
    finally:
        await srv.stop()


async def test_without_a_token_file_the_api_is_open(tmp_path: Path) -> None:
    # the control for the test above: the same requests pass when auth is off
    srv = StatusServer("sec-test", host="127.0.0.1", port=0)
    port = await srv.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get(f"http://127.0.0.1:{port}/v1/status") as r:
            assert r.status == 200
    finally:
        await srv.stop()
