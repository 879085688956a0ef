"""redis+sentinel:// DSN: master discovery and a real Sentinel failover to the replica."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import stop_process
from tests.support.redis_server import RedisProcess, free_port

from .conftest import Factory, Recorder, Running, hb, wait_until


class SentinelProc:
    def __init__(self, workdir: Path, master_port: int):
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 400\n"
            "sentinel failover-timeout mymaster 2000\n"
            "sentinel parallel-syncs mymaster 1\n"
        )
        exe = shutil.which("redis-server")
        assert exe is not None
        log = open(workdir / "sentinel.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([exe, str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("sentinel did not start")

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess, SentinelProc]]:
    master = RedisProcess(tmp_path / "master")
    master.start()
    replica = RedisProcess(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    sent = SentinelProc(tmp_path / "sentinel", master.port)
    try:
        yield master, replica, sent
    finally:
        sent.stop()
        replica.stop()
        master.stop()


@pytest.mark.slow
async def test_sentinel_discovery_and_failover(sentinel_setup: tuple[RedisProcess, RedisProcess, SentinelProc],
                                               make_bus: Factory, running: Running) -> None:
    master, replica, sent = sentinel_setup
    bus = await make_bus(f"redis+sentinel://127.0.0.1:{sent.port}/mymaster/0", health_interval=0.2)
    ok, why = bus.readiness()
    assert ok, why
    rec = Recorder()
    c = bus.consumer(bus.keys.heartbeats, "leases:x", "x", rec, on_resync=rec.on_resync, block_ms=200)
    running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await asyncio.sleep(0.05)
    await bus.publish(bus.keys.heartbeats, hb(seq=1))
    await wait_until(lambda: len(rec.seen) == 1, what="delivered through the sentinel-discovered master")
    info = await bus.redis.info("server")
    assert int(info["tcp_port"]) == master.port
    # let the replica catch up (group and incarnation replicated), then kill the master
    async def replicated() -> None:
        while int(await bus.redis.execute_command("WAIT", 1, 500)) < 1:
            pass

    await asyncio.wait_for(replicated(), 10)
    import redis.asyncio as aioredis

    rr = aioredis.Redis(port=replica.port)
    assert await rr.get(bus.keys.incarnation) == bus.incarnation_id.encode()  # type: ignore[union-attr]
    await rr.aclose()
    master.stop(kill=True)
    t0 = time.monotonic()
    await wait_until(lambda: not bus.readiness()[0], timeout=5, what="outage visible")

    async def publish_until_ok() -> None:
        while True:
            try:
                await bus.publish(bus.keys.heartbeats, hb(seq=2))
                return
            except Exception:
                await asyncio.sleep(0.1)

    await asyncio.wait_for(publish_until_ok(), 15)
    failover_s = time.monotonic() - t0
    print(f"publish works again {failover_s:.2f}s after the master was killed")
    info = await bus.redis.info("server")
    assert int(info["tcp_port"]) == replica.port
    await wait_until(lambda: len(rec.seen) == 2, timeout=5, what="delivery after failover")
    # the replica had the incarnation and the group: no resync needed, nothing lost
    assert rec.resyncs == []
    assert failover_s < 15


async def test_sentinel_names_are_looked_up_once(sentinel_setup: tuple[RedisProcess, RedisProcess, SentinelProc],
                                                make_bus: Factory) -> None:
    """A sentinel given by name (localhost here, a Service name in Kubernetes): its address, looked up at
    connect, is asked first from then on, the name last; discovery goes through the address."""
    master, _, sent = sentinel_setup
    bus = await make_bus(f"redis+sentinel://localhost:{sent.port}/mymaster/0", health_interval=0.2)
    assert bus.readiness()[0], bus.readiness()
    assert bus._sentinel is not None
    hosts = [s.connection_pool.connection_kwargs["host"] for s in bus._sentinel.sentinels]
    assert "127.0.0.1" in hosts and hosts[-1] == "localhost", hosts
    assert all(h != "localhost" for h in hosts[:-1]), hosts
    assert bus.dsn.hosts == (("localhost", sent.port),)  # logs and readiness still name what was configured
    info = await bus.redis.info("server")
    assert int(info["tcp_port"]) == master.port
    # the sentinel that answered moves to the front of the list: the address, not the name
    assert bus._sentinel.sentinels[0].connection_pool.connection_kwargs["host"] == "127.0.0.1"


@pytest.mark.slow
async def test_bus_leaves_a_deposed_master_that_is_still_up(
        sentinel_setup: tuple[RedisProcess, RedisProcess, SentinelProc], make_bus: Factory, running: Running) -> None:
    """The master is frozen long enough for Sentinel to promote the replica, then thaws: for a while it
    still believes it is the master and the consumer's blocked read on it still works. The bus must
    notice that the sentinels name another master and move every connection there (redis-py alone
    only moves idle connections), instead of reading from the deposed one until Sentinel demotes it."""
    import os
    import signal

    import redis.asyncio as aioredis

    master, replica, sent = sentinel_setup
    bus = await make_bus(f"redis+sentinel://127.0.0.1:{sent.port}/mymaster/0", health_interval=0.2)
    rec = Recorder()
    c = bus.consumer(bus.keys.heartbeats, "leases:x", "x", rec, on_resync=rec.on_resync, block_ms=200)
    running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await bus.publish(bus.keys.heartbeats, hb(seq=1))
    await wait_until(lambda: len(rec.seen) == 1, what="first delivery")
    while int(await bus.redis.execute_command("WAIT", 1, 500)) < 1:
        pass
    assert master.proc is not None
    sentinel = aioredis.Redis(port=sent.port)
    os.kill(master.proc.pid, signal.SIGSTOP)
    try:
        async def promoted() -> bool:
            got = await sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
            return int(got[1]) == replica.port

        deadline = time.monotonic() + 15
        while not await promoted():
            assert time.monotonic() < deadline, "sentinel did not promote the replica"
            await asyncio.sleep(0.1)
    finally:
        os.kill(master.proc.pid, signal.SIGCONT)
    await sentinel.aclose()
    t0 = time.monotonic()
    new = aioredis.Redis(port=replica.port)
    try:
        # written on the new master only: the consumer sees it once it reads from there
        from l2lb.core.messages import encode

        await new.xadd(bus.keys.heartbeats, {b"m": encode(hb(seq=2))})
        await wait_until(lambda: len(rec.seen) == 2, timeout=5, what="delivery from the new master")
    finally:
        await new.aclose()
    print(f"consumer reading from the new master {time.monotonic() - t0:.2f} s after the promotion")
    info = await bus.redis.info("server")
    assert int(info["tcp_port"]) == replica.port
