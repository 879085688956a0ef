"""Kubernetes label selectors (``metav1.LabelSelector``) with full semantics, pure.

* ``matchLabels`` and every ``matchExpressions`` requirement must hold (AND);
* operators ``In`` (key present, value in values), ``NotIn`` (key absent, or value not in values),
  ``Exists``, ``DoesNotExist``; ``In``/``NotIn`` need a non-empty ``values``, ``Exists`` /
  ``DoesNotExist`` must have none;
* the empty selector ``{}`` matches everything.

Service selectors of pools also see the meta-labels ``io.kubernetes.service.namespace`` and
``io.kubernetes.service.name`` (see :func:`service_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l2lb.core.models import ParseError

__all__ = [
    "META_NAME",
    "META_NAMESPACE",
    "OPERATORS",
    "LabelSelector",
    "Requirement",
    "parse_selector",
    "service_labels",
]

META_NAMESPACE = "io.kubernetes.service.namespace"
META_NAME = "io.kubernetes.service.name"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of OPERATORS
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "In":
            return self.key in labels and labels[self.key] in self.values
        if op == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if op == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        return all(r.matches(labels) for r in self.match_expressions)

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels] + [str(r) for r in self.match_expressions]
        return ",".join(parts) if parts else "<all>"

    @staticmethod
    def of(match_labels: Mapping[str, str] | None = None, *exprs: Requirement) -> LabelSelector:
        """Convenience constructor: ``LabelSelector.of({"a": "b"}, Requirement("c", "Exists"))``."""
        return LabelSelector(tuple(sorted((match_labels or {}).items())), tuple(exprs))


def service_labels(namespace: str, name: str, labels: Mapping[str, str]) -> dict[str, str]:
    """A Service's labels plus the meta-labels pool selectors may use."""
    out = dict(labels)
    out[META_NAMESPACE] = namespace
    out[META_NAME] = name
    return out


def parse_selector(obj: Any, path: str) -> LabelSelector:
    """Parse a ``metav1.LabelSelector`` object; raises :class:`ParseError` naming the bad field."""
    if obj is None:
        return LabelSelector()
    if not isinstance(obj, Mapping):
        raise ParseError(path, f"must be a label selector object, got {type(obj).__name__}")
    unknown = set(obj) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ParseError(f"{path}.{sorted(unknown)[0]}", "unknown field in label selector")
    ml = obj.get("matchLabels") or {}
    if not isinstance(ml, Mapping):
        raise ParseError(f"{path}.matchLabels", "must be a map of strings")
    labels: list[tuple[str, str]] = []
    for k, v in ml.items():
        if not isinstance(k, str) or not k:
            raise ParseError(f"{path}.matchLabels", f"label key {k!r} must be a non-empty string")
        if isinstance(v, bool) or v is None or not isinstance(v, str | int | float):
            raise ParseError(f"{path}.matchLabels.{k}", f"value must be a string, got {v!r}")
        labels.append((k, str(v)))
    me = obj.get("matchExpressions") or []
    if not isinstance(me, list):
        raise ParseError(f"{path}.matchExpressions", "must be a list")
    reqs: list[Requirement] = []
    for i, e in enumerate(me):
        where = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, Mapping):
            raise ParseError(where, "must be an object with key, operator, values")
        key = e.get("key")
        if not isinstance(key, str) or not key:
            raise ParseError(f"{where}.key", "must be a non-empty string")
        op = e.get("operator")
        if op not in OPERATORS:
            raise ParseError(f"{where}.operator", f"{op!r} is not one of {', '.join(OPERATORS)}")
        vals = e.get("values") or []
        if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
            raise ParseError(f"{where}.values", "must be a list of strings")
        if op in ("In", "NotIn") and not vals:
            raise ParseError(f"{where}.values", f"operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and vals:
            raise ParseError(f"{where}.values", f"operator {op} takes no values")
        reqs.append(Requirement(key, str(op), frozenset(vals)))
    return LabelSelector(tuple(sorted(labels)), tuple(reqs))
