"""The real MetalLB (controller + speakers) in l2lb's process lab, against the real kube-apiserver.

Used by ``bench/compare`` and ``tests/metallb``. Nothing of MetalLB is copied here: the binaries and
the CRDs come from the Go module (``build.sh`` builds them into the per-machine cache); this module
only does what a cluster does around them:

* :class:`LabApiServer` -- ``tests/support/kube_real.RealApiServer`` started inside the lab's
  control-plane namespace, listening on all of that namespace's addresses (``--bind-address
  0.0.0.0``) so that node namespaces reach it at the control plane's LAN address; one token per
  component (``--user NAME:TOKEN``) so the audit log names who made each request; kubeconfigs that
  verify the server certificate (made for 127.0.0.1 / ``kubernetes``) with ``tls-server-name``.
* :func:`node_objects` -- the Node objects (no kubelet runs: only metadata; MetalLB reads a Node's
  labels and its NetworkUnavailable condition, absent = available).
* :func:`endpoint_slices` -- what the endpointslice controller of kube-controller-manager would
  write for a Service whose Pods run on every node (none runs here); MetalLB L2 announces only
  Services with a ready endpoint.
* :class:`MetalLB` -- installs MetalLB's CRDs (from the module), the ``metallb-system`` namespace,
  the controller Deployment object (the controller reads it to own the memberlist Secret), one
  speaker Pod object per node whose ``status.podIP``/``hostIP``/``phase`` are set as a kubelet would
  (the speakers find each other for memberlist by listing these Pods), starts the controller in the
  control-plane namespace and one speaker per node namespace with the environment the DaemonSet
  manifest gives it, and the memberlist key the controller generated, written where the Secret
  volume would put it.

Deviations that the process lab forces (each also in bench/compare/README.md):
* ``METALLB_NAMESPACE=metallb-system`` instead of the service-account namespace file, ``KUBECONFIG``
  instead of the in-cluster service-account config;
* the controller runs ``--webhook-mode=disabled`` and no ValidatingWebhookConfiguration is installed:
  nothing routes the webhook Service to the controller without kube-proxy;
* no speaker liveness/readiness probes and no kubelet restarting a killed speaker: the harness
  restarts it when asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from l2lb.lab.procs import Proc, Supervisor
from tests.support.kube_real import HARNESS_USER, ApiError, RealApiServer, cache_dir

SRC_DIR = Path(__file__).resolve().parent
NAMESPACE = "metallb-system"
ML_LABELS = "app=metallb,component=speaker"
ML_SECRET = "memberlist"
ML_PORT = 7946


def version() -> str:
    for line in (SRC_DIR / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "go.universe.tf/metallb" and parts[1].startswith("v"):
            return parts[1]
    raise RuntimeError(f"no go.universe.tf/metallb requirement in {SRC_DIR / 'go.mod'}")


def build_dir() -> Path:
    """Where build.sh puts the binaries and CRDs (same name: version + sha256(go.mod, go.sum)[:16])."""
    override = os.environ.get("L2LB_METALLB_DIR")
    if override:
        return Path(override)
    digest = hashlib.sha256((SRC_DIR / "go.mod").read_bytes() + (SRC_DIR / "go.sum").read_bytes()).hexdigest()
    return cache_dir() / f"metallb-{version()}-{digest[:16]}"


def missing() -> str:
    """Why MetalLB cannot run here ('' when it can)."""
    d = build_dir()
    for name in ("speaker", "controller"):
        if not os.access(d / name, os.X_OK):
            log = cache_dir() / "metallb-build.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            return (f"MetalLB not built ({d / name} missing): bash tests/support/metallb/build.sh"
                    + (f"\nlast build log:\n{tail}" if tail else ""))
    return ""


def build_info() -> dict[str, Any]:
    try:
        out: dict[str, Any] = json.loads((build_dir() / "build.json").read_text())
        return out
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------- API server
class LabApiServer(RealApiServer):
    """The real kube-apiserver, started in the calling thread's network namespace, reachable on
    every address of that namespace, with one token per component user."""

    def __init__(self, binary: Path, workdir: Path, users: list[str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(binary, workdir)
        self.users = {u: secrets.token_hex(24) for u in users}
        self._ca_pem = b""

    def start(self) -> None:
        """As RealApiServer.start, with the component users and ``--bind-address=0.0.0.0``."""
        cmd = [
            str(self.binary),
            f"--data-dir={self.workdir / 'data'}",
            f"--port={self.port}",
            f"--kubeconfig-out={self.kubeconfig}",
            f"--token={self.token}",
            f"--user={HARNESS_USER}:{self._harness_token}",
            *[f"--user={u}:{t}" for u, t in self.users.items()],
            f"--audit-log={self.audit_log}",
            "--", "--bind-address=0.0.0.0",
        ]
        import ssl

        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(t0)
            self._ssl = ssl.create_default_context(cafile=str(self.workdir / "data" / "ca.crt"))
            self._ca_pem = (self.workdir / "data" / "ca.crt").read_bytes()
            self.startup_s = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def kubeconfig_for(self, user: str, path: Path, host: str = "127.0.0.1") -> Path:
        """A kubeconfig for ``user`` reaching the server at ``host`` (verifying its certificate)."""
        cluster: dict[str, Any] = {"server": f"https://{host}:{self.port}",
                                   "certificate-authority-data": base64.b64encode(self._ca_pem).decode()}
        if host != "127.0.0.1":
            cluster["tls-server-name"] = "kubernetes"  # the generated serving certificate's name
        doc = {"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "lab", "cluster": cluster}],
               "users": [{"name": user, "user": {"token": self.users[user]}}],
               "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
               "current-context": "lab"}
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST one object (as the harness); 409 -> the existing one is left alone."""
        info = self.resource_for(str(obj["apiVersion"]), str(obj["kind"]))
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace") or "default") if info.namespaced else None
        try:
            return self.call("POST", self.object_path(info, ns), obj)
        except ApiError as e:
            if e.status != 409:
                raise
            return {}

    def apply_docs(self, docs: list[dict[str, Any]]) -> None:
        order = {"CustomResourceDefinition": 0, "Namespace": 1}
        for d in sorted(docs, key=lambda d: order.get(str(d.get("kind")), 2)):
            self.apply_object(json.loads(json.dumps(d)))

    def install_crd_files(self, paths: list[Path]) -> None:
        docs = []
        for p in paths:
            docs += [d for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]
        self.apply_docs(docs)
        for info in self._crd_resources():  # first list: past the "storage is (re)initializing" 429s
            self.call("GET", f"{info.prefix}/{info.plural}", query={"limit": "1"})


# --------------------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class LabNode:
    name: str
    ns: str  # network namespace
    ip: str  # LAN address (no prefix length)
    ifname: str


def node_objects(nodes: list[LabNode]) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux"}}}
            for n in nodes]


def endpoint_slices(services: list[dict[str, Any]], nodes: list[LabNode]) -> list[dict[str, Any]]:
    """One EndpointSlice per Service with one ready endpoint on every node (the node's address: the
    lab's responders run on the nodes themselves, as hostNetwork Pods would)."""
    out = []
    for s in services:
        meta = s["metadata"]
        ports = [{"name": p.get("name", ""), "port": int(p.get("targetPort") or p["port"]),
                  "protocol": p.get("protocol", "TCP")} for p in s["spec"].get("ports", [])]
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{meta['name']}-lab", "namespace": meta.get("namespace", "default"),
                         "labels": {"kubernetes.io/service-name": meta["name"],
                                    "endpointslice.kubernetes.io/managed-by": "l2lb-lab"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [n.ip], "nodeName": n.name,
                           "conditions": {"ready": True, "serving": True, "terminating": False}} for n in nodes],
            "ports": ports,
        })
    return out


# --------------------------------------------------------------------------------------- MetalLB
class MetalLB:
    """MetalLB's controller (control-plane namespace) and one speaker per node namespace."""

    def __init__(self, api: LabApiServer, sup: Supervisor, workdir: Path, nodes: list[LabNode], *,
                 ctl_ns: str, api_host: str, log_level: str = "info") -> None:
        self.api, self.sup, self.workdir, self.nodes = api, sup, workdir, nodes
        self.ctl_ns, self.api_host, self.log_level = ctl_ns, api_host, log_level
        self.dir = build_dir()
        self.secret_dir = workdir / "ml_secret_key"

    @staticmethod
    def users(nodes: list[LabNode]) -> list[str]:
        return ["metallb-controller", *[f"metallb-speaker-{n.name}" for n in nodes]]

    def speaker_name(self, node: LabNode) -> str:
        return f"speaker-{node.name}"

    def install(self) -> None:
        """CRDs, namespace, the controller Deployment object, speaker Pods with their status."""
        self.api.install_crd_files(sorted((self.dir / "crds").glob("*.yaml")))
        self.api.ensure_namespace(NAMESPACE)
        labels = {"app": "metallb", "component": "controller"}
        self.api.create({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "controller", "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "controller",
                                                           "image": f"quay.io/metallb/controller:{version()}"}]}}},
        })
        for n in self.nodes:
            name = self.speaker_name(n)
            self.api.create({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NAMESPACE,
                             "labels": {"app": "metallb", "component": "speaker"}},
                "spec": {"nodeName": n.name, "hostNetwork": True,
                         "containers": [{"name": "speaker", "image": f"quay.io/metallb/speaker:{version()}"}]},
            })
            # what the kubelet would report for a running hostNetwork Pod
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.api.call("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/status",
                          {"status": {"phase": "Running", "hostIP": n.ip, "podIP": n.ip,
                                      "hostIPs": [{"ip": n.ip}], "podIPs": [{"ip": n.ip}],
                                      "conditions": [{"type": "Ready", "status": "True",
                                                      "lastTransitionTime": now}]}},
                          content_type="application/merge-patch+json")

    def _env(self, user: str, host: str) -> dict[str, str]:
        kc = self.api.kubeconfig_for(user, self.workdir / f"kubeconfig-{user}", host)
        return {"KUBECONFIG": str(kc), "METALLB_NAMESPACE": NAMESPACE}

    async def start_controller(self) -> Proc:
        env = self._env("metallb-controller", "127.0.0.1")
        env.update({"METALLB_POD_NAME": "controller-lab", "METALLB_ML_SECRET_NAME": ML_SECRET,
                    "METALLB_DEPLOYMENT": "controller"})
        return await self.sup.start("metallb-controller",
                                    [str(self.dir / "controller"), "--port=7472", f"--log-level={self.log_level}",
                                     "--webhook-mode=disabled", "--disable-cert-rotation"],
                                    ns=self.ctl_ns, env=env)

    async def wait_secret(self, timeout: float = 60.0) -> None:
        """The memberlist Secret the controller creates, written where its volume would be mounted."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                # called in this thread: it is in the namespace the API server listens in
                sec = self.api.call("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{ML_SECRET}")
                key = base64.b64decode(sec["data"]["secretkey"])
                break
            except (ApiError, KeyError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the MetalLB controller made no Secret {ML_SECRET} in {timeout:.0f} s; "
                                       f"log: {self.sup.procs['metallb-controller'].tail()}") from None
                self.sup.check_alive()
                await asyncio.sleep(0.2)
        self.secret_dir.mkdir(parents=True, exist_ok=True)
        (self.secret_dir / "secretkey").write_bytes(key)

    async def start_speaker(self, node: LabNode) -> Proc:
        env = self._env(f"metallb-speaker-{node.name}", self.api_host)
        env.update({"METALLB_NODE_NAME": node.name, "METALLB_POD_NAME": self.speaker_name(node),
                    "METALLB_HOST": node.ip, "METALLB_ML_BIND_ADDR": node.ip, "METALLB_ML_LABELS": ML_LABELS,
                    "METALLB_ML_BIND_PORT": str(ML_PORT), "METALLB_ML_SECRET_KEY_PATH": str(self.secret_dir)})
        return await self.sup.start(self.speaker_name(node),
                                    [str(self.dir / "speaker"), "--port=7472", f"--log-level={self.log_level}"],
                                    ns=node.ns, env=env)

    async def start(self) -> None:
        await self.start_controller()
        await self.wait_secret()
        for n in self.nodes:
            await self.start_speaker(n)


def have_go() -> bool:
    return shutil.which("go") is not None
