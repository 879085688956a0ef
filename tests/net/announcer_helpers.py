"""Helpers for the announcer's namespace tests: run it as a subprocess in a node namespace, talk HTTP to
it inside the namespace, and send/receive raw frames from the client namespace."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from l2lb.lab.netns import Host, Topology, entered, have_privileges, list_namespaces, run
from tests.support.procs import stop_process

HTTP_PORT = 19473
ETH_P_ALL = 0x0003


def http_get(ns: str, path: str, port: int = HTTP_PORT, timeout: float = 2.0) -> tuple[int, bytes]:
    with entered(ns):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s, 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        body = out
    return status, body


class AnnouncerProc:
    """``l2lb announcer`` running in ``host``'s namespace."""

    def __init__(self, host: Host, node: str, tmp: Path, *, static: dict[str, Any] | None = None,
                 extra: list[str] | None = None, bus: str | None = None):
        self.host = host
        self.node = node
        self.static_path = tmp / f"static-{node}.json"
        self.log_path = tmp / f"announcer-{node}.log"
        args = [sys.executable, "-m", "l2lb.cli", "announcer", "--node", node, "--interfaces", host.ifname,
                "--http-port", str(HTTP_PORT), "--log-level", "debug", *(extra or [])]
        if static is not None:
            self.write_static(static)
            args += ["--static-assignments", str(self.static_path)]
        args += ["--redis", bus] if bus else ["--no-bus"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["ip", "netns", "exec", host.ns, *args], stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def write_static(self, data: dict[str, Any]) -> None:
        self.static_path.write_text(json.dumps(data))

    def reload(self, data: dict[str, Any]) -> None:
        self.write_static(data)
        self.proc.send_signal(signal.SIGHUP)

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"announcer exited {self.proc.returncode}:\n{self.log()}")
            try:
                code, body = http_get(self.host.ns, "/readyz")
                if code == 200:
                    return
                last = body.decode()
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise AssertionError(f"announcer not ready: {last}\n{self.log()}")

    def status(self) -> dict[str, Any]:
        code, body = http_get(self.host.ns, "/v1/status")
        assert code == 200, body
        st: dict[str, Any] = json.loads(body)["announcer"]
        return st

    def metrics(self) -> str:
        return http_get(self.host.ns, "/metrics")[1].decode()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        stop_process(self.proc, wait=10)
        self._log.close()


@contextlib.contextmanager
def announcer(host: Host, node: str, tmp: Path, **kw: Any) -> Iterator[AnnouncerProc]:
    a = AnnouncerProc(host, node, tmp, **kw)
    try:
        a.wait_ready()
        yield a
    finally:
        a.stop()


def metric_value(text: str, name: str, labels: str = "") -> float:
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


class RawClient:
    """An AF_PACKET socket on ``host``'s interface (made inside its namespace)."""

    def __init__(self, host: Host):
        with entered(host.ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((host.ifname, 0))
        self.mac = bytes.fromhex(host.mac.replace(":", ""))

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def collect(self, match: Callable[[bytes], bool], *, timeout: float, want: int | None = None) -> list[bytes]:
        """Frames matching ``match`` received until ``timeout`` (or ``want`` of them)."""
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (want is None or len(out) < want):
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                break
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            if match(data):
                out.append(data)
        return out

    def close(self) -> None:
        self.sock.close()


_counter = itertools.count()


def private_topology() -> Iterator[Topology]:
    """Like the shared ``topology`` fixture, with a prefix ("a" + digits) that the shared fixture's
    start-of-session sweep of "t#####*" names does not delete while several pytest sessions run at once."""
    ok, why = have_privileges()
    if not ok:
        pytest.skip(why)
    prefix = f"a{os.getpid() % 1000:03d}{next(_counter) % 100:02d}"
    for ns in list_namespaces():
        if ns.startswith(prefix):
            run(["ip", "netns", "del", ns], check=False)
    topo = Topology(prefix)
    try:
        yield topo
    finally:
        topo.destroy()
        leftovers = [n for n in list_namespaces() if n.startswith(prefix)]
        assert not leftovers, f"namespaces leaked: {leftovers}"
