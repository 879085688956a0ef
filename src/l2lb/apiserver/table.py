"""``kubectl get`` tables (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``).

Built-in kinds get kubectl's usual columns (Services show EXTERNAL-IP); CRDs get their
``additionalPrinterColumns`` (a JSONPath subset: ``.a.b``, ``[n]``, ``[*]``, ``[?(@.k=="v")]``).
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Callable
from typing import Any

from l2lb.apiserver.types import ResourceType

__all__ = ["TABLE_CONTENT_TYPE", "age", "jsonpath", "table", "wants_table"]

Obj = dict[str, Any]
TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
_TOKEN = re.compile(r"\.([A-Za-z0-9_\-/]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.\-/]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]")


def wants_table(accept: str) -> bool:
    first = accept.split(",", 1)[0]
    return "as=Table" in first


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Values selected by a simple JSONPath (``{`` ``}`` optional); unknown syntax selects nothing."""
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1]
    cur: list[Any] = [obj]
    pos = 0
    while pos < len(p):
        m = _TOKEN.match(p, pos)
        if m is None:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for c in cur:
            if m.group(1) is not None:
                if isinstance(c, dict) and m.group(1) in c:
                    nxt.append(c[m.group(1)])
            elif m.group(2) is not None:
                if isinstance(c, list):
                    if m.group(2) == "*":
                        nxt.extend(c)
                    elif int(m.group(2)) < len(c):
                        nxt.append(c[int(m.group(2))])
            elif isinstance(c, list):
                for el in c:
                    v: Any = el
                    for part in m.group(3).split("."):
                        v = v.get(part) if isinstance(v, dict) else None
                    if v is not None and str(v) == m.group(4):
                        nxt.append(el)
        cur = nxt
    return cur


def age(ts: Any, now: float | None = None) -> str:
    if not isinstance(ts, str) or not ts:
        return "<unknown>"
    try:
        t = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return "<invalid>"
    s = max(0, int((now if now is not None else time.time()) - t))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _cell(v: list[Any], typ: str) -> Any:
    if not v:
        return None
    if typ == "date":
        return age(v[0])
    if len(v) > 1:
        return ",".join(json.dumps(x) if isinstance(x, (dict, list)) else str(x) for x in v)
    x = v[0]
    if typ in ("integer", "number", "boolean"):
        return x
    return json.dumps(x) if isinstance(x, (dict, list)) else str(x)


def _svc_ports(o: Obj) -> str:
    ports = (o.get("spec") or {}).get("ports") or []
    out = []
    for p in ports:
        if isinstance(p, dict):
            s = str(p.get("port"))
            if p.get("nodePort"):
                s += f":{p['nodePort']}"
            out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _svc_external(o: Obj) -> str:
    spec = o.get("spec") or {}
    ing = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips = [str(i.get("ip") or i.get("hostname")) for i in ing if isinstance(i, dict)]
    ips += [str(x) for x in spec.get("externalIPs") or []]
    if ips:
        return ",".join(ips)
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


def _node_status(o: Obj) -> str:
    for c in (o.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return "Ready" if c.get("status") == "True" else "NotReady"
    return "Unknown"


Column = tuple[str, str, Callable[[Obj], Any]]
_BUILTIN: dict[tuple[str, str], list[Column]] = {
    ("", "Service"): [
        ("Type", "string", lambda o: (o.get("spec") or {}).get("type", "")),
        ("Cluster-IP", "string", lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")),
        ("External-IP", "string", _svc_external),
        ("Port(s)", "string", _svc_ports),
    ],
    ("", "Node"): [("Status", "string", _node_status)],
    ("", "Namespace"): [("Status", "string", lambda o: (o.get("status") or {}).get("phase", ""))],
    ("coordination.k8s.io", "Lease"): [
        ("Holder", "string", lambda o: (o.get("spec") or {}).get("holderIdentity") or ""),
    ],
    ("", "Event"): [
        ("Type", "string", lambda o: o.get("type", "")),
        ("Reason", "string", lambda o: o.get("reason", "")),
        ("Object", "string", lambda o: "{}/{}".format(
            str((o.get("involvedObject") or {}).get("kind", "")).lower(),
            (o.get("involvedObject") or {}).get("name", ""))),
        ("Message", "string", lambda o: o.get("message", "")),
    ],
}


def _crd_column(path: str, typ: str) -> Callable[[Obj], Any]:
    def get(o: Obj) -> Any:
        return _cell(jsonpath(o, path), typ)

    return get


def table(rt: ResourceType, objs: list[Obj], rv: str, include_object: str = "Metadata") -> Obj:
    cols: list[Column]
    if rt.printer_columns:
        cols = [(name, typ, _crd_column(path, typ)) for name, typ, path in rt.printer_columns]
    else:
        cols = list(_BUILTIN.get((rt.group, rt.kind), []))
    has_age = any(c[0].lower() == "age" for c in cols)
    defs = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    defs += [{"name": n, "type": t, "format": "", "description": n, "priority": 0} for n, t, _ in cols]
    if not has_age:
        defs.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
    rows = []
    for o in objs:
        md = o.get("metadata") or {}
        cells: list[Any] = [md.get("name", "")]
        for _, _, fn in cols:
            try:
                cells.append(fn(o))
            except (TypeError, ValueError, AttributeError):
                cells.append("<error>")
        if not has_age:
            cells.append(age(md.get("creationTimestamp")))
        if include_object == "Object":
            obj: Obj | None = o
        elif include_object == "None":
            obj = None
        else:
            obj = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": md}
        row: Obj = {"cells": cells}
        if obj is not None:
            row["object"] = obj
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": defs, "rows": rows}
