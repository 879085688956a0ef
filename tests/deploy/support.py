"""Shared helpers of the deployment checks: repo paths, YAML loading, kustomize builds."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = {
    "base": K8S / "base",
    "cilium": K8S / "overlays" / "cilium",
    "metallb-migration": K8S / "overlays" / "metallb-migration",
    "external-redis": K8S / "overlays" / "external-redis",
    "single-node": K8S / "overlays" / "single-node",
}
SERVICES = ("allocator", "leases", "announcer")
NAMESPACE = "l2lb-system"


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize_cmd() -> list[str] | None:
    """`kustomize build` if a kustomize binary is installed, else `kubectl kustomize`."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@functools.cache
def kustomize_build(path: Path) -> tuple[str, str, int]:
    cmd = kustomize_cmd()
    assert cmd is not None, "neither kustomize nor kubectl is installed (scripts/dev installs kubectl)"
    proc = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout, proc.stderr, proc.returncode


def built(overlay: str) -> list[dict[str, Any]]:
    out, err, rc = kustomize_build(OVERLAYS[overlay])
    assert rc == 0, f"kustomize build {OVERLAYS[overlay]} failed:\n{err}"
    return load_docs(out)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose_interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose variable interpolation: ``${X:-d}`` -> env X or d, ``${X}`` -> env X or ""."""
    env = env or {}
    if isinstance(value, str):
        return _INTERP.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", value).replace("$$", "$")
    if isinstance(value, list):
        return [compose_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: compose_interpolate(v, env) for k, v in value.items()}
    return value


def long_flags(args: list[str]) -> set[str]:
    """``--flag`` names in an argument list (``--a=b`` and ``--a b`` forms)."""
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}
