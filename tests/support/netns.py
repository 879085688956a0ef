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
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
    return out.rjust(width, "0")


def _prefix() -> str:
    # "t" + owner pid (5 base-36 digits) + a counter: several pytest runs may share the machine,
    # and the sweep below only removes namespaces whose owner process is gone.
    return f"{PREFIX_ROOT}{_b36(os.getpid(), 5)}{_b36(next(_counter) % 1296, 2)}"


def require_netns_privileges() -> None:
    """Skip a test that needs network namespaces when the machine cannot make them, with the reason; in CI
    (which runs as root with iproute2) the same lack is a failure, never a silent skip."""
    ok, why = netns.have_privileges()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"network tests need privileges in CI: {why}")
        pytest.skip(why)


def _owner_pid(ns: str) -> int | None:
    if len(ns) < 8 or ns[0] != PREFIX_ROOT or not all(c in _DIGITS for c in ns[1:8]):
        return None
    return int(ns[1:6], 36)


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_namespaces() -> Iterator[None]:
    ok, _ = netns.have_privileges()
    if ok:
        for ns in netns.list_namespaces():
            pid = _owner_pid(ns)
            if pid is not None and not os.path.exists(f"/proc/{pid}"):
                netns.run(["ip", "netns", "del", ns], check=False)
    yield


@pytest.fixture
def topology() -> Iterator[netns.Topology]:
    require_netns_privileges()
    topo = netns.Topology(_prefix())
    try:
        yield topo
    finally:
        topo.destroy()
        leftovers = [n for n in netns.list_namespaces() if n.startswith(topo.prefix)]
        assert not leftovers, f"namespaces leaked: {leftovers}"
