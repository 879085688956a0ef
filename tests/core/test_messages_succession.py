"""The optional v1 fields of pre-authorised succession: successors, standby, members (docs/bus.md)."""

from __future__ import annotations

import hashlib
import json

import pytest

from l2lb.core.messages import (
    MessageError,
    NodeAssignments,
    StandbyVip,
    Successor,
    VipAssignment,
    assignments_digest,
    decode,
    encode,
)

V = VipAssignment("198.51.100.7", 1_764_000_000_100, ("eth0",), ("ns/a",))


def _msg(**kw: object) -> NodeAssignments:
    return NodeAssignments("n1", 3, 9, 1000, 1.5, **kw)  # type: ignore[arg-type]


def test_round_trip_and_written_only_when_set() -> None:
    plain = _msg(vips=(V,))
    assert b"successors" not in encode(plain) and b"standby" not in encode(plain) and b"members" not in encode(plain)
    full = _msg(vips=(VipAssignment(V.ip, V.epoch, V.interfaces, V.services,
                                    (Successor("n2", V.epoch + 1), Successor("n3", V.epoch + 2))),),
                standby=(StandbyVip("203.0.113.5", "n2", 1, 77, ("eth1",), ("ns/b",)),), members=("n1", "n2", "n3"))
    assert decode(encode(full)) == full
    d = json.loads(encode(full))
    assert d["vips"][0]["successors"] == [{"node": "n2", "epoch": V.epoch + 1}, {"node": "n3", "epoch": V.epoch + 2}]
    assert d["standby"] == [{"ip": "203.0.113.5", "holder": "n2", "rank": 1, "epoch": 77, "interfaces": ["eth1"],
                             "services": ["ns/b"]}]
    assert d["members"] == ["n1", "n2", "n3"]


def test_a_message_from_before_reads_with_empty_fields() -> None:
    raw = b'{"node":"n1","term":3,"seq":9,"ttl_ms":1000,"sent_at":1.5,"vips":[{"ip":"198.51.100.7","epoch":5}],' \
          b'"k":"node_assignments","v":1}'
    m = decode(raw)
    assert isinstance(m, NodeAssignments) and m.standby == () and m.members == () and m.vips[0].successors == ()


@pytest.mark.parametrize("bad", [
    '"standby":[{"ip":"x","holder":"a","rank":0,"epoch":1}]',
    '"standby":[{"ip":"x","holder":"a","rank":"1","epoch":1}]',
    '"standby":["x"]',
    '"members":[1]',
    '"vips":[{"ip":"x","epoch":1,"successors":[{"node":"a"}]}]',
    '"vips":[{"ip":"x","epoch":1,"successors":{"node":"a","epoch":2}}]',
])
def test_bad_fields_are_message_errors(bad: str) -> None:
    raw = '{"node":"n1","term":3,"seq":9,"ttl_ms":1000,"sent_at":1.5,' + bad + ',"k":"node_assignments","v":1}'
    with pytest.raises(MessageError):
        decode(raw)


def test_digest_unchanged_without_the_new_fields_and_covering_them_otherwise() -> None:
    rows = [[V.ip, V.epoch, list(V.interfaces), list(V.services)]]
    before = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()[:32]
    assert assignments_digest((V,)) == before  # the formula every announcer and leases already agree on
    with_succ = VipAssignment(V.ip, V.epoch, V.interfaces, V.services, (Successor("n2", V.epoch + 1),))
    sb = StandbyVip("203.0.113.5", "n2", 1, 77)
    digests = {assignments_digest((V,)), assignments_digest((with_succ,)), assignments_digest((V,), (sb,)),
               assignments_digest((V,), (), ("n1",)), assignments_digest((V,), (), ("n1", "n2")),
               assignments_digest((V,), (StandbyVip("203.0.113.5", "n2", 2, 77),))}
    assert len(digests) == 6
    assert assignments_digest((V,), (sb, StandbyVip("203.0.113.6", "n3", 1, 8))) == assignments_digest(
        (V,), (StandbyVip("203.0.113.6", "n3", 1, 8), sb))  # order of entries does not matter
