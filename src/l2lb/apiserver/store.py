"""In-memory object store of the embedded API server: resource versions, watch history, CRDs.

One global resourceVersion counter orders every change. Stored objects are never mutated in place
(each write stores a new dict), so watch history can keep references. Errors are :class:`ApiError`
carrying a Kubernetes ``Status``.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from l2lb.apiserver import labels as sel
from l2lb.apiserver import validate
from l2lb.apiserver.patch import PatchError, PatchTestFailed, json_patch, merge_patch, strategic_merge_patch
from l2lb.apiserver.types import BUILTINS, CRDError, ResourceType, crd_types, meta_schema

__all__ = ["DEFAULT_NAMESPACES", "ApiError", "Event", "Store"]

GK = tuple[str, str]
Key = tuple[str, str]
Obj = dict[str, Any]
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_UNDELETABLE = ("default", "kube-system", "kube-public")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> Obj:
        st: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            st["details"] = self.details
        return st


def bad_request(msg: str) -> ApiError:
    return ApiError(400, "BadRequest", msg)


def _details(rt: ResourceType, name: str) -> Obj:
    d: Obj = {"name": name, "kind": rt.plural}
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.describe()} "{name}" not found', details=_details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.describe()} "{name}": {why}',
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    msg = f'{rt.kind}.{rt.group or "core"} "{name}" is invalid: ' + ", ".join(f"{f}: {m}" for f, m in causes)
    if not rt.group:
        msg = f'{rt.kind} "{name}" is invalid: ' + ", ".join(f"{f}: {m}" for f, m in causes)
    det = {
        **_details(rt, name),
        "kind": rt.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
    }
    return ApiError(422, "Invalid", msg, details=det)


@dataclass(frozen=True)
class Event:
    rv: int
    gk: GK
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None


def _meta(o: Obj) -> Obj:
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


def _spec_part(o: Obj, status_counts: bool = False) -> Obj:
    skip = ("metadata", "apiVersion", "kind") if status_counts else ("metadata", "status", "apiVersion", "kind")
    return {k: v for k, v in o.items() if k not in skip}


_USER_META = ("labels", "annotations", "finalizers", "ownerReferences")


def _check_ingress(rt: ResourceType, svc: Obj) -> None:
    st = svc.get("status")
    lb = st.get("loadBalancer") if isinstance(st, dict) else None
    if isinstance(lb, dict) and lb.get("ingress") and (svc.get("spec") or {}).get("type") != "LoadBalancer":
        raise invalid(rt, svc["metadata"]["name"], [
            ("status.loadBalancer.ingress", "Forbidden: may only be used when `spec.type` is 'LoadBalancer'")])


def _default_ingress(svc: Obj) -> None:
    """``status.loadBalancer.ingress[].ipMode`` defaults to VIP for IP entries (Kubernetes >= 1.30)."""
    st = svc.get("status")
    lb = st.get("loadBalancer") if isinstance(st, dict) else None
    ing = lb.get("ingress") if isinstance(lb, dict) else None
    for i in ing if isinstance(ing, list) else []:
        if isinstance(i, dict) and i.get("ip") and not i.get("ipMode"):
            i["ipMode"] = "VIP"


def _strip_rv(o: Obj) -> Obj:
    c = dict(o)
    c["metadata"] = {k: v for k, v in _meta(o).items() if k != "resourceVersion"}
    return c


class Store:
    def __init__(self, window: int = 10000):
        self.rv = 0
        self.compacted_rv = 0
        self.window = window
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[GK, dict[Key, Obj]] = {}
        self.history: deque[Event] = deque()
        self.subs: dict[GK, set[Callable[[Event | None], None]]] = {}
        self.on_change: Callable[[], None] | None = None
        self._next_ip = 10
        self._next_port = 30000
        for rt in BUILTINS:
            self._register(rt)
        self.ensure_default_namespaces()

    # -- types ----------------------------------------------------------------------------------
    def _register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self.objects.setdefault(rt.gk, {})

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for g, v, _ in self.types:
            if v not in out.setdefault(g, []):
                out[g].append(v)
        return out

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self.types.items() if g == group and v == version]

    def rt_for_gk(self, gk: GK) -> ResourceType | None:
        for rt in self.types.values():
            if rt.gk == gk:
                return rt
        return None

    def _install_crd(self, crd: Obj) -> None:
        name = _meta(crd).get("name", "")
        try:
            new = crd_types(crd)
        except CRDError as e:
            raise invalid(
                self.types[("apiextensions.k8s.io", "v1", "customresourcedefinitions")], str(name), e.causes
            ) from None
        for rt in new:
            other = self.types.get((rt.group, rt.version, rt.plural))
            if other is not None and other.crd != rt.crd:
                raise ApiError(409, "Conflict", f"{rt.plural}.{rt.group}/{rt.version} is already served")
        for tkey in [k for k, rt in self.types.items() if rt.crd == name]:
            del self.types[tkey]
        for rt in new:
            self._register(rt)

    def _uninstall_crd(self, name: str) -> None:
        for gk in {rt.gk for rt in self.types.values() if rt.crd == name}:
            for key in list(self.objects.get(gk, {})):
                self._remove(gk, key)
            for cb in list(self.subs.pop(gk, ())):
                cb(None)  # the resource is gone: end its watches
        for tkey in [k for k, rt in self.types.items() if rt.crd == name]:
            del self.types[tkey]

    # -- events ---------------------------------------------------------------------------------
    def _emit(self, type_: str, gk: GK, obj: Obj, old: Obj | None) -> None:
        ev = Event(self.rv, gk, type_, obj, old)
        self.history.append(ev)
        while len(self.history) > self.window:
            self.compacted_rv = self.history.popleft().rv
        for cb in list(self.subs.get(gk, ())):
            cb(ev)
        if self.on_change is not None:
            self.on_change()

    def subscribe(self, gk: GK, cb: Callable[[Event | None], None]) -> None:
        self.subs.setdefault(gk, set()).add(cb)

    def unsubscribe(self, gk: GK, cb: Callable[[Event | None], None]) -> None:
        self.subs.get(gk, set()).discard(cb)

    def events_since(self, gk: GK, rv: int) -> list[Event]:
        if rv < self.compacted_rv:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.compacted_rv})")
        return [e for e in self.history if e.rv > rv and e.gk == gk]

    def compact(self, upto: int | None = None) -> int:
        target = self.rv if upto is None else min(max(upto, self.compacted_rv), self.rv)
        while self.history and self.history[0].rv <= target:
            self.history.popleft()
        self.compacted_rv = target
        return self.compacted_rv

    # -- reads ----------------------------------------------------------------------------------
    @staticmethod
    def view(rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _key(self, rt: ResourceType, ns: str | None, name: str) -> Key:
        return ((ns or "") if rt.namespaced else "", name)

    def get(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self.objects[rt.gk].get(self._key(rt, ns, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def list_objects(
        self,
        rt: ResourceType,
        ns: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        lreqs, freqs = self.parse_selectors(label_selector, field_selector)
        out = []
        for (ons, _), obj in sorted(self.objects[rt.gk].items()):
            if rt.namespaced and ns and ons != ns:
                continue
            if self.selected(obj, lreqs, freqs):
                out.append(obj)
        return out

    @staticmethod
    def parse_selectors(
        label_selector: str | None, field_selector: str | None
    ) -> tuple[list[sel.Requirement], list[sel.FieldRequirement]]:
        try:
            return sel.parse_label_selector(label_selector), sel.parse_field_selector(field_selector)
        except sel.SelectorError as e:
            raise bad_request(f"unable to parse requirement: {e}") from None

    @staticmethod
    def selected(obj: Obj, lreqs: list[sel.Requirement], freqs: list[sel.FieldRequirement]) -> bool:
        return sel.match_labels(lreqs, _meta(obj).get("labels")) and sel.match_fields(freqs, obj)

    # -- input checks ---------------------------------------------------------------------------
    def _check_body(self, rt: ResourceType, body: Any, strict: bool, name_hint: str) -> Obj:
        if not isinstance(body, dict):
            raise bad_request(
                f"the body of a {rt.kind} must be a JSON object, got {validate.type_name(body)}"
            )
        kind, av = body.get("kind"), body.get("apiVersion")
        if kind is not None and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        if av is not None and av != rt.api_version:
            raise bad_request(
                f"the API version in the data ({av}) does not match the expected API version "
                f"({rt.api_version})"
            )
        md = body.get("metadata", {})
        errs, _ = validate.check(meta_schema(), md, "metadata")
        if errs:
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                + "; ".join(f"{f}: {m}" for f, m in errs)
            )
        bad_labels = [
            (
                f"metadata.labels.{k}",
                f"Invalid value: {v!r}: a valid label must be 63 characters or "
                "less, consist of alphanumerics, '-', '_' or '.' and start and end with an alphanumeric",
            )
            for k, v in (md.get("labels") or {}).items()
            if not sel._KEY.match(k) or not sel._VALUE.match(v) or len(v) > 63
        ]
        if bad_labels:
            raise invalid(rt, str(md.get("name") or name_hint), bad_labels)
        out: Obj = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        if rt.schema is not None:
            schema = dict(rt.schema)
            props = dict(schema.get("properties") or {})
            for k in ("apiVersion", "kind"):
                props.pop(k, None)
            props["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            schema["properties"] = props
            errs, unknown = validate.check(schema, out)
            if errs:
                if rt.crd is None:  # a built-in type: the decoder refuses it
                    raise bad_request(
                        f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                        + "; ".join(f"{f}: {m}" for f, m in errs)
                    )
                raise invalid(rt, str(md.get("name") or name_hint), errs)
            if rt.crd is not None and unknown:
                if strict:
                    raise bad_request(
                        "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
                    )
                out = dict(validate.prune(schema, out))
        return out

    def _check_name(self, rt: ResourceType, name: str) -> None:
        if rt.kind == "Namespace" and rt.group == "":
            ok, what = bool(_LABEL.match(name)) and len(name) <= 63, "RFC 1123 label"
        elif rt.kind == "Service" and rt.group == "":
            ok, what = bool(_DNS1035.match(name)) and len(name) <= 63, "RFC 1035 label"
        else:
            ok, what = bool(_SUBDOMAIN.match(name)) and len(name) <= 253, "RFC 1123 subdomain"
        if not ok:
            raise invalid(
                rt,
                name,
                [
                    (
                        "metadata.name",
                        f"Invalid value: {name!r}: a lowercase {what} must "
                        "consist of lower case alphanumeric characters, '-' or '.'",
                    )
                ],
            )

    def _namespace_for(self, rt: ResourceType, ns: str | None, md: Obj) -> str | None:
        if not rt.namespaced:
            return None
        body_ns = md.get("namespace")
        if ns and body_ns and body_ns != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        ns = ns or body_ns or "default"
        if ("", ns) not in self.objects[("", "namespaces")]:
            nsrt = self.types[("", "v1", "namespaces")]
            raise not_found(nsrt, ns)
        return str(ns)

    # -- writes ---------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def create(
        self, rt: ResourceType, ns: str | None, body: Any, *, strict: bool = False, dry_run: bool = False
    ) -> Obj:
        body = self._check_body(rt, body, strict, "")
        md = dict(body.get("metadata") or {})
        name = md.get("name")
        if not name:
            gen = md.get("generateName")
            if not gen:
                raise invalid(rt, "", [("metadata.name", "Required value: name or generateName is required")])
            name = gen + "".join(_GEN_CHARS[b % len(_GEN_CHARS)] for b in uuid.uuid4().bytes[:5])
        self._check_name(rt, name)
        nsv = self._namespace_for(rt, ns, md)
        key = self._key(rt, nsv, name)
        if key in self.objects[rt.gk]:
            raise ApiError(
                409, "AlreadyExists", f'{rt.describe()} "{name}" already exists', details=_details(rt, name)
            )
        meta: Obj = {
            k: v
            for k, v in md.items()
            if k in ("labels", "annotations", "finalizers", "ownerReferences", "generateName")
            and v is not None
        }
        meta["name"] = name
        if nsv is not None:
            meta["namespace"] = nsv
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now())
        if rt.generation:
            meta["generation"] = 1
        obj: Obj = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}
        obj.update({k: copy.deepcopy(v) for k, v in body.items() if k != "metadata"})
        if rt.status_subresource and not rt.keep_status_on_create:
            obj.pop("status", None)
        self._defaults(rt, obj, None)
        if dry_run:
            return obj
        if rt.gk == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._install_crd(obj)
        meta["resourceVersion"] = self._next_rv()
        self.objects[rt.gk][key] = obj
        self._emit("ADDED", rt.gk, obj, None)
        return obj

    def update(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        strict: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        body = self._check_body(rt, body, strict, name)
        md = body.get("metadata") or {}
        if md.get("name") and md["name"] != name:
            raise bad_request(
                f"the name of the object ({md['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and ns and md.get("namespace") and md["namespace"] != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        old = self.get(rt, ns, name)
        want_rv = md.get("resourceVersion")
        if want_rv and str(want_rv) != _meta(old)["resourceVersion"]:
            raise conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        return self._store_update(rt, old, body, subresource, dry_run)

    def patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        ptype: str,
        patch: Any,
        *,
        subresource: str | None = None,
        strict: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        old = self.get(rt, ns, name)
        base = self.view(rt, old)
        try:
            if ptype == "merge":
                if not isinstance(patch, dict):
                    raise PatchError("a merge patch must be a JSON object")
                new = merge_patch(base, patch)
            elif ptype == "strategic":
                if rt.merge_keys is None:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format - accepted media types "
                        f"include: application/json-patch+json, application/merge-patch+json "
                        f"(strategic merge patch is not supported for {rt.describe()})",
                    )
                new = strategic_merge_patch(base, patch, rt.merge_keys)
            elif ptype == "json":
                new = json_patch(base, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ptype!r}")
        except PatchTestFailed as e:
            raise invalid(rt, name, [("<patch>", str(e))]) from None
        except PatchError as e:
            raise ApiError(
                422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
            ) from None
        if not isinstance(new, dict):
            raise bad_request("the patched object is not a JSON object")
        nmd: Obj = new["metadata"] if isinstance(new.get("metadata"), dict) else {}
        if nmd.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({nmd.get('name')}) does not match the name on the URL ({name})"
            )
        want_rv = nmd.get("resourceVersion")
        if want_rv and str(want_rv) != _meta(old)["resourceVersion"]:
            raise conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        body = self._check_body(rt, new, strict, name)
        return self._store_update(rt, old, body, subresource, dry_run)

    def _store_update(
        self, rt: ResourceType, old: Obj, body: Obj, subresource: str | None, dry_run: bool
    ) -> Obj:
        ometa = _meta(old)
        name = ometa["name"]
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
            if rt.crd is None:
                # built-in types (as kube-apiserver's status strategies): a status write keeps the spec
                # but applies labels/annotations/finalizers/ownerReferences; custom resources keep them
                bmd = body.get("metadata") or {}
                for k in _USER_META:
                    if bmd.get(k) is not None:
                        new["metadata"][k] = copy.deepcopy(bmd[k])
                    else:
                        new["metadata"].pop(k, None)
            if rt.group == "" and rt.kind == "Service":
                _check_ingress(rt, new)
        else:
            md = body.get("metadata") or {}
            new = {"apiVersion": rt.api_version, "kind": rt.kind}
            new.update({k: copy.deepcopy(v) for k, v in body.items() if k != "metadata"})
            meta = {
                k: copy.deepcopy(v)
                for k, v in md.items()
                if k in ("labels", "annotations", "finalizers", "ownerReferences", "generateName")
                and v is not None
            }
            for k in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ):
                if k in ometa:
                    meta[k] = ometa[k]
            new["metadata"] = meta
            if rt.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            self._defaults(rt, new, old)
            counts = rt.crd is not None and not rt.status_subresource
            changed = _spec_part(new, counts) != _spec_part(old, counts)
            if rt.gk == ("discovery.k8s.io", "endpointslices"):  # its labels count as content too
                changed = changed or meta.get("labels") != ometa.get("labels")
            if rt.generation and changed:
                meta["generation"] = int(ometa.get("generation", 1)) + 1
        if rt.group == "" and rt.kind == "Service":
            _default_ingress(new)
        if _strip_rv(new) == _strip_rv(old):
            return old  # a no-op write does not change the resourceVersion
        if dry_run:
            return new
        gk = rt.gk
        key = self._key(rt, ometa.get("namespace"), name)
        if gk == ("apiextensions.k8s.io", "customresourcedefinitions") and subresource is None:
            self._install_crd(new)
        new["metadata"]["resourceVersion"] = self._next_rv()
        if ometa.get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.objects[gk][key]
            self._emit("DELETED", gk, new, old)
            if gk == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._uninstall_crd(name)
            return new
        self.objects[gk][key] = new
        self._emit("MODIFIED", gk, new, old)
        return new

    def _remove(self, gk: GK, key: Key) -> Obj:
        old = self.objects[gk].pop(key)
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", gk, gone, old)
        return gone

    def delete(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        preconditions: Obj | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        old = self.get(rt, ns, name)
        ometa = _meta(old)
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != ometa.get("uid"):
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {ometa.get('uid')}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != ometa.get("resourceVersion"):
            raise conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{ometa.get('resourceVersion')}",
            )
        is_ns = rt.gk == ("", "namespaces")
        if is_ns and name in _UNDELETABLE:
            raise ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                details=_details(rt, name),
            )
        if dry_run:
            return old
        key = self._key(rt, ns, name)
        if ometa.get("finalizers") and not is_ns:
            if ometa.get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now()
            if int(ometa.get("generation") or 0) > 0:
                new["metadata"]["generation"] = int(ometa["generation"]) + 1
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[rt.gk][key] = new
            self._emit("MODIFIED", rt.gk, new, old)
            return new
        if is_ns:
            for gk, objs in self.objects.items():
                nsd = self.rt_for_gk(gk)
                if nsd is not None and nsd.namespaced:
                    for k in [k for k in objs if k[0] == name]:
                        self._remove(gk, k)
        gone = self._remove(rt.gk, key)
        if rt.gk == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._uninstall_crd(name)
        return gone

    def ensure_default_namespaces(self) -> None:
        """The system namespaces and the ``default/kubernetes`` Service, as a fresh cluster has them."""
        rt = self.types[("", "v1", "namespaces")]
        for ns in DEFAULT_NAMESPACES:
            if ("", ns) not in self.objects[rt.gk]:
                self.create(rt, None, {"metadata": {"name": ns}})
        svc = self.types[("", "v1", "services")]
        if ("default", "kubernetes") not in self.objects[svc.gk]:
            self.create(svc, "default", {
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "sessionAffinity": "None",
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
            })

    def reset(self, keep_crds: bool = True) -> int:
        """Delete every user object (keeping CRDs unless told otherwise); returns how many were deleted."""
        n = 0
        crd_gk = ("apiextensions.k8s.io", "customresourcedefinitions")
        for gk in list(self.objects):
            if gk in (("", "namespaces"), crd_gk):
                continue
            for key in list(self.objects[gk]):
                if gk == ("", "services") and key == ("default", "kubernetes"):
                    continue
                self._remove(gk, key)
                n += 1
        for key in [k for k in self.objects[("", "namespaces")] if k[1] not in DEFAULT_NAMESPACES]:
            self._remove(("", "namespaces"), key)
            n += 1
        if not keep_crds:
            for key in list(self.objects[crd_gk]):
                self._remove(crd_gk, key)
                self._uninstall_crd(key[1])
                n += 1
        self.ensure_default_namespaces()
        return n

    # -- defaults -------------------------------------------------------------------------------
    def _defaults(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if rt.group == "" and rt.kind == "Service":
            self._service_defaults(rt, obj, old)
        elif rt.group == "" and rt.kind == "Namespace":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        elif rt.gk == ("apiextensions.k8s.io", "customresourcedefinitions") and old is None:
            spec: Obj = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
            t = now()
            obj["status"] = {
                "acceptedNames": copy.deepcopy(spec.get("names") or {}),
                "storedVersions": [
                    v["name"] for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")
                ],
                "conditions": [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "message": "no conflicts found",
                        "lastTransitionTime": t,
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                        "lastTransitionTime": t,
                    },
                ],
            }

    def _service_defaults(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        name = obj["metadata"]["name"]
        ospec = (old or {}).get("spec") or {}
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        ports = spec.get("ports") or []
        if spec["type"] != "ExternalName" and not ports:
            raise invalid(rt, name, [("spec.ports", "Required value")])
        seen: set[tuple[Any, Any]] = set()
        oldports = {
            (p.get("port"), p.get("protocol")): p for p in ospec.get("ports") or [] if isinstance(p, dict)
        }
        for i, p in enumerate(ports):
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p["port"])
            if (p["port"], p["protocol"]) in seen:
                raise invalid(
                    rt, name, [(f"spec.ports[{i}]", f"Duplicate value: {p['port']}/{p['protocol']}")]
                )
            seen.add((p["port"], p["protocol"]))
            if len(ports) > 1 and not p.get("name"):
                raise invalid(rt, name, [(f"spec.ports[{i}].name", "Required value")])
            if spec["type"] in ("NodePort", "LoadBalancer") and not p.get("nodePort"):
                prev = oldports.get((p["port"], p["protocol"]), {}).get("nodePort")
                if prev:
                    p["nodePort"] = prev
                elif spec["type"] == "NodePort" or spec.get("allocateLoadBalancerNodePorts", True):
                    p["nodePort"] = self._alloc_port()
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        if spec["type"] != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
            if not spec.get("clusterIP"):
                spec["clusterIP"] = ospec.get("clusterIP") or self._alloc_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ospec.get("ipFamilies") or ["IPv4"])
            spec.setdefault("ipFamilyPolicy", ospec.get("ipFamilyPolicy") or "SingleStack")
        obj.setdefault("status", {"loadBalancer": {}})

    def _alloc_ip(self) -> str:
        self._next_ip += 1
        return str(ipaddress.IPv4Address("10.96.0.0") + self._next_ip)

    def _alloc_port(self) -> int:
        self._next_port = 30000 + (self._next_port - 30000 + 1) % 2768
        return self._next_port

    # -- persistence ----------------------------------------------------------------------------
    def dump(self, clean: bool) -> Obj:
        objs: dict[str, list[Obj]] = {}
        for (g, p), items in self.objects.items():
            if items:
                objs[f"{g}|{p}"] = list(items.values())
        return {
            "version": 1,
            "rv": self.rv,
            "clean": clean,
            "next_ip": self._next_ip,
            "next_port": self._next_port,
            "objects": objs,
        }

    def load(self, state: Obj, unclean_gap: int = 1000) -> None:
        """Replace the contents with a dump. After an unclean stop the counter jumps by ``unclean_gap`` so
        no resourceVersion handed out before the crash is reused; history starts empty (older watches:
        410)."""
        self.objects = {gk: {} for gk in self.objects}
        self.types = {k: rt for k, rt in self.types.items() if rt.crd is None}
        raw: dict[str, list[Obj]] = state.get("objects") or {}
        crd_key = "apiextensions.k8s.io|customresourcedefinitions"
        for crd in raw.get(crd_key, []):
            try:
                for rt in crd_types(crd):
                    self._register(rt)
            except CRDError:
                continue
        for gkey, items in raw.items():
            g, p = gkey.split("|", 1)
            store = self.objects.setdefault((g, p), {})
            for o in items:
                md = _meta(o)
                store[(str(md.get("namespace") or ""), str(md.get("name")))] = o
        self.rv = int(state.get("rv", 0)) + (0 if state.get("clean") else unclean_gap)
        self._next_ip = int(state.get("next_ip", self._next_ip))
        self._next_port = int(state.get("next_port", self._next_port))
        self.history.clear()
        self.compacted_rv = self.rv
        self.ensure_default_namespaces()

    def count(self) -> dict[str, int]:
        return {f"{p}.{g}" if g else p: len(v) for (g, p), v in self.objects.items() if v}

    def all_types(self) -> Iterable[ResourceType]:
        return self.types.values()
