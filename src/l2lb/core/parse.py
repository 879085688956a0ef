"""Parsing of pool resources and Services into core models (pure).

Pools: ``cilium.io/v2alpha1`` and ``cilium.io/v2`` CiliumLoadBalancerIPPool, ``l2lb.io/v1alpha1``
LoadBalancerIPPool (same schema as Cilium's), ``metallb.io/v1beta1`` IPAddressPool. Pools are
cluster-scoped for l2lb: a ``metadata.namespace`` is ignored. Errors raise :class:`ParseError`
with the path of the bad field.

Services: :func:`parse_service` never fails on annotations: bad values become ``problems`` of the
request (the allocator answers ``invalid_request`` with the message); it raises ParseError only for
an object without metadata.name/namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from l2lb.core.models import Block, ParseError, Pool, ServiceAllocation, ServiceRequest
from l2lb.core.selectors import LabelSelector, parse_selector

__all__ = [
    "CILIUM_BGP_CLASS",
    "CILIUM_CLASSES",
    "CILIUM_L2_CLASS",
    "DEFAULT_CLASSES",
    "IP_ANNOTATIONS",
    "L2LB_CLASS",
    "POOL_ANNOTATIONS",
    "POOL_KINDS",
    "SHARING_ANNOTATIONS",
    "SHARING_CROSS_NS_ANNOTATIONS",
    "is_pool",
    "is_service",
    "parse_pool",
    "parse_service",
    "status_ips",
]

L2LB_CLASS = "l2lb.io/l2"
CILIUM_L2_CLASS = "io.cilium/l2-announcer"
# served by Cilium's LB-IPAM for its BGP control plane: l2lb gives these Services IPs (a Cilium LB-IPAM user
# moving to l2lb keeps them) but never announces them over ARP/NDP (Cilium's BGP speaker does)
CILIUM_BGP_CLASS = "io.cilium/bgp-control-plane"
DEFAULT_CLASSES = frozenset({L2LB_CLASS})
CILIUM_CLASSES = frozenset({CILIUM_L2_CLASS, CILIUM_BGP_CLASS})  # added by --cilium-compat

# Each vendor's spellings, the current one first: when both are set the current one wins, as the
# vendor itself reads them (MetalLB: metallb.io/ before metallb.universe.tf/; Cilium: lbipam.cilium.io/
# before io.cilium/). The two vendors' annotations on one Service must agree.
CILIUM_IP_ANNOTATIONS = ("lbipam.cilium.io/ips", "io.cilium/lb-ipam-ips")
METALLB_IP_ANNOTATIONS = ("metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs")
IP_ANNOTATIONS = CILIUM_IP_ANNOTATIONS + METALLB_IP_ANNOTATIONS
CILIUM_SHARING_ANNOTATIONS = ("lbipam.cilium.io/sharing-key", "io.cilium/lb-ipam-sharing-key")
METALLB_SHARING_ANNOTATIONS = ("metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip")
SHARING_ANNOTATIONS = CILIUM_SHARING_ANNOTATIONS + METALLB_SHARING_ANNOTATIONS
SHARING_CROSS_NS_ANNOTATIONS = (
    "lbipam.cilium.io/sharing-cross-namespace",
    "io.cilium/lb-ipam-sharing-cross-namespace",
)
POOL_ANNOTATIONS = ("metallb.io/address-pool", "metallb.universe.tf/address-pool")

# (apiVersion, kind) of every pool resource accepted
POOL_KINDS = {
    ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"),
    ("cilium.io/v2", "CiliumLoadBalancerIPPool"),
    ("l2lb.io/v1alpha1", "LoadBalancerIPPool"),
    ("metallb.io/v1beta1", "IPAddressPool"),
}


def is_pool(obj: Any) -> bool:
    return isinstance(obj, Mapping) and (obj.get("apiVersion"), obj.get("kind")) in POOL_KINDS


def is_service(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("kind") == "Service" and obj.get("apiVersion", "v1") == "v1"


def _str_map(v: Any, path: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ParseError(path, "must be a map of strings")
    out = {}
    for k, x in v.items():
        if not isinstance(k, str) or isinstance(x, dict | list) or x is None:
            raise ParseError(f"{path}.{k}", "must be a string")
        out[k] = str(x).lower() if isinstance(x, bool) else str(x)
    return out


def _bool(v: Any, path: str, default: bool) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("yes", "true", "y", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("no", "false", "n", "off"):
        return False
    raise ParseError(path, f"must be a boolean (or Yes/No), got {v!r}")


def _meta(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise ParseError("metadata", "missing or not an object")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ParseError("metadata.name", "missing or empty")
    return meta, name


def parse_pool(obj: Any) -> Pool:
    """Parse any accepted pool resource. Raises ParseError (with the field path) when unusable."""
    if not isinstance(obj, Mapping):
        raise ParseError("", f"a pool must be an object, got {type(obj).__name__}")
    api, kind = obj.get("apiVersion"), obj.get("kind")
    if (api, kind) not in POOL_KINDS:
        raise ParseError("kind", f"{api}/{kind} is not a pool kind l2lb reads "
                                 f"({', '.join(sorted(f'{a} {k}' for a, k in POOL_KINDS))})")
    meta, name = _meta(obj)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ParseError("spec", "missing or not an object")
    gen = meta.get("generation", 0)
    common: dict[str, Any] = dict(
        name=name, kind=str(kind), api_version=str(api), created=str(meta.get("creationTimestamp") or ""),
        uid=str(meta.get("uid") or ""), generation=gen if isinstance(gen, int) else 0,
        labels=_str_map(meta.get("labels"), "metadata.labels"),
    )
    if kind == "IPAddressPool":
        return _parse_metallb(spec, common)
    return _parse_cilium(spec, common)


def _parse_cilium(spec: Mapping[str, Any], common: dict[str, Any]) -> Pool:
    blocks_raw = spec.get("blocks")
    field = "spec.blocks"
    if blocks_raw is None and spec.get("cidrs") is not None:  # v2alpha1's deprecated spelling
        blocks_raw, field = spec.get("cidrs"), "spec.cidrs"
    if not isinstance(blocks_raw, list) or not blocks_raw:
        raise ParseError(field, "must be a non-empty list of blocks (cidr, or start/stop)")
    blocks = []
    for i, b in enumerate(blocks_raw):
        where = f"{field}[{i}]"
        if not isinstance(b, Mapping):
            raise ParseError(where, "must be an object with cidr, or start and stop")
        cidr, start, stop = b.get("cidr"), b.get("start"), b.get("stop")
        if cidr is not None and (start is not None or stop is not None):
            raise ParseError(where, "give either cidr or start/stop, not both")
        if cidr is not None:
            if not isinstance(cidr, str):
                raise ParseError(f"{where}.cidr", "must be a string")
            try:
                blocks.append(Block.cidr(cidr))
            except ValueError as e:
                raise ParseError(f"{where}.cidr", f"invalid CIDR {cidr!r}: {e}") from None
        elif start is not None:
            if not isinstance(start, str) or (stop is not None and not isinstance(stop, str)):
                raise ParseError(where, "start and stop must be strings")
            try:
                blocks.append(Block.range(start, stop if stop is not None else start))
            except ValueError as e:
                raise ParseError(f"{where}.start", f"invalid range: {e}") from None
        else:
            raise ParseError(where, "needs cidr, or start (and stop)")
    sel = spec.get("serviceSelector")
    selector: LabelSelector | None = None if sel is None else parse_selector(sel, "spec.serviceSelector")
    return Pool(
        blocks=tuple(blocks),
        disabled=_bool(spec.get("disabled"), "spec.disabled", False),
        # Cilium >= 1.16 (and l2lb's own kind): unset means Yes, only an explicit No reserves
        allow_first_last=_bool(spec.get("allowFirstLastIPs"), "spec.allowFirstLastIPs", True),
        service_selector=selector,
        **common,
    )


def _parse_metallb(spec: Mapping[str, Any], common: dict[str, Any]) -> Pool:
    addrs = spec.get("addresses")
    if not isinstance(addrs, list) or not addrs:
        raise ParseError("spec.addresses", "must be a non-empty list of CIDRs or 'a-b' ranges")
    blocks = []
    for i, a in enumerate(addrs):
        where = f"spec.addresses[{i}]"
        if not isinstance(a, str):
            raise ParseError(where, "must be a string (CIDR or 'first-last' range)")
        try:
            if "-" in a:
                lo, _, hi = a.partition("-")
                blocks.append(Block.range(lo.strip(), hi.strip()))
            else:
                blocks.append(Block.cidr(a))
        except ValueError as e:
            raise ParseError(where, f"invalid address range {a!r}: {e}") from None
    alloc = None
    sa = spec.get("serviceAllocation")
    if sa is not None:
        if not isinstance(sa, Mapping):
            raise ParseError("spec.serviceAllocation", "must be an object")
        prio = sa.get("priority", 0)
        if not isinstance(prio, int) or isinstance(prio, bool) or prio < 0:
            raise ParseError("spec.serviceAllocation.priority",
                             f"must be a non-negative integer, got {prio!r}")
        nss = sa.get("namespaces") or []
        if not isinstance(nss, list) or not all(isinstance(n, str) for n in nss):
            raise ParseError("spec.serviceAllocation.namespaces", "must be a list of strings")

        def sels(key: str) -> tuple[LabelSelector, ...]:
            v = sa.get(key) or []
            if not isinstance(v, list):
                raise ParseError(f"spec.serviceAllocation.{key}", "must be a list of label selectors")
            return tuple(parse_selector(s, f"spec.serviceAllocation.{key}[{i}]") for i, s in enumerate(v))

        alloc = ServiceAllocation(priority=prio, namespaces=tuple(nss),
                                  namespace_selectors=sels("namespaceSelectors"),
                                  service_selectors=sels("serviceSelectors"))
    return Pool(
        blocks=tuple(blocks),
        allow_first_last=True,  # MetalLB hands out every address of a CIDR
        auto_assign=_bool(spec.get("autoAssign"), "spec.autoAssign", True),
        avoid_buggy_ips=_bool(spec.get("avoidBuggyIPs"), "spec.avoidBuggyIPs", False),
        allocation=alloc,
        **common,
    )


def _split(v: str) -> list[str]:
    return [x.strip() for x in v.split(",") if x.strip()]


def _norm_ip(s: str) -> str:
    if "%" in s or "/" in s:
        raise ValueError("not a plain IP address")
    return str(ipaddress.ip_address(s))


def parse_service(
    obj: Any,
    *,
    classes: frozenset[str] = DEFAULT_CLASSES,
    namespace_labels: Mapping[str, str] | None = None,
) -> ServiceRequest:
    """Build the allocator's view of a Service. ``classes``: loadBalancerClass values handled
    besides none (add ``CILIUM_L2_CLASS`` for Cilium compatibility)."""
    if not isinstance(obj, Mapping):
        raise ParseError("", f"a Service must be an object, got {type(obj).__name__}")
    meta, name = _meta(obj)
    ns = meta.get("namespace") or "default"
    if not isinstance(ns, str):
        raise ParseError("metadata.namespace", "must be a string")
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    problems: list[str] = []
    labels: dict[str, str] = {}
    ann: dict[str, str] = {}
    try:
        labels = _str_map(meta.get("labels"), "metadata.labels")
    except ParseError as e:
        problems.append(str(e))
    try:
        ann = _str_map(meta.get("annotations"), "metadata.annotations")
    except ParseError as e:
        problems.append(str(e))

    notes: list[str] = []

    def first_of(names: tuple[str, ...]) -> tuple[str, str] | None:
        """The first of a vendor's spellings that is set (a note when a later one says otherwise)."""
        present = [(a, ann[a].strip()) for a in names if a in ann and ann[a].strip()]
        if not present:
            return None
        for a, v in present[1:]:
            if v != present[0][1]:
                notes.append(f"annotation {a}={v} ignored: {present[0][0]}={present[0][1]} takes precedence")
        return present[0]

    def ips_of(src: str, text: str) -> list[str]:
        out: list[str] = []
        for v in _split(text):
            try:
                ip = _norm_ip(v)
            except ValueError:
                problems.append(f"{src}: {v!r} is not an IP address")
                continue
            if ip not in out:
                out.append(ip)
        return out

    # requested IPs: spec.loadBalancerIP and one annotation; how the two combine depends on the kind of
    # the pool that serves the Service (the allocator decides: Cilium takes both, MetalLB refuses both)
    spec_ips: list[str] = []
    lbip = spec.get("loadBalancerIP")
    if isinstance(lbip, str) and lbip.strip():
        spec_ips = ips_of("spec.loadBalancerIP", lbip)
    elif lbip not in (None, ""):
        problems.append(f"spec.loadBalancerIP must be a string, got {lbip!r}")
    ann_src, ann_ips = "", []
    c_ips, m_ips = first_of(CILIUM_IP_ANNOTATIONS), first_of(METALLB_IP_ANNOTATIONS)
    if c_ips is not None:
        ann_src, ann_ips = c_ips[0], ips_of(f"annotation {c_ips[0]}", c_ips[1])
    if m_ips is not None:
        m_list = ips_of(f"annotation {m_ips[0]}", m_ips[1])
        if c_ips is not None and set(m_list) != set(ann_ips):
            problems.append(f"annotation {m_ips[0]} ({', '.join(m_list)}) disagrees with annotation {c_ips[0]} "
                            f"({', '.join(ann_ips)}): keep one")
        elif c_ips is None:
            ann_src, ann_ips = m_ips[0], m_list
    requested = list(spec_ips) + [ip for ip in ann_ips if ip not in spec_ips]

    def one_of(cilium: tuple[str, ...], metallb: tuple[str, ...], what: str) -> str | None:
        c, m = first_of(cilium), first_of(metallb)
        if c is not None and m is not None and c[1] != m[1]:
            problems.append(f"{what} annotations disagree: {c[0]}={c[1]}, {m[0]}={m[1]}")
        return c[1] if c is not None else m[1] if m is not None else None

    sharing = one_of(CILIUM_SHARING_ANNOTATIONS, METALLB_SHARING_ANNOTATIONS, "sharing key")
    pool = one_of((), POOL_ANNOTATIONS, "address pool")
    cross: list[str] = []
    xns = first_of(SHARING_CROSS_NS_ANNOTATIONS)
    if xns is not None:
        cross = list(dict.fromkeys(_split(xns[1])))

    fams: list[int] = []
    raw_fams = spec.get("ipFamilies") or []
    if not isinstance(raw_fams, list):
        problems.append("spec.ipFamilies must be a list")
        raw_fams = []
    for f in raw_fams:
        if f == "IPv4":
            fams.append(4)
        elif f == "IPv6":
            fams.append(6)
        else:
            problems.append(f"spec.ipFamilies: unknown family {f!r}")
    if not raw_fams:
        # the API server always sets ipFamilies; YAML taken from elsewhere may carry clusterIPs only
        # (MetalLB decides the family from them)
        cips = spec.get("clusterIPs")
        if not isinstance(cips, list) or not cips:
            cips = [spec.get("clusterIP")]
        for c in cips:
            if isinstance(c, str) and c and c != "None":
                try:
                    fam = ipaddress.ip_address(c.strip()).version
                except ValueError:
                    continue
                if fam not in fams:
                    fams.append(fam)
    policy = spec.get("ipFamilyPolicy") or "SingleStack"
    if policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
        problems.append(f"spec.ipFamilyPolicy: unknown policy {policy!r}")
        policy = "SingleStack"

    ports: list[tuple[str, int]] = []
    raw_ports = spec.get("ports") or []
    for i, p in enumerate(raw_ports if isinstance(raw_ports, list) else []):
        if not isinstance(p, Mapping) or not isinstance(p.get("port"), int):
            problems.append(f"spec.ports[{i}] needs an integer port")
            continue
        proto = p.get("protocol") or "TCP"
        ports.append((str(proto), int(p["port"])))
    etp = spec.get("externalTrafficPolicy") or "Cluster"
    etp = "Local" if str(etp) == "Local" else "Cluster"
    sel = spec.get("selector")
    selector = {str(k): str(v) for k, v in sel.items()} if isinstance(sel, Mapping) else {}
    ext = spec.get("externalIPs") or []
    external_ips = tuple(str(x) for x in ext) if isinstance(ext, list) else ()
    lbc = spec.get("loadBalancerClass")
    lb_class = lbc if isinstance(lbc, str) else ""
    handled = spec.get("type") == "LoadBalancer" and (not lb_class or lb_class in classes)
    gen = meta.get("generation", 0)
    return ServiceRequest(
        namespace=ns, name=name, uid=str(meta.get("uid") or ""),
        generation=gen if isinstance(gen, int) else 0,
        created=str(meta.get("creationTimestamp") or ""), labels=labels,
        requested_ips=tuple(requested), spec_ips=tuple(spec_ips), annotation_ips=tuple(ann_ips),
        annotation_source=ann_src, pool=pool, sharing_key=sharing, share_namespaces=tuple(cross),
        ip_families=tuple(fams), ip_family_policy=str(policy), ports=tuple(ports),
        external_traffic_policy=etp, selector=selector, external_ips=external_ips,
        load_balancer_class=lb_class, handled=handled, problems=tuple(problems), notes=tuple(notes),
        namespace_labels=dict(namespace_labels) if namespace_labels is not None else None,
    )


def status_ips(obj: Any) -> list[str]:
    """IPs in ``status.loadBalancer.ingress`` of a Service object (hostnames ignored)."""
    try:
        ing = obj["status"]["loadBalancer"]["ingress"]
    except (KeyError, TypeError):
        return []
    if not isinstance(ing, list):
        return []
    return [e["ip"] for e in ing if isinstance(e, Mapping) and isinstance(e.get("ip"), str) and e["ip"]]
