"""Real traffic for bench/compare: a UDP responder per node and a UDP client that queries every 10 ms.

    udp.py respond --name node-1 [--port 5353] [--max-seconds 14400]
    udp.py client --target 198.51.100.153 [--port 5353] [--interval-ms 10] --seconds 60 --out FILE

The responder answers each datagram with ``<payload> <node name>`` from whatever local address the
query was sent to (the VIP lives on a dummy device of every node, as kube-proxy's IPVS mode puts it
on kube-ipvs0): it stands for the Service's backend behind kube-proxy on that node. The client sends
``<seq>`` every ``--interval-ms`` and records, on CLOCK_MONOTONIC (the same clock in every process
of the machine), when each query left and when each answer came back from which node; it stops after
``--seconds`` or on SIGTERM and writes ``{"sent": [[seq, t], ...], "replies": [[seq, t, node], ...]}``.
Both loops are bounded in time and count.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import sys
import time
from pathlib import Path


def respond(a: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", a.port))
    name = a.name.encode()
    deadline = time.monotonic() + a.max_seconds
    n = 0
    while time.monotonic() < deadline and n < a.max_packets:
        r, _, _ = select.select([s], [], [], 1.0)
        if not r:
            continue
        try:
            data, addr = s.recvfrom(512)
            # the node's own link may be down (a fault being measured): the answer is lost, as it would be
            s.sendto(data[:64] + b" " + name, addr)
        except OSError:
            continue
        n += 1
    return 0


def client(a: argparse.Namespace) -> int:
    stop = {"now": False}

    def on_term(_sig: int, _frm: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    target = (a.target, a.port)
    interval = a.interval_ms / 1000.0
    sent: list[tuple[int, float]] = []
    replies: list[tuple[int, float, str]] = []
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
            try:
                s.sendto(str(seq).encode(), target)
                sent.append((seq, time.monotonic()))
            except OSError:  # no route / neighbour failed: the query is lost, as for any client
                sent.append((seq, time.monotonic()))
            seq += 1
            nxt += interval
            if nxt < now - 1.0:  # we were stopped: do not burst to catch up
                nxt = now + interval
        timeout = max(0.0, min(nxt, end) - time.monotonic())
        try:
            r, _, _ = select.select([s], [], [], timeout)
        except InterruptedError:
            continue
        if r:
            while True:
                try:
                    data = s.recv(512)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ICMP errors surface here
                    break
                t = time.monotonic()
                parts = data.split(b" ", 1)
                try:
                    replies.append((int(parts[0]), t, parts[1].decode(errors="replace") if len(parts) > 1 else "?"))
                except ValueError:
                    continue
    # late answers
    t_end = time.monotonic() + 0.05
    while time.monotonic() < t_end:
        try:
            data = s.recv(512)
        except (BlockingIOError, OSError):
            time.sleep(0.005)
            continue
        parts = data.split(b" ", 1)
        if len(parts) == 2 and parts[0].isdigit():
            replies.append((int(parts[0]), time.monotonic(), parts[1].decode(errors="replace")))
    Path(a.out).write_text(json.dumps({"sent": sent, "replies": replies, "interval_ms": a.interval_ms}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    if a.cmd == "client" and not (0.001 <= a.interval_ms / 1000 <= 10 and 0 < a.seconds <= 3600):
        p.error("--interval-ms must be 1..10000 and --seconds 0..3600")
    return respond(a) if a.cmd == "respond" else client(a)


if __name__ == "__main__":
    sys.exit(main())
