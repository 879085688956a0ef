"""NodeRenewal and the digest of a node's VIP set (bus schema, pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core.messages import (
    MessageError,
    NodeAssignments,
    NodeRenewal,
    VipAssignment,
    assignments_digest,
    decode,
    encode,
)

V1 = VipAssignment("198.51.100.10", 7, ("eth0",), ("ns/a",))
V2 = VipAssignment("2001:db8::10", 9, (), ("ns/b", "ns/c"))
REN = NodeRenewal(node="node-1", term=3, seq=45, ttl_ms=1000, sent_at=2.5, digest=assignments_digest((V1, V2)))


def test_renewal_round_trip_and_kind() -> None:
    raw = encode(REN)
    d = json.loads(raw)
    assert d["k"] == "node_renewal" and d["v"] == 1 and d["digest"] == REN.digest
    assert decode(raw) == REN
    assert decode(raw, NodeRenewal) == REN
    with pytest.raises(MessageError, match="expected node_assignments"):
        decode(raw, NodeAssignments)


def test_renewal_is_small() -> None:
    assert len(encode(REN)) < 160


def test_assignments_carry_digest_and_old_messages_still_decode() -> None:
    na = NodeAssignments(node="node-1", term=3, seq=44, ttl_ms=1000, sent_at=2.0, vips=(V1, V2),
                         digest=assignments_digest((V1, V2)))
    assert decode(encode(na)) == na
    old = json.loads(encode(na))
    del old["digest"]  # a sender from before renewals
    back = decode(json.dumps(old))
    assert isinstance(back, NodeAssignments) and back.digest == "" and back.vips == (V1, V2)
    # without a digest nothing new is written: byte-identical to the pre-renewal encoding
    assert "digest" not in json.loads(encode(NodeAssignments("n", 1, 1, 1000, 1.0)))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"digest": ""}, "digest"),
        ({"digest": None}, "digest"),
        ({"digest": 5}, "digest"),
        ({"ttl_ms": "1000"}, "ttl_ms"),
        ({"term": True}, "term"),
        ({"sent_at": "now"}, "sent_at"),
        ({"node": ["n"]}, "node"),
        ({"v": 0}, "no longer supported"),
    ],
)
def test_malformed_renewals_are_message_errors(change: dict[str, object], error: str) -> None:
    d = json.loads(encode(REN))
    d.update(change)
    with pytest.raises(MessageError, match=error):
        decode(json.dumps(d))


def test_missing_fields_are_message_errors() -> None:
    for key in ("node", "term", "seq", "ttl_ms", "sent_at", "digest"):
        d = json.loads(encode(REN))
        del d[key]
        with pytest.raises(MessageError, match=key):
            decode(json.dumps(d))


def test_assignments_digest_wrong_type_is_a_message_error() -> None:
    d = json.loads(encode(NodeAssignments("n", 1, 1, 1000, 1.0, (V1,), "abc")))
    d["digest"] = 12
    with pytest.raises(MessageError, match="digest"):
        decode(json.dumps(d))


def test_digest_shape_and_sensitivity() -> None:
    d = assignments_digest((V1, V2))
    assert len(d) == 32 and all(c in "0123456789abcdef" for c in d)
    assert assignments_digest((V2, V1)) == d  # order of entries does not matter
    assert assignments_digest(()) != d
    variants = [
        (VipAssignment(V1.ip, V1.epoch + 1, V1.interfaces, V1.services), V2),
        (VipAssignment("198.51.100.11", V1.epoch, V1.interfaces, V1.services), V2),
        (VipAssignment(V1.ip, V1.epoch, ("eth1",), V1.services), V2),
        (VipAssignment(V1.ip, V1.epoch, V1.interfaces, ("ns/z",)), V2),
        (V1,),
        (V1, V2, VipAssignment("203.0.113.1", 1)),
    ]
    assert len({assignments_digest(v) for v in variants} | {d}) == len(variants) + 1


def test_digest_is_unambiguous_across_field_boundaries() -> None:
    # naive concatenation would make these equal
    a = (VipAssignment("198.51.100.1", 1, ("a,b",), ()),)
    b = (VipAssignment("198.51.100.1", 1, ("a", "b"), ()),)
    assert assignments_digest(a) != assignments_digest(b)


_name = st.text(alphabet="abcdefgh/-,\"\\é", max_size=6)
_vip = st.builds(
    VipAssignment,
    ip=st.sampled_from([f"198.51.100.{i}" for i in range(8)] + ["2001:db8::1", "2001:db8::2"]),
    epoch=st.integers(0, 2**53),
    interfaces=st.lists(_name, max_size=3).map(tuple),
    services=st.lists(_name, max_size=3).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_vip, max_size=8), st.randoms())
def test_digest_equal_exactly_for_equal_sets(vips: list[VipAssignment], rnd: object) -> None:
    shuffled = list(vips)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert assignments_digest(shuffled) == assignments_digest(vips)
    # survives the wire: the announcer's view of the set digests the same
    na = NodeAssignments("n", 1, 1, 1000, 0.0, tuple(vips), assignments_digest(vips))
    back = decode(encode(na), NodeAssignments)
    assert isinstance(back, NodeAssignments) and assignments_digest(back.vips) == back.digest


@settings(max_examples=200, deadline=None)
@given(st.lists(_vip, max_size=6), st.lists(_vip, max_size=6))
def test_digest_differs_for_different_sets(a: list[VipAssignment], b: list[VipAssignment]) -> None:
    if sorted(map(repr, a)) != sorted(map(repr, b)):
        assert assignments_digest(a) != assignments_digest(b)
