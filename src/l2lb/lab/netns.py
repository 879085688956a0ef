"""Network namespaces as lab "nodes" and test hosts: create, wire, enter, clean up.

Used by ``l2lb lab`` and by the test fixtures. Every name this module creates starts with the
given prefix so a crashed run can be swept (:func:`sweep`). Addresses used in namespaces must be
TEST-NET (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); :func:`check_testnet` enforces it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
TESTNETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    pass


def check_testnet(addr: str) -> None:
    """Refuse any address outside the documentation ranges (traffic safety rule)."""
    ip = ipaddress.ip_interface(addr).ip
    if not any(ip in n for n in TESTNETS if n.version == ip.version):
        raise NetnsError(f"{addr} is not a TEST-NET address; lab and tests may only use "
                         "198.51.100.0/24, 203.0.113.0/24 or 2001:db8::/32")


def have_privileges() -> tuple[bool, str]:
    """Whether this process can create namespaces, with a message saying what to do if not."""
    if shutil.which("ip") is None:
        return False, "the 'ip' command is missing: install iproute2 (apt-get install iproute2)"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root or CAP_NET_ADMIN+CAP_SYS_ADMIN: run with sudo"
    return True, "ok"


def run(args: Sequence[str], *, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ns_exec(ns: str, args: Sequence[str], *, check: bool = True, timeout: float = 20.0
            ) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *args], check=check, timeout=timeout)


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Switch the *calling thread* into namespace ``ns`` for the block (sockets made inside stay there)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({ns}) failed: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NetnsError(f"setns(back) failed: {os.strerror(err)}")
    finally:
        os.close(own)
        os.close(target)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep(prefix: str) -> list[str]:
    """Delete every namespace and host-side link whose name starts with ``prefix``."""
    gone = []
    for ns in list_namespaces():
        if ns.startswith(prefix):
            run(["ip", "netns", "del", ns], check=False)
            gone.append(ns)
    links = run(["ip", "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix):
                run(["ip", "link", "del", name], check=False)
                gone.append(name)
    return gone


@dataclass
class Host:
    """One namespace with one interface attached to the lab bridge."""

    ns: str
    ifname: str  # name inside the namespace
    peer: str  # host-side name (bridge port)
    mac: str
    addrs: list[str] = field(default_factory=list)

    def exec(self, args: Sequence[str], *, check: bool = True, timeout: float = 20.0
             ) -> subprocess.CompletedProcess[str]:
        return ns_exec(self.ns, args, check=check, timeout=timeout)

    def link(self, up: bool) -> None:
        self.exec(["ip", "link", "set", self.ifname, "up" if up else "down"])


class Topology:
    """A bridge in its own namespace ("switch") with hosts hanging off it by veth pairs.

    The bridge lives in a namespace too, so the root namespace is never touched beyond the
    namespace files themselves.
    """

    def __init__(self, prefix: str):
        if len(prefix) > 10:
            raise NetnsError("prefix must be at most 10 characters (interface names are limited to 15)")
        self.prefix = prefix
        self.switch = f"{prefix}sw"
        self.hosts: dict[str, Host] = {}
        self._made_switch = False

    def _ensure_switch(self) -> None:
        if self._made_switch:
            return
        run(["ip", "netns", "add", self.switch])
        ns_exec(self.switch, ["ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
        ns_exec(self.switch, ["ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"], check=False)
        ns_exec(self.switch, ["ip", "link", "set", "br0", "up"])
        ns_exec(self.switch, ["ip", "link", "set", "lo", "up"])
        self._made_switch = True

    def add_host(self, name: str, *, ifname: str = "eth0", addrs: Sequence[str] = (),
                 mac: str | None = None, arp_accept: bool = True) -> Host:
        """Add a namespace ``<prefix><name>`` wired to the bridge.

        ``arp_accept=True`` (the default, kept for the wire tests that watch a gratuitous ARP make or
        move a neighbour entry) sets net.ipv4.conf.{all,<ifname>}.arp_accept=1; ``False`` leaves the
        kernel's defaults (arp_accept=0), as on a LAN client nobody tuned: ``l2lb lab`` and
        ``bench/compare`` build their hosts that way.
        """
        for a in addrs:
            check_testnet(a)
        self._ensure_switch()
        ns = f"{self.prefix}{name}"
        idx = len(self.hosts) + 1
        peer = f"{self.prefix}p{idx}"
        tmp = f"{self.prefix}t{idx}"
        run(["ip", "netns", "add", ns])
        host = Host(ns=ns, ifname=ifname, peer=peer, mac="", addrs=list(addrs))
        self.hosts[name] = host
        # create the pair inside the switch namespace, then move one end into the host namespace
        ns_exec(self.switch, ["ip", "link", "add", peer, "type", "veth", "peer", "name", tmp])
        ns_exec(self.switch, ["ip", "link", "set", tmp, "netns", ns])
        ns_exec(self.switch, ["ip", "link", "set", peer, "master", "br0", "up"])
        ns_exec(ns, ["ip", "link", "set", tmp, "name", ifname])
        if mac:
            ns_exec(ns, ["ip", "link", "set", ifname, "address", mac])
        ns_exec(ns, ["ip", "link", "set", "lo", "up"])
        # no DAD delays in the lab, and accept unsolicited NA/GARP updates of existing entries
        ns_exec(ns, ["sysctl", "-qw", f"net.ipv6.conf.{ifname}.accept_dad=0"], check=False)
        ns_exec(ns, ["sysctl", "-qw", f"net.ipv6.conf.{ifname}.dad_transmits=0"], check=False)
        if arp_accept:
            ns_exec(ns, ["sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1"], check=False)
            ns_exec(ns, ["sysctl", "-qw", f"net.ipv4.conf.{ifname}.arp_accept=1"], check=False)
        ns_exec(ns, ["ip", "link", "set", ifname, "up"])
        for a in addrs:
            ns_exec(ns, ["ip", "addr", "add", a, "dev", ifname, *(["nodad"] if ":" in a else [])])
        host.mac = ns_exec(ns, ["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()
        return host

    def cut(self, name: str, up: bool) -> None:
        """Take a host's cable out (switch side) or put it back."""
        host = self.hosts[name]
        ns_exec(self.switch, ["ip", "link", "set", host.peer, "up" if up else "down"])

    def destroy(self) -> None:
        for host in self.hosts.values():
            run(["ip", "netns", "del", host.ns], check=False)
        if self._made_switch:
            run(["ip", "netns", "del", self.switch], check=False)
        self.hosts.clear()
        self._made_switch = False

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
