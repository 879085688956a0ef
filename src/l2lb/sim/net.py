"""The simulated LAN: nodes and one client on one L2 segment, links, partitions, message faults.

Reachability is symmetric: two endpoints reach each other when both links are up and both are on the
same side of the current partition. The client (``CLIENT``) is a LAN host with a link that never
fails; partitions put it on one side (the side of the majority, unless a fault says otherwise).
The control plane (API server) reaches nodes through their links too (``CTL``).

Delivery delay = ``base_latency`` + jitter, plus the extra delay of an active "slow link" fault.
Duplication and loss are per-message draws from the kernel's RNG (deterministic per seed). Loss drops a
datagram (the peers' LAN frames: :meth:`Lan.delay`); on a TCP connection (Redis commands, stream reads and
replication, the API server) it only delays: the segment goes again after the retransmission time-out
(:meth:`Lan.stream_delay`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from l2lb.sim.kernel import Kernel

__all__ = ["CLIENT", "CTL", "RTO_MIN", "Lan", "LinkFaults"]

RTO_MIN = 0.2  # Linux's TCP_RTO_MIN: a LAN connection sends a lost segment again after 200 ms, then 400, 800...

CLIENT = "client"
CTL = "ctl"


@dataclass
class LinkFaults:
    loss: float = 0.0  # probability a message is lost
    dup: float = 0.0  # probability a message is delivered twice
    extra_delay: float = 0.0  # added to every delivery (seconds), with up to the same again as jitter


@dataclass
class Lan:
    kernel: Kernel
    nodes: list[str]
    base_latency: float = 0.0002
    jitter: float = 0.0003
    link_up: dict[str, bool] = field(default_factory=dict)
    side: dict[str, int] = field(default_factory=dict)
    faults: dict[str, LinkFaults] = field(default_factory=dict)
    faulty: bool = False  # some LinkFaults is set (the fast path skips them otherwise)
    calm: bool = True  # every link up, no partition, no message fault: everything reaches everything

    def __post_init__(self) -> None:
        for n in [*self.nodes, CLIENT, CTL]:
            self.link_up.setdefault(n, True)
            self.side.setdefault(n, 0)
            self.faults.setdefault(n, LinkFaults())
        self._update()

    def _update(self) -> None:
        self.calm = not self.faulty and all(self.link_up.values()) and not any(self.side.values())

    def reach(self, a: str, b: str) -> bool:
        if a == b or self.calm:
            return True
        up, side = self.link_up, self.side
        return up[a] and up[b] and side[a] == side[b]

    def set_faults(self, node: str, loss: float = 0.0, dup: float = 0.0, extra_delay: float = 0.0) -> None:
        self.faults[node] = LinkFaults(loss, dup, extra_delay)
        self.faulty = any(f.loss or f.dup or f.extra_delay for f in self.faults.values())
        self._update()

    def set_link(self, node: str, up: bool) -> None:
        self.link_up[node] = up
        self._update()

    def partition(self, isolated: Iterable[str]) -> None:
        """Put ``isolated`` on a side of their own (the client and the control plane stay on 0)."""
        for n in isolated:
            self.side[n] = 1
        self._update()

    def heal(self) -> None:
        for n in self.side:
            self.side[n] = 0
        self._update()

    def delay(self, a: str, b: str) -> float | None:
        """Delivery delay of one message a -> b, or None when it is lost (unreachable or dropped)."""
        rng = self.kernel.rng
        if self.calm:
            return self.base_latency + rng.random() * self.jitter
        if not self.reach(a, b):
            return None
        if not self.faulty:
            return self.base_latency + rng.random() * self.jitter
        fa, fb = self.faults[a], self.faults[b]
        loss = max(fa.loss, fb.loss)
        if loss and rng.random() < loss:
            return None
        extra = fa.extra_delay + fb.extra_delay
        return self.base_latency + rng.random() * self.jitter + (extra * (1 + rng.random()) if extra else 0.0)

    def stream_delay(self, a: str, b: str, give_up: float) -> float | None:
        """Delivery delay of one message a -> b on a TCP connection: each lost transmission costs a
        retransmission time-out (``RTO_MIN``, doubling) instead of the message; None when a and b do not reach
        each other, or when the retransmissions outlast ``give_up`` (the client's socket time-out). Without
        message faults the same draws as :meth:`delay`."""
        d = self.delay(a, b)
        if d is not None or not self.faulty or not self.reach(a, b):
            return d
        waited, rto = 0.0, RTO_MIN
        while True:
            waited += rto
            rto *= 2
            if waited > give_up:
                return None
            d = self.delay(a, b)
            if d is not None:
                return waited + d

    def rtt(self, a: str, b: str, give_up: float) -> float | None:
        """A request a -> b and its answer b -> a on one TCP connection (:meth:`stream_delay` each, the answer
        within what is left of ``give_up``), or None."""
        if self.calm:  # (the same draws as below, without the calls)
            r, base, jitter = self.kernel.rng.random, self.base_latency, self.jitter
            return (base + r() * jitter) + (base + r() * jitter)
        d1 = self.stream_delay(a, b, give_up)
        if d1 is None:
            return None
        d2 = self.stream_delay(b, a, give_up - d1)
        return None if d2 is None else d1 + d2

    def duplicated(self, a: str, b: str) -> bool:
        p = max(self.faults[a].dup, self.faults[b].dup)
        return bool(p) and self.kernel.rng.random() < p
