"""Prometheus metrics. Every metric is named ``l2lb_*``.

Each process has one registry (``REGISTRY``); modules declare their metrics here or with the
helpers below so names stay unique and discoverable in one place per subsystem.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

__all__ = ["CONTENT_TYPE", "REGISTRY", "counter", "gauge", "histogram", "render"]

_made: dict[str, object] = {}


def _check(name: str) -> None:
    if not name.startswith("l2lb_"):
        raise ValueError(f"metric {name!r} must be named l2lb_*")


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    _check(name)
    if name not in _made:
        _made[name] = Counter(name, doc, labels, registry=REGISTRY)
    m = _made[name]
    assert isinstance(m, Counter)
    return m


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    _check(name)
    if name not in _made:
        _made[name] = Gauge(name, doc, labels, registry=REGISTRY)
    m = _made[name]
    assert isinstance(m, Gauge)
    return m


def histogram(
    name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] | None = None
) -> Histogram:
    _check(name)
    if name not in _made:
        if buckets is None:
            _made[name] = Histogram(name, doc, labels, registry=REGISTRY)
        else:
            _made[name] = Histogram(name, doc, labels, registry=REGISTRY, buckets=buckets)
    m = _made[name]
    assert isinstance(m, Histogram)
    return m


def render() -> bytes:
    return generate_latest(REGISTRY)
