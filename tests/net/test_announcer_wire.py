"""The announcer on the wire: real namespaces, veth + bridge, the kernel's neighbour tables, arping, scapy.

Addresses: TEST-NET-2 198.51.100.0/24 and 2001:db8::/64 only, inside namespaces these tests create.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from l2lb.core import codec
from l2lb.lab.netns import Host, Topology

from .announcer_helpers import RawClient, announcer, metric_value, private_topology

pytestmark = pytest.mark.net


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from private_topology()

VIP4 = "198.51.100.10"
VIP6 = "2001:db8::10"
NOT_OWNED = "198.51.100.11"
STATIC = {"vips": [{"ip": VIP4, "epoch": 1}, {"ip": VIP6, "epoch": 1}], "ttl_ms": 60_000}


def _node(topology: Topology, name: str, last: int) -> Host:
    return topology.add_host(name, ifname="enp0s25", addrs=[f"198.51.100.{last}/24", f"2001:db8::{last:x}/64"])


def _client(topology: Topology) -> Host:
    return topology.add_host("cli", addrs=["198.51.100.3/24", "2001:db8::3/64"])


def _neigh(client: Host, ip: str) -> str:
    return client.exec(["ip", "neigh", "show", ip]).stdout.strip()


def _arping(client: Host, ip: str, count: int = 3, deadline: int | None = None) -> str:
    """arping -c COUNT; without ``deadline`` it waits for COUNT replies (bounded by the subprocess timeout)."""
    extra = [] if deadline is None else ["-w", str(deadline)]
    return client.exec(["arping", "-c", str(count), *extra, "-I", client.ifname, ip],
                       check=False, timeout=count + 8).stdout


def test_kernel_resolves_vip_arping_and_ndp(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    with announcer(node, "n1", tmp_path, static=STATIC) as ann:
        out = _arping(client, VIP4)
        assert out.count(f"[{node.mac.upper()}]") == 3, out
        client.exec(["ping", "-c1", "-W1", VIP4], check=False)
        assert f"lladdr {node.mac}" in _neigh(client, VIP4)
        client.exec(["ping", "-c1", "-W1", VIP6], check=False)
        assert f"lladdr {node.mac}" in client.exec(["ip", "-6", "neigh", "show", VIP6]).stdout
        # an address this node does not own is never answered
        out = _arping(client, NOT_OWNED, count=2, deadline=3)
        assert "Received 0 response" in out, out
        st = ann.status()
        assert {v["ip"]: v["epoch"] for v in st["vips"]} == {VIP4: 1, VIP6: 1}
        assert st["valid"] and 0 < st["remaining_s"] <= 60
        iface = st["interfaces"][0]
        assert iface["name"] == "enp0s25" and iface["answering"]
        assert iface["multicast_groups"] == ["33:33:ff:00:00:10"]
        st_counters = st["counters"]
        assert st_counters["answered"] >= 4 and st_counters["not_owned"] >= 2
        # the BPF filter kept the pings (IPv4 ICMP, ICMPv6 echo) out of user space
        assert not {"unsupported_ethertype", "unsupported_icmp_type", "unsupported_next_header"} & set(st_counters)
        time.sleep(1.1)  # metrics are synced every second
        m = ann.metrics()
        assert metric_value(m, "l2lb_announcer_frames_total", 'reason="answered"') >= 4
        assert metric_value(m, "l2lb_announcer_frames_total", 'reason="not_owned"') >= 2
        assert metric_value(m, "l2lb_announcer_garps_total") >= 3


def test_reply_fields_every_one(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    cmac = codec.mac_bytes(client.mac)
    with announcer(node, "n1", tmp_path, static=STATIC, extra=["--garp-count", "0"]):
        raw = RawClient(client)
        try:
            raw.send(codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=cmac, sha=cmac,
                                     spa=codec.ip_bytes("198.51.100.3"), tha=codec.ZERO_MAC,
                                     tpa=codec.ip_bytes(VIP4)))
            got = raw.collect(lambda f: f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02", timeout=2, want=1)
            assert got, "no ARP reply"
            p = Ether(got[0])
            assert (p.dst, p.src, p.type) == (client.mac, node.mac, 0x0806)
            a = p[ARP]
            assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, 2)
            assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == (node.mac, VIP4, client.mac, "198.51.100.3")

            raw.send(codec.build_ns(eth_src=cmac, src=codec.ip_bytes("2001:db8::3"), target=codec.ip_bytes(VIP6),
                                    slla=cmac))
            got = raw.collect(lambda f: f[12:14] == b"\x86\xdd" and len(f) > 54 and f[54] == 136, timeout=2, want=1)
            assert got, "no NA"
            p = Ether(got[0])
            assert (p.dst, p.src) == (client.mac, node.mac)
            ip6 = p[IPv6]
            assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh) == (VIP6, "2001:db8::3", 255, 58)
            na = p[ICMPv6ND_NA]
            assert (na.type, na.code, na.R, na.S, na.O, na.tgt) == (136, 0, 0, 1, 1, VIP6)
            assert p[ICMPv6NDOptDstLLAddr].type == 2 and p[ICMPv6NDOptDstLLAddr].lladdr == node.mac
            sent = na.cksum
            del p[ICMPv6ND_NA].cksum
            assert Ether(bytes(p))[ICMPv6ND_NA].cksum == sent
        finally:
            raw.close()


def test_takeover_garp_and_unsolicited_na_move_the_client(topology: Topology, tmp_path: Path) -> None:
    n1 = _node(topology, "n1", 2)
    n2 = _node(topology, "n2", 4)
    client = _client(topology)
    with announcer(n1, "n1", tmp_path, static=STATIC) as a1, \
            announcer(n2, "n2", tmp_path, static={"vips": [], "ttl_ms": 60_000}) as a2:
        client.exec(["ping", "-c1", "-W1", VIP4], check=False)
        client.exec(["ping", "-c1", "-W1", VIP6], check=False)
        assert f"lladdr {n1.mac}" in _neigh(client, VIP4)
        assert f"lladdr {n1.mac}" in client.exec(["ip", "-6", "neigh", "show", VIP6]).stdout
        t0 = time.monotonic()
        a1.reload({"vips": [], "ttl_ms": 60_000})
        a2.reload({"vips": [{"ip": VIP4, "epoch": 2}, {"ip": VIP6, "epoch": 2}], "ttl_ms": 60_000})
        moved4 = moved6 = None
        while time.monotonic() - t0 < 4.0 and (moved4 is None or moved6 is None):
            if moved4 is None and f"lladdr {n2.mac}" in _neigh(client, VIP4):
                moved4 = time.monotonic() - t0
            if moved6 is None and f"lladdr {n2.mac}" in client.exec(["ip", "-6", "neigh", "show", VIP6]).stdout:
                moved6 = time.monotonic() - t0
            time.sleep(0.05)
        assert moved4 is not None, f"client still has {_neigh(client, VIP4)}\n{a2.log()}"
        assert moved6 is not None, client.exec(["ip", "-6", "neigh"]).stdout
        # the old node no longer answers
        assert a1.status()["vips"] == []
        out = _arping(client, VIP4, count=2)
        assert f"[{n1.mac.upper()}]" not in out and f"[{n2.mac.upper()}]" in out, out


def test_expiry_stops_replies(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    with announcer(node, "n1", tmp_path, static={**STATIC, "ttl_ms": 4000}) as ann:
        assert ann.status()["valid"]
        out = _arping(client, VIP4, count=1)
        assert f"[{node.mac.upper()}]" in out, out
        deadline = time.monotonic() + 8
        while ann.status()["valid"] and time.monotonic() < deadline:
            time.sleep(0.1)
        st = ann.status()
        assert not st["valid"] and st["vips"] == []
        out = _arping(client, VIP4, count=2, deadline=3)
        assert "Received 0 response" in out, out
        assert "expired" in ann.log()


def test_conflict_detected_reported_and_defended_once(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    cmac = codec.mac_bytes(client.mac)
    with announcer(node, "n1", tmp_path, static=STATIC, extra=["--garp-count", "0"]) as ann:
        raw = RawClient(client)
        try:
            garp = codec.build_garp_request(cmac, codec.ip_bytes(VIP4))
            raw.send(garp)
            nmac = codec.mac_bytes(node.mac)
            defence = raw.collect(lambda f: f[6:12] == nmac and f[12:14] == b"\x08\x06", timeout=2, want=2)
            assert len(defence) == 2, "no defence GARP"
            assert {Ether(f)[ARP].op for f in defence} == {1, 2}
            assert all(Ether(f)[ARP].psrc == VIP4 == Ether(f)[ARP].pdst for f in defence)
            # within the 10 s hold-off: counted, not defended again
            for _ in range(3):
                raw.send(garp)
            again = raw.collect(lambda f: f[6:12] == nmac and f[12:14] == b"\x08\x06", timeout=1)
            assert again == []
        finally:
            raw.close()
        st = ann.status()
        assert st["conflicts"] and st["conflicts"][0]["ip"] == VIP4
        assert st["conflicts"][0]["their_mac"] == client.mac and st["conflicts"][0]["defended"]
        assert st["counters"]["conflict"] == 4 and st["counters"]["conflicts_defended"] == 1
        assert "another MAC claims" in ann.log()


def test_per_source_rate_limit(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    cmac = codec.mac_bytes(client.mac)
    other = codec.mac_bytes("02:00:5e:00:53:77")
    extra = ["--garp-count", "0", "--reply-rate", "2", "--reply-burst", "5"]
    with announcer(node, "n1", tmp_path, static=STATIC, extra=extra) as ann:
        raw = RawClient(client)
        try:
            def req(mac: bytes) -> bytes:
                return codec.build_arp(1, eth_dst=codec.BROADCAST_MAC, eth_src=mac, sha=mac,
                                       spa=codec.ip_bytes("198.51.100.3"), tha=codec.ZERO_MAC,
                                       tpa=codec.ip_bytes(VIP4))
            for _ in range(30):
                raw.send(req(cmac))
            for _ in range(3):
                raw.send(req(other))
            replies = raw.collect(lambda f: f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02", timeout=1.5)
            to_client = [f for f in replies if f[:6] == cmac]
            to_other = [f for f in replies if f[:6] == other]
            # burst 5, plus at most 2/s refill over the time the announcer took (loaded machine)
            assert 5 <= len(to_client) <= 8, len(to_client)
            assert len(to_other) == 3
        finally:
            raw.close()
        assert ann.status()["counters"]["rate_limited"] >= 22


def test_link_down_stops_answering_and_link_up_reannounces(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    # --no-netlink: the /sys polling fallback (the bus test covers rtnetlink)
    with announcer(node, "n1", tmp_path, static=STATIC, extra=["--garp-count", "1", "--no-netlink"]) as ann:
        assert ann.status()["link_monitor"] == "poll"
        topology.cut("n1", up=False)
        deadline = time.monotonic() + 2
        while ann.status()["interfaces"][0]["answering"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not ann.status()["interfaces"][0]["answering"]
        raw = RawClient(client)
        try:
            topology.cut("n1", up=True)
            nmac = codec.mac_bytes(node.mac)
            def ours(f: bytes) -> bool:  # our GARPs / unsolicited NA, not the kernel's MLD or RS
                return f[6:12] == nmac and (f[12:14] == b"\x08\x06" or (len(f) > 54 and f[54] == 136))
            got = raw.collect(ours, timeout=3, want=3)
            kinds: set[object] = set()
            for f in got:
                p = Ether(f)
                kinds.add(("arp", p[ARP].op) if p.haslayer(ARP) else ("na", p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O))
            assert kinds == {("arp", 1), ("arp", 2), ("na", 0, 1)}, got
        finally:
            raw.close()


def test_bad_static_file_and_vip_configured_locally_are_reported(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    with announcer(node, "n1", tmp_path, static=STATIC) as ann:
        ann.static_path.write_text("{not json")
        ann.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        st = ann.status()
        assert ann.proc.poll() is None
        assert "not JSON" in st["static_assignments"]["error"]
        assert {v["ip"] for v in st["vips"]} == {VIP4, VIP6}  # kept the previous set
        # a VIP that is also an address of the host: the kernel would answer too -> warned
        node.exec(["ip", "addr", "add", "198.51.100.20/32", "dev", node.ifname])
        ann.reload({"vips": [{"ip": "198.51.100.20", "epoch": 1}]})
        deadline = time.monotonic() + 3
        while "configured as an address" not in ann.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "configured as an address" in ann.log()
        assert "interface=enp0s25" in ann.log()


def test_socket_helpers_sanity() -> None:
    assert socket.htons(3) == 0x0300


def test_vlan_subinterface_and_interface_restriction(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    for host, addr in ((node, "203.0.113.2/24"), (client, "203.0.113.3/24")):
        vif = f"{host.ifname}.10"
        made = host.exec(["ip", "link", "add", "link", host.ifname, "name", vif, "type", "vlan", "id", "10"],
                         check=False)
        if made.returncode != 0 and "Unknown device type" in made.stderr:
            pytest.skip("this kernel has no 802.1Q support (8021q module)")
        assert made.returncode == 0, made.stderr
        host.exec(["ip", "addr", "add", addr, "dev", vif])
        host.exec(["ip", "link", "set", vif, "up"])
    static = {"vips": [{"ip": "203.0.113.10", "epoch": 1, "interfaces": ["enp0s25.10"]},
                       {"ip": VIP4, "epoch": 1, "interfaces": ["enp0s25"]}], "ttl_ms": 60_000}
    with announcer(node, "n1", tmp_path, static=static, extra=["--interfaces", "enp0s25", "enp0s25[.]10"]) as ann:
        names = {i["name"]: i["answering"] for i in ann.status()["interfaces"]}
        assert names == {"enp0s25": True, "enp0s25.10": True}
        out = client.exec(["arping", "-c", "2", "-I", "eth0.10", "203.0.113.10"], check=False, timeout=10).stdout
        assert out.count(f"[{node.mac.upper()}]") == 2, out
        assert f"[{node.mac.upper()}]" in _arping(client, VIP4, count=1)
        # VIP4 is allowed on the untagged interface only: not answered inside VLAN 10
        client.exec(["ip", "addr", "add", "198.51.100.99/32", "dev", "eth0.10"])
        out = client.exec(["arping", "-c", "2", "-w", "3", "-I", "eth0.10", VIP4], check=False, timeout=10).stdout
        assert "Received 0 response" in out, out
        # tagged frames never reach the untagged socket: nothing was seen as 'wrong_interface' there,
        # the VLAN socket saw them and refused by policy
        assert ann.status()["counters"].get("wrong_interface", 0) >= 2


def test_vip_answered_only_on_its_interfaces_with_that_interfaces_mac(topology: Topology, tmp_path: Path) -> None:
    node = _node(topology, "n1", 2)
    client = _client(topology)
    node.exec(["ip", "link", "add", "mv0", "link", node.ifname, "type", "macvlan", "mode", "bridge"])
    node.exec(["ip", "link", "set", "mv0", "up"])
    mv_mac = node.exec(["cat", "/sys/class/net/mv0/address"]).stdout.strip()
    static = {"vips": [{"ip": VIP4, "epoch": 1, "interfaces": ["mv0"]},
                       {"ip": "198.51.100.12", "epoch": 1, "interfaces": ["enp0s25"]}], "ttl_ms": 60_000}
    with announcer(node, "n1", tmp_path, static=static, extra=["--interfaces", "enp0s25", "mv0"]) as ann:
        assert {i["name"]: i["answering"] for i in ann.status()["interfaces"]} == {"enp0s25": True, "mv0": True}
        out = _arping(client, VIP4, count=2)
        assert out.count(f"[{mv_mac.upper()}]") == 2 and node.mac.upper() not in out, out
        out = _arping(client, "198.51.100.12", count=2)
        assert out.count(f"[{node.mac.upper()}]") == 2 and mv_mac.upper() not in out, out
        # each broadcast request (the first probe of each arping) reached both sockets; the other one
        # refused it by policy
        assert ann.status()["counters"].get("wrong_interface", 0) >= 2
