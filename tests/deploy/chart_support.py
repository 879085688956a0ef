"""Helm for the chart tests: the binary built from helm.sh/helm/v4 (tests/support/helm/build.sh), rendering
charts/l2lb with values, and the normalisation that makes a chart render and a kustomize build comparable.

The chart is checked equal to k8s/base object by object. What legitimately differs, and nothing else:
* Helm's own labels on top-level metadata (helm.sh/chart, app.kubernetes.io/instance, managed-by,
  version) -- never on selectors or pod templates, so removing them from metadata.labels is exact;
* the content-hash suffix of the Redis scripts' ConfigMap (kustomize: its configMapGenerator hash;
  the chart: sha256 of the same data) -- both become ``l2lb-redis-<hash>`` (the data is still compared);
* CRDs: kustomize labels them, Helm installs crds/ untouched -- compared without metadata.labels
  (the chart's crds/ are symbolic links to k8s/crds; files/redis to k8s/base/redis);
* the ORDER of a container's env entries, compared as name -> entry: kustomize's strategic-merge patches
  (k8s/components/single-node) move the entries they patch to the front. The order means something only
  when an env value refers to another variable ($(VAR)); the normalisation refuses such values.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import NAMESPACE, ROOT, load_docs

CHART = ROOT / "charts" / "l2lb"
HELM_BUILD = ROOT / "tests" / "support" / "helm" / "build.sh"
HELM_ONLY_LABELS = frozenset(
    {"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}
)
_HASHED_CM = re.compile(r"^(l2lb-redis)-[a-z0-9]{10}$")


def helm_path() -> Path:
    out = subprocess.run(["bash", str(HELM_BUILD), "--path"], capture_output=True, text=True, check=True, timeout=30)
    return Path(out.stdout.strip())


def helm_bin() -> str:
    """The cached helm binary; skip (fail in CI) with the build command when it is not built."""
    path = helm_path()
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    msg = f"helm not built ({path} missing): bash tests/support/helm/build.sh (scripts/dev setup runs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": _helm_home("cache"), "HELM_CONFIG_HOME": _helm_home("config"),
           "HELM_DATA_HOME": _helm_home("data")}
    proc = subprocess.run([helm_bin(), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


_HOME: dict[str, str] = {}


def _helm_home(kind: str) -> str:
    """Per-run Helm dirs (no repositories or plugins of the machine leak in; nothing written to ~)."""
    if kind not in _HOME:
        _HOME[kind] = tempfile.mkdtemp(prefix=f"l2lb-helm-{kind}-")
    return _HOME[kind]


def cleanup_helm_homes() -> None:
    for path in _HOME.values():
        shutil.rmtree(path, ignore_errors=True)
    _HOME.clear()


def values_file(values: dict[str, Any], tmp: Path, name: str = "values.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(values))
    return path


def template(values: dict[str, Any] | None = None, *, tmp_path: Path, crds: bool = True, namespace: str = NAMESPACE,
             extra: tuple[str, ...] = (), check: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["template", "l2lb", str(CHART), "--namespace", namespace]
    if crds:
        args.append("--include-crds")
    if values:
        args += ["-f", str(values_file(values, tmp_path))]
    return helm(*args, *extra, check=check)


def render(values: dict[str, Any] | None = None, *, tmp_path: Path, **kw: Any) -> list[dict[str, Any]]:
    return load_docs(template(values, tmp_path=tmp_path, **kw).stdout)


def normalize(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, with the differences named in the module docstring taken out."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for orig in docs:
        d = copy.deepcopy(orig)
        meta = d["metadata"]
        labels = {k: v for k, v in meta.get("labels", {}).items() if k not in HELM_ONLY_LABELS}
        if d["kind"] == "CustomResourceDefinition":
            labels = {}
        if labels:
            meta["labels"] = labels
        else:
            meta.pop("labels", None)
        m = _HASHED_CM.match(meta["name"])
        if d["kind"] == "ConfigMap" and m:
            meta["name"] = f"{m.group(1)}-<hash>"
        if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            pod = d["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                if "env" in c:
                    assert not any("$(" in str(e.get("value", "")) for e in c["env"]), (
                        f"{meta['name']}/{c['name']}: an env value refers to another variable; its order matters")
                    c["env"] = {e["name"]: e for e in c["env"]}
        if d["kind"] == "StatefulSet":
            for vol in d["spec"]["template"]["spec"].get("volumes", []):
                cm = vol.get("configMap")
                if cm and (m := _HASHED_CM.match(cm["name"])):
                    cm["name"] = f"{m.group(1)}-<hash>"
        key = (d["kind"], meta["name"])
        assert key not in out, f"{key} rendered twice"
        out[key] = d
    return out


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Every path where ``a`` (the chart) and ``b`` (kustomize) differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}.{k}: only in kustomize: {b[k]!r}"[:400])
            elif k not in b:
                out.append(f"{path}.{k}: only in the chart: {a[k]!r}"[:400])
            else:
                out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items in the chart, {len(b)} in kustomize: {a!r} != {b!r}"[:600]]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: chart {a!r} != kustomize {b!r}"[:400]]
    return []


def compare(chart: list[dict[str, Any]], kustomize: list[dict[str, Any]], *,
            chart_only: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset(),
            kustomize_only: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset()) -> list[str]:
    """Problems found comparing the two renders: objects missing on either side (beyond the expected
    ones) and every differing field."""
    c, k = normalize(chart), normalize(kustomize)
    problems = [f"{key}: rendered by the chart only" for key in sorted(set(c) - set(k) - set(chart_only))]
    problems += [f"{key}: in the kustomize build only" for key in sorted(set(k) - set(c) - set(kustomize_only))]
    problems += [f"{key}: expected only in the chart, missing there" for key in sorted(set(chart_only) - set(c))]
    problems += [f"{key}: expected only in kustomize, missing there" for key in sorted(set(kustomize_only) - set(k))]
    for key in sorted(set(c) & set(k)):
        problems += [f"{key[0]}/{key[1]}{d}" for d in differences(c[key], k[key])]
    return problems
