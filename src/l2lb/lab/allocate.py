"""``l2lb allocate``: offline LB-IPAM. Reads pools and Services from YAML files or directories,
allocates like the allocator service would (existing status IPs are adopted first) and prints a
table of Services and one of pools, or JSON with ``--json``. Each Service gets what the anchor whose
pool serves it would give it (MetalLB pool: MetalLB's rules; Cilium or l2lb pool: Cilium >= 1.16's).

The JSON is stable (scripts and the conformance suite drive it): ``services`` (service, ips, pools,
reason, message, invalid_existing), ``pools`` (name, kind, blocks, total, used, available, disabled,
conflict), ``pool_events``, ``errors``; keys may be added, never renamed or removed.

Exit status: 0 every Service satisfied; 1 some Service unsatisfied or some resource invalid;
2 usage error or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from l2lb.core.allocator import Allocator
from l2lb.core.models import AllocationResult, ParseError
from l2lb.core.parse import (
    CILIUM_BGP_CLASS,
    CILIUM_CLASSES,
    CILIUM_L2_CLASS,
    DEFAULT_CLASSES,
    is_pool,
    is_service,
    parse_pool,
    parse_service,
    status_ips,
)
from l2lb.core.view import size_text

# libyaml's safe loader when PyYAML has it (ten times faster on big manifests), the pure one otherwise
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(x for x in path.rglob("*") if x.suffix in (".yaml", ".yml", ".json") and x.is_file()))
        elif path.is_file() or p == "-":
            out.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return out


def _docs(path: Path) -> list[tuple[str, Any]]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    out: list[tuple[str, Any]] = []
    for i, d in enumerate(yaml.load_all(text, Loader=_LOADER)):
        if d is None:
            continue
        if isinstance(d, dict) and d.get("kind", "").endswith("List") and isinstance(d.get("items"), list):
            out.extend((f"{path}#{i}.items[{j}]", it) for j, it in enumerate(d["items"]))
        else:
            out.append((f"{path}#{i}", d))
    return out


def run(paths: list[str], *, cilium_compat: bool = False) -> dict[str, Any]:
    """Allocate for everything in ``paths``; returns the report (what --json prints)."""
    errors: list[dict[str, str]] = []
    pools = []
    services: list[tuple[Any, list[str]]] = []
    ns_labels: dict[str, dict[str, str]] = {}
    raw_services: list[tuple[str, Any]] = []
    for f in _files(paths):
        for where, d in _docs(f):
            if not isinstance(d, dict):
                continue
            if d.get("kind") == "Namespace" and isinstance(d.get("metadata"), dict):
                labels = d["metadata"].get("labels") or {}
                ns_labels[str(d["metadata"].get("name"))] = {str(k): str(v) for k, v in labels.items()}
            elif is_pool(d):
                try:
                    pools.append(parse_pool(d))
                except ParseError as e:
                    name = (d.get("metadata") or {}).get("name", "?")
                    errors.append({"where": where, "object": f"{d.get('kind')}/{name}", "error": str(e)})
            elif is_service(d):
                raw_services.append((where, d))
    classes = DEFAULT_CLASSES | CILIUM_CLASSES if cilium_compat else DEFAULT_CLASSES
    for where, d in raw_services:
        ns = (d.get("metadata") or {}).get("namespace") or "default"
        try:
            req = parse_service(d, classes=classes, namespace_labels=ns_labels.get(ns, {}))
        except ParseError as e:
            errors.append({"where": where, "object": "Service", "error": str(e)})
            continue
        services.append((req, status_ips(d)))
    alloc = Allocator()
    pool_events = []
    for p in pools:
        for ev in alloc.upsert_pool(p).events:
            if ev.kind not in ("added", "updated"):
                pool_events.append({"pool": ev.pool, "event": ev.kind, "message": ev.message})
    results = alloc.restore(services)
    usage = alloc.pool_usage()
    return {
        "services": [_res(r) for r in results],
        "pools": [
            {"name": p.name, "kind": p.kind, "blocks": [b.text for b in p.blocks], "total": usage[p.name].total,
             "used": usage[p.name].used, "available": usage[p.name].available,
             "disabled": usage[p.name].disabled, "conflict": usage[p.name].conflict_message}
            for p in sorted(pools, key=lambda p: p.name)
        ],
        "pool_events": pool_events,
        "errors": errors,
    }


def _res(r: AllocationResult) -> dict[str, Any]:
    return {"service": r.key, "ips": list(r.ips), "pools": dict(r.pools), "reason": r.reason.value,
            "message": r.message, "invalid_existing": list(r.invalid_existing)}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _emit(text: str) -> None:
    """Write to stdout; a reader that went away (``l2lb allocate DIR | head``) ends the output quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # nothing more is wanted: point stdout at /dev/null so the interpreter's final flush is silent
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="l2lb allocate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="YAML/JSON files or directories (- for stdin)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--cilium-compat", action="store_true",
                    help=f"also handle Services of loadBalancerClass {CILIUM_L2_CLASS} and {CILIUM_BGP_CLASS} "
                         "(the latter get IPs, the allocator service never announces them)")
    args = ap.parse_args(argv)
    try:
        report = run(args.paths, cilium_compat=args.cilium_compat)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        print(f"l2lb allocate: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = json.dumps(report, indent=2) + "\n"
        err = ""
    else:
        rows = [["SERVICE", "IPS", "POOL", "REASON", "MESSAGE"]]
        for s in report["services"]:
            msg = s["message"]
            if s["invalid_existing"]:
                msg = (msg + "; " if msg else "") + "not kept: " + "; ".join(s["invalid_existing"])
            rows.append([s["service"], ",".join(s["ips"]) or "<none>",
                         ",".join(sorted(set(s["pools"].values()))) or "-", s["reason"], msg])
        prow = [["POOL", "KIND", "BLOCKS", "TOTAL", "USED", "AVAILABLE", "STATE"]]
        for p in report["pools"]:
            state = "conflict: " + p["conflict"] if p["conflict"] else ("disabled" if p["disabled"] else "ok")
            prow.append([p["name"], p["kind"], ",".join(p["blocks"]), size_text(p["total"]), size_text(p["used"]),
                         size_text(p["available"]), state])
        out = _table(rows) + "\n\n" + _table(prow) + "\n"
        err = "".join(f"error: {e['where']}: {e['object']}: {e['error']}\n" for e in report["errors"])
    _emit(out)
    if err:
        sys.stderr.write(err)
    bad = report["errors"] or any(s["reason"] not in ("satisfied", "not_handled") for s in report["services"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
