"""pytest plugin: Kubernetes API server fixtures (embedded server; real kube-apiserver when built).

Owned by the Kubernetes-access work (issue 4) and the real-apiserver work (issue 5).

Fixtures:
* ``apiserver`` (session): the embedded API server (``python -m l2lb.cli apiserver``) in a child
  process on a free loopback port, as a :class:`KubeHandle`: ``.url``, ``.kubeconfig`` (path),
  ``.requests()``, ``.clear_requests()``, ``.inject(**fault)``, ``.clear_faults()``, ``.reset()``,
  ``.apply(path_or_yaml)``, plus ``.kubectl(...)``, ``.http(...)``, ``.compact()``, ``.configure(...)``.
* ``kube`` (function): the same handle after ``.reset()``, ``.clear_faults()`` and ``.clear_requests()``.

Faults (``inject``): ``status`` (4xx/5xx answered instead of serving), ``retry_after`` (seconds, sets
``Retry-After``), ``count`` (how many requests it hits; default: until cleared), ``latency_ms``,
``match`` (substring of path+query), ``verb`` (get/list/watch/create/update/patch/delete),
``drop_watches`` (close the open watches matching ``match`` now, and the next ``count`` new ones).

:class:`ApiServerProcess` starts extra servers (e.g. with ``state_file`` to test restarts).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import stop_process

KUBECTL = shutil.which("kubectl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KubeHTTPError(Exception):
    def __init__(self, code: int, body: Any):
        super().__init__(f"HTTP {code}: {body}")
        self.code = code
        self.body = body


class KubeHandle:
    """Synchronous test-side handle on a Kubernetes API server (plain HTTP; no client library)."""

    embedded = True  # debug endpoints (/l2lb-debug/...) available

    def __init__(self, url: str, kubeconfig: str):
        self.url = url.rstrip("/")
        self.kubeconfig = kubeconfig
        self._disc: dict[tuple[str, str], tuple[str, bool]] | None = None

    # -- raw HTTP ---------------------------------------------------------------------------------
    http_timeout = 10.0  # seconds, default of http()

    def _transport(self) -> tuple[dict[str, str], ssl.SSLContext | None]:
        """Extra request headers and the TLS context of this server (none: plain HTTP, no auth)."""
        return {}, None

    def http(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
             query: dict[str, str] | None = None, timeout: float | None = None, raw: bytes | None = None
             ) -> tuple[int, Any, dict[str, str]]:
        """One request; returns (status, decoded JSON body or text, headers). Never raises on HTTP codes."""
        url = self.url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        extra, context = self._transport()
        req = urllib.request.Request(url, data=data, method=method, headers=extra)
        if data is not None:
            req.add_header("Content-Type", content_type)
        wait = self.http_timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(req, timeout=wait, context=context) as r:
                code, text, headers = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            code, text, headers = e.code, e.read(), dict(e.headers)
        try:
            decoded: Any = json.loads(text) if text else None
        except ValueError:
            decoded = text.decode(errors="replace")
        return code, decoded, headers

    def _ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        code, out, _ = self.http(method, path, body, **kw)
        if code >= 400:
            raise KubeHTTPError(code, out)
        return out

    def aiohttp_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``aiohttp.ClientSession.get`` (TLS, auth) to reach this server."""
        return {}

    # -- debug hooks ------------------------------------------------------------------------------
    def require_debug(self) -> None:
        if not self.embedded:
            pytest.skip("needs the embedded API server's debug endpoints")

    def require_embedded(self, why: str) -> None:
        """Skip on a real server: the test checks a behaviour only the embedded server has."""
        if not self.embedded:
            pytest.skip(f"embedded server only: {why}")

    def requests(self, since: float | None = None) -> list[dict[str, Any]]:
        q = {"since": str(since)} if since is not None else None
        out: list[dict[str, Any]] = self._ok("GET", "/l2lb-debug/requests", query=q)
        return out

    def clear_requests(self) -> None:
        self._ok("DELETE", "/l2lb-debug/requests")

    def inject(self, **fault: Any) -> dict[str, Any]:
        out: dict[str, Any] = self._ok("POST", "/l2lb-debug/faults", fault)
        return out

    def clear_faults(self) -> None:
        self._ok("DELETE", "/l2lb-debug/faults")

    def compact(self, rv: int | None = None) -> int:
        return int(self._ok("POST", "/l2lb-debug/compact", {"rv": rv} if rv is not None else {})["compacted_rv"])

    def configure(self, **cfg: Any) -> dict[str, Any]:
        """``bookmark_interval`` (s), ``watch_window`` (events)."""
        out: dict[str, Any] = self._ok("POST", "/l2lb-debug/config", cfg)
        return out

    def reset(self, keep_crds: bool = True) -> None:
        """Delete every user object (non-default namespaces and everything namespaced or cluster-scoped);
        CRDs stay installed (their custom resources go) unless ``keep_crds=False``."""
        self._ok("POST", "/l2lb-debug/reset", {"keep_crds": keep_crds})
        self._disc = None

    # -- discovery + apply ------------------------------------------------------------------------
    def _discover(self) -> dict[tuple[str, str], tuple[str, bool]]:
        out: dict[tuple[str, str], tuple[str, bool]] = {}
        gvs = ["/api/v1"]
        for g in self._ok("GET", "/apis").get("groups", []):
            gvs += [f"/apis/{v['groupVersion']}" for v in g.get("versions", [])]
        for gv in gvs:
            code, lst, _ = self.http("GET", gv)
            if code != 200:
                continue
            for r in lst.get("resources", []):
                if "/" not in r["name"]:
                    out[(lst["groupVersion"], r["kind"])] = (r["name"], bool(r["namespaced"]))
        self._disc = out
        return out

    def resource_path(self, api_version: str, kind: str, namespace: str | None = None,
                      name: str | None = None) -> str:
        disc = self._disc or self._discover()
        if (api_version, kind) not in disc:
            disc = self._discover()
        if (api_version, kind) not in disc:
            raise KeyError(f"the server does not serve {kind} in {api_version}")
        plural, namespaced = disc[(api_version, kind)]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if namespaced:
            base += f"/namespaces/{namespace or 'default'}"
        return f"{base}/{plural}" + (f"/{name}" if name else "")

    @staticmethod
    def load_docs(path_or_yaml: str | Path) -> list[dict[str, Any]]:
        """YAML/JSON documents from a directory (sorted, ``kustomization.yaml`` skipped), a file or text."""
        texts: list[str] = []
        s = str(path_or_yaml)
        if isinstance(path_or_yaml, Path) or ("\n" not in s and os.path.exists(s)):
            p = Path(s)
            files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json")) if p.is_dir() else [p]
            texts = [f.read_text() for f in files if f.name not in ("kustomization.yaml", "kustomization.yml")]
        else:
            texts = [s]
        docs: list[dict[str, Any]] = []
        for t in texts:
            for d in yaml.safe_load_all(t):
                if not isinstance(d, dict):
                    continue
                if d.get("kind") == "List":
                    docs += [i for i in d.get("items", []) if isinstance(i, dict)]
                elif d.get("kind") != "Kustomization":
                    docs.append(d)
        return docs

    def apply(self, path_or_yaml: str | Path) -> list[dict[str, Any]]:
        """Create-or-update every object (CRDs first, then Namespaces, then the rest, in order)."""
        docs = self.load_docs(path_or_yaml)

        def rank(d: dict[str, Any]) -> int:
            return {"CustomResourceDefinition": 0, "Namespace": 1}.get(str(d.get("kind")), 2)

        out = []
        for d in sorted(docs, key=rank):
            md = d.get("metadata") or {}
            path = self.resource_path(d["apiVersion"], d["kind"], md.get("namespace"))
            code, cur, _ = self.http("GET", f"{path}/{md['name']}")
            if code == 404:
                obj = self._ok("POST", path, d)
            elif code == 200:
                body = json.loads(json.dumps(d))
                body.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
                obj = self._ok("PUT", f"{path}/{md['name']}", body)
            else:
                raise KubeHTTPError(code, cur)
            out.append(obj)
            if d["kind"] == "CustomResourceDefinition":
                self._wait_crd(obj)
        return out

    def _wait_crd(self, crd: dict[str, Any], timeout: float = 15.0) -> None:
        spec = crd["spec"]
        deadline = time.monotonic() + timeout
        want = [(f"{spec['group']}/{v['name']}", spec["names"]["kind"]) for v in spec["versions"] if v.get("served")]
        while time.monotonic() < deadline:
            disc = self._discover()
            if all(w in disc for w in want):
                return
            time.sleep(0.1)
        raise TimeoutError(f"CRD {crd['metadata']['name']} not served within {timeout}s")

    # -- kubectl ----------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
                ) -> subprocess.CompletedProcess[str]:
        if KUBECTL is None:
            pytest.skip("kubectl is not installed")
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "HOME": str(Path(self.kubeconfig).parent)}
        cp = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, timeout=timeout,
                            env=env, check=False)
        if check and cp.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        return cp


class ApiServerProcess:
    """The embedded API server as a child process (``python -m l2lb.cli apiserver``)."""

    def __init__(self, workdir: Path, *, state_file: Path | None = None, bookmark_interval: float = 1.0,
                 watch_window: int = 10000, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.state_file = state_file
        self.bookmark_interval = bookmark_interval
        self.watch_window = watch_window
        self.kubeconfig = str(workdir / "kubeconfig")
        self.proc: subprocess.Popen[bytes] | None = None
        self.handle = KubeHandle(self.url, self.kubeconfig)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "l2lb.cli", "apiserver", "--host", "127.0.0.1", "--port", str(self.port),
                "--kubeconfig-out", self.kubeconfig, "--bookmark-interval", str(self.bookmark_interval),
                "--watch-window", str(self.watch_window), "--log-level", "warning"]
        if self.state_file is not None:
            args += ["--state-file", str(self.state_file)]
        log = open(self.workdir / "apiserver.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apiserver exited: {(self.workdir / 'apiserver.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/version", timeout=0.5) as r:
                    if r.status == 200 and os.path.exists(self.kubeconfig):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"apiserver did not answer within {timeout}s")

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, kill=kill, wait=10)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def apiserver_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    p = ApiServerProcess(tmp_path_factory.mktemp("apiserver"))
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def apiserver(apiserver_process: ApiServerProcess) -> KubeHandle:
    return apiserver_process.handle


def fresh_handle(proc: ApiServerProcess) -> KubeHandle:
    """The embedded server's handle, restarted if a test killed it, with no objects, faults or log."""
    if not proc.alive():
        proc.start()
    h = proc.handle
    h.clear_faults()
    h.reset()
    h.configure(bookmark_interval=proc.bookmark_interval, watch_window=proc.watch_window)
    h.clear_requests()
    return h


@pytest.fixture
def kube(apiserver_process: ApiServerProcess) -> Iterator[KubeHandle]:
    h = fresh_handle(apiserver_process)
    yield h
    if apiserver_process.alive():
        h.clear_faults()
