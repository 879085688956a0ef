"""Per-service least-privilege ACL users (deploy/redis/users.acl): each can do exactly its job."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from l2lb.adapters.bus.acl import DEV_PASSWORDS, render_users_acl
from l2lb.adapters.bus.client import Bus, BusAuthError, BusPermissionError
from l2lb.adapters.bus.keys import Keys
from l2lb.core.messages import Allocation, AllocationSnapshot, Message, NodeAssignments, SnapshotRequest
from tests.support.redis_server import RedisProcess

from .conftest import Factory, Recorder, Running, hb, na, wait_until

REPO = Path(__file__).resolve().parents[2]


class AclRedis:
    def __init__(self, proc: RedisProcess, passwords: dict[str, str]):
        self.proc = proc
        self.passwords = passwords

    def dsn(self, user: str, password: str | None = None) -> str:
        pw = password if password is not None else self.passwords[user]
        return f"redis://{user}:{pw}@127.0.0.1:{self.proc.port}/0"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    work = tmp_path_factory.mktemp("redis-acl")
    pws = {s: secrets.token_hex(8) for s in ("allocator", "leases", "announcer", "admin")}
    text = render_users_acl(Keys(), pws, extra_lines=[f"user admin on >{pws['admin']} ~* &* +@all"])
    (work / "users.acl").write_text(text)
    proc = RedisProcess(work, extra=["--aclfile", str(work / "users.acl")])
    proc.start()
    try:
        yield AclRedis(proc, pws)
    finally:
        proc.stop()


@pytest.fixture
async def acl(acl_redis: AclRedis) -> AsyncIterator[AclRedis]:
    admin = aioredis.Redis.from_url(acl_redis.dsn("admin"))
    await admin.flushall()
    await admin.aclose()
    yield acl_redis


def test_checked_in_acl_file_is_the_rendered_one() -> None:
    assert (REPO / "deploy/redis/users.acl").read_text() == render_users_acl(Keys(), DEV_PASSWORDS)


async def test_checked_in_acl_file_loads_in_redis(tmp_path: Path, make_bus: Factory) -> None:
    proc = RedisProcess(tmp_path, extra=["--aclfile", str(REPO / "deploy/redis/users.acl")])
    proc.start()
    try:
        bus = await make_bus(f"redis://announcer:{DEV_PASSWORDS['announcer']}@127.0.0.1:{proc.port}/0")
        assert bus.readiness()[0]
        await bus.publish(bus.keys.heartbeats, hb())
        with pytest.raises(BusAuthError):  # the default user is disabled
            await Bus.connect(proc.url)
    finally:
        proc.stop()


async def test_bad_credentials_give_a_clear_error(acl: AclRedis) -> None:
    with pytest.raises(BusAuthError) as ei:
        await Bus.connect(acl.dsn("leases", "wrong-password"))
    assert "refused user 'leases'" in str(ei.value)
    assert "wrong-password" not in str(ei.value)
    with pytest.raises(BusAuthError):
        await Bus.connect(acl.dsn("nobody", "x"))


async def test_services_work_end_to_end_with_only_their_acl(acl: AclRedis, make_bus: Factory,
                                                            running: Running) -> None:
    alloc = await make_bus(acl.dsn("allocator"), client_name="allocator")
    leases = await make_bus(acl.dsn("leases"), client_name="leases")
    ann = await make_bus(acl.dsn("announcer"), client_name="announcer")
    k = alloc.keys
    got_alloc, got_hb, got_assign = Recorder(), Recorder(), Recorder()
    served: list[str] = []

    async def serve_alloc(req: SnapshotRequest) -> None:
        served.append("allocations:" + req.requester)
        await alloc.publish(k.allocations, AllocationSnapshot(term=1, seq=2))

    async def serve_assign(req: SnapshotRequest) -> None:
        served.append("assignments:" + req.requester)
        await leases.publish(k.assignments, na("n1", 1, 5, "198.51.100.9"))

    cons = [
        leases.consumer(k.allocations, "leases:l0", "l0", got_alloc, block_ms=200),
        leases.consumer(k.heartbeats, "leases:l0", "l0", got_hb, block_ms=200),
        ann.consumer(k.assignments, "announcer:n1", "n1", got_assign, block_ms=200),
        alloc.serve_snapshots("allocations", "a0", serve_alloc),
        leases.serve_snapshots("assignments", "l0", serve_assign),
    ]
    for c in cons:
        c.block_ms = 200
        running.start(c)
    await wait_until(lambda: all(c._incarnation for c in cons), what="all consumers set up")
    await asyncio.sleep(0.1)

    a = Allocation(key="default/dns", namespace="default", name="dns", uid="u1", generation=1, seq=1, term=1,
                   ips=("198.51.100.53",))
    await alloc.publish(k.allocations, a)
    await alloc.store_snapshot("allocations", AllocationSnapshot(term=1, seq=1, allocations=(a,)))
    await ann.publish(k.heartbeats, hb("n1"))
    await leases.publish(k.assignments, na("n1", 1, 1, "198.51.100.53"))
    await leases.redis.hset(k.epochs, "198.51.100.53", 1)
    await leases.store_snapshot("assignments", na("n1", 1, 1, "198.51.100.53"))
    assert isinstance(await leases.load_snapshot("allocations"), AllocationSnapshot)
    assert isinstance(await ann.load_snapshot("assignments"), NodeAssignments)
    await ann.request_snapshot("assignments", "n1", "test")
    await leases.request_snapshot("allocations", "l0", "test")
    await leases.publish_raw(k.assignments, b'{"k":"node_assignments","v":0}')  # dead-lettered by announcer

    await wait_until(lambda: len(got_alloc.seen) == 2 and len(got_hb.seen) == 1 and len(got_assign.seen) == 2
                     and cons[2].deadlettered == 1, what="every flow delivered")
    assert sorted(served) == ["allocations:l0", "assignments:n1"]
    for b in (alloc, leases, ann):
        ok, why = b.readiness()
        assert ok, why


def _is_alloc(m: Message) -> bool:
    return isinstance(m, Allocation)


@pytest.mark.parametrize("service", ["allocator", "leases", "announcer"])
async def test_each_service_is_refused_outside_its_job(service: str, acl: AclRedis, make_bus: Factory,
                                                       running: Running) -> None:
    bus = await make_bus(acl.dsn(service))
    k = bus.keys
    may_publish = {"allocator": {k.allocations}, "leases": {k.assignments, k.control},
                   "announcer": {k.heartbeats, k.control}}[service]
    for stream in (k.allocations, k.assignments, k.heartbeats, k.control):
        if stream in may_publish:
            await bus.publish(stream, hb())
        else:
            with pytest.raises(BusPermissionError) as ei:
                await bus.publish(stream, hb())
            assert f"redis user {service!r} may not run XADD on {stream!r}" in str(ei.value)
    # snapshots: only the owner writes
    own = {"allocator": "allocations", "leases": "assignments", "announcer": None}[service]
    for topic in ("allocations", "assignments"):
        if topic == own:
            await bus.store_snapshot(topic, AllocationSnapshot(term=1, seq=1))
        else:
            with pytest.raises(BusPermissionError):
                await bus.store_snapshot(topic, AllocationSnapshot(term=1, seq=1))
    if service != "leases":
        with pytest.raises(NoPermissionError):
            await bus.redis.hset(k.epochs, "198.51.100.1", 1)
    with pytest.raises(NoPermissionError):
        await bus.redis.get("some:other:key")
    # consuming a stream it has no business reading: a clear not-ready, no crash
    forbidden = {"allocator": k.heartbeats, "leases": k.assignments, "announcer": k.allocations}[service]
    rec = Recorder()
    c = bus.consumer(forbidden, "x", "x", rec, block_ms=200)
    stop, task = running.start(c)
    await wait_until(lambda: forbidden in bus.readiness()[1], timeout=3, what="not ready: ACL")
    ok, why = bus.readiness()
    assert not ok and "redis ACL denies" in why
    assert c.handled == 0
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 3)


@pytest.mark.parametrize("service", ["allocator", "leases"])
async def test_redis_leader_election_under_its_acl(acl: AclRedis, make_bus: Factory, service: str) -> None:
    """--leader-election-backend redis: each active/standby service may run the election on its own
    key (Lua scripts, TIME included), not on the other's; the announcer on none."""
    from l2lb.adapters.bus.leader import RedisLeaderElector

    bus = await make_bus(acl.dsn(service))
    e = RedisLeaderElector(bus, name=f"l2lb-{service}", identity="a")
    assert await e.try_acquire_or_renew() and e.term > 0
    assert await e.try_acquire_or_renew()  # renewal
    assert await e.release()
    other = "leases" if service == "allocator" else "allocator"
    with pytest.raises(NoPermissionError):
        await RedisLeaderElector(bus, name=f"l2lb-{other}", identity="a").try_acquire_or_renew()
    ann = await make_bus(acl.dsn("announcer"))
    with pytest.raises(NoPermissionError):
        await RedisLeaderElector(ann, name=f"l2lb-{service}", identity="a").try_acquire_or_renew()
