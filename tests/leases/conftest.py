"""Fixtures shared by the leases tests (and the announcer's bus tests): a Bus on the test Redis under the
prefix "t", and a leases Harness on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from l2lb.adapters.bus.client import Bus
from tests.leases.harness import Harness


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(redis_url, prefix="t")
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def h(bus: Bus) -> AsyncIterator[Harness]:
    harness = Harness(bus)
    try:
        yield harness
    finally:
        await harness.close()
