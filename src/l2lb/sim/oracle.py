"""What the LAN's client sees, and the invariants checked after every step (pure).

The announcer shells of the simulator report every change of the set of VIPs a node answers for
(with the epoch it answers with); reachability changes (links, partitions) are reported by the
world. From these the oracle keeps, per VIP, the set of nodes whose answers the client can get,
and records:

* dual episodes: two or more nodes answering the client at once; a violation when one lasts longer
  than ``dual_allowed`` (the validity window);
* outages: no node answering a VIP that is assigned (after it was answered once);
* epoch order (:meth:`issued`): leases never gives a VIP to a node with an epoch lower than one a leader
  of the same or an older term already issued for it (epochs, the fencing tokens, only grow);
* answering an IP that no Service holds (beyond ``unassigned_grace`` after its release).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Episode", "Oracle", "Violation"]


@dataclass(frozen=True, slots=True)
class Violation:
    t: float
    invariant: str
    detail: str


@dataclass(frozen=True, slots=True)
class Episode:
    vip: str
    start: float
    end: float
    nodes: tuple[str, ...]

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class _VipState:
    answering: dict[str, int] = field(default_factory=dict)  # node -> epoch (whether reachable or not)
    visible: frozenset[str] = frozenset()
    dual_since: float | None = None
    dual_nodes: set[str] = field(default_factory=set)
    dark_since: float | None = None
    ever_answered: bool = False
    max_epoch: int = 0
    max_epoch_node: str = ""
    max_epoch_term: int = 0
    unassigned_since: float | None = None


class Oracle:
    def __init__(self, reach_client: Callable[[str], bool], *, dual_allowed: float = 1.0,
                 unassigned_grace: float = 2.0):
        self.reach_client = reach_client
        self.dual_allowed = dual_allowed
        self.unassigned_grace = unassigned_grace
        self.vips: dict[str, _VipState] = {}
        self.assigned: set[str] = set()
        self.duals: list[Episode] = []
        self.outages: list[Episode] = []
        self.violations: list[Violation] = []
        self.now = 0.0
        self.last_change = 0.0  # when any node's answered set last changed

    def _v(self, vip: str) -> _VipState:
        st = self.vips.get(vip)
        if st is None:
            st = self.vips[vip] = _VipState()
        return st

    # -- inputs --------------------------------------------------------------------------------
    def answering(self, node: str, vips: Mapping[str, int], now: float) -> None:
        """``node`` now answers exactly ``vips`` (vip -> epoch)."""
        self.now = now
        self.last_change = now
        touched = set(vips)
        for vip, st in self.vips.items():
            if node in st.answering and vip not in vips:
                del st.answering[node]
                touched.add(vip)
        for vip, epoch in vips.items():
            self._v(vip).answering[node] = epoch
        for vip in sorted(touched):
            self._update(vip, now)

    def issued(self, node: str, term: int, vips: Mapping[str, int], now: float) -> None:
        """Leases (term ``term``) published ``node``'s full set ``vips`` (vip -> epoch)."""
        for vip, epoch in vips.items():
            st = self._v(vip)
            if term >= st.max_epoch_term and (epoch < st.max_epoch or (epoch == st.max_epoch
                                                                        and node != st.max_epoch_node)):
                self.violations.append(Violation(now, "epoch_order",
                                                 f"leases term {term} gives {vip} to {node} with epoch {epoch}; "
                                                 f"{st.max_epoch_node} was given epoch {st.max_epoch} "
                                                 f"(term {st.max_epoch_term})"))
            if epoch > st.max_epoch:
                st.max_epoch, st.max_epoch_node = epoch, node
                st.max_epoch_term = max(st.max_epoch_term, term)

    def rebuild_epochs(self, history: list[tuple[str, int, Mapping[str, int]]]) -> None:
        """Forget issued epochs and learn them again from ``history`` (node, term, vips) without checks."""
        for st in self.vips.values():
            st.max_epoch, st.max_epoch_node, st.max_epoch_term = 0, "", 0
        for node, term, vips in history:
            for vip, epoch in vips.items():
                st = self._v(vip)
                if epoch > st.max_epoch:
                    st.max_epoch, st.max_epoch_node = epoch, node
                    st.max_epoch_term = max(st.max_epoch_term, term)

    def reachability_changed(self, now: float) -> None:
        self.now = now
        for vip in sorted(self.vips):
            self._update(vip, now)

    def set_assigned(self, vips: Iterable[str], now: float) -> None:
        """The IPs held by Services right now (from the API server's view)."""
        self.now = now
        self.assigned = set(vips)
        for vip in sorted(self.vips):
            self._update(vip, now)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _update(self, vip: str, now: float) -> None:
        st = self._v(vip)
        visible = frozenset(n for n in st.answering if self.reach_client(n))
        st.visible = visible
        if visible:
            st.ever_answered = True
            if st.dark_since is not None:
                self.outages.append(Episode(vip, st.dark_since, now, tuple(sorted(visible))))
                st.dark_since = None
        elif st.ever_answered and st.dark_since is None and vip in self.assigned:
            st.dark_since = now
        if st.dark_since is not None and vip not in self.assigned:
            st.dark_since = None  # released (its Service is gone): not an outage
        if len(visible) >= 2:
            if st.dual_since is None:
                st.dual_since = now
                st.dual_nodes = set(visible)
            else:
                st.dual_nodes |= visible
        elif st.dual_since is not None:
            ep = Episode(vip, st.dual_since, now, tuple(sorted(st.dual_nodes)))
            self.duals.append(ep)
            st.dual_since = None
            if ep.seconds > self.dual_allowed:
                self.violations.append(Violation(now, "dual_answer",
                                                 f"{vip} answered by {', '.join(ep.nodes)} for {ep.seconds:.3f} s"))
        if visible and vip not in self.assigned:  # a paused or cut-off node answers nobody
            if st.unassigned_since is None:
                st.unassigned_since = now
        else:
            st.unassigned_since = None

    def check(self, now: float) -> list[Violation]:
        """Time-based checks (call after every step); returns the violations found so far."""
        self.now = now
        for vip, st in self.vips.items():
            if st.dual_since is not None and now - st.dual_since > self.dual_allowed and not any(
                    v.invariant == "dual_answer" and vip in v.detail and v.t >= st.dual_since for v in self.violations):
                self.violations.append(Violation(now, "dual_answer",
                                                 f"{vip} answered by {', '.join(sorted(st.dual_nodes))} for more "
                                                 f"than {self.dual_allowed:.3f} s (since {st.dual_since:.3f})"))
            if st.unassigned_since is not None and now - st.unassigned_since > self.unassigned_grace and not any(
                    v.invariant == "unassigned_answer" and vip in v.detail and v.t >= st.unassigned_since
                    for v in self.violations):
                self.violations.append(Violation(now, "unassigned_answer",
                                                 f"{sorted(st.answering)} answer {vip}, which no Service holds"))
        return self.violations

    def dark(self, now: float) -> dict[str, float]:
        """Assigned VIPs no one answers right now -> since when."""
        return {v: st.dark_since for v, st in self.vips.items() if st.dark_since is not None}

    def close(self, now: float) -> None:
        for vip, st in sorted(self.vips.items()):
            if st.dark_since is not None:
                self.outages.append(Episode(vip, st.dark_since, now, ()))
                st.dark_since = None
            if st.dual_since is not None:
                self.duals.append(Episode(vip, st.dual_since, now, tuple(sorted(st.dual_nodes))))
                st.dual_since = None
