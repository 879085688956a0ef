"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

Strategic merge patch follows Kubernetes' rules for the fields listed in a type's ``merge_keys``
table (dotted path -> patchMergeKey; ``""`` = list of scalars merged as a set): lists of objects are
merged element by element by that key, other lists are replaced, maps are merged, ``null`` deletes.
Directives understood: ``$patch: replace|delete|merge`` (in maps and in list elements),
``$retainKeys``, ``$setElementOrder/<field>``, ``$deleteFromPrimitiveList/<field>``.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "PatchTestFailed", "json_patch", "merge_patch", "strategic_merge_patch"]


class PatchError(ValueError):
    """The patch cannot be applied (answered as 400 BadRequest / 422 Invalid)."""


class PatchTestFailed(PatchError):
    """A JSON-patch ``test`` operation did not hold (answered as 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: returns a new value; ``target`` is not modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# -- strategic merge patch ---------------------------------------------------------------------------

_DELETE = object()


def strategic_merge_patch(target: Any, patch: Any, merge_keys: dict[str, str], path: str = "") -> Any:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    res = _smp_map(target if isinstance(target, dict) else {}, patch, merge_keys, path)
    return {} if res is _DELETE else res


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _smp_map(target: dict[str, Any], patch: dict[str, Any], mk: dict[str, str], path: str) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown $patch directive {directive!r} at {path or '<root>'}")
    out = copy.deepcopy(target)
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            if not isinstance(v, list):
                raise PatchError(f"{k} at {path or '<root>'} must be a list")
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if not isinstance(v, list):
                raise PatchError(f"{k} at {path or '<root>'} must be a list")
            cur = out.get(field)
            if isinstance(cur, list):
                out[field] = [x for x in cur if x not in v]
            continue
        if k.startswith("$"):
            raise PatchError(f"unknown directive {k!r} at {path or '<root>'}")
        cpath = _child(path, k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            res = _smp_map(out[k] if isinstance(out.get(k), dict) else {}, v, mk, cpath)
            if res is _DELETE:
                out.pop(k, None)
            else:
                out[k] = res
        elif isinstance(v, list) and cpath in mk:
            cur = out.get(k)
            out[k] = _smp_list(cur if isinstance(cur, list) else [], v, mk, cpath)
        else:
            out[k] = copy.deepcopy(v)
    for field, order in orders.items():
        cur = out.get(field)
        if isinstance(cur, list):
            out[field] = _reorder(cur, order, mk.get(_child(path, field), ""))
    retain = patch.get("$retainKeys")
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError(f"$retainKeys at {path or '<root>'} must be a list")
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _reorder(cur: list[Any], order: list[Any], key: str) -> list[Any]:
    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else x

    wanted = [ident(o) for o in order]
    pos = {json_key(w): i for i, w in enumerate(wanted)}
    return sorted(cur, key=lambda x: pos.get(json_key(ident(x)), len(pos)))


def json_key(v: Any) -> str:
    return repr(v)


def _smp_list(target: list[Any], patch: list[Any], mk: dict[str, str], path: str) -> list[Any]:
    key = mk[path]
    if not key:  # set of scalars
        out = copy.deepcopy(target)
        for v in patch:
            if isinstance(v, dict):
                if v.get("$patch") == "replace":
                    return [x for x in patch if not (isinstance(x, dict) and "$patch" in x)]
                raise PatchError(f"{path}: list of scalars got an object")
            if v not in out:
                out.append(copy.deepcopy(v))
        return out
    for el in patch:
        if isinstance(el, dict) and el.get("$patch") == "replace" and len(el) == 1:
            return [copy.deepcopy(x) for x in patch if x is not el]
    out = copy.deepcopy(target)
    for el in patch:
        if not isinstance(el, dict):
            raise PatchError(f"{path}: elements must be objects with merge key {key!r}")
        if key not in el:
            raise PatchError(f"{path}: element {el!r} lacks the merge key {key!r}")
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == el[key]), None)
        if el.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append({k: copy.deepcopy(v) for k, v in el.items() if not k.startswith("$")})
        else:
            res = _smp_map(out[idx], el, mk, path)
            out[idx] = res
    return out


# -- JSON patch ---------------------------------------------------------------------------------------


def _pointer(p: Any) -> list[str]:
    if not isinstance(p, str) or (p and not p.startswith("/")):
        raise PatchError(f"invalid JSON pointer {p!r}")
    if p == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in p[1:].split("/")]


def _walk(doc: Any, toks: list[str], op: str) -> Any:
    cur = doc
    for t in toks:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"{op}: path element {t!r} does not exist")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, op, allow_end=False)]
        else:
            raise PatchError(f"{op}: cannot descend into a scalar at {t!r}")
    return cur


def _index(lst: list[Any], t: str, op: str, allow_end: bool) -> int:
    if t == "-" and allow_end:
        return len(lst)
    if not t.isdigit() or (len(t) > 1 and t.startswith("0")):
        raise PatchError(f"{op}: invalid array index {t!r}")
    i = int(t)
    if i > len(lst) or (i == len(lst) and not allow_end):
        raise PatchError(f"{op}: array index {i} out of range")
    return i


def _add(doc: Any, toks: list[str], value: Any, op: str) -> Any:
    if not toks:
        return copy.deepcopy(value)
    parent = _walk(doc, toks[:-1], op)
    last = toks[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, op, allow_end=True), copy.deepcopy(value))
    else:
        raise PatchError(f"{op}: parent of {last!r} is a scalar")
    return doc


def _remove(doc: Any, toks: list[str], op: str) -> Any:
    if not toks:
        raise PatchError(f"{op}: cannot remove the whole document")
    parent = _walk(doc, toks[:-1], op)
    last = toks[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{op}: path element {last!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, op, allow_end=False))
    raise PatchError(f"{op}: parent of {last!r} is a scalar")


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902; returns a new document. Raises :class:`PatchError` / :class:`PatchTestFailed`."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    out = copy.deepcopy(doc)
    for o in ops:
        if not isinstance(o, dict) or "op" not in o or "path" not in o:
            raise PatchError(f"invalid JSON patch operation {o!r}: needs 'op' and 'path'")
        op, toks = o["op"], _pointer(o["path"])
        if op in ("add", "replace", "test") and "value" not in o:
            raise PatchError(f"{op} at {o['path']!r} needs 'value'")
        if op == "add":
            out = _add(out, toks, o["value"], op)
        elif op == "remove":
            _remove(out, toks, op)
        elif op == "replace":
            if toks:
                _walk(out, toks, op)  # must exist
                _remove(out, toks, op)
            out = _add(out, toks, o["value"], op)
        elif op in ("move", "copy"):
            src = _pointer(o.get("from"))
            val = copy.deepcopy(_walk(out, src, op))
            if op == "move":
                if toks[: len(src)] == src and len(toks) > len(src):
                    raise PatchError("move: cannot move a value into one of its children")
                _remove(out, src, op)
            out = _add(out, toks, val, op)
        elif op == "test":
            if _walk(out, toks, op) != o["value"]:
                raise PatchTestFailed(f"testing value {o['path']} failed")
        else:
            raise PatchError(f"unknown JSON patch op {op!r}")
    return out
