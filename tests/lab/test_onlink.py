"""The lab's on-link plan for IPv6 pools (pure): which prefix the client joins, which addresses it takes."""

from __future__ import annotations

import ipaddress

import pytest

from l2lb.core.models import Pool
from l2lb.core.parse import parse_pool
from l2lb.lab.main import LAN6
from l2lb.lab.onlink import OnLink, for_vip, onlink_network, plan


def _pool(name: str, *blocks: dict[str, str]) -> Pool:
    return parse_pool({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                       "metadata": {"name": name}, "spec": {"blocks": list(blocks)}})


def test_a_64_pool_gets_addresses_from_its_top() -> None:
    new, notes = plan([_pool("v6", {"cidr": "2001:db8:53::/64"})], [LAN6])
    assert [o.network for o in new] == [ipaddress.IPv6Network("2001:db8:53::/64")]
    o = new[0]
    assert str(o.client) == "2001:db8:53:0:ffff:ffff:ffff:fffe"
    assert str(o.prober) == "2001:db8:53:0:ffff:ffff:ffff:fffd"
    assert o.inside_pool and o.client_interface.endswith("/64")
    assert any("fills 2001:db8:53::/64" in n for n in notes)


def test_a_small_pool_leaves_room_outside_it() -> None:
    new, notes = plan([_pool("small", {"cidr": "2001:db8:7::/120"})], [LAN6])
    o = new[0]
    assert o.network == ipaddress.IPv6Network("2001:db8:7::/64")
    assert (str(o.client), str(o.prober)) == ("2001:db8:7::100", "2001:db8:7::101")
    assert not o.inside_pool and notes == []


def test_a_range_pool_and_its_neighbours_skip_pooled_addresses() -> None:
    new, _ = plan([_pool("r", {"start": "2001:db8:9::100", "stop": "2001:db8:9::1ff"})], [LAN6])
    assert (str(new[0].client), str(new[0].prober)) == ("2001:db8:9:0:ffff:ffff:ffff:fffe",
                                                        "2001:db8:9:0:ffff:ffff:ffff:fffd")
    assert not new[0].inside_pool


def test_the_lan_prefix_and_repeated_prefixes_are_not_added_twice() -> None:
    pools = [_pool("lan", {"cidr": "2001:db8::1000/120"}),
             _pool("a", {"cidr": "2001:db8:53::/112"}), _pool("b", {"cidr": "2001:db8:53::1:0/112"})]
    new, _ = plan(pools, [LAN6])
    assert [str(o.network) for o in new] == ["2001:db8:53::/64"]
    assert len({new[0].client, new[0].prober, LAN6.client, LAN6.prober}) == 4


def test_wider_than_64_and_outside_the_documentation_prefix() -> None:
    assert onlink_network(ipaddress.IPv6Address("2001:db8:60::"),
                          ipaddress.IPv6Address("2001:db8:60:1::ffff")) == ipaddress.IPv6Network("2001:db8:60::/63")
    new, notes = plan([_pool("real", {"cidr": "2001:470::/64"}), _pool("v4", {"cidr": "198.51.100.0/24"})], [LAN6])
    assert new == []
    assert len(notes) == 1 and "2001:470::/64 is not in the documentation prefix" in notes[0]


@pytest.mark.parametrize(("vip", "want"), [("2001:db8:53::1", "2001:db8:53::/64"), ("2001:db8::7", "2001:db8::/64"),
                                           ("2001:db8:99::1", None)])
def test_for_vip(vip: str, want: str | None) -> None:
    extra = OnLink(ipaddress.IPv6Network("2001:db8:53::/64"), ipaddress.IPv6Address("2001:db8:53::100"),
                   ipaddress.IPv6Address("2001:db8:53::101"))
    got = for_vip(vip, [LAN6, extra])
    assert (None if got is None else str(got.network)) == want
