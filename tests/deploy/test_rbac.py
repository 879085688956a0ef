"""RBAC = what the code calls, per service and overlay.

For each service, the (apiGroup, resource, verb) triples its ServiceAccount is granted (Roles and
ClusterRoles bound to it, in the built manifests) are compared with the requests its code can make
(tests/deploy/rbac_from_code.py: a static reading of services/<name>/ and of the
l2lb.adapters.kube helpers it uses):

* granted but never called -> failure (least privilege);
* called but not granted -> failure, except for the other projects' kinds an overlay leaves off
  (cilium.io in base/metallb-migration, metallb.io in base/cilium: the service is told not to
  watch them there), and where it switches them on only their reads are required.

Until a service's code exists (services/<name>/main.py), its comparison is skipped.
The *observed* side (the embedded API server's request log during a real run of the services,
by User-Agent) is checked against the same RBAC in test_devstack.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.rbac_from_code import PARAM, analyse_source, helper_needs, service_needs
from tests.deploy.support import OVERLAYS, ROOT, SERVICES, built, by_kind, kustomize_cmd

KUBE_PKG = ROOT / "src" / "l2lb" / "adapters" / "kube"
FOREIGN = {"cilium.io", "metallb.io"}
ENABLED_FOREIGN = {"base": set(), "cilium": {"cilium.io"}, "metallb-migration": {"metallb.io"}, "external-redis": set(),
                   "single-node": set()}

Triple = tuple[str, str, str]  # apiGroup, resource[/subresource], verb


def resources_table() -> dict[str, tuple[str, str]]:
    from l2lb.adapters.kube.client import RESOURCES

    return {k: (r.group, r.plural) for k, r in RESOURCES.items()}


def granted(docs: list[dict[str, Any]], sa: str) -> set[Triple]:
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    out: set[Triple] = set()
    for b in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"]):
            continue
        role = roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]
        for rule in role.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], f"{sa}: wildcard in {rule}"
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((g, r, v))
    return out


@functools.cache
def needed(service: str) -> frozenset[Triple]:
    table = resources_table()
    calls = service_needs(ROOT / "services" / service, KUBE_PKG, table).calls
    out: set[Triple] = set()
    for key, sub, verb in calls:
        group, plural = table[key]
        out.add((group, f"{plural}/{sub}" if sub else plural, verb))
    return frozenset(out)


# -- the analyser itself (runs whatever the services' state) -------------------------------------


def test_analyser_reads_helpers() -> None:
    helpers = helper_needs(KUBE_PKG, resources_table())
    assert helpers["LeaderElector"].calls >= {("leases", "", "get"), ("leases", "", "create"), ("leases", "", "update")}
    assert ("events", "", "create") in helpers["EventRecorder"].calls
    assert helpers["Informer"].calls == {(PARAM, "", "list"), (PARAM, "", "watch")}
    assert helpers["patch_status_if_changed"].calls == {(PARAM, "status", "patch")}


def test_analyser_reads_service_code() -> None:
    table = resources_table()
    helpers = helper_needs(KUBE_PKG, table)
    src = """
from l2lb.adapters.kube.client import RESOURCES
SERVICES = RESOURCES["services"]
async def run(client, stop):
    svc = Informer(client, SERVICES)
    pools = {k: Informer(client, RESOURCES[k]) for k in ("l2lb_pools", "cilium_pools_v2")}
    LeaderElector(client, namespace="l2lb-system", name="l2lb-allocator", identity="me")
    await patch_status_if_changed(client, SERVICES, obj, status)
    await update_with_retry(client, RESOURCES["l2lb_pools"], "p", fn, subresource="status")
    await client.get(RESOURCES["nodes"], "n1")
    cache = {}
    cache.get("nodes")            # not a Kubernetes request
    await client.delete(RESOURCES["events"], "e", "ns")
"""
    calls = analyse_source(src, table, helpers).calls
    assert calls == {
        ("services", "", "list"),
        ("services", "", "watch"),
        ("l2lb_pools", "", "list"),
        ("l2lb_pools", "", "watch"),
        ("cilium_pools_v2", "", "list"),
        ("cilium_pools_v2", "", "watch"),
        ("leases", "", "get"),
        ("leases", "", "create"),
        ("leases", "", "update"),
        ("services", "status", "patch"),
        ("l2lb_pools", "", "get"),
        ("l2lb_pools", "status", "update"),
        ("nodes", "", "get"),
        ("events", "", "delete"),
    }


def test_rbac_check_catches_extra_grant() -> None:
    docs = built("base")
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "l2lb-announcer")
    before = granted(docs, "l2lb-announcer")
    role["rules"].append({"apiGroups": [""], "resources": ["services"], "verbs": ["delete"]})
    try:
        assert granted(docs, "l2lb-announcer") - before == {("", "services", "delete")}
    finally:
        role["rules"].pop()


# -- the manifests against the code ---------------------------------------------------------------


@pytest.mark.skipif(kustomize_cmd() is None, reason="needs kubectl or kustomize")
@pytest.mark.parametrize("overlay", list(OVERLAYS))
@pytest.mark.parametrize("service", SERVICES)
def test_rbac_matches_code(service: str, overlay: str) -> None:
    main = ROOT / "services" / service / "main.py"
    if not Path(main).exists():
        pytest.skip(f"services/{service}/main.py is not written yet: nothing to derive its RBAC from")
    have = granted(built(overlay), f"l2lb-{service}")
    want = needed(service)
    extra = have - want
    assert not extra, f"{service} ({overlay}) is granted verbs its code never calls: {sorted(extra)}"
    # other projects' kinds: required only where the overlay switches them on, and only reads
    # (the static reading over-approximates writes to them, e.g. a status patch the code does
    # for Cilium pools but not for MetalLB's)
    missing = {
        t
        for t in want - have
        if t[0] not in FOREIGN or (t[0] in ENABLED_FOREIGN[overlay] and t[2] in ("get", "list", "watch"))
    }
    assert not missing, f"{service} ({overlay}) calls what its RBAC does not allow: {sorted(missing)}"
