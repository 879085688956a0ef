"""Failover of the seed's DNS VIP in the real cluster, as a LAN client sees it.

For each fault: the client namespace (default sysctls) runs :mod:`tests.e2e.dnsprobe` (UDP query
every 10 ms, TCP connect + query every 100 ms) while an observer namespace asks who-has VIP every
10 ms from a raw socket (:class:`l2lb.lab.probe.ArpProber`; a separate namespace, so its ARP
traffic never refreshes the client's neighbour cache). :func:`outage` turns the probe's records into
what the client saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2lb.lab.probe import ArpProber, Timeline
from tests.e2e.cluster import OBSERVER_IP, ClusterError
from tests.support.procs import stop_process

PROBE = Path(__file__).resolve().parent / "dnsprobe.py"


def outage(records: Sequence[Sequence[Any]], fault_at: float) -> dict[str, Any]:
    """What the client saw around ``fault_at`` from ``[sent, answered|None, error]`` records.

    * ``outage_ms``: the longest time without any answer arriving, among the gaps that end after
      the fault (or that are still open at the end: then ``recovered`` is False);
    * ``recovered_ms``: from the fault to the first answer that ends that gap;
    * ``lost``: queries sent from 1 s before the fault on that got no good answer in time;
    * ``errors``: those queries' errors by kind;
    * ``first_outage_ms``: the gap around the first lost query (from the last answer before it was sent
      to the first answer after that; None when nothing was lost or it never ended) -- when a VIP moves,
      the failover itself; ``lost_later``: queries lost after that gap ended (e.g. a Service still
      sending some queries to a dead node's backend until Kubernetes marks it NotReady).
    """
    answers = sorted(r[1] for r in records if r[1] is not None)
    sent_after = [r for r in records if r[0] >= fault_at - 1.0]
    errors: dict[str, int] = {}
    for r in sent_after:
        if r[1] is None:
            errors[str(r[2])] = errors.get(str(r[2]), 0) + 1
    last_sent = max((r[0] for r in records), default=fault_at)
    before = [t for t in answers if t <= fault_at]
    prev = before[-1] if before else None
    best_gap, best_end = 0.0, None
    for t in answers:
        if t <= fault_at:
            continue
        start = prev if prev is not None else fault_at
        if t - start > best_gap:
            best_gap, best_end = t - start, t
        prev = t
    tail_start = prev if prev is not None else fault_at
    open_gap = last_sent - tail_start
    recovered = True
    if open_gap > best_gap and open_gap > 1.5:  # answers stopped and never came back
        best_gap, best_end, recovered = open_gap, None, False
    lost_sent = sorted(r[0] for r in sent_after if r[1] is None)
    first_outage, lost_later = None, 0
    if lost_sent:
        t_lost = lost_sent[0]
        start = max((t for t in answers if t <= t_lost), default=fault_at)
        end = next((t for t in answers if t > t_lost), None)
        if end is not None:
            first_outage = round((end - start) * 1000, 1)
            lost_later = sum(1 for t in lost_sent if t > end)
    return {
        "queries": len(records),
        "answered": len(answers),
        "first_outage_ms": first_outage,
        "lost_later": lost_later,
        "lost": sum(errors.values()),
        "errors": errors,
        "outage_ms": round(best_gap * 1000, 1),
        "recovered": recovered,
        "recovered_ms": None if best_end is None else round((best_end - fault_at) * 1000, 1),
    }


def arp_summary(tl: Timeline, old_mac: str, fault_at: float, *, window_s: float = 0.03,
                end: float | None = None) -> dict[str, Any]:
    """Who answered ARP for the VIP around the fault, from the observer's probes (every 10 ms).

    ``dual_answers``: times two different MACs answered within ``window_s`` of each other (two
    nodes claiming the VIP at once), ``dual_ms`` the time those overlaps span; ``moves``: the
    sequence of MACs that answered (a move back to the old node shows as a third entry);
    ``silent_ms``: the longest time without any ARP answer after the fault (up to ``end``, when the
    probing stopped: a VIP nobody answers for any more counts until then, ``answered_at_end`` False).
    """
    reps = sorted(tl.replies(), key=lambda a: a.t)
    after = [a for a in reps if a.t >= fault_at]
    dual = [(a, b) for a, b in itertools.pairwise(reps) if a.mac != b.mac and b.t - a.t <= window_s
            and b.t >= fault_at - 1]
    before = [a for a in reps if a.t < fault_at]
    moves: list[str] = [before[-1].mac] if before else []
    for a in after:
        if not moves or moves[-1] != a.mac:
            moves.append(a.mac)
    first_new = next((a.t for a in after if a.mac != old_mac), None)
    last_old = max((a.t for a in reps if a.mac == old_mac and a.t <= (first_new or float("inf"))), default=None)
    silent, prev = 0.0, max((a.t for a in reps if a.t <= fault_at), default=fault_at)
    for a in after:
        silent = max(silent, a.t - prev)
        prev = a.t
    answered_at_end = None
    if end is not None and end > fault_at:
        silent = max(silent, end - prev)
        answered_at_end = end - prev < 1.0
    garps = [a.t for a in tl.answers if a.kind == "garp" and a.t >= fault_at and a.mac != old_mac]
    return {
        "probes": tl.sent,
        "first_new_answer_ms": None if first_new is None else round((first_new - fault_at) * 1000, 1),
        "last_old_answer_ms": None if last_old is None else round((last_old - fault_at) * 1000, 1),
        "silent_ms": round(silent * 1000, 1),
        "answered_at_end": answered_at_end,
        "dual_answers": len(dual),
        "dual_ms": round(sum(b.t - a.t for a, b in dual) * 1000, 1),
        "moves": moves,
        "first_garp_ms": round((garps[0] - fault_at) * 1000, 1) if garps else None,
    }


@dataclass
class FaultResult:
    name: str
    what: str
    node: str
    roles: list[str]
    udp: dict[str, Any]
    tcp: dict[str, Any]
    arp: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        def proto(d: dict[str, Any]) -> str:
            rec = f"{d['recovered_ms']:.0f}" if d["recovered_ms"] is not None else "never"
            first = "-" if d.get("first_outage_ms") is None else f"{d['first_outage_ms']:.0f}"
            return (f"outage {d['outage_ms']:8.0f} ms (first {first:>6} ms) lost {d['lost']:5d} "
                    f"(later {d.get('lost_later', 0)}) back at {rec:>6} ms")
        a = self.arp
        return (f"{self.name:<3} {self.what:<36} {self.node:<6} UDP {proto(self.udp)} | TCP {proto(self.tcp)} | "
                f"ARP: new MAC at {a.get('first_new_answer_ms')} ms, no answer for {a.get('silent_ms')} ms, "
                f"dual answers {a.get('dual_answers')}, moves {len(a.get('moves', []))}")


class Measurement:
    """One fault window: DNS probe in the client namespace + ARP observer, both bounded."""

    def __init__(self, *, client_ns: str, observer_ns: str, vip: str, name: str, expect: str,
                 out: Path, max_seconds: float) -> None:
        self.client_ns, self.observer_ns, self.vip = client_ns, observer_ns, vip
        self.name, self.expect, self.out, self.max_seconds = name, expect, out, max_seconds
        self.proc: subprocess.Popen[str] | None = None
        self.arp: ArpProber | None = None
        self.timeline: Timeline | None = None
        self._thread: threading.Thread | None = None
        self.ended: float | None = None  # when the probing stopped (monotonic)

    def start(self) -> None:
        self.out.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.client_ns}", "--", sys.executable, str(PROBE),
             "--server", self.vip, "--name", self.name, "--expect", self.expect,
             "--duration", str(self.max_seconds), "--out", str(self.out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "started":
            raise ClusterError(f"dnsprobe did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.arp = ArpProber(self.observer_ns, "eth0", OBSERVER_IP, self.vip, interval_s=0.01)
        arp = self.arp

        def run_arp() -> None:
            async def go() -> None:
                self.timeline = await arp.run(asyncio.Event(), max_seconds=self.max_seconds,
                                              max_probes=int(self.max_seconds / 0.01) + 10)
            asyncio.run(go())
        self._thread = threading.Thread(target=run_arp, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        assert self.proc is not None and self.arp is not None and self._thread is not None
        self.ended = time.monotonic()
        stop_process(self.proc, wait=15)
        self._thread.join(self.max_seconds + 5)
        self.arp.close()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if not self.out.exists():
            raise ClusterError(f"dnsprobe wrote no result: {err}")
        data: dict[str, Any] = json.loads(self.out.read_text())
        return data


def run_fault(*, name: str, what: str, roles: dict[str, list[str]], client_ns: str, observer_ns: str,
              vip: str, dns_name: str, expect: str, inject: Callable[[], tuple[str, str]],
              settle: Callable[[], None] | None, out_dir: Path, max_seconds: float, min_seconds: float,
              quiet_after_s: float = 3.0) -> FaultResult:
    """Probe for 2 s, inject the fault, keep probing at least ``min_seconds`` (late effects: a
    lease or an assignment that expires later) and until the answers have flowed again for
    ``quiet_after_s`` (at most ``max_seconds`` in all), then ``settle`` (undo the fault).
    ``inject`` picks its node at that moment (the one announcing the VIP can change in between)
    and returns (node name, node MAC)."""
    m = Measurement(client_ns=client_ns, observer_ns=observer_ns, vip=vip, name=dns_name, expect=expect,
                    out=out_dir / f"probe-{name}.json", max_seconds=max_seconds)
    m.start()
    t_start = time.monotonic()
    notes: list[str] = []
    try:
        time.sleep(2.0)
        fault_at = time.monotonic()
        node, old_mac = inject()
        notes.append(f"inject took {(time.monotonic() - fault_at) * 1000:.0f} ms")
        # wait (bounded) for answers to flow again: poll the client with dig would disturb nothing,
        # but the probe itself is the judge; a fixed bounded wait keeps this simple and honest
        deadline = t_start + max_seconds - 1.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if _answers_flowing(client_ns, vip, dns_name, fault_at, quiet_after_s) and \
                    time.monotonic() - fault_at >= min_seconds:
                break
    finally:
        data = m.stop()
    if settle is not None:
        t_undo = time.monotonic()
        settle()
        # after undoing the fault (cable back in): when does a dig get its answer again? (bounded)
        back = None
        while time.monotonic() - t_undo < 120:
            if _dig_ok(client_ns, vip, dns_name):
                back = time.monotonic() - t_undo
                break
            time.sleep(0.2)
        notes.append("after the undo: DNS answered again in "
                     + (f"{back * 1000:.0f} ms" if back is not None else "NOT within 120 s"))
    tl = m.timeline
    arp = arp_summary(tl, old_mac, fault_at, end=m.ended) if tl is not None else {}
    return FaultResult(name=name, what=what, node=node, roles=roles.get(node, []), udp=outage(data["udp"], fault_at),
                       tcp=outage(data["tcp"], fault_at), arp=dict(arp), notes=notes)


_flow: dict[str, float] = {}


def _dig_ok(client_ns: str, vip: str, dns_name: str) -> bool:
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{client_ns}", "--", "dig", f"@{vip}", dns_name,
                           "+short", "+time=1", "+tries=1"], capture_output=True, text=True, timeout=10, check=False)
    return proc.returncode == 0 and proc.stdout.strip() != ""


def _answers_flowing(client_ns: str, vip: str, dns_name: str, fault_at: float, quiet_after_s: float) -> bool:
    """Whether a separate dig (UDP, 1 s) has been answered continuously for ``quiet_after_s``."""
    ok = _dig_ok(client_ns, vip, dns_name)
    now = time.monotonic()
    key = f"{client_ns}/{fault_at}"
    if not ok:
        _flow.pop(key, None)
        return False
    first = _flow.setdefault(key, now)
    return now - first >= quiet_after_s and now - fault_at > quiet_after_s


@contextlib.contextmanager
def bench_lock(path: str | None, *, wait_s: float = 600.0) -> Iterator[str]:
    """Hold the machine's shared benchmark lock (flock) while measuring, when a path is given;
    waits at most ``wait_s`` (then measures anyway). Yields what happened, for the results."""
    held_by_caller = os.environ.get("L2LB_BENCH_LOCK_HELD")
    if held_by_caller:  # e.g. bench/k8s/failover.sh runs the whole test under flock
        yield f"held {held_by_caller} (by the caller, for the whole run)"
        return
    if not path:
        yield "no lock asked (L2LB_BENCH_LOCK unset)"
        return
    import fcntl

    with open(path, "a") as fh:
        t0 = time.monotonic()
        held = False
        while time.monotonic() - t0 < wait_s:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                time.sleep(1.0)
        try:
            waited = time.monotonic() - t0
            yield (f"held {path} (waited {waited:.0f} s)" if held
                   else f"NOT held: {path} busy for {waited:.0f} s, measured without it")
        finally:
            if held:
                fcntl.flock(fh, fcntl.LOCK_UN)
