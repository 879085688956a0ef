"""The Redis leader-election backend (l2lb.adapters.bus.leader) against a real redis-server.

A candidate's connection can be routed through a TCP proxy that the test "cuts" (stops forwarding
without closing anything: what a dead link looks like), to check the promise that matters: the old
leader steps down before anyone else can take the key, so two processes never lead at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.leader import RedisLeaderElector
from tests.support.redis_server import RedisProcess

from .conftest import Factory, wait_until


class CutProxy:
    """127.0.0.1:port -> redis; ``cut()`` silently drops everything from then on (no FIN, no RST)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_now = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await r.read(65536):
                if self.cut_now:
                    continue  # swallow: the peer waits forever
                w.write(data)
                await w.drain()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self._writers.append(cw)
        if self.cut_now:
            return  # accepted, never answered (the writer stays open until close())
        rr, rw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.append(rw)
        for t in (self._pipe(cr, rw), self._pipe(rr, cw)):
            task = asyncio.create_task(t)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        self.cut_now = True

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy(redis_server: RedisProcess) -> AsyncIterator[CutProxy]:
    p = CutProxy(redis_server.port)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


class Candidate:
    def __init__(self, bus: Bus, identity: str, name: str, **kw: int) -> None:
        self.e = RedisLeaderElector(bus, name=name, identity=identity, **kw)
        self.changes: list[tuple[float, bool, int]] = []
        self.e.on_change(lambda leader: self.changes.append((time.monotonic(), leader, self.e.term)))
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.e.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 5)


def _name(request: pytest.FixtureRequest) -> str:
    return f"t-{request.node.name[:40]}-{time.monotonic_ns()}"


async def test_one_leader_release_on_stop_and_terms_grow(make_bus: Factory, redis_url: str,
                                                         request: pytest.FixtureRequest) -> None:
    name = _name(request)
    a = Candidate(await make_bus(redis_url), "a", name)
    await wait_until(lambda: a.e.is_leader, 3, "a leads")
    b = Candidate(await make_bus(redis_url), "b", name)
    await asyncio.sleep(0.8)
    assert a.e.is_leader and not b.e.is_leader and b.e.holder == "a"
    term_a = a.e.term
    assert term_a > 1_600_000_000_000  # wall-clock part: above any Kubernetes Lease term
    # a graceful stop deletes the key: b takes over at its next attempt, not after the TTL
    t0 = time.monotonic()
    await a.close()
    took = await wait_until(lambda: b.e.is_leader, 3, "b takes over")
    assert time.monotonic() - t0 < 0.8, took
    assert b.e.term > term_a
    assert [c[1] for c in a.changes] == [True, False]
    await b.close()


async def test_dead_link_leader_steps_down_before_anyone_else_leads(
        make_bus: Factory, redis_url: str, proxy: CutProxy, request: pytest.FixtureRequest) -> None:
    name = _name(request)
    via_proxy = await make_bus(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=5")
    a = Candidate(via_proxy, "a", name)
    await wait_until(lambda: a.e.is_leader, 3, "a leads")
    b = Candidate(await make_bus(redis_url), "b", name)
    await asyncio.sleep(0.5)
    overlap: list[float] = []

    async def watch() -> None:
        while not b.e.is_leader or a.e.is_leader:
            if a.e.is_leader and b.e.is_leader:
                overlap.append(time.monotonic())
            await asyncio.sleep(0.002)

    w = asyncio.create_task(watch())
    t0 = time.monotonic()
    proxy.cut()  # a's node loses its link: its renewals vanish
    await wait_until(lambda: b.e.is_leader, 5, "b takes over after the TTL")
    takeover = time.monotonic() - t0
    await asyncio.wait_for(w, 5)
    assert overlap == [], f"both led for {len(overlap)} samples"
    stepped_down = next(t for t, leader, _ in a.changes if not leader)
    became = next(t for t, leader, _ in b.changes if leader)
    assert stepped_down < became, (stepped_down - t0, became - t0)
    assert 0.7 <= takeover <= 1.0 + 0.3 * 2 + 0.3, takeover  # ttl 1 s + at most ~one attempt period
    print(f"takeover after the leader's link died: {takeover:.2f} s; old leader stepped down at "
          f"{stepped_down - t0:.2f} s")
    assert b.e.term > a.e.term
    await a.close()
    await b.close()


async def test_key_lost_with_redis_data_gives_a_new_higher_term(
        make_bus: Factory, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Redis restarted without its data (or failed over to a replica that missed the key): the
    leader's next renewal takes the key again with a new, higher term, and says so (lost, then led)."""
    r = RedisProcess(tmp_path / "redis")
    r.start()
    try:
        name = _name(request)
        a = Candidate(await make_bus(r.url + "?socket_timeout=1&connect_timeout=0.5"), "a", name)
        await wait_until(lambda: a.e.is_leader, 3, "a leads")
        first = a.e.term
        r.restart()  # SIGKILL + start: empty dataset, term key gone
        await wait_until(lambda: len(a.changes) >= 3, 10, "a loses and regains leadership")
        assert [c[1] for c in a.changes[:3]] == [True, False, True]
        assert a.e.is_leader and a.e.term > first
        await a.close()
    finally:
        r.stop()


async def test_bad_settings_are_clear_errors(bus: Bus) -> None:
    with pytest.raises(ValueError, match="ttl > renew deadline > renew interval"):
        RedisLeaderElector(bus, name="x", identity="a", ttl_ms=500, renew_deadline_ms=700)
    with pytest.raises(ValueError, match="may not contain"):
        RedisLeaderElector(bus, name="x", identity="a|b")
    with pytest.raises(ValueError, match="non-empty"):
        RedisLeaderElector(bus, name="x", identity="")
