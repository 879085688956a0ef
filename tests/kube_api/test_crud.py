"""CRUD, resourceVersion/generation bookkeeping, conflicts, namespaces, finalizers."""

from __future__ import annotations

import time

import pytest

from tests.kube_api.helpers import NS, SVC, assert_status, namespace, rv, service

pytestmark = pytest.mark.kube


def test_discovery_serves_core_and_groups(kube):
    code, api, _ = kube.http("GET", "/api")
    assert code == 200 and "v1" in api["versions"]
    code, v1, _ = kube.http("GET", "/api/v1")
    names = {r["name"]: r for r in v1["resources"]}
    for res in ("namespaces", "services", "services/status", "nodes", "events"):
        assert res in names, res
    assert names["services"]["namespaced"] is True and names["nodes"]["namespaced"] is False
    code, apis, _ = kube.http("GET", "/apis")
    groups = {g["name"] for g in apis["groups"]}
    assert {"coordination.k8s.io", "discovery.k8s.io", "apiextensions.k8s.io"} <= groups
    code, lease, _ = kube.http("GET", "/apis/coordination.k8s.io/v1")
    assert code == 200 and any(r["name"] == "leases" for r in lease["resources"])
    code, ver, _ = kube.http("GET", "/version")
    assert code == 200 and ver["major"] == "1"


def test_create_get_list_update_delete(kube):
    code, created, _ = kube.http("POST", SVC.format(ns=NS), service("web"))
    assert code == 201
    md = created["metadata"]
    assert md["uid"] and md["creationTimestamp"] and md["namespace"] == NS
    assert not md.get("generation"), "Services carry no generation (a real server sets none)"
    code, got, _ = kube.http("GET", SVC.format(ns=NS) + "/web")
    assert code == 200 and got["metadata"]["uid"] == md["uid"] and rv(got) == rv(created)
    code, lst, _ = kube.http("GET", SVC.format(ns=NS))
    assert code == 200 and lst["kind"] == "ServiceList"
    assert [i["metadata"]["name"] for i in lst["items"]] == ["web"]
    assert int(lst["metadata"]["resourceVersion"]) >= rv(created)

    got["spec"]["ports"][0]["port"] = 8080
    code, upd, _ = kube.http("PUT", SVC.format(ns=NS) + "/web", got)
    assert code == 200 and rv(upd) > rv(created)
    assert upd["metadata"]["uid"] == md["uid"] and upd["metadata"]["creationTimestamp"] == md["creationTimestamp"]

    upd["metadata"]["labels"] = {"tier": "front"}
    code, upd2, _ = kube.http("PUT", SVC.format(ns=NS) + "/web", upd)
    assert code == 200 and upd2["metadata"]["labels"] == {"tier": "front"}
    assert rv(upd2) > rv(upd)

    code, _, _ = kube.http("DELETE", SVC.format(ns=NS) + "/web")
    assert code == 200
    code, body, _ = kube.http("GET", SVC.format(ns=NS) + "/web")
    assert code == 404
    assert_status(body, 404, "NotFound")


def test_already_exists_and_stale_update_conflict(kube):
    path = SVC.format(ns=NS)
    code, first, _ = kube.http("POST", path, service("dup"))
    assert code == 201
    code, body, _ = kube.http("POST", path, service("dup"))
    assert code == 409
    assert_status(body, 409, "AlreadyExists")

    stale = dict(first)
    code, newer, _ = kube.http("PATCH", path + "/dup", {"metadata": {"labels": {"x": "1"}}},
                               content_type="application/merge-patch+json")
    assert code == 200 and rv(newer) > rv(first)
    stale["metadata"] = {**first["metadata"], "labels": {"x": "2"}}
    code, body, _ = kube.http("PUT", path + "/dup", stale)
    assert code == 409
    assert_status(body, 409, "Conflict")
    code, cur, _ = kube.http("GET", path + "/dup")
    assert cur["metadata"]["labels"] == {"x": "1"}, "a rejected update changes nothing"


def test_resource_versions_are_global_and_increasing(kube):
    seen = []
    for i in range(3):
        _, o, _ = kube.http("POST", SVC.format(ns=NS), service(f"s{i}"))
        seen.append(rv(o))
        _, n, _ = kube.http("POST", "/api/v1/nodes", {"metadata": {"name": f"node-{i}"}})
        seen.append(rv(n))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_namespace_defaulting_and_mismatch(kube):
    body = service("nsd")
    del body["metadata"]["namespace"]
    code, o, _ = kube.http("POST", SVC.format(ns=NS), body)
    assert code == 201 and o["metadata"]["namespace"] == NS
    body = service("other", ns="kube-system")
    code, err, _ = kube.http("POST", SVC.format(ns=NS), body)
    assert code == 400
    assert_status(err, 400, "BadRequest")


def test_create_in_missing_namespace_is_404(kube):
    code, err, _ = kube.http("POST", SVC.format(ns="nope"), service("x", ns="nope"))
    assert code == 404
    assert_status(err, 404, "NotFound")


def test_namespace_deletion_removes_contents(kube):
    kube.require_embedded("a real server needs its namespace controller to empty a deleted namespace")
    kube.http("POST", "/api/v1/namespaces", namespace("team-a"))
    for n in ("a1", "a2"):
        code, _, _ = kube.http("POST", SVC.format(ns="team-a"), service(n, ns="team-a"))
        assert code == 201
    kube.http("POST", SVC.format(ns=NS), service("keep"))
    code, _, _ = kube.http("DELETE", "/api/v1/namespaces/team-a")
    assert code == 200
    # a real server finalizes the namespace asynchronously: allow it a little time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, lst, _ = kube.http("GET", "/api/v1/services")
        names = sorted(i["metadata"]["name"] for i in lst["items"] if i["metadata"]["namespace"] in (NS, "team-a"))
        if names == ["keep"]:
            break
        time.sleep(0.2)
    assert names == ["keep"]


def test_cluster_scoped_nodes_and_generate_name(kube):
    code, n, _ = kube.http("POST", "/api/v1/nodes", {"metadata": {"generateName": "worker-", "labels": {"a": "b"}}})
    assert code == 201
    assert n["metadata"]["name"].startswith("worker-") and len(n["metadata"]["name"]) > len("worker-")
    assert "namespace" not in n["metadata"]
    code, got, _ = kube.http("GET", "/api/v1/nodes/" + n["metadata"]["name"])
    assert code == 200 and got["metadata"]["labels"] == {"a": "b"}


def test_finalizers_keep_object_until_removed(kube):
    path = SVC.format(ns=NS)
    body = service("fin")
    body["metadata"]["finalizers"] = ["l2lb.io/test"]
    kube.http("POST", path, body)
    code, o, _ = kube.http("DELETE", path + "/fin")
    assert code in (200, 202)
    code, o, _ = kube.http("GET", path + "/fin")
    assert code == 200 and o["metadata"].get("deletionTimestamp")
    code, _, _ = kube.http("PATCH", path + "/fin", {"metadata": {"finalizers": None}},
                           content_type="application/merge-patch+json")
    assert code == 200
    code, _, _ = kube.http("GET", path + "/fin")
    assert code == 404


def test_delete_precondition_on_resource_version(kube):
    path = SVC.format(ns=NS)
    _, o, _ = kube.http("POST", path, service("pre"))
    code, err, _ = kube.http("DELETE", path + "/pre",
                             {"kind": "DeleteOptions", "apiVersion": "v1",
                              "preconditions": {"resourceVersion": str(rv(o) - 1)}})
    assert code == 409
    assert_status(err, 409, "Conflict")
    code, _, _ = kube.http("DELETE", path + "/pre", {"preconditions": {"resourceVersion": str(rv(o))}})
    assert code == 200


def test_leases_and_endpointslices_round_trip(kube):
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "l2lb-allocator", "namespace": "default"},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                      "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 0}}
    code, lo, _ = kube.http("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease)
    assert code == 201 and lo["spec"]["holderIdentity"] == "a"
    lo["spec"]["holderIdentity"] = "b"
    lo["spec"]["leaseTransitions"] = 1
    code, lo2, _ = kube.http("PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/l2lb-allocator", lo)
    assert code == 200 and lo2["spec"]["holderIdentity"] == "b"
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-abc", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4",
           "endpoints": [{"addresses": ["10.0.0.5"], "nodeName": "n1", "conditions": {"ready": True}}],
           "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}
    code, e, _ = kube.http("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", eps)
    assert code == 201 and e["endpoints"][0]["nodeName"] == "n1" and e["metadata"]["generation"] == 1
    e["endpoints"][0]["conditions"]["ready"] = False
    code, e2, _ = kube.http("PUT", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-abc", e)
    assert code == 200 and e2["metadata"]["generation"] == 2, "a change bumps an EndpointSlice's generation"
    e2["metadata"]["annotations"] = {"note": "x"}
    code, e3, _ = kube.http("PUT", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-abc", e2)
    assert code == 200 and e3["metadata"]["generation"] == 2, "metadata changes do not bump generation"
    code, lst, _ = kube.http("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                             query={"labelSelector": "kubernetes.io/service-name=web"})
    assert [i["metadata"]["name"] for i in lst["items"]] == ["web-abc"]


def test_events_create_patch_and_field_selector(kube):
    base = f"/api/v1/namespaces/{NS}/events"
    ev = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": NS},
          "involvedObject": {"kind": "Service", "namespace": NS, "name": "web", "apiVersion": "v1"},
          "reason": "IPAllocated", "message": "203.0.113.5", "type": "Normal", "count": 1,
          "source": {"component": "l2lb-allocator"},
          "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"}
    code, e, _ = kube.http("POST", base, ev)
    assert code == 201, e
    other = {**ev, "metadata": {"name": "db.1", "namespace": NS},
             "involvedObject": {**ev["involvedObject"], "name": "db"}}
    assert kube.http("POST", base, other)[0] == 201
    code, e2, _ = kube.http("PATCH", base + "/web.1", {"count": 2, "lastTimestamp": "2026-01-01T00:00:05Z"},
                            content_type="application/strategic-merge-patch+json")
    assert code == 200 and e2["count"] == 2 and e2["reason"] == "IPAllocated"
    code, lst, _ = kube.http("GET", base, query={"fieldSelector": "involvedObject.name=web"})
    assert code == 200 and [i["metadata"]["name"] for i in lst["items"]] == ["web.1"]


def test_node_status_conditions_merge_by_type(kube):
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-cond", "labels": {"zone": "a"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "ok", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "addresses": [{"type": "InternalIP", "address": "198.51.100.10"}]}}
    code, _, _ = kube.http("POST", "/api/v1/nodes", node)
    assert code == 201
    patch = {"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "l2lb",
                                        "message": "m", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    code, n2, _ = kube.http("PATCH", "/api/v1/nodes/n-cond/status", patch,
                            content_type="application/strategic-merge-patch+json")
    assert code == 200, n2
    assert sorted(c["type"] for c in n2["status"]["conditions"]) == ["NetworkUnavailable", "Ready"]
    code, lst, _ = kube.http("GET", "/api/v1/nodes", query={"labelSelector": "zone=a"})
    assert [i["metadata"]["name"] for i in lst["items"]] == ["n-cond"]


def test_delete_collection_by_label(kube):
    path = f"/api/v1/namespaces/{NS}/configmaps"
    for name, team in (("dc1", "x"), ("dc2", "x"), ("dc3", "y")):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"team": team}},
              "data": {"k": "v"}}
        assert kube.http("POST", path, cm)[0] == 201
    code, _, _ = kube.http("DELETE", path, query={"labelSelector": "team=x"})
    assert code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, lst, _ = kube.http("GET", path)
        names = sorted(i["metadata"]["name"] for i in lst["items"] if i["metadata"]["name"].startswith("dc"))
        if names == ["dc3"]:
            break
        time.sleep(0.1)
    assert names == ["dc3"]


def test_dry_run_changes_nothing(kube):
    path = SVC.format(ns=NS)
    code, o, _ = kube.http("POST", path, service("dry"), query={"dryRun": "All"})
    assert code == 201 and o["metadata"]["name"] == "dry"
    assert kube.http("GET", path + "/dry")[0] == 404
    _, real, _ = kube.http("POST", path, service("dry"))
    code, o2, _ = kube.http("PATCH", path + "/dry", {"metadata": {"labels": {"x": "1"}}}, query={"dryRun": "All"},
                            content_type="application/merge-patch+json")
    assert code == 200 and o2["metadata"]["labels"] == {"x": "1"}
    _, cur, _ = kube.http("GET", path + "/dry")
    assert not cur["metadata"].get("labels") and rv(cur) == rv(real)
    assert kube.http("DELETE", path + "/dry", query={"dryRun": "All"})[0] == 200
    assert kube.http("GET", path + "/dry")[0] == 200
