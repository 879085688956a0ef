"""Simulated Redis as l2lb uses it: streams read by consumer groups, plain keys, hashes; a master
with asynchronous replicas; Sentinel promotion; restarts with or without the data.

Clients see it through :class:`Redis` with asynchronous operations (a callback gets the result
after the round trip, or a failure after ``op_timeout`` when the master cannot be reached: a
dead node does not send RST, so a client waits for its socket time-out). Consumers subscribe to a
stream under a group; entries reach them in order after the network delay; a consumer that cannot
reach the master polls again every ``poll_interval`` and then reads its backlog (what the real
consumer does after a reconnect). When the dataset it read from is gone (a restart without
persistence: a new incarnation), the consumer gets ``on_resync`` instead, like
``l2lb.adapters.bus`` does when the incarnation key changed.

Replication: every write reaches each reachable replica after ``repl_delay``; a promoted replica
keeps what reached it (the rest of the master's last writes are lost, as with real async replication).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from l2lb.sim.kernel import Kernel, Proc
from l2lb.sim.net import Lan

__all__ = ["Data", "Done", "Entry", "Redis", "Server", "Sub"]

REPL_TIMEOUT = 60.0  # Redis's repl-timeout: a replication link that cannot deliver for this long is dropped

Done = Callable[[bool, Any], None]


@dataclass(frozen=True, slots=True)
class Entry:
    id: int  # strictly increasing per dataset lineage
    at: float  # server time of the XADD (the stream's own clock, as entry ids are in Redis)
    payload: Any


def _entry_key(e: Entry) -> int:
    return e.id


TRIM_CHUNK = 1000  # trimmed entries are removed from a stream's list this many at a time (see Data.start)


@dataclass
class Data:
    incarnation: int
    streams: dict[str, list[Entry]] = field(default_factory=dict)
    keys: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_id: int = 0
    # stream -> how many entries at the start of its list are trimmed already (MAXLEN): a stream is
    # ``streams[name][start[name]:]`` (removing one entry per XADD from the front of a long list costs more
    # than all the rest of the XADD)
    start: dict[str, int] = field(default_factory=dict)

    def entries(self, stream: str) -> list[Entry]:
        s = self.streams.get(stream, [])
        lo = self.start.get(stream, 0)
        return s[lo:] if lo else s

    def copy(self) -> Data:
        return Data(self.incarnation, {k: self.entries(k)[:] for k in self.streams}, dict(self.keys),
                    {k: dict(v) for k, v in self.hashes.items()}, self.last_id)


@dataclass(eq=False)
class Server:
    proc: Proc
    data: Data
    persistent: bool = True  # survives a restart with its data (AOF/RDB) or comes back empty

    @property
    def node(self) -> str:
        return self.proc.node

    def up(self) -> bool:
        return self.proc.alive and not self.proc.paused


@dataclass(eq=False)
class Sub:
    consumer: Proc
    stream: str
    group: str
    on_entry: Callable[[Entry], None]
    on_resync: Callable[[], None]
    cursor: int = 0  # id of the last entry delivered
    incarnation: int = -1
    polling: bool = False
    in_flight: bool = False
    flight_since: float = 0.0  # when the delivery in flight was read (Sub.reads_ok)
    active: bool = True  # False once unsubscribed

    def reads_ok(self, now: float) -> bool:
        """As the bus consumer's: no delivery overdue (the real one blocks 500 ms when idle; + 300 ms slack)."""
        return not self.in_flight or now - self.flight_since <= 0.8


class Redis:
    """One Redis deployment: ``servers[0]`` is the first master, the others are replicas."""

    def __init__(self, kernel: Kernel, lan: Lan, servers: list[Server], *, sentinel_nodes: list[str] | None = None,
                 down_after: float = 1.0, election: float = 0.3, op_timeout: float = 1.0,
                 poll_interval: float = 0.1, repl_delay: float = 0.002, maxlen: int = 10_000):
        self.kernel = kernel
        self.lan = lan
        self.servers = servers
        self.master: Server = servers[0]
        self.sentinel_nodes = sentinel_nodes or []
        self.down_after = down_after
        self.election = election
        self.op_timeout = op_timeout
        self.poll_interval = poll_interval
        self.repl_delay = repl_delay
        self.maxlen = maxlen
        self.subs: list[Sub] = []
        self._repl: list[tuple[float, int, Server, Server, str, Entry]] = []  # writes on their way to replicas
        self._repl_seq = 0
        self._repl_last: dict[tuple[str, str], float] = {}
        self.by_stream: dict[str, list[Sub]] = {}
        self._incarnations = 1
        self._down_since: float | None = None
        self.promotions = 0
        self.writes_lost = 0
        self.on_promote: Callable[[Server], None] | None = None
        if self.sentinel_nodes:
            self._watch()

    # -- reachability ----------------------------------------------------------------------------
    def usable(self, client: Proc) -> bool:
        mp = self.master.proc
        return mp.alive and not mp.paused and client.alive and self.lan.reach(client.node, mp.node)

    def _rtt(self, client: Proc) -> float | None:
        """A round trip to the master, or None when the client cannot use it (see :meth:`usable`)."""
        mp = self.master.proc
        if not (mp.alive and not mp.paused and client.alive):
            return None
        lan = self.lan
        if not lan.calm and not lan.reach(client.node, mp.node):
            return None
        return lan.rtt(client.node, mp.node, self.op_timeout)

    # -- operations --------------------------------------------------------------------------------
    def call(self, client: Proc, fn: Callable[[Data], Any], done: Done | None = None) -> None:
        """Run ``fn`` on the master's data if ``client`` reaches it; ``done(ok, result)`` after the round trip
        (or ``done(False, None)`` after ``op_timeout``)."""
        rtt = self._rtt(client)
        if rtt is None:
            if done is not None:
                client.after(self.op_timeout, lambda: done(False, None))
            return
        result = fn(self.master.data)
        if done is not None:
            client.after(rtt, lambda: done(True, result))

    def xadd(self, client: Proc, stream: str, payload: Any, done: Done | None = None) -> None:
        self.call(client, lambda d: self._append(d, stream, payload), done)

    def xadd_many(self, client: Proc, stream: str, payloads: list[Any], done: Done | None = None) -> None:
        """Several XADDs in one round trip (a pipeline, as the bus's publish_many): ``done(ok, [ids])``."""
        self.call(client, lambda d: [self._append(d, stream, p) for p in payloads], done)

    def _append(self, d: Data, stream: str, payload: Any) -> int:
        # ids follow the server's clock like Redis's "<ms>-<seq>" ids (here in microseconds), so a promoted
        # replica's new entries sort after everything the old master stored
        now = self.kernel.now
        d.last_id = max(d.last_id + 1, int(now * 1_000_000))
        e = Entry(d.last_id, now, payload)
        s = d.streams.setdefault(stream, [])
        s.append(e)
        if len(s) - d.start.get(stream, 0) > self.maxlen:
            lo = len(s) - self.maxlen
            if lo >= TRIM_CHUNK:
                del s[:lo]
                lo = 0
            d.start[stream] = lo
        self._replicate(stream, e)
        for sub in self.by_stream.get(stream, ()):
            self._pump(sub)
        return e.id

    def _replicate(self, stream: str, e: Entry) -> None:
        src = self.master
        src_node, inc, now, last = src.proc.node, src.data.incarnation, self.kernel.now, self._repl_last
        for r in self.servers:
            if r is src:
                continue
            rp = r.proc
            d = self.lan.stream_delay(src_node, rp.node, REPL_TIMEOUT)
            if d is None or not rp.alive or rp.paused or r.data.incarnation != inc:
                continue
            self._repl_seq += 1
            # one ordered replication link per replica (as Redis's): a write never overtakes an earlier one
            link = (src_node, rp.node)
            due = max(now + d + self.repl_delay, last.get(link, 0.0))
            last[link] = due
            heapq.heappush(self._repl, (due, self._repl_seq, r, src, stream, e))
        self._sync()

    def _sync(self) -> None:
        """Apply the replication that has arrived by now. Nothing reads a replica's data but a promotion
        and a restart, so a write reaches it lazily: here, called before each of those and each XADD, in
        arrival order, with the checks an arrival does (same result as one event per arrival)."""
        q, now = self._repl, self.kernel.now
        while q and q[0][0] <= now:
            _, _, r, src, stream, e = heapq.heappop(q)
            if r is self.master or r.data.incarnation != src.data.incarnation:
                continue
            r.data.streams.setdefault(stream, []).append(e)
            r.data.last_id = max(r.data.last_id, e.id)

    def set_key(self, client: Proc, key: str, value: Any, done: Done | None = None) -> None:
        def write(d: Data) -> None:
            d.keys[key] = value

        self.call(client, lambda d: self._write_all(write, d), done)

    def hset(self, client: Proc, key: str, values: dict[str, Any], done: Done | None = None) -> None:
        def write(d: Data) -> None:
            d.hashes.setdefault(key, {}).update(values)

        self.call(client, lambda d: self._write_all(write, d), done)

    def _write_all(self, write: Callable[[Data], None], d: Data) -> None:
        """Apply a write to the master's data now and to each reachable replica after ``repl_delay``."""
        write(d)
        src = self.master
        for r in self.servers:
            if r is not src and r.up() and self.lan.reach(src.node, r.node):
                rd = r.data
                self.kernel.after(self.repl_delay, lambda rd=rd: write(rd))  # type: ignore[misc]

    # -- consumers ---------------------------------------------------------------------------------
    def subscribe(self, consumer: Proc, stream: str, group: str, on_entry: Callable[[Entry], None],
                  on_resync: Callable[[], None], *, from_start: bool = False) -> Sub:
        sub = Sub(consumer, stream, group, on_entry, on_resync)
        if self.usable(consumer):
            sub.incarnation = self.master.data.incarnation
            if not from_start:
                sub.cursor = self.master.data.last_id
        self.subs.append(sub)
        self.by_stream.setdefault(stream, []).append(sub)
        self._pump(sub)
        return sub

    def unsubscribe_all(self, consumer: Proc) -> None:
        for s in self.subs:
            if s.consumer is consumer:
                s.active = False
        self.subs = [s for s in self.subs if s.active]
        self.by_stream = {k: [s for s in v if s.active] for k, v in self.by_stream.items()}

    def _pump(self, sub: Sub) -> None:
        """Deliver what ``sub`` has not seen, or start polling until it can."""
        if sub.in_flight or not sub.active:
            return
        c = sub.consumer
        if not c.alive:
            return
        rtt = self._rtt(c)
        if rtt is None:
            if not sub.polling:
                sub.polling = True

                def poll() -> None:
                    sub.polling = False
                    self._pump(sub)

                c.after(self.poll_interval if self.usable(c) else self.op_timeout, poll)
            return
        d = self.master.data
        if sub.incarnation != d.incarnation:
            first = sub.incarnation == -1
            sub.incarnation = d.incarnation
            sub.cursor = 0 if not first else sub.cursor
            if not first:
                sub.in_flight = True

                def resync() -> None:
                    sub.in_flight = False
                    sub.on_resync()
                    self._pump(sub)

                c.deliver(resync, rtt)
                return
        entries = d.streams.get(sub.stream)
        lo = d.start.get(sub.stream, 0)  # (entries before it are trimmed)
        if not entries or len(entries) <= lo or entries[-1].id <= sub.cursor:
            return
        # entries after the cursor (ids increase along the stream); mostly just the newest one
        if len(entries) - lo == 1 or entries[-2].id <= sub.cursor:
            batch = entries[-1:]
        else:
            batch = entries[bisect.bisect_right(entries, sub.cursor, lo=lo, key=_entry_key):]
        if not batch:
            return
        sub.cursor = batch[-1].id
        sub.in_flight = True
        sub.flight_since = self.kernel.now

        def got() -> None:
            sub.in_flight = False
            for e in batch:
                sub.on_entry(e)
            self._pump(sub)

        c.deliver(got, rtt / 2)

    # -- faults ------------------------------------------------------------------------------------
    def restart(self, server: Server, downtime: float) -> None:
        """SIGKILL + start again after ``downtime``; without persistence the data is gone."""
        server.proc.kill()
        self.kernel.after(downtime, lambda: self.rejoin(server))

    def rejoin(self, server: Server) -> None:
        """A killed server starts again: still the master -> with its data (persistent) or empty (a new
        incarnation: consumers resync); a replica (or an old master that was replaced) -> a copy of the
        master's data."""
        self._sync()
        server.proc.restart()
        if server is self.master:
            if not server.persistent:
                self._incarnations += 1
                server.data = Data(self._incarnations, last_id=server.data.last_id)
        else:
            server.data = self.master.data.copy()
        self.kick()

    def kick(self) -> None:
        """Reachability changed: every consumer tries again now."""
        for s in self.subs:
            self._pump(s)

    def _watch(self) -> None:
        """Sentinels: promote a replica when the master is unreachable from a majority of them for
        ``down_after`` (then ``election`` for the vote)."""
        period = 0.1

        def tick() -> None:
            m = self.master
            alive_sentinels = [n for n in self.sentinel_nodes if self.lan.link_up.get(n, False)]
            quorum = len(self.sentinel_nodes) // 2 + 1
            seeing_down = [n for n in alive_sentinels if not (m.up() and self.lan.reach(n, m.node))]
            if len(seeing_down) >= quorum:
                if self._down_since is None:
                    self._down_since = self.kernel.now
                elif self.kernel.now - self._down_since >= self.down_after:
                    self._down_since = None
                    self._promote(seeing_down)
            else:
                self._down_since = None
            self.kernel.after(period, tick)

        self.kernel.after(period, tick)

    def _promote(self, sentinels: list[str]) -> None:
        self._sync()
        old = self.master
        cands = [r for r in self.servers if r is not old and r.up()
                 and any(self.lan.reach(s, r.node) for s in sentinels)]
        if not cands:
            return
        best = max(cands, key=lambda r: (r.data.incarnation == old.data.incarnation, r.data.last_id, r.node))

        def done() -> None:
            self._sync()
            if not best.up():
                return
            self.writes_lost += max(0, old.data.last_id - best.data.last_id)
            self.master = best
            self.promotions += 1
            if self.on_promote is not None:
                self.on_promote(best)
            if old.up():  # the old master becomes a replica of the new one (resyncs its data)
                old.data = best.data.copy()
            self.kick()

        self.kernel.after(self.election, done)
