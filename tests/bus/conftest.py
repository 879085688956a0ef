"""Helpers for the bus tests (real redis-server from tests/support/redis_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from l2lb.adapters.bus.client import Bus, Consumer
from l2lb.core.messages import Heartbeat, Message, NodeAssignments, VipAssignment


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Poll ``pred`` every 10 ms; return the time it took, fail after ``timeout`` s."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def hb(node: str = "n1", seq: int = 1, **kw: Any) -> Heartbeat:
    return Heartbeat(node=node, instance="i1", seq=seq, sent_at=time.time(), interval_ms=100, **kw)


def na(node: str, term: int, seq: int, *ips: str) -> NodeAssignments:
    return NodeAssignments(node=node, term=term, seq=seq, ttl_ms=1000, sent_at=time.time(),
                           vips=tuple(VipAssignment(ip=ip, epoch=seq) for ip in ips))


@dataclass
class Recorder:
    """A handler that records what it saw."""

    seen: list[tuple[Message, str]] = field(default_factory=list)
    resyncs: list[tuple[str, float]] = field(default_factory=list)

    async def __call__(self, msg: Message, eid: str) -> None:
        self.seen.append((msg, eid))

    async def on_resync(self, reason: str) -> None:
        self.resyncs.append((reason, time.monotonic()))


class Running:
    """Consumers started in the background; all stopped at teardown."""

    def __init__(self) -> None:
        self.items: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(self, c: Consumer) -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        task = asyncio.create_task(c.run(stop))
        self.items.append((stop, task))
        return stop, task

    async def stop_all(self) -> None:
        for stop, _ in self.items:
            stop.set()
        for _, task in self.items:
            if not task.done():
                try:
                    await asyncio.wait_for(task, 5)
                except (asyncio.CancelledError, TimeoutError):
                    pass


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = Running()
    try:
        yield r
    finally:
        await r.stop_all()


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(redis_url, client_name="test")
    try:
        yield b
    finally:
        await b.close()


Factory = Callable[..., Awaitable[Bus]]


@pytest.fixture
async def make_bus() -> AsyncIterator[Factory]:
    made: list[Bus] = []

    async def make(dsn: str, **kw: Any) -> Bus:
        b = await Bus.connect(dsn, **kw)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            await b.close()
