"""Every Redis key and stream l2lb uses, in one place.

All names live under a prefix (default ``l2lb``; settable with ``--redis-prefix`` /
``L2LB_REDIS_PREFIX``) so several clusters can share one Redis. Nothing else in the code base may
spell a Redis key.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "l2lb"


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    # -- streams ---------------------------------------------------------------------------------
    @property
    def allocations(self) -> str:
        """allocator -> leases: Allocation and AllocationSnapshot messages."""
        return f"{self.prefix}:stream:allocations"

    @property
    def heartbeats(self) -> str:
        """announcers -> leases: Heartbeat and Conflict messages."""
        return f"{self.prefix}:stream:heartbeats"

    @property
    def assignments(self) -> str:
        """leases -> announcers: NodeAssignments messages (every announcer reads all, keeps its own)."""
        return f"{self.prefix}:stream:assignments"

    @property
    def control(self) -> str:
        """anyone -> producers: SnapshotRequest messages."""
        return f"{self.prefix}:stream:control"

    @property
    def events(self) -> str:
        """allocator/leases -> status readers: recent moves, conflicts, allocation failures (capped).

        Entries carry one field ``e``: a JSON object (see ``l2lb.core.view.event``), not a bus Message.
        """
        return f"{self.prefix}:stream:events"

    @property
    def deadletter(self) -> str:
        """entries no consumer could read (unsupported version, malformed), with the reason."""
        return f"{self.prefix}:stream:deadletter"

    # -- plain keys ------------------------------------------------------------------------------
    @property
    def epochs(self) -> str:
        """hash ip -> last epoch handed out (fencing tokens; also re-seeded from wall time)."""
        return f"{self.prefix}:epochs"

    @property
    def incarnation(self) -> str:
        """a random id written once per Redis dataset: if it vanishes, Redis lost its data."""
        return f"{self.prefix}:incarnation"

    def leader(self, name: str) -> str:
        """``<identity>|<term>`` of the current leader of election ``name`` ("l2lb-leases"), with a TTL
        (the Redis leader-election backend, l2lb.adapters.bus.leader)."""
        return f"{self.prefix}:leader:{name}"

    def leader_term(self, name: str) -> str:
        """the last term handed out by election ``name`` (never decreases while Redis keeps its data)."""
        return f"{self.prefix}:leader:{name}:term"

    @property
    def probe(self) -> str:
        """written by the lab's benchmarks (never by a service) to time when Redis takes writes again."""
        return f"{self.prefix}:probe"

    def snapshot(self, topic: str) -> str:
        """latest full snapshot of a topic ("allocations", "assignments") as one value."""
        return f"{self.prefix}:snapshot:{topic}"

    def status(self, part: str) -> str:
        """one part of the cluster view as a JSON document ("services", "pools", "assignments", "nodes")."""
        return f"{self.prefix}:status:{part}"

    @property
    def status_index(self) -> str:
        """hash part -> etag of the stored part (readers poll this small hash, then GET changed parts)."""
        return self.status("_index")

    def status_pattern(self) -> str:
        """glob matching every status part key (for ACLs)."""
        return f"{self.prefix}:status:*"

    def snapshot_pattern(self) -> str:
        """glob matching every snapshot key (for ACLs)."""
        return f"{self.prefix}:snapshot:*"

    # -- helpers ---------------------------------------------------------------------------------
    def streams(self) -> list[str]:
        """Every stream, in a stable order."""
        return [self.allocations, self.heartbeats, self.assignments, self.control, self.deadletter]

    def short(self, stream: str) -> str:
        """Stream name without prefix (``allocations``), used as the ``stream`` metric label."""
        head = f"{self.prefix}:stream:"
        return stream[len(head):] if stream.startswith(head) else stream

    def all_patterns(self) -> list[str]:
        """Key patterns for ACLs (``~pattern``)."""
        return [f"{self.prefix}:*"]
