"""Peer heartbeats on the LAN (l2lb.core.peers): codec, authentication, replay, liveness, quorum, claims."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2lb.core import peers
from l2lb.core.peers import CP_FRESH, REDIS_OK, STOPPING, PeerError, PeerFrame, PeerView

KEY = b"k" * 32
MAC = bytes.fromhex("020000000001")
WALL = 1_765_000_000.0


def frame(node: str = "n1", counter: int = 1, wall: float = WALL, **kw: object) -> PeerFrame:
    return PeerFrame(cluster=str(kw.pop("cluster", "l2lb")), node=node, instance=str(kw.pop("instance", "i1")),
                     counter=counter, wall_ms=int(wall * 1000), **kw)  # type: ignore[arg-type]


def test_round_trip_signed_and_unsigned() -> None:
    f = frame(flags=REDIS_OK | CP_FRESH, term=7, held_count=3, held_digest=peers.held_digest({"198.51.100.1": 5}),
              claims=(("2001:db8::1", 11), ("198.51.100.1", 10)))  # carried highest epoch first
    raw = peers.encode(f, KEY, MAC)
    assert raw[:6] == peers.GROUP_MAC and raw[6:12] == MAC and raw[12:14] == b"\x88\xb5"
    got = peers.decode(raw, KEY)
    assert got == f and got.redis_ok and got.cp_fresh and not got.stopping
    unsigned = peers.decode(peers.encode(f, None, MAC), None)
    assert unsigned.claims == f.claims and unsigned.flags & peers.UNSIGNED
    assert peers.decode(peers.encode(frame(claims=(("198.51.100.1", 1), ("198.51.100.2", 2))), None, MAC),
                        None).claims == (("198.51.100.2", 2), ("198.51.100.1", 1))


@pytest.mark.parametrize(("sent_with", "read_with", "reason"), [
    (KEY, b"x" * 32, "bad_mac"),
    (None, KEY, "unsigned"),
    (KEY, None, "signed"),
])
def test_authentication(sent_with: bytes | None, read_with: bytes | None, reason: str) -> None:
    with pytest.raises(PeerError) as e:
        peers.decode(peers.encode(frame(), sent_with, MAC), read_with)
    assert e.value.reason == reason


def test_a_flipped_bit_anywhere_is_refused() -> None:
    raw = bytearray(peers.encode(frame(claims=(("198.51.100.9", 3),)), KEY, MAC))
    for i in range(14, len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(PeerError):
            peers.decode(bytes(bad), KEY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_peer_error(data: bytes) -> None:
    raw = peers.GROUP_MAC + MAC + b"\x88\xb5" + data
    for key in (None, KEY):
        try:
            peers.decode(raw, key)
        except PeerError:
            pass


def test_claims_are_capped_keeping_the_highest_epochs_and_the_frame_fits() -> None:
    claims = tuple((f"2001:db8::{i:x}", i) for i in range(1, 200))
    raw = peers.encode(frame(claims=claims), KEY, MAC)
    assert len(raw) <= 1514
    got = peers.decode(raw, KEY).claims
    assert len(got) == peers.MAX_CLAIMS and min(e for _, e in got) == 199 - peers.MAX_CLAIMS + 1


def test_view_counts_only_fresh_new_frames_of_our_cluster() -> None:
    v = PeerView("n1", key=KEY)
    assert v.receive(peers.encode(frame("n2", 1), KEY, MAC), now=10.0, wall=WALL) is not None
    assert v.receive(peers.encode(frame("n2", 1), KEY, MAC), now=10.1, wall=WALL) is None  # replayed
    assert v.receive(peers.encode(frame("n2", 2, wall=WALL - 5), KEY, MAC), now=10.1, wall=WALL) is None  # old
    assert v.receive(peers.encode(frame("n2", 3, wall=WALL), KEY, MAC), now=10.1, wall=WALL) is not None
    assert v.receive(peers.encode(frame("n3", 1, cluster="other"), KEY, MAC), now=10.1, wall=WALL) is None
    assert v.receive(peers.encode(frame("n1", 9), KEY, MAC), now=10.1, wall=WALL) is None  # our own
    assert v.receive(b"\x00" * 20, now=10.1, wall=WALL) is None
    assert v.rejected == {"replay": 1, "stale": 1, "other_cluster": 1, "own": 1, "short": 1}
    # a restarted peer (new instance) starts its counter again
    assert v.receive(peers.encode(frame("n2", 1, instance="i2"), KEY, MAC), now=10.2, wall=WALL) is not None
    assert set(v.alive(10.2)) == {"n2"}
    assert v.alive(10.2 + v.timeout_s + 0.01) == {}  # evidence too old never counts


def test_stopping_peer_is_forgotten_at_once() -> None:
    v = PeerView("n1")
    v.receive(peers.encode(frame("n2", 1), None, MAC), now=1.0, wall=WALL)
    v.receive(peers.encode(frame("n2", 2, flags=STOPPING), None, MAC), now=1.1, wall=WALL)
    assert v.alive(1.1) == {}


@pytest.mark.parametrize(("members", "heard", "me_member", "ok"), [
    (1, 0, True, True),  # single node: myself is the quorum
    (2, 0, True, False),  # two nodes, the other silent: no majority
    (2, 1, True, True),
    (3, 0, True, False),
    (3, 1, True, True),
    (5, 1, True, False),
    (5, 2, True, True),
    (3, 2, False, True),  # not a member myself: the members I hear must be a majority alone
    (3, 1, False, False),
])
def test_quorum(members: int, heard: int, me_member: bool, ok: bool) -> None:
    v = PeerView("n1")
    names = [f"n{i + 1}" for i in range(members)] if me_member else [f"m{i}" for i in range(members)]
    others = [n for n in names if n != "n1"]
    for i, n in enumerate(others[:heard]):
        v.receive(peers.encode(frame(n, i + 1), None, MAC), now=5.0, wall=WALL)
    assert v.quorum(names, 5.0) is ok
    assert v.quorum([], 5.0) is False


def test_control_plane_evidence_and_claims() -> None:
    v = PeerView("n1")
    v.receive(peers.encode(frame("n2", 1, flags=REDIS_OK, claims=(("198.51.100.7", 5),)), None, MAC), 1.0, WALL)
    v.receive(peers.encode(frame("n3", 1, claims=(("198.51.100.7", 9), ("198.51.100.8", 2))), None, MAC),
              1.0, WALL)
    assert not v.someone_has_control_plane(1.0)  # REDIS_OK without CP_FRESH: leases is silent for it too
    assert v.claims(1.0) == {"198.51.100.7": ("n3", 9), "198.51.100.8": ("n3", 2)}
    v.receive(peers.encode(frame("n4", 1, flags=REDIS_OK | CP_FRESH), None, MAC), 1.1, WALL)
    assert v.someone_has_control_plane(1.1)
    assert not v.someone_has_control_plane(1.1 + 1.0)


def test_peers_with_skewed_clocks_are_heard_and_replays_are_not() -> None:
    """A node whose wall clock is a day off (no RTC, no NTP yet) is still heard; its offset is reported.
    A frame recorded earlier and replayed (an offset behind the stream) does not count."""
    v = PeerView("n1")
    skew = 86_400.0
    for i in range(1, 6):
        assert v.receive(peers.encode(frame("n2", i, wall=WALL + skew + i * 0.1), None, MAC),
                         now=1.0 + i * 0.1, wall=WALL + i * 0.1) is not None
    assert v.clock_offsets(1.5) == {"n2": skew}
    recorded = peers.encode(frame("n2", 100, wall=WALL + skew - 60), None, MAC)  # a minute-old frame
    assert v.receive(recorded, now=1.6, wall=WALL + 0.6) is None and v.rejected["stale"] == 1


def test_a_first_frame_that_was_a_replay_is_overtaken_by_the_real_stream() -> None:
    v = PeerView("n1")
    assert v.receive(peers.encode(frame("n2", 1, wall=WALL - 120), None, MAC), now=1.0, wall=WALL) is not None
    assert v.receive(peers.encode(frame("n2", 50, wall=WALL + 0.1), None, MAC), now=1.1, wall=WALL + 0.1) is not None
    assert v.clock_offsets(1.1) == {"n2": 0.0}
    assert v.receive(peers.encode(frame("n2", 51, wall=WALL - 100), None, MAC), now=1.2, wall=WALL + 0.2) is None


def test_a_sender_whose_clock_stepped_back_is_heard_again_after_relearn_s() -> None:
    v = PeerView("n1", relearn_s=3.0)
    t, c = 1.0, 1
    assert v.receive(peers.encode(frame("n2", c, wall=WALL + t), None, MAC), now=t, wall=WALL + t)
    heard = []
    for _ in range(50):  # NTP steps its clock 30 s back; it keeps sending every 100 ms
        t += 0.1
        c += 1
        heard.append(v.receive(peers.encode(frame("n2", c, wall=WALL + t - 30), None, MAC), now=t, wall=WALL + t))
    first = next(i for i, f in enumerate(heard) if f is not None)
    assert 28 <= first <= 32  # ~3 s of rejected frames, then the new offset is adopted
    assert all(f is not None for f in heard[first:])
    assert v.clock_offsets(t) == {"n2": -30.0}


def test_a_step_of_our_own_wall_clock_keeps_every_peer_heard() -> None:
    """Simulator seed 23: NTP stepped n4's clock 30 s forward; with offsets kept against our wall clock every
    peer's next frames looked 30 s old (stale) for relearn_s, so n4 heard nobody, took a live holder's VIPs over
    and then lost them with its quorum (1.9 s dark). Offsets are kept against our monotonic clock."""
    v = PeerView("n1", relearn_s=3.0)
    t, c = 1.0, 1
    assert v.receive(peers.encode(frame("n2", c, wall=WALL + t), None, MAC), now=t, wall=WALL + t)
    for step in (30.0, -30.0, 86_400.0):
        own = step
        heard = []
        for _ in range(5):
            t += 0.1
            c += 1
            heard.append(v.receive(peers.encode(frame("n2", c, wall=WALL + t), None, MAC), now=t, wall=WALL + t + own))
        assert all(f is not None for f in heard), step
        assert v.clock_offsets(t) == {"n2": -own}  # still reported against our (stepped) wall clock
        t += 0.1
        c += 1
        v.receive(peers.encode(frame("n2", c, wall=WALL + t), None, MAC), now=t, wall=WALL + t)  # stepped back
    assert "stale" not in v.rejected
