#!/usr/bin/env python3
"""Write the CustomResourceDefinitions in this directory (``python k8s/crds/generate.py``).

The project's own kinds (``l2lb.io/v1alpha1`` LoadBalancerIPPool and L2AnnouncementPolicy) use
the same spec fields as Cilium's, so objects move between the two by changing apiVersion/kind.
The Cilium and MetalLB definitions are written here from their documented fields (they are only
needed where those projects are not installed: the lab, tests, migrations).

``tests/kube_client/test_crds.py`` checks that the committed YAML equals this script's output.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}

LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "description": "A Kubernetes label selector; empty selects everything.",
    "properties": {
        "matchLabels": {
            "type": "object",
            "description": "key=value pairs that must all match.",
            "additionalProperties": LABEL_VALUE,
        },
        "matchExpressions": {
            "type": "array",
            "maxItems": 32,
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string", "maxLength": 317},
                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "maxItems": 256, "items": LABEL_VALUE},
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "self.operator in ['In', 'NotIn']"
                        " ? (has(self.values) && size(self.values) > 0)"
                        " : (!has(self.values) || size(self.values) == 0)",
                        "message": "In/NotIn need values; Exists/DoesNotExist take none",
                    }
                ],
            },
        },
    },
    "x-kubernetes-map-type": "atomic",
}

CONDITIONS: dict[str, Any] = {
    "type": "array",
    "description": "Current state (metav1.Condition), one entry per type.",
    "maxItems": 32,
    "items": {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
        },
    },
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}

IP_TEXT = {"type": "string", "maxLength": 45, "pattern": r"^[0-9A-Fa-f:.]+$"}

POOL_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["blocks"],
    "properties": {
        "blocks": {
            "type": "array",
            "description": "Address blocks: a CIDR, or a start and stop address (inclusive).",
            "minItems": 1,
            "maxItems": 1024,
            "items": {
                "type": "object",
                "properties": {
                    "cidr": {"type": "string", "format": "cidr", "maxLength": 49},
                    "start": IP_TEXT,
                    "stop": IP_TEXT,
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.cidr) ? !(has(self.start) || has(self.stop))"
                        " : (has(self.start) && has(self.stop))",
                        "message": "a block is either a cidr, or a start and a stop",
                    }
                ],
            },
        },
        "serviceSelector": {
            **copy.deepcopy(LABEL_SELECTOR),
            "description": "Services this pool serves; meta-labels io.kubernetes.service.namespace / "
            "io.kubernetes.service.name select by namespace and name. Absent: every Service.",
        },
        "disabled": {
            "type": "boolean",
            "default": False,
            "description": "No new allocations from this pool; existing ones stay.",
        },
        "allowFirstLastIPs": {
            "type": "string",
            "enum": ["Yes", "No"],
            "description": "No: keep the first and last address of each CIDR out of the pool (never for "
            "/31, /32, /127, /128). Unset or Yes: every address is handed out (Cilium >= 1.16).",
        },
    },
}

L2_POLICY_SPEC: dict[str, Any] = {
    "type": "object",
    "properties": {
        "serviceSelector": {
            **copy.deepcopy(LABEL_SELECTOR),
            "description": "Services announced; absent: all.",
        },
        "nodeSelector": {
            **copy.deepcopy(LABEL_SELECTOR),
            "description": "Nodes that may announce; absent: all.",
        },
        "interfaces": {
            "type": "array",
            "description": "Regular expressions of interface names to announce on; empty: all.",
            "maxItems": 64,
            "items": {"type": "string", "maxLength": 256},
        },
        "externalIPs": {"type": "boolean", "description": "Announce the Services' spec.externalIPs."},
        "loadBalancerIPs": {"type": "boolean", "description": "Announce status.loadBalancer.ingress IPs."},
    },
}


def crd(
    group: str,
    kind: str,
    plural: str,
    scope: str,
    versions: list[tuple[str, dict[str, Any], dict[str, Any] | None, list[dict[str, Any]], bool, bool]],
    *,
    short: list[str] | None = None,
    categories: list[str] | None = None,
) -> dict[str, Any]:
    """versions: (name, spec schema, status schema or None, printer columns, storage, deprecated)."""
    out_versions = []
    for name, spec, status, columns, storage, deprecated in versions:
        props: dict[str, Any] = {"spec": copy.deepcopy(spec)}
        if status is not None:
            props["status"] = copy.deepcopy(status)
        schema: dict[str, Any] = {
            "type": "object",
            "description": f"{kind} ({group}/{name})",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                **props,
            },
        }
        if spec.get("required"):
            schema["required"] = ["spec"]
        v: dict[str, Any] = {"name": name, "served": True, "storage": storage}
        if deprecated:
            v["deprecated"] = True
        v["schema"] = {"openAPIV3Schema": schema}
        if status is not None:
            v["subresources"] = {"status": {}}
        v["additionalPrinterColumns"] = [
            *columns,
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]
        out_versions.append(v)
    names: dict[str, Any] = {
        "plural": plural,
        "singular": kind.lower(),
        "kind": kind,
        "listKind": f"{kind}List",
    }
    if short:
        names["shortNames"] = short
    if categories:
        names["categories"] = categories
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": scope, "names": names, "versions": out_versions},
    }


def cond_col(name: str, ctype: str, field: str, typ: str = "string") -> dict[str, Any]:
    return {"name": name, "type": typ, "jsonPath": f'.status.conditions[?(@.type=="{ctype}")].{field}'}


def pool_columns(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "CIDRs",
            "type": "string",
            "jsonPath": ".spec.blocks[*].cidr",
            "description": "First CIDR block (kubectl shows one value)",
        },
        {"name": "Disabled", "type": "boolean", "jsonPath": ".spec.disabled"},
        cond_col("Used", f"{prefix}/IPsUsed", "message"),
        cond_col("Available", f"{prefix}/IPsAvailable", "message"),
        cond_col("Conflict", f"{prefix}/PoolConflict", "status"),
        # why l2lb does not use the pool (bad CIDR, reversed range, name used twice); empty when fine
        cond_col("Invalid", f"{prefix}/PoolInvalid", "message"),
    ]


POOL_STATUS = {"type": "object", "properties": {"conditions": CONDITIONS}}
POLICY_STATUS = {"type": "object", "properties": {"conditions": CONDITIONS}}


def metallb_pool() -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "object",
        "required": ["addresses"],
        "properties": {
            "addresses": {
                "type": "array",
                "description": "CIDRs (192.168.1.0/24) or ranges (192.168.1.10-192.168.1.20).",
                "maxItems": 1024,
                "items": {"type": "string", "maxLength": 100},
            },
            "autoAssign": {"type": "boolean", "default": True},
            "avoidBuggyIPs": {"type": "boolean", "default": False},
            "serviceAllocation": {
                "type": "object",
                "properties": {
                    "priority": {"type": "integer"},
                    "namespaces": {
                        "type": "array",
                        "maxItems": 1024,
                        "items": {"type": "string", "maxLength": 63},
                    },
                    "namespaceSelectors": {
                        "type": "array",
                        "maxItems": 64,
                        "items": copy.deepcopy(LABEL_SELECTOR),
                    },
                    "serviceSelectors": {
                        "type": "array",
                        "maxItems": 64,
                        "items": copy.deepcopy(LABEL_SELECTOR),
                    },
                },
            },
        },
    }
    status = {
        "type": "object",
        "properties": {
            k: {"type": "integer", "format": "int64"}
            for k in ("assignedIPv4", "assignedIPv6", "availableIPv4", "availableIPv6")
        },
    }
    cols: list[dict[str, Any]] = [
        {"name": "Auto Assign", "type": "boolean", "jsonPath": ".spec.autoAssign"},
        {"name": "Avoid Buggy IPs", "type": "boolean", "jsonPath": ".spec.avoidBuggyIPs"},
        {"name": "Addresses", "type": "string", "jsonPath": ".spec.addresses"},
    ]
    return crd(
        "metallb.io",
        "IPAddressPool",
        "ipaddresspools",
        "Namespaced",
        [("v1beta1", spec, status, cols, True, False)],
    )


def metallb_l2ad() -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "object",
        "properties": {
            "ipAddressPools": {
                "type": "array",
                "maxItems": 1024,
                "items": {"type": "string", "maxLength": 253},
            },
            "ipAddressPoolSelectors": {
                "type": "array",
                "maxItems": 64,
                "items": copy.deepcopy(LABEL_SELECTOR),
            },
            "nodeSelectors": {"type": "array", "maxItems": 64, "items": copy.deepcopy(LABEL_SELECTOR)},
            "interfaces": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 15}},
        },
    }
    cols: list[dict[str, Any]] = [
        {"name": "IPAddressPools", "type": "string", "jsonPath": ".spec.ipAddressPools"},
        {"name": "IPAddressPool Selectors", "type": "string", "jsonPath": ".spec.ipAddressPoolSelectors"},
        {"name": "Interfaces", "type": "string", "jsonPath": ".spec.interfaces"},
        {"name": "Node Selectors", "type": "string", "jsonPath": ".spec.nodeSelectors", "priority": 10},
    ]
    return crd(
        "metallb.io",
        "L2Advertisement",
        "l2advertisements",
        "Namespaced",
        [("v1beta1", spec, None, cols, True, False)],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    cilium_v2alpha1_spec = copy.deepcopy(POOL_SPEC)
    # v2alpha1 (Cilium <= 1.14) also had the deprecated `cidrs` list with the same block shape
    del cilium_v2alpha1_spec["required"]
    cilium_v2alpha1_spec["properties"]["cidrs"] = copy.deepcopy(POOL_SPEC["properties"]["blocks"])
    cilium_v2alpha1_spec["properties"]["cidrs"]["description"] = "Deprecated alias of blocks."
    cilium_v2alpha1_spec["properties"]["cidrs"]["minItems"] = 0
    cilium_v2alpha1_spec["properties"]["blocks"]["minItems"] = 0
    cilium_cols = pool_columns("cilium.io")
    return {
        "l2lb.io_loadbalancerippools.yaml": crd(
            "l2lb.io",
            "LoadBalancerIPPool",
            "loadbalancerippools",
            "Cluster",
            [("v1alpha1", POOL_SPEC, POOL_STATUS, pool_columns("l2lb.io"), True, False)],
            short=["lbpool", "lbpools"],
            categories=["l2lb"],
        ),
        "l2lb.io_l2announcementpolicies.yaml": crd(
            "l2lb.io",
            "L2AnnouncementPolicy",
            "l2announcementpolicies",
            "Cluster",
            [
                (
                    "v1alpha1",
                    L2_POLICY_SPEC,
                    POLICY_STATUS,
                    [{"name": "Interfaces", "type": "string", "jsonPath": ".spec.interfaces"}],
                    True,
                    False,
                )
            ],
            short=["l2policy"],
            categories=["l2lb"],
        ),
        "cilium.io_ciliumloadbalancerippools.yaml": crd(
            "cilium.io",
            "CiliumLoadBalancerIPPool",
            "ciliumloadbalancerippools",
            "Cluster",
            [
                ("v2alpha1", cilium_v2alpha1_spec, POOL_STATUS, cilium_cols, False, True),
                ("v2", POOL_SPEC, POOL_STATUS, cilium_cols, True, False),
            ],
            short=["ippools", "ippool", "lbippool", "lbippools"],
            categories=["cilium"],
        ),
        "cilium.io_ciliuml2announcementpolicies.yaml": crd(
            "cilium.io",
            "CiliumL2AnnouncementPolicy",
            "ciliuml2announcementpolicies",
            "Cluster",
            [("v2alpha1", L2_POLICY_SPEC, POLICY_STATUS, [], True, False)],
            short=["l2announcement"],
            categories=["cilium"],
        ),
        "metallb.io_ipaddresspools.yaml": metallb_pool(),
        "metallb.io_l2advertisements.yaml": metallb_l2ad(),
    }


HEADER = "# Generated by k8s/crds/generate.py -- edit that script, then run it.\n"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(doc: dict[str, Any]) -> str:
    return HEADER + yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    bad = 0
    for fname, doc in all_crds().items():
        path = HERE / fname
        text = render(doc)
        if check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date: run python k8s/crds/generate.py")
                bad += 1
        else:
            path.write_text(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
