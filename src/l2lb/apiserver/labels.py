"""Label and field selectors as the Kubernetes API accepts them in ``?labelSelector=`` / ``?fieldSelector=``.

Label selector grammar (comma = AND): ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (exists), ``!k`` (does not exist). Field selectors: ``path=v``, ``path==v``, ``path!=v`` on dotted
paths such as ``metadata.name``, ``metadata.namespace`` or ``involvedObject.name`` (the embedded server
accepts any dotted path; a real kube-apiserver accepts only the field labels registered for the type).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldRequirement",
    "Requirement",
    "SelectorError",
    "match_fields",
    "match_labels",
    "parse_field_selector",
    "parse_label_selector",
]

_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<vals>[^()]*)\)$")


class SelectorError(ValueError):
    """A selector that cannot be parsed (the API answers 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label, as Kubernetes does
        return not has or labels[self.key] not in self.values


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    op: str  # "=" or "!="
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        cur: Any = obj
        for part in self.path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        got = "" if cur is None else (str(cur).lower() if isinstance(cur, bool) else str(cur))
        return (got == self.value) == (self.op == "=")


def _split_terms(s: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {s!r}")
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise SelectorError(f"unbalanced '(' in selector {s!r}")
    terms.append("".join(cur))
    return [t.strip() for t in terms]


def _key(k: str, s: str) -> str:
    if not _KEY.match(k) or len(k.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f"invalid label key {k!r} in selector {s!r}")
    return k


def _value(v: str, s: str) -> str:
    if not _VALUE.match(v) or len(v) > 63:
        raise SelectorError(f"invalid label value {v!r} in selector {s!r}")
    return v


def parse_label_selector(s: str | None) -> list[Requirement]:
    """Parse a label selector string; empty/None selects everything. Raises :class:`SelectorError`."""
    if s is None or not s.strip():
        return []
    out: list[Requirement] = []
    for term in _split_terms(s):
        if not term:
            raise SelectorError(f"empty term in selector {s!r}")
        m = _SET.match(term)
        if m:
            vals = [v.strip() for v in m.group("vals").split(",")]
            if vals == [""]:
                raise SelectorError(f"{m.group('op')} needs at least one value in selector {s!r}")
            out.append(
                Requirement(_key(m.group("key"), s), m.group("op"), frozenset(_value(v, s) for v in vals))
            )
        elif term.startswith("!"):
            out.append(Requirement(_key(term[1:].strip(), s), "!exists"))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            out.append(Requirement(_key(k.strip(), s), "!=", frozenset([_value(v.strip(), s)])))
        elif "==" in term or "=" in term:
            k, v = term.split("==", 1) if "==" in term else term.split("=", 1)
            out.append(Requirement(_key(k.strip(), s), "=", frozenset([_value(v.strip(), s)])))
        elif re.search(r"[<>()\s]", term):
            raise SelectorError(f"unsupported selector term {term!r} in {s!r}")
        else:
            out.append(Requirement(_key(term, s), "exists"))
    return out


def match_labels(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    lab = labels or {}
    return all(r.matches(lab) for r in reqs)


def parse_field_selector(s: str | None) -> list[FieldRequirement]:
    if s is None or not s.strip():
        return []
    out: list[FieldRequirement] = []
    for raw in s.split(","):
        term = raw.strip()
        if "!=" in term:
            p, v = term.split("!=", 1)
            op = "!="
        elif "==" in term:
            p, v = term.split("==", 1)
            op = "="
        elif "=" in term:
            p, v = term.split("=", 1)
            op = "="
        else:
            raise SelectorError(f"invalid field selector term {term!r}: want path=value or path!=value")
        p = p.strip()
        if not re.match(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$", p):
            raise SelectorError(f"invalid field path {p!r} in field selector {s!r}")
        out.append(FieldRequirement(p, op, v.strip()))
    return out


def match_fields(reqs: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all(r.matches(obj) for r in reqs)
