from __future__ import annotations

import pytest

from l2lb.lab.netns import NetnsError, Topology, check_testnet


def test_check_testnet_refuses_private_ranges() -> None:
    check_testnet("198.51.100.7/24")
    check_testnet("2001:db8::1/64")
    for bad in ("192.168.1.153", "10.0.0.1/8", "8.8.8.8", "fd00::1"):
        with pytest.raises(NetnsError):
            check_testnet(bad)


@pytest.mark.net
def test_two_hosts_ping_over_the_bridge(topology: Topology) -> None:
    a = topology.add_host("a", addrs=["198.51.100.1/24"])
    b = topology.add_host("b", addrs=["198.51.100.2/24"])
    out = a.exec(["ping", "-c", "1", "-W", "2", "198.51.100.2"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    neigh = a.exec(["ip", "neigh", "show", "198.51.100.2"]).stdout
    assert b.mac in neigh
