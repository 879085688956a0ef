"""``l2lb announcer``: answers ARP / NDP for the VIPs assigned to this node, from raw sockets.

A shell around :class:`l2lb.core.announcer_machine.AnnouncerMachine`, which takes every decision (what to
answer, until when, GARPs, conflicts, heartbeats, grace; its docstring has the rules). This module only
moves things in and out:

* in: frames from one AF_PACKET socket per allowed interface (``--interfaces``; PACKET_MMAP rings, uvloop
  ``add_reader``), ``NodeAssignments``/``NodeRenewal`` from the assignments stream (own consumer group
  ``announcer:<node>``), link changes from the link monitor, the Node's labels (``--kubeconfig``), the
  outcome of each publish, and a timer (``Tick``) whenever the machine asks for one;
* out: replies and gratuitous frames on the sockets, multicast group changes, heartbeats and conflicts on
  the heartbeats stream, snapshot requests, log lines and metrics.

Test/dev input without the leases service: ``--static-assignments FILE`` with
``{"vips": [{"ip": "198.51.100.10", "epoch": 1, "interfaces": ["eth0"]}], "ttl_ms": 5000}``, read at
start and on SIGHUP (``ttl_ms`` counts from each load; omitted = no expiry). It uses term 0, so any
message from a leases leader supersedes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import secrets
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from l2lb.adapters.bus.client import Bus, BusError, Consumer, bus_from_args
from l2lb.adapters.http.server import StatusServer
from l2lb.adapters.net.links import Link, LinkMonitor, read_links, vips_configured
from l2lb.adapters.net.peerport import PeerPort
from l2lb.adapters.net.rawsock import RawPort, RawSocketError
from l2lb.core import codec
from l2lb.core.announcer_machine import (
    AnnouncerMachine,
    Assignments,
    Command,
    Count,
    Event,
    Gauge,
    LabelsChanged,
    LinksChanged,
    LinkState,
    Log,
    PeerFrameReceived,
    Published,
    PublishHeartbeat,
    Renewal,
    ReportConflict,
    RequestSnapshot,
    Resync,
    SendFrames,
    SendPeerFrame,
    SetMulticast,
    StartAnswering,
    Stop,
    Tick,
)
from l2lb.core.messages import HeartbeatEncoder, Message, NodeAssignments, NodeRenewal
from l2lb.obs.log import get_logger
from l2lb.runtime.config import parse_with_config
from l2lb.runtime.memory import pin_mmap_threshold
from l2lb.runtime.run import run_service
from services.announcer.config import (
    build_parser,
    interface_pattern,
    load_static,
    machine_config,
    read_peer_key,
    validate,
)
from services.announcer.metrics import AnnouncerMetrics

if TYPE_CHECKING:
    from l2lb.adapters.kube.client import KubeClient

__all__ = ["AnnouncerService", "build_parser", "main"]

log = get_logger("l2lb.announcer")



class AnnouncerService:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.node: str = args.node
        self.allow = interface_pattern(args.interfaces)
        self.instance = secrets.token_hex(6)
        self.machine = AnnouncerMachine(machine_config(args, self.instance, read_peer_key(args)), time.monotonic())
        self.ports: dict[str, RawPort] = {}
        self.peer_ports: dict[str, PeerPort] = {}  # LAN peer heartbeats (unless --no-peers)
        self.port_errors: dict[str, str] = {}
        self.bus: Bus | None = None
        self.consumer: Consumer | None = None  # the assignments stream's (its reads feed Tick.reads_ok)
        self.kube_labels: dict[str, str] = {}
        self.static_seq = 0
        self.last_static_error = ""
        self._wake = asyncio.Event()  # the machine wants a Tick sooner than planned
        self._planned = 0.0  # monotonic time of the Tick the timer waits for
        self._outbox: asyncio.Queue[PublishHeartbeat | RequestSnapshot | None] = asyncio.Queue()
        self._encode_hb = HeartbeatEncoder()
        self.metrics = AnnouncerMetrics()
        self._retired_send_errors = 0  # of sockets closed since start (link flaps)
        self.monitor = LinkMonitor(self.allow, self._on_links, poll_interval=args.link_poll_ms / 1000.0,
                                   use_netlink=not args.no_netlink)
        self.server = StatusServer("announcer", args.http_host, args.http_port, token_file=args.http_token_file)
        self.server.add_ready_check("interfaces", self._ready_ifaces)
        self.server.add_status("announcer", self.status)

    # -- feeding the machine and carrying out its commands ---------------------------------------------
    def feed(self, ev: Event) -> None:
        self.carry(self.machine.feed(ev))
        self._wake_if_sooner()

    def _wake_if_sooner(self) -> None:
        """Wake the timer when the machine now wants its Tick before the one the timer waits for (a GARP round,
        a heartbeat at once). Routine events (peer frames, renewals, publish outcomes) leave it asleep: at rest
        one wakeup per peer interval does the Tick, the heartbeat and the peer frame."""
        if self._wake.is_set():
            return
        nxt = self.machine.next_wakeup(time.monotonic())
        if nxt is not None and nxt < self._planned:
            self._wake.set()

    def carry(self, cmds: Iterable[Command]) -> None:
        for c in cmds:
            if isinstance(c, SendFrames):
                port = self.ports.get(c.iface)
                if port is not None:
                    for frame in c.frames:
                        port.send(frame)
            elif isinstance(c, SendPeerFrame):
                pp = self.peer_ports.get(c.iface)
                if pp is not None:
                    pp.send(c.frame)
            elif isinstance(c, Count | Gauge):
                self.metrics.fact(c)
            elif isinstance(c, Log):
                getattr(log, c.level)(c.message, extra=dict(c.fields))
            elif isinstance(c, SetMulticast):
                if c.iface in self.ports:
                    self.ports[c.iface].set_multicast(set(c.macs))
            elif isinstance(c, StartAnswering):
                self._check_kernel_owned([ip for ip, _ in c.vips])
                gc.freeze()  # the VIP set is long-lived: keep it out of the cyclic GC's full collections
            elif isinstance(c, ReportConflict):
                m = c.conflict
                log.warning("another MAC claims a VIP we announce; defended",
                            extra={"ip": m.ip, "interface": m.interface, "their_mac": m.their_mac,
                                   "our_mac": m.our_mac})
            elif isinstance(c, PublishHeartbeat | RequestSnapshot):
                self._outbox.put_nowait(c)
            # StopAnswering: nothing to do here (the machine no longer answers; logged with its cause)

    # -- frames (hot path) -----------------------------------------------------------------------------
    def _on_frames(self, port: RawPort, frames: list[bytes]) -> None:
        # one clock read per batch (a batch of up to 256 frames is handled within a millisecond)
        replies, cmds = self.machine.on_frames(port.ifname, frames, time.monotonic())
        if replies:
            port.send_many(replies)
        if cmds:
            self.carry(cmds)
            self._wake_if_sooner()

    # -- interfaces: sockets follow the links; the machine hears which ones answer -----------------------
    def _on_links(self, old: dict[str, Link], new: dict[str, Link]) -> None:
        for name in list(self.ports):
            if name not in new:
                log.warning("interface disappeared", extra={"interface": name})
                self._close_port(name)
        for name, link in new.items():
            if name in self.ports and self.ports[name].ifindex != link.index:
                log.warning("interface was re-created: reopening its socket", extra={"interface": name})
                self._close_port(name)
            if not link.up:
                # A packet socket of an interface that goes down (or is bound while down) gets ENETDOWN;
                # libuv (uvloop) then stops watching its fd for good and no frame is read after the link
                # comes back. Close it now, open a fresh one when the link is up again.
                self._close_port(name)
            elif name not in self.ports:
                self._open_port(link)
        self.feed(LinksChanged(tuple(LinkState(k.name, k.index, k.mac, k.up, k.name in self.ports, k.addresses,
                                               k.oper) for k in new.values()), time.monotonic()))

    def _open_port(self, link: Link) -> None:
        try:
            port = RawPort(link.name, rcvbuf=self.args.rcvbuf, ring=not self.args.no_packet_ring)
        except RawSocketError as e:
            if self.port_errors.get(link.name) != str(e):
                log.error("cannot open raw socket", extra={"interface": link.name, "error": str(e)})
            self.port_errors[link.name] = str(e)
            return
        self.port_errors.pop(link.name, None)
        self.ports[link.name] = port
        port.start(asyncio.get_running_loop(), self._on_frames)
        log.info("listening", extra={"interface": link.name, "ifindex": port.ifindex, "mac": link.mac,
                                     "rcvbuf": port.rcvbuf, "io": port.mode})
        if not self.args.no_peers:
            try:
                peer = PeerPort(link.name)
            except RawSocketError as e:  # ARP/NDP work without it; only the LAN evidence is missing
                log.error("cannot open the peer heartbeat socket", extra={"interface": link.name, "error": str(e)})
                return
            self.peer_ports[link.name] = peer
            peer.start(asyncio.get_running_loop(), self._on_peer_frame)

    def _on_peer_frame(self, port: PeerPort, frame: bytes, mono: float, wall: float) -> None:
        self.feed(PeerFrameReceived(port.ifname, frame, mono, wall))

    def _close_port(self, name: str) -> None:
        port = self.ports.pop(name, None)
        if port is not None:
            self._retired_send_errors += port.send_errors  # the metrics are cumulative
            port.close()
        peer = self.peer_ports.pop(name, None)
        if peer is not None:
            peer.close()

    def _check_kernel_owned(self, ips: list[str]) -> None:
        for ip, ifname in vips_configured(read_links(None).values(), ips):
            log.warning(
                "VIP is configured as an address on this host: the kernel answers ARP/NDP for it too "
                "(remove it; with kube-proxy IPVS set strictARP so kube-ipvs0 does not answer)",
                extra={"ip": ip, "interface": ifname},
            )

    # -- the bus -----------------------------------------------------------------------------------------
    async def on_message(self, msg: Message, eid: str) -> None:
        if isinstance(msg, NodeAssignments):
            self.feed(Assignments(msg, time.monotonic(), time.time(), eid))
        elif isinstance(msg, NodeRenewal):
            self.feed(Renewal(msg, time.monotonic(), time.time(), eid))

    async def on_resync(self, reason: str) -> None:
        self.feed(Resync(reason, time.monotonic()))

    async def publish(self, cmd: PublishHeartbeat) -> Published:
        """Carry out a PublishHeartbeat: its conflicts in order (until one fails), then the heartbeat."""
        bus = self.bus
        if bus is None:
            return Published(False, time.monotonic(), error="no bus")
        eid, sent = "", 0
        for c in cmd.conflicts:
            try:
                eid = await bus.publish(bus.keys.heartbeats, c)
            except BusError:
                break
            sent += 1
        try:
            eid = await bus.publish_raw(bus.keys.heartbeats, self._encode_hb(cmd.heartbeat))
        except BusError as e:
            return Published(False, time.monotonic(), eid, sent, str(e))
        return Published(True, time.monotonic(), eid, sent)

    async def _publisher(self) -> None:
        while (cmd := await self._outbox.get()) is not None:
            if isinstance(cmd, PublishHeartbeat):
                self.feed(await self.publish(cmd))
            elif self.bus is not None:
                with contextlib.suppress(BusError):
                    await self.bus.request_snapshot("assignments", f"announcer:{self.node}", cmd.reason)

    def reload_static(self) -> None:
        path = self.args.static_assignments
        self.static_seq += 1
        try:
            msg = load_static(path, self.node, self.static_seq, time.time())
        except ValueError as e:
            self.last_static_error = str(e)
            log.error("static assignments not loaded; keeping the current set", extra={"error": str(e)})
            return
        self.last_static_error = ""
        self.feed(Assignments(msg, time.monotonic(), time.time(), source=f"file:{path}"))

    # -- the timer ---------------------------------------------------------------------------------------
    async def _drive(self, stop: asyncio.Event) -> None:
        next_metrics = 0.0
        while not stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            reads_ok = self.consumer is None or self.consumer.reads_ok(now)
            self.carry(self.machine.feed(Tick(now, time.time(), self.bus is not None and self.bus.readiness()[0],
                                              reads_ok)))
            if now >= next_metrics:
                self.sync_metrics()
                next_metrics = now + 1.0
            nxt = self.machine.next_wakeup(now)
            now = time.monotonic()
            self._planned = now + (1.0 if nxt is None else min(1.0, max(0.0, nxt - now)))
            if self._planned <= now:
                await asyncio.sleep(0)  # due already: let the other tasks run first, as a 0-s timeout did
                continue
            # asyncio.timeout, not wait_for: no task per wait (wait_for wraps the wait in one)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._planned - now):
                    await self._wake.wait()

    def sync_metrics(self) -> None:
        drops = 0
        for port in self.ports.values():
            with contextlib.suppress(OSError):
                drops += port.kernel_stats()[1]
        self.metrics.sync(self.machine, time.monotonic(), drops,
                          self._retired_send_errors + sum(p.send_errors for p in self.ports.values()))

    # -- readiness / status ----------------------------------------------------------------------------
    def _ready_ifaces(self) -> tuple[bool, str]:
        answering = self.machine.answering_interfaces
        if answering:
            return True, f"answering on {', '.join(sorted(answering))}"
        if self.port_errors:
            return False, "; ".join(f"{k}: {v}" for k, v in sorted(self.port_errors.items()))
        return False, f"no interface matching {self.allow.pattern!r} is up"

    def status(self) -> dict[str, Any]:
        st = self.machine.status(time.monotonic())
        answering = self.machine.answering_interfaces
        st["interfaces"] = [
            {
                "name": link.name, "mac": link.mac, "up": link.up, "oper": link.oper,
                "addresses": list(link.addresses), "socket": link.name in self.ports,
                "io": self.ports[link.name].mode if link.name in self.ports else None,
                "answering": link.name in answering,
                "multicast_groups": sorted(codec.mac_text(m) for m in self.ports[link.name].groups)
                if link.name in self.ports else [],
                "error": self.port_errors.get(link.name),
            }
            for link in self.monitor.links.values()
        ]
        st["link_monitor"] = self.monitor.mode
        st["bus"] = "disabled" if self.bus is None else self.bus.readiness()[1]
        if self.args.static_assignments:
            st["static_assignments"] = {"file": self.args.static_assignments, "loads": self.static_seq,
                                        "error": self.last_static_error or None}
        return st

    # -- the Node's labels (optional) ------------------------------------------------------------------
    async def _kube_labels(self, stop: asyncio.Event) -> None:
        # imported here: the Kubernetes client costs ~40 MiB of RSS and is optional for the announcer
        from l2lb.adapters.kube.client import RESOURCES, KubeError, client_from_args

        client: KubeClient | None = None
        try:
            while not stop.is_set():
                try:
                    if client is None:
                        client = await client_from_args(self.args, user_agent="l2lb-announcer")
                    node = await client.get(RESOURCES["nodes"], self.node)
                    labels = node.get("metadata", {}).get("labels") or {}
                    new = {str(k): str(v) for k, v in labels.items()}
                    if new != self.kube_labels:
                        self.kube_labels = new
                        self.feed(LabelsChanged(new, time.monotonic()))
                except (TimeoutError, KubeError, OSError) as e:
                    log.warning("cannot read this node's labels from Kubernetes; keeping the last ones",
                                extra={"node": self.node, "error": str(e)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=60.0)
        finally:
            if client is not None:
                await client.close()

    # -- run -------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self.server.start()
        except OSError as e:
            log.error("cannot serve the status API (another process on the port? use --http-port)",
                      extra={"addr": f"{self.args.http_host}:{self.args.http_port}", "error": str(e)})
            raise SystemExit(1) from None
        self._on_links({}, self.monitor.links)
        if not self.monitor.links:
            log.warning("no interface matches --interfaces", extra={"pattern": self.allow.pattern})
        if self.args.static_assignments:
            self.reload_static()
            loop.add_signal_handler(signal.SIGHUP, self.reload_static)
        tasks = [
            asyncio.create_task(self.monitor.run(stop), name="links"),
            asyncio.create_task(self._drive(stop), name="timer"),
            asyncio.create_task(self._publisher(), name="publisher"),
        ]
        if not self.args.no_bus:
            try:
                self.bus = await bus_from_args(self.args, client_name=f"l2lb-announcer-{self.node}")
            except (BusError, ValueError) as e:  # bad DSN, refused credentials (unreachable is not an error)
                log.error("cannot use the Redis bus", extra={"error": str(e)})
                await self.server.stop()
                raise SystemExit(2) from None
            self.server.add_ready_check("bus", self.bus.readiness)
            consumer = self.bus.consumer(self.bus.keys.assignments, f"announcer:{self.node}", self.instance,
                                         self.on_message, on_resync=self.on_resync, block_ms=500)
            self.consumer = consumer
            tasks.append(asyncio.create_task(consumer.run(stop), name="assignments"))
        if self.args.kubeconfig:
            tasks.append(asyncio.create_task(self._kube_labels(stop), name="kube-labels"))
        if self.machine.peers is not None and self.machine.config.peer_key is None:
            log.warning("peer heartbeats are sent and accepted WITHOUT authentication (no --peer-key-file or "
                        "L2LB_PEER_KEY): anyone on the LAN could fake a peer; lab/dev only")
        self.metrics.unsigned(self.machine.peers is not None and self.machine.config.peer_key is None)
        log.info("announcer running", extra={"node": self.node, "instance": self.instance,
                                             "interfaces": sorted(self.ports), "bus": not self.args.no_bus})
        try:
            await stop.wait()
        finally:
            log.info("stopping: no longer answering, telling leases and the peers to hand over")
            last = self.machine.feed(Stop(time.monotonic(), time.time()))
            self.carry(c for c in last if isinstance(c, SendPeerFrame))  # "stopping" to the peers first
            for name in list(self.ports):
                self._close_port(name)
            self._outbox.put_nowait(None)
            self._wake.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(t, timeout=3.0)
            for c in last:
                if isinstance(c, SendPeerFrame):
                    continue
                if isinstance(c, PublishHeartbeat):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.publish(c), timeout=1.0)
                else:
                    self.carry((c,))
            if self.bus is not None:
                await self.bus.close()
            await self.server.stop()


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parse_with_config(parser, argv, "announcer")
    validate(parser, args)

    async def _main(stop: asyncio.Event) -> None:
        # the hot path allocates short-lived objects only: collect young generations less often
        gc.set_threshold(20_000, 20, 20)
        pin_mmap_threshold()  # large heartbeat buffers go back to the system (see l2lb.runtime.memory)
        await AnnouncerService(args).run(stop)

    return run_service("announcer", _main, log_level=args.log_level, log_format=args.log_format)
