"""The runs table: one row per job run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from vastkit.ledger._db import Row, Tables, equal
from vastkit.ledger._fence import Fence, check_fence
from vastkit.ledger._records import RunRecord, from_row

__all__ = ["RunsTable"]

_RUN_FIELDS: Final[frozenset[str]] = frozenset(
    {"name", "project", "team", "profile", "status", "ended_at", "metadata"}
)


def _run(row: Row) -> RunRecord:
    return from_row(row, RunRecord, json_columns=("metadata",))


class RunsTable(Tables):
    """Runs: record, update, end, read."""

    def record_run(
        self,
        run_id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        team: str | None = None,
        profile: str | None = None,
        status: str = "pending",
        metadata: Mapping[str, Any] | None = None,
        at: float | None = None,
        fence: Fence | None = None,
    ) -> RunRecord:
        """Record a new run, or return it unchanged if ``run_id`` is already recorded.

        Args:
            run_id: The run id (non-empty).
            name: The job's name.
            project: Its project (budgets and reports group by it).
            team: Its team.
            profile: The profile name.
            status: The initial status.
            metadata: Extra JSON-serialisable facts.
            at: The time; default now.
            fence: A queue driver's fencing token: write only while it holds the job.

        Returns:
            The run as stored.

        Raises:
            ValueError: An empty ``run_id``.
            LedgerError: The write failed.
        """
        if not run_id:
            raise ValueError("run_id must not be empty")
        meta = json.dumps(dict(metadata or {}), sort_keys=True)
        with self._db.write() as tx:
            check_fence(tx, fence)
            tx.execute(
                "INSERT INTO runs (run_id, name, project, team, profile, status, created_at, "
                "metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (run_id, name, project, team, profile, status, self._now(at), meta),
            )
            row = tx.one("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        assert row is not None
        return _run(row)

    def update_run(self, run_id: str, *, fence: Fence | None = None, **fields: Any) -> None:
        """Change fields of a run (``status``, ``ended_at``, ``metadata``, ...).

        Raises:
            ValueError: An unknown field, or no such run.
            LedgerError: The write failed.
        """
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown run field(s): {', '.join(sorted(unknown))}")
        if "metadata" in fields:
            fields["metadata"] = json.dumps(dict(fields["metadata"] or {}), sort_keys=True)
        self._update(
            "runs",
            "run_id",
            run_id,
            fields,
            missing=f"no run '{run_id}' in the ledger",
            fence=fence,
        )

    def end_run(
        self, run_id: str, status: str, *, at: float | None = None, fence: Fence | None = None
    ) -> None:
        """Mark a run ended with ``status`` (``succeeded``, ``failed``, ``budget_exceeded``...).

        Raises:
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
        """
        self.update_run(run_id, fence=fence, status=status, ended_at=self._now(at))

    def get_run(self, run_id: str) -> RunRecord | None:
        """Return a run, or None."""
        rows = self._db.read("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def runs(
        self, *, project: str | None = None, team: str | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """Runs matching every given filter, oldest first."""
        clause, params = equal(project=project, team=team, status=status)
        rows = self._db.read(f"SELECT * FROM runs {clause} ORDER BY created_at, run_id", params)
        return [_run(row) for row in rows]
