from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.messages import (
    Allocation,
    AllocationSnapshot,
    Conflict,
    Heartbeat,
    InterfaceInfo,
    Message,
    MessageError,
    NodeAssignments,
    PortSpec,
    SnapshotRequest,
    VipAssignment,
    decode,
    encode,
)

ALLOC = Allocation(
    key="pihole/pihole-dns-udp", namespace="pihole", name="pihole-dns-udp", uid="u1", generation=2, seq=7, term=3,
    ips=("198.51.100.153",), external_ips=("203.0.113.9",), ports=(PortSpec("UDP", 53),),
    external_traffic_policy="Local", labels={"app": "pihole"}, ip_pools={"198.51.100.153": "default-pool"},
    pool_labels={"default-pool": {"tier": "lan"}}, load_balancer_class="l2lb.io/l2",
)
SAMPLES: list[Message] = [
    ALLOC,
    AllocationSnapshot(term=3, seq=9, allocations=(ALLOC,)),
    SnapshotRequest(topic="allocations", requester="leases-1", reason="incarnation_changed"),
    Heartbeat(node="node-1", instance="abc", seq=5, sent_at=1.5, interval_ms=100, labels={"zone": "a"},
              interfaces=(InterfaceInfo("enp0s25", "02:00:00:00:00:01", True, ("198.51.100.11/24",), 2),),
              serving={"198.51.100.153": 12}),
    NodeAssignments(node="node-1", term=2, seq=44, ttl_ms=1000, sent_at=2.0,
                    vips=(VipAssignment("198.51.100.153", 12, ("enp0s25",), ("pihole/pihole-dns-tcp",)),)),
    Conflict(node="node-1", ip="198.51.100.153", our_mac="02:00:00:00:00:01", their_mac="02:00:00:00:00:09",
             interface="enp0s25", at=3.0, defended=True),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    raw = encode(msg)
    assert json.loads(raw)["k"] == msg.KIND
    assert decode(raw) == msg
    assert decode(raw, type(msg)) == msg


def test_unknown_newer_fields_and_versions_are_read() -> None:
    d = json.loads(encode(ALLOC))
    d["v"] = 2
    d["some_future_field"] = {"x": 1}
    assert decode(json.dumps(d)) == ALLOC


def test_older_unsupported_version_is_rejected() -> None:
    d = json.loads(encode(ALLOC))
    d["v"] = 0
    with pytest.raises(MessageError, match="no longer supported"):
        decode(json.dumps(d))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "not an object"),
        (b'{"k":"nope","v":1}', "unknown message kind"),
        (b'{"k":"allocation"}', "version"),
        (b'{"k":"allocation","v":true}', "version"),
        (b'{"k":"allocation","v":1,"key":"a/b","namespace":"a","name":"b"}', "seq"),
        (b'{"k":"allocation","v":1,"key":"a/b","namespace":"a","name":"b","seq":"1"}', "seq"),
        (b'{"k":"allocation","v":1,"key":"a/b","namespace":"a","name":"b","seq":1,"ips":[1]}', "ips"),
        (b'{"k":"heartbeat","v":1,"node":"n","instance":"i","seq":1,"sent_at":1,"interval_ms":1,'
         b'"serving":{"ip":"x"}}', "serving"),
        (b'{"k":"node_assignments","v":1,"node":"n","term":1,"seq":1,"ttl_ms":5,"sent_at":1,"vips":[3]}', "vip"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_messages_raise_message_error(raw: bytes, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        decode(raw)


def test_expected_kind_is_enforced() -> None:
    with pytest.raises(MessageError, match="expected heartbeat"):
        decode(encode(ALLOC), Heartbeat)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([m.KIND for m in SAMPLES]), body=st.dictionaries(st.text(max_size=12), json_values,
                                                                              max_size=8))
def test_fuzzed_bodies_only_ever_raise_message_error(kind: str, body: dict[str, object]) -> None:
    body = dict(body, k=kind, v=1)
    try:
        decode(json.dumps(body))
    except MessageError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(SAMPLES) - 1), st.data())
def test_mutated_valid_messages_only_ever_raise_message_error(i: int, data: st.DataObject) -> None:
    d = json.loads(encode(SAMPLES[i]))
    key = data.draw(st.sampled_from(sorted(d)))
    d[key] = data.draw(json_values)
    try:
        decode(json.dumps(d))
    except MessageError:
        pass


# -- heartbeats without the serving map (serving_digest / serving_omitted, optional within v1) ---------------
def _hb(**kw: object) -> Heartbeat:
    base: dict[str, object] = {"node": "n", "instance": "i", "seq": 1, "sent_at": 1.0, "interval_ms": 100}
    base.update(kw)
    return Heartbeat(**base)  # type: ignore[arg-type]


def test_serving_digest_is_order_free_and_sees_every_change() -> None:
    from l2lb.core.messages import serving_digest

    a = {"198.51.100.1": 3, "198.51.100.2": 4}
    d = serving_digest(a)
    assert len(d) == 32 and int(d, 16) >= 0
    assert serving_digest(dict(reversed(list(a.items())))) == d
    assert serving_digest({"198.51.100.1": 3, "198.51.100.2": 5}) != d  # an epoch
    assert serving_digest({"198.51.100.1": 3}) != d  # an IP fewer
    assert serving_digest({}) != d


def test_heartbeat_digest_fields_round_trip_and_are_written_only_when_set() -> None:
    from l2lb.core.messages import serving_digest

    m = {"198.51.100.1": 3}
    full = _hb(serving=m, serving_digest=serving_digest(m))
    omitted = _hb(serving_digest=serving_digest(m), serving_omitted=True)
    for hb in (full, omitted):
        assert decode(encode(hb)) == hb
    plain = _hb(serving=m)
    body = json.loads(encode(plain))
    assert "serving_digest" not in body and "serving_omitted" not in body  # byte-compatible with before
    assert json.loads(encode(omitted))["serving"] == {}
    # an older reader ignores the new keys (simulated: its view is the message without them)
    old_view = {k: v for k, v in json.loads(encode(omitted)).items() if k not in ("serving_digest", "serving_omitted")}
    assert decode(json.dumps(old_view)) == _hb()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"serving_omitted": True}, "serving_digest"),  # omitted without a digest
        ({"serving_omitted": True, "serving_digest": "ab", "serving": {"198.51.100.1": 1}}, "serving"),
        ({"serving_omitted": "yes", "serving_digest": "ab"}, "serving_omitted"),
        ({"serving_digest": 5}, "serving_digest"),
        ({"serving": {"198.51.100.1": True}}, "serving"),
    ],
)
def test_malformed_heartbeat_digest_fields(extra: dict[str, object], match: str) -> None:
    body = {"k": "heartbeat", "v": 1, "node": "n", "instance": "i", "seq": 1, "sent_at": 1, "interval_ms": 1}
    body.update(extra)
    with pytest.raises(MessageError, match=match):
        decode(json.dumps(body))
