"""Fake announcers for the leases integration tests and the API-traffic bench.

A :class:`FakeAnnouncer` speaks the real bus protocol: it publishes Heartbeat messages at its
interval (with the VIPs it currently serves) and consumes NodeAssignments from its own group,
keeping the newest (term, seq) set until its ttl runs out -- the announcer's contract, minus ARP.
A NodeRenewal extends the set only when its digest names the set held (and that set is still
valid); otherwise the fake asks leases for its full set (SnapshotRequest, at most once per second).
Like the announcer, it leaves its serving map out of heartbeats (``serving_omitted``, only the digest)
while the map is the one last sent in full less than ``full_every_ms`` ago in the same leases term and a
NodeRenewal was accepted within min(5 s, its ttl / 2); ``full_every_ms=0`` always sends the map.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from l2lb.adapters.bus.client import Bus
from l2lb.core.messages import Heartbeat, InterfaceInfo, Message, NodeAssignments, NodeRenewal, serving_digest

RENEWAL_FRESH_S = 5.0  # as l2lb.core.announcer_machine: a renewal counts for min(this, its ttl / 2)


class FakeAnnouncer:
    def __init__(self, bus: Bus, node: str, *, labels: dict[str, str] | None = None,
                 ifaces: tuple[tuple[str, bool], ...] = (("eth0", True),), interval_ms: int = 100,
                 full_every_ms: int = 2000):
        self.bus = bus
        self.node = node
        self.labels = labels if labels is not None else {"kubernetes.io/hostname": node}
        self.ifaces = dict(ifaces)
        self.interval_ms = interval_ms
        self.instance = uuid.uuid4().hex[:8]
        self.seq = 0
        self.vips: dict[str, int] = {}
        self.last: tuple[int, int] = (0, 0)
        self.expires = 0.0
        self.heartbeating = True
        self.stopping = False
        self.dead = False
        self.received = 0
        self.digest = ""
        self.renewed = 0
        self.mismatches = 0
        self.snapshot_requests = 0
        self._last_request = 0.0
        self.changes: list[tuple[float, frozenset[str]]] = []  # (monotonic, serving set) on change
        self.full_every_ms = full_every_ms
        self.renewal_fresh_until: float | None = None
        self.full_sent: tuple[str, float, int] | None = None  # (digest, monotonic, leases term) of the last full map
        self.hb_full = 0
        self.hb_omitted = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- the announcer's view ---------------------------------------------------------------------
    def serving(self) -> dict[str, int]:
        if time.monotonic() > self.expires:
            if self.vips:
                self.vips = {}
                self.changes.append((time.monotonic(), frozenset()))
            return {}
        return dict(self.vips)

    async def _on_assignments(self, msg: Message, _id: str) -> None:
        if isinstance(msg, NodeRenewal):
            await self._on_renewal(msg)
            return
        if not isinstance(msg, NodeAssignments) or msg.node != self.node or self.dead:
            return
        if (msg.term, msg.seq) <= self.last:
            return
        self.last = (msg.term, msg.seq)
        self.received += 1
        self.digest = msg.digest
        self.expires = time.monotonic() + msg.ttl_ms / 1000.0
        new = {v.ip: v.epoch for v in msg.vips}
        if set(new) != set(self.vips):
            self.changes.append((time.monotonic(), frozenset(new)))
        self.vips = new

    async def _on_renewal(self, msg: NodeRenewal) -> None:
        if msg.node != self.node or self.dead or (msg.term, msg.seq) <= self.last:
            return
        now = time.monotonic()
        if now <= self.expires and self.digest and msg.digest == self.digest:
            self.last = (msg.term, msg.seq)
            self.renewed += 1
            self.renewal_fresh_until = now + min(RENEWAL_FRESH_S, msg.ttl_ms / 2000.0)
            self.expires = now + msg.ttl_ms / 1000.0
            return
        self.mismatches += 1
        if now - self._last_request >= 1.0:
            self._last_request = now
            self.snapshot_requests += 1
            with contextlib.suppress(Exception):
                await self.bus.request_snapshot("assignments", f"announcer:{self.node}", "digest_mismatch")

    async def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            if self.heartbeating:
                self.seq += 1
                serving = self.serving()
                digest = serving_digest(serving)
                omit = self.may_omit(serving, digest)
                hb = Heartbeat(
                    node=self.node, instance=self.instance, seq=self.seq, sent_at=time.time(),
                    interval_ms=self.interval_ms, labels=dict(self.labels),
                    interfaces=tuple(InterfaceInfo(name=n, mac="02:00:00:00:00:01", up=up)
                                     for n, up in sorted(self.ifaces.items())),
                    serving={} if omit else serving, stopping=self.stopping,
                    serving_digest=digest, serving_omitted=omit,
                )
                term = self.last[0]
                with contextlib.suppress(Exception):  # Redis restarting: try again next interval
                    await self.bus.publish(self.bus.keys.heartbeats, hb)
                    if omit:
                        self.hb_omitted += 1
                    else:
                        self.hb_full += 1
                        self.full_sent = (digest, time.monotonic(), term)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_ms / 1000.0)

    def may_omit(self, serving: dict[str, int], digest: str) -> bool:
        now = time.monotonic()
        if self.full_every_ms <= 0 or not serving or self.stopping or self.full_sent is None:
            return False
        if self.renewal_fresh_until is None or now >= self.renewal_fresh_until:
            return False
        sent_digest, at, term = self.full_sent
        return sent_digest == digest and now - at < self.full_every_ms / 1000.0 and term == self.last[0]

    async def start(self) -> None:
        c = self.bus.consumer(self.bus.keys.assignments, f"announcer:{self.node}", self.node,
                              self._on_assignments)
        self._tasks = [asyncio.create_task(c.run(self._stop)), asyncio.create_task(self._heartbeat_loop())]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def revive(self) -> None:
        self.heartbeating = True
        self.dead = False

    def die(self) -> float:
        """Stop heartbeating and stop serving (a crashed node); returns the monotonic time."""
        self.heartbeating = False
        self.dead = True
        self.vips = {}
        self.expires = 0.0
        self.digest = ""
        return time.monotonic()
