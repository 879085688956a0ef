"""KubeClient against the embedded API server: throttling as the SERVER sees it, 429/5xx
handling, deadlines, CRUD/patch/watch basics."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import pytest

from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError
from l2lb.adapters.kube.ratelimit import TokenBucket
from l2lb.obs.metrics import REGISTRY
from tests.kube_client.helpers import SVC, client_for, ensure_namespace, requests_to, service

pytestmark = pytest.mark.kube


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_crud_patch_watch_roundtrip(kube: Any) -> None:
    c = await client_for(kube)
    try:
        await ensure_namespace(c, "kc-crud")
        made = await c.create_object(SVC, service("web", "kc-crud", app="web"))
        assert made["metadata"]["name"] == "web" and made["kind"] == "Service"
        rv0 = made["metadata"]["resourceVersion"]
        got = await c.get(SVC, "web", "kc-crud")
        assert got["metadata"]["uid"] == made["metadata"]["uid"]
        lst = await c.list(SVC, "kc-crud", label_selector="app=web")
        assert [i["metadata"]["name"] for i in lst["items"]] == ["web"]
        assert (await c.list(SVC, "kc-crud", label_selector="app=other"))["items"] == []
        patched = await c.patch(SVC, "web", {"metadata": {"annotations": {"a": "1"}}}, "kc-crud")
        assert patched["metadata"]["annotations"] == {"a": "1"}
        st = await c.patch(
            SVC,
            "web",
            {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}},
            "kc-crud",
            subresource="status",
        )
        assert [i["ip"] for i in st["status"]["loadBalancer"]["ingress"]] == ["198.51.100.7"]
        # a stale replace conflicts
        stale = dict(made)
        with pytest.raises(KubeError) as ei:
            await c.replace(SVC, stale)
        assert ei.value.status == 409
        with pytest.raises(KubeError) as ei:
            await c.get(SVC, "absent", "kc-crud")
        assert ei.value.status == 404 and ei.value.not_found
        # watch from the first version replays what happened since
        seen: list[tuple[str, str]] = []
        async with contextlib.aclosing(c.watch(SVC, "kc-crud", resource_version=rv0, timeout_s=1)) as w:
            async for typ, obj in w:
                seen.append((typ, obj["metadata"].get("resourceVersion", "")))
                if len(seen) >= 2:
                    break
        assert [t for t, _ in seen] == ["MODIFIED", "MODIFIED"]
        await c.delete(SVC, "web", "kc-crud")
        with pytest.raises(KubeError) as ei:
            await c.get(SVC, "web", "kc-crud")
        assert ei.value.status == 404
    finally:
        await c.close()


async def test_bad_patch_type_is_a_clear_error(kube: Any) -> None:
    c = await client_for(kube)
    try:
        with pytest.raises(KubeError, match="unknown patch_type"):
            await c.patch(SVC, "x", {}, "default", patch_type="yaml")
    finally:
        await c.close()


async def test_server_sees_at_most_qps_after_burst(kube: Any, caplog: pytest.LogCaptureFixture) -> None:
    qps, burst, callers, per_caller = 20.0, 5, 8, 6  # 48 requests: ~2.2 s
    c = await client_for(kube, qps=qps, burst=burst)
    c.throttle_log_threshold = 0.2  # 8 callers queue at most 8/qps = 0.4 s
    try:
        await ensure_namespace(c, "kc-rate")
        c.limiter = TokenBucket(qps, burst)  # full bucket for the measured part
        kube.clear_requests()
        waits_before = metric("l2lb_kube_ratelimit_wait_seconds_count")
        t0 = time.monotonic()

        async def caller(i: int) -> None:
            for _ in range(per_caller):
                await c.get(RESOURCES["namespaces"], "kc-rate")

        with caplog.at_level(logging.INFO, logger="l2lb.kube"):
            await asyncio.gather(*(caller(i) for i in range(callers)))
        elapsed = time.monotonic() - t0
    finally:
        await c.close()
    n = callers * per_caller
    log = sorted(r["t"] for r in requests_to(kube, "/namespaces/kc-rate", verb="get"))
    assert len(log) == n
    # the first `burst` go at once; after that the server's arrivals are spaced by 1/qps
    assert log[burst - 1] - log[0] < 0.2
    tail = log[burst:]
    for i, start in enumerate(tail):
        in_window = sum(1 for t in tail[i:] if t < start + 1.0)
        # +2: one for the window edge, one for arrival jitter on a loaded machine (no limiter: ~48)
        assert in_window <= qps + 2, f"{in_window} requests in 1 s starting at #{i + burst}"
    assert (len(tail) - 1) / (tail[-1] - tail[0]) <= qps * 1.05  # mean rate after the burst
    span = log[-1] - log[0]
    ideal = (n - burst) / qps
    assert ideal * 0.9 <= span <= ideal + 1.0
    assert elapsed >= ideal * 0.9
    assert metric("l2lb_kube_ratelimit_wait_seconds_count") - waits_before == n
    assert any(
        "due to client-side throttling, request: GET:" in r.getMessage() and r.getMessage().startswith("Waited for ")
        for r in caplog.records
    )


async def test_429_retry_after_is_honoured(kube: Any) -> None:
    c = await client_for(kube)
    try:
        await ensure_namespace(c, "kc-429")
        kube.clear_requests()
        kube.inject(status=429, retry_after=1, count=2, match="/namespaces/kc-429")
        t0 = time.monotonic()
        got = await c.get(RESOURCES["namespaces"], "kc-429")
        elapsed = time.monotonic() - t0
    finally:
        await c.close()
    assert got["metadata"]["name"] == "kc-429"
    reqs = requests_to(kube, "/namespaces/kc-429")
    assert [r["code"] for r in reqs] == [429, 429, 200]
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(reqs)]
    assert all(g >= 0.9 for g in gaps), gaps
    assert 1.9 <= elapsed < 4.0


async def test_429_longer_than_deadline_fails_fast(kube: Any) -> None:
    c = await client_for(kube)
    try:
        await ensure_namespace(c, "kc-429d")
        kube.inject(status=429, retry_after=5, count=1, match="/namespaces/kc-429d")
        t0 = time.monotonic()
        with pytest.raises(KubeError) as ei, KubeClient.deadline(1.0):
            await c.get(RESOURCES["namespaces"], "kc-429d")
        assert time.monotonic() - t0 < 0.8
    finally:
        await c.close()
    assert ei.value.status == 429
    assert "deadline" in ei.value.message


async def test_rate_limiter_refuses_to_wait_past_deadline(kube: Any) -> None:
    c = await client_for(kube, qps=1, burst=1)
    try:
        await ensure_namespace(c, "kc-deadline")
        kube.clear_requests()
        await c.get(RESOURCES["namespaces"], "kc-deadline")
        t0 = time.monotonic()
        with pytest.raises(KubeError) as ei, KubeClient.deadline(0.3):
            await c.get(RESOURCES["namespaces"], "kc-deadline")
        assert time.monotonic() - t0 < 0.25  # refused up front, not after waiting 1 s
        # without a caller deadline the per-request timeout applies the same way
        c.request_timeout = 0.2
        with pytest.raises(KubeError, match="client rate limiter Wait would exceed context deadline"):
            await c.get(RESOURCES["namespaces"], "kc-deadline")
    finally:
        await c.close()
    assert ei.value.status == 0 and ei.value.reason == "ClientRateLimiterDeadline"
    assert "client rate limiter Wait would exceed context deadline" in str(ei.value)
    assert len(requests_to(kube, "/namespaces/kc-deadline")) == 1


async def test_5xx_backs_off_and_retries_but_never_repeats_a_create(kube: Any) -> None:
    c = await client_for(kube)
    c.retry_base = 0.1
    try:
        await ensure_namespace(c, "kc-5xx")
        kube.clear_requests()
        kube.inject(status=503, count=2, match="/namespaces/kc-5xx")
        got = await c.get(RESOURCES["namespaces"], "kc-5xx")
        assert got["metadata"]["name"] == "kc-5xx"
        reqs = requests_to(kube, "/namespaces/kc-5xx")
        assert [r["code"] for r in reqs] == [503, 503, 200]
        # jittered exponential: second wait longer than the first's lower bound
        assert reqs[1]["t"] - reqs[0]["t"] >= 0.09 and reqs[2]["t"] - reqs[1]["t"] >= 0.19
        kube.clear_requests()
        kube.inject(status=500, count=1, match="/namespaces/kc-5xx/services")
        with pytest.raises(KubeError) as ei:
            await c.create_object(SVC, service("once", "kc-5xx"))
        assert ei.value.status == 500
        assert len(requests_to(kube, "/namespaces/kc-5xx/services", verb="create")) == 1
    finally:
        await c.close()


async def test_connection_errors_retry_until_the_deadline() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from kubernetes_asyncio.client import Configuration

    cfg = Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    c = KubeClient(cfg, limiter=TokenBucket(1000, 1000))
    c.retry_base = 0.05
    before = metric("l2lb_kube_requests_total", verb="get", resource="namespaces", code="error")
    try:
        t0 = time.monotonic()
        with pytest.raises(KubeError) as ei, KubeClient.deadline(0.8):
            await c.get(RESOURCES["namespaces"], "x")
        elapsed = time.monotonic() - t0
    finally:
        await c.close()
    assert ei.value.status == 0 and ei.value.reason in ("ConnectionError", "Timeout")
    assert elapsed <= 1.0
    assert metric("l2lb_kube_requests_total", verb="get", resource="namespaces", code="error") - before >= 3


async def test_kube_args_flags_env_and_config_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import argparse

    from l2lb.adapters.kube.client import add_kube_args, client_from_args

    monkeypatch.setenv("L2LB_KUBE_QPS", "7.5")
    monkeypatch.setenv("L2LB_KUBE_BURST", "9")
    monkeypatch.setenv("L2LB_KUBECONFIG", str(tmp_path / "missing"))
    p = argparse.ArgumentParser()
    add_kube_args(p)
    a = p.parse_args([])
    assert (a.kube_qps, a.kube_burst, a.kubeconfig) == (7.5, 9, str(tmp_path / "missing"))
    b = p.parse_args(["--kube-qps", "3", "--kube-burst", "4", "--kubeconfig", "/x"])
    assert (b.kube_qps, b.kube_burst, b.kubeconfig) == (3.0, 4, "/x")
    with pytest.raises(KubeError) as ei:
        await client_from_args(a)
    assert ei.value.reason == "ConfigError" and "missing" in ei.value.message
    (tmp_path / "bad").write_text("not: [a kubeconfig")
    with pytest.raises(KubeError, match="ConfigError"):
        await KubeClient.create(str(tmp_path / "bad"))
    b.kube_burst = 0
    with pytest.raises(KubeError, match="burst"):
        await client_from_args(b)
