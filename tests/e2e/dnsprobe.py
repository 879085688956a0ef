"""A LAN client's DNS traffic, timed: one UDP query every ``--udp-interval`` s (a new socket, so a new
source port, each time, as a stub resolver does) and one TCP connect + query every
``--tcp-interval`` s, each with ``--timeout`` s to be answered, for at most ``--duration`` s (or
until SIGTERM). Run it inside the client's network namespace; it writes one JSON document:

    {"udp": [[sent, answered_or_null, error], ...], "tcp": [[started, answered_or_null, error], ...]}

Times are CLOCK_MONOTONIC seconds (the same clock in every namespace, so the caller can compare
them with its fault times). An answer counts only if it has our id, NOERROR and the expected A record.
Standalone on purpose (python3 + stdlib): it runs in any namespace without the project installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time


def query(name: str, qid: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def answer_ok(data: bytes, qid: int, expect: bytes) -> str | None:
    """None when ``data`` answers query ``qid`` with the A record ``expect``; else what is wrong."""
    if len(data) < 12:
        return "short"
    rid, flags, _qd, an = struct.unpack("!HHHH", data[:8])
    if rid != qid:
        return "id"
    if flags & 0x000F:
        return f"rcode{flags & 0xF}"
    if an == 0:
        return "noanswer"
    return None if expect in data[12:] else "wrong-answer"


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.expect = socket.inet_aton(args.expect)
        self.udp: list[list[object]] = []
        self.tcp: list[list[object]] = []
        self.stop = asyncio.Event()
        self._qid = os.getpid() & 0xFFFF

    def next_id(self) -> int:
        self._qid = (self._qid + 1) & 0xFFFF
        return self._qid

    async def one_udp(self) -> None:
        loop = asyncio.get_running_loop()
        qid = self.next_id()
        rec: list[object] = [time.monotonic(), None, None]
        self.udp.append(rec)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.connect((self.a.server, 53))
            await loop.sock_sendall(s, query(self.a.name, qid))
            deadline = rec[0] + self.a.timeout  # type: ignore[operator]
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    rec[2] = "timeout"
                    return
                data = await asyncio.wait_for(loop.sock_recv(s, 2048), left)
                err = answer_ok(data, qid, self.expect)
                if err is None:
                    rec[1] = time.monotonic()
                    return
                if err != "id":
                    rec[2] = err
                    return
        except TimeoutError:
            rec[2] = "timeout"
        except OSError as e:
            rec[2] = type(e).__name__
        finally:
            s.close()

    async def one_tcp(self) -> None:
        qid = self.next_id()
        rec: list[object] = [time.monotonic(), None, None]
        self.tcp.append(rec)
        writer = None
        try:
            async with asyncio.timeout(self.a.timeout):
                reader, writer = await asyncio.open_connection(self.a.server, 53)
                q = query(self.a.name, qid)
                writer.write(struct.pack("!H", len(q)) + q)
                await writer.drain()
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                err = answer_ok(await reader.readexactly(n), qid, self.expect)
                if err is None:
                    rec[1] = time.monotonic()
                else:
                    rec[2] = err
        except TimeoutError:
            rec[2] = "timeout"
        except (OSError, asyncio.IncompleteReadError) as e:
            rec[2] = type(e).__name__
        finally:
            if writer is not None:
                writer.close()

    async def ticker(self, interval: float, make: object) -> None:
        tasks: set[asyncio.Task[None]] = set()
        nxt = time.monotonic()
        end = nxt + self.a.duration
        while not self.stop.is_set() and time.monotonic() < end:
            t = asyncio.create_task(make())  # type: ignore[operator]
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                except TimeoutError:
                    pass
            else:
                nxt = time.monotonic()  # behind schedule (a slow machine): do not burst
        if tasks:
            await asyncio.wait(tasks, timeout=self.a.timeout + 1)

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        print("started", flush=True)
        await asyncio.gather(self.ticker(self.a.udp_interval, self.one_udp),
                             self.ticker(self.a.tcp_interval, self.one_tcp))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--expect", required=True, help="the A record the answer must carry")
    p.add_argument("--udp-interval", type=float, default=0.01)
    p.add_argument("--tcp-interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if not 0 < a.duration <= 900 or a.udp_interval < 0.001 or a.tcp_interval < 0.01:
        p.error("bounded runs only: 0 < duration <= 900 s, udp-interval >= 1 ms, tcp-interval >= 10 ms")
    probe = Probe(a)
    asyncio.run(probe.main())
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"udp": probe.udp, "tcp": probe.tcp}, f)
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
