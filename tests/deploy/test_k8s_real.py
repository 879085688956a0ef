"""The built manifests against a REAL kube-apiserver (tests/support/kube-apiserver, fixture
``kube_real``): server-side dry-run of every overlay, then a real apply of the base and RBAC
checked by the server's own authorizer (`kubectl auth can-i --as=<service account>`).

No controllers run there (no pods start); what is checked is what the API server checks: schema,
defaulting, admission, RBAC escalation rules -- and what each ServiceAccount may then do.
Skipped outside CI when the binary is not built; in CI the fixture fails instead.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.support import NAMESPACE, OVERLAYS, ROOT, built
from tests.deploy.test_rbac import needed

pytestmark = [
    pytest.mark.kube,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl"),
]


def kubectl(server: Any, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", server.kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr[-3000:]}"
    return proc


def test_server_side_dry_run(kube_real: Any) -> None:
    kube_real.ensure_namespace(NAMESPACE)
    own = [str(p) for p in sorted((ROOT / "k8s" / "crds").glob("l2lb.io_*.yaml"))]
    assert own
    kubectl(kube_real, "apply", "--server-side", "--force-conflicts", *[f"--filename={p}" for p in own])
    for overlay in OVERLAYS:
        text = yaml.safe_dump_all(built(overlay))
        out = kubectl(
            kube_real, "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-", stdin=text
        )
        applied = [ln for ln in out.stdout.splitlines() if "(server dry run)" in ln]
        assert len(applied) == len(built(overlay)), out.stdout


def can_i(
    server: Any, sa: str, verb: str, kind: str, namespace: str | None, *, sub: str = "", name: str = ""
) -> bool:
    """The server's authorizer on one request of ServiceAccount ``sa`` (a SubjectAccessReview)."""
    plural, _, group = kind.partition(".")
    attrs = {"verb": verb, "resource": plural, "group": group, "subresource": sub, "name": name}
    if namespace:
        attrs["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{NAMESPACE}:{sa}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
            "resourceAttributes": attrs,
        },
    }
    out = server.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(out.get("status", {}).get("allowed"))


def test_rbac_as_the_server_sees_it(kube_real: Any) -> None:
    kube_real.ensure_namespace(NAMESPACE)
    base = yaml.safe_dump_all(built("base"))
    kubectl(kube_real, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=base)
    if can_i(kube_real, "l2lb-announcer", "delete", "namespaces", None):
        pytest.skip("the real server's authorizer allows everything (no RBAC): nothing to check")
    checked = 0
    for service in ("allocator", "leases", "announcer"):
        if not (ROOT / "services" / service / "main.py").exists():
            continue
        sa = f"l2lb-{service}"
        for group, resource, verb in sorted(needed(service)):
            if group in ("cilium.io", "metallb.io"):
                continue  # not switched on in the base
            plural, _, sub = resource.partition("/")
            kind = f"{plural}.{group}" if group else plural
            ns = NAMESPACE if group == "coordination.k8s.io" else "default"
            name = ""
            if group == "coordination.k8s.io" and verb in ("get", "update") and service == "allocator":
                name = "l2lb-allocator"  # its Role names its own Lease only
            assert can_i(kube_real, sa, verb, kind, ns, sub=sub, name=name), f"{sa} may not {verb} {resource} in {ns}"
            checked += 1
    assert checked
    # and what they must not do
    assert not can_i(kube_real, "l2lb-allocator", "patch", "services", "default")  # only services/status
    assert can_i(kube_real, "l2lb-allocator", "patch", "services", "default", sub="status")
    assert not can_i(kube_real, "l2lb-allocator", "update", "leases.coordination.k8s.io", NAMESPACE, name="l2lb-leases")
    assert not can_i(kube_real, "l2lb-leases", "update", "services", "default")
    assert not can_i(kube_real, "l2lb-leases", "create", "leases.coordination.k8s.io", "default")
    assert not can_i(kube_real, "l2lb-announcer", "list", "nodes", None)
    assert not can_i(kube_real, "l2lb-announcer", "get", "secrets", NAMESPACE)
