"""Node liveness from announcer heartbeats (pure: the caller passes a monotonic clock reading).

A node is alive from its first heartbeat until either

* ``missed`` heartbeat intervals pass without a newer heartbeat (the interval is the one the
  announcer advertises, clamped to ``[min_interval_ms, max_interval_ms]``), or
* it reports ``stopping`` (graceful shutdown: hand over at once), or
* it reports interfaces and every one of them is down (its NIC went away: fail over at once,
  unlike Cilium which keeps a node with a dead NIC as leader).

Heartbeats of an announcer instance that was replaced by a newer one (a restart) and heartbeats
with a sequence not above the last one seen from the same instance are ignored.
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

    def timeout_s(self, hb: Heartbeat) -> float:
        iv = min(max(hb.interval_ms, self.min_interval_ms), self.max_interval_ms)
        return self.missed * iv / 1000.0

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Record one heartbeat received at ``now``; True when something the election uses changed."""
        st = self.nodes.get(hb.node)
        if st is None:
            reason = _dead_reason(hb)
            self.nodes[hb.node] = NodeState(
                node=hb.node, heartbeat=hb, last_seen=now, alive=reason is None,
                reason=reason or "heartbeat", since=now, heartbeats=1,
            )
            return True
        cur = st.heartbeat
        if hb.instance in st.old_instances:
            return False
        if hb.instance == cur.instance and hb.seq <= cur.seq:
            return False
        if hb.instance != cur.instance:
            st.old_instances.add(cur.instance)
            if len(st.old_instances) > 16:
                st.old_instances.pop()
        changed = _relevant(hb) != _relevant(cur)
        st.heartbeat = hb
        st.last_seen = now
        st.heartbeats += 1
        reason = _dead_reason(hb)
        alive = reason is None
        if alive != st.alive:
            st.alive = alive
            st.since = now
            changed = True
        st.reason = reason or "heartbeat"
        return changed

    def tick(self, now: float) -> set[str]:
        """Apply timeouts at ``now``; returns the nodes whose liveness changed."""
        out: set[str] = set()
        for st in self.nodes.values():
            if st.alive and now - st.last_seen > self.timeout_s(st.heartbeat):
                st.alive = False
                st.reason = "timeout"
                st.since = now
                out.add(st.node)
        return out

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which a live node would time out."""
        ds = [st.last_seen + self.timeout_s(st.heartbeat) for st in self.nodes.values() if st.alive]
        return min(ds) if ds else None

    def forget(self, node: str) -> None:
        self.nodes.pop(node, None)

    def prune(self, now: float, after_s: float) -> list[str]:
        """Drop nodes dead for longer than ``after_s`` (bounded memory); returns their names."""
        gone = [n for n, st in self.nodes.items() if not st.alive and now - st.since > after_s]
        for n in gone:
            del self.nodes[n]
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
                "instance": hb.instance, "seq": hb.seq, "interval_ms": hb.interval_ms,
                "interfaces": [{"name": i.name, "up": i.up, "mac": i.mac} for i in hb.interfaces],
                "serving": len(hb.serving), "heartbeats": st.heartbeats,
            })
        return out
