"""The announcer's hot path: a batch of received frames in, replies out, with a memo of answers.

Clients ask the same question over and over (a host re-resolving a VIP sends the same ARP request or
Neighbor Solicitation byte for byte), and every check :meth:`AnnouncerState.handle` makes before it
answers depends only on the frame, the VIP set, the interface, the validity deadline and the asker's
token bucket. :class:`ReplyMemo` therefore remembers, per interface, the reply built for each exact
request frame it answered and, while the VIP set object and the interface are the same ones, answers
a repeated frame by one dictionary lookup -- still checking the deadline and the asker's rate limit
on every frame. Anything else (a new frame, a drop, a conflict, a set that changed) goes through
``handle`` unchanged. A property test checks that both give the same replies and counts.
"""

from __future__ import annotations

from l2lb.core import codec
from l2lb.core.announce import AnnouncerState, ConflictSeen, Iface, Outcome, Vip
from l2lb.core.codec import ArpFrame, NsFrame

__all__ = ["ReplyMemo"]


def _asker(frame: bytes) -> bytes | None:
    """The key :class:`AnnouncerState` rate-limits an answered request by (ARP: sender hardware address;
    NS: source link-layer address option, else the Ethernet source)."""
    p = codec.parse(frame)
    if isinstance(p, ArpFrame):
        return p.sha
    if isinstance(p, NsFrame):
        return p.slla or p.eth_src
    return None


class ReplyMemo:
    """Per-interface memo of answered request frames (see the module docstring)."""

    def __init__(self, state: AnnouncerState, max_entries: int = 4096):
        self.state = state
        self.max_entries = max_entries
        self.hits = 0
        self._memo: dict[bytes, tuple[bytes, bytes]] = {}  # request frame -> (rate-limit key, reply)
        self._of: tuple[dict[bytes, Vip], Iface] | None = None

    def __len__(self) -> int:
        return len(self._memo)

    def handle_batch(self, frames: list[bytes], iface: Iface, now: float) -> tuple[list[bytes], list[ConflictSeen]]:
        """Decide about ``frames`` received on ``iface`` at ``now``: the frames to send and the conflicts seen.
        Never raises (``handle`` never does)."""
        st = self.state
        of = self._of
        if of is None or of[0] is not st.vips or of[1] is not iface:
            self._memo.clear()
            self._of = (st.vips, iface)
        memo = self._memo
        deadline = st.deadline
        live = deadline is not None and now < deadline
        allow = st._allow
        out: list[bytes] = []
        conflicts: list[ConflictSeen] = []
        answered = limited = 0
        for frame in frames:
            hit = memo.get(frame) if live else None
            if hit is not None:
                if allow(hit[0], now):
                    out.append(hit[1])
                    answered += 1
                else:
                    limited += 1
                continue
            v = st.handle(frame, iface, now)
            if v.frames:
                out.extend(v.frames)
            if v.conflict is not None:
                conflicts.append(v.conflict)
            elif v.reason == Outcome.ANSWERED and len(v.frames) == 1 and live:
                key = _asker(frame)
                if key is not None:
                    if len(memo) >= self.max_entries:
                        memo.clear()
                    memo[frame] = (key, v.frames[0])
        if answered or limited:
            stats = st.stats
            self.hits += answered + limited
            if answered:
                stats[Outcome.ANSWERED] = stats.get(Outcome.ANSWERED, 0) + answered
            if limited:
                stats[Outcome.RATE_LIMITED] = stats.get(Outcome.RATE_LIMITED, 0) + limited
        return out, conflicts
