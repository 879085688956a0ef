"""Which Kubernetes API verbs on which resources a service's code can call, read from its source.

Static, conservative (it over-approximates, never under-approximates what the code *names*):

* a call ``<something with "client" or "kube" in it>.<method>(res, ...)`` where ``method`` is one
  of the :class:`l2lb.adapters.kube.client.KubeClient` request methods is a request; ``res`` is
  resolved to ``RESOURCES[...]`` keys: a literal subscript, a name/attribute assigned from an
  expression that mentions ``RESOURCES[...]`` anywhere in the module, or -- when the key is not a
  literal -- every ``RESOURCES`` key spelled as a string in the module;
* ``subresource="status"`` (and ``replace_status``) count on ``<plural>/status``;
* the helpers of ``l2lb.adapters.kube`` (``Informer``, ``LeaderElector``, ``EventRecorder``,
  ``patch_status_if_changed``, ``update_with_retry``, ...) are analysed the same way, once, and a
  service calling one gets the helper's requests: those on fixed resources (the leader elector's
  Leases, the recorder's Events) and those on the resource the service passes in.

The other direction is measured: tests/deploy/test_devstack.py runs the services against the
embedded API server and checks that every request in its request log (verb, resource, attributed
by User-Agent; the client also counts them as ``l2lb_kube_requests_total{verb,resource,code}``)
is allowed by the service's RBAC. A wider run (the integration tests' logs) can replace this static
reading once every verb a service can make is exercised there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# KubeClient method -> Kubernetes verb (and whether it always hits the status subresource)
CLIENT_METHODS: dict[str, tuple[str, bool]] = {
    "get": ("get", False),
    "list": ("list", False),
    "watch": ("watch", False),
    "create_object": ("create", False),
    "replace": ("update", False),
    "replace_status": ("update", True),
    "patch": ("patch", False),
    "delete": ("delete", False),
}

PARAM = "<param>"  # a resource the helper's caller passes in


@dataclass
class Needs:
    """(resource key or PARAM, subresource or "", verb) triples."""

    calls: set[tuple[str, str, str]] = field(default_factory=set)

    def keys(self) -> set[str]:
        return {k for k, _, _ in self.calls}


def _terminal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _resources_subscripts(node: ast.AST) -> list[ast.Subscript]:
    return [
        n
        for n in ast.walk(node)
        if isinstance(n, ast.Subscript) and _terminal(n.value) == "RESOURCES"
    ]


class _Module:
    def __init__(self, source: str, known_keys: Iterable[str]):
        self.tree = ast.parse(source)
        self.known = set(known_keys)
        self.strings = {
            n.value for n in ast.walk(self.tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        # `for key in ("a", "b"):` / comprehensions over literal tuples: key -> {"a", "b"}
        self.loop_vars: dict[str, set[str]] = {}
        for n in ast.walk(self.tree):
            pairs: list[tuple[ast.AST, ast.AST]] = []
            if isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
                pairs.append((n.target, n.iter))
            for target, it in pairs:
                if isinstance(target, ast.Name) and isinstance(it, (ast.Tuple, ast.List, ast.Set)):
                    vals = {e.value for e in it.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                    if vals and len(vals) == len(it.elts):
                        self.loop_vars.setdefault(target.id, set()).update(vals)
        # NAME = {"a": "key1", ...} / ("key1", "key2"): RESOURCES[NAME[x]] and `for x in NAME`
        self.literals: dict[str, set[str]] = {}
        for n in ast.walk(self.tree):
            if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None:
                lit = _literal_strings(n.value)
                if lit is None:
                    continue
                tgts = n.targets if isinstance(n, ast.Assign) else [n.target]
                for t in tgts:
                    name = _terminal(t)
                    if name:
                        self.literals.setdefault(name, set()).update(lit)
        for n in ast.walk(self.tree):
            if isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)) and isinstance(n.target, ast.Name):
                src = _terminal(n.iter)
                if src in self.literals:
                    self.loop_vars.setdefault(n.target.id, set()).update(self.literals[src])
        # names bound to resources: x = RESOURCES[...]; y = x; a, b = y, other  (to a fixpoint)
        self.bound: dict[str, set[str]] = {}
        assigned: list[tuple[ast.expr, ast.expr]] = []
        for n in ast.walk(self.tree):
            if isinstance(n, ast.Assign):
                for t in n.targets:
                    assigned += _pairs(t, n.value)
            elif isinstance(n, ast.AnnAssign) and n.value is not None:
                assigned += _pairs(n.target, n.value)
        changed = True
        while changed:
            changed = False
            for target, value in assigned:
                keys = self.value_keys(value)
                name = _terminal(target)
                if keys and name and not keys <= self.bound.get(name, set()):
                    self.bound.setdefault(name, set()).update(keys)
                    changed = True

    def value_keys(self, v: ast.expr) -> set[str]:
        """Resource keys an expression evaluates to: RESOURCES[...], an alias, a choice of those."""
        if isinstance(v, ast.Subscript) and _terminal(v.value) == "RESOURCES":
            return self.keys_in(v)
        if isinstance(v, (ast.Name, ast.Attribute)):
            return set(self.bound.get(_terminal(v) or "", set()))
        if isinstance(v, ast.IfExp):
            return self.value_keys(v.body) | self.value_keys(v.orelse)
        if isinstance(v, ast.BoolOp):
            return set().union(*(self.value_keys(x) for x in v.values))
        return set()

    def keys_in(self, node: ast.AST) -> set[str]:
        out: set[str] = set()
        for sub in _resources_subscripts(node):
            sl = sub.slice
            if isinstance(sl, ast.Constant) and isinstance(sl.value, str):
                out.add(sl.value)
            elif isinstance(sl, ast.Name) and sl.id in self.loop_vars:
                out |= self.loop_vars[sl.id] & self.known
            elif isinstance(sl, ast.Subscript) and _terminal(sl.value) in self.literals:
                out |= self.literals[_terminal(sl.value) or ""] & self.known
            else:  # RESOURCES[k]: any key the module spells
                out |= self.known & self.strings
        return out

    def resolve(self, node: ast.AST) -> set[str]:
        keys = self.keys_in(node)
        if keys:
            return keys
        name = _terminal(node)
        if name and name in self.bound:
            return set(self.bound[name])
        return set()


def _pairs(target: ast.expr, value: ast.expr) -> list[tuple[ast.expr, ast.expr]]:
    """(target, value) pairs of an assignment, element-wise for `a, b = x, y`."""
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
        if len(target.elts) == len(value.elts):
            return [p for t, v in zip(target.elts, value.elts, strict=True) for p in _pairs(t, v)]
        return []
    if isinstance(target, (ast.Name, ast.Attribute)):
        return [(target, value)]
    return []


def _literal_strings(node: ast.AST) -> set[str] | None:
    """The strings of a literal dict's values or a literal tuple/list/set; None otherwise."""
    elts: list[ast.expr | None]
    if isinstance(node, ast.Dict):
        elts = list(node.values)
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        elts = list(node.elts)
    else:
        return None
    vals = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return vals if vals and len(vals) == len(elts) else None


def _subresource(call: ast.Call) -> str:
    for kw in call.keywords:
        if kw.arg == "subresource" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
            return kw.value.value
        if kw.arg == "subresource" and not (isinstance(kw.value, ast.Constant) and kw.value.value is None):
            return "status"  # a variable: assume the only subresource l2lb writes
    return ""


def _first_arg(call: ast.Call) -> ast.AST | None:
    if call.args:
        return call.args[0]
    for kw in call.keywords:
        if kw.arg in ("res", "resource"):
            return kw.value
    return None


def _is_client(node: ast.AST) -> bool:
    text = ast.unparse(node).lower()
    return "client" in text or "kube" in text


def analyse_source(source: str, known_keys: Iterable[str], helpers: dict[str, Needs] | None = None) -> Needs:
    """Requests one module can make (resource keys, or PARAM for a resource passed in)."""
    mod = _Module(source, known_keys)
    out = Needs()
    for call in (n for n in ast.walk(mod.tree) if isinstance(n, ast.Call)):
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in CLIENT_METHODS and _is_client(func.value):
            verb, status = CLIENT_METHODS[func.attr]
            sub = "status" if status else _subresource(call)
            arg = _first_arg(call)
            if arg is None:
                continue
            keys = mod.resolve(arg)
            if keys:
                out.calls |= {(k, sub, verb) for k in keys}
            else:
                out.calls.add((PARAM, sub, verb))
            continue
        name = _terminal(func)
        if helpers and name in helpers:
            passed: set[str] = set()
            for a in [*call.args, *(kw.value for kw in call.keywords)]:
                passed |= mod.resolve(a)
            sub_kw = _subresource(call)
            param_calls = {(sub, verb) for key, sub, verb in helpers[name].calls if key == PARAM}
            both = {verb for sub, verb in param_calls if sub} & {verb for sub, verb in param_calls if not sub}
            for key, sub, verb in helpers[name].calls:
                if key != PARAM:
                    out.calls.add((key, sub, verb))
                    continue
                # a helper that does `verb` on the object OR its subresource, as its caller says
                # (update_with_retry(..., subresource="status")): keep the variant asked for
                if verb in both and bool(sub) != bool(sub_kw):
                    continue
                for k in passed:
                    out.calls.add((k, sub, verb))
    return out


def helper_needs(kube_pkg: Path, known_keys: Iterable[str]) -> dict[str, Needs]:
    """Per public class/function of ``l2lb.adapters.kube`` (except the client): its requests."""
    keys = set(known_keys)
    out: dict[str, Needs] = {}
    for path in sorted(kube_pkg.glob("*.py")):
        if path.name in ("client.py", "__init__.py"):
            continue
        source = path.read_text()
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith(
                "_"
            ):
                seg = ast.get_source_segment(source, node) or ""
                # module-level constants (LEASES = RESOURCES["leases"]) must be visible
                consts = "\n".join(
                    ast.get_source_segment(source, n) or ""
                    for n in tree.body
                    if isinstance(n, (ast.Assign, ast.AnnAssign))
                )
                needs = analyse_source(consts + "\n" + seg, keys)
                if needs.calls:
                    out[node.name] = needs
    # helpers calling helpers (update_with_retry -> retry_on_conflict is harmless; a class using
    # patch_status_if_changed is not): one more pass with the first-level results
    for path in sorted(kube_pkg.glob("*.py")):
        if path.name in ("client.py", "__init__.py"):
            continue
        source = path.read_text()
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith(
                "_"
            ):
                seg = ast.get_source_segment(source, node) or ""
                consts = "\n".join(
                    ast.get_source_segment(source, n) or ""
                    for n in tree.body
                    if isinstance(n, (ast.Assign, ast.AnnAssign))
                )
                others = {k: v for k, v in out.items() if k != node.name}
                more = analyse_source(consts + "\n" + seg, keys, others)
                if more.calls:
                    out.setdefault(node.name, Needs()).calls |= more.calls
    return out


def service_needs(service_dir: Path, kube_pkg: Path, known_keys: Iterable[str]) -> Needs:
    keys = set(known_keys)
    helpers = helper_needs(kube_pkg, keys)
    out = Needs()
    for path in sorted(service_dir.rglob("*.py")):
        out.calls |= analyse_source(path.read_text(), keys, helpers).calls
    # a resource passed to nothing we can see is not a request
    out.calls = {c for c in out.calls if c[0] != PARAM}
    return out
