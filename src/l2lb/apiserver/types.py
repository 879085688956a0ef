"""Resource types the embedded API server serves: built-in ones and those installed by CRDs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILTINS", "ResourceType", "crd_types", "meta_schema"]

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_STRMAP = {"type": "object", "additionalProperties": _STR}
_STRLIST = {"type": "array", "items": _STR}
_ANY_OBJ = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _obj(props: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "x-kubernetes-preserve-unknown-fields": True, **kw}


def meta_schema() -> dict[str, Any]:
    return _obj(
        {
            "name": _STR,
            "generateName": _STR,
            "namespace": _STR,
            "uid": _STR,
            "resourceVersion": _STR,
            "generation": _INT,
            "creationTimestamp": {"type": "string", "nullable": True},
            "deletionTimestamp": {"type": "string", "nullable": True},
            "labels": {**_STRMAP, "nullable": True},
            "annotations": {**_STRMAP, "nullable": True},
            "finalizers": {**_STRLIST, "nullable": True},
            "ownerReferences": {
                "type": "array",
                "nullable": True,
                "items": _obj(
                    {
                        "apiVersion": _STR,
                        "kind": _STR,
                        "name": _STR,
                        "uid": _STR,
                        "controller": _BOOL,
                        "blockOwnerDeletion": _BOOL,
                    }
                ),
            },
        }
    )


_CONDITIONS = {
    "type": "array",
    "nullable": True,
    "items": _obj(
        {
            "type": _STR,
            "status": _STR,
            "reason": _STR,
            "message": _STR,
            "lastTransitionTime": _STR,
            "observedGeneration": _INT,
            "lastHeartbeatTime": _STR,
            "lastProbeTime": _STR,
        }
    ),
}

_SERVICE = _obj(
    {
        "spec": _obj(
            {
                "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
                "ports": {
                    "type": "array",
                    "nullable": True,
                    "items": _obj(
                        {
                            "name": _STR,
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"]},
                            "targetPort": {"x-kubernetes-int-or-string": True},
                            "nodePort": _INT,
                            "appProtocol": _STR,
                        },
                        required=["port"],
                    ),
                },
                "selector": {**_STRMAP, "nullable": True},
                "clusterIP": _STR,
                "clusterIPs": _STRLIST,
                "externalIPs": {**_STRLIST, "nullable": True},
                "loadBalancerIP": _STR,
                "loadBalancerClass": _STR,
                "loadBalancerSourceRanges": {**_STRLIST, "nullable": True},
                "externalTrafficPolicy": {"type": "string", "enum": ["Cluster", "Local"]},
                "internalTrafficPolicy": {"type": "string", "enum": ["Cluster", "Local"]},
                "healthCheckNodePort": _INT,
                "ipFamilies": _STRLIST,
                "ipFamilyPolicy": _STR,
                "sessionAffinity": _STR,
                "allocateLoadBalancerNodePorts": _BOOL,
                "publishNotReadyAddresses": _BOOL,
            }
        ),
        "status": _obj(
            {
                "loadBalancer": _obj(
                    {
                        "ingress": {
                            "type": "array",
                            "nullable": True,
                            "items": _obj(
                                {
                                    "ip": _STR,
                                    "hostname": _STR,
                                    "ipMode": _STR,
                                    "ports": {"type": "array", "items": _ANY_OBJ},
                                }
                            ),
                        }
                    }
                ),
                "conditions": _CONDITIONS,
            }
        ),
    }
)

_NODE = _obj(
    {
        "spec": _obj(
            {
                "podCIDR": _STR,
                "podCIDRs": _STRLIST,
                "unschedulable": _BOOL,
                "taints": {"type": "array", "nullable": True, "items": _ANY_OBJ},
            }
        ),
        "status": _obj(
            {
                "conditions": _CONDITIONS,
                "addresses": {
                    "type": "array",
                    "nullable": True,
                    "items": _obj({"type": _STR, "address": _STR}),
                },
            }
        ),
    }
)

_LEASE = _obj(
    {
        "spec": _obj(
            {
                "holderIdentity": {"type": "string", "nullable": True},
                "leaseDurationSeconds": {"type": "integer", "nullable": True},
                "acquireTime": {"type": "string", "nullable": True},
                "renewTime": {"type": "string", "nullable": True},
                "leaseTransitions": {"type": "integer", "nullable": True},
                "strategy": {"type": "string", "nullable": True},
                "preferredHolder": {"type": "string", "nullable": True},
            }
        )
    }
)

_EVENT_CORE = _obj(
    {
        "involvedObject": _obj(
            {
                "kind": _STR,
                "namespace": _STR,
                "name": _STR,
                "uid": _STR,
                "apiVersion": _STR,
                "resourceVersion": _STR,
                "fieldPath": _STR,
            }
        ),
        "reason": _STR,
        "message": _STR,
        "type": _STR,
        "count": _INT,
        "firstTimestamp": {**_STR, "nullable": True},
        "lastTimestamp": {**_STR, "nullable": True},
        "eventTime": {**_STR, "nullable": True},
        "source": _obj({"component": _STR, "host": _STR}),
        "reportingComponent": _STR,
        "reportingInstance": _STR,
        "action": _STR,
    }
)

_EPSLICE = _obj(
    {
        "addressType": {"type": "string", "enum": ["IPv4", "IPv6", "FQDN"]},
        "endpoints": {
            "type": "array",
            "nullable": True,
            "items": _obj(
                {
                    "addresses": _STRLIST,
                    "nodeName": {**_STR, "nullable": True},
                    "conditions": _obj(
                        {
                            "ready": {**_BOOL, "nullable": True},
                            "serving": {**_BOOL, "nullable": True},
                            "terminating": {**_BOOL, "nullable": True},
                        }
                    ),
                }
            ),
        },
        "ports": {
            "type": "array",
            "nullable": True,
            "items": _obj(
                {
                    "name": {**_STR, "nullable": True},
                    "port": {**_INT, "nullable": True},
                    "protocol": {**_STR, "nullable": True},
                }
            ),
        },
    },
    required=["addressType"],
)

_COMMON_KEYS = {"metadata.finalizers": "", "metadata.ownerReferences": "uid"}
_POD_KEYS = {
    "spec.containers": "name",
    "spec.initContainers": "name",
    "spec.volumes": "name",
    "spec.containers.ports": "containerPort",
    "spec.containers.env": "name",
    "spec.containers.volumeMounts": "mountPath",
    "spec.imagePullSecrets": "name",
}


def _template_keys() -> dict[str, str]:
    return {f"spec.template.{k}": v for k, v in _POD_KEYS.items()}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    keep_status_on_create: bool = False
    # metadata.generation kept (1 on create, +1 per spec change) as the real server does for this type
    generation: bool = False
    # dotted path -> patchMergeKey ("" = set of scalars); None: strategic merge patch not supported (CRDs)
    merge_keys: dict[str, str] | None = field(default=None, hash=False, compare=False)
    schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    crd: str | None = None  # name of the CRD that installed it
    categories: tuple[str, ...] = ()
    printer_columns: tuple[tuple[str, str, str], ...] = ()  # (name, type, jsonPath)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gk(self) -> tuple[str, str]:
        """Storage key: all versions of one group+plural share the objects."""
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def describe(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _b(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    *,
    short: tuple[str, ...] = (),
    status: bool = False,
    keep_status: bool = False,
    keys: dict[str, str] | None = None,
    schema: dict[str, Any] | None = None,
    generation: bool = False,
) -> ResourceType:
    return ResourceType(
        group,
        version,
        plural,
        kind,
        namespaced,
        singular=kind.lower(),
        short_names=short,
        status_subresource=status,
        keep_status_on_create=keep_status,
        merge_keys={**_COMMON_KEYS, **(keys or {})},
        schema=schema,
        generation=generation,
    )


BUILTINS: list[ResourceType] = [
    _b(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        short=("ns",),
        status=True,
        keys={"status.conditions": "type", "spec.finalizers": ""},
    ),
    _b(
        "",
        "v1",
        "services",
        "Service",
        True,
        short=("svc",),
        status=True,
        schema=_SERVICE,
        keys={"spec.ports": "port", "status.conditions": "type"},
    ),
    _b(
        "",
        "v1",
        "nodes",
        "Node",
        False,
        short=("no",),
        status=True,
        keep_status=True,
        schema=_NODE,
        keys={"status.conditions": "type", "status.addresses": "type", "spec.podCIDRs": ""},
    ),
    _b("", "v1", "events", "Event", True, short=("ev",), schema=_EVENT_CORE),
    _b("", "v1", "endpoints", "Endpoints", True, short=("ep",)),
    _b(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        short=("po",),
        status=True,
        keep_status=False,
        keys={**_POD_KEYS, "status.conditions": "type"},
    ),
    _b("", "v1", "configmaps", "ConfigMap", True, short=("cm",)),
    _b("", "v1", "secrets", "Secret", True),
    _b("", "v1", "serviceaccounts", "ServiceAccount", True, short=("sa",), keys={"secrets": "name"}),
    _b("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, schema=_EPSLICE, generation=True),
    _b("coordination.k8s.io", "v1", "leases", "Lease", True, schema=_LEASE),
    _b("events.k8s.io", "v1", "events", "Event", True, short=("ev",)),
    _b(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        short=("deploy",),
        status=True,
        keys={**_template_keys(), "status.conditions": "type"},
        generation=True,
    ),
    _b(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        True,
        short=("ds",),
        status=True,
        keys={**_template_keys(), "status.conditions": "type"},
        generation=True,
    ),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short=("crd", "crds"),
        status=True,
        keys={"status.conditions": "type"},
        generation=True,
    ),
]


class CRDError(ValueError):
    """A CustomResourceDefinition the server cannot serve; carries (field, message) causes."""

    def __init__(self, causes: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {m}" for f, m in causes))
        self.causes = causes


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """Resource types served for a CRD object (one per served version). Raises :class:`CRDError`."""
    causes: list[tuple[str, str]] = []
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        raise CRDError([("spec", "Required value")])
    group = spec.get("group")
    names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
    plural, kind = names.get("plural"), names.get("kind")
    scope = spec.get("scope")
    versions = spec.get("versions")
    if not isinstance(group, str) or "." not in group:
        causes.append(("spec.group", "Invalid value: should be a domain with at least one dot"))
    if not isinstance(plural, str) or not plural or plural != plural.lower():
        causes.append(("spec.names.plural", "Required value: a lowercase plural name"))
    if not isinstance(kind, str) or not kind:
        causes.append(("spec.names.kind", "Required value"))
    if scope not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", 'Unsupported value: supported values: "Cluster", "Namespaced"'))
    if not isinstance(versions, list) or not versions:
        causes.append(("spec.versions", "Required value: must have exactly one storage version"))
        versions = []
    name = (crd.get("metadata") or {}).get("name")
    if not causes and name != f"{plural}.{group}":
        causes.append(("metadata.name", f"Invalid value: {name!r}: must be spec.names.plural+'.'+spec.group"))
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if versions and len(storage) != 1:
        causes.append(("spec.versions", "Invalid value: exactly one version must be marked as storage"))
    out: list[ResourceType] = []
    for i, v in enumerate(versions):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            causes.append((f"spec.versions[{i}].name", "Required value"))
            continue
        if not v.get("served", False):
            continue
        sub = v.get("subresources") or spec.get("subresources") or {}
        sch = (v.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")
        cols = tuple(
            (str(c.get("name")), str(c.get("type", "string")), str(c.get("jsonPath", "")))
            for c in (v.get("additionalPrinterColumns") or [])
            if isinstance(c, dict)
        )
        out.append(
            ResourceType(
                str(group),
                v["name"],
                str(plural),
                str(kind),
                scope == "Namespaced",
                singular=str(names.get("singular") or str(kind).lower()),
                short_names=tuple(names.get("shortNames") or ()),
                status_subresource=isinstance(sub, dict) and "status" in sub,
                merge_keys=None,
                schema=sch if isinstance(sch, dict) else None,
                crd=str(name),
                generation=True,
                categories=tuple(names.get("categories") or ()),
                printer_columns=cols,
            )
        )
    if causes:
        raise CRDError(causes)
    return out
