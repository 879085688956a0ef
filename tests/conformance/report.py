"""How many conformance cases agree with each anchor: ``python -m tests.conformance.report``.

Runs every case through ``l2lb allocate``'s code path (whatever ``l2lb`` is importable, so it can
measure an older checkout too: ``PYTHONPATH=<old>/src:. python -m tests.conformance.report``) and
prints, per anchor, the cases, how many agree with the anchor, the deliberate differences and any
case where l2lb does neither what the anchor does nor its documented difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.conformance.harness import Case, mismatches, run_case


def _suites() -> dict[str, list[Case]]:
    from tests.conformance.cilium.cases import CASES as CILIUM
    from tests.conformance.metallb.cases import CASES as METALLB

    return {"cilium": CILIUM, "metallb": METALLB}


def measure(cases: list[Case]) -> dict[str, object]:
    agree, differ, broken = [], [], []
    with tempfile.TemporaryDirectory(prefix="l2lb-conformance-") as tmp:
        for i, case in enumerate(cases):
            try:
                report = run_case(case, Path(tmp) / str(i))
            except Exception as e:  # an older l2lb may crash on a case: that is a disagreement
                broken.append({"case": case.name, "source": case.source, "problems": [f"crashed: {e!r}"]})
                continue
            vs_anchor = mismatches(case, report, "anchor")
            if not vs_anchor:
                agree.append(case.name)
                continue
            vs_l2lb = mismatches(case, report, "l2lb")
            if case.deliberate and not vs_l2lb:
                differ.append({"case": case.name, "source": case.source, "why": case.differs})
            else:
                broken.append({"case": case.name, "source": case.source, "problems": vs_anchor})
    return {"cases": len(cases), "agree": len(agree), "deliberate": differ, "diverge": broken,
            "assertions": sum(len(c.want) + len(c.pools) for c in cases)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.report", description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--anchor", choices=["cilium", "metallb"], action="append")
    args = ap.parse_args(argv)
    suites = _suites()
    out = {name: measure(cases) for name, cases in suites.items() if not args.anchor or name in args.anchor}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for name, r in out.items():
        print(f"{name}: {r['cases']} cases ({r['assertions']} expectations), {r['agree']} agree, "
              f"{len(r['deliberate'])} deliberate differences, {len(r['diverge'])} diverge")  # type: ignore[arg-type]
        for d in r["deliberate"]:  # type: ignore[attr-defined]
            print(f"  differs  {d['case']}: {d['why']}")
        for d in r["diverge"]:  # type: ignore[attr-defined]
            print(f"  DIVERGES {d['case']} ({d['source']}): {'; '.join(d['problems'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
