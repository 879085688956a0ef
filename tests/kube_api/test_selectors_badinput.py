"""Label/field selectors on lists, and bad input answered by a Kubernetes Status (4xx), never a 5xx."""

from __future__ import annotations

import pytest

from tests.kube_api.helpers import NS, SVC, assert_status, service

pytestmark = pytest.mark.kube
P = SVC.format(ns=NS)


@pytest.fixture
def labelled(kube):
    for name, labels in (("a", {"env": "prod", "tier": "web"}), ("b", {"env": "dev", "tier": "web"}),
                         ("c", {"env": "test"}), ("d", {})):
        code, _, _ = kube.http("POST", P, service(name, labels=labels))
        assert code == 201
    return kube


@pytest.mark.parametrize(("selector", "want"), [
    ("env=prod", ["a"]),
    ("env==dev", ["b"]),
    ("env!=prod", ["b", "c", "d"]),
    ("env in (prod,dev)", ["a", "b"]),
    ("env notin (prod,dev)", ["c", "d"]),
    ("tier", ["a", "b"]),
    ("!tier", ["c", "d"]),
    ("tier=web,env!=dev", ["a"]),
    ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(labelled, selector, want):
    code, lst, _ = labelled.http("GET", P, query={"labelSelector": selector})
    assert code == 200
    assert sorted(i["metadata"]["name"] for i in lst["items"]) == want


def test_field_selector_metadata_name(labelled):
    code, lst, _ = labelled.http("GET", P, query={"fieldSelector": "metadata.name=c"})
    assert code == 200 and [i["metadata"]["name"] for i in lst["items"]] == ["c"]
    code, lst, _ = labelled.http("GET", P, query={"fieldSelector": "metadata.name!=c"})
    assert sorted(i["metadata"]["name"] for i in lst["items"]) == ["a", "b", "d"]
    code, lst, _ = labelled.http("GET", "/api/v1/services", query={"fieldSelector": f"metadata.namespace={NS}"})
    assert len(lst["items"]) == 4


@pytest.mark.parametrize("selector", ["env in (prod", "a b c", "env=(x)", "=x"])
def test_invalid_label_selector_is_400(kube, selector):
    code, err, _ = kube.http("GET", P, query={"labelSelector": selector})
    assert code == 400
    assert_status(err, 400, "BadRequest")


def test_malformed_json_is_400(kube):
    code, err, _ = kube.http("POST", P, raw=b'{"metadata": {"name": "x"')
    assert code == 400
    assert_status(err, 400, "BadRequest")


def test_wrong_types_are_4xx(kube):
    bad = service("badtype")
    bad["spec"]["ports"][0]["port"] = "eighty"
    code, err, _ = kube.http("POST", P, bad)
    assert 400 <= code < 500
    assert_status(err, code)
    bad = service("badlabels")
    bad["metadata"]["labels"] = ["not", "a", "map"]
    code, err, _ = kube.http("POST", P, bad)
    assert 400 <= code < 500
    assert_status(err, code)
    code, err, _ = kube.http("POST", P, ["a", "list"])
    assert 400 <= code < 500
    assert_status(err, code)


def test_missing_name_is_invalid(kube):
    bad = service("x")
    del bad["metadata"]["name"]
    code, err, _ = kube.http("POST", P, bad)
    assert code == 422
    assert_status(err, 422, "Invalid")


def test_bad_name_and_bad_label_value_are_invalid(kube):
    code, err, _ = kube.http("POST", P, service("Not_A_Name"))
    assert code == 422
    assert_status(err, 422, "Invalid")
    code, err, _ = kube.http("POST", P, service("okname", labels={"k": "bad value!"}))
    assert code == 422
    assert_status(err, 422, "Invalid")


def test_kind_mismatch_is_400(kube):
    body = service("km")
    body["kind"] = "Node"
    code, err, _ = kube.http("POST", P, body)
    assert code == 400
    assert_status(err, 400, "BadRequest")


def test_unknown_resource_is_404(kube):
    code, err, _ = kube.http("GET", "/api/v1/namespaces/default/gizmos")
    assert code == 404
    assert_status(err, 404, "NotFound")
    code, err, _ = kube.http("GET", "/apis/nope.example.com/v1/things")
    assert code == 404
    if kube.embedded:  # a real server answers an unknown group with a plain-text "404 page not found"
        assert_status(err, 404)


def test_unsupported_patch_content_type_is_415(kube):
    kube.http("POST", P, service("ct"))
    code, err, _ = kube.http("PATCH", P + "/ct", {"metadata": {}}, content_type="text/plain")
    assert code == 415
    assert_status(err, 415)


def test_bad_patch_bodies_are_4xx(kube):
    kube.http("POST", P, service("bp"))
    for ctype, body in (("application/json-patch+json", {"op": "add"}),
                        ("application/json-patch+json", [{"op": "frobnicate", "path": "/x"}]),
                        ("application/merge-patch+json", ["x"])):
        code, err, _ = kube.http("PATCH", P + "/bp", body, content_type=ctype)
        assert 400 <= code < 500, (ctype, body, code, err)
        assert_status(err, code)
    code, o, _ = kube.http("GET", P + "/bp")
    assert code == 200 and [p["port"] for p in o["spec"]["ports"]] == [80]


def test_strategic_patch_without_merge_key_is_4xx(kube):
    kube.require_embedded("a real kube-apiserver answers 500 to a list element without its merge key")
    kube.http("POST", P, service("mk"))
    code, err, _ = kube.http("PATCH", P + "/mk", {"spec": {"ports": [{"name": "noport"}]}},
                             content_type="application/strategic-merge-patch+json")
    assert 400 <= code < 500
    assert_status(err, code)


def test_service_without_ports_is_invalid(kube):
    body = service("noports")
    del body["spec"]["ports"]
    code, err, _ = kube.http("POST", P, body)
    assert code == 422
    assert_status(err, 422, "Invalid")
