"""Client-side rate limiting and retry backoff for the Kubernetes client.

:class:`TokenBucket` is a reservation-based token bucket with the semantics of Go's
``golang.org/x/time/rate`` limiter that client-go uses: ``qps`` tokens per second, at most
``burst`` banked; every request reserves one token and sleeps until its reservation time. A wait
that would end after the caller's deadline is refused up front (nothing is consumed) with
:class:`RateLimitDeadline` -- "client rate limiter Wait would exceed context deadline".

The arithmetic (:meth:`TokenBucket.reserve`) is synchronous and takes the clock as a parameter
so it can be tested with a fake clock; :meth:`TokenBucket.wait` is the asyncio front end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "RateLimitDeadline", "Reservation", "TokenBucket", "backoff_delay"]


class RateLimitDeadline(Exception):
    """The limiter would make the caller wait past its deadline."""

    def __init__(self, wait: float, remaining: float):
        super().__init__(
            f"client rate limiter Wait would exceed context deadline "
            f"(needs {wait:.3f}s, {max(remaining, 0.0):.3f}s left)"
        )
        self.wait = wait
        self.remaining = remaining


@dataclass
class Reservation:
    """One reserved token: act at ``time_to_act`` (clock units); ``delay`` from reservation time."""

    time_to_act: float
    delay: float


class TokenBucket:
    """Token bucket: ``qps`` tokens/s refill, ``burst`` capacity, starts full.

    ``qps <= 0`` means unlimited (every reservation has zero delay).
    """

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.qps = float(qps)
        self.burst = int(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._last_act = self._last  # latest time_to_act handed out

    # -- arithmetic (no I/O) ---------------------------------------------------------------------
    def _advance(self, now: float) -> float:
        last = min(self._last, now)
        return min(float(self.burst), self._tokens + (now - last) * self.qps)

    def tokens(self, now: float | None = None) -> float:
        """Tokens available at ``now`` (negative while callers are queued)."""
        if self.qps <= 0:
            return float(self.burst)
        return self._advance(self.clock() if now is None else now)

    def reserve(self, now: float | None = None, max_wait: float | None = None) -> Reservation:
        """Take one token; return when it may be used.

        If ``max_wait`` is given and the wait would be longer, nothing is taken and
        :class:`RateLimitDeadline` is raised.
        """
        now = self.clock() if now is None else now
        if self.qps <= 0:
            return Reservation(now, 0.0)
        tokens = self._advance(now) - 1.0
        delay = 0.0 if tokens >= 0 else -tokens / self.qps
        if max_wait is not None and delay > max_wait:
            raise RateLimitDeadline(delay, max_wait)
        self._tokens = tokens
        self._last = now
        act = now + delay
        self._last_act = max(self._last_act, act)
        return Reservation(act, delay)

    def cancel(self, r: Reservation, now: float | None = None) -> None:
        """Give back a reservation that was not used (its waiter was cancelled).

        As in Go's limiter, the token is only restored when no later reservation depends on it.
        """
        now = self.clock() if now is None else now
        if self.qps <= 0 or r.time_to_act <= now:
            return
        if r.time_to_act >= self._last_act:
            self._tokens = self._advance(now) + 1.0
            self._last = now
            self._last_act = now + max(0.0, -self._tokens / self.qps)

    # -- asyncio ---------------------------------------------------------------------------------
    async def wait(self, deadline: float | None = None) -> float:
        """Wait for a token; returns the seconds waited.

        ``deadline`` is an absolute time on this bucket's clock. Raises :class:`RateLimitDeadline`
        without waiting when the token would come after it.
        """
        now = self.clock()
        max_wait = None if deadline is None else deadline - now
        if max_wait is not None and max_wait < 0:
            raise RateLimitDeadline(0.0, max_wait)
        r = self.reserve(now, max_wait)
        if r.delay <= 0:
            return 0.0
        try:
            await asyncio.sleep(r.delay)
        except asyncio.CancelledError:
            self.cancel(r)
            raise
        return r.delay


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.2,
    cap: float = 30.0,
    factor: float = 2.0,
    jitter: float = 0.5,
    rng: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with jitter: ``min(cap, base * factor**attempt)`` times ``1 + jitter*U[0,1)``.

    ``attempt`` counts from 0. The result never exceeds ``cap * (1 + jitter)``.
    """
    attempt = max(attempt, 0)
    raw = base * (factor ** min(attempt, 64))
    return min(cap, raw) * (1.0 + jitter * rng())


class Backoff:
    """Stateful exponential backoff (``next()`` grows, ``reset()`` after a success)."""

    def __init__(
        self,
        base: float = 0.2,
        cap: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: Callable[[], float] = random.random,
    ):
        self.base, self.cap, self.factor, self.jitter, self.rng = base, cap, factor, jitter, rng
        self.attempt = 0

    def next(self) -> float:
        d = backoff_delay(
            self.attempt, base=self.base, cap=self.cap, factor=self.factor, jitter=self.jitter, rng=self.rng
        )
        self.attempt += 1
        return d

    def reset(self) -> None:
        self.attempt = 0
