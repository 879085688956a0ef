"""The CRD manifests under k8s/crds/: generated, structural, consistent with RESOURCES, and the
seed's YAML validates against them (schemas checked with jsonschema; the real API server
checks them again in tests/kube_real when that suite runs)."""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from l2lb.adapters.kube.client import RESOURCES

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "k8s" / "crds"
FIX = REPO / "tests" / "fixtures"


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location("crd_generate", CRD_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def crds() -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(CRD_DIR.glob("*_*.yaml")):  # CRD files are <group>_<plural>.yaml
        doc = yaml.safe_load(p.read_text())
        out[doc["metadata"]["name"]] = doc
    return out


def to_jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [to_jsonschema(x) for x in node]
    return node


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("cidr", raises=ValueError)  # type: ignore[untyped-decorator]
def _cidr(value: object) -> bool:
    if isinstance(value, str):
        ipaddress.ip_network(value, strict=False)
    return True


def validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    group, version = api_version.split("/")
    for doc in crds().values():
        spec = doc["spec"]
        if spec["group"] == group and spec["names"]["kind"] == kind:
            for v in spec["versions"]:
                if v["name"] == version:
                    schema = to_jsonschema(v["schema"]["openAPIV3Schema"])
                    return jsonschema.Draft4Validator(schema, format_checker=FORMATS)
    raise AssertionError(f"no CRD serves {api_version} {kind}")


def errors(obj: dict[str, Any]) -> list[str]:
    v = validator(obj["apiVersion"], obj["kind"])
    return [e.message for e in v.iter_errors(obj)]


def test_committed_yaml_is_generated_output() -> None:
    gen = _gen()
    docs = gen.all_crds()
    assert docs, "generator produced nothing"
    for fname, doc in docs.items():
        assert (CRD_DIR / fname).read_text() == gen.render(doc), f"{fname} is stale: run k8s/crds/generate.py"


def test_every_crd_kind_is_in_resources_and_matches() -> None:
    served = {}
    for doc in crds().values():
        spec = doc["spec"]
        for v in spec["versions"]:
            served[(spec["group"], v["name"], spec["names"]["plural"])] = (
                spec["names"]["kind"],
                spec["scope"] == "Namespaced",
                "status" in (v.get("subresources") or {}),
            )
    for key in (
        "cilium_pools_v2alpha1",
        "cilium_pools_v2",
        "cilium_l2policies",
        "metallb_pools",
        "metallb_l2ads",
        "l2lb_pools",
        "l2lb_l2policies",
    ):
        r = RESOURCES[key]
        got = served.get((r.group, r.version, r.plural))
        assert got is not None, f"no CRD for {key}"
        assert got[:2] == (r.kind, r.namespaced), key
    # own kinds have a status subresource and the printer columns the issue asks for
    pools = crds()["loadbalancerippools.l2lb.io"]["spec"]["versions"][0]
    assert "status" in pools["subresources"]
    cols = [c["name"] for c in pools["additionalPrinterColumns"]]
    assert {"CIDRs", "Used", "Available", "Conflict"} <= set(cols)


def _walk(node: Any, path: str) -> list[str]:
    """Structural-schema rules the API server enforces that jsonschema does not."""
    bad: list[str] = []
    if not isinstance(node, dict):
        return bad
    if (
        "type" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and not node.get("x-kubernetes-int-or-string")
    ):
        bad.append(f"{path}: no type")
    if node.get("required") == []:
        bad.append(f"{path}: empty required")
    if "properties" in node and "additionalProperties" in node:
        bad.append(f"{path}: properties and additionalProperties")
    if node.get("type") == "array" and node.get("x-kubernetes-validations") is None:
        items = node.get("items") or {}
        if items.get("x-kubernetes-validations") and "maxItems" not in node:
            bad.append(f"{path}: CEL rule under an unbounded list")
    for k, v in (node.get("properties") or {}).items():
        bad += _walk(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        bad += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        bad += _walk(node["additionalProperties"], f"{path}{{}}")
    return bad


def test_schemas_are_structural() -> None:
    problems = []
    for name, doc in crds().items():
        for v in doc["spec"]["versions"]:
            problems += _walk(v["schema"]["openAPIV3Schema"], f"{name}/{v['name']}")
    assert problems == []


@pytest.mark.parametrize(
    "path",
    [
        "seed/ip-pool.yaml",
        "seed/announce.yaml",
        "metallb/pihole-metallb.yaml",
        "lab/ip-pool.yaml",
        "lab/announce.yaml",
    ],
)
def test_fixture_yaml_validates_unchanged(path: str) -> None:
    checked = 0
    for obj in yaml.safe_load_all((FIX / path).read_text()):
        if not obj or obj.get("apiVersion", "").split("/")[0] not in ("cilium.io", "metallb.io", "l2lb.io"):
            continue
        assert errors(obj) == [], f"{path}: {obj['kind']} {obj['metadata']['name']}"
        checked += 1
    assert checked > 0


def _pool(kind: str = "LoadBalancerIPPool", api: str = "l2lb.io/v1alpha1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "p"}, "spec": spec}


def test_own_pool_mirrors_cilium_schema() -> None:
    spec: dict[str, Any] = {
        "blocks": [
            {"cidr": "198.51.100.0/24"},
            {"start": "203.0.113.10", "stop": "203.0.113.20"},
            {"cidr": "2001:db8::/64"},
        ],
        "serviceSelector": {
            "matchLabels": {"io.kubernetes.service.namespace": "pihole"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}],
        },
        "disabled": False,
        "allowFirstLastIPs": "Yes",
    }
    assert errors(_pool(**copy.deepcopy(spec))) == []
    assert errors(_pool("CiliumLoadBalancerIPPool", "cilium.io/v2", **copy.deepcopy(spec))) == []
    assert errors(_pool("CiliumLoadBalancerIPPool", "cilium.io/v2alpha1", **copy.deepcopy(spec))) == []


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"blocks": "198.51.100.0/24"}, "is not of type 'array'"),
        ({"blocks": []}, "non-empty"),
        ({}, "'blocks' is a required property"),
        ({"blocks": [{"cidr": "300.1.2.0/24"}]}, "is not a 'cidr'"),
        ({"blocks": [{"cidr": "198.51.100.0/24"}], "allowFirstLastIPs": "maybe"}, "is not one of"),
        ({"blocks": [{"cidr": "198.51.100.0/24"}], "disabled": "yes"}, "is not of type 'boolean'"),
        (
            {
                "blocks": [{"cidr": "198.51.100.0/24"}],
                "serviceSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]},
            },
            "is not one of",
        ),
        ({"blocks": [{"start": "not an ip!", "stop": "203.0.113.9"}]}, "does not match"),
    ],
)
def test_bad_pools_are_rejected(spec: dict[str, Any], needle: str) -> None:
    errs = errors(_pool(**spec))
    assert any(needle in e for e in errs), errs


def test_metallb_schema() -> None:
    good: dict[str, Any] = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "x"},
        "spec": {
            "addresses": ["198.51.100.0/24", "203.0.113.1-203.0.113.9"],
            "autoAssign": False,
            "serviceAllocation": {
                "priority": 10,
                "namespaces": ["a"],
                "serviceSelectors": [{"matchLabels": {"app": "x"}}],
            },
        },
    }
    assert errors(good) == []
    bad = copy.deepcopy(good)
    del bad["spec"]["addresses"]
    assert any("'addresses' is a required property" in e for e in errors(bad))
    # an L2Advertisement without any spec is valid (MetalLB's documented minimal form)
    assert errors({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "a"}}) == []
