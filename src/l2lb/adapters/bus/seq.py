"""Idempotence helpers for bus handlers (no I/O).

Delivery is at-least-once: after a consumer dies, a Redis failover or a resync, a handler may see
a message twice or an older message after a newer one. State-based messages carry a
``(term, seq)`` pair (leader term, then sequence within the term); :class:`SeqFilter` keeps the
newest pair per key and tells whether a message is newer.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SeqFilter"]


class SeqFilter:
    """Per-key ``(term, seq)`` high-water marks.

    ``accept(key, term, seq)`` returns True (and records the pair) when it is strictly newer than
    the last accepted pair for ``key``; a duplicate or stale message returns False and changes
    nothing. With ``max_keys`` the least recently updated keys are forgotten first.
    """

    def __init__(self, max_keys: int | None = None) -> None:
        if max_keys is not None and max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._max = max_keys
        self.dropped = 0  # stale or duplicate messages seen

    def is_newer(self, key: str, term: int, seq: int) -> bool:
        last = self._last.get(key)
        return last is None or (term, seq) > last

    def accept(self, key: str, term: int, seq: int) -> bool:
        if not self.is_newer(key, term, seq):
            self.dropped += 1
            return False
        self._last[key] = (term, seq)
        self._last.move_to_end(key)
        if self._max is not None and len(self._last) > self._max:
            self._last.popitem(last=False)
        return True

    check = accept  # alias

    def last(self, key: str) -> tuple[int, int] | None:
        return self._last.get(key)

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    def reset(self) -> None:
        """Forget everything (e.g. after a resync that rebuilds state from a snapshot)."""
        self._last.clear()

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last
