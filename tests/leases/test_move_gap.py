"""Move events carry the measured gap (how long the old holder had been silent when the new one was
named): what the status page's per-VIP timeline draws for each move."""

from __future__ import annotations

from l2lb.core.leases_machine import StatusEvent
from tests.leases.test_machine import _cluster, _sets, _step


def test_a_dead_holders_move_carries_its_silence() -> None:
    d = _cluster()
    lost = next(iter(_sets(d)["a"]))
    out = _step(d, 0.8, nodes=("b",))  # a falls silent: dead after 3 x 100 ms of missed heartbeats
    (ev,) = [c for c in out if isinstance(c, StatusEvent) and c.fields["ip"] == lost]
    assert ev.kind == "move" and ev.fields["from"] == "a" and ev.fields["to"] == "b"
    assert ev.fields["reason"] == "holder_dead"
    # silent from its last heartbeat to the tick that found it dead: at least the 3 missed intervals,
    # at most the 0.8 s the test ran
    assert 300 <= ev.fields["gap_ms"] <= 800, ev.fields
