"""A minimal Chrome DevTools Protocol client over aiohttp's websocket (headless Debian chromium)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Browser:
    def __init__(self, exe: str):
        self.exe = exe
        self.tmp = tempfile.TemporaryDirectory(prefix="l2lb-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    def _spawn(self, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            return subprocess.Popen([self.exe, *FLAGS, f"--user-data-dir={self.tmp.name}/profile", "about:blank"],
                                    stdout=subprocess.DEVNULL, stderr=f)

    async def start(self, timeout: float = 20.0) -> None:
        log = Path(self.tmp.name) / "stderr.log"
        self.proc = self._spawn(log)
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline and url is None:
            m = re.search(r"DevTools listening on (ws://\S+)", log.read_text(errors="replace"))
            if m:
                url = m.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited: " + log.read_text(errors="replace")[-2000:])
            await asyncio.sleep(0.05)
        if url is None:
            raise RuntimeError("chromium did not open its DevTools port: " + log.read_text(errors="replace")[-2000:])
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            d = json.loads(msg.data)
            fut = self._pending.pop(d.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in d:
                    fut.set_exception(RuntimeError(str(d["error"])))
                else:
                    fut.set_result(d.get("result", {}))

    async def send(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None) -> Any:
        assert self.ws is not None
        self._id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._id] = fut
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session_id:
            msg["sessionId"] = session_id
        await self.ws.send_str(json.dumps(msg))
        return await asyncio.wait_for(fut, 15)

    async def open(self, url: str) -> str:
        """Open ``url`` in a new page; returns the CDP session id of the page."""
        target = await self.send("Target.createTarget", {"url": url})
        att = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        sid: str = att["sessionId"]
        return sid

    async def evaluate(self, sid: str, expr: str) -> Any:
        res = await self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, sid)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, sid: str, expr: str, timeout: float = 10.0) -> Any:
        """Poll ``expr`` every 100 ms until truthy; return its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = await self.evaluate(sid, expr)
            except RuntimeError as e:  # page still loading (element missing): keep polling
                last = str(e)[:200]
                await asyncio.sleep(0.1)
                continue
            if last:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {expr!r} (last value {last!r})")

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 3)
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            for _ in range(50):  # up to 5 s for a clean exit
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.proc.kill()
                for _ in range(50):
                    if self.proc.poll() is not None:
                        break
                    await asyncio.sleep(0.1)
        self.tmp.cleanup()
