"""The client-observed outage measure of tests/e2e/failover.py, on made-up probe records."""

from __future__ import annotations

import pytest

from tests.e2e.failover import outage


def test_outage_arithmetic() -> None:
    """The outage measure on made-up records: a 300 ms hole after the fault, then answers again."""
    recs = [[t / 100, t / 100 + 0.002, None] for t in range(0, 100)]
    recs += [[t / 100, None, "timeout"] for t in range(100, 130)]
    recs += [[t / 100, t / 100 + 0.002, None] for t in range(130, 200)]
    o = outage(recs, fault_at=1.0)
    assert o["lost"] == 30 and o["recovered"] is True
    assert 300 <= o["outage_ms"] <= 320
    assert o["recovered_ms"] == pytest.approx(302, abs=1)
    recs = [[t / 100, t / 100 + 0.002, None] for t in range(100)]
    recs += [[t / 100, None, "timeout"] for t in range(100, 400)]
    never = outage(recs, fault_at=1.0)
    assert never["recovered"] is False and never["recovered_ms"] is None and never["outage_ms"] > 2900


def test_arp_summary_dual_and_moves() -> None:
    """Two MACs answering within 30 ms count as dual; a later move back is a move, not dual."""
    from l2lb.lab.probe import Answer, Timeline
    from tests.e2e.failover import arp_summary

    tl = Timeline(vip="198.51.100.153", interval_s=0.01, sent=400)
    tl.answers += [Answer(t / 100, "aa", "reply") for t in range(0, 100)]  # old node until 1.0 s
    tl.answers += [Answer(1.005, "bb", "reply")]  # new node 5 ms after the old one's last: dual
    tl.answers += [Answer(t / 100, "bb", "reply") for t in range(120, 300)]  # 190 ms silent, then new
    tl.answers += [Answer(t / 100, "aa", "reply") for t in range(310, 400)]  # moved back later
    s = arp_summary(tl, "aa", fault_at=0.995)
    assert s["dual_answers"] == 1 and s["dual_ms"] == pytest.approx(15, abs=1)
    assert s["moves"] == ["aa", "bb", "aa"]
    assert s["first_new_answer_ms"] == pytest.approx(10, abs=1)
    assert s["silent_ms"] == pytest.approx(195, abs=2)


def test_arp_summary_counts_a_silence_that_lasts_to_the_end() -> None:
    """Answers that stop after the fault and never come back: silent until the probing ended, not 0."""
    from l2lb.lab.probe import Answer, Timeline
    from tests.e2e.failover import arp_summary

    tl = Timeline(vip="198.51.100.153", interval_s=0.01, sent=500)
    tl.answers += [Answer(t / 100, "aa", "reply") for t in range(0, 103)]  # the old node, 20 ms past the fault
    s = arp_summary(tl, "aa", fault_at=1.0, end=5.0)
    assert s["silent_ms"] == pytest.approx(3980, abs=2) and s["answered_at_end"] is False
    assert s["first_new_answer_ms"] is None and s["moves"] == ["aa"]
    tl.answers += [Answer(t / 100, "bb", "reply") for t in range(300, 500)]  # a new node from 3.0 s on
    s = arp_summary(tl, "aa", fault_at=1.0, end=5.0)
    assert s["silent_ms"] == pytest.approx(1980, abs=2) and s["answered_at_end"] is True


def test_first_outage_apart_from_later_losses() -> None:
    """A 300 ms failover, then every other query lost (a Service still balancing to a dead backend)."""
    recs = [[t / 100, t / 100 + 0.002, None] for t in range(0, 100)]
    recs += [[t / 100, None, "timeout"] for t in range(100, 130)]  # the VIP moves: nothing answers
    recs += [[t / 100, t / 100 + 0.002, None] if t % 2 else [t / 100, None, "timeout"] for t in range(130, 300)]
    o = outage(recs, fault_at=1.0)
    assert o["first_outage_ms"] == pytest.approx(320, abs=1)  # last answer 0.992 .. first again 1.312
    assert o["lost_later"] == 84 and o["lost"] == 30 + 85
    recs = [[t / 100, t / 100 + 0.002, None] for t in range(200)]
    assert outage(recs, fault_at=1.0)["first_outage_ms"] is None  # nothing lost: no outage to speak of
