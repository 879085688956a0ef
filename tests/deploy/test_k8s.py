"""k8s/: every kustomization builds, every object is valid against the Kubernetes OpenAPI schema
of a current release (offline), and the manifests keep their promises (least privilege,
replicas + PDBs, the one ConfigMap, the Secret keys the install script makes).

Schemas: the PyPI package kubernetes-validate, which ships the JSON schemas (strict: unknown fields
are errors) of every Kubernetes minor release since 1.25; nothing is downloaded. kustomize:
`kustomize build` when installed, else `kubectl kustomize` (kustomize v5 built into kubectl).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from l2lb.adapters.bus.dsn import parse_dsn
from tests.deploy.support import (
    NAMESPACE,
    OVERLAYS,
    ROOT,
    built,
    by_kind,
    kustomize_build,
    kustomize_cmd,
    load_docs,
    one,
)

# oldest release we support and the newest the schema package knows
KUBE_VERSIONS = ("1.29.0", "1.35.0")
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
}
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")

pytestmark = pytest.mark.skipif(kustomize_cmd() is None, reason="needs kubectl or kustomize")


def crd_kinds(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every CRD version in the build."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in by_kind(docs, "CustomResourceDefinition"):
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[(f"{group}/{v['name']}", kind)] = v.get("schema", {}).get("openAPIV3Schema", {})
    return out


def validation_errors(doc: dict[str, Any], version: str, crds: dict[tuple[str, str], Any]) -> list[str]:
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if (doc.get("apiVersion"), doc.get("kind")) in crds:
        import jsonschema

        schema = crds[(doc["apiVersion"], doc["kind"])]
        return [f"{where}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{where}: {path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: {e.message}"]
    return []


def workload_containers(doc: dict[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("initContainers", []) if init else []) + list(spec["containers"])


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_builds(overlay: str) -> None:
    out, err, rc = kustomize_build(OVERLAYS[overlay])
    assert rc == 0, err
    kinds = {d["kind"] for d in load_docs(out)}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Deployment", "DaemonSet", "ConfigMap"} <= kinds


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_valid_against_kubernetes_schema(overlay: str, version: str) -> None:
    docs = built(overlay)
    crds = crd_kinds(docs)
    errors = [e for d in docs for e in validation_errors(d, version, crds)]
    assert errors == []


def test_schema_check_catches_mistakes() -> None:
    docs = built("base")
    dep = copy.deepcopy(one(docs, "Deployment", "l2lb-allocator"))
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert validation_errors(dep, KUBE_VERSIONS[-1], {})
    dep = copy.deepcopy(one(docs, "Deployment", "l2lb-allocator"))
    dep["spec"]["replica"] = 2  # strict: unknown field
    assert validation_errors(dep, KUBE_VERSIONS[-1], {})
    role = copy.deepcopy(one(docs, "ClusterRole", "l2lb-allocator"))
    role["rules"][0]["verbs"] = "get"
    assert validation_errors(role, KUBE_VERSIONS[-1], {})


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_namespaced_objects_in_l2lb_system(overlay: str) -> None:
    for d in built(overlay):
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in d["metadata"], d["metadata"]
        else:
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']}"
    for b in by_kind(built(overlay), "ClusterRoleBinding") + by_kind(built(overlay), "RoleBinding"):
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount" and s["namespace"] == NAMESPACE


def test_crds_come_from_k8s_crds() -> None:
    """l2lb's own CRDs are k8s/crds/l2lb.io_*.yaml. kustomize may only read files at or below a
    kustomization's directory, so the base can include them only once k8s/crds has a
    kustomization.yaml (asked of the CRD work); until then they are applied first, on their own
    (docs/install.md), and this checks that the files exist and are valid CRDs."""
    crd_dir = ROOT / "k8s" / "crds"
    own = sorted(crd_dir.glob("l2lb.io_*.yaml"))
    if not own:
        pytest.skip("k8s/crds (the kube-client work's CRDs) is not written yet")
    docs = [d for p in own for d in load_docs(p.read_text())]
    assert {d["spec"]["names"]["kind"] for d in docs} == {"LoadBalancerIPPool", "L2AnnouncementPolicy"}
    for d in docs:
        assert validation_errors(d, KUBE_VERSIONS[0], {}) == []
    if (crd_dir / "kustomization.yaml").exists():
        groups = {c["spec"]["group"] for c in by_kind(built("base"), "CustomResourceDefinition")}
        assert "l2lb.io" in groups
    # Cilium and MetalLB own their CRDs: the overlays for clusters that have them install none
    for overlay in OVERLAYS:
        groups = {c["spec"]["group"] for c in by_kind(built(overlay), "CustomResourceDefinition")}
        assert "cilium.io" not in groups and "metallb.io" not in groups, overlay


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_replicas_leader_election_and_pdbs(overlay: str) -> None:
    docs = built(overlay)
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name in ("allocator", "leases"):
        dep = one(docs, "Deployment", f"l2lb-{name}")
        assert dep["spec"]["replicas"] == 2
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[0] == name
        assert "--namespace=$(POD_NAMESPACE)" in args  # leader-election Lease lives here
        labels = dep["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{name}: {len(covering)} PDBs select its pods"
        assert covering[0]["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_least_privilege_pods(overlay: str) -> None:
    docs = built(overlay)
    ds = one(docs, "DaemonSet", "l2lb-announcer")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["serviceAccountName"] == "l2lb-announcer"
    (ctr,) = spec["containers"]
    sc = ctr["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert sc.get("privileged", False) is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert "hostPID" not in spec and "hostIPC" not in spec
    for w in [d for d in docs if d["kind"] in WORKLOADS]:
        pod = w["spec"]["template"]["spec"]
        for c in workload_containers(w):
            csc = c.get("securityContext", {})
            where = f"{w['metadata']['name']}/{c['name']}"
            assert csc.get("privileged", False) is False, where
            assert csc.get("allowPrivilegeEscalation") is False, where
            assert csc.get("readOnlyRootFilesystem") is True, where
            assert "ALL" in csc.get("capabilities", {}).get("drop", []), where
            if c is not ctr:
                assert not csc.get("capabilities", {}).get("add"), f"{where} adds capabilities"
                non_root = csc.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot"))
                uid = csc.get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
                assert non_root is True or (uid is not None and uid != 0), f"{where} may run as root"
        if w["kind"] != "DaemonSet":
            assert not pod.get("hostNetwork"), w["metadata"]["name"]
        for c in pod["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, c["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_config_references_resolve(overlay: str) -> None:
    """Every $(VAR) in args is defined (env or the ConfigMap), ports agree with l2lb-config."""
    docs = built(overlay)
    cms = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind(docs, "ConfigMap")}
    config = cms["l2lb-config"]
    for w in [d for d in docs if d["kind"] in WORKLOADS]:
        for c in workload_containers(w):
            names = {e["name"] for e in c.get("env", [])}
            for src in c.get("envFrom", []):
                names |= set(cms[src["configMapRef"]["name"]])
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in cms[ref["name"]], f"{c['name']}: {ref}"
            for arg in [*c.get("args", []), *c.get("command", [])]:
                for var in _VAR.findall(arg):
                    assert var in names, f"{w['metadata']['name']}/{c['name']}: $({var}) is not defined"
    for kind, name, key in (
        ("Deployment", "l2lb-allocator", "L2LB_ALLOCATOR_HTTP_PORT"),
        ("Deployment", "l2lb-leases", "L2LB_LEASES_HTTP_PORT"),
        ("DaemonSet", "l2lb-announcer", "L2LB_ANNOUNCER_HTTP_PORT"),
    ):
        ctr = one(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]
        (port,) = [p for p in ctr["ports"] if p["name"] == "http"]
        assert port["containerPort"] == int(config[key])
        assert ctr["readinessProbe"]["httpGet"]["port"] == "http"


def secret_keys() -> set[str]:
    out = subprocess.run(
        ["sh", str(ROOT / "deploy" / "k8s" / "redis-secret.sh")], capture_output=True, text=True, check=True
    ).stdout
    docs = load_docs(out)
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"] == {"name": "l2lb-redis", "namespace": NAMESPACE, "labels": secret["metadata"]["labels"]}
    keys: set[str] = set(secret["stringData"])
    return keys


def test_redis_secret_script() -> None:
    out1 = subprocess.run(["sh", str(ROOT / "deploy/k8s/redis-secret.sh")], capture_output=True, text=True, check=True)
    out2 = subprocess.run(["sh", str(ROOT / "deploy/k8s/redis-secret.sh")], capture_output=True, text=True, check=True)
    s1 = by_kind(load_docs(out1.stdout), "Secret")[0]["stringData"]
    s2 = by_kind(load_docs(out2.stdout), "Secret")[0]["stringData"]
    for user in ("allocator", "leases", "announcer", "replication", "sentinel"):
        pw = s1[f"{user}-password"]
        assert re.fullmatch(r"[0-9a-f]{48}", pw), "192 random bits, URL- and sed-safe"
        assert pw != s2[f"{user}-password"], "fresh passwords on every run"
    sp = s1["sentinel-password"]
    for svc in ("allocator", "leases", "announcer"):
        pw = s1[f"{svc}-password"]
        # k8s/base: through the sentinels (Service l2lb-redis-sentinel, master name l2lb)
        assert s1[f"{svc}-dsn"] == (f"redis+sentinel://{svc}:{pw}@l2lb-redis-sentinel.{NAMESPACE}.svc:26379/l2lb/0"
                                    f"?sentinel_password={sp}&socket_timeout=2&connect_timeout=1")
        d = parse_dsn(s1[f"{svc}-dsn"])
        assert d.sentinel_service == "l2lb" and d.sentinel_password == sp and d.username == svc
        # k8s/overlays/single-node: straight to the one Redis
        assert s1[f"{svc}-dsn-single"] == f"redis://{svc}:{pw}@l2lb-redis.{NAMESPACE}.svc:6379/0"
    env = dict(os.environ, L2LB_REDIS_URL_BASE="rediss://redis.example:6380/0?ssl_ca_certs=/ca.pem")
    out3 = subprocess.run(
        ["sh", str(ROOT / "deploy/k8s/redis-secret.sh")], capture_output=True, text=True, check=True, env=env
    )
    s3 = by_kind(load_docs(out3.stdout), "Secret")[0]["stringData"]
    for key in ("leases-dsn", "leases-dsn-single"):
        assert s3[key] == f"rediss://leases:{s3['leases-password']}@redis.example:6380/0?ssl_ca_certs=/ca.pem"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_secret_refs_are_made_by_the_install_script(overlay: str) -> None:
    made = secret_keys()
    used = set()
    for w in [d for d in built(overlay) if d["kind"] in WORKLOADS]:
        for c in workload_containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "l2lb-redis"
                    used.add(ref["key"])
    assert used and used <= made, used - made
    suffix = "-dsn-single" if overlay == "single-node" else "-dsn"
    dsn_keys = {k for k in used if "-dsn" in k}
    assert dsn_keys == {f"{s}{suffix}" for s in ("allocator", "leases", "announcer")}


def test_redis_acl_init_renders_every_user(tmp_path: Path) -> None:
    """Run the Redis init container's script here (python -m l2lb.adapters.bus.acl)."""
    sts = one(built("base"), "StatefulSet", "l2lb-redis")
    (init,) = sts["spec"]["template"]["spec"]["initContainers"]
    script = init["command"][-1].replace("/etc/redis-acl", str(tmp_path))
    script = script.replace("python ", f"{sys.executable} ")
    env = dict(
        os.environ,
        L2LB_REDIS_PREFIX="l2lb",
        ALLOCATOR_PASSWORD="pa",
        LEASES_PASSWORD="pl",
        ANNOUNCER_PASSWORD="pn",
        REPLICATION_PASSWORD="pr",
        SENTINEL_PASSWORD="ps",
    )
    assert {e["name"] for e in init["env"]} >= set(env) - set(os.environ)
    subprocess.run(["sh", "-ec", script], check=True, env=env, timeout=30)
    import hashlib

    acl = (tmp_path / "users.acl").read_text()
    users = {line.split()[1]: line for line in acl.splitlines() if line.startswith("user ")}
    assert users["default"].split()[2] == "off"
    for user, pw in (("allocator", "pa"), ("leases", "pl"), ("announcer", "pn"), ("replication", "pr"),
                     ("sentinel", "ps")):
        assert f"#{hashlib.sha256(pw.encode()).hexdigest()}" in users[user].split()
    # replicas may only replicate, sentinels only do what Sentinel needs: neither reads or writes keys
    assert "+psync" in users["replication"].split() and "+get" not in users["replication"]
    assert "+slaveof" in users["sentinel"].split() and "~" not in users["sentinel"]
    # the readiness probe logs in as the allocator and PINGs: that user may
    assert "+ping" in users["allocator"].split()
    probe = sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"][-1]
    assert "--user allocator ping" in probe
    # same rules as the compose stack's file (which uses the development passwords)
    dev = (ROOT / "deploy" / "redis" / "users.acl").read_text()
    strip = re.compile(r" #[0-9a-f]{64}")
    services = "\n".join(line for line in acl.splitlines() if line.split()[1] not in ("replication", "sentinel"))
    assert strip.sub("", services + "\n") == strip.sub("", dev)


def test_overlays_do_what_they_say() -> None:
    cil = built("cilium")
    assert "--cilium-compat" in one(cil, "Deployment", "l2lb-allocator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    groups = {g for r in one(cil, "ClusterRole", "l2lb-allocator")["rules"] for g in r["apiGroups"]}
    assert "cilium.io" in groups and "metallb.io" not in groups
    mig = built("metallb-migration")
    # migrations: announcers wait for a node label (never two answerers for one IP)
    for overlay in ("cilium", "metallb-migration"):
        sel = one(built(overlay), "DaemonSet", "l2lb-announcer")["spec"]["template"]["spec"]["nodeSelector"]
        assert sel == {"l2lb.io/announcer": "true"}, overlay
    assert "nodeSelector" not in one(built("base"), "DaemonSet", "l2lb-announcer")["spec"]["template"]["spec"]
    groups = {g for r in one(mig, "ClusterRole", "l2lb-allocator")["rules"] for g in r["apiGroups"]}
    assert "metallb.io" in groups and "cilium.io" not in groups
    ext = built("external-redis")
    assert not by_kind(ext, "StatefulSet")
    assert not {s["metadata"]["name"] for s in by_kind(ext, "Service")} & {
        "l2lb-redis", "l2lb-redis-headless", "l2lb-redis-sentinel", "l2lb-redis-0", "l2lb-redis-1", "l2lb-redis-2"}
    base = built("base")
    groups = {g for r in one(base, "ClusterRole", "l2lb-allocator")["rules"] for g in r["apiGroups"]}
    assert not groups & {"cilium.io", "metallb.io"}


def _env(ctr: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in ctr.get("env", [])}


def test_redis_ha_by_default_and_single_node_mode() -> None:
    """k8s/base: 3 Redis on 3 nodes, each with a Sentinel, as the start scripts expect; single-node: one
    Redis, no Sentinel, the services connecting straight to it."""
    base = built("base")
    sts = one(base, "StatefulSet", "l2lb-redis")
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 3
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["labelSelector"]["matchLabels"].items() <= pod_labels(sts).items()
    ctrs = {c["name"]: c for c in pod["containers"]}
    assert set(ctrs) == {"redis", "sentinel"}
    for c in ctrs.values():
        assert _env(c)["L2LB_REDIS_REPLICAS"] == str(sts["spec"]["replicas"]), c["name"]
        assert c["command"][0] == "sh" and c["command"][1].startswith("/etc/redis-tmpl/start-")
        script = ROOT / "k8s" / "base" / "redis" / Path(c["command"][1]).name
        assert script.exists(), script
    assert _env(ctrs["redis"])["L2LB_REDIS_MODE"] == "sentinel"
    assert int(_env(ctrs["sentinel"])["L2LB_SENTINEL_DOWN_MS"]) <= 2000
    # no DNS in Sentinel's loop (it resolves synchronously and enters TILT, no failover for 30 s, after a loop
    # > 2 s): every pod has its own ClusterIP Service, whose address Redis and Sentinel use and announce
    for i in range(sts["spec"]["replicas"]):
        svc = one(base, "Service", f"l2lb-redis-{i}")
        assert svc["spec"].get("clusterIP") != "None" and svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"l2lb-redis-{i}"
        assert svc["spec"]["selector"].items() >= pod_labels(sts).items() - {("statefulset.kubernetes.io/pod-name",
                                                                            f"l2lb-redis-{i}")}
        assert {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {(6379, "redis"), (26379, "sentinel")}
    conf = (ROOT / "k8s/base/redis/start-sentinel.sh").read_text()
    assert "sentinel resolve-hostnames no" in conf and "sentinel announce-hostnames no" in conf
    assert "sentinel myid $myid" in conf  # the same id at every start: a restarted sentinel is the same voter
    # the start scripts' own lookups (each pod's Service, once) give up fast and are retried
    opts = {o["name"]: int(o["value"]) for o in pod["dnsConfig"]["options"]}
    assert opts["timeout"] * opts["attempts"] < 2, opts
    (cm,) = [c for c in by_kind(base, "ConfigMap") if c["metadata"]["name"].startswith("l2lb-redis")]
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {cm["metadata"]["name"]}
    assert {"redis.conf", "peers.sh", "start-redis.sh", "start-sentinel.sh"} <= set(cm["data"])
    headless = one(base, "Service", "l2lb-redis-headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["serviceName"] == "l2lb-redis-headless"
    sentinel_svc = one(base, "Service", "l2lb-redis-sentinel")
    assert [p["port"] for p in sentinel_svc["spec"]["ports"]] == [26379]
    pdb = one(base, "PodDisruptionBudget", "l2lb-redis")
    assert pdb["spec"]["maxUnavailable"] == 1
    # the master name the sentinels monitor is the one in the DSNs
    assert "MASTER_NAME=${L2LB_SENTINEL_MASTER:-l2lb}" in (ROOT / "k8s/base/redis/peers.sh").read_text()

    single = built("single-node")
    sts1 = one(single, "StatefulSet", "l2lb-redis")
    assert sts1["spec"]["replicas"] == 1
    (redis,) = sts1["spec"]["template"]["spec"]["containers"]
    assert redis["name"] == "redis" and _env(redis)["L2LB_REDIS_MODE"] == "single"
    assert _env(redis)["L2LB_REDIS_REPLICAS"] == "1"
    assert not {"l2lb-redis-sentinel", "l2lb-redis-0", "l2lb-redis-1", "l2lb-redis-2"} & {
        s["metadata"]["name"] for s in by_kind(single, "Service")}
    for kind, name in (("Deployment", "l2lb-allocator"), ("Deployment", "l2lb-leases"),
                       ("DaemonSet", "l2lb-announcer")):
        ctr = one(single, kind, name)["spec"]["template"]["spec"]["containers"][0]
        assert _env(ctr)["L2LB_REDIS"]["secretKeyRef"]["key"].endswith("-dsn-single"), name
    # what single-node leaves out costs nothing: fewer containers and requests than base
    def requests(docs: list[dict[str, Any]]) -> int:
        return sum(len(w["spec"]["template"]["spec"]["containers"]) * w["spec"].get("replicas", 1)
                   for w in by_kind(docs, "StatefulSet"))
    assert requests(single) == 1 and requests(base) == 6


def pod_labels(w: dict[str, Any]) -> dict[str, str]:
    return dict(w["spec"]["template"]["metadata"]["labels"])
