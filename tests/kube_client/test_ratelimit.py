"""Token bucket arithmetic with a fake clock, its asyncio front end, and backoff."""

from __future__ import annotations

import asyncio
import time

import pytest

from l2lb.adapters.kube.ratelimit import Backoff, RateLimitDeadline, TokenBucket, backoff_delay


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_qps_spacing() -> None:
    clock = FakeClock()
    b = TokenBucket(qps=5, burst=3, clock=clock)
    delays = [b.reserve().delay for _ in range(6)]
    assert delays[:3] == [0.0, 0.0, 0.0]
    # then one token every 1/qps seconds, queued behind each other
    assert delays[3:] == pytest.approx([0.2, 0.4, 0.6])


def test_refill_is_capped_at_burst() -> None:
    clock = FakeClock()
    b = TokenBucket(qps=10, burst=4, clock=clock)
    for _ in range(4):
        b.reserve()
    assert b.tokens() == pytest.approx(0.0)
    clock.t += 100.0
    assert b.tokens() == pytest.approx(4.0)
    clock.t += 0.05
    assert [b.reserve().delay for _ in range(5)] == pytest.approx([0, 0, 0, 0, 0.1])


def test_admitted_times_never_exceed_rate() -> None:
    """Whatever the arrival pattern, in any window of length W after the burst at most qps*W+burst pass."""
    clock = FakeClock()
    qps, burst = 7.0, 5
    b = TokenBucket(qps=qps, burst=burst, clock=clock)
    acts = []
    for i in range(200):
        clock.t += (i % 5) * 0.01  # bursty arrivals, faster than qps
        acts.append(b.reserve().time_to_act)
    acts.sort()
    for i, start in enumerate(acts):
        n = sum(1 for a in acts[i:] if a < start + 1.0)
        assert n <= qps * 1.0 + burst + 1e-9
    # after the burst, consecutive admissions are at least 1/qps apart
    gaps = [b2 - a for a, b2 in zip(acts[burst:], acts[burst + 1 :], strict=False)]
    assert min(gaps) >= 1 / qps - 1e-9


def test_deadline_refuses_without_consuming() -> None:
    clock = FakeClock()
    b = TokenBucket(qps=1, burst=1, clock=clock)
    assert b.reserve(max_wait=0).delay == 0.0
    with pytest.raises(RateLimitDeadline, match="would exceed context deadline"):
        b.reserve(max_wait=0.5)  # needs 1 s
    # the refused call took nothing: the next caller still waits exactly 1 s
    assert b.reserve().delay == pytest.approx(1.0)


def test_cancel_returns_the_last_token() -> None:
    clock = FakeClock()
    b = TokenBucket(qps=2, burst=1, clock=clock)
    b.reserve()
    r1 = b.reserve()
    r2 = b.reserve()
    assert (r1.delay, r2.delay) == pytest.approx((0.5, 1.0))
    b.cancel(r1)  # a later reservation depends on it: nothing restored
    assert b.reserve().delay == pytest.approx(1.5)
    r4 = b.reserve()
    b.cancel(r4)  # last one: restored
    assert b.reserve().delay == pytest.approx(2.0)


def test_unlimited_when_qps_zero() -> None:
    b = TokenBucket(qps=0, burst=1, clock=FakeClock())
    assert all(b.reserve().delay == 0 for _ in range(100))


def test_bad_burst_is_rejected() -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(qps=1, burst=0)


async def test_async_wait_spaces_concurrent_callers() -> None:
    b = TokenBucket(qps=20, burst=2)
    t0 = time.monotonic()
    stamps: list[float] = []

    async def one() -> None:
        await b.wait()
        stamps.append(time.monotonic() - t0)

    await asyncio.gather(*(one() for _ in range(8)))
    stamps.sort()
    assert stamps[1] < 0.05
    # 6 tokens after the burst at 20/s -> last one at ~0.3 s
    assert 0.27 <= stamps[-1] <= 0.5


async def test_async_wait_deadline_raises_immediately() -> None:
    b = TokenBucket(qps=1, burst=1)
    await b.wait()
    t0 = time.monotonic()
    with pytest.raises(RateLimitDeadline):
        await b.wait(deadline=time.monotonic() + 0.2)
    assert time.monotonic() - t0 < 0.1


def test_backoff_grows_is_capped_and_jittered() -> None:
    assert backoff_delay(0, base=0.1, jitter=0, rng=lambda: 0.0) == pytest.approx(0.1)
    assert backoff_delay(3, base=0.1, jitter=0, rng=lambda: 0.0) == pytest.approx(0.8)
    assert backoff_delay(50, base=0.1, cap=5, jitter=0.5, rng=lambda: 0.999) <= 7.5
    assert backoff_delay(2, base=1, jitter=0.5, rng=lambda: 0.5) == pytest.approx(5.0)
    bo = Backoff(base=0.1, cap=1.0, jitter=0.0)
    seq = [bo.next() for _ in range(6)]
    assert seq == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    bo.reset()
    assert bo.next() == pytest.approx(0.1)
