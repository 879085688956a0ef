"""The one way out of the image builder's network namespace: an HTTP CONNECT proxy for pip.

`docker build` runs the Dockerfile's `pip install` in dockerd's network namespace, which has only
loopback (no route, no NAT, no firewall change anywhere). This proxy's listening socket is made
*inside* that namespace (127.0.0.1:<port>, via setns on one thread); the connections it opens are
made from this process's own namespace. It tunnels only to the package index pip itself is set up
for (pip's default index and file host, or PIP_INDEX_URL's host) on port 443, nothing else, and
logs every request. Builds use it through Docker's predefined build arguments HTTPS_PROXY/https_proxy
(no ARG needed in the Dockerfile, and they are not kept in the image).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field

from l2lb.lab.netns import entered

IDLE_TIMEOUT_S = 120.0
MAX_CONNECTIONS = 2000


def pip_index_hosts() -> set[str]:
    """The hosts pip downloads from, as pip's own configuration names them."""
    hosts: set[str] = set()
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        for url in os.environ.get(var, "").split():
            if url:
                hosts.add(urllib.parse.urlsplit(url).hostname or "")
    if not os.environ.get("PIP_INDEX_URL"):
        from pip._internal.models.index import PyPI  # pip's defaults: index and file host

        hosts.add(PyPI.netloc)
        hosts.add(PyPI.file_storage_domain)
    hosts.discard("")
    return hosts


@dataclass
class EgressProxy:
    ns: str
    allow: set[str] = field(default_factory=pip_index_hosts)
    port: int = 0
    requests: list[tuple[str, int, bool]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.base_events.Server | None = None
    _count: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EgressProxy:
        with entered(self.ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
            ready.set()

        def run() -> None:
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="l2lb-egress-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("egress proxy did not start")
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = ([*line.split(" "), "", ""])[:3]
            host, _, port_s = target.rpartition(":")
            ok = (method == "CONNECT" and host in self.allow and port_s == "443"
                  and self._count <= MAX_CONNECTIONS)
            self.requests.append((host or target, int(port_s) if port_s.isdigit() else 0, ok))
            if not ok:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, 443), 30)
            except (OSError, TimeoutError):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            try:
                await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
            finally:
                up_w.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await asyncio.wait_for(src.read(65536), IDLE_TIMEOUT_S)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> EgressProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
