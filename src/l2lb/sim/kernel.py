"""The simulator's kernel: one virtual clock, one seeded RNG, one event queue (pure, deterministic).

Nothing here reads a real clock or does I/O: a run is a function of its seed. Events scheduled for
the same instant run in the order they were scheduled (a sequence number breaks ties), so two runs
with one seed execute the very same steps.

Processes (:class:`Proc`) schedule their callbacks through the kernel; a callback of a process that
died since it was scheduled is dropped, one of a paused process is held and runs on resume (as a
SIGSTOPped process finds its timers overdue after SIGCONT). Each process reads its own clocks:
``mono()`` (never steps) and ``wall()`` (sim time + an offset the fault "clock step" changes).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sized
from dataclasses import dataclass, field

__all__ = ["Handle", "Kernel", "Proc"]


class Handle:
    """A scheduled callback; :meth:`cancel` makes the kernel skip it. ``proc``/``inc``: the process (and its
    incarnation) it belongs to, if any: void when that process died, held while it is paused."""

    __slots__ = ("cancelled", "fn", "inc", "proc", "t")

    def __init__(self, t: float, fn: Callable[[], None], proc: Proc | None = None, inc: int = 0):
        self.t = t
        self.fn = fn
        self.cancelled = False
        self.proc = proc
        self.inc = inc

    def cancel(self) -> None:
        self.cancelled = True


class Kernel:
    """Virtual time in seconds from 0; ``run_until`` executes every event up to a time."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, Handle]] = []
        self._seq = 0
        self.steps = 0
        self.elided = 0.0

    def at(self, t: float, fn: Callable[[], None], proc: Proc | None = None) -> Handle:
        self._seq += 1
        t = max(t, self.now)
        h = Handle(t, fn, proc, proc.incarnation if proc is not None else 0)
        heapq.heappush(self._heap, (t, self._seq, h))
        return h

    def after(self, dt: float, fn: Callable[[], None], proc: Proc | None = None) -> Handle:
        # (Kernel.at, inlined: the most frequent call of the simulator)
        self._seq += 1
        t = self.now + dt if dt > 0.0 else self.now
        h = Handle(t, fn, proc, proc.incarnation if proc is not None else 0)
        heapq.heappush(self._heap, (t, self._seq, h))
        return h

    def run_until(self, t_end: float | Callable[[], float], stop: Callable[[], bool] | None = None, *,
                  stop_on: Sized | None = None) -> None:
        """Run every event due by ``t_end`` (a time, or a function giving it: it may move while running,
        see :meth:`elide`); stop early when ``stop()`` turns true, or ``stop_on`` (a list the events append
        to) is no longer empty, after an event."""
        heap = self._heap
        pop = heapq.heappop
        moving = callable(t_end)
        elided = self.elided
        limit = t_end() if callable(t_end) else t_end
        steps = self.steps
        try:
            while heap:
                if heap[0][0] > limit:
                    if not moving or self.elided == elided:
                        break
                    elided = self.elided  # an elision moved the end (see elide)
                    limit = t_end()  # type: ignore[operator]
                    continue
                t, _, h = pop(heap)
                if h.cancelled:
                    continue
                p = h.proc
                if p is not None:
                    if not p.alive or p.incarnation != h.inc:
                        continue
                    if p.paused:
                        p._held.append(h.fn)
                        continue
                self.now = t
                steps += 1
                h.fn()
                if moving and self.elided != elided:
                    elided = self.elided
                    limit = t_end()  # type: ignore[operator]
                if stop_on:
                    return
                if stop is not None and stop():
                    return
        finally:
            self.steps = steps
        end = t_end() if callable(t_end) else t_end
        self.now = max(self.now, end)

    def elide(self, dt: float) -> None:
        """Declare ``dt`` seconds of steady state as having passed without simulating them.

        Nothing inside the simulation sees it: processes, Redis and the API server keep living on
        ``now`` (the *perceived* time) without a jump. Only the outside -- the fault schedule and the
        report's simulated duration, which use :meth:`real` -- moves ``dt`` ahead. The caller must have
        established that the cluster is in a steady state (see ``World.steady``)."""
        self.elided += dt

    def advance_clock(self, proc: Proc, jump: float) -> list[Callable[[], None]]:
        """``proc``'s clock jumped ``jump`` ahead of the kernel's: its live timers (and what is on its way to it)
        come due ``jump`` earlier. Those due by now are cancelled and returned (callbacks in due order); the
        others keep their handles, moved."""
        now = self.now
        due: list[tuple[float, int, Handle]] = []
        keep: list[tuple[float, int, Handle]] = []
        for entry in self._heap:
            t, seq, h = entry
            if h.proc is proc and not h.cancelled and h.inc == proc.incarnation:
                if t - jump <= now:
                    h.cancelled = True
                    due.append(entry)
                    continue
                h.t = t - jump
                keep.append((h.t, seq, h))
            else:
                keep.append(entry)
        heapq.heapify(keep)
        self._heap[:] = keep  # (in place: run_until holds the list)
        due.sort(key=lambda e: (e[0], e[1]))
        return [h.fn for _, _, h in due]

    def real(self) -> float:
        """Simulated time including elided steady stretches."""
        return self.now + self.elided

    def pending(self) -> int:
        return sum(1 for _, _, h in self._heap if not h.cancelled)


@dataclass(eq=False)
class Proc:
    """A simulated process on a node: its timers die with it and wait while it is paused."""

    kernel: Kernel
    node: str
    name: str
    alive: bool = True
    paused: bool = False
    incarnation: int = 0
    wall_offset: float = 0.0
    # the monotonic clock runs ahead of the kernel's by what was elided while this process was paused (see resume)
    mono_offset: float = 0.0
    _held: list[Callable[[], None]] = field(default_factory=list)
    _paused_at_elided: float = 0.0

    def mono(self) -> float:
        return self.kernel.now + self.mono_offset

    def wall(self) -> float:
        return self.kernel.now + self.wall_offset

    def after(self, dt: float, fn: Callable[[], None]) -> Handle:
        """``fn`` after ``dt``, unless this incarnation died by then; held while paused (see Kernel.run_until)."""
        k = self.kernel
        k._seq += 1
        t = k.now + dt if dt > 0.0 else k.now
        h = Handle(t, fn, self, self.incarnation)
        heapq.heappush(k._heap, (t, k._seq, h))
        return h

    def deliver(self, fn: Callable[[], None], delay: float = 0.0) -> None:
        """A message for this process: dropped if it dies first, held while it is paused."""
        self.after(delay, fn)

    def kill(self) -> None:
        self.alive = False
        self.paused = False
        self._held.clear()

    def at_mono(self, t: float, fn: Callable[[], None]) -> Handle:
        """``fn`` at time ``t`` of this process's monotonic clock."""
        return self.kernel.at(t - self.mono_offset, fn, self)

    def pause(self) -> None:
        if self.alive:
            self.paused = True
            self._paused_at_elided = self.kernel.elided

    def resume(self) -> None:
        """SIGCONT: what came due while the process was stopped runs now, in order. A stretch elided meanwhile
        (Kernel.elide) passed for this process as it does for the outside, unlike for the running ones, which
        were steady through it: its monotonic clock jumps by it, and its timers come due that much earlier (those
        due within it are overdue)."""
        if not self.alive or not self.paused:
            return
        self.paused = False
        jump = self.kernel.elided - self._paused_at_elided
        if jump > 0:
            self.mono_offset += jump
            self._held.extend(self.kernel.advance_clock(self, jump))
        held, self._held = self._held, []
        inc = self.incarnation

        def run(fn: Callable[[], None]) -> Callable[[], None]:
            def go() -> None:
                if self.alive and self.incarnation == inc:
                    fn()
            return go

        for fn in held:
            # a held callback runs now, in the order it came due (the process catches up)
            self.kernel.after(0.0, run(fn))

    def restart(self) -> None:
        """A new incarnation of the process (old timers are void)."""
        self.incarnation += 1
        self.alive = True
        self.paused = False
        self._held.clear()
