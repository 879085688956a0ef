"""pytest plugin: network namespaces for tests (real veth pairs on a bridge), always cleaned up.

``topology`` gives a :class:`l2lb.lab.netns.Topology` with a unique short prefix; it is destroyed
after the test even when the test fails, and stale namespaces of crashed runs are swept first.
Tests using it must be marked ``@pytest.mark.net``; they are skipped with the reason when the
machine lacks root/iproute2 (CI runs as root and has them, so nothing is skipped there).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from l2lb.lab import netns

_counter = itertools.count()
PREFIX_ROOT = "t"


def _prefix() -> str:
    return f"{PREFIX_ROOT}{os.getpid() % 1000:03d}{next(_counter) % 100:02d}"[:6]


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_namespaces() -> Iterator[None]:
    ok, _ = netns.have_privileges()
    if ok:
        mine = f"{PREFIX_ROOT}{os.getpid() % 1000:03d}"
        for ns in netns.list_namespaces():
            # our names: 't' + 3 digits + 2 digits + host; leave anything else alone
            if len(ns) > 6 and ns[0] == PREFIX_ROOT and ns[1:6].isdigit() and not ns.startswith(mine):
                netns.run(["ip", "netns", "del", ns], check=False)
    yield


@pytest.fixture
def topology() -> Iterator[netns.Topology]:
    ok, why = netns.have_privileges()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"network tests need privileges in CI: {why}")
        pytest.skip(why)
    topo = netns.Topology(_prefix())
    try:
        yield topo
    finally:
        topo.destroy()
        leftovers = [n for n in netns.list_namespaces() if n.startswith(topo.prefix)]
        assert not leftovers, f"namespaces leaked: {leftovers}"
