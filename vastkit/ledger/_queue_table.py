"""The queue table of :class:`vastkit.JobQueue`: one row per job, with the lease of its driver.

A lease is a random token, an owner (``host:pid``) and an expiry. Every change a driver makes to
its job is a conditional ``UPDATE`` that names the token, so a driver that lost its lease (it
stalled past the expiry and another process claimed the job) changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from vastkit.errors import LedgerError
from vastkit.ledger._db import Row, RowConflict, Tables, Transaction, equal
from vastkit.ledger._fence import HELD_QUERY, Fence
from vastkit.ledger._records import QUEUE_TERMINAL, QueueEntry, from_row

__all__ = ["QueueTable"]

_CLAIMABLE: Final = (
    "(status = 'queued' OR (status = 'running' AND (lease_expires_at IS NULL "
    "OR lease_expires_at < ?)))"
)
"""Jobs nobody drives: queued, or running under a lease that expired (``?``: now)."""


def _entry(row: Row) -> QueueEntry:
    return from_row(row, QueueEntry, json_columns=("spec", "result"))


def _at_cap(tx: Transaction, project: str, cap: int, now: float) -> bool:
    held = tx.one(
        "SELECT COUNT(*) AS held FROM queue_jobs WHERE project = ? AND status = 'running' "
        "AND lease_expires_at >= ?",
        (project, now),
    )
    return held is not None and int(held["held"]) >= cap


class QueueTable(Tables):
    """Queue jobs: enqueue, claim under a lease, renew it, finish, cancel, read."""

    def enqueue(
        self,
        job_id: str,
        *,
        name: str,
        spec: Mapping[str, Any],
        project: str | None = None,
        team: str | None = None,
        priority: int = 0,
        at: float | None = None,
    ) -> QueueEntry:
        """Add a job to the queue with status ``queued``.

        Raises:
            LedgerError: The job id is taken, or the write failed.
        """
        try:
            with self._db.write() as tx:
                tx.execute(
                    "INSERT INTO queue_jobs (job_id, name, project, team, priority, spec, "
                    "submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        name,
                        project,
                        team,
                        int(priority),
                        json.dumps(dict(spec)),
                        self._now(at),
                    ),
                )
                row = tx.one("SELECT * FROM queue_jobs WHERE job_id = ?", (job_id,))
        except RowConflict as exc:
            raise LedgerError(f"cannot queue job '{job_id}': {exc}") from exc
        assert row is not None
        return _entry(row)

    def queue_entry(self, job_id: str) -> QueueEntry | None:
        """One queue row, or None."""
        rows = self._db.read("SELECT * FROM queue_jobs WHERE job_id = ?", (job_id,))
        return _entry(rows[0]) if rows else None

    def queue_entries(self, status: str | None = None) -> list[QueueEntry]:
        """Queue rows (with ``status``), in submission order."""
        clause, params = equal(status=status)
        rows = self._db.read(f"SELECT * FROM queue_jobs {clause} ORDER BY seq", params)
        return [_entry(row) for row in rows]

    def fence_holds(self, fence: Fence) -> bool:
        """Whether ``fence`` still holds its job (no other driver took it over since)."""
        return bool(self._db.read(HELD_QUERY, (fence.job_id, fence.token, fence.epoch)))

    def queue_counts(self) -> dict[str, int]:
        """How many queue jobs are in each status."""
        rows = self._db.read("SELECT status, COUNT(*) AS n FROM queue_jobs GROUP BY status")
        return {str(row["status"]): int(row["n"]) for row in rows}

    def claim_queued(
        self,
        *,
        owner: str,
        token: str,
        ttl_s: float,
        at: float | None = None,
        exclude: Sequence[str] = (),
        project_caps: Mapping[str, int] | None = None,
        only: str | None = None,
    ) -> QueueEntry | None:
        """Atomically take the next job to drive and give it a lease.

        Candidates are ``queued`` jobs and ``running`` jobs whose lease expired (their driver
        died: the new driver adopts their instance). Expired ones come first, then higher
        priority, then submission order. A project at its cap (jobs of it with a live lease)
        is skipped. The pick and a conditional ``UPDATE`` run in one ``BEGIN IMMEDIATE``
        transaction, so two processes never claim the same job.

        Args:
            owner: Who claims (``host:pid``), stored with the lease.
            token: A fresh random token; renewing and finishing need it.
            ttl_s: How long the lease lasts unless renewed.
            at: The time; default now.
            exclude: Job ids never to claim (the caller drives them already).
            project_caps: The most jobs with a live lease per project.
            only: Claim this job or nothing (caps do not apply).

        Returns:
            The claimed row, or None when nothing can be claimed now.
        """
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive (got {ttl_s})")
        now = self._now(at)
        caps = dict(project_caps or {}) if only is None else {}
        skip = set(exclude)
        with self._db.write() as tx:
            candidates = tx.all(
                f"SELECT job_id, project FROM queue_jobs WHERE {_CLAIMABLE} "
                "ORDER BY (status = 'running') DESC, priority DESC, seq",
                (now,),
            )
            for candidate in candidates:
                job_id, project = candidate["job_id"], candidate["project"]
                if job_id in skip or (only is not None and job_id != only):
                    continue
                if project in caps and _at_cap(tx, project, caps[project], now):
                    continue
                claimed = tx.execute(
                    "UPDATE queue_jobs SET status = 'running', lease_token = ?, lease_owner = ?, "
                    "lease_expires_at = ?, claims = claims + 1, "
                    f"started_at = COALESCE(started_at, ?) WHERE job_id = ? AND {_CLAIMABLE}",
                    (token, owner, now + ttl_s, now, job_id, now),
                )
                if claimed == 1:
                    row = tx.one("SELECT * FROM queue_jobs WHERE job_id = ?", (job_id,))
                    assert row is not None
                    return _entry(row)
        return None

    def renew_lease(
        self, job_id: str, token: str, *, ttl_s: float, at: float | None = None
    ) -> bool:
        """Extend a lease held with ``token`` to ``at + ttl_s``.

        Returns:
            False when the lease is no longer ours (another driver claimed the job after it
            expired, or the job ended): the caller must stop driving it.
        """
        with self._db.write() as tx:
            renewed = tx.execute(
                "UPDATE queue_jobs SET lease_expires_at = ? WHERE job_id = ? AND "
                "lease_token = ? AND status = 'running'",
                (self._now(at) + ttl_s, job_id, token),
            )
        return renewed == 1

    def finish_queued(
        self,
        job_id: str,
        token: str | None,
        *,
        status: str,
        reason: str,
        result: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> bool:
        """End a job (``status`` in :data:`QUEUE_TERMINAL`) or put it back (``queued``).

        With a ``token``, only while that lease is held; with None, only a ``queued`` job.

        Returns:
            Whether the row changed.
        """
        if status not in QUEUE_TERMINAL and status != "queued":
            raise ValueError(f"cannot finish a queued job as {status!r}")
        ended = None if status == "queued" else self._now(at)
        guard = "lease_token = ?" if token is not None else "status = 'queued'"
        params: list[Any] = [status, reason, json.dumps(dict(result or {})), ended, job_id]
        if token is not None:
            params.append(token)
        with self._db.write() as tx:
            changed = tx.execute(
                "UPDATE queue_jobs SET status = ?, reason = ?, result = ?, ended_at = ?, "
                "lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL "
                f"WHERE job_id = ? AND {guard}",
                params,
            )
        return changed == 1

    def request_cancel(self, job_id: str) -> bool:
        """Flag a job for cancellation (its driver stops it at its next poll).

        Returns:
            False when there is no such job or it already ended.
        """
        with self._db.write() as tx:
            flagged = tx.execute(
                "UPDATE queue_jobs SET cancel_requested = 1 WHERE job_id = ? AND status IN "
                "('queued', 'running')",
                (job_id,),
            )
        return flagged == 1
