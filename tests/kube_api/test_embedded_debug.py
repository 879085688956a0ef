"""Embedded server only: fault injection, request log, state file across restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.kube_api.helpers import NS, SVC, assert_status, rv, service
from tests.support.kube import ApiServerProcess

pytestmark = pytest.mark.kube
P = SVC.format(ns=NS)
PD = SVC.format(ns="default")


@pytest.fixture
def dbg(kube):
    kube.require_debug()
    return kube


def test_429_with_retry_after_then_recovers(dbg):
    dbg.inject(status=429, retry_after=2, count=2, match="/services")
    codes = []
    for _ in range(3):
        code, body, headers = dbg.http("GET", P)
        codes.append(code)
        if code == 429:
            assert headers.get("Retry-After") == "2"
            assert_status(body, 429, "TooManyRequests")
    assert codes == [429, 429, 200]
    code, _, _ = dbg.http("GET", "/api/v1/nodes")
    assert code == 200


def test_fault_matches_path_and_verb(dbg):
    dbg.inject(status=503, match="/services", verb="create")
    code, body, _ = dbg.http("POST", P, service("f1"))
    assert code == 503
    assert_status(body, 503)
    code, _, _ = dbg.http("GET", P)
    assert code == 200
    code, _, _ = dbg.http("POST", "/api/v1/nodes", {"metadata": {"name": "n-ok"}})
    assert code == 201
    dbg.clear_faults()
    code, _, _ = dbg.http("POST", P, service("f1"))
    assert code == 201


def test_latency_fault(dbg):
    dbg.inject(latency_ms=300, count=1, match="/nodes")
    t0 = time.monotonic()
    code, _, _ = dbg.http("GET", "/api/v1/nodes")
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    dbg.http("GET", "/api/v1/nodes")
    fast = time.monotonic() - t0
    assert code == 200 and slow >= 0.3 and fast < 0.3


def test_metrics_count_requests(dbg):
    dbg.http("GET", "/api/v1/nodes")
    code, text, _ = dbg.http("GET", "/metrics")
    assert code == 200 and isinstance(text, str)
    line = next(ln for ln in text.splitlines()
                if ln.startswith("l2lb_apiserver_requests_total{") and 'verb="list"' in ln and 'resource="nodes"' in ln)
    assert float(line.rsplit(" ", 1)[1]) >= 1


def test_bad_fault_is_400(dbg):
    code, err, _ = dbg.http("POST", "/l2lb-debug/faults", {"status": 200})
    assert code == 400
    code, err, _ = dbg.http("POST", "/l2lb-debug/faults", {"stauts": 500})
    assert code == 400 and "stauts" in err["message"]


def test_request_log_records_verbs_resources_codes(dbg):
    t0 = time.time()
    dbg.http("POST", P, service("rl"))
    dbg.http("GET", P + "/rl")
    dbg.http("GET", P)
    dbg.http("PATCH", P + "/rl/status", {"status": {}}, content_type="application/merge-patch+json")
    dbg.http("PUT", P + "/rl", {"metadata": {"name": "rl", "resourceVersion": "1"}, "spec": {"ports": [{"port": 1}]}})
    dbg.http("DELETE", P + "/rl")
    dbg.http("GET", P + "/rl")
    log = [(e["verb"], e["resource"], e["code"]) for e in dbg.requests()]
    assert log == [("create", "services", 201), ("get", "services", 200), ("list", "services", 200),
                   ("patch", "services", 200), ("update", "services", 409), ("delete", "services", 200),
                   ("get", "services", 404)]
    ents = dbg.requests()
    assert ents[3]["subresource"] == "status" and ents[0]["path"] == P
    assert all(t0 - 1 <= e["t"] <= time.time() + 1 for e in ents)
    dbg.clear_requests()
    assert dbg.requests() == []


async def test_request_log_counts_watches_at_start(dbg):
    from tests.kube_api.helpers import watch

    async with watch(dbg, P, resourceVersion="1") as w:
        assert w.status == 200
        await asyncio.sleep(0.1)
        log = await asyncio.to_thread(dbg.requests)
    assert [(e["verb"], e["resource"], e["code"]) for e in log] == [("watch", "services", 200)]


def test_state_file_survives_restart_and_rvs_stay_monotonic(tmp_path):
    p = ApiServerProcess(tmp_path / "s", state_file=tmp_path / "state.json")
    p.start()
    try:
        h = p.handle
        code, a, _ = h.http("POST", PD, service("persist", ns="default"))
        assert code == 201
        time.sleep(0.5)
        p.stop()  # clean stop: SIGTERM writes the final state
        p.start()
        code, a2, _ = h.http("GET", PD + "/persist")
        assert code == 200 and a2["metadata"]["uid"] == a["metadata"]["uid"] and rv(a2) == rv(a)
        code, b, _ = h.http("POST", PD, service("after", ns="default"))
        assert rv(b) > rv(a)
        time.sleep(0.6)  # let the debounced writer flush
        p.stop(kill=True)  # unclean: resourceVersions jump so none is reused
        p.start()
        code, _, _ = h.http("GET", PD + "/after")
        assert code == 200
        code, c, _ = h.http("POST", PD, service("third", ns="default"))
        assert rv(c) > rv(b)
    finally:
        p.stop()


def test_corrupt_state_file_is_moved_aside(tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"objects": {"|services": [1, 2]}')
    p = ApiServerProcess(tmp_path / "c", state_file=state)
    p.start()
    try:
        code, lst, _ = p.handle.http("GET", "/api/v1/namespaces")
        assert code == 200 and "default" in [i["metadata"]["name"] for i in lst["items"]]
        assert list(tmp_path.glob("state.json.corrupt-*")), "the unreadable file is kept for inspection"
    finally:
        p.stop()


def test_busy_port_is_a_clear_error(tmp_path, apiserver_process):
    import subprocess
    import sys

    cp = subprocess.run([sys.executable, "-m", "l2lb.cli", "apiserver", "--port", str(apiserver_process.port)],
                        capture_output=True, text=True, timeout=30, check=False)
    assert cp.returncode == 1
    assert "cannot listen" in cp.stderr and "Traceback" not in cp.stderr
