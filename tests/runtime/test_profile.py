"""L2LB_PROFILE: a service runs under cProfile and writes its stats when it stops."""

from __future__ import annotations

import asyncio
import pstats
from pathlib import Path

import pytest

from l2lb.runtime.run import run_service


def test_profile_written_at_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2LB_PROFILE", str(tmp_path / "prof"))

    def busy_work() -> int:
        return sum(range(1000))

    async def main(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.05)  # the profiler starts with the loop's first callbacks
        for _ in range(5):
            busy_work()
            await asyncio.sleep(0.01)

    assert run_service("probe", main, use_uvloop=False) == 0
    files = list((tmp_path / "prof").glob("probe-*.prof"))
    assert len(files) == 1
    stats = pstats.Stats(str(files[0]))
    calls = {fn[2]: v[1] for fn, v in stats.stats.items()}  # type: ignore[attr-defined]
    assert calls.get("busy_work") == 5


def test_no_profile_without_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("L2LB_PROFILE", raising=False)
    monkeypatch.chdir(tmp_path)

    async def main(stop: asyncio.Event) -> None:
        await asyncio.sleep(0)

    assert run_service("probe", main, use_uvloop=False) == 0
    assert not list(tmp_path.rglob("*.prof"))
