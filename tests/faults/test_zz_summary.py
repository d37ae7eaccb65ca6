"""The fault matrix's verdict, run after every other module of tests/faults.

The one summary line (``fault matrix: N passed, M failed; leaked instances 0, ...``) is printed
by the terminal-summary hook of tests/faults/conftest.py; this test fails the run when any
invariant total is not zero.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import Matrix

pytestmark = pytest.mark.faults


def test_every_invariant_total_is_zero(matrix: Matrix) -> None:
    if not matrix.records:
        pytest.skip("no cell of the fault matrix ran in this session")
    totals = matrix.totals()
    assert totals == {
        "leaked instances": 0,
        "torn checkpoints": 0,
        "budget overruns": 0,
        "duplicate rentals": 0,
    }, matrix.line()
    failed = sorted(n for n, o in matrix.outcomes.items() if o == "failed")
    assert not failed, failed
