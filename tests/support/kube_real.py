"""pytest plugin: a REAL kube-apiserver (k8s.io/kubernetes + embedded etcd) for the test suite.

The binary is built by ``tests/support/kube-apiserver/build.sh`` (cached per machine). Fixtures:

* ``real_apiserver`` (session): the running server, a :class:`RealApiServer`; same interface as the
  embedded server's fixture object (``.url``, ``.kubeconfig``, ``.requests()``,
  ``.clear_requests()``, ``.inject()``, ``.clear_faults()``, ``.reset()``, ``.apply()``).
  Skipped with the reason when the binary is not built; in CI (``CI=true``) a missing binary FAILS
  with the tail of the build log.
* ``kube_real`` (function): ``real_apiserver`` after ``.reset()``.
* ``kube_any`` (function, parametrized ``["embedded", "real"]``): a ``tests.support.kube.KubeHandle``
  on either server (:class:`RealKubeHandle` for the real one), after ``reset()``.

Besides kube-apiserver, the binary runs only kube-controller-manager's namespace controller (a
deleted namespace is emptied, then removed, within a few seconds). No other controller, scheduler
or kubelet runs: no garbage collection of ownerReferences, no EndpointSlices made for Services, no
default ServiceAccount, Pods stay Pending. Fault injection (``inject``) exists only in the embedded
server: on the real one it skips the calling test. Request counting comes from the kube-apiserver
audit log (level Metadata) and leaves out the harness's own requests (second token, user
``l2lb-harness``) and the namespace controller's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import KubeHandle, fresh_handle

REPO = Path(__file__).resolve().parents[2]
SRC_DIR = Path(__file__).resolve().parent / "kube-apiserver"
CRD_DIR = SRC_DIR / "crds"
HARNESS_USER = "l2lb-harness"
CONTROLLER_USER = "l2lb-controllers"  # the namespace controller inside the binary
TEST_USER = "l2lb-test"
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Kinds reset() empties besides every custom resource: (api prefix, plural).
RESET_NAMESPACED = (
    ("/api/v1", "services"),
    ("/api/v1", "endpoints"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/api/v1", "pods"),
    ("/api/v1", "events"),
    ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("/apis/coordination.k8s.io/v1", "leases"),
    ("/apis/events.k8s.io/v1", "events"),
)
RESET_CLUSTER = (("/api/v1", "nodes"),)
START_TIMEOUT_S = 120.0


class ApiError(Exception):
    """An HTTP error answer of the real API server (``status`` and the decoded body)."""

    def __init__(self, status: int, body: dict[str, Any] | str, method: str, path: str) -> None:
        self.status = status
        self.body = body
        msg = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> {status}: {msg}")


def binary_version() -> str:
    for line in (SRC_DIR / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v"):
            return parts[1]
    raise RuntimeError("no k8s.io/kubernetes requirement in go.mod")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "l2lb"


def binary_path() -> Path:
    """Where build.sh puts the binary (same name: version + sha256 of go.mod, go.sum, main.go)."""
    override = os.environ.get("L2LB_KUBE_APISERVER_BIN")
    if override:
        return Path(override)
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SRC_DIR / name).read_bytes())
    return cache_dir() / f"kube-apiserver-{binary_version()}-{digest.hexdigest()[:16]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ResourceInfo:
    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str]


class RealApiServer:
    """A kube-apiserver process (with its embedded etcd) on 127.0.0.1 and helpers for tests."""

    kind = "real"

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = str(workdir / "kubeconfig")
        self.token = secrets.token_hex(24)
        self._harness_token = secrets.token_hex(24)
        self.audit_log = workdir / "audit.log"
        self.log_path = workdir / "kube-apiserver.log"
        self.startup_s = 0.0  # process start -> /readyz ok and namespace "default" exists
        self.crd_install_s = 0.0
        self.etcd_url = ""
        self._audit_offset = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._ssl = ssl.create_default_context()
        self._discovery: dict[tuple[str, str], ResourceInfo] = {}
        self._prefixes_loaded: set[str] = set()

    # ----------------------------------------------------------------- process
    def start(self) -> None:
        cmd = [
            str(self.binary),
            f"--data-dir={self.workdir / 'data'}",
            f"--port={self.port}",
            f"--kubeconfig-out={self.kubeconfig}",
            f"--token={self.token}",
            f"--user={HARNESS_USER}:{self._harness_token}",
            f"--audit-log={self.audit_log}",
        ]
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(t0)
            self._ssl = ssl.create_default_context(cafile=str(self.workdir / "data" / "ca.crt"))
            self.startup_s = time.monotonic() - t0
            self.etcd_url = self._etcd_url_from_log()
            t1 = time.monotonic()
            self.install_crds()
            self.crd_install_s = time.monotonic() - t1
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, t0: float) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        last = "no answer yet"
        while time.monotonic() - t0 < START_TIMEOUT_S:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"kube-apiserver exited with {self._proc.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                req = urllib.request.Request(
                    self.url + "/readyz", headers={"Authorization": f"Bearer {self._harness_token}"}
                )
                with urllib.request.urlopen(req, timeout=2, context=insecure) as resp:
                    if resp.status == 200:
                        break
            except urllib.error.HTTPError as e:
                last = f"/readyz {e.code}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.2)
        else:
            raise RuntimeError(f"kube-apiserver not ready after {START_TIMEOUT_S:.0f} s ({last}):\n{self.log_tail()}")
        # The "default" namespace is made by a post-start hook; wait for it too.
        while time.monotonic() - t0 < START_TIMEOUT_S:
            try:
                req = urllib.request.Request(
                    self.url + "/api/v1/namespaces/default",
                    headers={"Authorization": f"Bearer {self._harness_token}"},
                )
                with urllib.request.urlopen(req, timeout=2, context=insecure):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError("namespace 'default' never appeared")

    def _etcd_url_from_log(self) -> str:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("l2lb-kube-apiserver: etcd "):
                return line.split()[2].rstrip(",")
        return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server against its generated CA (for aiohttp/urllib clients in tests)."""
        return self._ssl

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -------------------------------------------------------------------- HTTP
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        as_test_user: bool = False,
    ) -> dict[str, Any]:
        """One request as the harness user (left out of ``requests()``); raises :class:`ApiError`."""
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        data: bytes | None = None
        headers = {
            "Authorization": f"Bearer {self.token if as_test_user else self._harness_token}",
            "Accept": "application/json",
        }
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        deadline = time.monotonic() + 60.0
        while True:
            req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=30, context=self._ssl) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as e:
                text = e.read().decode(errors="replace")
                # 429 "storage is (re)initializing": a new CRD's watch cache is still filling.
                if e.code == 429 and time.monotonic() < deadline:
                    time.sleep(min(float(e.headers.get("Retry-After") or 0.2), 1.0))
                    continue
                try:
                    decoded: dict[str, Any] | str = json.loads(text)
                except ValueError:
                    decoded = text
                raise ApiError(e.code, decoded, method, path) from None
        out: dict[str, Any] = json.loads(raw) if raw else {}
        return out

    # --------------------------------------------------------------- discovery
    def _load_prefix(self, prefix: str) -> None:
        try:
            doc = self.call("GET", prefix)
        except ApiError as e:
            if e.status == 404:
                return
            raise
        for r in doc.get("resources", []):
            name = str(r["name"])
            if "/" in name:
                base, sub = name.split("/", 1)
                info = self._discovery.get((prefix, base))
                if info is not None:
                    info = ResourceInfo(info.prefix, info.plural, info.kind, info.namespaced, info.subresources | {sub})
                    self._discovery[(prefix, base)] = info
                    self._discovery[(prefix, info.kind)] = info
                continue
            self._discovery[(prefix, str(r["kind"]))] = ResourceInfo(
                prefix, name, str(r["kind"]), bool(r["namespaced"]), frozenset()
            )
            self._discovery[(prefix, name)] = self._discovery[(prefix, str(r["kind"]))]
        self._prefixes_loaded.add(prefix)

    def resource_for(self, api_version: str, kind: str, *, refresh: bool = False) -> ResourceInfo:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if refresh or prefix not in self._prefixes_loaded or (prefix, kind) not in self._discovery:
            for key in [k for k in self._discovery if k[0] == prefix]:
                del self._discovery[key]
            self._load_prefix(prefix)
        info = self._discovery.get((prefix, kind))
        if info is None:
            raise ApiError(404, f"no resource of kind {kind} in {api_version}", "DISCOVER", prefix)
        return info

    @staticmethod
    def object_path(info: ResourceInfo, namespace: str | None, name: str | None = None) -> str:
        path = info.prefix
        if info.namespaced:
            path += f"/namespaces/{namespace or 'default'}"
        path += f"/{info.plural}"
        if name is not None:
            path += f"/{name}"
        return path

    # ------------------------------------------------------------------- apply
    def apply(self, path_or_yaml_text: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Create or update every object of the YAML documents (server-side apply, force).

        A namespace that does not exist is created first; a ``status`` in a document is applied to
        the status subresource; a CustomResourceDefinition is waited on until Established.
        """
        text = str(path_or_yaml_text)
        if isinstance(path_or_yaml_text, os.PathLike) or ("\n" not in text and Path(text).is_file()):
            text = Path(path_or_yaml_text).read_text()
        out: list[dict[str, Any]] = []
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
                for item in doc["items"]:
                    out.append(self.apply_object(item))
            else:
                out.append(self.apply_object(doc))
        return out

    def apply_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        info = self.resource_for(api_version, kind)
        meta = obj.setdefault("metadata", {})
        name = str(meta["name"])
        namespace = str(meta.get("namespace") or "default") if info.namespaced else None
        if not info.namespaced:
            meta.pop("namespace", None)
        if namespace is not None:
            self.ensure_namespace(namespace)
        query = {"fieldManager": "l2lb-tests", "force": "true"}
        ctype = "application/apply-patch+yaml"
        path = self.object_path(info, namespace, name)
        body = {k: v for k, v in obj.items() if k != "status"}
        result = self.call("PATCH", path, json.dumps(body), content_type=ctype, query=query)
        if "status" in obj and "status" in info.subresources:
            status_body = {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": name},
                "status": obj["status"],
            }
            if namespace is not None:
                status_body["metadata"]["namespace"] = namespace
            result = self.call("PATCH", path + "/status", json.dumps(status_body), content_type=ctype, query=query)
        if kind == "CustomResourceDefinition":
            self._wait_crd(name)
        return result

    def ensure_namespace(self, namespace: str) -> None:
        try:
            self.call("GET", f"/api/v1/namespaces/{namespace}")
        except ApiError as e:
            if e.status != 404:
                raise
            with contextlib.suppress(ApiError):  # 409: made meanwhile
                self.call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})

    def _wait_crd(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crd = self.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if conds.get("Established") == "True":
                group = crd["spec"]["group"]
                versions = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
                # Established can come a moment before discovery serves the kind.
                for v in versions:
                    while time.monotonic() < deadline:
                        try:
                            self.resource_for(f"{group}/{v}", crd["spec"]["names"]["kind"], refresh=True)
                            break
                        except ApiError:
                            time.sleep(0.05)
                return
            time.sleep(0.05)
        raise RuntimeError(f"CRD {name} not Established after {timeout} s")

    def install_crds(self) -> None:
        """Install the project's CRDs from k8s/crds/ and, for any it lacks, the stand-ins in crds/."""
        have: set[str] = set()
        docs: list[dict[str, Any]] = []
        project = sorted((REPO / "k8s" / "crds").glob("*.yaml"))
        for path in [*project, *sorted(CRD_DIR.glob("*.yaml"))]:
            try:
                loaded = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError:
                continue
            for doc in loaded:
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    name = str(doc.get("metadata", {}).get("name", ""))
                    if name and name not in have:
                        have.add(name)
                        docs.append(doc)
        for doc in docs:
            self.apply_object(doc)
        # A new CRD's storage answers 429 "storage is (re)initializing" (Retry-After: 1) for a
        # moment: list each kind once so tests start with every kind servable.
        for info in self._crd_resources():
            self.call("GET", f"{info.prefix}/{info.plural}", query={"limit": "1"})

    # ------------------------------------------------------------------- reset
    def _crd_resources(self) -> list[ResourceInfo]:
        out = []
        for crd in self.call("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions").get("items", []):
            spec = crd["spec"]
            storage = next((v["name"] for v in spec["versions"] if v.get("storage")), spec["versions"][0]["name"])
            out.append(
                ResourceInfo(
                    f"/apis/{spec['group']}/{storage}",
                    spec["names"]["plural"],
                    spec["names"]["kind"],
                    spec["scope"] == "Namespaced",
                    frozenset(),
                )
            )
        return out

    def _delete_all(self, prefix: str, plural: str, keep: Any = None) -> None:
        try:
            items = self.call("GET", f"{prefix}/{plural}").get("items", [])
        except ApiError as e:
            if e.status == 404:
                return
            raise
        for item in items:
            meta = item["metadata"]
            if keep is not None and keep(meta):
                continue
            ns = meta.get("namespace")
            path = f"{prefix}/namespaces/{ns}/{plural}/{meta['name']}" if ns else f"{prefix}/{plural}/{meta['name']}"
            with contextlib.suppress(ApiError):
                if meta.get("finalizers"):
                    self.call(
                        "PATCH",
                        path,
                        {"metadata": {"finalizers": None}},
                        content_type="application/merge-patch+json",
                    )
            with contextlib.suppress(ApiError):
                self.call("DELETE", path, {"propagationPolicy": "Background", "gracePeriodSeconds": 0})

    def reset(self) -> None:
        """Delete every object tests make: the kinds in RESET_*, all custom resources (not the CRDs),
        and every namespace but the system ones (emptied, then finalized, as no controller runs)."""
        for prefix, plural in RESET_NAMESPACED:
            self._delete_all(
                prefix,
                plural,
                keep=lambda m: m.get("namespace") == "default" and m.get("name") == "kubernetes",
            )
        for prefix, plural in RESET_CLUSTER:
            self._delete_all(prefix, plural)
        for info in self._crd_resources():
            self._delete_all(info.prefix, info.plural)
        for ns in self.call("GET", "/api/v1/namespaces").get("items", []):
            name = ns["metadata"]["name"]
            if name in SYSTEM_NAMESPACES:
                continue
            with contextlib.suppress(ApiError):
                self.call("DELETE", f"/api/v1/namespaces/{name}")
            with contextlib.suppress(ApiError):
                self.call(
                    "PUT",
                    f"/api/v1/namespaces/{name}/finalize",
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": name},
                        "spec": {"finalizers": []},
                    },
                )

    # ---------------------------------------------------------------- requests
    def requests(self, *, settle_s: float = 0.05) -> list[dict[str, Any]]:
        """Requests made by anyone but the harness since the last ``clear_requests()``, from the
        audit log: ``{"verb", "path", "resource", "code", "t", "uri", "user"}``. ``verb`` is the
        Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection); a
        watch is listed when its response starts. Waits ``settle_s`` for the log to catch up."""
        if settle_s:
            time.sleep(settle_s)
        out: list[dict[str, Any]] = []
        try:
            with open(self.audit_log, "rb") as f:
                f.seek(self._audit_offset)
                data = f.read()
        except FileNotFoundError:
            return out
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("user", {}).get("username") in (HARNESS_USER, CONTROLLER_USER):
                continue
            verb = ev.get("verb", "")
            stage = ev.get("stage")
            if (verb == "watch" and stage != "ResponseStarted") or (verb != "watch" and stage != "ResponseComplete"):
                continue
            uri = str(ev.get("requestURI", ""))
            ts = ev.get("requestReceivedTimestamp")
            out.append(
                {
                    "verb": verb,
                    "path": uri.split("?", 1)[0],
                    "uri": uri,
                    "resource": ev.get("objectRef", {}).get("resource", ""),
                    "code": ev.get("responseStatus", {}).get("code", 0),
                    "t": datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() if ts else 0.0,
                    "user": ev.get("user", {}).get("username", ""),
                }
            )
        return out

    def clear_requests(self) -> None:
        try:
            self._audit_offset = self.audit_log.stat().st_size
        except FileNotFoundError:
            self._audit_offset = 0

    # ------------------------------------------------------------------ faults
    def inject(self, **fault: Any) -> None:
        pytest.skip(f"fault injection ({sorted(fault)}) exists only in the embedded API server")

    def clear_faults(self) -> None:
        """Nothing to clear: the real server has no fault injection."""


def _missing_binary(binary: Path) -> str:
    log = cache_dir() / "kube-apiserver-build.log"
    tail = ""
    if log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    return (
        f"real kube-apiserver not built ({binary} missing); build it with "
        f"`bash tests/support/kube-apiserver/build.sh`" + (f"\nlast build log:\n{tail}" if tail else "")
    )


@pytest.fixture(scope="session")
def real_apiserver() -> Iterator[RealApiServer]:
    binary = binary_path()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        if os.environ.get("CI") == "true":
            pytest.fail(_missing_binary(binary), pytrace=False)
        pytest.skip(_missing_binary(binary).splitlines()[0])
    workdir = Path(tempfile.mkdtemp(prefix="l2lb-kas-"))
    server = RealApiServer(binary, workdir)
    try:
        server.start()
        server.clear_requests()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def kube_real(real_apiserver: RealApiServer) -> RealApiServer:
    real_apiserver.reset()
    real_apiserver.clear_requests()
    return real_apiserver


class RealKubeHandle(KubeHandle):
    """The embedded fixture's handle type (``tests.support.kube.KubeHandle``: ``http()``, ``apply()``,
    ``kubectl()``, ``resource_path()``, ...) speaking HTTPS + bearer token to the real server; the
    embedded-only hooks (faults, compaction, configuration) skip the calling test."""

    embedded = False

    def __init__(self, server: RealApiServer) -> None:
        super().__init__(server.url, server.kubeconfig)
        self.server = server

    http_timeout = 30.0

    def _transport(self) -> tuple[dict[str, str], ssl.SSLContext | None]:
        return {"Authorization": f"Bearer {self.server.token}", "Accept": "application/json"}, self.server.ssl_context

    def aiohttp_kwargs(self) -> dict[str, Any]:
        return {"ssl": self.server.ssl_context, "headers": {"Authorization": f"Bearer {self.server.token}"}}

    def requests(self, since: float | None = None) -> list[dict[str, Any]]:
        return [e for e in self.server.requests() if since is None or e["t"] >= since]

    def clear_requests(self) -> None:
        self.server.clear_requests()

    def inject(self, **fault: Any) -> dict[str, Any]:
        pytest.skip(f"fault injection ({sorted(fault)}) exists only in the embedded API server")

    def clear_faults(self) -> None:
        return None

    def compact(self, rv: int | None = None) -> int:
        pytest.skip("compaction on demand exists only in the embedded API server")

    def configure(self, **cfg: Any) -> dict[str, Any]:
        pytest.skip("server configuration exists only in the embedded API server")

    def reset(self, keep_crds: bool = True) -> None:
        self.server.reset()
        self._disc = None


@pytest.fixture(params=["embedded", "real"])
def kube_any(request: pytest.FixtureRequest) -> KubeHandle:
    """A :class:`KubeHandle` on the embedded server or on the real one (after reset, no faults, no
    counted requests) -- the shape proposed for ``tests/support/kube.py``'s ``kube``."""
    if request.param == "embedded":
        proc = request.getfixturevalue("apiserver_process")
        return fresh_handle(proc)
    handle = RealKubeHandle(request.getfixturevalue("real_apiserver"))
    handle.reset()
    handle.clear_requests()
    return handle
