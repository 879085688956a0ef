"""``l2lb leases`` as a process: flags, HTTP endpoints, clean shutdown, clear errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from l2lb.adapters.bus.client import Bus
from services.leases.main import main
from tests.leases.fakes import FakeAnnouncer
from tests.leases.harness import wait_for
from tests.support.procs import http_get
from tests.support.redis_server import free_port


def test_bad_flags_exit_2_with_a_clear_message(capsys: object) -> None:
    assert main(["--no-kube", "--ttl-ms", "100", "--renew-ms", "250"]) == 2
    assert main(["--no-kube", "--policy-kinds", "cilium,bogus"]) == 2
    assert main(["--no-kube", "--policy-file", "/nonexistent/policies.yaml"]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "--ttl-ms (100) must be larger than --renew-ms (250)" in err
    assert "unknown kind(s) ['bogus']" in err
    assert "--policy-file /nonexistent/policies.yaml" in err


async def test_process_serves_status_metrics_and_stops_cleanly(redis_url: str, tmp_path: Path) -> None:
    pol = tmp_path / "policy.yaml"
    pol.write_text("apiVersion: l2lb.io/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: all}\nspec: {}\n")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "l2lb.cli", "leases", "--no-kube", "--policy-file", str(pol), "--redis", redis_url,
        "--redis-prefix", "t", "--http-port", str(port), "--startup-grace-ms", "100", "--instance", "cli",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    bus = await Bus.connect(redis_url, prefix="t")
    ann = FakeAnnouncer(bus, "node-x")
    try:
        await ann.start()
        from l2lb.core.messages import Allocation

        await bus.publish(bus.keys.allocations, Allocation(key="ns/a", namespace="ns", name="a", uid="u",
                                                           generation=1, seq=1, term=1, ips=("203.0.113.9",)))
        await wait_for(lambda: "203.0.113.9" in ann.serving(), 15, step=0.05)
        base = f"http://127.0.0.1:{port}"
        code, body = await asyncio.to_thread(http_get, base + "/readyz", 2)
        assert code == 200, body
        code, body = await asyncio.to_thread(http_get, base + "/v1/status", 2)
        st = json.loads(body)["leases"]
        assert st["role"] == "leader"
        assert st["assignments"][0]["ip"] == "203.0.113.9" and st["assignments"][0]["node"] == "node-x"
        assert st["nodes"][0]["node"] == "node-x" and st["nodes"][0]["alive"]
        code, body = await asyncio.to_thread(http_get, base + "/metrics", 2)
        assert 'l2lb_leases_assignments{node="node-x"} 1.0' in body
        assert 'l2lb_leases_moves_total{reason="new"} 1.0' in body
        assert "l2lb_leases_nodes_alive 1.0" in body and "l2lb_leases_election_seconds_count" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
        await ann.stop()
        await bus.close()
    assert proc.returncode == 0, out.decode()[-3000:]
