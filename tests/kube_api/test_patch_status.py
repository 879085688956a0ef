"""PATCH flavours (merge, strategic, json) and the status subresource."""

from __future__ import annotations

import pytest

from tests.kube_api.helpers import NS, SVC, assert_status, rv, service

pytestmark = pytest.mark.kube
MERGE = "application/merge-patch+json"
SMP = "application/strategic-merge-patch+json"
JSONP = "application/json-patch+json"
P = SVC.format(ns=NS)


def _mk(kube, name="p", **kw):
    code, o, _ = kube.http("POST", P, service(name, **kw))
    assert code == 201, o
    return o


def test_merge_patch_merges_maps_and_deletes_with_null(kube):
    body = service("mp", labels={"a": "1", "b": "2"})
    kube.http("POST", P, body)
    code, o, _ = kube.http("PATCH", P + "/mp", {"metadata": {"labels": {"b": None, "c": "3"}}}, content_type=MERGE)
    assert code == 200 and o["metadata"]["labels"] == {"a": "1", "c": "3"}


def test_merge_patch_replaces_lists(kube):
    _mk(kube, "ml")
    patch = {"spec": {"ports": [{"name": "x", "port": 9000, "protocol": "UDP"}]}}
    code, o, _ = kube.http("PATCH", P + "/ml", patch, content_type=MERGE)
    assert code == 200 and [(p["port"], p["protocol"]) for p in o["spec"]["ports"]] == [(9000, "UDP")]


def test_strategic_merge_ports_by_port(kube):
    _mk(kube, "sm")
    patch = {"spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}
    code, o, _ = kube.http("PATCH", P + "/sm", patch, content_type=SMP)
    assert code == 200, o
    assert sorted(p["port"] for p in o["spec"]["ports"]) == [53, 80], "ports merge by port"
    patch = {"spec": {"ports": [{"port": 80, "$patch": "delete"}]}}
    code, o, _ = kube.http("PATCH", P + "/sm", patch, content_type=SMP)
    assert code == 200 and [p["port"] for p in o["spec"]["ports"]] == [53]


def test_strategic_merge_status_conditions_by_type(kube):
    _mk(kube, "cond")
    c1 = {"type": "l2lb.io/IPAllocated", "status": "True", "reason": "Allocated", "message": "ok",
          "lastTransitionTime": "2026-01-01T00:00:00Z"}
    c2 = {"type": "l2lb.io/Announced", "status": "False", "reason": "NoNode", "message": "none",
          "lastTransitionTime": "2026-01-01T00:00:00Z"}
    code, o, _ = kube.http("PATCH", P + "/cond/status", {"status": {"conditions": [c1]}}, content_type=SMP)
    assert code == 200, o
    code, o, _ = kube.http("PATCH", P + "/cond/status", {"status": {"conditions": [c2]}}, content_type=SMP)
    assert {c["type"] for c in o["status"]["conditions"]} == {c1["type"], c2["type"]}
    c2b = {**c2, "status": "True", "reason": "Announced"}
    code, o, _ = kube.http("PATCH", P + "/cond/status", {"status": {"conditions": [c2b]}}, content_type=SMP)
    by_type = {c["type"]: c for c in o["status"]["conditions"]}
    assert len(o["status"]["conditions"]) == 2 and by_type[c2["type"]]["status"] == "True"
    assert by_type[c1["type"]]["reason"] == "Allocated"


def test_json_patch_and_failed_test_op(kube):
    _mk(kube, "jp", labels={"a": "1"})
    ops = [{"op": "test", "path": "/metadata/labels/a", "value": "1"},
           {"op": "add", "path": "/metadata/labels/b", "value": "2"},
           {"op": "replace", "path": "/spec/ports/0/port", "value": 81}]
    code, o, _ = kube.http("PATCH", P + "/jp", ops, content_type=JSONP)
    assert code == 200, o
    assert o["metadata"]["labels"] == {"a": "1", "b": "2"} and o["spec"]["ports"][0]["port"] == 81
    code, err, _ = kube.http("PATCH", P + "/jp", [{"op": "test", "path": "/metadata/labels/a", "value": "9"}],
                             content_type=JSONP)
    assert 400 <= code < 500 and code != 404
    assert_status(err, code)


def test_patch_with_stale_resource_version_conflicts(kube):
    o = _mk(kube, "prv")
    kube.http("PATCH", P + "/prv", {"metadata": {"labels": {"x": "1"}}}, content_type=MERGE)
    code, err, _ = kube.http("PATCH", P + "/prv",
                             {"metadata": {"resourceVersion": str(rv(o)), "labels": {"x": "2"}}}, content_type=MERGE)
    assert code == 409
    assert_status(err, 409, "Conflict")


def test_status_subresource_isolation(kube):
    o = _mk(kube, "st")
    ingress = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
    # the main endpoint ignores status
    o["status"] = ingress
    o["metadata"]["labels"] = {"via": "main"}
    code, o2, _ = kube.http("PUT", P + "/st", o)
    assert code == 200 and o2["metadata"]["labels"] == {"via": "main"}
    assert not o2.get("status", {}).get("loadBalancer", {}).get("ingress")
    # /status changes only status
    o2["status"] = ingress
    o2["metadata"]["labels"] = {"via": "status"}
    o2["spec"]["ports"][0]["port"] = 9999
    code, o3, _ = kube.http("PUT", P + "/st/status", o2)
    assert code == 200, o3
    assert [i["ip"] for i in o3["status"]["loadBalancer"]["ingress"]] == ["203.0.113.10"]
    assert o3["spec"]["ports"][0]["port"] == 80, "a status write keeps the spec"
    assert o3["metadata"].get("generation") == o2["metadata"].get("generation"), "status writes keep generation"
    # merge patch on /status
    code, o4, _ = kube.http("PATCH", P + "/st/status", {"status": {"loadBalancer": {"ingress": None}}},
                            content_type=MERGE)
    assert code == 200 and not o4["status"]["loadBalancer"].get("ingress")
    # a status PUT with a stale resourceVersion conflicts
    code, err, _ = kube.http("PUT", P + "/st/status", o3)
    assert code == 409
    assert_status(err, 409, "Conflict")


def test_ingress_only_on_load_balancer_services(kube):
    _mk(kube, "cip", lb=False)
    code, err, _ = kube.http("PATCH", P + "/cip/status",
                             {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.11"}]}}}, content_type=MERGE)
    assert code == 422
    assert_status(err, 422, "Invalid")


def test_noop_update_keeps_resource_version(kube):
    o = _mk(kube, "noop")
    code, o2, _ = kube.http("PATCH", P + "/noop", {"metadata": {"labels": {}}}, content_type=MERGE)
    assert code == 200 and rv(o2) == rv(o)
