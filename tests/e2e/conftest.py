"""Fixtures of the end-to-end suite (marker ``e2e``; run with ``bash scripts/dev e2e``).

The suite is deselected unless ``-m`` names ``e2e``: the unit run (``bash scripts/dev test``) stays
fast, and CI runs ``bash scripts/dev e2e`` after it.

* ``e2e_images``: every e2e image (tests/e2e/images.py), built with the real builder when missing,
  else from the per-machine cache.
* ``k8s_cluster``: the session's one real Kubernetes cluster (tests/e2e/k8s_lab.py), started at first
  use, removed at the end; the k8s tests take it through their ``cluster`` fixture, which puts it
  back to its just-started state first (test_k8s.py).
* ``docker_engine_factory``: start a real dockerd in a network namespace; every engine it started is
  stopped at the end of the test, and the test fails if anything (process, cgroup, mount, state
  directory) survived.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from l2lb.lab import netns
from tests.e2e.cluster import Cluster
from tests.e2e.engine import DOCKERD, DockerEngine
from tests.e2e.images import Built, build_all


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "e2e" in (config.option.markexpr or ""):
        return
    e2e = [i for i in items if i.get_closest_marker("e2e") is not None]
    if e2e:
        config.hook.pytest_deselected(items=e2e)
        items[:] = [i for i in items if i.get_closest_marker("e2e") is None]


def require_root() -> None:
    ok, why = netns.have_privileges()
    if not ok:
        pytest.skip(why)
    if not Path(DOCKERD).exists() or shutil.which("mmdebstrap") is None:
        pytest.fail("the e2e suite needs Debian's docker.io and mmdebstrap: run it with bash scripts/dev e2e")


@pytest.fixture(scope="session")
def e2e_images() -> dict[str, Built]:
    require_root()
    return build_all()


@pytest.fixture(scope="session")
def k8s_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    from tests.e2e.k8s_lab import session_cluster

    yield from session_cluster(request)


@pytest.fixture
def docker_engine_factory() -> Iterator[Callable[[str], DockerEngine]]:
    engines: list[DockerEngine] = []

    def start(ns: str) -> DockerEngine:
        e = DockerEngine(ns)
        engines.append(e)
        e.start()
        return e

    yield start
    left = []
    for e in engines:
        left += e.stop()
    assert not left, f"the docker engine left: {left}"
