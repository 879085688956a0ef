"""l2lb against MetalLB: every case of ``cases.py`` through ``l2lb allocate``'s code path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.harness import Case, check_case, ids
from tests.conformance.metallb.cases import CASES


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_metallb_case(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


def test_enough_cases() -> None:
    assert len(CASES) > 40
    assert all(c.source.split()[0].endswith("_test.go") for c in CASES)
