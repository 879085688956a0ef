"""The announcer's cached heartbeat encoding is byte-identical to messages.encode."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.messages import Heartbeat, HeartbeatEncoder, InterfaceInfo, decode, encode

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ['"serving":{}', '\\"serving\\":{}', "serving", "{}"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_text, _text, max_size=4), st.dictionaries(_text, st.integers(0, 2**40), max_size=5),
       _text, st.booleans(), st.none() | st.lists(_text, max_size=3).map(tuple))
def test_encoder_matches_encode(labels: dict[str, str], serving: dict[str, int], ifname: str, stopping: bool,
                                lan_heard: tuple[str, ...] | None) -> None:
    enc = HeartbeatEncoder()
    hb = Heartbeat(node="n1", instance="abc", seq=3, sent_at=1.5, interval_ms=100, labels=labels,
                   interfaces=(InterfaceInfo(ifname, "02:00:00:00:00:01", True, ("198.51.100.2/24",), 3),),
                   serving=serving, stopping=stopping, lan_heard=lan_heard)
    assert enc(hb) == encode(hb)
    assert enc(hb) == encode(hb)  # cached path
    assert decode(enc(hb)) == hb


def test_encoder_follows_a_new_serving_map() -> None:
    enc = HeartbeatEncoder()
    a = Heartbeat(node="n", instance="i", seq=1, sent_at=0.0, interval_ms=100, serving={"198.51.100.10": 1})
    b = Heartbeat(node="n", instance="i", seq=2, sent_at=0.1, interval_ms=100, serving={"198.51.100.10": 2})
    assert decode(enc(a)) == a and decode(enc(b)) == b


def test_backlog_detection() -> None:
    from l2lb.core.announcer_machine import is_backlog
    from l2lb.core.messages import NodeAssignments

    m = NodeAssignments(node="n", term=1, seq=1, ttl_ms=1000, sent_at=100.0)
    assert not is_backlog(m, 100.5, 5.0)
    assert not is_backlog(m, 105.9, 5.0)  # within ttl + skew
    assert is_backlog(m, 106.1, 5.0)
    assert not is_backlog(m, 1000.0, 0.0)  # check disabled
    assert not is_backlog(m, 90.0, 5.0)  # sender clock ahead: not backlog


def test_lan_heard_is_optional_on_the_wire_and_checked() -> None:
    """An older announcer sends no ``lan_heard`` (None: no LAN evidence); anything but a list of names is refused."""
    import json

    import pytest

    from l2lb.core.messages import MessageError

    hb = Heartbeat(node="n", instance="i", seq=1, sent_at=0.0, interval_ms=100)
    raw = encode(hb)
    assert b"lan_heard" not in raw and decode(raw) == hb
    with_lan = Heartbeat(node="n", instance="i", seq=1, sent_at=0.0, interval_ms=100, lan_heard=())
    assert b'"lan_heard":[]' in encode(with_lan) and decode(encode(with_lan)) == with_lan
    bad = json.loads(raw)
    bad["lan_heard"] = ["n2", 3]
    with pytest.raises(MessageError, match="lan_heard"):
        decode(json.dumps(bad).encode())
