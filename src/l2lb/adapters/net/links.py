"""Interfaces of this host: name, index, MAC, addresses, link state; and a monitor for changes.

State comes from ``/sys/class/net`` (MAC, flags, operstate, carrier) and an rtnetlink
``RTM_GETADDR`` dump (addresses). :class:`LinkMonitor` listens on an rtnetlink socket subscribed to
``RTMGRP_LINK`` and the address groups, so a link going down is seen at once; if the socket cannot
be opened it polls ``/sys`` every 50 ms instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from l2lb.obs.log import get_logger

__all__ = ["Link", "LinkMonitor", "read_addresses", "read_links", "vips_configured"]

log = get_logger("l2lb.net.links")

SYS_NET = "/sys/class/net"
IFF_UP = 0x1
ARPHRD_ETHER = 1
NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWADDR = 20
RTM_GETADDR = 22
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2
_NLMSG = struct.Struct("=IHHII")
_IFADDR = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    mac: str
    up: bool  # administratively up and carrier present
    oper: str  # operstate as the kernel says it
    addresses: tuple[str, ...] = field(default=())  # "198.51.100.2/24", "2001:db8::2/64"

    @property
    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_addresses() -> dict[int, list[str]]:
    """ifindex -> addresses with prefix length, from an rtnetlink dump (empty on failure)."""
    out: dict[int, list[str]] = {}
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    except OSError as e:
        log.warning("rtnetlink unavailable; addresses unknown", extra={"error": str(e)})
        return out
    try:
        s.settimeout(2.0)
        s.bind((0, 0))
        req = _NLMSG.pack(_NLMSG.size + 8, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + \
            _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        s.send(req)
        done = False
        while not done:
            data = s.recv(65536)
            off = 0
            while off + _NLMSG.size <= len(data):
                ln, typ, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
                if ln < _NLMSG.size:
                    done = True
                    break
                if typ in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                    break
                if typ == RTM_NEWADDR:
                    _parse_addr(data[off + _NLMSG.size:off + ln], out)
                off += (ln + 3) & ~3
    except OSError as e:
        log.warning("address dump failed", extra={"error": str(e)})
    finally:
        s.close()
    return out


def _parse_addr(body: bytes, out: dict[int, list[str]]) -> None:
    if len(body) < _IFADDR.size:
        return
    family, plen, _flags, _scope, index = _IFADDR.unpack_from(body, 0)
    attrs: dict[int, bytes] = {}
    off = _IFADDR.size
    while off + _RTA.size <= len(body):
        alen, atype = _RTA.unpack_from(body, off)
        if alen < _RTA.size:
            break
        attrs[atype] = body[off + _RTA.size:off + alen]
        off += (alen + 3) & ~3
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    want = {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
    if raw is None or want is None or len(raw) != want:
        return
    out.setdefault(index, []).append(f"{ipaddress.ip_address(raw)}/{plen}")


def read_links(allow: re.Pattern[str] | None = None, *, with_addresses: bool = True) -> dict[str, Link]:
    """Ethernet interfaces (not loopback) whose name matches ``allow`` (all when None)."""
    try:
        names = sorted(os.listdir(SYS_NET))
    except OSError:
        return {}
    addrs = read_addresses() if with_addresses else {}
    links: dict[str, Link] = {}
    for name in names:
        if allow is not None and not allow.fullmatch(name):
            continue
        base = f"{SYS_NET}/{name}"
        if _read(f"{base}/type") != str(ARPHRD_ETHER):
            continue
        mac = _read(f"{base}/address") or ""
        idx = _read(f"{base}/ifindex")
        flags = _read(f"{base}/flags")
        oper = _read(f"{base}/operstate") or "unknown"
        if not mac or idx is None or flags is None or mac == "00:00:00:00:00:00":
            continue
        admin_up = bool(int(flags, 16) & IFF_UP)
        carrier = _read(f"{base}/carrier") == "1" if admin_up else False
        up = admin_up and carrier and oper in ("up", "unknown")
        index = int(idx)
        links[name] = Link(name, index, mac, up, oper, tuple(addrs.get(index, ())))
    return links


def vips_configured(links: Iterable[Link], vips: Iterable[str]) -> list[tuple[str, str]]:
    """(vip, interface) pairs where a VIP is configured as an address: the kernel would answer too."""
    want = set(vips)
    out = []
    for link in links:
        for a in link.addresses:
            ip = a.split("/")[0]
            if ip in want:
                out.append((ip, link.name))
    return out


Callback = Callable[[dict[str, Link], dict[str, Link]], None]  # (old, new)


class LinkMonitor:
    """Keeps :attr:`links` current; calls ``on_change(old, new)`` on any difference."""

    def __init__(self, allow: re.Pattern[str] | None, on_change: Callback, *, poll_interval: float = 0.05,
                 refresh_interval: float = 5.0, use_netlink: bool = True):
        self.allow = allow
        self.on_change = on_change
        self.poll_interval = poll_interval
        self.refresh_interval = refresh_interval
        self.use_netlink = use_netlink
        self.links: dict[str, Link] = read_links(allow)
        self.mode = "none"
        self.events = 0

    def refresh(self, *, with_addresses: bool = True) -> bool:
        new = read_links(self.allow, with_addresses=with_addresses)
        if not with_addresses:  # keep the addresses we know; only link state is re-read
            new = {n: Link(k.name, k.index, k.mac, k.up, k.oper,
                           self.links[n].addresses if n in self.links else ())
                   for n, k in new.items()}
        if new == self.links:
            return False
        old, self.links = self.links, new
        try:
            self.on_change(old, new)
        except Exception:
            log.exception("link change handler failed")
        return True

    def _open_netlink(self) -> socket.socket | None:
        if not self.use_netlink:
            return None
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            s.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            s.setblocking(False)
            return s
        except OSError as e:
            log.warning("rtnetlink monitor unavailable; polling /sys instead",
                        extra={"error": str(e), "interval_s": self.poll_interval})
            return None

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        nl = self._open_netlink()
        wake = asyncio.Event()
        if nl is not None:
            self.mode = "rtnetlink"

            def readable() -> None:
                with contextlib.suppress(OSError):
                    while nl.recv(65536):
                        self.events += 1
                wake.set()

            loop.add_reader(nl.fileno(), readable)
        else:
            self.mode = "poll"
        self.refresh()
        next_full = loop.time() + self.refresh_interval
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                timeout = self.poll_interval if nl is None else max(0.0, next_full - loop.time())
                wake_task = asyncio.ensure_future(wake.wait())
                await asyncio.wait({wake_task, stop_task}, timeout=timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
                wake_task.cancel()
                if stop.is_set():
                    break
                full = wake.is_set() or loop.time() >= next_full
                wake.clear()
                self.refresh(with_addresses=full)
                if full:
                    next_full = loop.time() + self.refresh_interval
        finally:
            stop_task.cancel()
            if nl is not None:
                loop.remove_reader(nl.fileno())
                nl.close()
