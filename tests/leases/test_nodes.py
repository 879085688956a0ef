"""Node liveness tracker (pure, caller's clock)."""

from __future__ import annotations

import pytest

from l2lb.core.nodes import NodeTracker
from tests.leases.helpers import hb


def test_dead_after_missed_intervals() -> None:
    t = NodeTracker(missed=3)
    assert t.observe(hb("a", seq=1, interval_ms=100), now=10.0)
    assert t.is_alive("a")
    assert t.tick(10.29) == set()
    assert t.next_deadline() == pytest.approx(10.3)
    assert t.tick(10.31) == {"a"}
    assert not t.is_alive("a") and t.nodes["a"].reason == "timeout"
    assert t.tick(10.5) == set()  # reported once
    assert t.observe(hb("a", seq=2), now=10.6)  # comes back
    assert t.is_alive("a") and t.alive().keys() == {"a"}


def test_stale_and_duplicate_heartbeats_ignored() -> None:
    t = NodeTracker()
    t.observe(hb("a", seq=5), now=1.0)
    assert not t.observe(hb("a", seq=5, stopping=True), now=1.1)
    assert not t.observe(hb("a", seq=4, stopping=True), now=1.1)
    assert t.is_alive("a") and t.nodes["a"].last_seen == 1.0
    # a restarted announcer (new instance) starts at seq 1 and is accepted; the old one is then ignored
    assert not t.observe(hb("a", seq=1, instance="i2"), now=1.2)
    assert t.nodes["a"].last_seen == 1.2
    assert not t.observe(hb("a", seq=6, instance="i1", stopping=True), now=1.3)
    assert t.is_alive("a")



def test_an_unseen_instance_sent_before_the_live_one_is_a_replay_not_a_restart() -> None:
    """Simulator finding S1: a consumer resynced from a promoted replica replays a node's heartbeats of an
    instance older than the live one; the live instance stays current and keeps the node alive."""
    t = NodeTracker()
    t.observe(hb("a", seq=40, instance="i2", sent_at=500.0), now=10.0)
    assert not t.observe(hb("a", seq=90, instance="i1", sent_at=120.0), now=10.05)
    assert t.nodes["a"].heartbeat.instance == "i2"
    t.observe(hb("a", seq=41, instance="i2", sent_at=500.1), now=10.1)
    assert t.nodes["a"].last_seen == 10.1
    # a restart proper (sent later) is still taken at once, and the old instance ignored after it
    t.observe(hb("a", seq=1, instance="i3", sent_at=500.2), now=10.2)
    assert t.nodes["a"].heartbeat.instance == "i3"
    assert not t.observe(hb("a", seq=42, instance="i2", sent_at=500.15), now=10.3)  # i2's last, delayed
    assert t.nodes["a"].heartbeat.instance == "i3" and t.nodes["a"].last_seen == 10.2


def test_a_replay_taken_while_the_live_instance_was_silent_gives_way_when_the_live_one_is_heard() -> None:
    """S1 through an outage: the live instance is silent (Redis down) beyond its timeout, so a replayed older
    instance read after the resync is taken; the live instance's next heartbeat (sent later) wins it back."""
    t = NodeTracker()
    t.observe(hb("a", seq=40, instance="i2", sent_at=500.0), now=10.0)
    assert t.tick(12.0) == {"a"}  # Redis down: silent
    t.observe(hb("a", seq=90, instance="i1", sent_at=120.0), now=14.0)  # replay from a promoted replica
    assert t.nodes["a"].heartbeat.instance == "i1"
    t.observe(hb("a", seq=41, instance="i2", sent_at=504.1), now=14.1)
    assert t.nodes["a"].heartbeat.instance == "i2" and t.nodes["a"].last_seen == 14.1
    assert not t.observe(hb("a", seq=91, instance="i1", sent_at=120.1), now=14.2)  # the rest of the replay
    for k in range(2, 20):
        t.observe(hb("a", seq=40 + k, instance="i2", sent_at=504.0 + k * 0.1), now=14.0 + k * 0.1)
    assert t.tick(16.0) == set() and t.is_alive("a") and t.nodes["a"].heartbeat.instance == "i2"


def test_after_a_clock_step_back_a_new_instance_is_taken_once_the_old_one_went_silent() -> None:
    t = NodeTracker()  # 3 missed x 100 ms
    t.observe(hb("a", seq=7, instance="i1", sent_at=1000.0), now=5.0)
    # the node's clock stepped back 30 s and its announcer restarted: sent "before" i1 while i1 is live
    assert not t.observe(hb("a", seq=1, instance="i2", sent_at=970.1), now=5.1)
    assert t.nodes["a"].heartbeat.instance == "i1"
    # i1 silent for longer than its timeout: i2 is the node now
    t.observe(hb("a", seq=3, instance="i2", sent_at=970.5), now=5.5)
    assert t.nodes["a"].heartbeat.instance == "i2" and t.nodes["a"].last_seen == 5.5
    assert t.tick(5.6) == set() and t.is_alive("a")

def test_stopping_and_interfaces_down_are_immediate() -> None:
    t = NodeTracker()
    t.observe(hb("a", seq=1), now=0.0)
    t.observe(hb("b", seq=1, ifaces=(("eth0", True), ("eth1", True))), now=0.0)
    assert t.observe(hb("a", seq=2, stopping=True), now=0.01)
    assert not t.is_alive("a") and t.nodes["a"].reason == "stopping"
    assert t.observe(hb("b", seq=2, ifaces=(("eth0", False), ("eth1", True))), now=0.01)  # link change
    assert t.is_alive("b")
    assert t.observe(hb("b", seq=3, ifaces=(("eth0", False), ("eth1", False))), now=0.02)
    assert not t.is_alive("b") and t.nodes["b"].reason == "interfaces_down"
    assert set(t.alive()) == set()


def test_label_change_is_relevant_seq_only_is_not() -> None:
    t = NodeTracker()
    t.observe(hb("a", seq=1, labels={"z": "1"}), now=0.0)
    assert not t.observe(hb("a", seq=2, labels={"z": "1"}), now=0.1)
    assert t.observe(hb("a", seq=3, labels={"z": "2"}), now=0.2)


def test_prune_and_status() -> None:
    t = NodeTracker(missed=2)
    t.observe(hb("a", seq=1, interval_ms=100), now=0.0)
    t.tick(1.0)
    assert t.status(1.0)[0]["alive"] is False and t.status(1.0)[0]["heartbeat_age_ms"] == 1000.0
    assert t.prune(1.5, after_s=10) == []
    assert t.prune(20.0, after_s=10) == ["a"] and t.nodes == {}
    with pytest.raises(ValueError):
        NodeTracker(missed=0)


def test_reconnect_grace_counts_silence_from_the_floor_for_nodes_not_heard_since() -> None:
    t = NodeTracker(missed=3)
    t.observe(hb("a", seq=1, interval_ms=100), now=10.0)
    t.observe(hb("b", seq=1, interval_ms=100), now=10.0)
    t.reconnected(11.0, grace_s=2.0)  # heartbeats flow again from 11.0 (the bus is back)
    t.observe(hb("a", seq=2), now=11.0)  # a is heard at once: back on its normal timeout
    assert t.deadline(t.nodes["a"]) == pytest.approx(11.3)
    assert t.deadline(t.nodes["b"]) == pytest.approx(13.3)  # 11.0 + 0.3 + 2.0, not 10.0 + 0.3
    assert t.in_grace(t.nodes["b"], 12.0) and not t.in_grace(t.nodes["a"], 11.2)
    assert t.status(12.0)[1]["reconnect_grace"] is True
    assert t.tick(11.31) == {"a"}
    assert t.tick(13.29) == set() and t.next_deadline() == pytest.approx(13.3)
    assert t.tick(13.31) == {"b"}
    t.shift(-5.0)  # the liveness clock rebased: the floor moves with the nodes
    assert t.floor == pytest.approx(6.0) and t.nodes["b"].last_seen == pytest.approx(5.0)
    t.reconnected(4.0, grace_s=1.0)  # an older floor never moves it back
    assert t.floor == pytest.approx(6.0)
