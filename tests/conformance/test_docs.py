"""docs/install.md states the conformance tally and lists every deliberate difference's subject."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conformance.cilium.cases import CASES as CILIUM
from tests.conformance.metallb.cases import CASES as METALLB

DOC = Path(__file__).resolve().parents[2] / "docs" / "install.md"


def test_tally_in_the_docs_matches_the_suite() -> None:
    # every case passes only when l2lb does what the anchor does, or (deliberate) documents why not
    text = " ".join(DOC.read_text().split())
    for name, cases in (("Cilium", CILIUM), ("MetalLB", METALLB)):
        agree = sum(not c.deliberate for c in cases)
        m = re.search(rf"{name} (\d+) cases, (\d+) agree", text)
        assert m is not None, f"docs/install.md does not state the {name} tally"
        assert (int(m.group(1)), int(m.group(2))) == (len(cases), agree), (
            f"docs/install.md says {m.group(0)!r}; the suite has {len(cases)} cases, {agree} agree")


def test_every_deliberate_difference_has_a_row() -> None:
    table = DOC.read_text().split("### Differences from MetalLB / Cilium", 1)[1]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| where")]
    assert len(rows) >= 10
    for subject in ("defaultLBServiceIPAM", "namespaceSelectors", "pool size", "clusterIPs",
                    "sharing-permit-different-pods"):
        assert any(subject in r for r in rows), subject
    assert sum(c.deliberate for c in CILIUM + METALLB) == 5  # a new one needs its row (and this count)
