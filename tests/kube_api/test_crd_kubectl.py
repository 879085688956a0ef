"""CRDs (served groups, status subresource, schema checks, multi-version), kubectl apply of the seed,
and kubernetes-asyncio reading the server through the kubeconfig."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.kube_api.helpers import NS, assert_status, rv

pytestmark = pytest.mark.kube
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed"
WIDGETS = "/apis/test.l2lb.io/v1/widgets"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.l2lb.io"},
    "spec": {
        "group": "test.l2lb.io", "scope": "Cluster",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [{
            "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size"], "properties": {
                    "size": {"type": "integer", "minimum": 1},
                    "color": {"type": "string", "enum": ["red", "blue"]}}},
                "status": {"type": "object", "properties": {"used": {"type": "integer"}}}}}},
        }],
    },
}


@pytest.fixture
def widgets(kube):
    kube.apply(json.dumps(WIDGET_CRD))
    yield kube


def test_crd_makes_group_served(widgets):
    code, grp, _ = widgets.http("GET", "/apis/test.l2lb.io/v1")
    assert code == 200
    res = {r["name"]: r for r in grp["resources"]}
    assert res["widgets"]["kind"] == "Widget" and res["widgets"]["namespaced"] is False
    assert "widgets/status" in res
    code, w, _ = widgets.http("POST", WIDGETS, {"apiVersion": "test.l2lb.io/v1", "kind": "Widget",
                                                "metadata": {"name": "w1"}, "spec": {"size": 2}})
    assert code == 201 and w["kind"] == "Widget" and w["metadata"]["generation"] == 1


def test_crd_status_subresource(widgets):
    _, w, _ = widgets.http("POST", WIDGETS, {"apiVersion": "test.l2lb.io/v1", "kind": "Widget",
                                             "metadata": {"name": "w2"}, "spec": {"size": 2},
                                             "status": {"used": 5}})
    assert not w.get("status"), "status is dropped on create when the subresource exists"
    code, w2, _ = widgets.http("PATCH", WIDGETS + "/w2/status",
                               {"status": {"used": 1}, "spec": {"size": 9}, "metadata": {"labels": {"x": "y"}}},
                               content_type="application/merge-patch+json")
    assert code == 200 and w2["status"] == {"used": 1} and w2["spec"]["size"] == 2
    assert not w2["metadata"].get("labels"), "a custom resource's status write keeps its metadata"
    assert w2["metadata"]["generation"] == 1, "status writes keep generation"
    code, w3, _ = widgets.http("PATCH", WIDGETS + "/w2", {"spec": {"size": 3}, "status": {"used": 7}},
                               content_type="application/merge-patch+json")
    assert code == 200 and w3["spec"]["size"] == 3 and w3["status"] == {"used": 1}
    assert w3["metadata"]["generation"] == 2


def test_crd_schema_violations_are_422(widgets):
    for spec in ({"size": 0}, {"size": "big"}, {"size": 1, "color": "green"}, {}):
        code, err, _ = widgets.http("POST", WIDGETS, {"apiVersion": "test.l2lb.io/v1", "kind": "Widget",
                                                      "metadata": {"name": "bad"}, "spec": spec})
        assert code == 422, (spec, err)
        assert_status(err, 422, "Invalid")


def test_crd_unknown_fields_pruned_or_rejected_when_strict(widgets):
    body = {"apiVersion": "test.l2lb.io/v1", "kind": "Widget", "metadata": {"name": "unk"},
            "spec": {"size": 1, "bogus": True}}
    code, err, _ = widgets.http("POST", WIDGETS, body, query={"fieldValidation": "Strict"})
    assert code == 400
    assert_status(err, 400, "BadRequest")
    code, w, _ = widgets.http("POST", WIDGETS, body)
    assert code == 201 and "bogus" not in w["spec"]


def test_strategic_merge_patch_unsupported_for_custom_resources(widgets):
    widgets.http("POST", WIDGETS, {"apiVersion": "test.l2lb.io/v1", "kind": "Widget",
                                   "metadata": {"name": "smp"}, "spec": {"size": 1}})
    code, err, _ = widgets.http("PATCH", WIDGETS + "/smp", {"spec": {"size": 2}},
                                content_type="application/strategic-merge-patch+json")
    assert code == 415
    assert_status(err, 415, "UnsupportedMediaType")


def test_multi_version_crd_shares_objects(kube, crds):
    pool = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "mv"}, "spec": {"blocks": [{"cidr": "198.51.100.0/28"}]}}
    code, o, _ = kube.http("POST", "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools", pool)
    assert code == 201, o
    code, o2, _ = kube.http("GET", "/apis/cilium.io/v2/ciliumloadbalancerippools/mv")
    assert code == 200 and o2["apiVersion"] == "cilium.io/v2" and o2["spec"]["blocks"] == pool["spec"]["blocks"]
    assert rv(o2) == rv(o)


def test_crd_deletion_removes_resources(kube):
    kube.reset(keep_crds=False) if kube.embedded else None
    kube.apply(json.dumps(WIDGET_CRD))
    kube.http("POST", WIDGETS, {"apiVersion": "test.l2lb.io/v1", "kind": "Widget",
                                "metadata": {"name": "gone"}, "spec": {"size": 1}})
    code, _, _ = kube.http("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.l2lb.io")
    assert code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, _, _ = kube.http("GET", WIDGETS)
        if code == 404:
            break
        time.sleep(0.2)
    assert code == 404


def test_kubectl_apply_seed(kube, crds):
    files = [f for f in sorted(Path(crds).glob("*.yaml")) if f.name != "kustomization.yaml"] if Path(crds).is_dir() \
        else [Path(crds)]
    out = kube.kubectl("apply", *[a for f in files for a in ("-f", str(f))]).stdout
    assert "customresourcedefinition" in out
    out = kube.kubectl("apply", "-k", str(SEED)).stdout
    for want in ("namespace/pihole", "service/pihole-dns-tcp", "service/pihole-dns-udp", "service/pihole-web",
                 "ciliumloadbalancerippool.cilium.io/default-pool",
                 "ciliuml2announcementpolicy.cilium.io/default-l2-announcement-policy"):
        assert want in out, out
    again = kube.kubectl("apply", "-k", str(SEED)).stdout
    assert "configured" not in again and again.count("unchanged") == 6, again
    code, svc, _ = kube.http("GET", "/api/v1/namespaces/pihole/services/pihole-dns-udp")
    assert code == 200 and svc["metadata"]["annotations"]["io.cilium/lb-ipam-sharing-key"] == "pi-hole"
    assert svc["spec"]["ports"][0]["protocol"] == "UDP"
    code, pool, _ = kube.http("GET", "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/default-pool")
    assert code == 200 and "namespace" not in pool["metadata"], "cluster-scoped: namespace ignored"
    got = json.loads(kube.kubectl("get", "svc", "-n", "pihole", "-o", "json").stdout)
    assert sorted(i["metadata"]["name"] for i in got["items"]) == ["pihole-dns-tcp", "pihole-dns-udp", "pihole-web"]


def test_kubectl_apply_changes_go_through_strategic_merge(kube, crds, tmp_path):
    kube.kubectl("apply", "-k", str(SEED))
    text = (SEED / "pihole.yaml").read_text().replace("port: 80\n", "port: 8080\n")
    (tmp_path / "p.yaml").write_text(text)
    out = kube.kubectl("apply", "-f", str(tmp_path / "p.yaml")).stdout
    assert "service/pihole-web configured" in out
    code, svc, _ = kube.http("GET", "/api/v1/namespaces/pihole/services/pihole-web")
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]
    kube.kubectl("delete", "service", "-n", "pihole", "pihole-web")
    code, _, _ = kube.http("GET", "/api/v1/namespaces/pihole/services/pihole-web")
    assert code == 404


def test_fixture_apply_accepts_dirs_and_text(kube, crds):
    objs = kube.apply(SEED)
    assert sorted(o["kind"] for o in objs) == ["CiliumL2AnnouncementPolicy", "CiliumLoadBalancerIPPool",
                                              "Namespace", "Service", "Service", "Service"]
    again = kube.apply(SEED)
    assert [rv(a) for a in again] == [rv(o) for o in objs], "re-applying the same objects changes nothing"
    text = (f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a, namespace: {NS}}}\ndata: {{k: v}}\n---\n"
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: b, namespace: {NS}}}\ndata: {{k: w}}\n---\n"
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n")
    made = kube.apply(text)
    assert [(o["metadata"]["name"], o["data"]["k"]) for o in made] == [("a", "v"), ("b", "w")]
    changed = kube.apply(text.replace("k: w", "k: z"))
    assert changed[1]["data"]["k"] == "z" and rv(changed[1]) > rv(made[1]) and rv(changed[0]) == rv(made[0])


async def test_kubernetes_asyncio_client_works(kube):
    from kubernetes_asyncio import client, config, watch

    kube.http("POST", f"/api/v1/namespaces/{NS}/services",
              {"metadata": {"name": "ka"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    cfg = client.Configuration()
    await config.load_kube_config(config_file=kube.kubeconfig, client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        v1 = client.CoreV1Api(api)
        svcs = await v1.list_namespaced_service(NS)
        assert [s.metadata.name for s in svcs.items] == ["ka"]
        start = svcs.metadata.resource_version
        await v1.patch_namespaced_service_status(
            "ka", NS, {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}})
        w = watch.Watch()
        got = []
        async with w.stream(v1.list_namespaced_service, NS, resource_version=start, timeout_seconds=2) as s:
            async for ev in s:
                got.append((ev["type"], ev["object"].status.load_balancer.ingress[0].ip))
                break
        assert got == [("MODIFIED", "203.0.113.7")]


def test_kubectl_get_shows_external_ip_and_printer_columns(kube, crds):
    kube.kubectl("apply", "-k", str(SEED))
    code, _, _ = kube.http("PATCH", "/api/v1/namespaces/pihole/services/pihole-web/status",
                           {"status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.130"}]}}},
                           content_type="application/merge-patch+json")
    assert code == 200
    out = kube.kubectl("get", "svc", "-n", "pihole").stdout
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert "EXTERNAL-IP" in out.splitlines()[0]
    assert "192.168.1.130" in lines["pihole-web"] and "<pending>" in lines["pihole-dns-tcp"]
    assert "53:" in out and "/UDP" in lines["pihole-dns-udp"][4]
    crd = kube.http("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                           "ciliumloadbalancerippools.cilium.io")[1]
    cols = [c["name"].upper() for v in crd["spec"]["versions"] for c in v.get("additionalPrinterColumns", [])]
    out = kube.kubectl("get", "ciliumloadbalancerippools.cilium.io").stdout
    header = out.splitlines()[0].split()
    for c in cols:
        assert c.replace(" ", "") in [h.replace(" ", "") for h in header] or c in out.splitlines()[0], (c, out)
    assert "default-pool" in out


async def test_crd_deletion_ends_watches(kube):
    import asyncio

    from tests.kube_api.helpers import watch

    kube.require_embedded("a real server ends such watches too, but only after its CRD finalizer has run")
    kube.apply(json.dumps(WIDGET_CRD))
    _, lst, _ = kube.http("GET", WIDGETS)
    async with watch(kube, WIDGETS, resourceVersion=lst["metadata"]["resourceVersion"]) as w:
        await asyncio.to_thread(kube.http, "POST", WIDGETS, {"apiVersion": "test.l2lb.io/v1", "kind": "Widget",
                                                             "metadata": {"name": "x"}, "spec": {"size": 1}})
        await asyncio.to_thread(
            kube.http, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.l2lb.io")
        evs = await w.collect(3, timeout=5)
    assert [t for t, _ in evs] == ["ADDED", "DELETED"], "the stream ends after the objects' DELETED events"
