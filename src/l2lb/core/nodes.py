"""Node liveness from announcer heartbeats (pure: the caller passes a monotonic clock reading).

A node is alive from its first heartbeat until either

* ``missed`` heartbeat intervals pass without a newer heartbeat (the interval is the one the
  announcer advertises, clamped to ``[min_interval_ms, max_interval_ms]``), or
* it reports ``stopping`` (graceful shutdown: hand over at once), or
* it reports interfaces and every one of them is down (its NIC went away: fail over at once,
  unlike Cilium which keeps a node with a dead NIC as leader).

Heartbeats of an announcer instance that was replaced by a newer one (a restart) and heartbeats
with a sequence not above the last one seen from the same instance are ignored.

Reconnect grace (:meth:`NodeTracker.reconnected`): after the bus came back, the Redis master changed,
or every node was silent at once, the nodes' heartbeat clients are still finding Redis (a command
in flight to a dead master waits for its socket time-out). A node not heard since that moment (the
*floor*) counts its silence from the floor, not from its last heartbeat, and gets ``grace`` on top
of its timeout -- unless its LAN neighbours (nodes that listed it in the ``lan_heard`` of an earlier
heartbeat) heard since the floor report it no more, and no node heard since the floor does: then it
is silent on the LAN too (for longer than the peers' timeout) and dead at once (a node that died during
the outage, or just after it before its client reconnected, loses its VIPs as fast as without the
grace; its LAN successors stop taking over by themselves once leases renews them again). A node heard
after the floor is back on its normal timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from l2lb.core.messages import Heartbeat

__all__ = ["NodeState", "NodeTracker"]


@dataclass
class NodeState:
    node: str
    heartbeat: Heartbeat
    last_seen: float  # caller's monotonic clock, seconds
    alive: bool = True
    reason: str = "heartbeat"  # why alive/dead: heartbeat | timeout | stopping | interfaces_down
    since: float = 0.0  # when ``alive`` last changed
    old_instances: set[str] = field(default_factory=set)
    heartbeats: int = 0


def _relevant(hb: Heartbeat) -> tuple[Any, ...]:
    """What the election looks at; a change here triggers a new election."""
    return (
        tuple(sorted(hb.labels.items())),
        tuple(sorted((i.name, i.up) for i in hb.interfaces)),
    )


def _dead_reason(hb: Heartbeat) -> str | None:
    if hb.stopping:
        return "stopping"
    if hb.interfaces and not any(i.up for i in hb.interfaces):
        return "interfaces_down"
    return None


class NodeTracker:
    def __init__(self, missed: int = 3, min_interval_ms: int = 20, max_interval_ms: int = 10_000):
        if missed < 1:
            raise ValueError("missed must be >= 1")
        self.missed = missed
        self.min_interval_ms = min_interval_ms
        self.max_interval_ms = max_interval_ms
        self.nodes: dict[str, NodeState] = {}
        self.floor: float | None = None  # the last reconnect (caller's clock): see reconnected()
        self.grace_s = 0.0
        self.silent_since: float | None = None  # when the silence before the floor began (caller's clock)
        self._heard: set[str] = set()  # nodes heard at or after the floor
        self._lan: tuple[frozenset[str], frozenset[str]] | None = None  # cache of lan_evidence()
        self.lan_neighbours: dict[str, set[str]] = {}  # node -> the nodes that listed it in their lan_heard
        self._timeouts: dict[int, float] = {}  # advertised interval -> timeout (see timeout_s)
        self.timeout_floor_s = missed * min(min_interval_ms, max_interval_ms) / 1000.0  # no timeout is shorter

    def reconnected(self, at: float, grace_s: float, since: float | None = None) -> None:
        """Heartbeats can flow again from ``at`` on (the bus is back, another master, every node was silent
        since ``since``): a node not heard since then is timed out ``grace_s`` after its timeout counted from
        ``at`` -- unless it was overdue already when the silence began (its silence is its own)."""
        if self.floor is None or at > self.floor:
            self.floor = at
            self.silent_since = since
            self._heard.clear()
            self._lan = None
        self.grace_s = max(0.0, grace_s)

    def shift(self, delta: float) -> None:
        """Move every time on the caller's clock by ``delta`` (the liveness clock was rebased)."""
        for st in self.nodes.values():
            st.last_seen += delta
            st.since += delta
        if self.floor is not None:
            self.floor += delta
        if self.silent_since is not None:
            self.silent_since += delta

    def deadline(self, st: NodeState) -> float:
        """When ``st`` times out if it stays silent: its last heartbeat + its timeout, or for a node not heard
        since the last reconnect, that reconnect + its timeout + the grace."""
        timeout = self.timeout_s(st.heartbeat)
        if self.floor is not None and st.node not in self._heard and not (
                self.silent_since is not None and st.last_seen + timeout < self.silent_since):
            reporters, heard = self.lan_evidence()
            if st.node not in heard and not reporters.isdisjoint(self.lan_neighbours.get(st.node, ())):
                return max(st.last_seen + timeout, self.floor)  # silent on the LAN as well: no grace
            return max(st.last_seen, self.floor + self.grace_s) + timeout
        return st.last_seen + timeout

    def lan_evidence(self) -> tuple[frozenset[str], frozenset[str]]:
        """(the live nodes heard since the floor that report their LAN peers, the nodes those reports name)."""
        if self._lan is None:
            reporters: set[str] = set()
            heard: set[str] = set()
            for n in self._heard:
                st = self.nodes.get(n)
                if st is not None and st.alive and st.heartbeat.lan_heard is not None:
                    reporters.add(n)
                    heard.update(st.heartbeat.lan_heard)
            self._lan = (frozenset(reporters), frozenset(heard))
        return self._lan

    def in_grace(self, st: NodeState, now: float) -> bool:
        """``st`` would be timed out by now without the reconnect grace."""
        return st.alive and now > st.last_seen + self.timeout_s(st.heartbeat) and now <= self.deadline(st)

    def timeout_s(self, hb: Heartbeat) -> float:
        t = self._timeouts.get(hb.interval_ms)  # (asked for every node on every tick and heartbeat)
        if t is None:
            iv = min(max(hb.interval_ms, self.min_interval_ms), self.max_interval_ms)
            t = self.missed * iv / 1000.0
            if len(self._timeouts) >= 16:
                self._timeouts.clear()
            self._timeouts[hb.interval_ms] = t
        return t

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Record one heartbeat received at ``now``; True when something the election uses changed."""
        st = self.nodes.get(hb.node)
        if st is None:
            reason = _dead_reason(hb)
            self.nodes[hb.node] = NodeState(
                node=hb.node, heartbeat=hb, last_seen=now, alive=reason is None,
                reason=reason or "heartbeat", since=now, heartbeats=1,
            )
            self._heard_at(hb.node, now)
            self._neighbours(hb, None)
            return True
        cur = st.heartbeat
        if hb.instance in st.old_instances:
            if hb.sent_at <= cur.sent_at:
                return False
            # sent after the current instance's last heartbeat: this one lives, the current one was a replay
            # taken while the live one was silent (a Redis outage, then a resync from a promoted replica)
            st.old_instances.discard(hb.instance)
        if hb.instance == cur.instance and hb.seq <= cur.seq:
            return False
        if hb.instance != cur.instance:
            if hb.sent_at < cur.sent_at and st.alive and now - st.last_seen <= self.timeout_s(cur):
                # an instance we never saw, sent before the live one's last heartbeat: a replay (a consumer
                # resynced from a promoted replica reads the stream from its start), not a restart. Taking it
                # would put the live instance among the old ones and ignore it for good (simulator finding
                # S1). Both instances ran on this node, so their wall clocks compare; after a clock step
                # backwards a real new instance is still taken once the old one has gone silent.
                return False
            st.old_instances.add(cur.instance)
            if len(st.old_instances) > 16:
                st.old_instances.pop()
        # (an announcer passes the same labels and interfaces objects while they are unchanged)
        changed = (hb.labels is not cur.labels or hb.interfaces is not cur.interfaces) and (
            _relevant(hb) != _relevant(cur))
        self._neighbours(hb, cur.lan_heard)
        st.heartbeat = hb
        st.last_seen = now
        st.heartbeats += 1
        self._heard_at(hb.node, now)
        reason = _dead_reason(hb)
        alive = reason is None
        if alive != st.alive:
            st.alive = alive
            st.since = now
            changed = True
        st.reason = reason or "heartbeat"
        return changed

    def _neighbours(self, hb: Heartbeat, before: tuple[str, ...] | None) -> None:
        if hb.lan_heard is not None and hb.lan_heard != before:
            for n in hb.lan_heard:
                self.lan_neighbours.setdefault(n, set()).add(hb.node)

    def _heard_at(self, node: str, now: float) -> None:
        if self.floor is not None and now >= self.floor:
            self._heard.add(node)
            self._lan = None

    def tick(self, now: float) -> set[str]:
        """Apply timeouts at ``now``; returns the nodes whose liveness changed."""
        out: set[str] = set()
        for st in self.nodes.values():
            if st.alive and now > self.deadline(st):
                st.alive = False
                st.reason = "timeout"
                st.since = now
                out.add(st.node)
        if out:
            self._lan = None
        return out

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which a live node would time out."""
        ds = [self.deadline(st) for st in self.nodes.values() if st.alive]
        return min(ds) if ds else None

    def forget(self, node: str) -> None:
        self.nodes.pop(node, None)
        self._heard.discard(node)
        self._lan = None
        self.lan_neighbours.pop(node, None)

    def prune(self, now: float, after_s: float) -> list[str]:
        """Drop nodes dead for longer than ``after_s`` (bounded memory); returns their names."""
        gone = [n for n, st in self.nodes.items() if not st.alive and now - st.since > after_s]
        for n in gone:
            del self.nodes[n]
            self._heard.discard(n)
            self._lan = None
            self.lan_neighbours.pop(n, None)
        return gone

    def alive(self) -> dict[str, Heartbeat]:
        return {n: st.heartbeat for n, st in sorted(self.nodes.items()) if st.alive}

    def is_alive(self, node: str) -> bool:
        st = self.nodes.get(node)
        return bool(st and st.alive)

    def status(self, now: float) -> list[dict[str, Any]]:
        out = []
        for n, st in sorted(self.nodes.items()):
            hb = st.heartbeat
            out.append({
                "node": n, "alive": st.alive, "reason": st.reason,
                "heartbeat_age_ms": round((now - st.last_seen) * 1000, 1),
                "reconnect_grace": self.in_grace(st, now),
                "instance": hb.instance, "seq": hb.seq, "interval_ms": hb.interval_ms,
                "interfaces": [{"name": i.name, "up": i.up, "mac": i.mac} for i in hb.interfaces],
                "serving": len(hb.serving), "heartbeats": st.heartbeats,
            })
        return out
