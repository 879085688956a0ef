"""Apply Kubernetes YAML (files or directories) through l2lb's own rate-limited client."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from l2lb.adapters.kube.client import RESOURCES, KubeClient, KubeError, Resource

CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
_BY_KIND: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in RESOURCES.values()}
_BY_KIND[(CRDS.api_version, CRDS.kind)] = CRDS


class ManifestError(ValueError):
    pass


def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every object in the YAML files (directories: their *.yaml/*.yml, kustomization files skipped)."""
    docs: list[dict[str, Any]] = []
    for p in paths:
        files = sorted(p.glob("*.y*ml")) if p.is_dir() else [p]
        for f in files:
            if f.name.startswith("kustomization."):
                continue
            try:
                loaded = list(yaml.safe_load_all(f.read_text()))
            except yaml.YAMLError as e:
                raise ManifestError(f"{f}: not valid YAML: {e}") from None
            for d in loaded:
                if d is None:
                    continue
                if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                    raise ManifestError(f"{f}: every document needs apiVersion and kind")
                if d["kind"] == "List":
                    docs.extend(x for x in d.get("items") or [] if isinstance(x, dict))
                else:
                    docs.append(d)
    # namespaces and CRDs first, like kubectl apply users expect
    order = {"CustomResourceDefinition": 0, "Namespace": 1}
    return sorted(docs, key=lambda d: order.get(str(d.get("kind")), 2))


def resource_for(doc: dict[str, Any]) -> Resource:
    key = (str(doc.get("apiVersion")), str(doc.get("kind")))
    if key not in _BY_KIND:
        raise ManifestError(f"l2lb does not know how to apply {key[1]} ({key[0]})")
    return _BY_KIND[key]


async def apply(client: KubeClient, docs: Iterable[dict[str, Any]]) -> list[str]:
    """Create each object, or replace it when it exists. Returns "kind/name created|configured"."""
    out = []
    for doc in docs:
        res = resource_for(doc)
        meta = doc.get("metadata") or {}
        name = str(meta.get("name", ""))
        ns = (meta.get("namespace") or "default") if res.namespaced else None
        try:
            await client.create_object(res, doc, ns)
            out.append(f"{res.kind.lower()}/{name} created")
        except KubeError as e:
            if e.status != 409:
                raise
            cur = await client.get(res, name, ns)
            body = dict(doc)
            body["metadata"] = dict(meta)
            body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            await client.replace(res, body, ns)
            out.append(f"{res.kind.lower()}/{name} configured")
    return out
