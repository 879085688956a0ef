"""A subset of OpenAPI v3 structural-schema checking, as the API server applies to custom resources.

``check(schema, value)`` returns (errors, unknown_paths): type/enum/required/pattern/bounds errors
as ``(field, message)`` pairs and the dotted paths of fields the schema does not know (pruned by
``prune``). Built-in types use small hand-written schemas for the fields l2lb reads and writes,
with ``x-kubernetes-preserve-unknown-fields`` elsewhere.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["check", "prune", "type_name"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_ok(t: str, v: Any) -> bool:
    if t in ("integer", "number") and isinstance(v, bool):
        return False
    if t == "integer" and isinstance(v, float):
        return v.is_integer()
    return isinstance(v, _TYPES.get(t, (object,)))


def check(schema: dict[str, Any], value: Any, path: str = "") -> tuple[list[tuple[str, str]], list[str]]:
    errors: list[tuple[str, str]] = []
    unknown: list[str] = []
    _check(schema, value, path, errors, unknown)
    return errors, unknown


def _check(s: dict[str, Any], v: Any, path: str, errors: list[tuple[str, str]], unknown: list[str]) -> None:
    where = path or "<root>"
    if v is None:
        if not s.get("nullable") and s.get("type"):
            errors.append((where, f'Invalid value: "null": {where} in body must be of type {s["type"]}'))
        return
    if s.get("x-kubernetes-int-or-string"):
        if not (isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))):
            errors.append(
                (where, f'Invalid value: "{type_name(v)}": {where} in body must be of type integer or string')
            )
        return
    t = s.get("type")
    if t and not _type_ok(t, v):
        errors.append(
            (where, f'Invalid value: "{type_name(v)}": {where} in body must be of type {t}: "{type_name(v)}"')
        )
        return
    if "enum" in s and v not in s["enum"]:
        allowed = ", ".join(f'"{e}"' for e in s["enum"])
        errors.append((where, f"Unsupported value: {v!r}: supported values: {allowed}"))
    if isinstance(v, str):
        if "pattern" in s and not re.search(s["pattern"], v):
            errors.append((where, f"Invalid value: {v!r}: {where} in body should match '{s['pattern']}'"))
        if "maxLength" in s and len(v) > s["maxLength"]:
            errors.append((where, f"Too long: may not be longer than {s['maxLength']}"))
        if "minLength" in s and len(v) < s["minLength"]:
            errors.append(
                (
                    where,
                    f"Invalid value: {v!r}: {where} in body should be at least {s['minLength']} chars long",
                )
            )
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            errors.append(
                (
                    where,
                    f"Invalid value: {v}: {where} in body should be greater than or equal to {s['minimum']}",
                )
            )
        if "maximum" in s and v > s["maximum"]:
            errors.append(
                (where, f"Invalid value: {v}: {where} in body should be less than or equal to {s['maximum']}")
            )
    if isinstance(v, list):
        if "maxItems" in s and len(v) > s["maxItems"]:
            errors.append((where, f"Too many: {len(v)}: must have at most {s['maxItems']} items"))
        if "minItems" in s and len(v) < s["minItems"]:
            errors.append(
                (
                    where,
                    f"Invalid value: {len(v)}: {where} in body should have at least {s['minItems']} items",
                )
            )
        items = s.get("items")
        if isinstance(items, dict):
            for i, el in enumerate(v):
                _check(items, el, f"{path}[{i}]", errors, unknown)
    if isinstance(v, dict):
        props = s.get("properties")
        addl = s.get("additionalProperties")
        for req in s.get("required", []):
            if req not in v:
                errors.append((f"{path}.{req}" if path else req, "Required value"))
        for k, sub in v.items():
            cp = f"{path}.{k}" if path else k
            if isinstance(props, dict) and k in props:
                _check(props[k], sub, cp, errors, unknown)
            elif isinstance(addl, dict):
                _check(addl, sub, cp, errors, unknown)
            elif props is not None and not s.get("x-kubernetes-preserve-unknown-fields") and addl is not True:
                unknown.append(cp)
    for sub in s.get("allOf", []):
        _check(sub, v, path, errors, unknown)


def prune(s: dict[str, Any], v: Any) -> Any:
    """Drop fields the schema does not declare (unless it preserves unknown fields)."""
    if isinstance(v, dict):
        props = s.get("properties")
        addl = s.get("additionalProperties")
        out: dict[str, Any] = {}
        for k, sub in v.items():
            if isinstance(props, dict) and k in props:
                out[k] = prune(props[k], sub)
            elif isinstance(addl, dict):
                out[k] = prune(addl, sub)
            elif props is None or s.get("x-kubernetes-preserve-unknown-fields") or addl is True:
                out[k] = sub
        return out
    if isinstance(v, list) and isinstance(s.get("items"), dict):
        return [prune(s["items"], el) for el in v]
    return v
