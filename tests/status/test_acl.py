"""The status keys under least-privilege Redis ACL users (the bus's per-service rules)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from l2lb.adapters.bus.acl import service_rules
from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.keys import Keys
from l2lb.adapters.bus.status import ClusterSource, StatusPublisher, publish_event, status_acl_selectors


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(redis_url, client_name="status-acl-admin")
    users: list[str] = []
    b.users = users  # type: ignore[attr-defined]
    try:
        yield b
    finally:
        for u in users:
            await b.redis.acl_deluser(u)
        await b.close()


async def user_bus(admin: Bus, redis_url: str, rules: list[str]) -> Bus:
    name = f"st{secrets.token_hex(4)}"
    pw = secrets.token_hex(8)
    await admin.redis.execute_command("ACL", "SETUSER", name, "on", f">{pw}", *rules)  # type: ignore[no-untyped-call]
    admin.users.append(name)  # type: ignore[attr-defined]
    u = urlsplit(redis_url)
    return await Bus.connect(f"redis://{name}:{pw}@{u.hostname}:{u.port}/0", client_name=name)


@pytest.mark.parametrize("service", ["allocator", "leases"])
async def test_writer_and_reader_with_status_selectors(admin: Bus, redis_url: str, service: str) -> None:
    keys = Keys()
    bus = await user_bus(admin, redis_url, service_rules(keys, service))  # the selectors are part of them
    try:
        part = "services" if service == "allocator" else "nodes"
        pub = StatusPublisher(bus, part, min_interval=0.0)
        pub.update({"items": [{"key": "a/b", "node": "n1"}]})
        await pub.close()
        assert pub.writes == 1
        assert await publish_event(bus, "move", ip="198.51.100.153") is not None
        src = ClusterSource(bus)
        assert await src.refresh() == [part]
        assert [e["type"] for e in await src.events(5)] == ["move"]
    finally:
        await bus.close()


async def test_without_the_selectors_writes_fail_cleanly(admin: Bus, redis_url: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys()
    # the allocator's rules as they were before they included the cluster-view selectors
    rules = [r for r in service_rules(keys, "allocator") if r not in status_acl_selectors(keys)]
    assert len(rules) == len(service_rules(keys, "allocator")) - len(status_acl_selectors(keys))
    bus = await user_bus(admin, redis_url, rules)
    try:
        pub = StatusPublisher(bus, "pools", min_interval=0.0, retry_after=0.05)
        with caplog.at_level(logging.WARNING, logger="l2lb.status"):
            pub.update({"items": [{"name": "p"}]})
            await asyncio.sleep(0.4)  # several retries
        assert pub.writes == 0
        warned = [r for r in caplog.records if "could not write status part" in r.getMessage()]
        assert len(warned) == 1 and "ACL" in warned[0].getMessage()  # once, with a hint
        assert await publish_event(bus, "move", ip="198.51.100.153") is None
        await pub.close()
    finally:
        await bus.close()
