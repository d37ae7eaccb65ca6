"""The fault matrix's accounting: a pytest plugin that sums the matrix up when the session ends.

Each test marked ``faults`` is a cell: the plugin counts it passed, failed, skipped (an impossible
cell, with its reason) or a known bug (xfail). A cell that measures the four invariants records
them with ``record_cell(request.node, CellRecord(...))``: the record travels with the test's
report (its ``user_properties``), so under pytest-xdist the controller sums the cells of every
worker. At the end of the session the terminal
summary lists the impossible cells and the known bugs, then the one line::

    fault matrix: 97 passed, 0 failed; leaked instances 0, torn checkpoints 0,
    budget overruns 0, duplicate rentals 0

(one line, wrapped here). If an invariant total is not zero the run fails (exit status 1) even
when every cell passed. The verdict is taken in ``pytest_sessionfinish``, after every test, so
it does not depend on the order the tests ran in, and a run of one file is judged on the cells
it ran. When no cell ran, the plugin prints nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

MARKER = "faults"
"""Tests with this marker are the matrix's cells."""

PROPERTY = "vastkit-fault-matrix"
"""The ``user_properties`` name a cell's :class:`CellRecord` travels under."""


@dataclass
class CellRecord:
    """The invariants measured at the end of one cell."""

    cell: str
    leaked: int = 0
    torn: int = 0
    overruns: int = 0
    duplicates: int = 0


@dataclass
class Matrix:
    """Everything the fault matrix measured in this session."""

    records: dict[str, CellRecord] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    known_bugs: dict[str, str] = field(default_factory=dict)

    def record(self, nodeid: str, record: CellRecord) -> None:
        """Keep ``record`` for the test ``nodeid``."""
        self.records[nodeid] = record

    def totals(self) -> dict[str, int]:
        """The four invariant totals over every cell that is not a known (xfail) bug."""
        kept = [r for n, r in self.records.items() if n not in self.known_bugs]
        return {
            "leaked instances": sum(r.leaked for r in kept),
            "torn checkpoints": sum(r.torn for r in kept),
            "budget overruns": sum(r.overruns for r in kept),
            "duplicate rentals": sum(r.duplicates for r in kept),
        }

    def line(self) -> str:
        """The one summary line."""
        passed = sum(1 for o in self.outcomes.values() if o == "passed")
        failed = sum(1 for o in self.outcomes.values() if o == "failed")
        totals = ", ".join(f"{k} {v}" for k, v in self.totals().items())
        return f"fault matrix: {passed} passed, {failed} failed; {totals}"

    def clean(self) -> bool:
        """Whether every invariant total is zero."""
        return not any(self.totals().values())

    def empty(self) -> bool:
        """Whether no cell ran (nothing to report)."""
        return not (self.outcomes or self.skipped or self.known_bugs or self.records)

    def count(self, report: pytest.TestReport) -> None:
        """Count one phase's report of a cell (and keep the record it carries, if any)."""
        nodeid = report.nodeid
        for name, value in report.user_properties:
            if name == PROPERTY and isinstance(value, dict):
                self.record(nodeid, CellRecord(**value))
        if report.skipped:
            if hasattr(report, "wasxfail"):
                self.known_bugs[nodeid] = str(report.wasxfail)
                self.outcomes.pop(nodeid, None)
                return
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped[nodeid] = str(reason).removeprefix("Skipped: ")
            return
        if report.failed:  # in any phase; a strict xpass fails too
            self.outcomes[nodeid] = "failed"
        elif report.when == "call" and self.outcomes.get(nodeid) != "failed":
            if hasattr(report, "wasxfail"):  # an xfail cell that passed (non-strict): count it
                self.known_bugs.pop(nodeid, None)
            self.outcomes[nodeid] = "passed"


MATRIX_KEY = pytest.StashKey[Matrix]()


def record_cell(item: pytest.Item, record: CellRecord) -> None:
    """Record the invariants one cell measured; they reach the session's matrix with its report."""
    item.user_properties.append((PROPERTY, asdict(record)))


def matrix_of(config: pytest.Config) -> Matrix:
    """The session's :class:`Matrix` (created on first use)."""
    if MATRIX_KEY not in config.stash:
        config.stash[MATRIX_KEY] = Matrix()
    return config.stash[MATRIX_KEY]


class FaultMatrixPlugin:
    """Counts the cells' reports and gives the verdict (see the module docstring)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Count each cell as passed, failed, skipped (with its reason) or a known bug."""
        if MARKER in report.keywords:
            matrix_of(self.config).count(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Fail the run when an invariant total is not zero, though every cell passed."""
        if not matrix_of(self.config).clean() and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the impossible cells, the known bugs, the verdict and the one summary line."""
        matrix = matrix_of(self.config)
        if matrix.empty():
            return
        write = terminalreporter.write_line
        terminalreporter.section("fault matrix")
        for nodeid, reason in sorted(matrix.skipped.items()):
            write(f"impossible cell {nodeid.split('::')[-1]}: {reason}")
        for nodeid, reason in sorted(matrix.known_bugs.items()):
            write(f"known bug (xfail) {nodeid.split('::')[-1]}: {reason}")
        if not matrix.clean():
            dirty = sorted(
                n for n, r in matrix.records.items() if _dirty(r) and n not in matrix.known_bugs
            )
            write(f"FAILED: an invariant total is not zero; cells: {', '.join(dirty)}", red=True)
        write(matrix.line())


def _dirty(record: CellRecord) -> bool:
    return bool(record.leaked or record.torn or record.overruns or record.duplicates)


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin for this session."""
    config.pluginmanager.register(FaultMatrixPlugin(config), "vastkit-fault-matrix")


__all__ = ["MARKER", "CellRecord", "FaultMatrixPlugin", "Matrix", "matrix_of", "record_cell"]
