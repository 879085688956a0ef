"""Child processes of the lab: started in a namespace, logged to files, always reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class Proc:
    name: str
    args: list[str]
    ns: str | None
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Supervisor:
    """Starts processes (optionally inside a netns) and guarantees they are gone at the end."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: dict[str, Proc] = {}
        logdir.mkdir(parents=True, exist_ok=True)

    async def start(self, name: str, args: list[str], *, ns: str | None = None,
                    env: dict[str, str] | None = None) -> Proc:
        log_path = self.logdir / f"{name}.log"
        full = (["ip", "netns", "exec", ns] if ns else []) + args
        p = self.procs.get(name) or Proc(name=name, args=args, ns=ns, log_path=log_path)
        p.extra_env = env or p.extra_env
        penv = dict(os.environ)
        penv.update(p.extra_env)
        penv["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as fh:
            fh.write(f"\n--- start {time.strftime('%H:%M:%S')}: {' '.join(full)}\n".encode())
            fh.flush()
            p.proc = await asyncio.create_subprocess_exec(
                *full, stdout=fh, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                env=penv, start_new_session=True,
            )
        p.started_at = time.monotonic()
        self.procs[name] = p
        return p

    async def restart(self, name: str) -> Proc:
        p = self.procs[name]
        return await self.start(name, p.args, ns=p.ns)

    def signal(self, name: str, sig: int) -> None:
        p = self.procs[name]
        if p.alive and p.proc is not None:
            # the whole session: 'ip netns exec' execs the program, but be thorough
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.proc.pid, sig)

    async def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        p = self.procs[name]
        if p.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.proc.wait(), 5)

    async def stop_all(self, timeout: float = 5.0) -> list[str]:
        """SIGTERM everything, then SIGKILL what is left; returns names that needed SIGKILL."""
        for name in self.procs:
            self.signal(name, signal.SIGTERM)
        forced = []
        deadline = time.monotonic() + timeout
        for name, p in self.procs.items():
            if p.proc is None:
                continue
            try:
                await asyncio.wait_for(p.proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                forced.append(name)
                self.signal(name, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.proc.wait(), 5)
        return forced

    def check_alive(self) -> None:
        for p in self.procs.values():
            if p.proc is not None and p.proc.returncode is not None and p.proc.returncode not in (0, -9, -15):
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}; last log lines:\n{p.tail()}")


async def wait_http_ready(url: str, proc: Proc | None = None, timeout: float = 30.0) -> None:
    """Poll ``url`` (a /readyz) until it answers 200; fail early with the log if the process died."""
    deadline = time.monotonic() + timeout
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as s:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive:
                raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode if proc.proc else '?'}) "
                                   f"before it was ready; last log lines:\n{proc.tail()}")
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}: {(await r.text())[:300]}"
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                last = repr(e)
            await asyncio.sleep(0.1)
    tail = f"\nlast log lines:\n{proc.tail()}" if proc else ""
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s ({last}){tail}")


def python_cli() -> list[str]:
    """How to run this same l2lb (the installed console script's interpreter)."""
    return [sys.executable, "-m", "l2lb.cli"]
