"""In-process cost of the announcer's hot path: no kernel, no wire, the PACKET_MMAP rings faked.

    python -m bench.arp.inproc [--vips 10000] [--rounds 2000] [--repeat 5]

What one wake-up of a real announcer does, minus the system calls: the service opens its socket for an
interface (``RawPort`` replaced by one whose RX/TX rings live in anonymous memory and whose ``send`` is a
no-op), the RX ring is filled with a batch of 256 ARP requests (256 askers, each asking once, for VIPs of a
10k-VIP set), and the port's own ``on_readable`` (the callback ``RawPort.start`` registers with the loop)
reads the ring, calls the service's batch handler (memo lookups, rate limits) and writes the replies into
the TX ring. Printed: ns per answered request for that whole path, for the ring read alone, and the core
decision costs per frame (``AnnouncerState.handle`` fast path for ARP, full path for NS, and from the memo).
The clock advances 50 ms per batch so no asker is rate-limited. Times are this thread's CPU time
(``thread_time_ns``: preemption by other processes is not counted) and every figure is the best of
``--repeat`` runs; run it under ``flock /work/.bench.lock`` on a shared host.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import mmap
import sys
import time
from collections.abc import Callable
from typing import Any

from l2lb.adapters.net import rawsock
from l2lb.adapters.net.links import Link
from l2lb.core import codec
from l2lb.core.announce import AnnouncerState, Iface
from l2lb.core.fastpath import ReplyMemo
from l2lb.core.messages import NodeAssignments, VipAssignment

NODE_MAC = "02:00:00:00:00:01"
# CPU time of this thread, not wall time: on a shared host the time other processes take is not ours
CLOCK = time.thread_time_ns
BATCH = 256


class _Sock:
    """The kernel's side of the TX ring: takes every queued frame (the time it takes is not counted)."""

    def __init__(self) -> None:
        self.ring: _Ring | None = None
        self.kernel_ns = 0

    def send(self, data: bytes, flags: int = 0) -> int:
        t0 = CLOCK()
        r = self.ring
        assert r is not None
        i = r.tx_i
        for _ in range(r.tx_n):
            j = i - 1 if i else r.tx_n - 1
            off = r.tx_base + j * r.frame
            if not r.mm[off] & rawsock.TP_STATUS_SEND_REQUEST:
                break
            r.mm[off:off + 4] = b"\0\0\0\0"
            i = j
        self.kernel_ns += CLOCK() - t0
        return 0

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


class _Ring(rawsock._Ring):
    def __init__(self, rx_bytes: int, tx_frames: int, frame: int):  # no socket: anonymous memory
        per_block = rawsock._PAGE // frame
        rx_blocks = max(1, rx_bytes // rawsock._PAGE)
        tx_blocks = max(1, -(-tx_frames // per_block))
        self.frame = frame
        self.rx_n = rx_blocks * per_block
        self.tx_n = tx_blocks * per_block
        self.tx_base = rx_blocks * rawsock._PAGE
        self.size = (rx_blocks + tx_blocks) * rawsock._PAGE
        self.mm = mmap.mmap(-1, self.size)
        self.rx_i = 0
        self.tx_i = 0


class FakePort(rawsock.RawPort):
    """A RawPort on fake rings; ``on_readable`` is the callback the real one registers with the loop."""

    last: FakePort | None = None

    def __init__(self, ifname: str, **_: Any):  # same call as RawPort(ifname, rcvbuf=..., ring=...)
        self.ifname = ifname
        self.flush_every = 32
        self.batch = BATCH
        self.snaplen = 2048
        self.sent = self.send_errors = self.received = self.tx_full = 0
        self._groups = set()
        self._loop = None
        self._pending = 0
        self._batching = False
        self.ifindex = 2
        self.fake = _Sock()
        self.sock = self.fake  # type: ignore[assignment]
        self._ring = _Ring(2 << 20, 1024, 256)
        self.fake.ring = self._ring
        self.rcvbuf = self._ring.rx_n * 256
        self.on_readable: Callable[[], None] | None = None
        FakePort.last = self

    def _membership(self, op: int, mac: bytes) -> None:
        pass

    def start(self, loop: asyncio.AbstractEventLoop, handler: rawsock.BatchHandler) -> None:
        port = self

        class _Loop:
            def add_reader(self, fd: int, cb: Callable[[], None]) -> None:
                port.on_readable = cb

            def remove_reader(self, fd: int) -> None:
                pass

        super().start(_Loop(), handler)  # type: ignore[arg-type]

    def fill(self, frames: list[bytes]) -> None:
        """Put ``frames`` into the RX ring as the kernel would (status USER, mac offset 66)."""
        r = self._ring
        assert r is not None
        i = r.rx_i
        for f in frames:
            off = i * r.frame
            rawsock._HDR.pack_into(r.mm, off, rawsock.TP_STATUS_USER, len(f), len(f), 66, 80)
            r.mm[off + 66:off + 66 + len(f)] = f
            i = i + 1 if i + 1 < r.rx_n else 0


def vips(n: int) -> tuple[VipAssignment, ...]:
    out = [VipAssignment(f"198.51.100.{10 + i}", 1) for i in range(100)]
    out += [VipAssignment(f"203.0.113.{10 + i}", 1) for i in range(100)]
    out += [VipAssignment(f"2001:db8::{i + 1:x}", 1) for i in range(max(0, n - 200))]
    return tuple(out)


def requests(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        mac = bytes([2, 0, 0, 1, i >> 8, i & 255])
        out.append(codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=mac, sha=mac,
                                   spa=codec.ip_bytes(f"198.51.100.{110 + i % 100}"), tha=codec.ZERO_MAC,
                                   tpa=codec.ip_bytes(f"198.51.100.{10 + i % 100}")))
    return out


def ns_requests(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        mac = bytes([2, 0, 0, 2, i >> 8, i & 255])
        out.append(codec.build_ns(eth_src=mac, src=codec.ip_bytes(f"2001:db8:1::{i + 1:x}"),
                                  target=codec.ip_bytes(f"2001:db8::{i % 500 + 1:x}"), slla=mac))
    return out


class Clock:
    """A controllable monotonic clock for the service (the batch handler reads it once per batch)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def service_path(n_vips: int, rounds: int) -> tuple[float, float]:
    """(ns per answered request for on_readable, ns per frame for the ring read alone)."""
    svc_mod: Any = importlib.import_module("services.announcer.main")

    clock = Clock()
    out: dict[str, float] = {}

    def setup() -> FakePort:
        """The service with its VIP set and one open (fake) port: the only part that knows its internals."""
        args = svc_mod.build_parser().parse_args(["--node", "n1", "--interfaces", "bench0", "--no-netlink",
                                                 "--http-port", "0", "--no-bus", "--garp-count", "0"])
        svc = svc_mod.AnnouncerService(args)
        msg = NodeAssignments("n1", 1, 1, 3_600_000, time.time(), vips(n_vips))
        if hasattr(svc, "machine"):  # the state machine's shell (issue 24)
            from l2lb.core.announcer_machine import Assignments

            svc.feed(Assignments(msg, time.monotonic(), time.time(), source="bench"))
        else:
            svc.apply(msg, "bench")
        svc._on_links({}, {"bench0": Link("bench0", 2, NODE_MAC, True, "up")})
        assert FakePort.last is not None
        return FakePort.last

    async def go() -> None:
        orig_port, orig_mono = svc_mod.RawPort, time.monotonic
        svc_mod.RawPort = FakePort
        time.monotonic = clock  # the service's clock (restored below)
        try:
            port = setup()
            measure(port)
        finally:
            svc_mod.RawPort = orig_port
            time.monotonic = orig_mono

    def measure(port: FakePort) -> None:
        assert port.on_readable is not None
        batch = requests(BATCH)
        for _ in range(20):  # warm up: fill the memo
            clock.t += 0.05
            port.fill(batch)
            port.on_readable()
        sent0 = port.sent
        total = 0.0
        k0 = port.fake.kernel_ns
        for _ in range(rounds):
            clock.t += 0.05
            port.fill(batch)
            t0 = CLOCK()
            port.on_readable()
            total += CLOCK() - t0
        total -= port.fake.kernel_ns - k0
        answered = port.sent - sent0
        assert answered == rounds * BATCH, (answered, rounds * BATCH, port.send_errors, port.tx_full)
        out["path"] = total / answered
        total = 0.0  # the ring read alone
        for _ in range(rounds):
            port.fill(batch)
            t0 = CLOCK()
            got = port.recv_batch()
            total += CLOCK() - t0
            assert len(got) == BATCH
        out["ring"] = total / (rounds * BATCH)

    asyncio.run(go())
    return out["path"], out["ring"]


def core_costs(n_vips: int, rounds: int) -> dict[str, float]:
    st = AnnouncerState("n1", garp_count=0, reply_rate=1e12, reply_burst=1e12)
    st.apply(NodeAssignments("n1", 1, 1, 3_600_000, 0.0, vips(n_vips)), 0.0)
    iface = Iface("bench0", 2, codec.mac_bytes(NODE_MAC))
    out: dict[str, float] = {}
    for name, frames in (("arp", requests(BATCH)), ("ns", ns_requests(BATCH))):
        t0 = CLOCK()
        for _ in range(rounds // 10):
            for f in frames:
                st.handle(f, iface, 1.0)
        out[f"handle_{name}"] = (CLOCK() - t0) / (rounds // 10 * len(frames))
        memo = ReplyMemo(st, max_entries=4096)
        memo.handle_batch(frames, iface, 1.0)
        t0 = CLOCK()
        for _ in range(rounds):
            replies, _ = memo.handle_batch(frames, iface, 1.0)
        out[f"memo_{name}"] = (CLOCK() - t0) / (rounds * len(frames))
        assert len(replies) == len(frames)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vips", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    paths, rings, cores = [], [], []
    for _ in range(a.repeat):
        p, r = service_path(a.vips, a.rounds)
        paths.append(p)
        rings.append(r)
        cores.append(core_costs(a.vips, a.rounds))
    best = {k: min(c[k] for c in cores) for k in cores[0]}
    print(f"{a.vips} VIPs, batches of {BATCH}, best of {a.repeat} x {a.rounds} batches")
    print(f"answered request, on_readable (ring read + service batch handler + TX-ring write): "
          f"{min(paths):.0f} ns  (all runs: {', '.join(f'{x:.0f}' for x in paths)})")
    print(f"  of which the ring read: {min(rings):.0f} ns")
    print(f"core per frame: ARP handle {best['handle_arp']:.0f} ns, memo {best['memo_arp']:.0f} ns; "
          f"NS handle {best['handle_ns']:.0f} ns, memo {best['memo_ns']:.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
