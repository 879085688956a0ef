"""Which IPv6 prefixes the lab's client must have on-link, and which addresses it uses there (pure).

A LAN client only sends a Neighbor Solicitation for an address it considers on-link, i.e. inside a
prefix of one of its own addresses. An IPv6 pool such as ``2001:db8:53::/64`` is usually a prefix of
its own, so the client gets an address in each pool's /64 (or in the pool itself when it is wider
than a /64), and the raw NDP prober gets a second address there that the client's kernel does *not*
own (the prober's answers then never touch the kernel's neighbour table, which is measured apart).

Only documentation prefixes (2001:db8::/32) are ever given to a namespace; a pool outside them is
reported, not used. Addresses are taken outside every pool when there is room (``::100`` and up, then
from the top of the prefix down); when the pools fill the prefix they come from its top, which the
allocator hands out last (it always takes the lowest free address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from l2lb.core.models import V6, Pool

DOC_PREFIX = ipaddress.IPv6Network("2001:db8::/32")
ONLINK_PREFIXLEN = 64
_CANDIDATES = 32


@dataclass(frozen=True)
class OnLink:
    network: ipaddress.IPv6Network
    client: ipaddress.IPv6Address  # assigned to the client's interface (/prefixlen of ``network``)
    prober: ipaddress.IPv6Address  # source of the raw NS prober; assigned to nobody
    inside_pool: bool = False  # the addresses had to come from a pool's range (its top end)

    @property
    def client_interface(self) -> str:
        return f"{self.client}/{self.network.prefixlen}"


def _common_prefixlen(a: int, b: int) -> int:
    return 128 - (a ^ b).bit_length()


def onlink_network(first: ipaddress.IPv6Address, last: ipaddress.IPv6Address) -> ipaddress.IPv6Network:
    """The /64 holding a block, or the smallest prefix holding it when it spans more than one /64."""
    plen = min(ONLINK_PREFIXLEN, _common_prefixlen(int(first), int(last)))
    return ipaddress.IPv6Network((int(first), plen), strict=False)


def pool_ranges_v6(pools: Iterable[Pool]) -> list[tuple[str, ipaddress.IPv6Address, ipaddress.IPv6Address]]:
    """(pool name, first, last) of every IPv6 block of ``pools``."""
    out = []
    for p in pools:
        for b in p.blocks:
            if b.family == 6:
                out.append((p.name, ipaddress.IPv6Address(b.first - V6), ipaddress.IPv6Address(b.last - V6)))
    return out


def _pick(net: ipaddress.IPv6Network, ranges: Sequence[tuple[int, int]], taken: set[int], want: int
          ) -> tuple[list[ipaddress.IPv6Address], bool]:
    lo, hi = int(net.network_address), int(net.broadcast_address)
    cands = [lo + 0x100 + i for i in range(_CANDIDATES)] + [hi - 1 - i for i in range(_CANDIDATES)]
    cands = [c for c in cands if lo < c < hi]
    free = [c for c in cands if c not in taken and not any(f <= c <= t for f, t in ranges)]
    if len(free) >= want:
        return [ipaddress.IPv6Address(c) for c in free[:want]], False
    top = [c for c in cands[_CANDIDATES:] if c not in taken][:want]
    return [ipaddress.IPv6Address(c) for c in top], True


def plan(pools: Iterable[Pool], lan: Sequence[OnLink] = ()) -> tuple[list[OnLink], list[str]]:
    """On-link prefixes for the IPv6 blocks of ``pools`` beyond the ``lan`` ones already set up.

    Returns the new prefixes (client and prober address in each) and notes for the user (pools
    outside the documentation prefix, addresses taken from inside a pool)."""
    blocks = pool_ranges_v6(pools)
    ranges = [(int(f), int(t)) for _, f, t in blocks]
    known = list(lan)
    taken = {int(o.client) for o in lan} | {int(o.prober) for o in lan}
    out: list[OnLink] = []
    notes: list[str] = []
    for name, first, last in blocks:
        net = onlink_network(first, last)
        if not net.subnet_of(DOC_PREFIX):
            notes.append(f"pool {name}: {net} is not in the documentation prefix {DOC_PREFIX}; the lab "
                         "gives the client no address there, so its IPv6 VIPs are not probed")
            continue
        if any(net.subnet_of(o.network) for o in known):
            continue
        addrs, inside = _pick(net, ranges, taken, 2)
        if len(addrs) < 2:
            notes.append(f"pool {name}: {net} has no room for a client address")
            continue
        o = OnLink(net, addrs[0], addrs[1], inside)
        if inside:
            notes.append(f"pool {name} fills {net}: the client uses {o.client} and the prober {o.prober}, "
                         "the top of the prefix (handed out last)")
        known.append(o)
        out.append(o)
        taken |= {int(a) for a in addrs}
    return out, notes


def for_vip(vip: str, onlinks: Iterable[OnLink]) -> OnLink | None:
    """The on-link prefix a client uses to reach ``vip`` (the longest one holding it)."""
    ip = ipaddress.ip_address(vip)
    best: OnLink | None = None
    for o in onlinks:
        if ip in o.network and (best is None or o.network.prefixlen > best.network.prefixlen):
            best = o
    return best
