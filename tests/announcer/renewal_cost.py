"""Measure one renew tick at 10k VIPs: full NodeAssignments vs NodeRenewal (announcer CPU, stream bytes).

    python -m tests.announcer.renewal_cost [VIPS] [NODES]

Announcer side (in process, one node): decode + AnnouncerState.apply() of the unchanged full set (what
every renew tick cost before) vs decode + AnnouncerState.renew(). Leases side: encoding, and the bytes
one renew round puts on the assignments stream for NODES nodes sharing the VIPs evenly.
"""

from __future__ import annotations

import statistics
import sys
import time

from l2lb.core.announce import AnnouncerState
from l2lb.core.messages import NodeAssignments, NodeRenewal, VipAssignment, assignments_digest, decode, encode


def _vips(n: int, start: int = 0) -> tuple[VipAssignment, ...]:
    return tuple(
        VipAssignment(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1_764_000_000_000 + i, ("eth0",),
                      (f"apps/svc-{i}",))
        for i in range(start, start + n)
    )


def _best(fn: object, rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()  # type: ignore[operator]
        times.append(time.process_time() - t0)
    return min(times) * 1000, statistics.median(times) * 1000


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 10_000
    nodes = int(argv[1]) if len(argv) > 1 else 10
    vips = _vips(n)
    digest = assignments_digest(vips)
    st = AnnouncerState("n1", garp_count=0)
    seq = [1]
    st.apply(NodeAssignments("n1", 1, 1, 1000, time.time(), vips, digest), time.monotonic())

    def full_tick() -> None:
        seq[0] += 1
        raw = encode(NodeAssignments("n1", 1, seq[0], 1000, time.time(), vips, digest))
        t0 = time.process_time()
        msg = decode(raw, NodeAssignments)
        assert isinstance(msg, NodeAssignments)
        ch = st.apply(msg, time.monotonic())
        assert ch.accepted and not ch.added
        full_tick.cpu = time.process_time() - t0  # type: ignore[attr-defined]

    def renew_tick() -> None:
        seq[0] += 1
        raw = encode(NodeRenewal("n1", 1, seq[0], 1000, time.time(), digest))
        t0 = time.process_time()
        msg = decode(raw, NodeRenewal)
        assert isinstance(msg, NodeRenewal)
        assert st.renew(msg, time.monotonic()).accepted
        renew_tick.cpu = time.process_time() - t0  # type: ignore[attr-defined]

    def announcer_cost(tick: object, rounds: int) -> tuple[float, float]:
        out = []
        for _ in range(rounds):
            tick()  # type: ignore[operator]
            out.append(tick.cpu)  # type: ignore[attr-defined]
        return min(out) * 1e3, statistics.median(out) * 1e3

    f_min, f_med = announcer_cost(full_tick, 15)
    r_min, r_med = announcer_cost(renew_tick, 2000)
    enc_full = _best(lambda: encode(NodeAssignments("n1", 1, 2, 1000, 1.0, vips, digest)), 10)
    dig = _best(lambda: assignments_digest(vips), 10)
    per = n // nodes
    sets = [_vips(per, k * per) for k in range(nodes)]
    full_round = sum(len(encode(NodeAssignments(f"worker-{k:02d}", 4, 10**9, 1000, time.time(), s,
                                                assignments_digest(s)))) for k, s in enumerate(sets))
    ren_round = sum(len(encode(NodeRenewal(f"worker-{k:02d}", 4, 10**9, 1000, time.time(), assignments_digest(s))))
                    for k, s in enumerate(sets))
    print(f"announcer, {n} VIPs, per renew tick (decode + state), CPU ms min/median:")
    print(f"  full NodeAssignments (apply, unchanged set): {f_min:.2f} / {f_med:.2f}")
    print(f"  NodeRenewal (renew):                         {r_min * 1000:.1f} / {r_med * 1000:.1f} us")
    print(f"  ratio (median): {f_med / r_med:.0f}x")
    print(f"leases: encode full set {enc_full[1]:.2f} ms, digest {dig[1]:.2f} ms (only on change / safety net)")
    print(f"stream bytes per renew round, {nodes} nodes x {per} VIPs: full {full_round} B, renewals {ren_round} B "
          f"({full_round / ren_round:.0f}x less); per second at 250 ms: {full_round * 4 / 1e6:.2f} MB -> "
          f"{ren_round * 4 / 1e3:.1f} kB (+ one full set per node every 5 s: {full_round / 5 / 1e6:.2f} MB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
