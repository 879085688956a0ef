"""Client-side ARP and NDP probers: ask who has the VIP every few milliseconds, record who answers.

It is what a LAN client sees, measured from a raw socket in the client namespace: the failover
timeline (last answer from the old MAC, first answer from the new MAC), dual announcements (two
MACs answering in the same window), and gratuitous ARPs / unsolicited NAs seen. Bounded in time and
count. :class:`ArpProber` asks with ARP requests (IPv4), :class:`NdpProber` with Neighbor
Solicitations to the VIP's solicited-node group (IPv6); :func:`prober_for` picks by address family.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field

from l2lb.core import codec
from l2lb.lab.netns import entered

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD


@dataclass(frozen=True)
class Answer:
    t: float  # monotonic seconds
    mac: str  # the announced link-layer address (ARP SHA; NA target link-layer option, else Ethernet source)
    kind: str  # "reply" (answer to our probe) | "garp" (gratuitous ARP or unsolicited NA)
    flags: int | None = None  # NA only: R 0x80, S 0x40, O 0x20
    eth_src: str = ""  # NA only: the frame's Ethernet source
    frame: bytes = field(default=b"", repr=False, compare=False)  # NA only: the frame as received


@dataclass
class Timeline:
    vip: str
    interval_s: float
    sent: int = 0
    answers: list[Answer] = field(default_factory=list)

    def replies(self) -> list[Answer]:
        return [a for a in self.answers if a.kind == "reply"]

    def macs(self) -> list[str]:
        seen: list[str] = []
        for a in self.replies():
            if a.mac not in seen:
                seen.append(a.mac)
        return seen

    def failover(self, old_mac: str, fault_at: float) -> dict[str, float | str | None]:
        """Outage as the client saw it around a fault injected at ``fault_at`` (monotonic)."""
        reps = self.replies()
        before = [a for a in reps if a.mac == old_mac and a.t <= fault_at]
        new = [a for a in reps if a.mac != old_mac and a.t >= fault_at]
        last_old = max((a.t for a in reps if a.mac == old_mac), default=None)
        last_old_before = before[-1].t if before else None
        first_new = new[0].t if new else None
        # replies from the old MAC after the new one started answering: a dual announcement
        dual_end = max((a.t for a in reps if a.mac == old_mac and first_new is not None and a.t > first_new),
                       default=None)
        out: dict[str, float | str | None] = {
            "vip": self.vip,
            "old_mac": old_mac,
            "new_mac": new[0].mac if new else None,
            "last_old_answer_ms": None if last_old_before is None else (last_old_before - fault_at) * 1000,
            "last_old_answer_any_ms": None if last_old is None else (last_old - fault_at) * 1000,
            "first_new_answer_ms": None if first_new is None else (first_new - fault_at) * 1000,
            "outage_ms": None,
            "dual_ms": 0.0 if dual_end is None or first_new is None else (dual_end - first_new) * 1000,
            "first_garp_ms": None,
        }
        if first_new is not None and last_old_before is not None:
            out["outage_ms"] = (first_new - last_old_before) * 1000
        garps = [a.t for a in self.answers if a.kind == "garp" and a.mac != old_mac and a.t >= fault_at]
        if garps:
            out["first_garp_ms"] = (garps[0] - fault_at) * 1000
        return out


class ArpProber:
    """Raw-socket ARP prober living in namespace ``ns`` on ``ifname``."""

    ETHERTYPE = ETH_P_ARP

    def __init__(self, ns: str | None, ifname: str, src_ip: str, vip: str, *, interval_s: float = 0.01):
        self.vip = vip
        self.interval_s = interval_s
        self._vip_b = codec.ip_bytes(vip)
        self._src_b = codec.ip_bytes(src_ip)
        ctx = entered(ns) if ns else contextlib.nullcontext()
        with ctx:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.ETHERTYPE))
            self.sock.bind((ifname, self.ETHERTYPE))
        # the bound packet socket knows its interface's MAC (sysfs would show the root namespace's)
        self.mac = bytes(self.sock.getsockname()[4][:6])
        self.sock.setblocking(False)
        self.request = self._request()
        self.timeline = Timeline(vip=vip, interval_s=interval_s)

    def _request(self) -> bytes:
        return codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=self.mac, sha=self.mac, spa=self._src_b,
                               tha=codec.ZERO_MAC, tpa=self._vip_b)

    def _record(self, data: bytes, t: float) -> None:
        fr = codec.parse(data)
        if not isinstance(fr, codec.ArpFrame) or fr.spa != self._vip_b or fr.sha == self.mac:
            return
        if fr.op == 2 and fr.tha == self.mac and fr.tpa == self._src_b:
            self.timeline.answers.append(Answer(t, codec.mac_text(fr.sha), "reply"))
        elif fr.tpa == self._vip_b:  # gratuitous (request or reply with SPA = TPA = VIP)
            self.timeline.answers.append(Answer(t, codec.mac_text(fr.sha), "garp"))

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            self._record(data, time.monotonic())

    async def run(self, stop: asyncio.Event, *, max_seconds: float = 30.0, max_probes: int = 5000) -> Timeline:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._drain)
        deadline = time.monotonic() + max_seconds
        try:
            nxt = time.monotonic()
            while not stop.is_set() and time.monotonic() < deadline and self.timeline.sent < max_probes:
                with contextlib.suppress(BlockingIOError):
                    self.sock.send(self.request)
                    self.timeline.sent += 1
                nxt += self.interval_s
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, nxt - time.monotonic()))
            await asyncio.sleep(self.interval_s * 3)  # late answers to the last probes
            self._drain()
        finally:
            loop.remove_reader(self.sock.fileno())
        return self.timeline

    def close(self) -> None:
        self.sock.close()


class NdpProber(ArpProber):
    """Raw-socket NDP prober: a Neighbor Solicitation for the VIP (to its solicited-node group, hop
    limit 255, source link-layer option) every ``interval_s``; records solicited NAs sent back to
    ``src_ip`` and unsolicited NAs for the VIP, with their flags and target link-layer option.

    Give it a ``src_ip`` the client's kernel does *not* own (on the same link): the answers then
    never reach the kernel's neighbour table, so the kernel's own view (and how the unsolicited NA
    moves it) is measured apart from this prober's traffic.
    """

    ETHERTYPE = ETH_P_IPV6

    def _request(self) -> bytes:
        return codec.build_ns(eth_src=self.mac, src=self._src_b, target=self._vip_b, slla=self.mac)

    def _record(self, data: bytes, t: float) -> None:
        fr = codec.parse(data)
        if not isinstance(fr, codec.NaFrame) or fr.target != self._vip_b or fr.eth_src == self.mac:
            return
        mac = codec.mac_text(fr.tlla or fr.eth_src)
        if fr.dst == self._src_b and fr.flags & codec.NA_FLAG_SOLICITED:
            kind = "reply"
        elif fr.dst[0] == 0xFF and not fr.flags & codec.NA_FLAG_SOLICITED:
            kind = "garp"
        else:
            return
        self.timeline.answers.append(Answer(t, mac, kind, fr.flags, codec.mac_text(fr.eth_src), data))


def prober_for(ns: str | None, ifname: str, src_ip: str, vip: str, *, interval_s: float = 0.01) -> ArpProber:
    """An :class:`NdpProber` for an IPv6 VIP, an :class:`ArpProber` for an IPv4 one."""
    cls = NdpProber if ":" in vip else ArpProber
    return cls(ns, ifname, src_ip, vip, interval_s=interval_s)
