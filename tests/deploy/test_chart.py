"""charts/l2lb: the Helm chart renders exactly what k8s/ renders (one source of truth, checked), lints
strictly, renders valid Kubernetes objects for a matrix of values, refuses bad values with a message
naming the value, and works the way the seed's user deploys Cilium: kustomize ``helmCharts:`` pulling the
chart from a chart repository (kubectl kustomize --enable-helm, kubectl v1.36.3 of tests/e2e).

Helm is v4 built from its Go module (tests/support/helm); the Kubernetes schemas are kubernetes-validate's
(tests/deploy/test_k8s.py), the real kube-apiserver dry-run is tests/deploy/test_k8s_real.py's.
"""

from __future__ import annotations

import copy
import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_support import (
    CHART,
    cleanup_helm_homes,
    compare,
    helm,
    helm_bin,
    render,
    template,
    values_file,
)
from tests.deploy.support import NAMESPACE, OVERLAYS, ROOT, built, by_kind, kustomize_cmd, load_docs, one
from tests.deploy.test_k8s import KUBE_VERSIONS, crd_kinds, secret_keys, validation_errors

pytestmark = pytest.mark.skipif(kustomize_cmd() is None, reason="needs kubectl or kustomize")

# the kustomize flow's Namespace and Secret, as values: what makes a chart render equal to k8s/
AS_KUSTOMIZE: dict[str, Any] = {"namespace": {"create": True}, "redis": {"auth": {"existingSecret": "l2lb-redis"}}}
# each k8s/ overlay and the values that switch the chart to it
OVERLAY_VALUES: dict[str, dict[str, Any]] = {
    "base": {},
    "single-node": {"redis": {"mode": "single"}},
    "external-redis": {"redis": {"mode": "external"}},
    "cilium": {"migration": {"mode": "cilium"}},
    "metallb-migration": {"migration": {"mode": "metallb"}},
}


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@pytest.fixture(scope="module", autouse=True)
def _helm_homes() -> Iterator[None]:
    yield
    cleanup_helm_homes()


# --------------------------------------------------------------------------- one source of truth
def test_defaults_render_k8s_base(tmp_path: Path) -> None:
    """`helm template` with no values = `kustomize build k8s/base`, except the two objects whose making
    differs on purpose: Helm creates Secret l2lb-redis (kustomize users run deploy/k8s/redis-secret.sh)
    and does not own the Namespace (Helm installs into an existing one)."""
    problems = compare(render(tmp_path=tmp_path), built("base"), chart_only={("Secret", "l2lb-redis")},
                       kustomize_only={("Namespace", NAMESPACE)})
    assert problems == [], "the chart and k8s/base drifted apart:\n" + "\n".join(problems)


@pytest.mark.parametrize("overlay", list(OVERLAY_VALUES))
def test_each_overlay_is_a_value(overlay: str, tmp_path: Path) -> None:
    assert set(OVERLAY_VALUES) == set(OVERLAYS), "a k8s/overlays entry without chart values (or the reverse)"
    docs = render(merged(AS_KUSTOMIZE, OVERLAY_VALUES[overlay]), tmp_path=tmp_path)
    problems = compare(docs, built(overlay))
    assert problems == [], f"chart with {OVERLAY_VALUES[overlay]} != k8s {overlay}:\n" + "\n".join(problems)


def test_drift_check_catches_a_change(tmp_path: Path) -> None:
    """The comparison is not blind: one changed field, a missing object, a changed script all show."""
    chart = render(AS_KUSTOMIZE, tmp_path=tmp_path)
    base = built("base")
    assert compare(chart, base) == []
    edited = copy.deepcopy(base)
    one(edited, "Deployment", "l2lb-leases")["spec"]["template"]["spec"]["containers"][0]["args"].append("--x")
    assert any("Deployment/l2lb-leases" in p and "args" in p for p in compare(chart, edited))
    assert any("in the kustomize build only" in p
               for p in compare([d for d in chart if d["kind"] != "PodDisruptionBudget"], base))
    edited = copy.deepcopy(base)
    cm = next(d for d in edited if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("l2lb-redis-"))
    cm["data"]["start-redis.sh"] += "\n# changed\n"
    assert any("start-redis.sh" in p for p in compare(chart, edited))


def test_crds_and_redis_scripts_are_k8s_files() -> None:
    """Helm reads only files inside the chart: crds/ and files/redis are symbolic links to k8s/crds and
    k8s/base/redis (Helm follows them, `helm package` stores their content), never copies."""
    own = sorted(p.name for p in (ROOT / "k8s" / "crds").glob("l2lb.io_*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == own
    for name in own:
        link = CHART / "crds" / name
        assert link.is_symlink() and link.resolve() == (ROOT / "k8s" / "crds" / name).resolve(), link
    redis = CHART / "files" / "redis"
    assert redis.is_symlink() and redis.resolve() == (ROOT / "k8s" / "base" / "redis").resolve()


def test_created_secret_has_the_install_scripts_keys(tmp_path: Path) -> None:
    docs = render(tmp_path=tmp_path)
    secret = one(docs, "Secret", "l2lb-redis")
    data = secret["stringData"]
    assert set(data) == secret_keys()
    pw = {u: data[f"{u}-password"] for u in ("allocator", "leases", "announcer", "replication", "sentinel")}
    assert len(set(pw.values())) == 5 and all(len(p) >= 32 and p.isalnum() for p in pw.values())
    for svc in ("allocator", "leases", "announcer"):
        assert data[f"{svc}-dsn"] == (
            f"redis+sentinel://{svc}:{pw[svc]}@l2lb-redis-sentinel.{NAMESPACE}.svc:26379/l2lb/0"
            f"?sentinel_password={pw['sentinel']}&socket_timeout=2&connect_timeout=1")
        assert data[f"{svc}-dsn-single"] == f"redis://{svc}:{pw[svc]}@l2lb-redis.{NAMESPACE}.svc:6379/0"
    # another namespace: the DSNs follow it
    other = one(render(tmp_path=tmp_path, namespace="lb"), "Secret", "l2lb-redis")["stringData"]
    assert "@l2lb-redis-sentinel.lb.svc:26379/" in other["leases-dsn"]
    # external Redis: the URL given, each service as its own ACL user, no Redis objects
    ext = render({"redis": {"mode": "external", "external": {"url": "rediss://redis.example:6380/0?ssl_ca_certs=/ca.pem"}}},
                 tmp_path=tmp_path)
    s = one(ext, "Secret", "l2lb-redis")["stringData"]
    assert s["leases-dsn"] == f"rediss://leases:{s['leases-password']}@redis.example:6380/0?ssl_ca_certs=/ca.pem"
    assert not by_kind(ext, "StatefulSet")
    # a Secret of your own: not rendered, every reference names it
    own = render({"redis": {"auth": {"existingSecret": "my-redis"}}}, tmp_path=tmp_path)
    assert not by_kind(own, "Secret")
    pods = [w["spec"]["template"]["spec"] for w in own if w["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for pod in pods
            for c in pod["containers"] + pod.get("initContainers", [])
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {"my-redis"}


# --------------------------------------------------------------------------- lint, values matrix, schemas
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single": {"redis": {"mode": "single"}},
    "external": {"redis": {"mode": "external", "external": {"url": "redis+sentinel://s1:26379,s2:26379/mymaster/0"}}},
    "cilium": {"migration": {"mode": "cilium"}, "namespace": {"create": True}},
    "metallb": {"migration": {"mode": "metallb"}, "announcer": {"nodeSelector": {"kubernetes.io/os": "linux"}}},
    "tuned": {
        "images": {"l2lb": {"repository": "registry.example/l2lb", "tag": "0.2.0", "pullPolicy": "Always"}},
        "imagePullSecrets": [{"name": "regcred"}],
        "kube": {"qps": 50, "burst": 100},
        "logging": {"format": "text", "level": "debug"},
        "allocator": {"replicas": 3, "leaderElection": {"leaseDuration": 8, "renewDeadline": 5, "retryPeriod": 1},
                      "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
                      "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                       "effect": "NoSchedule"}]},
        "leases": {"leaderElection": {"leaseDuration": 4, "renewDeadline": 3, "retryPeriod": 1}},
        "announcer": {"interfaces": ["enp0s25", "eth[0-9]+"], "optIn": True,
                      "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}},
        "redis": {"ha": {"replicas": 5}, "storage": {"size": "2Gi", "storageClassName": "local-path"},
                  "dnsConfig": {"options": [{"name": "timeout", "value": "2"}, {"name": "ndots", "value": "1"}]}},
    },
    "monitoring": {"announcer": {"metrics": {"expose": True}},
                   "metrics": {"podMonitor": {"enabled": True, "labels": {"release": "prom"}},
                               "serviceMonitor": {"enabled": True},
                               "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
                               "dashboard": {"enabled": True}}},
}
MONITORING_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("case", list(MATRIX))
def test_lint_strict(case: str, tmp_path: Path) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if MATRIX[case]:
        args += ["-f", str(values_file(MATRIX[case], tmp_path))]
    out = helm(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", list(MATRIX))
def test_matrix_valid_against_kubernetes_schema(case: str, version: str, tmp_path: Path) -> None:
    docs = render(MATRIX[case], tmp_path=tmp_path)
    crds = crd_kinds(docs)
    errors = [e for d in docs if d["kind"] not in MONITORING_KINDS for e in validation_errors(d, version, crds)]
    assert errors == []
    for d in docs:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition"):
            assert "namespace" not in d["metadata"]
        else:
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]


def test_matrix_values_reach_the_objects(tmp_path: Path) -> None:
    """The values do what they say (not only render something valid)."""
    docs = render(MATRIX["tuned"], tmp_path=tmp_path)
    alloc = one(docs, "Deployment", "l2lb-allocator")
    pod = alloc["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert alloc["spec"]["replicas"] == 3
    assert ctr["image"] == "registry.example/l2lb:0.2.0" and ctr["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert ctr["args"][-3:] == ["--le-lease-duration=8", "--le-renew-deadline=5", "--le-retry-period=1"]
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    cfg = one(docs, "ConfigMap", "l2lb-config")["data"]
    assert (cfg["L2LB_KUBE_QPS"], cfg["L2LB_KUBE_BURST"], cfg["L2LB_LOG_FORMAT"]) == ("50", "100", "text")
    ann = one(docs, "DaemonSet", "l2lb-announcer")["spec"]["template"]["spec"]
    assert ann["containers"][0]["args"][-2:] == ["--interfaces=enp0s25", "--interfaces=eth[0-9]+"]
    assert ann["nodeSelector"] == {"l2lb.io/announcer": "true"}
    assert ann["containers"][0]["resources"]["limits"] == {"memory": "512Mi"}
    sts = one(docs, "StatefulSet", "l2lb-redis")
    assert sts["spec"]["replicas"] == 5
    env = {e["name"]: e.get("value") for c in sts["spec"]["template"]["spec"]["containers"] for e in c["env"]}
    assert env["L2LB_REDIS_REPLICAS"] == "5"
    # a Service per Redis pod (their ClusterIPs are what Redis and the sentinels use: peers.sh)
    per_pod = {s["metadata"]["name"]: s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"]
               for s in by_kind(docs, "Service") if "statefulset.kubernetes.io/pod-name" in s["spec"]["selector"]}
    assert per_pod == {f"l2lb-redis-{i}": f"l2lb-redis-{i}" for i in range(5)}
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "local-path" and claim["resources"]["requests"]["storage"] == "2Gi"
    assert sts["spec"]["template"]["spec"]["dnsConfig"] == {"options": [{"name": "timeout", "value": "2"},
                                                                        {"name": "ndots", "value": "1"}]}
    # the announcer flags parse as the announcer parses them
    from services.announcer.main import build_parser

    args = build_parser().parse_args(
        [a.replace("$(NODE_NAME)", "n1").replace("$(L2LB_ANNOUNCER_HTTP_PORT)", "9473")
         .replace("$(L2LB_HEARTBEAT_INTERVAL_MS)", "100").replace("$(L2LB_GARP_COUNT)", "5")
         .replace("$(L2LB_GARP_INTERVAL_MS)", "1000").replace("$(L2LB_LOG_FORMAT)", "json")
         .replace("$(L2LB_LOG_LEVEL)", "info") for a in ann["containers"][0]["args"][1:]])
    assert args.interfaces == ["enp0s25", "eth[0-9]+"]
    mon = render(MATRIX["monitoring"], tmp_path=tmp_path)
    kinds = {d["kind"] for d in mon}
    assert kinds >= MONITORING_KINDS
    pm = one(mon, "PodMonitor", "l2lb")
    assert pm["metadata"]["labels"]["release"] == "prom" and pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    # announcers exposed: on the node's address with a token the PodMonitor sends; probes without a host
    ann_pm = one(mon, "PodMonitor", "l2lb-announcer")["spec"]
    assert ann_pm["podMetricsEndpoints"][0]["authorization"]["credentials"] == {"name": "l2lb-announcer-metrics",
                                                                                 "key": "token"}
    assert ann_pm["selector"]["matchLabels"]["app.kubernetes.io/component"] == "announcer"
    token = one(mon, "Secret", "l2lb-announcer-metrics")["stringData"]["token"]
    assert len(token) >= 32 and token.isalnum()
    ds = one(mon, "DaemonSet", "l2lb-announcer")["spec"]["template"]["spec"]
    actr = ds["containers"][0]
    assert "--http-host=$(HOST_IP)" in actr["args"] and "--http-token-file=/etc/l2lb-metrics/token" in actr["args"]
    assert "--http-host=127.0.0.1" not in actr["args"]
    assert "host" not in actr["readinessProbe"]["httpGet"] and "host" not in actr["livenessProbe"]["httpGet"]
    assert {"name": "metrics-token", "mountPath": "/etc/l2lb-metrics", "readOnly": True} in actr["volumeMounts"]
    assert build_parser().parse_args(["--http-token-file=/etc/l2lb-metrics/token"]).http_token_file
    rule = one(mon, "PrometheusRule", "l2lb")
    rules_file = yaml.safe_load((CHART / "files/prometheus/l2lb-rules.yaml").read_text())
    assert rule["spec"] == rules_file
    dash = next(d for d in mon if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "l2lb-grafana-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dash["data"]["l2lb.json"] == (CHART / "files/grafana/l2lb.json").read_text()


@pytest.mark.kube
def test_matrix_server_side_dry_run(kube_real: Any, tmp_path: Path) -> None:
    """Every matrix case through a REAL kube-apiserver (schema, defaulting, admission, RBAC escalation
    rules): `kubectl apply --dry-run=server`. The Prometheus Operator kinds are left out (no operator CRDs
    there; the rule itself goes through promtool below)."""
    from tests.deploy.test_k8s_real import kubectl

    kube_real.ensure_namespace(NAMESPACE)
    kubectl(kube_real, "apply", "--server-side", "--force-conflicts",
            *[f"--filename={p}" for p in sorted((CHART / "crds").glob("*.yaml"))])
    for case, values in MATRIX.items():
        docs = [d for d in render(values, tmp_path=tmp_path, crds=False) if d["kind"] not in MONITORING_KINDS]
        out = kubectl(kube_real, "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-",
                      stdin=yaml.safe_dump_all(docs))
        applied = [ln for ln in out.stdout.splitlines() if "(server dry run)" in ln]
        assert len(applied) == len(docs), f"{case}: {out.stdout}"


def test_rendered_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/dev installs it)")
    rule = one(render(MATRIX["monitoring"], tmp_path=tmp_path), "PrometheusRule", "l2lb")
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- bad values
BAD: list[tuple[str, list[str], list[str]]] = [
    # (what, --set arguments, every fragment the error must contain)
    ("unknown redis mode", ["redis.mode=cluster"], ["redis", "mode", "ha", "single", "external"]),
    ("too few Sentinel pods", ["redis.ha.replicas=2"], ["replicas", "3"]),
    ("negative qps", ["kube.qps=-1"], ["qps"]),
    ("typo in a key", ["annoucer.interfaces={eth0}"], ["annoucer"]),
    ("interfaces not a list", ["announcer.interfaces=eth0"], ["interfaces", "array"]),
    ("unknown migration", ["migration.mode=calico"], ["migration", "cilium", "metallb"]),
    ("bad pull policy", ["images.l2lb.pullPolicy=Sometimes"], ["pullPolicy"]),
    ("node label value not a string", ["announcer.nodeSelector.l2lb\\.io/announcer=true"], ["nodeSelector", "string"]),
    ("port out of range", ["ports.leases=70000"], ["/ports/leases", "maximum"]),
    ("credentials in the external URL", ["redis.mode=external", "redis.external.url=redis://u:p@h:6379/0"], ["url"]),
    ("external without a Redis", ["redis.mode=external"], ["redis.external.url", "redis.auth.existingSecret"]),
    ("external URL without external mode", ["redis.external.url=redis://h:6379/0"], ["redis.mode=external"]),
    ("lease shorter than renew deadline", ["allocator.leaderElection.leaseDuration=5"],
     ["allocator.leaderElection", "leaseDuration > renewDeadline > retryPeriod", "15"]),
    ("bad memory quantity", ["leases.resources.limits.memory=lots"], ["memory"]),
]


@pytest.mark.parametrize(("what", "sets", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_refused_with_a_clear_message(what: str, sets: list[str], fragments: list[str],
                                                     tmp_path: Path) -> None:
    extra: list[str] = []
    for s in sets:
        extra += ["--set", s]
    out = template(tmp_path=tmp_path, extra=tuple(extra), check=False)
    assert out.returncode != 0, f"{what}: accepted:\n{out.stdout[:500]}"
    assert out.stdout == ""
    for frag in fragments:
        assert frag in out.stderr, f"{what}: {frag!r} not in the error:\n{out.stderr}"


# --------------------------------------------------------------------------- the seed's GitOps workflow
def kubectl_136() -> str | None:
    """kubectl v1.36.3 (l2lb-kube of tests/e2e; its kustomize takes Helm 4), when built on this machine."""
    out = subprocess.run(["bash", str(ROOT / "tests/support/kube-cluster/build.sh"), "--path"], capture_output=True,
                         text=True, check=True, timeout=30)
    path = out.stdout.strip()
    return path if os.access(path, os.X_OK) else None


@pytest.fixture
def chart_repo(tmp_path: Path) -> Iterator[str]:
    """A Helm chart repository on 127.0.0.1 serving the packaged chart (what `repo:` points at)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    helm("package", str(CHART), "--destination", str(repo))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    server = Quiet(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    helm("repo", "index", str(repo), "--url", url)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def kustomize_bin() -> str | None:
    """`kustomize build` of sigs.k8s.io/kustomize/api (tests/support/kustomize), when built here."""
    out = subprocess.run(["bash", str(ROOT / "tests/support/kustomize/build.sh"), "--path"], capture_output=True,
                         text=True, check=True, timeout=30)
    path = out.stdout.strip()
    return path if os.access(path, os.X_OK) else None


def renderer(name: str) -> list[str]:
    if name == "kubectl":
        kubectl = kubectl_136()
        if kubectl is None:
            pytest.skip("kubectl v1.36.3 not built (bash tests/support/kube-cluster/build.sh; scripts/dev e2e)")
        return [kubectl, "kubectl", "kustomize"]
    kustomize = kustomize_bin()
    if kustomize is None:
        msg = "kustomize not built: bash tests/support/kustomize/build.sh (scripts/dev setup runs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return [kustomize, "build"]


@pytest.mark.parametrize("tool", ["kubectl", "kustomize"])
def test_kustomize_helm_charts_like_the_seed(tool: str, chart_repo: str, tmp_path: Path) -> None:
    """The seed's kustomization.yaml shape (resources: pool + policy; helmCharts: name/repo/version/
    releaseName/namespace/valuesFile), with l2lb's chart instead of Cilium's, rendered as the seed's user
    does (`kubectl kustomize --enable-helm`, kubectl v1.36.3) and as ArgoCD does (`kustomize build
    --enable-helm`, kustomize API v0.21.1). The result is k8s/overlays/cilium plus the seed's two objects."""
    cmd = renderer(tool)
    app = tmp_path / "app"
    app.mkdir()
    for f in ("ip-pool.yaml", "announce.yaml"):
        shutil.copy(ROOT / "tests" / "fixtures" / "seed" / f, app / f)
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    (app / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["ip-pool.yaml", "announce.yaml"],
        "helmCharts": [{"name": "l2lb", "repo": chart_repo, "version": chart_version, "releaseName": "l2lb",
                        "namespace": NAMESPACE, "includeCRDs": True, "valuesFile": "values.yaml"}],
    }, sort_keys=False))
    (app / "values.yaml").write_text(yaml.safe_dump(merged(AS_KUSTOMIZE, {"migration": {"mode": "cilium"}})))
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "hc"), "HELM_CONFIG_HOME": str(tmp_path / "hcfg"),
           "HELM_DATA_HOME": str(tmp_path / "hd")}
    out = subprocess.run([*cmd, "--enable-helm", "--helm-command", helm_bin(), str(app)],
                         capture_output=True, text=True, timeout=180, check=False, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    docs = load_docs(out.stdout)
    seed = [d for f in ("ip-pool.yaml", "announce.yaml") for d in load_docs((app / f).read_text())]
    seed_keys = {(d["kind"], d["metadata"]["name"]) for d in seed}
    problems = compare([d for d in docs if (d["kind"], d["metadata"]["name"]) not in seed_keys], built("cilium"))
    assert problems == [], "\n".join(problems)
    assert seed_keys <= {(d["kind"], d["metadata"]["name"]) for d in docs}
    # and the chart was really pulled from the repository (kustomize keeps it under charts/)
    assert list((app / "charts").glob("l2lb*")), sorted(p.name for p in app.iterdir())


def test_old_kustomize_refuses_helm_4_with_its_own_message(tmp_path: Path) -> None:
    """What users of an older kubectl see (documented in docs/install.md): its kustomize (before v5.7) runs
    `helm version -c`, a flag Helm 4 no longer has."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH")
    version = subprocess.run([kubectl, "version", "--client", "-o", "yaml"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    kv = yaml.safe_load(version or "{}").get("kustomizeVersion", "")
    if not kv.startswith("v5.") or int(kv.split(".")[1]) >= 7:
        pytest.skip(f"kubectl on PATH has kustomize {kv or 'unknown'}, not an old one")
    app = tmp_path / "app"
    (app / "charts").mkdir(parents=True)
    shutil.copytree(CHART, app / "charts" / "l2lb")
    (app / "kustomization.yaml").write_text(yaml.safe_dump({
        "helmCharts": [{"name": "l2lb", "releaseName": "l2lb", "namespace": NAMESPACE}]}))
    out = subprocess.run([kubectl, "kustomize", "--enable-helm", "--helm-command", helm_bin(), str(app)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0, out.stdout[:500]
    assert "unknown shorthand flag: 'c' in -c" in out.stderr or "requires helm V3" in out.stderr, out.stderr[-2000:]
