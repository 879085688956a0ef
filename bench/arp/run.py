"""ARP responder benchmark: the Linux kernel vs the l2lb announcer, same veth, same load generator.

    sudo python bench/arp/run.py [--seconds-per-step 1.0] [--vips 10000] [--max-rate 300000] [--generator auto]

Two namespaces ("node" with interface enp0s25, "client") on a lab bridge. Target 198.51.100.50:

1. kernel: the address is configured on the node's interface and the kernel answers;
2. announcer: the address is removed, ``l2lb announcer`` answers for it among ``--vips`` VIPs
   (TEST-NET only: the IPv4 ones from 198.51.100.0/24 and 203.0.113.0/24, the rest from 2001:db8::/64,
   each joining its solicited-node group), per-source limit lifted for the single load source.

The load generator is ``bench/arp/gen`` (Go, "argen"; built once with ``go build`` and cached under
~/.cache/l2lb/argen-<source hash>), run in the client namespace for each step: ARP requests in bursts
with sendmmsg(2) at increasing rates for a fixed time per step, replies received on a second AF_PACKET socket
(BPF: ARP replies and our own outgoing requests, recvmmsg(2)) and matched by the asker's IP (128 rotating
sender addresses, FIFO per sender); latency = kernel timestamp of the reply arriving - kernel timestamp of
the request leaving the client interface (SO_TIMESTAMPNS on both). Without Go the older Python generator
(class Generator, about 100k/s on a shared 2-core VM, send times from user space) is used and the run says
so. It reports the highest rate with 0 loss (stepwise, stopping at the first step with loss or a send rate
below 90 % of the asked one), latency p50/p99/p99.9 at 1000/s, 50k/s and 150k/s and at that highest rate,
the ratio announcer/kernel, and the announcer's RSS. The generator's own send ceiling (send only, nothing
answering) is printed so the figures can be judged: on the lab's veth/bridge every frame crosses the bridge
into the node (and, with the kernel answering, the reply comes back) inside the sender's system call, so
what the sender reaches is a property of the whole lab on this machine, not only of the generator.
Bounded: every step has a frame count and a time limit; the whole run takes about a minute.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from l2lb.core import codec
from l2lb.lab.netns import Host, Topology, entered, list_namespaces, run

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests.support
from tests.support.procs import stop_process

TARGET = "198.51.100.50"
NODE_IP = "198.51.100.2/24"
CLIENT_IP = "198.51.100.3/24"
ETH_P_ARP = 0x0806
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PACKET_IGNORE_OUTGOING = 23
SOL_PACKET = 263
N_SENDERS = 128
RATES = (5_000, 10_000, 20_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000)
LATENCY_AT = (50_000, 150_000)  # besides 1000/s: latency figures in the summary at these rates
GEN_DIR = Path(__file__).resolve().parent / "gen"
CACHE_DIR = Path.home() / ".cache" / "l2lb"
# --pin (default with >= 2 CPUs): the generator on one CPU, the responder process on another, so they do not
# take turns on one CPU (the kernel responder runs in the generator's system calls, i.e. on the generator's CPU)
GEN_CPU = 0
RESPONDER_CPU = 1
PINNING = {"on": False}
BUS_PORT = 6399  # --bus: redis-server inside the node namespace (its own loopback)
BUS_DSN = f"redis://127.0.0.1:{BUS_PORT}"


def pin_prefix(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if PINNING["on"] else []


class Generator:
    """The Python load generator (fallback when Go is missing): about 100k requests/s on a shared 2-core VM."""

    name = "python"

    def __init__(self, client: Host):
        with entered(client.ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            s.bind((client.ifname, ETH_P_ARP))
        s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setblocking(False)
        self.sock = s
        mac = codec.mac_bytes(client.mac)
        self.mac = mac
        tpa = codec.ip_bytes(TARGET)
        self.senders = [codec.ip_bytes(f"198.51.100.{100 + i}") for i in range(N_SENDERS)]
        self.frames = [
            codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=mac, sha=mac, spa=spa, tha=codec.ZERO_MAC,
                            tpa=tpa)
            for spa in self.senders
        ]
        self.index = {spa: i for i, spa in enumerate(self.senders)}

    def drain(self, pending: list[collections.deque[int]], lat: list[int], want_mac: bytes) -> int:
        got = 0
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(128, 64)
            except BlockingIOError:
                return got
            if len(data) < 42 or data[20:22] != b"\x00\x02" or data[22:28] != want_mac:
                continue
            i = self.index.get(data[38:42])
            if i is None or not pending[i]:
                continue
            sent = pending[i].popleft()
            ts = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    ts = sec * 1_000_000_000 + nsec
            lat.append((ts if ts is not None else time.time_ns()) - sent)
            got += 1

    def step(self, rate: int, seconds: float, mac: str) -> dict[str, float]:
        """Send ``rate * seconds`` requests paced in bursts; return sent/received/loss/latency."""
        want_mac = codec.mac_bytes(mac)
        self.drain([collections.deque() for _ in self.senders], [], want_mac)
        total = max(1, int(rate * seconds))
        burst = max(1, min(64, rate // 1000))
        gap = burst / rate
        pending: list[collections.deque[int]] = [collections.deque() for _ in self.senders]
        lat: list[int] = []
        sent = got = 0
        send = self.sock.send
        frames = self.frames
        t0 = time.perf_counter()
        deadline = t0 + seconds * 3 + 2
        while sent < total and time.perf_counter() < deadline:
            due = t0 + (sent // burst) * gap
            now = time.perf_counter()
            if now < due:
                got += self.drain(pending, lat, want_mac)
                left = due - time.perf_counter()
                if left > 0.0002:
                    time.sleep(left - 0.0001)
                continue
            for _ in range(min(burst, total - sent)):
                i = sent % N_SENDERS
                pending[i].append(time.time_ns())
                try:
                    send(frames[i])
                except BlockingIOError:
                    pending[i].pop()
                    continue
                sent += 1
            got += self.drain(pending, lat, want_mac)
        elapsed = time.perf_counter() - t0
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end and got < sent:
            got += self.drain(pending, lat, want_mac)
            time.sleep(0.002)
        lat.sort()
        return {
            "rate": rate, "achieved_rate": round(sent / elapsed) if elapsed > 0 else 0, "sent": sent,
            "received": got, "lost": sent - got,
            "p50_us": round(lat[len(lat) // 2] / 1000, 1) if lat else float("nan"),
            "p99_us": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000, 1) if lat else float("nan"),
            "p999_us": round(lat[min(len(lat) - 1, int(len(lat) * 0.999))] / 1000, 1) if lat else float("nan"),
            "max_us": round(lat[-1] / 1000, 1) if lat else float("nan"),
        }

    def ceiling(self, seconds: float = 0.5) -> int:
        """Frames/s this process can push with nothing else to do (the generator's own limit)."""
        n = 0
        t0 = time.perf_counter()
        f = self.frames[0]
        while time.perf_counter() - t0 < seconds:
            for _ in range(256):
                try:
                    self.sock.send(f)
                    n += 1
                except BlockingIOError:
                    pass
        return int(n / (time.perf_counter() - t0))

    def close(self) -> None:
        self.sock.close()


def cached_build(stem: str, sources: list[Path], argv: Callable[[Path], list[str]], *, what: str, timeout: float,
                 cwd: Path | None = None, env: dict[str, str] | None = None, tail: int = 2000) -> Path | str:
    """Build once per version of ``sources`` into ~/.cache/l2lb/<stem>-<hash>, pruning builds of older versions;
    return the binary, or why there is none (a string starting with ``what``)."""
    h = hashlib.sha256()
    for f in sources:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    out = CACHE_DIR / f"{stem}-{h.hexdigest()[:16]}"
    if out.exists():
        return out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    try:
        r = subprocess.run(argv(tmp), check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{what} failed: {e}"
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"{what} failed: {(r.stderr or r.stdout).strip()[-tail:]}"
    tmp.replace(out)
    for old in CACHE_DIR.glob(f"{stem}-*"):  # builds of older sources
        if old != out and "." not in old.name:
            old.unlink(missing_ok=True)
    return out


def go_binary() -> Path | str:
    """Build bench/arp/gen once per source version; return the binary or why there is none (a string)."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return "go not found (PATH, /usr/local/go/bin)"
    sources = [f for f in sorted(GEN_DIR.glob("*")) if f.suffix in (".go", ".mod", ".sum")]
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    return cached_build("argen", sources, lambda tmp: [go, "build", "-trimpath", "-o", str(tmp), "."],
                        what="go build", timeout=300, cwd=GEN_DIR, env=env)


class GenError(RuntimeError):
    """The Go generator failed (exit status, time-out or unreadable output)."""


class GoGenerator:
    """bench/arp/gen (argen) run in the client namespace, one process per step."""

    name = "go"

    def __init__(self, client: Host, binary: Path, *, target: str = TARGET, sender_base: str = "198.51.100.100",
                 senders: int = N_SENDERS):
        # target/sender_base/senders: bench/compare aims it at a lab VIP with senders outside the lab's pools
        self.client = client
        self.binary = binary
        self.target = target
        self.sender_base = sender_base
        self.senders = senders

    def _run(self, args: list[str], timeout: float) -> dict[str, float]:
        cmd = [*pin_prefix(GEN_CPU), "ip", "netns", "exec", self.client.ns, str(self.binary),
               "-iface", self.client.ifname, "-target", self.target, "-sender-base", self.sender_base, *args]
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GenError(f"argen {' '.join(args)}: no result after {timeout:.0f} s") from None
        if r.returncode != 0:
            raise GenError(f"argen {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[-1000:]}")
        try:
            out = json.loads(r.stdout)
        except json.JSONDecodeError:
            out = None
        if not isinstance(out, dict):
            raise GenError(f"argen {' '.join(args)}: not a JSON object: {r.stdout[:500]!r}")
        return {k: (float("nan") if v is None else v) for k, v in out.items()}

    def step(self, rate: int, seconds: float, mac: str) -> dict[str, float]:
        return self._run(["-want-mac", mac, "-rate", str(rate), "-seconds", str(seconds),
                          "-senders", str(self.senders)],
                         timeout=seconds * 3 + 15)

    def ceiling(self, seconds: float = 0.5) -> int:
        return int(self._run(["-ceiling", "-ceiling-seconds", f"{seconds}s"], timeout=seconds + 15)["achieved_rate"])

    def close(self) -> None:
        pass


Gen = Generator | GoGenerator


def fmt(r: dict[str, float]) -> str:
    return (f"{r['achieved_rate']:>7}/s sent, lost {r['lost']:>6}, p50 {r['p50_us']} us, p99 {r['p99_us']} us, "
            f"p99.9 {r.get('p999_us', float('nan'))} us, max {r.get('max_us', float('nan'))} us")


def lat3(r: dict[str, float]) -> str:
    return f"{r['p50_us']}/{r['p99_us']}/{r['p999_us']} ({r['achieved_rate']}/s, {r['lost']})"


def measure(gen: Gen, mac: str, seconds: float, max_rate: int, label: str, *, rates: tuple[int, ...] = RATES,
            latency_at: tuple[int, ...] = LATENCY_AT) -> dict[str, object]:
    """Latency at 1000/s, then rates stepwise up to the first step with loss (or a short send rate);
    ``rates``/``latency_at``: bench/compare's lab (3 nodes, a Python or Go process on each reading every
    broadcast) tops out far below this bench's two-namespace lab, so it asks for finer steps."""
    low = gen.step(1000, min(seconds, 1.0), mac)
    print(f"  {label}: {1000:>7}/s asked, {fmt(low)}", flush=True)
    best: dict[str, float] | None = None
    steps = []
    stop = ""
    for rate in rates:
        if rate > max_rate:
            break
        r = gen.step(rate, seconds, mac)
        steps.append(r)
        print(f"  {label}: {rate:>7}/s asked, {fmt(r)}", flush=True)
        if r["lost"] > 0:
            stop = f"loss at {rate}/s"
            break
        if r["achieved_rate"] < rate * 0.9:
            stop = f"sender reached only {r['achieved_rate']}/s of {rate}/s"
            break
        best = r
        time.sleep(0.2)
    at: dict[str, dict[str, float]] = {}
    for rate in latency_at:
        if rate > max_rate:
            continue
        done = [r for r in steps if r["rate"] == rate]
        if done:
            at[str(rate)] = done[0]
        else:
            r = at[str(rate)] = gen.step(rate, seconds, mac)
            print(f"  {label}: {rate:>7}/s asked, {fmt(r)} (latency point)", flush=True)
    return {"low": low, "best": best, "steps": steps, "stop": stop, "at": at}


def vip_file(path: Path, n: int) -> None:
    # not 198.51.100.100-227: the generator's sender addresses (a sender using an owned VIP is a conflict)
    v4 = [f"198.51.100.{i}" for i in range(10, 100) if i != 50] + [f"203.0.113.{i}" for i in range(1, 255)]
    vips = [TARGET, *v4[: max(0, n - 1)]]
    i = 0
    while len(vips) < n:
        i += 1
        vips.append(f"2001:db8::1:{i:x}")
    path.write_text(json.dumps({"vips": [{"ip": ip, "epoch": 1} for ip in vips]}))


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(5, "0")


def sweep_stale() -> str:
    """Delete namespaces left by runs that died; return this run's prefix ("barp" + its pid in base 36).

    Runs at the same time (several engineers benchmark on one machine) each get their own namespaces,
    and a run never deletes those of a run still alive.
    """
    for ns in list_namespaces():
        if not ns.startswith("barp"):
            continue
        owner = ns[4:9]
        if ns in ("barpsw", "barpnode", "barpcli"):  # the fixed names of older versions of this script
            alive = False
        elif len(owner) == 5 and all(c in "0123456789abcdefghijklmnopqrstuvwxyz" for c in owner):
            alive = Path(f"/proc/{int(owner, 36)}").exists()
        else:
            continue
        if not alive:
            run(["ip", "netns", "del", ns], check=False)
    return f"barp{_b36(os.getpid())}"


def c_binary() -> Path | str:
    """bench/arp/naive.c built once per source version with the system C compiler; or why not (a string)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (cc/gcc)"
    src = Path(__file__).resolve().parent / "naive.c"
    return cached_build("naive-c", [src], lambda tmp: [cc, "-O2", "-o", str(tmp), str(src)], what="cc",
                        timeout=120, tail=500)


def revision() -> str:
    """The commit the announcer under test was run from, and whether the tree had local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], check=False,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], check=False,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "revision unknown"
    return f"commit {head or 'unknown'}" + (", src/ with uncommitted changes" if dirty else "")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_bench(args: argparse.Namespace, prefix: str, results: dict[str, object]) -> int:
    """Build the lab, measure the kernel then the announcer into results; 0 or an exit status."""
    with Topology(prefix) as topo, tempfile.TemporaryDirectory() as tmp:
        node = topo.add_host("node", ifname="enp0s25", addrs=[NODE_IP])
        client = topo.add_host("cli", addrs=[CLIENT_IP])
        # the lab bridge is a plain switch: no iptables/arptables hooks on bridged frames (when br_netfilter is
        # loaded they cost a few % of every frame, in the sender's system call; same for both responders)
        run(["ip", "netns", "exec", topo.switch, "sysctl", "-qw", "net.bridge.bridge-nf-call-arptables=0",
             "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0"], check=False)
        gen: Gen
        binary: Path | str = "not asked for (--generator python)"
        if args.generator != "python":
            binary = go_binary()
        if isinstance(binary, Path):
            gen = GoGenerator(client, binary)
            print(f"generator: Go, {binary}", flush=True)
        elif args.generator == "go":
            print(f"the Go generator cannot be used: {binary}", file=sys.stderr)
            return 1
        else:
            gen = Generator(client)
            if PINNING["on"]:
                os.sched_setaffinity(0, {GEN_CPU})  # the Python generator runs in this process
            print(f"generator: Python (FALLBACK: {binary}); it tops out near 100k/s, figures above that are "
                  "the generator's", flush=True)
        results["generator"] = gen.name
        helpers: list[subprocess.Popen[bytes]] = []  # --bus: redis-server and the leases stub
        try:
            ceiling = gen.ceiling()
            print(f"generator send ceiling ({gen.name}, send only, nothing answering): {ceiling}/s", flush=True)
            results["generator_ceiling"] = ceiling
            # -- kernel ------------------------------------------------------------------------
            node.exec(["ip", "addr", "add", f"{TARGET}/24", "dev", node.ifname])
            print("kernel answering for", TARGET, flush=True)
            results["kernel"] = measure(gen, node.mac, args.seconds_per_step, args.max_rate, "kernel")
            node.exec(["ip", "addr", "del", f"{TARGET}/24", "dev", node.ifname])
            client.exec(["ip", "neigh", "flush", "all"], check=False)
            # -- the naive Python responder, then the announcer ------------------------------------
            static = Path(tmp) / "vips.json"
            vip_file(static, args.vips)
            responders = {
                "naive": [sys.executable, str(Path(__file__).resolve().parent / "naive.py"), node.ifname, node.mac,
                          TARGET],
                "announcer": [sys.executable, "-m", "l2lb.cli", "announcer", "--node", "bench", "--interfaces",
                              node.ifname, *(["--redis", BUS_DSN] if args.bus else
                                             ["--no-bus", "--static-assignments", str(static)]),
                              "--http-port", "0", "--garp-count", "0", "--reply-rate", "1e9", "--reply-burst", "1e9",
                              "--log-level", "warning"],
            }
            if args.bus:  # production traffic: Redis in the node namespace, leases replaced by leases_stub.py
                for cmd in (["redis-server", "--port", str(BUS_PORT), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"],
                            [sys.executable, str(Path(__file__).resolve().parent / "leases_stub.py"), BUS_DSN, "bench",
                             str(static)]):
                    # on the generator's CPU: in a cluster Redis and leases run on other machines
                    helpers.append(subprocess.Popen([*pin_prefix(GEN_CPU), "ip", "netns", "exec", node.ns, *cmd],
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    time.sleep(0.5)
            naive_c = c_binary()
            if isinstance(naive_c, Path):
                responders = {"naive": responders["naive"], "naive-c": [str(naive_c), node.ifname, node.mac, TARGET],
                              "announcer": responders["announcer"]}
            else:
                print(f"naive-c baseline skipped: {naive_c}", flush=True)
            for name, cmd in responders.items():
                if name.startswith("naive") and args.no_naive:
                    continue
                logf = open(Path(tmp) / f"{name}.log", "wb")  # noqa: SIM115
                proc = subprocess.Popen([*pin_prefix(RESPONDER_CPU), "ip", "netns", "exec", node.ns, *cmd],
                                        stdout=logf, stderr=subprocess.STDOUT)
                try:
                    t0 = time.monotonic()
                    ok = False
                    while time.monotonic() - t0 < 30 and proc.poll() is None:
                        out = client.exec(["arping", "-c", "1", "-w", "1", "-I", client.ifname, TARGET], check=False)
                        if node.mac.upper() in out.stdout:
                            ok = True
                            break
                    if not ok:
                        print(f"{name} did not answer:", (Path(tmp) / f"{name}.log").read_text()[-3000:])
                        return 1
                    what = {"announcer": f"among {args.vips} VIPs ", "naive": "(bench/arp/naive.py) "}.get(
                        name, "(bench/arp/naive.c) ")
                    print(f"{name} answering for {TARGET} {what}(ready after {time.monotonic() - t0:.1f} s)",
                          flush=True)
                    rss_idle = rss_kib(proc.pid)
                    results[name] = measure(gen, node.mac, args.seconds_per_step, args.max_rate, name)
                    results[f"{name}_rss_kib"] = max(rss_idle, rss_kib(proc.pid))
                finally:
                    stop_process(proc, wait=10)
                    logf.close()
                client.exec(["ip", "neigh", "flush", "all"], check=False)
        finally:
            for h in reversed(helpers):
                stop_process(h, wait=10)
            gen.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds-per-step", type=float, default=1.0)
    ap.add_argument("--vips", type=int, default=10_000)
    ap.add_argument("--max-rate", type=int, default=300_000)
    ap.add_argument("--generator", choices=("auto", "go", "python"), default="auto",
                    help="auto: the Go generator (bench/arp/gen) when go can build it, else the Python one")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the generator and the responder to different CPUs (default: pin with >= 2 CPUs)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive responder baselines")
    ap.add_argument("--bus", action="store_true",
                    help="run the announcer as in production: Redis, renewals every 250 ms (bench/arp/leases_stub.py), "
                    "heartbeats with its 10k-VIP serving map every 100 ms; default: --no-bus with a static VIP file")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    if not 1000 <= args.max_rate <= 10_000_000 or not 0.1 <= args.seconds_per_step <= 20:
        ap.error("--max-rate must be 1000..10000000 and --seconds-per-step 0.1..20")
    if os.geteuid() != 0:
        print("bench/arp needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    PINNING["on"] = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    prefix = sweep_stale()
    results: dict[str, object] = {"revision": revision()}
    try:
        rc = run_bench(args, prefix, results)
    except GenError as e:
        print(f"bench/arp: the load generator failed: {e}", file=sys.stderr)
        return 1
    if rc:
        return rc
    k = results["kernel"]
    a = results["announcer"]
    assert isinstance(k, dict) and isinstance(a, dict)
    cols: list[tuple[str, dict[str, Any]]] = [("kernel", k)]
    for extra in ("naive", "naive-c"):
        if isinstance(results.get(extra), dict):
            cols.append((extra, results[extra]))  # type: ignore[arg-type]
    cols.append(("announcer", a))
    best = {n: (r["best"] or {}).get("rate", 0) for n, r in cols}
    kr = best["kernel"]
    results["announcer_mode"] = "bus (Redis, renewals, heartbeats)" if args.bus else "static VIP file, no bus"
    print(f"\n== bench/arp == ({results['revision']}; announcer: {results['announcer_mode']})")
    print(f"generator:            {results['generator']}, send ceiling {results['generator_ceiling']}/s "
          "(send only; rates near it measure the generator and the lab bridge, not the responder)")
    pinned = f"generator on CPU {GEN_CPU}, responder process on CPU {RESPONDER_CPU} (--no-pin to share)"
    print("cpus:                 " + (pinned if PINNING["on"] else "not pinned"))
    print("max rate with 0 loss: " + "   ".join(f"{n} {best[n]}/s" for n, _ in cols)
          + f"   ratio announcer/kernel {best['announcer'] / kr if kr else float('nan'):.2f}")
    print("  stopped by:         " + "; ".join(f"{n} {r['stop'] or 'end of rates'}" for n, r in cols))
    labels = [("1000/s", "low", None)] + [(f"{x // 1000}k/s", "at", str(x)) for x in LATENCY_AT]
    print("latency p50/p99/p99.9 us (sent/s, lost); added p99 = responder p99 - kernel p99 at the same point")
    for name, key, sub in labels:
        vals = {n: (r[key] if sub is None else r[key].get(sub)) for n, r in cols}
        if any(v is None for v in vals.values()):
            continue
        line = f"  @{name:<7}" + "".join(f"  {n} {lat3(v)}" for n, v in vals.items())
        kv = vals["kernel"]
        adds = [f"{n} +{v['p99_us'] - kv['p99_us']:.0f}" for n, v in vals.items() if n != "kernel"]
        print(line + "   added p99: " + ", ".join(adds))
    if any(r["low"]["lost"] or any(x["lost"] for x in r["at"].values()) for _, r in cols):
        print("  (a step with loss: replies are matched FIFO per sender, so after a lost reply the later ones are\n"
              "   paired with earlier requests and its latency is overstated; loss-free steps are exact)")
    goal = 150_000
    for name, r in cols:
        at = r["at"].get(str(goal))
        print(f"goal >= {goal // 1000}k/s with 0 loss, {name}: " + (
            "not measured (--max-rate)" if at is None else
            "met" if at["lost"] == 0 and at["achieved_rate"] >= goal * 0.9 else
            f"NOT met (sent {at['achieved_rate']}/s, lost {at['lost']})"))
    for name, _ in cols[1:]:
        rss = results[f"{name}_rss_kib"]
        assert isinstance(rss, int)
        print(f"{name} RSS" + (f" with {args.vips} VIPs" if name == "announcer" else "") + f": {rss / 1024:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
