"""Random malformed requests never get a 5xx (or a non-Status error) from the server."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from tests.kube_api.helpers import NS, SVC, assert_status, service

pytestmark = pytest.mark.kube
P = SVC.format(ns=NS)
KEYS = ["metadata", "spec", "status", "ports", "port", "name", "labels", "conditions", "type", "$patch",
        "$retainKeys", "$setElementOrder/ports", "finalizers", "protocol", "loadBalancer", "ingress",
        "namespace", "resourceVersion", "kind", "apiVersion", "generateName", "selector"]
SCALARS: list[Any] = [None, True, 0, -1, 1.5, "", "x", "TCP", 80, "a/b", "$patch", "Bad Name", 2**70]


def _rnd(r: random.Random, depth: int = 0) -> Any:
    x = r.random()
    if depth > 3 or x < 0.3:
        return r.choice(SCALARS)
    if x < 0.65:
        return {r.choice(KEYS): _rnd(r, depth + 1) for _ in range(r.randint(0, 4))}
    return [_rnd(r, depth + 1) for _ in range(r.randint(0, 3))]


def _mutate(r: random.Random, i: int) -> Any:
    body: Any = copy.deepcopy(service(f"f{i}"))
    where = r.choice(["whole", "metadata", "spec", "ports", "port0", "status", "labels", "name"])
    v = _rnd(r)
    if where == "whole":
        return v
    target = {"metadata": body, "spec": body, "status": body, "labels": body["metadata"],
              "ports": body["spec"], "port0": body["spec"]["ports"], "name": body["metadata"]}[where]
    key = {"metadata": "metadata", "spec": "spec", "status": "status", "labels": "labels", "ports": "ports",
           "port0": 0, "name": "name"}[where]
    target[key] = v
    return body


def _check(code: int, body: Any, what: str) -> None:
    assert code < 500, (what, code, body)
    if code >= 400:
        assert_status(body, code)


def test_random_bodies_never_5xx(kube):
    kube.require_embedded("a real kube-apiserver answers 500 to some malformed patches (e.g. ports: [1.5])")
    r = random.Random(4)
    code, _, _ = kube.http("POST", P, service("target"))
    assert code == 201
    outcomes: dict[int, int] = {}
    for i in range(150):
        body = _mutate(r, i)
        method, path, ctype = r.choice([
            ("POST", P, "application/json"),
            ("PUT", P + "/target", "application/json"),
            ("PUT", P + "/target/status", "application/json"),
            ("PATCH", P + "/target", "application/merge-patch+json"),
            ("PATCH", P + "/target", "application/strategic-merge-patch+json"),
            ("PATCH", P + "/target/status", "application/strategic-merge-patch+json"),
            ("POST", "/api/v1/nodes", "application/json"),
            ("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", "application/json"),
            ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json"),
        ])
        code, out, _ = kube.http(method, path, body, content_type=ctype)
        _check(code, out, f"{method} {path} {json.dumps(body)[:300]}")
        outcomes[code] = outcomes.get(code, 0) + 1
    assert any(c < 300 for c in outcomes) and any(400 <= c < 500 for c in outcomes), outcomes


def test_random_json_patches_never_5xx(kube):
    kube.require_embedded("checks the embedded server's own robustness")
    r = random.Random(7)
    kube.http("POST", P, service("jp"))
    for _ in range(80):
        ops = [{"op": r.choice(["add", "remove", "replace", "move", "copy", "test", "nope"]),
                "path": r.choice(["/spec/ports/0", "/metadata", "/spec", "", "/status/x", "/spec/ports/-",
                                  "/metadata/labels/a~1b", "spec", "/spec/ports/99"]),
                "value": _rnd(r), "from": r.choice(["/spec", "/metadata/name", "/nope"])}
               for _ in range(r.randint(1, 3))]
        code, out, _ = kube.http("PATCH", P + "/jp", ops, content_type="application/json-patch+json")
        _check(code, out, json.dumps(ops)[:300])
    code, o, _ = kube.http("GET", P + "/jp")
    assert code == 200 and o["metadata"]["name"] == "jp"


@pytest.mark.parametrize("query", [
    {"watch": "true", "resourceVersion": "abc"},
    {"watch": "true", "timeoutSeconds": "soon"},
    {"fieldSelector": "metadata.name"},
    {"labelSelector": "a in (b"},
])
def test_bad_query_parameters_are_400(kube, query):
    if query.get("watch"):
        kube.require_embedded("a real kube-apiserver answers 500 to a non-numeric watch resourceVersion")
    code, out, _ = kube.http("GET", P, query=query)
    assert code == 400, out
    assert_status(out, 400)


def test_bad_debug_requests_are_400(kube):
    kube.require_debug()
    for method, path, raw in (("POST", "/l2lb-debug/compact", b"{nope"), ("POST", "/l2lb-debug/faults", b"[]"),
                              ("GET", "/l2lb-debug/requests?since=abc", None),
                              ("POST", "/l2lb-debug/config", b'{"watch_window": "x"}')):
        code, out, _ = kube.http(method, path, raw=raw)
        assert code == 400, (path, out)
        assert_status(out, 400)
