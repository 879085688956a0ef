"""The announcer's metrics (``l2lb_announcer_*``): the machine's Count/Gauge facts, and per-second sync of
the counters the hot path keeps in plain dicts (frames by outcome, GARPs, defences, memo hits, send errors)."""

from __future__ import annotations

from typing import Any

from l2lb.core.announcer_machine import AnnouncerMachine, Count, Gauge
from l2lb.obs import metrics

_frames = metrics.counter(
    "l2lb_announcer_frames_total",
    "Frames seen by the announcer's raw sockets, by outcome (answered or drop reason)",
    ("reason",),
)
_requests = metrics.counter(
    "l2lb_announcer_requests_total", "ARP requests and NDP solicitations/adverts seen"
)
_replies = metrics.counter("l2lb_announcer_replies_total", "ARP replies / solicited NAs sent")
_garps = metrics.counter("l2lb_announcer_garps_total", "Gratuitous ARP / unsolicited NA frames sent")
_conflicts = metrics.counter(
    "l2lb_announcer_conflicts_total", "Frames from another MAC claiming an owned VIP"
)
_defences = metrics.counter("l2lb_announcer_defences_total", "Conflicts answered with a defence")
_send_errors = metrics.counter("l2lb_announcer_send_errors_total", "Frames the kernel refused to send")
_memo_hits = metrics.counter(
    "l2lb_announcer_memo_hits_total",
    "Requests decided from the memo of earlier answers (same frame, same VIP set): the hot path's fast case",
)
_kernel_drops = metrics.counter(
    "l2lb_announcer_kernel_drops_total",
    "Frames dropped by the kernel before the announcer read them (socket buffer full)",
)
# the machine's Count / Gauge facts, by name
_COUNTS: dict[str, Any] = {
    "assignments": metrics.counter(
        "l2lb_announcer_assignments_total",
        "NodeAssignments / NodeRenewal messages for this node by result (applied, renewed, digest_mismatch, "
        "expired, stale, ...; snapshot_requested: full set asked for; superseded: VIPs given elsewhere with a "
        "higher epoch)",
        ("result",),
    ),
    "expiries": metrics.counter("l2lb_announcer_expiries_total", "Times the VIP set expired without renewal"),
    "peer_frames": metrics.counter(
        "l2lb_announcer_peers_frames_total",
        "LAN peer heartbeats received, by result (accepted, or why not: bad_mac, replay, stale, other_cluster, "
        "unsigned, signed, malformed, ...)",
        ("result",),
    ),
    "takeovers": metrics.counter(
        "l2lb_announcer_peers_takeovers_total",
        "VIPs taken over on the LAN as a successor (holder and control plane silent, quorum heard)",
    ),
    "heartbeats": metrics.counter(
        "l2lb_announcer_heartbeats_total",
        "Heartbeats published, by how the serving map went (full: in the message; omitted: only its digest)",
        ("serving",),
    ),
}
_GAUGES = {
    "leases_grace": metrics.gauge(
        "l2lb_announcer_leases_grace", "1 while VIPs are kept past their validity because the leases service is silent"
    ),
    "vips": metrics.gauge("l2lb_announcer_vips", "VIPs currently answered for"),
    "peers_frozen": metrics.gauge(
        "l2lb_announcer_peers_frozen",
        "1 while VIPs are kept past their validity because Redis is down for us and for a quorum of peers",
    ),
    "peers_held": metrics.gauge(
        "l2lb_announcer_peers_held", "VIPs answered by a LAN takeover (not yet confirmed by leases)"
    ),
    "interfaces_up": metrics.gauge(
        "l2lb_announcer_interfaces_up", "Allowed interfaces that are up with an open socket"
    ),
}
_valid = metrics.gauge("l2lb_announcer_assignment_remaining_seconds", "Validity left of the current VIP set")


_peers_heard = metrics.gauge("l2lb_announcer_peers_heard", "Peers heard on the LAN within --peer-timeout-ms")
_peers_quorum = metrics.gauge(
    "l2lb_announcer_peers_quorum", "1 while this node and the peers it hears are a majority of the members"
)
_peers_unsigned = metrics.gauge(
    "l2lb_announcer_peers_unsigned", "1 when peer heartbeats are not authenticated (no peer key: lab/dev only)"
)


class AnnouncerMetrics:
    def __init__(self) -> None:
        self._synced: dict[str, int] = {}

    def fact(self, c: Count | Gauge) -> None:
        if isinstance(c, Count):
            counter = _COUNTS[c.name]
            (counter.labels(c.label) if c.label else counter).inc(c.n)
        else:
            _GAUGES[c.name].set(c.value)

    @staticmethod
    def unsigned(on: bool) -> None:
        _peers_unsigned.set(1 if on else 0)

    def sync(self, machine: AnnouncerMachine, now: float, kernel_drops: int, send_errors: int) -> None:
        """Add what the counters grew by since the last call (they are cumulative since start)."""
        if kernel_drops:
            _kernel_drops.inc(kernel_drops)
        stats = dict(machine.state.stats)
        stats["_send_errors"] = send_errors
        stats["_memo_hits"] = machine.memo_hits
        for key, val in stats.items():
            delta = val - self._synced.get(key, 0)
            if delta <= 0:
                continue
            self._synced[key] = val
            if key == "garp_frames":
                _garps.inc(delta)
            elif key == "conflicts_defended":
                _defences.inc(delta)
            elif key == "_send_errors":
                _send_errors.inc(delta)
            elif key == "_memo_hits":
                _memo_hits.inc(delta)
            else:
                _frames.labels(key).inc(delta)
                _requests.inc(delta)
                if key == "answered":
                    _replies.inc(delta)
                elif key == "conflict":
                    _conflicts.inc(delta)
        if machine.peers is not None:
            _peers_heard.set(len(machine.peers.alive(now)))
            _peers_quorum.set(1 if machine.lan_quorum(now) else 0)
        st = machine.state
        _valid.set(max(0.0, st.deadline - now) if st.deadline is not None else 0.0)
        _GAUGES["vips"].set(st.serving_count(now))
