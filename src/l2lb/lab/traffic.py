"""Real traffic to a VIP, IPv4 or IPv6: a UDP responder per node and a client that queries every 10 ms.

    python -m l2lb.lab.traffic respond --name node-1 [--port 5353] [--max-seconds 14400]
    python -m l2lb.lab.traffic client --target 2001:db8:53::1 [--port 5353] [--interval-ms 10] \\
        --seconds 60 --out FILE

The responder stands for a Service's backend behind kube-proxy on its node: the VIP is a local
address of every node (kube-proxy's IPVS mode puts it on kube-ipvs0; here on ``lo``), the node's
kernel never answers ARP/NDP for it there (IPv4: arp_ignore=1/arp_announce=2; IPv6: a Neighbor
Solicitation is answered only for addresses of the interface it came in on), so which node gets the
traffic is decided by the client's neighbour entry alone, i.e. by l2lb's ARP/NDP. The responder
answers each datagram with ``<payload> <node name>`` *from the address the query was sent to*
(IP_PKTINFO / IPV6_PKTINFO), on one socket per family.

The client sends ``<seq>`` every ``--interval-ms`` and records on CLOCK_MONOTONIC (the same clock in
every process of the machine) when each query left and when each answer came back from which node;
it stops after ``--seconds`` or on SIGTERM and writes ``{"sent": [[seq, t], ...], "replies": [[seq, t,
node], ...], "interval_ms": ms, "wrong_source": n}`` (answers from another address than the target are
counted, not used). The protocol and file are those of bench/compare/udp.py (h21, IPv4), for both
families. Every loop is bounded in time and count. :func:`analyse` turns a file into the failover
figures.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import json
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

_IN6_PKTINFO = 16  # struct in6_pktinfo: 16-byte address + interface index
_IN_PKTINFO = 12  # struct in_pktinfo: ifindex, spec_dst, addr
IP_PKTINFO = 8  # linux/in.h (Python's socket module does not name it)


def _sockets(port: int) -> list[socket.socket]:
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s4.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s4.bind(("0.0.0.0", port))
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    s6.bind(("::", port))
    return [s4, s6]


def _answer(s: socket.socket, name: bytes) -> None:
    data, anc, _flags, addr = s.recvmsg(512, socket.CMSG_SPACE(32))
    cmsgs = []
    for level, typ, val in anc:
        if level == socket.IPPROTO_IPV6 and typ == socket.IPV6_PKTINFO and len(val) >= 20:
            cmsgs = [(level, typ, val[:16] + b"\x00" * 4)]  # reply from the query's destination address
        elif level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(val) >= _IN_PKTINFO:
            cmsgs = [(level, typ, b"\x00" * 4 + val[8:12] + b"\x00" * 4)]  # spec_dst = the query's destination
    s.sendmsg([data[:64] + b" " + name], cmsgs, 0, addr)


def respond(a: argparse.Namespace) -> int:
    socks = _sockets(a.port)
    name = a.name.encode()
    deadline = time.monotonic() + a.max_seconds
    n = 0
    try:
        while time.monotonic() < deadline and n < a.max_packets:
            ready, _, _ = select.select(socks, [], [], 1.0)
            for s in ready:
                with contextlib.suppress(OSError):
                    _answer(s, name)
                    n += 1
    finally:
        for s in socks:
            s.close()
    return 0


def client(a: argparse.Namespace) -> int:
    stop = {"now": False}

    def on_term(_sig: int, _frm: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    target_ip = ipaddress.ip_address(a.target)
    fam = socket.AF_INET6 if target_ip.version == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setblocking(False)
    target = (str(target_ip), a.port)
    interval = a.interval_ms / 1000.0
    sent: list[tuple[int, float]] = []
    replies: list[tuple[int, float, str]] = []
    wrong_source = 0

    def take(data: bytes, src: Any, t: float) -> None:
        nonlocal wrong_source
        if ipaddress.ip_address(src[0].split("%")[0]) != target_ip:
            wrong_source += 1
            return
        parts = data.split(b" ", 1)
        if len(parts) == 2 and parts[0].isdigit():
            replies.append((int(parts[0]), t, parts[1].decode(errors="replace")))

    def drain() -> None:
        for _ in range(1000):
            try:
                data, src = s.recvfrom(512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP errors surface here
                return
            take(data, src, time.monotonic())

    t0 = time.monotonic()
    end = t0 + a.seconds
    nxt = t0
    seq = 0
    max_sends = int(a.seconds / interval) + 10
    while not stop["now"] and seq < max_sends:
        now = time.monotonic()
        if now >= end:
            break
        if now >= nxt:
            with contextlib.suppress(OSError):  # no route / neighbour failed: the query is lost
                s.sendto(str(seq).encode(), target)
            sent.append((seq, time.monotonic()))
            seq += 1
            nxt += interval
            if nxt < now - 1.0:  # we were stopped: do not burst to catch up
                nxt = now + interval
        try:
            r, _, _ = select.select([s], [], [], max(0.0, min(nxt, end) - time.monotonic()))
        except InterruptedError:
            continue
        if r:
            drain()
    t_end = time.monotonic() + 0.05  # late answers
    while time.monotonic() < t_end:
        drain()
        time.sleep(0.005)
    s.close()
    Path(a.out).write_text(json.dumps({"sent": sent, "replies": replies, "interval_ms": a.interval_ms,
                                       "wrong_source": wrong_source}))
    return 0


def analyse(data: dict[str, Any], old: str, t_fault: float, t_heal: float) -> dict[str, Any]:
    """Failover figures from a client file: ``old`` answered before the fault at ``t_fault`` (monotonic),
    the fault was healed at ``t_heal``. ``outage_ms`` is the longest silence between two answers from
    the last answer before the fault until the heal; ``lost_fault`` the queries sent in that window
    that got no answer; ``first_new_ms`` when another node first answered; ``flips`` how often the
    answering node changed; after the heal, whether the VIP went back to ``old``."""
    replies = sorted((float(t), str(node)) for _seq, t, node in data["replies"])
    sent = [(int(s), float(t)) for s, t in data["sent"]]
    answered = {int(s) for s, _t, _n in data["replies"]}
    before = [r for r in replies if r[0] < t_fault]
    during = [r for r in replies if t_fault <= r[0] < t_heal]
    after = [r for r in replies if r[0] >= t_heal]
    out: dict[str, Any] = {"sent": len(sent), "answered": len(answered),
                           "wrong_source": int(data.get("wrong_source", 0))}
    out["baseline_ok"] = bool(before) and before[-1][1] == old
    ts = ([before[-1][0]] if before else []) + [t for t, _ in during]
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    out["outage_ms"] = max(gaps) * 1000 if during and gaps else None
    if not during:  # no answer at all until the heal
        out["silent_until_heal_ms"] = (t_heal - (before[-1][0] if before else t_fault)) * 1000
    out["lost_fault"] = sum(1 for s, t in sent if t_fault - 0.05 <= t < t_heal and s not in answered)
    new = [r for r in during if r[1] != old]
    out["first_new_ms"] = (new[0][0] - t_fault) * 1000 if new else None
    out["new_node"] = new[0][1] if new else None
    out["flips_during"] = sum(1 for x, y in itertools.pairwise([n for _t, n in during]) if x != y)
    ts2 = ([during[-1][0]] if during else ([before[-1][0]] if before else [])) + [t for t, _ in after]
    gaps2 = [b - a for a, b in itertools.pairwise(ts2)]
    out["heal_outage_ms"] = max(gaps2) * 1000 if gaps2 else None
    out["lost_heal"] = sum(1 for s, t in sent if t >= t_heal and s not in answered and t < sent[-1][1] - 0.1)
    out["final_node"] = after[-1][1] if after else None
    out["flapped_back"] = bool(after) and out["new_node"] is not None and after[-1][1] == old
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m l2lb.lab.traffic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("respond")
    r.add_argument("--name", required=True)
    r.add_argument("--port", type=int, default=5353)
    r.add_argument("--max-seconds", type=float, default=4 * 3600)
    r.add_argument("--max-packets", type=int, default=10_000_000)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--port", type=int, default=5353)
    c.add_argument("--interval-ms", type=float, default=10.0)
    c.add_argument("--seconds", type=float, required=True)
    c.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "client":
        try:
            ipaddress.ip_address(a.target)
        except ValueError:
            p.error(f"--target {a.target!r} is not an IP address")
        if not (0.001 <= a.interval_ms / 1000 <= 10 and 0 < a.seconds <= 3600):
            p.error("--interval-ms must be 1..10000 and --seconds 0..3600")
    return respond(a) if a.cmd == "respond" else client(a)


if __name__ == "__main__":
    sys.exit(main())
