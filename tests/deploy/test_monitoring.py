"""Alerts and dashboard of charts/l2lb: the rule file passes `promtool check rules` and its unit tests
(`promtool test rules`, tests/deploy/prometheus/), and every metric the alerts and the Grafana dashboard
name is one the services REALLY export: allocator and leases run as processes against a real redis-server
and the embedded Kubernetes API server, the announcer in a network namespace of its own; their /metrics are
scraped and compared with the names in the queries. The list of names is read from those live outputs,
never written down here, so metrics added later (l2lb_announcer_peers_*, ...) are simply there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_support import CHART
from tests.deploy.support import ROOT
from tests.support.kube import KubeHandle, free_port
from tests.support.procs import http_get, stop_process

RULES = CHART / "files" / "prometheus" / "l2lb-rules.yaml"
RULE_TESTS = ROOT / "tests" / "deploy" / "prometheus" / "l2lb-rules.test.yaml"
DASHBOARD = CHART / "files" / "grafana" / "l2lb.json"
# metrics of other exporters the alerts may read (kube-state-metrics); anything else must be l2lb's own
FOREIGN_METRICS = {"kube_daemonset_status_number_unavailable"}

PROMQL_WORDS = {
    # aggregations, functions and keywords that look like identifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "max_over_time", "min_over_time",
    "avg_over_time", "sum_over_time", "count_over_time", "last_over_time", "absent", "absent_over_time", "vector",
    "scalar", "clamp_min", "clamp_max", "abs", "time", "label_replace", "changes", "resets", "inf", "nan",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        msg = "promtool not installed (Debian package prometheus; bash scripts/dev setup installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


# --------------------------------------------------------------------------- promtool
def test_rules_check() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"SUCCESS: (\d+) rules found", out.stdout)


def test_rules_unit_tests_cover_every_alert() -> None:
    out = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {t["alertname"] for g in tests for t in g.get("alert_rule_test", []) if t["exp_alerts"]}
    silent = {t["alertname"] for g in tests for t in g.get("alert_rule_test", []) if not t["exp_alerts"]}
    assert alerts - fired == set(), "alerts without a test that makes them fire"
    assert alerts - silent == set(), "alerts without a test that they stay silent (healthy twin, or still pending)"


def test_rules_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong threshold in the rules makes the unit tests fail (they pin behaviour, not only syntax)."""
    broken = RULES.read_text().replace(">= 0.9", ">= 0.95")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    tests = RULE_TESTS.read_text().replace("../../../charts/l2lb/files/prometheus/l2lb-rules.yaml", "rules.yaml")
    (tmp_path / "rules.test.yaml").write_text(tests)
    out = subprocess.run([promtool(), "test", "rules", str(tmp_path / "rules.test.yaml")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode != 0 and "L2lbPoolAlmostFull" in out.stdout + out.stderr


# --------------------------------------------------------------------------- names in the queries
def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (label matchers, grouping clauses, strings, functions and
    keywords removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\$__\w+", "", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if word.lower() in PROMQL_WORDS or rest.startswith("("):
            continue
        if re.fullmatch(r"\d+(ms|s|m|h|d)?", word) or word in ("e", "E"):
            continue
        names.add(word)
    return names


def grouping_labels(expr: str) -> set[str]:
    return {lbl.strip() for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr) for lbl in m.group(1).split(",")
            if lbl.strip()}


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def rule_queries() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_query_parser() -> None:
    assert metric_names('max by (pool) (a_b{state="used"}) / max by (pool) (c{x="y"} > 0) >= 0.9') == {"a_b", "c"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1") == {"h_bucket"}
    assert metric_names("(sum(x) or vector(0)) < 1") == {"x"}
    assert metric_names("(max_over_time(n[1h]) > n) and on (instance) (l == 1)") == {"n", "l"}
    assert grouping_labels("sum by (verb, resource) (rate(x[1m]))") == {"verb", "resource"}


def test_dashboard_json_is_generated_and_consistent() -> None:
    out = subprocess.run([sys.executable, str(CHART / "files/grafana/generate.py"), "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()
    assert len(dashboard_queries()) >= 15


# --------------------------------------------------------------------------- live /metrics
class Service:
    def __init__(self, name: str, args: list[str], tmp: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "l2lb.cli", *args, "--http-port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def get(self, path: str) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.port}{path}", 2)

    def wait(self, cond: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}:\n{self.log()}"
            if cond():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: {what} not within {timeout}s\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_process(self.proc, wait=15)
        self._log.close()


def exported(text: str) -> dict[str, set[str]]:
    """metric family or sample name -> label names seen, from a Prometheus text exposition."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            out.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s", line)
            if m:
                labels = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', m.group(3) or ""))
                out.setdefault(m.group(1), set()).update(labels)
    return out


@pytest.fixture
def services(kube: KubeHandle, redis_url: str, tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.stop()


def _ns_get(ns: str, host: str, port: int, path: str, token: str | None = None) -> tuple[int, str]:
    """GET inside network namespace ``ns`` (the announcer's address there is not reachable from here)."""
    import socket

    from l2lb.lab.netns import entered

    with entered(ns):
        s = socket.create_connection((host, port), timeout=2)
    with s:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            if not int(size_s, 16):
                break
            out, rest = out + rest[:int(size_s, 16)], rest[int(size_s, 16) + 2:]
        body = out
    return int(head.split(b" ", 2)[1]), body.decode()


def _announcer_metrics(tmp_path: Path) -> str:
    """The announcer's /metrics from a real announcer answering one VIP in a namespace of its own, run the
    way the chart runs it with announcer.metrics.expose: on the node's address, behind a bearer token
    (/metrics refused without it, the probes open)."""
    from tests.net.announcer_helpers import HTTP_PORT, AnnouncerProc, private_topology

    gen = private_topology()
    topo = next(gen)
    try:
        host = topo.add_host("n1", ifname="enp0s25", addrs=["198.51.100.2/24"])
        token = tmp_path / "token"
        token.write_text("s3cret-token\n")
        static = {"vips": [{"ip": "198.51.100.10", "epoch": 1, "interfaces": ["enp0s25"]}], "ttl_ms": 60000}
        ann = AnnouncerProc(host, "n1", tmp_path, static=static,
                            extra=["--http-host", "198.51.100.2", "--http-token-file", str(token)])
        try:
            deadline = time.monotonic() + 20
            text = ""
            while time.monotonic() < deadline:
                assert ann.proc.poll() is None, ann.log()
                try:
                    code, text = _ns_get(host.ns, "198.51.100.2", HTTP_PORT, "/metrics", "s3cret-token")
                except OSError:
                    code = 0
                if code == 200 and "l2lb_announcer_vips 1.0" in text:
                    break
                time.sleep(0.2)
            assert "l2lb_announcer_vips 1.0" in text, ann.log()
            assert _ns_get(host.ns, "198.51.100.2", HTTP_PORT, "/metrics")[0] == 401
            assert _ns_get(host.ns, "198.51.100.2", HTTP_PORT, "/metrics", "wrong")[0] == 401
            assert _ns_get(host.ns, "198.51.100.2", HTTP_PORT, "/readyz")[0] == 200  # the kubelet's probe
            return text
        finally:
            ann.stop()
    finally:
        with __import__("contextlib").suppress(StopIteration):
            next(gen)


@pytest.mark.kube
@pytest.mark.net
async def test_every_queried_metric_is_really_exported(services: list[Service], kube: KubeHandle, redis_url: str,
                                                       tmp_path: Path) -> None:
    """allocator + leases (real processes, real Redis, the embedded API server) with one pool, one Service
    and one node heartbeating over the bus (so labelled series exist: node=, reason=), and a real announcer
    answering a VIP in its own namespace."""
    from l2lb.adapters.bus.client import Bus
    from tests.leases.fakes import FakeAnnouncer

    prefix = f"mon{os.getpid() % 10000}"
    common = ["--kubeconfig", kube.kubeconfig, "--namespace", "default", "--redis", redis_url, "--redis-prefix", prefix,
              "--kube-qps", "200", "--kube-burst", "400", "--le-lease-duration", "2", "--le-renew-deadline", "1.5",
              "--le-retry-period", "0.3"]
    for crd in sorted((ROOT / "k8s" / "crds").glob("l2lb.io_*.yaml")):
        kube.apply(crd)
    kube.apply(yaml.safe_dump_all([
        {"apiVersion": "l2lb.io/v1alpha1", "kind": "LoadBalancerIPPool", "metadata": {"name": "mon"},
         "spec": {"blocks": [{"cidr": "203.0.113.0/30"}]}},
        {"apiVersion": "l2lb.io/v1alpha1", "kind": "L2AnnouncementPolicy", "metadata": {"name": "mon"}, "spec": {}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mon", "namespace": "default"},
         "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP"}]}},
    ]))
    alloc = Service("allocator", ["allocator", *common, "--instance", "alloc-a", "--pool-kinds", "l2lb"], tmp_path)
    services.append(alloc)
    leases = Service("leases", ["leases", *common, "--instance", "leases-a", "--policy-kinds", "l2lb",
                                "--startup-grace-ms", "100"], tmp_path)
    services.append(leases)
    bus = await Bus.connect(redis_url, prefix=prefix)
    node = FakeAnnouncer(bus, "node-1")
    await node.start()
    try:
        await asyncio.to_thread(
            alloc.wait, lambda: 'l2lb_allocator_pool_ips{pool="mon",state="used"} 1.0' in alloc.get("/metrics")[1],
            "the Service's IP counted in the pool")
        await asyncio.to_thread(
            leases.wait, lambda: 'l2lb_leases_assignments{node="node-1"} 1.0' in leases.get("/metrics")[1],
            "the IP assigned to node-1")
        texts = [alloc.get("/metrics")[1], leases.get("/metrics")[1]]
    finally:
        await node.stop()
        await bus.close()
    texts.append(await asyncio.to_thread(_announcer_metrics, tmp_path))
    live: dict[str, set[str]] = {}
    for text in texts:
        for name, labels in exported(text).items():
            live.setdefault(name, set()).update(labels)
    assert len([n for n in live if n.startswith("l2lb_")]) > 40, sorted(live)

    problems = []
    for source, queries in (("dashboard", dashboard_queries()), ("alert rules", rule_queries())):
        for q in queries:
            names = metric_names(q)
            assert names, q
            for n in names:
                if n in FOREIGN_METRICS and source == "alert rules":
                    continue
                if n not in live:
                    problems.append(f"{source}: {n} is not exported by any service ({' '.join(q.split())})")
            labels = set().union(*(live.get(n, set()) for n in names)) | {"instance", "job", "namespace", "pod"}
            for lbl in grouping_labels(q) - {"le"}:
                if lbl not in labels:
                    problems.append(f"{source}: label {lbl!r} is on none of {sorted(names)} ({' '.join(q.split())})")
    assert problems == [], "\n".join(problems)
    # the check is not blind
    assert metric_names("rate(l2lb_no_such_metric_total[5m])") - set(live) == {"l2lb_no_such_metric_total"}
