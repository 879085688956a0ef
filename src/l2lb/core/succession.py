"""Pre-authorised succession (pure): for every assigned IP, the ranked nodes that take it over when its
holder disappears, each with a pre-issued epoch.

Rules

* Candidates: the IP's eligible nodes (as the election found them) except its holder.
* Sticky: the successors of the last plan stay, in their order, while they are candidates (a successor
  that became the holder drops out and the next one moves up); free ranks are filled in address order
  of the IPs with the candidate the election itself would pick if the holder disappeared: the fewest IPs
  (its own plus the ones of the same holder it already succeeds at that rank), ties by the election's
  stable hash of (ip, node). The election is given the plan as ``preferred``, so a holder's death moves
  each IP to its first live eligible successor: leases and a successor's own LAN takeover agree.
* Epochs: a plan keeps its epochs while holder, holder epoch and successor list are unchanged; a new or
  changed plan gets fresh epochs in rank order above everything issued for the IP (``last_epochs``, the
  holder's epoch, the old plan), so one (ip, epoch) never names two nodes. The caller stores the highest
  reserved epoch per IP before publishing, so every later normal epoch (a move) is greater.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from l2lb.core.election import ElectionResult, stable_hash

__all__ = ["Succession", "plan_successions"]


@dataclass(frozen=True, slots=True)
class Succession:
    holder: str
    holder_epoch: int
    nodes: tuple[str, ...]  # rank 1, 2, ...
    epochs: tuple[int, ...]  # the epoch each of them takes over with


def _ip_key(ip: str) -> tuple[int, int, str]:
    try:
        a = ipaddress.ip_address(ip)
        return (a.version, int(a), ip)
    except ValueError:
        return (99, 0, ip)


def plan_successions(result: ElectionResult, prev: Mapping[str, Succession], ranks: int,
                     last_epochs: Mapping[str, int]) -> tuple[dict[str, Succession], dict[str, int]]:
    """The succession of every assigned IP that has a candidate, and the epochs newly reserved (ip -> the
    highest); see the module docstring."""
    if ranks <= 0:
        return {}, {}
    load: dict[str, int] = {}
    for a in result.assignments.values():
        load[a.node] = load.get(a.node, 0) + 1
    extra: dict[tuple[str, int, str], int] = {}  # (holder, rank, node) -> IPs of that holder it succeeds
    plans: dict[str, Succession] = {}
    reserved: dict[str, int] = {}
    for ip in sorted(result.assignments, key=_ip_key):
        a = result.assignments[ip]
        cands = sorted(n for n in result.eligible.get(ip, {}) if n != a.node)
        old = prev.get(ip)
        chosen = [n for n in (old.nodes if old is not None else ()) if n in cands][:ranks]
        while len(chosen) < ranks:
            free = [n for n in cands if n not in chosen]
            if not free:
                break
            r = len(chosen)
            chosen.append(min(free, key=lambda n: (load.get(n, 0) + extra.get((a.node, r, n), 0),
                                                   stable_hash(ip, n), n)))
        for r, n in enumerate(chosen):
            extra[(a.node, r, n)] = extra.get((a.node, r, n), 0) + 1
        if not chosen:
            continue
        nodes = tuple(chosen)
        if old is not None and (old.holder, old.holder_epoch, old.nodes) == (a.node, a.epoch, nodes):
            plans[ip] = old
            continue
        base = max(last_epochs.get(ip, 0), a.epoch, max(old.epochs) if old is not None else 0)
        epochs = tuple(base + 1 + i for i in range(len(nodes)))
        plans[ip] = Succession(a.node, a.epoch, nodes, epochs)
        reserved[ip] = epochs[-1]
    return plans, reserved
