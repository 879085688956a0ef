"""L2 announcement policies (pure): parsing and matching.

Three resource kinds are read unchanged into one model, :class:`L2Policy`:

* ``cilium.io/v2alpha1`` ``CiliumL2AnnouncementPolicy`` — ``serviceSelector`` (nil = all Services),
  ``nodeSelector`` (nil = all nodes), ``interfaces`` (regular expressions searched in the interface
  name, unanchored exactly like Cilium's Go ``regexp.MatchString`` -- write ``^eth0$`` for one
  exact name; empty = all), ``externalIPs`` / ``loadBalancerIPs`` (both default ``false`` as in
  Cilium: a policy with neither announces nothing).
* ``metallb.io/v1beta1`` ``L2Advertisement`` — ``ipAddressPools`` (names) and
  ``ipAddressPoolSelectors`` (label selectors on pools; both empty = every pool), ``nodeSelectors``
  (OR of selectors; empty = all nodes), ``interfaces`` (exact names; empty = all). MetalLB announces
  LoadBalancer IPs only, never ``spec.externalIPs``.
* ``l2lb.io/v1alpha1`` ``L2AnnouncementPolicy`` — Cilium's schema, with ``loadBalancerIPs``
  defaulting to ``true``, plus optional MetalLB-style ``ipPools`` / ``ipPoolSelector``.

Service selectors see the Service's labels plus Cilium's meta labels
``io.kubernetes.service.namespace`` and ``io.kubernetes.service.name``.

Bad input raises :class:`PolicyError` with a message meant for a log line / Event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from l2lb.core.models import ParseError
from l2lb.core.selectors import LabelSelector, service_labels
from l2lb.core.selectors import parse_selector as _parse_selector

__all__ = [
    "CILIUM",
    "KIND_KEYS",
    "L2LB",
    "METALLB",
    "L2Policy",
    "LabelSelector",
    "PolicyError",
    "parse_policies",
    "parse_policy",
    "parse_selector",
    "service_labels",
]

CILIUM = "cilium"
METALLB = "metallb"
L2LB = "l2lb"

# (apiVersion, kind) -> source
KIND_KEYS: dict[tuple[str, str], str] = {
    ("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy"): CILIUM,
    ("metallb.io/v1beta1", "L2Advertisement"): METALLB,
    ("l2lb.io/v1alpha1", "L2AnnouncementPolicy"): L2LB,
}


class PolicyError(ValueError):
    """An announcement policy (or one of its selectors) that cannot be used."""


def parse_selector(obj: Any, where: str) -> LabelSelector:
    """Parse a ``metav1.LabelSelector`` (the core's implementation); errors as :class:`PolicyError`."""
    if obj is not None and not isinstance(obj, dict):
        raise PolicyError(f"{where} must be an object, got {type(obj).__name__}")
    try:
        return _parse_selector(obj, where)
    except ParseError as e:
        raise PolicyError(str(e)) from None


# -- the policy model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class L2Policy:
    """One announcement policy, whatever resource it came from."""

    source: str  # CILIUM | METALLB | L2LB
    name: str  # "<source>/<namespace>/<name>" or "<source>/<name>"
    service_selector: LabelSelector | None = None  # None: every Service
    node_selectors: tuple[LabelSelector, ...] = ()  # OR; empty: every node
    interfaces: tuple[str, ...] = ()  # patterns; empty: every interface
    interfaces_regex: bool = True  # False: exact names (MetalLB)
    load_balancer_ips: bool = True
    external_ips: bool = False
    ip_pools: tuple[str, ...] = ()  # pool names; with pool_selectors, empty both = all pools
    pool_selectors: tuple[LabelSelector, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.interfaces_regex and not self._compiled and self.interfaces:
            pats = []
            for p in self.interfaces:
                try:
                    pats.append(re.compile(p))
                except (re.error, OverflowError, RecursionError) as e:  # huge repeat counts overflow
                    raise PolicyError(
                        f"{self.name}: interface pattern {p!r} is not a valid regex: {e}"
                    ) from None
            object.__setattr__(self, "_compiled", tuple(pats))

    # -- matching ------------------------------------------------------------------------------
    def selects_service(self, namespace: str, name: str, labels: Mapping[str, str]) -> bool:
        if self.service_selector is None:
            return True
        return self.service_selector.matches(service_labels(namespace, name, labels))

    def selects_ip_kind(self, external: bool) -> bool:
        return self.external_ips if external else self.load_balancer_ips

    def selects_pool(self, pool: str | None, pool_labels: Mapping[str, str] | None) -> bool:
        if not self.ip_pools and not self.pool_selectors:
            return True
        if pool is None:
            return False
        if pool in self.ip_pools:
            return True
        labels = pool_labels or {}
        return any(s.matches(labels) for s in self.pool_selectors)

    def selects_node(self, labels: Mapping[str, str]) -> bool:
        if not self.node_selectors:
            return True
        return any(s.matches(labels) for s in self.node_selectors)

    def restricts_interfaces(self) -> bool:
        return bool(self.interfaces)

    def interface_allowed(self, ifname: str) -> bool:
        if not self.interfaces:
            return True
        if self.interfaces_regex:
            return any(p.search(ifname) for p in self._compiled)  # unanchored, as Cilium's MatchString
        return ifname in self.interfaces


# -- parsing ---------------------------------------------------------------------------------------
def _bool(spec: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    v = spec.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise PolicyError(f"{where}.{key} must be true or false, got {v!r}")
    return v


def _str_list(spec: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = spec.get(key)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise PolicyError(f"{where}.{key} must be a list of strings")
    return tuple(v)


def _selectors(spec: Mapping[str, Any], key: str, where: str) -> tuple[LabelSelector, ...]:
    v = spec.get(key)
    if v is None:
        return ()
    if not isinstance(v, list):
        raise PolicyError(f"{where}.{key} must be a list of label selectors")
    return tuple(parse_selector(s, f"{where}.{key}[{i}]") for i, s in enumerate(v))


def _opt_selector(spec: Mapping[str, Any], key: str, where: str) -> LabelSelector | None:
    v = spec.get(key)
    if v is None:
        return None
    return parse_selector(v, f"{where}.{key}")


def parse_policy(obj: Mapping[str, Any]) -> L2Policy:
    """Turn one Kubernetes object of a supported kind into an :class:`L2Policy`."""
    if not isinstance(obj, Mapping):
        raise PolicyError("policy must be an object")
    api, kind = obj.get("apiVersion"), obj.get("kind")
    source = KIND_KEYS.get((str(api), str(kind)))
    if source is None:
        raise PolicyError(f"unsupported policy kind {api}/{kind}")
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise PolicyError(f"{kind} without metadata.name")
    ns = meta.get("namespace") if source == METALLB else None
    name = f"{source}/{ns}/{meta['name']}" if ns else f"{source}/{meta['name']}"
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise PolicyError(f"{name}: spec must be an object")
    where = f"{name}: spec"
    if source == METALLB:
        return L2Policy(
            source=source, name=name, service_selector=None,
            node_selectors=_selectors(spec, "nodeSelectors", where),
            interfaces=_str_list(spec, "interfaces", where), interfaces_regex=False,
            load_balancer_ips=True, external_ips=False,
            ip_pools=_str_list(spec, "ipAddressPools", where),
            pool_selectors=_selectors(spec, "ipAddressPoolSelectors", where),
        )
    node_sel = _opt_selector(spec, "nodeSelector", where)
    pools: tuple[str, ...] = ()
    pool_sels: tuple[LabelSelector, ...] = ()
    if source == L2LB:
        pools = _str_list(spec, "ipPools", where)
        ps = _opt_selector(spec, "ipPoolSelector", where)
        pool_sels = (ps,) if ps is not None else ()
    return L2Policy(
        source=source, name=name,
        service_selector=_opt_selector(spec, "serviceSelector", where),
        node_selectors=(node_sel,) if node_sel is not None else (),
        interfaces=_str_list(spec, "interfaces", where), interfaces_regex=True,
        load_balancer_ips=_bool(spec, "loadBalancerIPs", source == L2LB, where),
        external_ips=_bool(spec, "externalIPs", False, where),
        ip_pools=pools, pool_selectors=pool_sels,
    )


def parse_policies(objs: Iterable[Mapping[str, Any]]) -> tuple[list[L2Policy], list[tuple[str, str]]]:
    """Parse many; returns (good policies sorted by name, [(object name, error message)])."""
    good: list[L2Policy] = []
    bad: list[tuple[str, str]] = []
    for o in objs:
        try:
            good.append(parse_policy(o))
        except PolicyError as e:
            meta = o.get("metadata") if isinstance(o, Mapping) else None
            nm = meta.get("name") if isinstance(meta, dict) else None
            bad.append((str(nm or "?"), str(e)))
    good.sort(key=lambda p: p.name)
    return good, bad
