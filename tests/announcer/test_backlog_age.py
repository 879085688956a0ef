from __future__ import annotations

import pytest

from l2lb.core.announce import stream_entry_age_ms


def test_age_on_the_redis_clock() -> None:
    # our heartbeat got id 1_000_000-0 when our monotonic clock read 50.0; 0.4 s later we read an
    # assignments entry Redis stored at 999_700 ms: it is 700 ms old, whatever the host clocks say
    assert stream_entry_age_ms("999700-3", (1_000_000, 50.0), 50.4) == pytest.approx(700.0)
    assert stream_entry_age_ms("1000390-0", (1_000_000, 50.0), 50.4) == pytest.approx(10.0)


@pytest.mark.parametrize(("eid", "clock"), [("x-1", (1, 0.0)), ("", (1, 0.0)), ("123-0", None)])
def test_unknown_age(eid: str, clock: tuple[int, float] | None) -> None:
    assert stream_entry_age_ms(eid, clock, 1.0) is None
