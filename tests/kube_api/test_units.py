"""Unit tests of the embedded server's pure parts: selectors, patches, schema checks, table JSONPath."""

from __future__ import annotations

import pytest

from l2lb.apiserver.labels import (
    SelectorError,
    match_fields,
    match_labels,
    parse_field_selector,
    parse_label_selector,
)
from l2lb.apiserver.patch import PatchError, PatchTestFailed, json_patch, merge_patch, strategic_merge_patch
from l2lb.apiserver.table import age, jsonpath
from l2lb.apiserver.validate import check, prune

MK = {"spec.ports": "port", "status.conditions": "type", "metadata.finalizers": ""}


def test_label_selector_parsing_and_matching():
    reqs = parse_label_selector("a=1, b!=2, c in (x, y), d notin (z), e, !f, g==h")
    assert [(r.key, r.op) for r in reqs] == [("a", "="), ("b", "!="), ("c", "in"), ("d", "notin"),
                                             ("e", "exists"), ("f", "!exists"), ("g", "=")]
    ok = {"a": "1", "c": "y", "e": "", "g": "h"}
    assert match_labels(reqs, ok)
    assert not match_labels(reqs, {**ok, "f": "1"})
    assert not match_labels(reqs, {**ok, "b": "2"})
    assert not match_labels(reqs, {**ok, "d": "z"})
    assert match_labels(parse_label_selector("io.kubernetes.service.name in (web)"),
                        {"io.kubernetes.service.name": "web"})
    for bad in ("a in ()", "a in (b", "x y", "a=b=c=", "-bad=1", "a>1"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)


def test_field_selectors():
    obj = {"metadata": {"name": "web", "namespace": "ns"}, "involvedObject": {"name": "svc"}, "spec": {"x": True}}
    assert match_fields(parse_field_selector("metadata.name=web,metadata.namespace==ns"), obj)
    assert not match_fields(parse_field_selector("metadata.name!=web"), obj)
    assert match_fields(parse_field_selector("involvedObject.name=svc,spec.x=true"), obj)
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name")


def test_merge_patch_rfc7386():
    out = merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}})
    assert out == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge_patch({"a": 1}, {"b": {"c": None}}) == {"a": 1, "b": {}}


def test_strategic_merge_lists_by_key_and_directives():
    cur = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
           "metadata": {"finalizers": ["a"]},
           "status": {"conditions": [{"type": "A", "status": "True"}]}}
    p = {"spec": {"ports": [{"port": 443, "name": "tls"}, {"port": 53, "name": "dns"},
                            {"port": 80, "$patch": "delete"}],
                  "$setElementOrder/ports": [{"port": 53}, {"port": 443}]},
         "metadata": {"finalizers": ["b", "a"]},
         "status": {"conditions": [{"type": "B", "status": "False"}]}}
    out = strategic_merge_patch(cur, p, MK)
    assert [(x["port"], x["name"]) for x in out["spec"]["ports"]] == [(53, "dns"), (443, "tls")]
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert [c["type"] for c in out["status"]["conditions"]] == ["A", "B"]
    out = strategic_merge_patch(out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, MK)
    assert out["metadata"]["finalizers"] == ["b"]
    out = strategic_merge_patch({"spec": {"a": 1, "b": 2}}, {"spec": {"$retainKeys": ["b", "c"], "c": 3}}, MK)
    assert out == {"spec": {"b": 2, "c": 3}}
    out = strategic_merge_patch({"spec": {"a": 1, "b": 2}}, {"spec": {"$patch": "replace", "z": 1}}, MK)
    assert out == {"spec": {"z": 1}}
    assert cur["spec"]["ports"][0]["name"] == "http", "the input is not modified"
    with pytest.raises(PatchError):
        strategic_merge_patch(cur, {"spec": {"ports": [{"name": "no-key"}]}}, MK)


def test_json_patch_rfc6902():
    doc = {"a": {"b": [1, 2]}, "x/y": 1}
    out = json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3},
                           {"op": "add", "path": "/a/b/0", "value": 0},
                           {"op": "copy", "from": "/a/b", "path": "/c"},
                           {"op": "move", "from": "/x~1y", "path": "/d"},
                           {"op": "replace", "path": "/a/b/1", "value": 9},
                           {"op": "remove", "path": "/c/0"},
                           {"op": "test", "path": "/d", "value": 1}])
    assert out == {"a": {"b": [0, 9, 2, 3]}, "c": [1, 2, 3], "d": 1}
    assert doc == {"a": {"b": [1, 2]}, "x/y": 1}
    with pytest.raises(PatchTestFailed):
        json_patch(doc, [{"op": "test", "path": "/x~1y", "value": 2}])
    for bad in ([{"op": "remove", "path": "/nope"}], [{"op": "add", "path": "/a/b/7", "value": 1}],
                [{"op": "move", "from": "/a", "path": "/a/b/c"}], [{"op": "x", "path": "/a"}], {"op": "add"}):
        with pytest.raises(PatchError):
            json_patch(doc, bad)


def test_schema_check_and_prune():
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "required": ["n"], "properties": {
            "n": {"type": "integer", "minimum": 1}, "c": {"type": "string", "enum": ["a", "b"]},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "ios": {"x-kubernetes-int-or-string": True}}}}}
    errs, unknown = check(schema, {"spec": {"n": 2, "c": "a", "m": {"k": "v"}, "free": {"z": 1}, "ios": "80%",
                                            "extra": 1}})
    assert errs == [] and unknown == ["spec.extra"]
    errs, _ = check(schema, {"spec": {"n": 0, "c": "q", "m": {"k": 1}, "ios": 1.5}})
    assert sorted(f for f, _ in errs) == ["spec.c", "spec.ios", "spec.m.k", "spec.n"]
    errs, _ = check(schema, {"spec": {}})
    assert errs == [("spec.n", "Required value")]
    assert prune(schema, {"spec": {"n": 1, "extra": 2, "free": {"z": 1}}}) == {"spec": {"n": 1, "free": {"z": 1}}}


def test_table_jsonpath_and_age():
    obj = {"spec": {"blocks": [{"cidr": "198.51.100.0/24"}, {"cidr": "203.0.113.0/24"}]},
           "status": {"conditions": [{"type": "x/Used", "message": "3"}, {"type": "x/Free", "message": "9"}]}}
    assert jsonpath(obj, ".spec.blocks[*].cidr") == ["198.51.100.0/24", "203.0.113.0/24"]
    assert jsonpath(obj, ".spec.blocks[1].cidr") == ["203.0.113.0/24"]
    assert jsonpath(obj, '.status.conditions[?(@.type=="x/Free")].message') == ["9"]
    assert jsonpath(obj, "{.spec.missing}") == [] and jsonpath(obj, "spec..bad") == []
    assert age("2026-01-01T00:00:00Z", now=1767225600 + 90) == "90s"
    assert age("2026-01-01T00:00:00Z", now=1767225600 + 3 * 86400) == "3d"
    assert age(None) == "<unknown>"
