"""Builders shared by the leases tests."""

from __future__ import annotations

from typing import Any

from l2lb.core.leases_machine import (
    Command,
    EpochsLoaded,
    Event,
    HeartbeatReceived,
    LeasesMachine,
    LeasesParams,
    LoadEpochs,
    Now,
    PublishAssignments,
    PublishRenewal,
    SendFailed,
    Sent,
    StoreEpochs,
)
from l2lb.core.messages import Allocation, Heartbeat, InterfaceInfo


def alloc(key: str, *ips: str, etp: str = "Cluster", labels: dict[str, str] | None = None,
          external: tuple[str, ...] = (), pools: dict[str, str] | None = None,
          pool_labels: dict[str, dict[str, str]] | None = None, seq: int = 1) -> Allocation:
    ns, name = key.split("/")
    return Allocation(key=key, namespace=ns, name=name, uid=f"uid-{key}", generation=1, seq=seq, term=1,
                      ips=tuple(ips), external_ips=external, external_traffic_policy=etp,
                      labels=labels or {}, ip_pools=pools or {}, pool_labels=pool_labels or {})


def hb(node: str, *, seq: int = 1, labels: dict[str, str] | None = None,
       ifaces: tuple[tuple[str, bool], ...] = (("eth0", True),), serving: dict[str, int] | None = None,
       stopping: bool = False, instance: str = "i1", interval_ms: int = 100,
       lan_heard: tuple[str, ...] | None = None, sent_at: float = 0.0) -> Heartbeat:
    return Heartbeat(
        node=node, instance=instance, seq=seq, sent_at=sent_at, interval_ms=interval_ms,
        labels=labels or {"kubernetes.io/hostname": node},
        interfaces=tuple(InterfaceInfo(name=n, mac="02:00:00:00:00:01", up=up) for n, up in ifaces),
        serving=serving or {}, stopping=stopping, lan_heard=lan_heard,
    )


ALL_LB = {
    "apiVersion": "l2lb.io/v1alpha1", "kind": "L2AnnouncementPolicy",
    "metadata": {"name": "all"}, "spec": {},
}


class Driver:
    """Drives a LeasesMachine with a settable clock, no Redis and no asyncio: every publish is acknowledged
    at once (``fail`` makes the next publishes fail), epochs go to ``store``, every command is kept in
    ``commands``."""

    def __init__(self, mono: float = 1000.0, wall: float = 1_764_000_000.0, **params: Any):
        params.setdefault("leader_election", False)
        self.mono, self.wall = mono, wall
        self.m = LeasesMachine(LeasesParams(**params), self.now())
        self.commands: list[Command] = []
        self.fail = 0
        self.fail_store = 0  # the next StoreEpochs fail (the executor feeds SendFailed(None) and drops the rest)
        self.failed: list[Command] = []
        self.store: dict[str, int] = {}  # the epoch store (StoreEpochs / LoadEpochs)
        self.seqs: dict[str, int] = {}

    def now(self) -> Now:
        return Now(self.mono, self.wall)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def __call__(self, event: Event) -> list[Command]:
        """Feed one event, carry out its publishes (acknowledged); returns every command that followed."""
        out: list[Command] = []
        todo = list(self.m.handle(event, self.now()))
        while todo:
            c = todo.pop(0)
            out.append(c)
            if isinstance(c, PublishAssignments | PublishRenewal):
                if self.fail:
                    self.fail -= 1
                    self.failed.append(c)
                    todo = list(self.m.handle(SendFailed(c, "injected"), self.now()))
                    continue
                todo += self.m.handle(Sent(c), self.now())
            elif isinstance(c, StoreEpochs):
                if self.fail_store:
                    self.fail_store -= 1
                    self.failed.append(c)
                    todo = list(self.m.handle(SendFailed(None, "injected store failure"), self.now()))
                    continue
                self.store.update(c.epochs)
            elif isinstance(c, LoadEpochs):
                todo += self.m.handle(EpochsLoaded(dict(self.store)), self.now())
        self.commands += out
        return out

    def beat(self, node: str, **kw: Any) -> list[Command]:
        """A heartbeat of ``node`` (its next seq), stored in the stream now."""
        self.seqs[node] = self.seqs.get(node, 0) + 1
        return self(HeartbeatReceived(hb(node, seq=self.seqs[node], **kw), at=self.wall))

    def published(self, since: int = 0) -> list[PublishAssignments | PublishRenewal]:
        return [c for c in self.commands[since:] if isinstance(c, PublishAssignments | PublishRenewal)]
